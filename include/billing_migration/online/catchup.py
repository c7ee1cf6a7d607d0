"""Catch-up: replay the binlog since the last checkpoint by re-migrating every touched customer whole, in
rounds, while the country stays writable, until the backlog is small enough to freeze for.

A round: read the changes from the checkpoint to now → re-migrate those customers (re-export from MySQL,
transform, load; partitions of customers gone from the source are deleted) → save the position reached as the
new checkpoint. The export reads after the binlog read ended, so it sees at least every change the round
read; later changes are the next round's. A round killed before its checkpoint is redone from the previous
checkpoint (re-migrating a customer twice is harmless); a resumed task never starts from a later position.
Each round is one ledger row (step `catch_up`, part = round) and one log line.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from billing_migration.config import Config
from billing_migration.online import capture
from billing_migration.progress import Progress, interval_of
from billing_migration.stores import ledger

log = logging.getLogger(__name__)

STEP = "catch_up"
ROUND_BASE = 1000  # remigrate round numbers of catch-up rounds (compare repairs use 1..20, cutover 5000+)
BATCH = 2000  # customers per re-migration (one export/transform/load pass)


def remigrate(cfg: Config, country: str, run_id: str, ids: list[int], round_no: int) -> dict[str, int]:
    """Re-migrate `ids` whole in batches; summed counts."""
    from billing_migration.country import remigrate as rm

    totals: dict[str, int] = {"customers": 0, "rejects": 0}
    prog = Progress(f"catch-up {country} round {round_no - ROUND_BASE}", customers_total=len(ids),
                    interval=interval_of(cfg))
    for i in range(0, len(ids), BATCH):
        out = rm.remigrate_customers(cfg, country, run_id, ids[i:i + BATCH], round_no, source_chunk=i // BATCH)
        for k in ("customers", "rejects", "rows", "deleted_absent"):
            totals[k] = totals.get(k, 0) + int(out.get(k, 0))
        prog.update(int(out.get("rows", 0)), len(ids[i:i + BATCH]))
    prog.finish()
    return totals


def purged_message(country: str, exc: BaseException) -> str:
    return (f"{country}: the binlog no longer holds this run's checkpoint ({exc}); changes since it cannot be "
            "replayed, so the run will not cut over. The country stays writable on legacy: rerun the migration "
            "from the start (a new run records a new capture position), and keep binlogs longer than a run "
            "(expire_logs_days / binlog_expire_logs_seconds).")


def _done_rounds(cfg: Config, country: str, run_id: str) -> list[dict[str, Any]]:
    return sorted((e for e in ledger.get_run(cfg, country, run_id)
                   if e["step"] == STEP and e["state"] == "succeeded" and e["part"] >= 0), key=lambda e: e["part"])


def last_round(cfg: Config, country: str, run_id: str) -> dict[str, Any] | None:
    done = _done_rounds(cfg, country, run_id)
    return done[-1] if done else None


def done_rounds(cfg: Config, country: str, run_id: str) -> list[dict[str, Any]]:
    """This run's succeeded catch-up rounds, in order."""
    return _done_rounds(cfg, country, run_id)


def _round(cfg: Config, country: str, run_id: str, n: int, start: Any) -> tuple[dict[str, int], Any, str]:
    from billing_migration.country.pipeline import inject_failure

    t0 = time.monotonic()
    batch = capture.read(cfg, country, start)
    read_s = time.monotonic() - t0
    ids = sorted({int(c) for c in batch.customers})
    moved = remigrate(cfg, country, run_id, ids, ROUND_BASE + n)
    remig_s = time.monotonic() - t0 - read_s
    capture.save_checkpoint(cfg, country, run_id, batch.end)
    inject_failure("catch_up_checkpointed")  # chaos drill: a reader killed right after a checkpoint
    dur = time.monotonic() - t0
    counts = {"events": int(batch.events), "customers": len(ids), "lag_ms": int(float(batch.lag_s) * 1000),
              "read_ms": int(read_s * 1000), "remigrate_ms": int(remig_s * 1000), "duration_ms": int(dur * 1000),
              "rows": moved.get("rows", 0), "deleted_absent": moved.get("deleted_absent", 0),
              "rejects": moved.get("rejects", 0)}
    where = f"{capture.pos_text(start)} -> {capture.pos_text(batch.end)}"
    log.info("catch-up %s round %d: %d events, %d customers, lag %.1f s, %.2f s, position %s", country, n,
             batch.events, len(ids), float(batch.lag_s), dur, capture.pos_text(batch.end))
    return counts, batch.end, where


def catch_up(cfg: Config, country: str, run_id: str, max_customers: int, max_rounds: int) -> dict[str, Any]:
    """Rounds until the backlog (customers touched in the last round) ≤ max_customers or max_rounds in the
    run are done (at least one round per attempt)."""
    from billing_migration.country.pipeline import MigrationError, inject_failure

    done = _done_rounds(cfg, country, run_id)
    pos = capture.last_checkpoint(cfg, country, run_id)
    first = (done[-1]["part"] + 1) if done else 1
    last = max(first, max_rounds)
    summary: dict[str, Any] = {"rounds": 0, "events": 0, "customers": 0, "first_round": first}
    for n in range(first, last + 1):
        ledger.start(cfg, country, run_id, STEP, part=n, detail=f"from {capture.pos_text(pos)}")
        try:
            inject_failure(STEP)
            counts, pos, where = _round(cfg, country, run_id, n, pos)
        except Exception as exc:
            msg = purged_message(country, exc) if capture.is_purged(exc) else f"{type(exc).__name__}: {exc}"
            ledger.fail(cfg, country, run_id, STEP, part=n, detail=msg[:2000])
            if capture.is_purged(exc):
                raise MigrationError(msg) from exc
            raise
        ledger.finish(cfg, country, run_id, STEP, part=n, counts=counts, detail=where)
        summary["rounds"] += 1
        summary["events"] += counts["events"]
        summary["customers"] += counts["customers"]
        summary.update(last_round=n, backlog=counts["customers"], lag_ms=counts["lag_ms"])
        if counts["customers"] <= max_customers:
            break
    else:
        log.info("catch-up %s: backlog of %d customers still above %d after round %d (catchup_max_rounds); "
                    "the freeze budget check decides whether the cutover may freeze", country,
                    summary.get("backlog", 0), max_customers, last)
    return summary
