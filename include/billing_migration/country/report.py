"""The run report: what each step did, how long the country was frozen, how fast each stage ran.

Built only from the ledger and the write gate (what happened), never from task return values (what a task
thought happened), so a report of a failed or resumed run is as true as that of a clean one. Errors and
rejects are in the summary, not hidden in a log (a clean-looking summary with wrong counts is the worst
outcome users report).

Given as Markdown too (report.md beside report.json, and in the report task's log): Airflow 3's task SDK
offers no way to set the DAG run's note from a task.
"""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from functools import partial
from typing import Any

from billing_migration.config import Config
from billing_migration.stores import ledger, s3io, write_gate

STAGES = ("capture_start", "disable_writes", "plan", "export", "transform", "error_budget", "load_plans", "load",
          "compare", "catch_up", "cutover", "enable_writes", "release_freeze")
# The DAG's tasks in run order: the first failed one is where the run broke.
TASK_ORDER = ("validate_params", "check_routing", "begin", "plan", "export", "transform", "error_budget",
              "load", "compare_and_repair", "catch_up", "cutover", "release_freeze", "report")
_NOT_COUNTS = frozenset({"chunk", "seconds", "duration_ms", "chunk_ms_total"})  # ids and per-chunk timings
# a stage took as many rounds as its worst chunk, and lagged as far as its worst catch-up round: not their sums
_MAX_COUNTS = frozenset({"rounds", "lag_ms"})
_THAW = frozenset({"unfreeze", "rollback", "cutover", "freeze_timeout"})
_RUNNING = frozenset({"running", "queued", "scheduled", "up_for_retry", "up_for_reschedule", "deferred"})


def _ts(value: Any) -> datetime | None:
    if value is None:
        return None
    v = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return v if v.tzinfo else v.replace(tzinfo=UTC)


def _merge(counts: dict[str, int], new: dict[str, Any], chunked: bool) -> None:
    """Add one ledger row's counts to its stage: summed across chunks only where a sum means something."""
    for k, v in new.items():
        if k in _NOT_COUNTS or k.endswith("per_s"):
            continue  # the stage's rate and time come from rows and wall time
        if not chunked:
            counts.setdefault(k, v)
        elif k in _MAX_COUNTS:
            counts[k] = max(counts.get(k, v), v)
        else:
            counts[k] = counts.get(k, 0) + v


