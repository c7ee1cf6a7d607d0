"""The online cut-over: everything frozen happens in this one call (an Airflow task hop costs about a second).

    a last catch-up round or few (writable) → estimate ≤ budget? → freeze (drains in-flight writers)
      → position now = freeze position → changes from the last checkpoint to it → re-migrate those
      customers → compare exactly them (re-migrate + re-compare mismatches up to compare_rounds)
      → flip routing to Cassandra

Writes are never refused longer than `freeze_budget_s` plus the sub-step in progress: the elapsed time is
checked between sub-steps, and past the budget the country is unfrozen at once and the run fails. Before
freezing, the frozen work is estimated from the catch-up rounds (the last one's backlog × the seconds per
customer measured over the rounds, twice for re-migrate + compare, plus a fixed overhead) and the freeze is
refused when the estimate is over budget. Any error while frozen unfreezes (writable on legacy) and re-raises.
The freeze window (gate's frozen_at → cut-over or unfreeze) is recorded in the ledger: step `cutover`,
counts `freeze_ms`, `frozen_at_ms`, `thawed_at_ms` (epoch ms), `delta_customers`, `delta_events`.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime
from typing import Any

from billing_migration.config import Config
from billing_migration.online import capture, catchup
from billing_migration.stores import ledger, write_gate

log = logging.getLogger(__name__)

STEP = "cutover"
ROUND_BASE = 5000  # remigrate round numbers inside the freeze (delta = 5000, compare repairs 5001..)
PRE_FREEZE_ROUNDS = 3  # catch-up rounds at most in this task before freezing
FIXED_S = 1.0  # freeze + binlog read + flip + the fixed cost of one export/transform/load/compare pass
DEFAULT_PER_CUSTOMER_S = 0.01


class FreezeBudgetExceeded(RuntimeError):
    pass


def estimate(cfg: Config, country: str, run_id: str) -> dict[str, float]:
    """Expected frozen seconds: the last catch-up round's backlog (about the delta to come) × the seconds per
    customer measured over all of the run's rounds (one round alone can carry a new process's warm-up)."""
    rounds = [e.get("counts") or {} for e in catchup.done_rounds(cfg, country, run_id)]
    backlog = int(rounds[-1].get("customers", 0)) if rounds else 0
    customers = sum(int(c.get("customers", 0)) for c in rounds)
    per = (sum(int(c.get("remigrate_ms", 0)) for c in rounds) / 1000 / customers if customers
           else DEFAULT_PER_CUSTOMER_S)
    return {"backlog": backlog, "per_customer_s": per, "estimate_s": FIXED_S + 2 * backlog * per}


class _Clock:
    """Elapsed time since the freeze began, checked against the budget between sub-steps."""

    def __init__(self, budget_s: int) -> None:
        self.budget_s = budget_s
        self.t0 = time.monotonic()

    def frozen_since(self, epoch_s: float) -> None:
        """Count from the gate's frozen_at when it is earlier (a retried task finding its own freeze)."""
        self.t0 = min(self.t0, time.monotonic() - max(0.0, time.time() - epoch_s))

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def check(self, after: str) -> None:
        if self.elapsed() > self.budget_s:
            raise FreezeBudgetExceeded(
                f"freeze budget of {self.budget_s} s exceeded ({self.elapsed():.1f} s, after {after}); writes "
                "re-enabled on legacy, nothing cut over. Raise freeze_budget_s or lower catchup_max_customers "
                "(a smaller backlog before freezing), then rerun")


def _delay_for_drills() -> None:
    """Chaos hook: `BM_FREEZE_DELAY_S=<s>` makes the frozen part that much slower (tests of the budget)."""
    delay = float(os.environ.get("BM_FREEZE_DELAY_S") or 0)
    if delay > 0:
        time.sleep(delay)


def _remigrate(cfg: Config, country: str, run_id: str, ids: list[int], round_no: int, clock: _Clock) -> int:
    """Re-migrate in batches, checking the budget after each; returns the records rejected."""
    rejects = 0
    for i in range(0, len(ids), catchup.BATCH):
        rejects += catchup.remigrate(cfg, country, run_id, ids[i:i + catchup.BATCH], round_no)["rejects"]
        clock.check(f"re-migrating {min(i + catchup.BATCH, len(ids))}/{len(ids)} customers")
    return rejects


