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
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from billing_migration.config import Config, ConfigError, normalize_country
from billing_migration.stores import ledger, s3io, write_gate
from billing_migration.stores.schema import ENTITY_TABLES

log = logging.getLogger(__name__)

RESET_CHOICES = ("none", "country", *(t.name for t in ENTITY_TABLES))
MODES = ("online", "offline")  # online: copy while writable, freeze only for the delta (online/*)
ACTOR = "airflow:migrate_billing"


class MigrationError(RuntimeError):
    """A step found a condition that must stop the run (the country stays writable on legacy)."""


@dataclass(frozen=True)
class RunParams:
    country: str
    chunk_customers: int
    parallelism: int
    error_budget: int
    rate_limit_rows_per_s: int
    compare_rounds: int
    load_concurrency: int
    reset: str
    dry_run: bool
    mode: str = "online"
    catchup_max_customers: int = 200
    catchup_max_rounds: int = 10
    freeze_budget_s: int = 30

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_params(cfg: Config, country: str, params: dict[str, Any]) -> RunParams:
    """Refuse a bad run before anything is touched: every value typed and in range, the country confirmed."""
    settings = cfg.country(country)
    given = normalize_country(params.get("country", country))
    if given != country:
        raise ConfigError(f"this DAG migrates {country}; the country param says {given!r}")

    def _int(name: str, default: int, lo: int, hi: int) -> int:
        value = params.get(name, default)
        if value is None:
            value = default
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value = int(value)
            else:
                raise ConfigError(f"param {name} must be an integer, got {value!r}")
        if not lo <= value <= hi:
            raise ConfigError(f"param {name} must be in [{lo}, {hi}], got {value}")
        return value

    reset = params.get("reset") or "none"
    if reset not in RESET_CHOICES:
        raise ConfigError(f"param reset must be one of {list(RESET_CHOICES)}, got {reset!r}")
    dry_run = params.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ConfigError(f"param dry_run must be true or false, got {dry_run!r}")
    mode = params.get("mode") or "online"
    if mode not in MODES:
        raise ConfigError(f"param mode must be one of {list(MODES)}, got {mode!r}")
    return RunParams(
        country=country,
        chunk_customers=_int("chunk_customers", settings.chunk_customers, 100, 1_000_000),
        parallelism=_int("parallelism", settings.max_parallel_chunks, 1, 64),
        error_budget=_int("error_budget", settings.error_budget, 0, 10**12),
        rate_limit_rows_per_s=_int("rate_limit_rows_per_s", settings.rate_limit_rows_per_s, 0, 10**9),
        compare_rounds=_int("compare_rounds", settings.compare_rounds, 1, 20),
        load_concurrency=_int("load_concurrency", settings.load_concurrency, 1, 2048),
        reset=reset,
        dry_run=dry_run,
        mode=mode,
        catchup_max_customers=_int("catchup_max_customers", 200, 0, 10_000_000),
        catchup_max_rounds=_int("catchup_max_rounds", 10, 1, 1000),
        freeze_budget_s=_int("freeze_budget_s", 30, 1, 3600),
    )


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
    st = write_gate.status(cfg, country)
    return {"already_migrated": st.get("serving_store") == "cassandra", "status": st}


def disable_writes(cfg: Config, p: RunParams, run_id: str) -> dict[str, Any]:
    drain = cfg.country(p.country).freeze_drain_timeout_s
    return step(cfg, p.country, run_id, "disable_writes",
                lambda: write_gate.freeze(cfg, p.country, ACTOR, run_id, drain_timeout_s=drain))


def plan(cfg: Config, p: RunParams, run_id: str) -> list[dict[str, Any]]:
    """Reset the target if asked, export the plan catalogue, cut the country into chunks and lanes."""
    from billing_migration.country import export, load

    def _plan() -> dict[str, Any]:
        if p.reset != "none":
            load.delete_country(cfg, p.country, table=None if p.reset == "country" else p.reset)
        chunks = export.plan_chunks(cfg, p.country, p.chunk_customers)
        export.export_plans(cfg, p.country, run_id)
        return {"chunks": len(chunks), "customers": sum(c["customers"] for c in chunks), "_chunks": chunks}

    out = step(cfg, p.country, run_id, "plan", _plan)
    chunks = out["_chunks"]
    lanes = max(1, min(p.parallelism, len(chunks)))
    return [{"lane": k, "lanes": lanes, "chunks": chunks[k::lanes]} for k in range(lanes)]


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


