"""The run report: what each step did, how long the country was frozen, how fast each stage ran.

Built only from the ledger and the write gate (what happened), never from task return values (what a task
thought happened), so a report of a failed or resumed run is as true as that of a clean one. Errors and
rejects are in the summary, not hidden in a log (a clean-looking summary with wrong counts is the worst
outcome users report).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from billing_migration.config import Config
from billing_migration.stores import ledger, s3io, write_gate

STAGES = ("capture_start", "disable_writes", "plan", "export", "transform", "error_budget", "load_plans", "load",
          "compare", "catch_up", "cutover", "enable_writes", "release_freeze")


def _ts(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value))


def build(cfg: Config, country: str, run_id: str) -> dict[str, Any]:
    entries = ledger.get_run(cfg, country, run_id)
    stages: dict[str, dict[str, Any]] = {}
    for e in entries:
        s = stages.setdefault(e["step"], {"state": "succeeded", "parts": 0, "failed_parts": [], "counts": {},
                                          "started_at": None, "ended_at": None})
        part = e.get("part", -1)
        if part is not None and part >= 0:
            s["parts"] += 1
        if e["state"] == "failed":
            s["state"] = "failed"
            s["failed_parts"].append(part)
            s.setdefault("errors", []).append(e.get("detail"))
        elif e["state"] == "running" and s["state"] != "failed":
            s["state"] = "running"
        for k, v in (e.get("counts") or {}).items():
            if k == "duration_ms" and part is not None and part >= 0:
                s["counts"]["chunk_ms_total"] = s["counts"].get("chunk_ms_total", 0) + v
            elif k.endswith("per_s"):
                continue  # a chunk's rate; the stage's rate is derived below from rows and wall time
            elif part is not None and part >= 0:
                s["counts"][k] = s["counts"].get(k, 0) + v
            else:
                s["counts"].setdefault(k, v)
        for bound, pick in (("started_at", min), ("ended_at", max)):
            v = _ts(e.get(bound))
            if v is not None:
                s[bound] = v if s[bound] is None else pick(s[bound], v)
    for s in stages.values():
        if s["started_at"] and s["ended_at"]:
            s["wall_s"] = round((s["ended_at"] - s["started_at"]).total_seconds(), 3)
            rows = s["counts"].get("rows") or s["counts"].get("rows_out") or s["counts"].get("rows_compared")
            if rows and s["wall_s"] > 0:
                s["rows_per_s"] = round(rows / s["wall_s"], 1)
        s["started_at"] = s["started_at"].isoformat() if s["started_at"] else None
        s["ended_at"] = s["ended_at"].isoformat() if s["ended_at"] else None

    gate = write_gate.status(cfg, country)
    freeze_s = None
    frozen = stages.get("disable_writes", {}).get("started_at")
    thawed = stages.get("enable_writes", {}).get("ended_at") or stages.get("release_freeze", {}).get("ended_at")
    if frozen and thawed:
        freeze_s = round((_ts(thawed) - _ts(frozen)).total_seconds(), 3)
    online = _online_summary(entries)
    if online.get("freeze_ms") is not None:  # the gate's own timestamps: frozen_at → cut-over / unfreeze
        freeze_s = online["freeze_ms"] / 1000
    failed = [name for name, s in stages.items() if s["state"] == "failed"]
    outcome = ("cut_over" if stages.get("enable_writes", {}).get("state") == "succeeded"
               else "failed" if failed else "incomplete")
    return {
        "country": country,
        "run_id": run_id,
        "outcome": outcome,
        "failed_steps": failed,
        "serving_store": gate.get("serving_store"),
        "writes_frozen": gate.get("writes_frozen"),
        "freeze_window_s": freeze_s,
        **online,
        "stages": {k: stages[k] for k in [*STAGES, *sorted(set(stages) - set(STAGES))] if k in stages},
        "artifacts": f"s3://{cfg.s3_bucket}/{s3io.run_prefix(cfg, country, run_id)}",
        "generated_at": datetime.now(UTC).isoformat(),
    }


def _online_summary(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Mode, catch-up rounds and last lag, and the measured freeze of an online run's cutover."""
    if not any(e["step"] == "capture_start" for e in entries):
        return {"mode": "offline"}
    rounds = sorted((e for e in entries if e["step"] == "catch_up" and e["state"] == "succeeded"
                     and (e.get("part") or 0) >= 0), key=lambda e: e["part"])
    last = (rounds[-1].get("counts") or {}) if rounds else {}
    cut = next((e.get("counts") or {} for e in entries if e["step"] == "cutover" and e.get("part", -1) < 0), {})
    return {"mode": "online", "catch_up_rounds": len(rounds),
            "last_lag_s": last["lag_ms"] / 1000 if "lag_ms" in last else None,
            "last_backlog_customers": last.get("customers"), "freeze_ms": cut.get("freeze_ms"),
            "delta_customers": cut.get("delta_customers"), "delta_events": cut.get("delta_events")}


def render(report: dict[str, Any]) -> str:
    """A plain-text table for the task log and the demo (no personal data in it by construction)."""
    lines = [
        f"Billing migration {report['country']}  run {report['run_id']}",
        f"outcome: {report['outcome']}   serving store: {report['serving_store']}   "
        f"writes frozen: {bool(report['writes_frozen'])}   freeze window: {report['freeze_window_s']} s",
        f"mode: {report.get('mode', 'offline')}"
        + (f"   catch-up rounds: {report.get('catch_up_rounds')}   last lag: {report.get('last_lag_s')} s   "
           f"frozen delta: {report.get('delta_customers')} customers, {report.get('delta_events')} events"
           if report.get("mode") == "online" else ""),
        f"{'step':<15} {'state':<10} {'parts':>5} {'wall s':>8} {'rows/s':>10}  counts",
    ]
    order = {name: i for i, name in enumerate(STAGES)}
    for name, s in sorted(report["stages"].items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])):
        counts = ", ".join(f"{k}={v}" for k, v in sorted(s["counts"].items()) if k != "chunk_ms_total")
        lines.append(f"{name:<15} {s['state']:<10} {s['parts']:>5} {s.get('wall_s', ''):>8} "
                     f"{s.get('rows_per_s', ''):>10}  {counts}")
        for err in s.get("errors", []):
            lines.append(f"{'':<15} error: {err}")
    lines.append(f"artifacts: {report['artifacts']}")
    return "\n".join(lines)


def write(cfg: Config, report: dict[str, Any]) -> str:
    from billing_migration.stores import connections

    key = s3io.run_prefix(cfg, report["country"], report["run_id"]) + "report.json"
    s3io.put_json(connections.s3_client(cfg), cfg.s3_bucket, key, report)
    return f"s3://{cfg.s3_bucket}/{key}"
