"""Rollback: move a cut-over country back to the legacy store without losing a write.

    reverse sync (drain, Cassandra still serving) → hold (writes queued; waits for writes in flight)
      → reverse sync again (the last Cassandra writes) → compare the whole country (MySQL vs Cassandra)
      → flip routing back to legacy (writable) → replay the writes held meanwhile into legacy → release

If anything fails before the flip, the country stays on Cassandra: the writes held during the attempt are
replayed into Cassandra, the hold released, and the error re-raised. A rerun after a failed final replay only
replays (the flip is done). Every step is recorded in the ledger under the rollback's run id.
"""

from __future__ import annotations

import logging
from typing import Any

from billing_migration.app import replay
from billing_migration.config import Config, normalize_country
from billing_migration.stores import ledger, write_gate

log = logging.getLogger(__name__)

ACTOR = "rollback_billing"
STEP = "rollback"
MAX_ID = 2**63 - 1
PRE_HOLD_SYNC_S = 30.0


class RollbackError(RuntimeError):
    """The country could not be rolled back; it still serves from Cassandra (held writes replayed there)."""


def _reverse_sync(cfg: Config, country: str, max_s: float | None = None) -> dict[str, Any]:
    out = replay.reverse_sync(cfg, country, max_s)
    if out["dlq_depth"]:
        raise RollbackError(f"{out['dlq_depth']} write(s) on Cassandra never reached legacy MySQL (dead-lettered "
                            f"on {out['queue']}); rolling back would lose them. Fix and redrive them first")
    return out


def _compare(cfg: Config, country: str) -> dict[str, int]:
    from billing_migration.country import compare

    result = compare.compare_range(cfg, country, 0, MAX_ID)
    bad = compare.mismatching_customers(result)
    if bad:
        raise RollbackError(f"{len(bad)} customer(s) differ between Cassandra and legacy MySQL after the reverse "
                            f"sync, e.g. {bad[:5]}: not rolling back ({result.summary()})")
    return {"customers_compared": int(result.counts.get("customers_compared", 0))}


def _switch(cfg: Config, country: str, run_id: str, counts: dict[str, int]) -> None:
    """Everything up to the flip; on failure the held writes go back to Cassandra."""
    # While Cassandra still takes writes the queue never empties: a bounded pass makes the held part short.
    counts["reverse_synced_before_hold"] = _reverse_sync(cfg, country, PRE_HOLD_SYNC_S)["applied"]
    counts["hold_wait_ms"] = replay.set_hold(cfg, country, f"{ACTOR} {run_id}")["drain_ms"]
    try:
        counts["reverse_synced_after_hold"] = _reverse_sync(cfg, country)["applied"]
        counts.update(_compare(cfg, country))
        write_gate.unfreeze(cfg, country, ACTOR, run_id, reason=f"rollback to legacy ({run_id})",
                            force_rollback=True)
    except BaseException:
        if write_gate.status(cfg, country).cut_over:
            replay.drain(cfg, "writes", country, "cassandra", release_hold=True)
        raise


def run(cfg: Config, country: str, run_id: str) -> dict[str, Any]:
    """Roll `country` back to legacy; returns the counts (writes synced, compared, replayed)."""
    country = normalize_country(country)
    st = write_gate.status(cfg, country)
    if not st.cut_over and not replay.hold_state(cfg, country)["holding"]:
        raise RollbackError(f"{country} is not cut over (serving {st.serving_store}); nothing to roll back")
    ledger.start(cfg, country, run_id, STEP, detail=f"from cassandra (cut over by {st.cutover_run_id})")
    counts: dict[str, int] = {}
    try:
        if st.cut_over:
            _switch(cfg, country, run_id, counts)
        out = replay.drain(cfg, "writes", country, "legacy", release_hold=True)
        counts.update(replayed=out["applied"], replay_dead_lettered=out["dead_lettered"],
                      replay_ms=out["seconds_ms"])
        if out["dead_lettered"]:
            raise RollbackError(f"rolled back, but {out['dead_lettered']} held write(s) were dead-lettered: "
                                + "; ".join(out["dead_letter_keys"][:20]))
    except Exception as exc:
        ledger.fail(cfg, country, run_id, STEP, detail=str(exc)[:2000], counts=counts)
        raise
    ledger.finish(cfg, country, run_id, STEP, counts=counts, detail="serving from legacy MySQL")
    log.info("rollback %s: serving from legacy MySQL again: %s", country, counts)
    return {**counts, "serving_store": write_gate.status(cfg, country).serving_store}
