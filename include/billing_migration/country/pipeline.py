"""The per-country run, step by step, as the DAG's tasks call it (and as tests and the demo call it without
a scheduler).

Each step records itself in the run ledger (Cassandra) so resume, the run report and operators all read
one history. Chunked steps run in lanes: a run with `parallelism` N maps N task instances per stage, lane k
taking chunks k, k+N, ...; a retried lane skips the chunks the ledger already has as succeeded (resume
from where it stopped, not from the start).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from billing_migration.config import RESET_CHOICES as RESET_CHOICES  # re-exported: the DAG's reset choices
from billing_migration.config import Config, ConfigError, RunParams, normalize_country, run_params
from billing_migration.records import Chunk, Lane, StepCounts
from billing_migration.stores import ledger, s3io, write_gate

log = logging.getLogger(__name__)

ACTOR = "airflow:migrate_billing"


class MigrationError(RuntimeError):
    """A step found a condition that must stop the run (the country stays writable on legacy)."""


def validate_params(cfg: Config, country: str, params: dict[str, Any]) -> RunParams:
    """Refuse a bad run before anything is touched: unknown keys, wrong types or ranges, the wrong country."""
    settings = cfg.country(country)
    given = normalize_country(params.get("country", country))
    if given != country:
        raise ConfigError(f"this DAG migrates {country}; the country param says {given!r}")
    return run_params(country, settings, {**params, "country": country})


def inject_failure(step: str) -> None:
    """Chaos hook for tests and drills: `BM_FAIL_AT=<step>` makes that step fail once it starts."""
    if os.environ.get("BM_FAIL_AT") == step:
        raise MigrationError(f"injected failure at step {step} (BM_FAIL_AT)")


def step(cfg: Config, country: str, run_id: str, name: str, fn: Callable[[], dict[str, Any]],
         part: int = -1) -> dict[str, Any]:
    """Run one step, recording running / succeeded / failed with counts and timings in the ledger."""
    started = time.time()
    ledger.start(cfg, country, run_id, name, part=part)
    try:
        inject_failure(name)
        counts = fn() or {}
    except Exception as exc:
        ledger.fail(cfg, country, run_id, name, part=part, detail=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    numeric = {k: int(v) for k, v in counts.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    numeric["duration_ms"] = int((time.time() - started) * 1000)
    ledger.finish(cfg, country, run_id, name, part=part, counts=numeric)
    return counts


# ------------------------------------------------------------------------------------------ steps
def check_routing(cfg: Config, country: str, run_id: str) -> dict[str, Any]:
    """An already cut-over country is a safe no-op: re-migrating from the frozen legacy copy would overwrite
    writes made on Cassandra since the cut-over."""
    write_gate.prepare(cfg)  # install the gate here, outside any freeze: freeze() never runs DDL mid-lock
    st = write_gate.status(cfg, country)
    return {"already_migrated": st.cut_over, "status": st.as_dict()}


def disable_writes(cfg: Config, p: RunParams, run_id: str) -> dict[str, Any]:
    return step(cfg, p.country, run_id, "disable_writes",
                lambda: write_gate.freeze(cfg, p.country, ACTOR, run_id, drain_timeout_s=p.freeze_drain_timeout_s))


def plan(cfg: Config, p: RunParams, run_id: str) -> list[Lane]:
    """Reset the target if asked, export the plan catalogue, cut the country into chunks and lanes."""
    from billing_migration.country import export, load

    chunks: list[Chunk] = []

    def _plan() -> StepCounts:
        if p.reset != "none" and p.dry_run:
            log.info("dry run: reset=%s not applied (a dry run changes no target data)", p.reset)
        elif p.reset != "none":
            load.delete_country(cfg, p.country, table=None if p.reset == "country" else p.reset)
        chunks[:] = tile([Chunk.from_dict(c) for c in export.plan_chunks(cfg, p.country, p.chunk_customers)])
        export.export_plans(cfg, p.country, run_id)
        return {"chunks": len(chunks), "customers": sum(c.customers for c in chunks)}

    step(cfg, p.country, run_id, "plan", _plan)
    return Lane.split(chunks, p.parallelism)


MAX_CUSTOMER_ID = 2**63 - 1  # Cassandra's bigint


def tile(chunks: list[Chunk]) -> list[Chunk]:
    """Stretch the chunks' id ranges to cover every id: the first from 0, each up to the next one's start,
    the last to the largest id.

    Compare finds target-only customers by reading the target's index over the chunk's range. A customer
    the target still holds but legacy deleted (loaded by an earlier, failed run) can have any id, also one
    below, between or above the ranges of the ids legacy has now: untiled, it would outlive the cut-over.
    """
    return [replace(c, lo=0 if i == 0 else chunks[i - 1].hi + 1,
                    hi=MAX_CUSTOMER_ID if i == len(chunks) - 1 else c.hi) for i, c in enumerate(chunks)]


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    v = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return v if v.tzinfo else v.replace(tzinfo=UTC)


def freeze_started(cfg: Config, p: RunParams, run_id: str,
                   entries: list[dict[str, Any]] | None = None) -> datetime | None:
    """When the freeze this run works under began (None on a dry run, which works unfrozen, and in online
    mode, which works writable after recording the capture start).

    A chunked step must run inside this run's freeze, and after the plan: if the country was writable
    between the plan and now (a failed attempt's teardown unfroze it and the task was cleared), the chunks
    may miss rows written meanwhile, so the step refuses and says to clear the run from `plan`.
    """
    if p.dry_run:
        return None
    if p.mode == "online":  # writable on purpose: the capture start must precede the plan instead
        from billing_migration.online import capture

        capture.require_capture_before_plan(cfg, p.country, run_id, entries)
        return None
    st = write_gate.status(cfg, p.country)
    if not st.get("writes_frozen") or st.get("freeze_run_id") != run_id:
        raise MigrationError(
            f"{p.country} is not frozen by this run (writes_frozen={bool(st.get('writes_frozen'))}, "
            f"freeze_run_id={st.get('freeze_run_id')}); clear the run from disable_writes")
    frozen_at = _utc(st.get("frozen_at"))
    if entries is None:
        entries = ledger.get_run(cfg, p.country, run_id)
    planned = [e for e in entries
               if e["step"] == "plan" and e["state"] == "succeeded" and (e.get("part") is None or e["part"] < 0)]
    if frozen_at and planned and _utc(planned[-1]["started_at"]) < frozen_at:
        raise MigrationError(
            f"{p.country} was writable after this run planned its chunks (plan at {planned[-1]['started_at']}, "
            f"frozen again at {frozen_at}); clear the run from `plan` so every step reads the frozen data")
    return frozen_at


def done_chunks(entries: list[dict[str, Any]], name: str, frozen_at: datetime | None) -> dict[int, dict]:
    """chunk -> ledger row (its latest attempt) of the chunks of a step done within the current freeze:
    what a resumed lane skips, and what run-wide checks count."""
    return {e["part"]: e for e in entries
            if e["step"] == name and e["state"] in ledger.DONE_STATES and e["part"] is not None
            and e["part"] >= 0 and (frozen_at is None or (_utc(e["ended_at"]) or frozen_at) >= frozen_at)}


def run_chunks(cfg: Config, p: RunParams, run_id: str, name: str) -> dict[int, dict]:
    """The done chunks of a step for the whole run, refusing if a planned chunk is missing."""
    entries = ledger.get_run(cfg, p.country, run_id)
    done = done_chunks(entries, name, freeze_started(cfg, p, run_id, entries))
    plans = [e for e in entries if e["step"] == "plan" and e["state"] == "succeeded" and e["part"] < 0]
    planned = int(plans[-1]["counts"].get("chunks", 0)) if plans else 0
    if len(done) < planned:
        raise MigrationError(f"{name}: {planned - len(done)} of {planned} planned chunk(s) not done in this run")
    return done


def run_lane(cfg: Config, p: RunParams, run_id: str, name: str, lane: Lane | dict[str, Any],
             fn: Callable[[Chunk], dict[str, Any]]) -> StepCounts:
    """Run `fn` on each chunk of the lane, skipping chunks the ledger has as done within the current
    freeze; sums the counts."""
    entries = ledger.get_run(cfg, p.country, run_id)
    done = done_chunks(entries, name, freeze_started(cfg, p, run_id, entries))
    totals: dict[str, Any] = {"chunks": 0, "skipped_chunks": 0}
    for chunk in Lane.from_dict(lane).chunks:
        if chunk.chunk in done:
            totals["skipped_chunks"] += 1
            continue
        counts = step(cfg, p.country, run_id, name, lambda c=chunk: fn(c), part=chunk.chunk)
        totals["chunks"] += 1
        for k, v in _flatten(counts).items():
            if k != "chunk" and not k.endswith("per_s"):  # ids and rates do not add up across chunks
                totals[k] = totals.get(k, 0) + v
    return totals


def _flatten(counts: dict[str, Any], prefix: str = "") -> dict[str, int]:
    out: dict[str, int] = {}
    for k, v in counts.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    return out


def export_lane(cfg: Config, p: RunParams, run_id: str, lane: Lane | dict[str, Any]) -> StepCounts:
    from billing_migration.country import export

    def _one(chunk: Chunk) -> dict[str, Any]:
        # offline (not a dry run): the country is frozen for the whole copy, so the fast per-table path
        manifest = export.export_chunk(cfg, p.country, run_id, chunk.as_dict(),
                                       engine=export.engine_for(p.mode, frozen=not p.dry_run))
        per_table = {f"rows.{name}": int(t["rows"]) for name, t in manifest["tables"].items()}
        return {"rows": sum(per_table.values()), **per_table}

    return run_lane(cfg, p, run_id, "export", lane, _one)


def transform_lane(cfg: Config, p: RunParams, run_id: str, lane: Lane | dict[str, Any]) -> StepCounts:
    from billing_migration.country import transform

    return run_lane(cfg, p, run_id, "transform", lane,
                    lambda c: transform.transform_chunk(cfg, p.country, run_id, c.chunk))


def check_error_budget(cfg: Config, p: RunParams, run_id: str) -> dict:
    """Stop before any write to Cassandra when the run's rejects exceed the budget.

    Counted from the ledger (every transformed chunk of the run, done now or before a resume), never from
    lane return values, which a resumed lane only has for the chunks it did itself.
    """
    rejects = sum(int(e["counts"].get("rejects", 0)) for e in run_chunks(cfg, p, run_id, "transform").values())

    def _check() -> dict[str, Any]:
        if rejects > p.error_budget:
            raise MigrationError(
                f"{rejects} record(s) rejected by validation, over the error budget of {p.error_budget}; "
                f"see s3://{cfg.s3_bucket}/{s3io.run_prefix(cfg, p.country, run_id)}rejects/ "
                "(table, key, reason per record). Fix the source or raise error_budget to proceed.")
        return {"rejects": rejects, "error_budget": p.error_budget}

    return step(cfg, p.country, run_id, "error_budget", _check)


def load_lane(cfg: Config, p: RunParams, run_id: str, lane: Lane | dict[str, Any]) -> StepCounts:
    from billing_migration.country import load

    lane = Lane.from_dict(lane)
    if lane.lane == 0:
        step(cfg, p.country, run_id, "load_plans", lambda: load.load_plans(cfg, p.country, run_id))
    return run_lane(cfg, p, run_id, "load", lane, lambda c: load.load_chunk(
        cfg, p.country, run_id, c.chunk, concurrency=p.load_concurrency,
        rate_limit_rows_per_s=p.rate_limit_rows_per_s))


def quarantined_keys(cfg: Config, country: str, run_id: str) -> set[tuple[str, int]]:
    """(table, key) of every record the transform rejected in this run: expected absent from the target."""
    from billing_migration.stores import connections

    client = connections.s3_client(cfg)
    out: set[tuple[str, int]] = set()
    for key in s3io.list_keys(client, cfg.s3_bucket, s3io.run_prefix(cfg, country, run_id) + "rejects/"):
        t = s3io.get_parquet(client, cfg.s3_bucket, key, columns=["table", "key"])
        out.update(zip(t.column("table").to_pylist(), (int(k) for k in t.column("key").to_pylist()),
                       strict=True))
    return out


def compare_lane(cfg: Config, p: RunParams, run_id: str, lane: Lane | dict[str, Any]) -> StepCounts:
    """Compare each chunk; re-migrate mismatching customers whole and compare again, up to compare_rounds."""
    from billing_migration.country import compare, remigrate

    quarantined = quarantined_keys(cfg, p.country, run_id)

    def _one(chunk: Chunk) -> dict[str, Any]:
        totals: dict[str, int] = {"rounds": 0, "remigrated_customers": 0}
        ids: list[int] | None = None
        result = None
        for round_no in range(1, p.compare_rounds + 1):
            result = compare.compare_range(cfg, p.country, chunk.lo, chunk.hi, customer_ids=ids,
                                           quarantined=quarantined)
            totals["rounds"] = round_no
            if round_no == 1:
                totals["customers_compared"] = result.counts.get("customers_compared", 0)
                totals["rows_compared"] = result.counts.get("rows_compared", 0)
                totals["fields_compared"] = result.counts.get("fields_compared", 0)
            bad = compare.mismatching_customers(result)
            kinds = result.counts
            totals[f"round{round_no}_mismatches"] = len(bad)
            totals["quarantined"] = kinds.get("quarantined", 0)
            if bad:
                compare.write_mismatches(cfg, p.country, run_id, round_no, result, chunk=chunk.chunk)
            if not bad:
                break
            if round_no == p.compare_rounds and p.mode == "online":
                bad = _not_caught_up(cfg, p, run_id, bad, totals)
                if not bad:
                    break
            if round_no == p.compare_rounds:
                raise MigrationError(
                    f"chunk {chunk.chunk}: {len(bad)} customer(s) still differ after {round_no} round(s) "
                    f"of compare and re-migration, e.g. {bad[:5]}; mismatch reports under s3://"
                    f"{cfg.s3_bucket}/{s3io.run_prefix(cfg, p.country, run_id)}compare/")
            remigrate.remigrate_customers(cfg, p.country, run_id, bad, round_no, source_chunk=chunk.chunk,
                                          concurrency=p.load_concurrency,
                                          rate_limit_rows_per_s=p.rate_limit_rows_per_s)
            totals["remigrated_customers"] += len(bad)
            ids = bad
        totals["mismatches_left"] = 0
        return totals

    return run_lane(cfg, p, run_id, "compare", lane, _one)


def _not_caught_up(cfg: Config, p: RunParams, run_id: str, bad: list[int], totals: dict[str, int]) -> list[int]:
    """Online mode: customers written since the capture start differ because of those writes and are
    re-migrated by catch-up; the others are real mismatches."""
    from billing_migration.online import capture

    touched = capture.touched_since_start(cfg, p.country, run_id)
    totals["left_to_catch_up"] = sum(1 for c in bad if c in touched)
    return [c for c in bad if c not in touched]


def enable_writes(cfg: Config, p: RunParams, run_id: str) -> dict:
    """Flip routing to Cassandra, only after every planned chunk compared clean inside the current freeze
    (read from the ledger, so a resumed compare lane counts too)."""
    compared = run_chunks(cfg, p, run_id, "compare")
    left = sum(int(e["counts"].get("mismatches_left", 0)) for e in compared.values())
    if left:
        raise MigrationError(f"{left} mismatch(es) left; refusing to cut over")

    return step(cfg, p.country, run_id, "enable_writes",
                lambda: write_gate.cutover(cfg, p.country, ACTOR, run_id))


def release_freeze(cfg: Config, country: str, run_id: str) -> dict[str, Any]:
    """Teardown: whatever happened, a country this run froze and did not cut over is writable again."""
    st = write_gate.status(cfg, country)
    if st.get("serving_store") == "cassandra" or not st.get("writes_frozen"):
        return {"action": "none", "status": st}
    if st.get("freeze_run_id") != run_id:
        log.warning("country %s is frozen by another run (%s); leaving it", country, st.get("freeze_run_id"))
        return {"action": "none", "status": st}
    out = write_gate.unfreeze(cfg, country, ACTOR, run_id, reason="run did not reach cut-over")
    now = datetime.now(UTC)
    ledger.record(cfg, country, run_id, "release_freeze", "succeeded", started_at=now, ended_at=now,
                  detail="writes re-enabled on legacy: the run did not reach cut-over")
    return {"action": "unfrozen", "result": out}


def final_report(cfg: Config, country: str, run_id: str, task_states: dict[str, Any],
                 dry_run: bool = False) -> dict[str, Any]:
    """Write the report (JSON and Markdown) to S3 and the log; fail loudly, naming the task that failed
    first, if the run failed.

    Airflow 3's task SDK has no call that sets the DAG run's note from a task (the execution API only reads
    it), so the Markdown goes to S3 as report.md and into this task's log.
    """
    from billing_migration.country import report

    if task_states.get("validate_params") not in ("success", None):
        raise MigrationError(f"run refused by validate_params (see its log); {country} was not touched")
    rep = report.build(cfg, country, run_id, task_states, dry_run=dry_run)
    location = report.write(cfg, rep)
    log.info("run report (%s, and report.md beside it):\n%s", location, report.render_markdown(rep))
    upstream_failed = [k for k, v in rep["task_states"].items() if v == "upstream_failed"]
    if rep["outcome"] == "failed" or upstream_failed:
        where = rep["failed_tasks"] or rep["failed_steps"] or upstream_failed
        raise MigrationError(f"run failed at {where[0]}; {rep['serving']} Report: {location}")
    return {"report": location, "outcome": rep["outcome"], "freeze_window_s": rep["freeze_window_s"]}
