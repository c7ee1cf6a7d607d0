"""The migration at a glance: one row per configured country, and one country's history.

Read-only, and built from the records the pipelines already keep, so the page shows what happened rather
than what a task thought happened: routing from the write gate (MySQL `country_routing`), runs from the run
ledger (Cassandra), each run's report (`report.json` on S3, or built live from the ledger while the run has
none yet), the nightly reconciliation and renewal outputs on S3, and Airflow's run state when the caller can
read Airflow's metadata database (the api-server can).

Nothing here holds a secret, and free text (errors, gate reasons) goes through `safe_text`, which masks
e-mail addresses with `pii.mask_email`: the reports carry no personal data by construction, but an error
message quoting a bad record could.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from billing_migration import pii
from billing_migration.config import Config, normalize_country
from billing_migration.country import report as run_report
from billing_migration.stores import ledger, s3io, write_gate
from billing_migration.stores.write_gate import RoutingStatus

log = logging.getLogger(__name__)

STATES = ("migrated", "frozen", "migrating", "legacy", "unknown")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_COPY_STEPS = ("plan", "export", "transform", "error_budget", "load_plans", "load", "compare")
AirflowRuns = Callable[[list[tuple[str, str]]], dict[str, dict[str, Any]]]


def dag_id(country: str) -> str:
    return f"migrate_billing_{country.lower()}"


def safe_text(text: Any, limit: int = 300) -> str | None:
    """Free text fit for a page: e-mail addresses masked, length capped."""
    if text is None:
        return None
    return _EMAIL.sub(lambda m: pii.mask_email(m.group(0)) or "", str(text))[:limit]


# ------------------------------------------------------------------------------------------ pure assembly
def state_of(st: RoutingStatus, last_run: dict[str, Any] | None) -> str:
    """migrated (Cassandra serves it), frozen (legacy refuses writes, not cut over), migrating (a run is
    copying while the country stays writable) or legacy."""
    if st.cut_over:
        return "migrated"
    if st.writes_frozen:
        return "frozen"
    if last_run and last_run.get("state") == "running":
        return "migrating"
    return "legacy"


def online_progress(rep: dict[str, Any]) -> dict[str, Any] | None:
    """Phase, catch-up rounds and lag of an online run, from its report's steps (None: offline run)."""
    if rep.get("mode") != "online":
        return None
    stages = rep.get("stages") or {}
    cut = stages.get("cutover", {}).get("state")
    if cut == "succeeded":
        phase = "cut over"
    elif cut == "running":
        phase = "cutover (writes frozen)"
    elif cut == "failed":
        phase = "cutover failed"
    elif "catch_up" in stages:
        phase = f"catch-up (round {stages['catch_up'].get('parts', 0)})"
    elif any(s in stages for s in _COPY_STEPS):
        phase = "copy (country writable)"
    else:
        phase = "capture started"
    return {"phase": phase, "catch_up_rounds": rep.get("catch_up_rounds"), "lag_s": rep.get("last_lag_s"),
            "backlog_customers": rep.get("last_backlog_customers"), "delta_customers": rep.get("delta_customers")}


def _bounds(stages: dict[str, Any]) -> tuple[str | None, str | None]:
    starts = sorted(s["started_at"] for s in stages.values() if s.get("started_at"))
    ends = sorted(s["ended_at"] for s in stages.values() if s.get("ended_at"))
    return (starts[0] if starts else None), (ends[-1] if ends else None)