def _compare(cfg: Config, p: Any, run_id: str, ids: list[int], quarantined: set, clock: _Clock,
             counts: dict[str, int]) -> None:
    """Compare exactly the delta's customers; re-migrate mismatches and compare again, up to compare_rounds."""
    from billing_migration.country import compare
    from billing_migration.country.pipeline import MigrationError

    todo = ids
    for round_no in range(1, p.compare_rounds + 1):
        result = compare.compare_range(cfg, p.country, todo[0], todo[-1], customer_ids=todo,
                                       quarantined=quarantined)
        clock.check(f"compare round {round_no}")
        bad = compare.mismatching_customers(result)
        counts["compare_rounds"], counts[f"round{round_no}_mismatches"] = round_no, len(bad)
        if not bad:
            return
        compare.write_mismatches(cfg, p.country, run_id, ROUND_BASE + round_no, result)
        if round_no == p.compare_rounds:
            raise MigrationError(f"{len(bad)} customer(s) of the frozen delta still differ after {round_no} "
                                 f"compare round(s), e.g. {bad[:5]}; not cutting over")
        _remigrate(cfg, p.country, run_id, bad, ROUND_BASE + round_no, clock)
        todo = bad


def _frozen_work(cfg: Config, p: Any, run_id: str, start: Any, quarantined: set, clock: _Clock,
                 counts: dict[str, int]) -> None:
    """Delta since the last checkpoint up to the freeze position: re-migrate, then compare exactly it."""
    from billing_migration.country.pipeline import quarantined_keys

    t0 = clock.elapsed()
    stop = capture.current_position(cfg)
    batch = capture.read(cfg, p.country, start, stop)
    ids = sorted({int(c) for c in batch.customers})
    counts.update(delta_events=int(batch.events), delta_customers=len(ids),
                  read_ms=int((clock.elapsed() - t0) * 1000))
    clock.check(f"reading {batch.events} binlog events")
    _delay_for_drills()
    clock.check("the drill delay")
    if not ids:
        counts["compare_rounds"] = 0
        return
    t0 = clock.elapsed()
    if _remigrate(cfg, p.country, run_id, ids, ROUND_BASE, clock):  # new rejects: expected absent
        quarantined = quarantined_keys(cfg, p.country, run_id)
    t1 = clock.elapsed()
    _compare(cfg, p, run_id, ids, quarantined, clock, counts)
    counts.update(remigrate_ms=int((t1 - t0) * 1000), compare_ms=int((clock.elapsed() - t1) * 1000))


def _epoch_ms(value: Any) -> int:
    return int(datetime.fromisoformat(str(value)).timestamp() * 1000)


def _thaw(cfg: Config, country: str, run_id: str, why: str) -> int:
    """Unfreeze a country this run froze and did not cut over; returns the epoch ms when writable again."""
    from billing_migration.country.pipeline import ACTOR

    st = write_gate.status(cfg, country)
    if st.get("writes_frozen") and st.get("serving_store") != "cassandra" and st.get("freeze_run_id") == run_id:
        write_gate.unfreeze(cfg, country, ACTOR, run_id, reason=f"cutover aborted: {why}"[:900])
    return int(time.time() * 1000)


def catch_up_before_freezing(cfg: Config, p: Any, run_id: str) -> None:
    """Catch-up rounds in this task right before the freeze: the frozen delta then holds the writes of the last
    round's few seconds, not those of the task hop since `catch_up` (seconds on a busy scheduler)."""
    for _ in range(PRE_FREEZE_ROUNDS):
        out = catchup.catch_up(cfg, p.country, run_id, p.catchup_max_customers, max_rounds=0)  # one round
        if out["backlog"] <= p.catchup_max_customers:
            return


def refuse_if_over_budget(cfg: Config, p: Any, run_id: str) -> dict[str, float]:
    from billing_migration.country.pipeline import MigrationError

    est = estimate(cfg, p.country, run_id)
    if est["estimate_s"] > p.freeze_budget_s:
        msg = (f"{p.country}: the frozen part would take about {est['estimate_s']:.1f} s (backlog of "
               f"{est['backlog']} customers × {est['per_customer_s'] * 1000:.1f} ms × 2 + {FIXED_S:.0f} s), over "
               f"freeze_budget_s={p.freeze_budget_s}; not freezing (writes stay enabled on legacy). Raise "
               "freeze_budget_s or lower catchup_max_customers (or raise catchup_max_rounds), then rerun")
        ledger.record(cfg, p.country, run_id, STEP, "failed", detail=msg,
                      counts={"estimate_ms": int(est["estimate_s"] * 1000), "budget_ms": p.freeze_budget_s * 1000,
                              "backlog": est["backlog"]})
        raise MigrationError(msg)
    return est