def _stages(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    stages: dict[str, dict[str, Any]] = {}
    for e in entries:
        s = stages.setdefault(e["step"], {"state": "succeeded", "parts": 0, "failed_parts": [], "counts": {},
                                          "started_at": None, "ended_at": None})
        part = e.get("part", -1)
        chunked = part is not None and part >= 0
        s["parts"] += chunked
        if e["state"] == "failed":
            s["state"] = "failed"
            s["failed_parts"].append(part)
            s.setdefault("errors", []).append(e.get("detail"))
        elif e["state"] == "running" and s["state"] != "failed":
            s["state"] = "running"
        _merge(s["counts"], e.get("counts") or {}, chunked)
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
    return {k: stages[k] for k in [*STAGES, *sorted(set(stages) - set(STAGES))] if k in stages}


def _freeze(events: list[dict[str, Any]], run_id: str, stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """When this run froze the country and when customers could write again (on either store).

    From the write gate's events (what the gate did), else from the ledger's steps.
    """
    frozen_at = thawed_at = None
    for ev in sorted((e for e in events if e.get("run_id") == run_id), key=lambda e: _ts(e["at"])):
        if ev["action"] == "freeze" and frozen_at is None:
            frozen_at = _ts(ev["at"])
        elif ev["action"] in _THAW and frozen_at is not None:
            thawed_at = _ts(ev["at"])
    if frozen_at is None and stages.get("disable_writes", {}).get("state") == "succeeded":
        frozen_at = stages["disable_writes"]["started_at"]
        thawed_at = (stages.get("enable_writes", {}).get("ended_at")
                     or stages.get("release_freeze", {}).get("ended_at"))
    seconds = round((thawed_at - frozen_at).total_seconds(), 3) if frozen_at and thawed_at else None
    return {"frozen_at": frozen_at, "thawed_at": thawed_at, "seconds": seconds}


def _failed_tasks(task_states: dict[str, Any]) -> list[str]:
    """Tasks in state `failed` (not upstream_failed or skipped), in the DAG's order."""
    def order(key: str) -> tuple[int, str]:
        base = key.rstrip("0123456789").rstrip("_") if key not in TASK_ORDER else key
        return (TASK_ORDER.index(base) if base in TASK_ORDER else len(TASK_ORDER), key)
    return sorted((k for k, v in task_states.items() if v == "failed" and k != "report"), key=order)


def _outcome(stages: dict, gate: dict, run_id: str, failed_tasks: list[str], task_states: dict,
             dry_run: bool) -> str:
    if stages.get("enable_writes", {}).get("state") == "succeeded":
        return "cut_over"
    if failed_tasks or any(s["state"] == "failed" for s in stages.values()):
        return "failed"
    if gate.get("serving_store") == "cassandra" and gate.get("cutover_run_id") != run_id:
        return "already_cut_over"
    running = any(s["state"] == "running" for s in stages.values()) or any(
        v in _RUNNING for k, v in task_states.items() if k != "report")
    if dry_run and not running:
        return "dry_run"
    return "incomplete"


def _serving(outcome: str, gate: dict, country: str, run_id: str) -> str:
    """Which store serves the country and why the other copy is (or is not) frozen, in one sentence."""
    if gate.get("serving_store") == "cassandra":
        by = gate.get("cutover_run_id")
        return (f"{country} is served by Cassandra (cut over by {'this run' if by == run_id else by}); "
                f"the legacy copy is frozen because {country} moved (kept for rollback).")
    if gate.get("writes_frozen"):
        by = gate.get("freeze_run_id")
        return (f"{country} is served by legacy MySQL and still FROZEN by {'this run' if by == run_id else by}: "
                "writes are refused until the run resumes or an operator unfreezes it.")
    why = "a dry run never freezes" if outcome == "dry_run" else "not frozen"
    return f"{country} is served by legacy MySQL and writable on legacy ({why})."


def build(cfg: Config, country: str, run_id: str, task_states: dict[str, Any] | None = None,
          dry_run: bool = False) -> dict[str, Any]:
    """The report of one run from the ledger, the write gate and (when given) Airflow's task states."""
    task_states = {k: v for k, v in sorted((task_states or {}).items()) if k != "report"}
    entries = ledger.get_run(cfg, country, run_id)
    stages = _stages(entries)
    gate = write_gate.status(cfg, country)
    freeze = _freeze(write_gate.events(cfg, country, limit=100), run_id, stages)
    failed_tasks = _failed_tasks(task_states)
    outcome = _outcome(stages, gate, run_id, failed_tasks, task_states, dry_run)
    starts = [s["started_at"] for s in stages.values() if s["started_at"]]
    ends = [s["ended_at"] for s in stages.values() if s["ended_at"]]
    for s in stages.values():
        s["started_at"] = s["started_at"].isoformat() if s["started_at"] else None
        s["ended_at"] = s["ended_at"].isoformat() if s["ended_at"] else None
    online = _online_summary(entries)
    if online.get("freeze_ms") is not None:  # the gate's own timestamps: frozen_at → cut-over / unfreeze
        freeze["seconds"] = online["freeze_ms"] / 1000
    return {
        "country": country,
        "run_id": run_id,
        "outcome": outcome,
        "dry_run": dry_run,
        "failed_steps": [name for name, s in stages.items() if s["state"] == "failed"],
        "failed_tasks": failed_tasks,
        "task_states": task_states,
        "serving_store": gate.get("serving_store"),
        "writes_frozen": gate.get("writes_frozen"),
        "serving": _serving(outcome, gate, country, run_id),
        "frozen_at": freeze["frozen_at"].isoformat() if freeze["frozen_at"] else None,
        "thawed_at": freeze["thawed_at"].isoformat() if freeze["thawed_at"] else None,
        "freeze_window_s": freeze["seconds"],
        "duration_s": round((max(ends) - min(starts)).total_seconds(), 3) if starts and ends else None,
        "stages": stages,
        **online,
        "queued_writes": _queued_writes(stages),
        "artifacts": f"s3://{cfg.s3_bucket}/{s3io.run_prefix(cfg, country, run_id)}",
        "generated_at": datetime.now(UTC).isoformat(),
    }


def _queued_writes(stages: dict[str, Any]) -> dict[str, Any] | None:
    """Writes the application queued while the country was frozen, and their replay (step `replay`)."""
    s = stages.get("replay")
    if s is None:
        return None
    c = s["counts"]
    return {"state": s["state"], "received": c.get("received", 0), "applied": c.get("applied", 0),
            "duplicates": c.get("duplicates", 0), "dead_lettered": c.get("dead_lettered", 0),
            "seconds": c["seconds_ms"] / 1000 if "seconds_ms" in c else None, "errors": s.get("errors", [])}


def _queued_line(report: dict[str, Any]) -> str | None:
    q = report.get("queued_writes")
    if not q:
        return None
    line = (f"queued writes: {q['received']} received, {q['applied']} replayed, {q['duplicates']} duplicates "
            f"skipped, {q['dead_lettered']} dead-lettered (replay {q['seconds']} s)")
    return line + "".join(f"\n  {e}" for e in q["errors"] if e)


def _in_run_order(stages: dict[str, Any]) -> list[tuple[str, Any]]:
    """Steps in the order they started (online freezes at the end, offline at the start; a report read back
    from JSON may have its keys sorted); steps that never started last, in the usual order."""
    order = {name: i for i, name in enumerate(STAGES)}
    return sorted(stages.items(), key=lambda kv: (kv[1].get("started_at") is None, kv[1].get("started_at") or "",
                                                  order.get(kv[0], len(order)), kv[0]))


def _failure_line(report: dict[str, Any]) -> str | None:
    tasks = report.get("failed_tasks") or []
    if tasks:
        also = f" (also failed: {', '.join(tasks[1:])})" if len(tasks) > 1 else ""
        return f"failed at {tasks[0]}{also}"
    if report.get("failed_steps"):
        return f"failed at step {report['failed_steps'][0]}"
    return None


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
        f"outcome: {report['outcome']}   freeze window: {_window(report)}   duration: {report.get('duration_s')} s",
        report.get("serving", ""),
        f"mode: {report.get('mode', 'offline')}"
        + (f"   catch-up rounds: {report.get('catch_up_rounds')}   last lag: {report.get('last_lag_s')} s   "
           f"frozen delta: {report.get('delta_customers')} customers, {report.get('delta_events')} events"
           if report.get("mode") == "online" else ""),
    ]
    if _failure_line(report):
        lines.append(_failure_line(report))
    if _queued_line(report):
        lines.append(_queued_line(report))
    lines.append(f"{'step':<15} {'state':<10} {'parts':>5} {'wall s':>8} {'rows/s':>10}  counts")
    for name, s in _in_run_order(report["stages"]):
        counts = ", ".join(f"{k}={v}" for k, v in sorted(s["counts"].items()) if not k.startswith("rows."))
        lines.append(f"{name:<15} {s['state']:<10} {s['parts']:>5} {s.get('wall_s', ''):>8} "
                     f"{s.get('rows_per_s', ''):>10}  {counts}")
        for err in s.get("errors", []):
            lines.append(f"{'':<15} error: {err}")
    lines.append(f"artifacts: {report['artifacts']}")
    return "\n".join(lines)


def _window(report: dict[str, Any]) -> str:
    if report.get("freeze_window_s") is not None:
        if not (report.get("frozen_at") and report.get("thawed_at")):
            return f"{report['freeze_window_s']} s"
        t0, t1 = (_ts(report[k]).strftime("%H:%M:%S") for k in ("frozen_at", "thawed_at"))
        return f"{report['freeze_window_s']} s ({t0} → {t1} UTC)"
    if report.get("frozen_at"):
        return f"still frozen since {report['frozen_at']}"
    return "none (dry run: never frozen)" if report.get("dry_run") else "none"


def _mode_line(report: dict[str, Any]) -> str:
    if report.get("mode") != "online":
        return "offline (frozen for the whole copy)"
    return (f"online: {report.get('catch_up_rounds')} catch-up round(s), last lag {report.get('last_lag_s')} s; "
            f"frozen delta {report.get('delta_customers')} customers / {report.get('delta_events')} events")


def _summary_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    st = report["stages"]
    exported = sum(v for k, v in st.get("export", {}).get("counts", {}).items() if k.startswith("rows."))
    load = st.get("load", {}).get("counts", {})
    budget = st.get("error_budget", {}).get("counts", {})
    rejects = budget.get("rejects", st.get("transform", {}).get("counts", {}).get("rejects", 0))
    cmp = st.get("compare", {}).get("counts", {})
    store = {"cassandra": "Cassandra"}.get(report.get("serving_store") or "", "legacy MySQL")
    if report.get("serving_store") != "cassandra":
        store += " (FROZEN)" if report.get("writes_frozen") else " (writable)"
    compare = "not run"
    if "compare" in st:
        compare = (f"{cmp.get('customers_compared', 0)} customers, {cmp.get('mismatches_left', 0)} mismatches "
                   f"left after at most {cmp.get('rounds', 0)} round(s)")
    return [
        ("Outcome", report["outcome"].replace("_", " ")),
        ("Serving store", store),
        ("Freeze window", _window(report)),
        ("Mode", _mode_line(report)),
        ("Rows", f"{exported} exported, {load.get('rows', 0)} loaded ({load.get('customers', 0)} customers)"),
        ("Rejects", f"{rejects} / budget {budget['error_budget']}" if "error_budget" in budget else str(rejects)),
        ("Compare", compare),
        ("Re-migrated", f"{cmp.get('remigrated_customers', 0)} customer(s)"),
        ("Duration", f"{report.get('duration_s')} s"),
    ]


def render_markdown(report: dict[str, Any]) -> str:
    """The report as short Markdown (summary table, rows per entity, one line per step), lines ≤ 120."""
    wrap = partial(textwrap.fill, width=118, subsequent_indent="  ")
    out = [f"### Billing migration {report['country']}: {report['outcome'].replace('_', ' ')}",
           f"run `{report['run_id']}`", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in _summary_rows(report)]
    out += ["", wrap(report.get("serving", ""))]
    if _failure_line(report):
        out += ["", wrap(f"**{_failure_line(report)}**")]
    entities = {k[5:]: v for k, v in report["stages"].get("export", {}).get("counts", {}).items()
                if k.startswith("rows.")}
    if entities:
        out += ["", "| Entity | Rows exported |", "|---|---:|", *(f"| {k} | {v} |" for k, v in entities.items())]
    out += ["", "Steps:"]
    for name, s in _in_run_order(report["stages"]):
        counts = ", ".join(f"{k}={v}" for k, v in sorted(s["counts"].items()) if not k.startswith("rows."))
        parts = f" · {s['parts']} {'round' if name == 'catch_up' else 'chunk'}(s)" if s["parts"] else ""
        rate = f" · {s['rows_per_s']} rows/s" if s.get("rows_per_s") else ""
        out.append(wrap(f"- **{name}** {s['state']}{parts} · {s.get('wall_s', '?')} s{rate}"
                        + (f" · {counts}" if counts else "")))
        out += [wrap(f"  error: {str(err)[:300]}") for err in s.get("errors", [])]
    out += ["", f"artifacts: `{report['artifacts']}`"]
    return "\n".join(out)


def write(cfg: Config, report: dict[str, Any]) -> str:
    """report.json and report.md under the run's S3 prefix; returns the JSON's location."""
    client = s3io.client(cfg)
    prefix = s3io.run_prefix(cfg, report["country"], report["run_id"])
    s3io.put_json(client, cfg.s3_bucket, prefix + "report.json", report)
    client.put_object(Bucket=cfg.s3_bucket, Key=prefix + "report.md", Body=render_markdown(report).encode(),
                      ContentType="text/markdown; charset=utf-8")
    return f"s3://{cfg.s3_bucket}/{prefix}report.json"