def run_summary(rep: dict[str, Any]) -> dict[str, Any]:
    """What a run did, in numbers: freeze window, rows per entity, rejects, compare, re-migrated customers."""
    st = rep.get("stages") or {}
    counts = {name: (s.get("counts") or {}) for name, s in st.items()}
    budget = counts.get("error_budget", {})
    cmp = counts.get("compare", {})
    compare = None
    if "compare" in st:
        left = cmp.get("mismatches_left", 0)
        compare = {"customers_compared": cmp.get("customers_compared", 0), "mismatches_left": left,
                   "rounds": cmp.get("rounds", 0), "clean": st["compare"].get("state") == "succeeded" and not left}
    started, ended = _bounds(st)
    errors = [safe_text(e) for s in st.values() for e in (s.get("errors") or [])]
    return {
        "run_id": rep.get("run_id"), "outcome": rep.get("outcome"), "mode": rep.get("mode", "offline"),
        "dry_run": bool(rep.get("dry_run")), "started_at": started, "ended_at": ended,
        "duration_s": rep.get("duration_s"), "frozen_at": rep.get("frozen_at"), "thawed_at": rep.get("thawed_at"),
        "freeze_window_s": rep.get("freeze_window_s"),
        "rows": {k[5:]: v for k, v in counts.get("export", {}).items() if k.startswith("rows.")},
        "rows_loaded": counts.get("load", {}).get("rows"), "customers_loaded": counts.get("load", {}).get("customers"),
        "rejects": budget.get("rejects", counts.get("transform", {}).get("rejects", 0)),
        "error_budget": budget.get("error_budget"), "compare": compare,
        "remigrated_customers": cmp.get("remigrated_customers", 0),
        "failed_tasks": rep.get("failed_tasks") or [], "failed_steps": rep.get("failed_steps") or [],
        "errors": errors[:5], "online": online_progress(rep),
    }


def reconcile_summary(rep: dict[str, Any]) -> dict[str, Any]:
    """The night's reconciliation of one country: ok or drift, row counts, money differences."""
    counts = rep.get("counts") or {}
    diffs = rep.get("differences") or {}
    return {
        "date": rep.get("date"), "ok": bool(rep.get("ok")), "source_of_truth": rep.get("source_of_truth"),
        "rows": {store: sum(t.values()) for store, t in counts.items()}, "counts": counts,
        "record_differences": diffs.get("failing", 0), "post_cutover_changes": diffs.get("post_cutover_change", 0),
        "money_differences": [{k: m.get(k) for k in ("metric", "currency", "day", "mysql", "cassandra", "diff")}
                              for m in rep.get("financial_differences") or []],
        "customers_to_fix": [c.get("customer_id") for c in rep.get("customers") or []][:50],
        "problems": [safe_text(p) for p in (rep.get("problems") or [])[:5]],
        "as_of": (rep.get("as_of") or {}).get("note"),
    }


def renewal_summary(s: dict[str, Any]) -> dict[str, Any]:
    return {"date": s.get("date"), "source": s.get("source"), "to_bill": s.get("to_bill"), "held": s.get("held"),
            "skipped": s.get("skipped"), "per_currency": s.get("per_currency") or {},
            "as_of": (s.get("as_of") or {}).get("note")}


def links(country: str, run_id: str | None, base: str = "") -> dict[str, str | None]:
    """Root-relative links: the run in Airflow's UI, its report page and JSON in this plugin."""
    if not run_id:
        return {"airflow_run": None, "report": None, "report_json": None}
    rid = quote(run_id, safe="")
    return {"airflow_run": f"{base}/dags/{dag_id(country)}/runs/{rid}",
            "report": f"{base}/billing-migration/countries/{country}/runs/{rid}/report",
            "report_json": f"{base}/billing-migration/api/v1/countries/{country}/runs/{rid}/report"}


def country_row(st: RoutingStatus, last_run: dict[str, Any] | None, rep: dict[str, Any] | None,
                airflow: dict[str, Any] | None, nightly: dict[str, Any], base: str = "") -> dict[str, Any]:
    """One country's line of the overview (pure: unit-tested)."""
    run = run_summary(rep) if rep else None
    if run is not None:
        run["ledger_state"] = last_run.get("state") if last_run else None
        run["airflow_state"] = (airflow or {}).get("state")
        run["links"] = links(st.country, run["run_id"], base)
    legacy = "frozen (rollback copy)" if st.cut_over else "frozen" if st.writes_frozen else "open"
    return {
        "country": st.country, "dag_id": dag_id(st.country), "state": state_of(st, last_run),
        "serving_store": st.serving_store, "legacy_writes": legacy,
        "frozen": st.legacy_frozen, "frozen_since": st.frozen_at if st.legacy_frozen else None,
        "frozen_by_run": st.freeze_run_id if st.legacy_frozen else None,
        "cutover_at": st.cutover_at, "cutover_run_id": st.cutover_run_id,
        "online": run["online"] if run else None, "last_run": run,
        "reconcile": nightly.get("reconcile"), "renewals": nightly.get("renewals"),
    }