def run_lane(cfg: Config, p: RunParams, run_id: str, name: str, lane: dict[str, Any],
             fn: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """Run `fn` on each chunk of the lane, skipping chunks the ledger has as done within the current
    freeze; sums the counts."""
    entries = ledger.get_run(cfg, p.country, run_id)
    frozen_at = freeze_started(cfg, p, run_id, entries)
    done = {e["part"] for e in entries
            if e["step"] == name and e["state"] in ("succeeded", "skipped") and e["part"] is not None
            and e["part"] >= 0 and (frozen_at is None or (_utc(e["ended_at"]) or frozen_at) >= frozen_at)}
    totals: dict[str, Any] = {"chunks": 0, "skipped_chunks": 0}
    for chunk in lane["chunks"]:
        if chunk["chunk"] in done:
            totals["skipped_chunks"] += 1
            continue
        counts = step(cfg, p.country, run_id, name, lambda c=chunk: fn(c), part=chunk["chunk"])
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


def export_lane(cfg: Config, p: RunParams, run_id: str, lane: dict[str, Any]) -> dict[str, Any]:
    from billing_migration.country import export

    def _one(chunk: dict[str, Any]) -> dict[str, Any]:
        manifest = export.export_chunk(cfg, p.country, run_id, chunk)
        return {"rows": sum(t["rows"] for t in manifest["tables"].values())}

    return run_lane(cfg, p, run_id, "export", lane, _one)


def transform_lane(cfg: Config, p: RunParams, run_id: str, lane: dict[str, Any]) -> dict[str, Any]:
    from billing_migration.country import transform

    return run_lane(cfg, p, run_id, "transform", lane,
                    lambda c: transform.transform_chunk(cfg, p.country, run_id, c["chunk"]))


def check_error_budget(cfg: Config, p: RunParams, run_id: str, lane_results: list[dict[str, Any]]) -> dict:
    """Stop before any write to Cassandra when the rejects exceed the budget."""
    rejects = sum(int(r.get("rejects", 0)) for r in lane_results)

    def _check() -> dict[str, Any]:
        if rejects > p.error_budget:
            raise MigrationError(
                f"{rejects} record(s) rejected by validation, over the error budget of {p.error_budget}; "
                f"see s3://{cfg.s3_bucket}/{s3io.run_prefix(cfg, p.country, run_id)}rejects/ "
                "(table, key, reason per record). Fix the source or raise error_budget to proceed.")
        return {"rejects": rejects, "error_budget": p.error_budget}

    return step(cfg, p.country, run_id, "error_budget", _check)


def load_lane(cfg: Config, p: RunParams, run_id: str, lane: dict[str, Any]) -> dict[str, Any]:
    from billing_migration.country import load

    if lane["lane"] == 0:
        step(cfg, p.country, run_id, "load_plans", lambda: load.load_plans(cfg, p.country, run_id))
    return run_lane(cfg, p, run_id, "load", lane, lambda c: load.load_chunk(
        cfg, p.country, run_id, c["chunk"], concurrency=p.load_concurrency,
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


def compare_lane(cfg: Config, p: RunParams, run_id: str, lane: dict[str, Any]) -> dict[str, Any]:
    """Compare each chunk; re-migrate mismatching customers whole and compare again, up to compare_rounds."""
    from billing_migration.country import compare, remigrate

    quarantined = quarantined_keys(cfg, p.country, run_id)

    def _one(chunk: dict[str, Any]) -> dict[str, Any]:
        totals: dict[str, int] = {"rounds": 0, "remigrated_customers": 0}
        ids: list[int] | None = None
        result = None
        for round_no in range(1, p.compare_rounds + 1):
            result = compare.compare_range(cfg, p.country, chunk["lo"], chunk["hi"], customer_ids=ids,
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
                compare.write_mismatches(cfg, p.country, run_id, round_no, result, chunk=chunk["chunk"])
            if not bad:
                break
            if round_no == p.compare_rounds and p.mode == "online":
                bad = _not_caught_up(cfg, p, run_id, bad, totals)
                if not bad:
                    break
            if round_no == p.compare_rounds:
                raise MigrationError(
                    f"chunk {chunk['chunk']}: {len(bad)} customer(s) still differ after {round_no} round(s) "
                    f"of compare and re-migration, e.g. {bad[:5]}; mismatch reports under s3://"
                    f"{cfg.s3_bucket}/{s3io.run_prefix(cfg, p.country, run_id)}compare/")
            remigrate.remigrate_customers(cfg, p.country, run_id, bad, round_no, source_chunk=chunk["chunk"])
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


def enable_writes(cfg: Config, p: RunParams, run_id: str, compare_results: list[dict[str, Any]]) -> dict:
    """Flip routing to Cassandra, only after every chunk compared clean."""
    left = sum(int(r.get("mismatches_left", 0)) for r in compare_results)
    if left:
        raise MigrationError(f"{left} mismatch(es) left; refusing to cut over")
    freeze_started(cfg, p, run_id)  # compared data is still what is frozen now

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
    ledger.record(cfg, country, run_id, "release_freeze", "succeeded",
                  detail="writes re-enabled on legacy: the run did not reach cut-over")
    return {"action": "unfrozen", "result": out}


def final_report(cfg: Config, country: str, run_id: str, task_states: dict[str, Any]) -> dict[str, Any]:
    """Write the report to S3 and the log; fail loudly (pointing at it) if any task of the run failed."""
    from billing_migration.country import report

    rep = report.build(cfg, country, run_id)
    rep["task_states"] = {k: v for k, v in sorted(task_states.items()) if k != "report"}
    location = report.write(cfg, rep)
    log.info("run report (%s):\n%s", location, report.render(rep))
    failed = sorted(k for k, v in rep["task_states"].items() if v in ("failed", "upstream_failed"))
    if failed:
        raise MigrationError(f"run failed at {failed}; {country} stays on "
                             f"{rep['serving_store']} (writes frozen: {bool(rep['writes_frozen'])}); "
                             f"report: {location}")
    return {"report": location, "outcome": rep["outcome"], "freeze_window_s": rep["freeze_window_s"]}