def run(cfg: Config, p: Any, run_id: str) -> dict[str, Any]:
    """Freeze, migrate and compare the delta, flip; within the freeze budget or not at all."""
    from billing_migration.country import pipeline

    st = write_gate.status(cfg, p.country)
    if st.get("serving_store") == "cassandra" and st.get("cutover_run_id") == run_id:
        return {"already_cut_over": True, "serving_store": "cassandra"}  # a retried task after the flip
    # From the ledger (every planned chunk, resumed lanes included), not from the lanes' XComs.
    compared = pipeline.run_chunks(cfg, p, run_id, "compare")
    left = sum(int(e["counts"].get("mismatches_left", 0)) for e in compared.values())
    if left:
        raise pipeline.MigrationError(f"{left} mismatch(es) left; refusing to cut over")
    capture.require_capture_before_plan(cfg, p.country, run_id)
    catch_up_before_freezing(cfg, p, run_id)
    est = refuse_if_over_budget(cfg, p, run_id)
    start = capture.last_checkpoint(cfg, p.country, run_id)
    quarantined = pipeline.quarantined_keys(cfg, p.country, run_id)
    drain = min(cfg.country(p.country).freeze_drain_timeout_s, p.freeze_budget_s)
    counts: dict[str, int] = {"estimate_ms": int(est["estimate_s"] * 1000), "budget_ms": p.freeze_budget_s * 1000}
    ledger.start(cfg, p.country, run_id, STEP, detail=f"from {capture.pos_text(start)}")
    clock = _Clock(p.freeze_budget_s)
    frozen_at = None
    try:
        st = pipeline.step(cfg, p.country, run_id, "disable_writes", lambda: write_gate.freeze(
            cfg, p.country, pipeline.ACTOR, run_id, drain_timeout_s=drain))
        frozen_at = _epoch_ms(st["frozen_at"])
        clock.frozen_since(frozen_at / 1000)
        counts["drain_ms"] = int(st.get("drain_s", 0) * 1000)
        clock.check("the freeze (draining in-flight writers)")
        _frozen_work(cfg, p, run_id, start, quarantined, clock, counts)
        clock.check("the delta")
        flip = pipeline.step(cfg, p.country, run_id, "enable_writes", lambda: write_gate.cutover(
            cfg, p.country, pipeline.ACTOR, run_id))
    except BaseException as exc:
        why = catchup.purged_message(p.country, exc) if capture.is_purged(exc) else f"{type(exc).__name__}: {exc}"
        thawed = _thaw(cfg, p.country, run_id, why)
        if frozen_at is not None:
            counts.update(frozen_at_ms=frozen_at, thawed_at_ms=thawed, freeze_ms=thawed - frozen_at)
        ledger.fail(cfg, p.country, run_id, STEP, detail=why[:2000], counts=counts)
        log.error("cutover %s aborted after %.2f s frozen; writes re-enabled on legacy: %s", p.country,
                  (thawed - frozen_at) / 1000 if frozen_at else 0.0, why)
        if capture.is_purged(exc) or isinstance(exc, FreezeBudgetExceeded):
            raise pipeline.MigrationError(why) from exc
        raise
    flipped = _epoch_ms(flip["cutover_at"])
    counts.update(frozen_at_ms=frozen_at, thawed_at_ms=flipped, freeze_ms=flipped - frozen_at)
    ledger.finish(cfg, p.country, run_id, STEP, counts=counts,
                  detail=f"frozen {flip.get('frozen_at')} → cut over {flip['cutover_at']}")
    log.info("cutover %s: frozen %.3f s (budget %d s): %d events, %d customers re-migrated and compared; "
             "routing flipped to cassandra", p.country, counts["freeze_ms"] / 1000, p.freeze_budget_s,
             counts.get("delta_events", 0), counts.get("delta_customers", 0))
    return {**counts, "serving_store": flip.get("serving_store")}