# ------------------------------------------------------------------------------------------ readers
def airflow_runs(pairs: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """run_id -> Airflow's state, start and end of those (dag_id, run_id) runs; {} when Airflow's metadata
    database cannot be read (a shell without Airflow set up): the ledger's state is shown instead."""
    if not pairs:
        return {}
    try:
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import select, tuple_

        with create_session() as session:
            rows = session.execute(select(DagRun.run_id, DagRun.state, DagRun.start_date, DagRun.end_date)
                                   .where(tuple_(DagRun.dag_id, DagRun.run_id).in_(pairs))).all()
    except Exception as exc:  # the page still shows everything the stores know
        log.info("Airflow run states unavailable: %s", type(exc).__name__)
        return {}
    return {r[0]: {"state": None if r[1] is None else str(getattr(r[1], "value", r[1])),
                   "start_date": r[2].isoformat() if r[2] else None,
                   "end_date": r[3].isoformat() if r[3] else None} for r in rows}


def load_report(cfg: Config, country: str, run_id: str, client=None) -> dict[str, Any]:
    """The run's report.json on S3, else (a run still going, or one whose report task never ran) the same
    report built live from the ledger and the write gate."""
    client = client or s3io.client(cfg)
    key = s3io.run_prefix(cfg, country, run_id) + "report.json"
    if s3io.exists(client, cfg.s3_bucket, key):
        return s3io.get_json(client, cfg.s3_bucket, key)
    return run_report.build(cfg, country, run_id)


def load_report_md(cfg: Config, country: str, run_id: str, client=None) -> str:
    """The run's report.md on S3, else rendered from the live report."""
    client = client or s3io.client(cfg)
    key = s3io.run_prefix(cfg, country, run_id) + "report.md"
    if s3io.exists(client, cfg.s3_bucket, key):
        return client.get_object(Bucket=cfg.s3_bucket, Key=key)["Body"].read().decode()
    return run_report.render_markdown(run_report.build(cfg, country, run_id))


def _dates(client, bucket: str, prefix: str) -> list[str]:
    """The `date=YYYY-MM-DD/` partitions under a prefix, newest first."""
    out: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        out += [p["Prefix"][len(prefix):] for p in page.get("CommonPrefixes", [])]
    return sorted((d for d in out if d.startswith("date=")), reverse=True)


def latest_nightly(cfg: Config, countries: list[str], kind: str, filename: str, client=None,
                   lookback: int = 14) -> dict[str, dict[str, Any]]:
    """country -> its newest `nightly/<kind>/date=D/country=CC/<filename>` (JSON) within `lookback` dates."""
    client = client or s3io.client(cfg)
    base = f"{cfg.s3_prefix}nightly/{kind}/"
    out: dict[str, dict[str, Any]] = {}
    for date in _dates(client, cfg.s3_bucket, base)[:lookback]:
        keys = set(s3io.list_keys(client, cfg.s3_bucket, base + date))
        for cc in countries:
            key = f"{base}{date}country={cc}/{filename}"
            if cc not in out and key in keys:
                out[cc] = s3io.get_json(client, cfg.s3_bucket, key)
        if len(out) == len(countries):
            break
    return out


def nightly(cfg: Config, countries: list[str], client=None) -> dict[str, dict[str, Any]]:
    """country -> {"reconcile": summary or None, "renewals": summary or None}, the newest night of each."""
    rec = latest_nightly(cfg, countries, "reconcile", "report.json", client)
    ren = latest_nightly(cfg, countries, "renewals", "summary.json", client)
    return {cc: {"reconcile": reconcile_summary(rec[cc]) if cc in rec else None,
                 "renewals": renewal_summary(ren[cc]) if cc in ren else None} for cc in countries}


def _guard(errors: list[str], what: str, fn: Callable[[], Any], default: Any) -> Any:
    """Run one reader; a store that cannot be read becomes a line on the page, not a failed page."""
    try:
        return fn()
    except Exception as exc:
        log.warning("billing migration status: %s unavailable (%s)", what, type(exc).__name__)
        errors.append(f"{what} unavailable ({type(exc).__name__})")
        return default


def overview(cfg: Config, countries: list[str] | None = None, base: str = "",
             airflow: AirflowRuns = airflow_runs) -> dict[str, Any]:
    """Every configured country (or the ones given), one row each, and what could not be read."""
    codes = [normalize_country(c) for c in (countries if countries is not None else cfg.countries)]
    errors: list[str] = []
    client = _guard(errors, "S3", lambda: s3io.client(cfg), None)
    routing = _guard(errors, "routing (MySQL)", lambda: write_gate.statuses(cfg, codes), None)
    last: dict[str, dict[str, Any]] = {}
    for cc in codes:
        runs = _guard(errors, "run ledger (Cassandra)", lambda cc=cc: ledger.last_runs(cfg, cc, 1), None)
        if runs is None:
            break  # unreachable: one timeout is enough, not one per country
        if runs:
            last[cc] = runs[0]
    reports = {cc: _guard(errors, "run reports (S3)",
                          lambda cc=cc, rid=r["run_id"]: load_report(cfg, cc, rid, client), None)
               for cc, r in last.items()}
    states = airflow([(dag_id(cc), r["run_id"]) for cc, r in last.items()])
    nights = _guard(errors, "nightly outputs (S3)", lambda: nightly(cfg, codes, client), {})
    rows = [country_row(st, last.get(st.country), reports.get(st.country),
                        states.get(last[st.country]["run_id"]) if st.country in last else None,
                        nights.get(st.country, {}), base)
            for st in routing or [RoutingStatus(country=c) for c in codes]]
    if routing is None:  # unknown, not "legacy": nobody can tell from here whether a country is frozen
        for row in rows:
            row.update(state="unknown", serving_store=None, legacy_writes="unknown")
    return {"namespace": cfg.namespace or None, "countries": rows, "errors": list(dict.fromkeys(errors)),
            "totals": {s: sum(1 for r in rows if r["state"] == s) for s in STATES}}


def country_detail(cfg: Config, country: str, base: str = "", limit: int = 20,
                   airflow: AirflowRuns = airflow_runs) -> dict[str, Any]:
    """One country: its overview row, its run history (newest first) and its last write-gate events."""
    cc = normalize_country(country)
    head = overview(cfg, [cc], base, airflow)
    errors = head["errors"]
    client = s3io.client(cfg)
    runs = _guard(errors, "run ledger (Cassandra)", lambda: ledger.last_runs(cfg, cc, limit), [])
    states = airflow([(dag_id(cc), r["run_id"]) for r in runs])
    history = []
    for r in runs:
        rep = _guard(errors, "run reports (S3)", lambda r=r: load_report(cfg, cc, r["run_id"], client), None)
        summary = run_summary(rep) if rep else {"run_id": r["run_id"]}
        summary.update(ledger_state=r["state"], airflow_state=(states.get(r["run_id"]) or {}).get("state"),
                       links=links(cc, r["run_id"], base))
        history.append(summary)
    events = _guard(errors, "gate events (MySQL)", lambda: write_gate.events(cfg, cc, 20), [])
    for e in events:
        e["detail"] = safe_text(e.get("detail"))
    return {"country": head["countries"][0], "runs": history, "gate_events": events,
            "errors": list(dict.fromkeys(errors))}
