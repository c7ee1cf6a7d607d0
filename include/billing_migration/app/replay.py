"""Queue consumers of the write path: replay of the writes held during a freeze, and the reverse sync.

    writes queue ──replay──▶ Cassandra (after the flip; each write also put on the reverse queue)
                 └─replay──▶ legacy MySQL (after an aborted run or a rollback)
    reverse queue ─reverse sync─▶ legacy MySQL (cut-over countries: the legacy copy stays current)

One consumer per queue at a time (a DAG task). Messages come in FIFO group order (one group per customer);
each is applied with the store's per-customer sequence mark (`apply`), so a redelivered or duplicate write is
skipped and an older one never overwrites a newer one. A write that fails is made visible again after
`queues.retry_delay_s`; later writes of that customer wait behind it (FIFO), other customers go on. After
`queues.max_receive_count` receives SQS moves it to the dead-letter queue: the consumer reports it (key,
operation, sequence, error; no values) and the caller fails loudly. Nothing is deleted before it is applied.

The hold (`write_queue_state.holding`) is released only under its row lock with the queue empty (nothing
visible, in flight or delayed): an application write in flight holds a shared lock on that row until its
message is sent, so no write can be queued after the last receive and stay behind unreplayed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from billing_migration.app import apply
from billing_migration.app.writes import Write, WriteError
from billing_migration.config import Config, normalize_country
from billing_migration.stores import connections, queues

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 600
REVERSE_SYNC_MAX_S = 240.0  # one scheduled reverse sync per country (the DAG runs every 5 minutes)
FINAL_AFTER_S = 10.0  # a replay racing a steady writer finishes under the hold's lock after this long


class ReplayError(RuntimeError):
    """Writes could not all be replayed (dead-lettered, or the queue did not drain in time)."""


@dataclass
class Tally:
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    failed_attempts: int = 0
    mirrored: int = 0
    oldest_age_ms: int = 0
    dead_lettered: list[str] = field(default_factory=list)  # descriptions (no values)

    def counts(self) -> dict[str, int]:
        return {"received": self.received, "applied": self.applied, "duplicates": self.duplicates,
                "failed_attempts": self.failed_attempts, "mirrored": self.mirrored,
                "oldest_age_ms": self.oldest_age_ms, "dead_lettered": len(self.dead_lettered)}


class _Target:
    """Where a consumer applies: legacy MySQL (app account; `reverse`: marked as the reverse sync) or Cassandra."""

    def __init__(self, cfg: Config, store: str, reverse_sync: bool) -> None:
        self.cfg, self.store, self.reverse_sync = cfg, store, reverse_sync
        self._stack = contextlib.ExitStack()
        if store == "cassandra":
            self.session = self._stack.enter_context(connections.cassandra_session(cfg))
        else:
            self.conn = self._stack.enter_context(connections.mysql_conn("mysql_app", cfg))
            if reverse_sync:  # the guard triggers let this session write a cut-over country's legacy copy
                with self.conn.cursor() as cur:
                    cur.execute("SET @bm_reverse_sync = 1")

    def apply(self, w: Write) -> str:
        if self.store == "cassandra":
            return apply.apply_cassandra(self.session, w, consumer=True)
        try:
            with self.conn.cursor() as cur:
                out = apply.apply_mysql(cur, w, consumer=True)
            self.conn.commit()
            return out
        except BaseException:
            self.conn.rollback()
            raise

    def close(self) -> None:
        self._stack.close()


def _error_text(exc: BaseException) -> str:
    """The error without values it may quote (a duplicate-entry message names the value): masked."""
    text = f"{type(exc).__name__}: {exc}"
    return "'".join("***" if i % 2 else part for i, part in enumerate(text.split("'")))[:300]


def _handle(cfg: Config, purpose: str, country: str, target: _Target, m: queues.Received, tally: Tally,
            mirror: bool) -> bool:
    """Apply one message; True if it may be deleted."""
    try:
        if m.body is None:
            raise WriteError("message body is not JSON")
        w = Write.from_body(m.body)
        if w.country != country:
            raise WriteError(f"a write of {w.country} on {country}'s queue")
        result = target.apply(w)
        if mirror:  # applied to Cassandra: legacy gets it through the reverse sync (deduplicated by key)
            queues.send(cfg, "reverse", country, w.group, w.idempotency_key, w.body())
            tally.mirrored += 1
    except Exception as exc:
        tally.failed_attempts += 1
        what = _describe(m)
        if m.receive_count >= cfg.queues.max_receive_count:
            tally.dead_lettered.append(f"{what}: {_error_text(exc)}")
            log.warning("%s write %s failed %d times; SQS moves it to the dead-letter queue: %s", purpose, what,
                        m.receive_count, _error_text(exc))
        queues.retry_later(cfg, purpose, country, m.receipt)
        return False
    tally.applied += result == apply.APPLIED
    tally.duplicates += result == apply.DUPLICATE
    return True


def _describe(m: queues.Received) -> str:
    try:
        return Write.from_body(m.body).describe()
    except Exception:
        return f"message {m.message_id} (group {m.group}, not a valid write)"


def _batch(cfg: Config, purpose: str, country: str, target: _Target, tally: Tally, mirror: bool) -> int:
    msgs = queues.receive(cfg, purpose, country)
    tally.received += len(msgs)
    now = int(time.time() * 1000)
    done, blocked = [], set()
    for m in msgs:
        tally.oldest_age_ms = max(tally.oldest_age_ms, now - m.sent_at_ms if m.sent_at_ms else 0)
        if m.group in blocked:  # an earlier write of this customer failed: keep the order, retry later
            queues.retry_later(cfg, purpose, country, m.receipt)
            continue
        if _handle(cfg, purpose, country, target, m, tally, mirror):
            done.append(m.receipt)
        else:
            blocked.add(m.group)
    queues.delete(cfg, purpose, country, done)
    return len(msgs)


def drain(cfg: Config, purpose: str, country: str, store: str, release_hold: bool = False,
          timeout_s: float = DRAIN_TIMEOUT_S, max_s: float | None = None) -> dict[str, Any]:
    """Apply what is on the country's `purpose` queue to `store` until it is empty (`max_s`: a bounded pass
    that also ends once caught up; a producer that keeps writing never lets the queue empty). With
    `release_hold`, finish under the hold's row lock (application writes wait a moment instead of queueing
    behind) and release the hold once empty. Returns the counts and the dead letters."""
    country = normalize_country(country)
    t0 = time.monotonic()
    tally = Tally()
    target = _Target(cfg, store, reverse_sync=purpose == "reverse")
    mirror = purpose == "writes" and store == "cassandra"
    try:
        while True:
            n = _batch(cfg, purpose, country, target, tally, mirror)
            if release_hold and (n < 10 or time.monotonic() - t0 > FINAL_AFTER_S):
                _drain_and_release(cfg, country, target, tally, mirror, t0 + timeout_s)
                break
            if max_s is not None and (time.monotonic() - t0 > max_s or (
                    n < 10 and queues.total(queues.depth(cfg, purpose, country)) < 10)):
                break  # a bounded pass ends once caught up (a writer keeps adding a few)
            if n:
                continue
            if not queues.total(queues.depth(cfg, purpose, country)):
                break
            _check_deadline(cfg, purpose, country, t0 + timeout_s)
            time.sleep(0.2)  # failing messages are invisible until their retry delay
    finally:
        target.close()
    left = queues.depth(cfg, purpose, country)
    out = {**tally.counts(), "seconds_ms": int((time.monotonic() - t0) * 1000), "store": store,
           "queue": queues.name(cfg, purpose, country), "dead_letter_keys": tally.dead_lettered,
           "depth_after": queues.total(left),
           "dlq_depth": queues.depth(cfg, purpose, country, dead_letter=True)["visible"]}
    log.info("%s %s → %s: %d received, %d applied, %d duplicates skipped, %d dead-lettered in %.2f s", purpose,
             country, store, tally.received, tally.applied, tally.duplicates, len(tally.dead_lettered),
             out["seconds_ms"] / 1000)
    return out


def _check_deadline(cfg: Config, purpose: str, country: str, deadline: float) -> None:
    if time.monotonic() > deadline:
        raise ReplayError(f"{queues.name(cfg, purpose, country)} did not drain in time "
                          f"({queues.depth(cfg, purpose, country)}); rerun to continue")


def _drain_and_release(cfg: Config, country: str, target: _Target, tally: Tally, mirror: bool,
                       deadline: float) -> None:
    """The last messages, with the hold row locked: writes in flight have sent theirs, new ones wait for the
    release (then go to the store directly), so nothing can be queued behind the last receive."""
    with _state_lock(cfg, country) as (conn, cur):
        while True:
            if _batch(cfg, "writes", country, target, tally, mirror):
                continue
            if not queues.total(queues.depth(cfg, "writes", country)):
                cur.execute("UPDATE write_queue_state SET holding = 0, held_since = NULL, held_by = NULL "
                            "WHERE country = %s", (country,))
                conn.commit()
                return
            _check_deadline(cfg, "writes", country, deadline)
            time.sleep(0.2)


@contextlib.contextmanager
def _state_lock(cfg: Config, country: str) -> Iterator[Any]:
    """The country's hold row, locked for update (waits for application writes in flight); commit to keep."""
    with connections.mysql_conn("mysql_gate", cfg) as conn, conn.cursor() as cur:
        cur.execute("INSERT IGNORE INTO write_queue_state (country) VALUES (%s)", (country,))
        conn.commit()
        cur.execute("SELECT holding FROM write_queue_state WHERE country = %s FOR UPDATE", (country,))
        try:
            yield conn, cur
        finally:
            conn.rollback()


def set_hold(cfg: Config, country: str, by: str) -> dict[str, Any]:
    """Hold the country's writes on its queue from now on (waits for writes in flight); idempotent."""
    country = normalize_country(country)
    t0 = time.monotonic()
    with _state_lock(cfg, country) as (conn, cur):
        cur.execute("UPDATE write_queue_state SET holding = 1, held_since = COALESCE(held_since, NOW(3)), "
                    "held_by = COALESCE(held_by, %s) WHERE country = %s", (by[:250], country))
        conn.commit()
    return {"held": True, "drain_ms": int((time.monotonic() - t0) * 1000)}


def hold_state(cfg: Config, country: str) -> dict[str, Any]:
    with connections.mysql_conn("mysql_gate", cfg, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT holding, CAST(held_since AS CHAR), held_by FROM write_queue_state WHERE country = %s",
                    (normalize_country(country),))
        row = cur.fetchone()
    return {"holding": bool(row and row[0]), "held_since": row[1] if row else None, "held_by": row[2] if row else None}


def lag(cfg: Config, purpose: str, country: str) -> dict[str, int]:
    """Depth of a country's queue and of its dead-letter queue (no message is received)."""
    d = queues.depth(cfg, purpose, country)
    return {"depth": queues.total(d), "in_flight": d["in_flight"],
            "dead_letters": queues.depth(cfg, purpose, country, dead_letter=True)["visible"]}


# ------------------------------------------------------------------------------------------ callers
STEP = "replay"


def after_migration(cfg: Config, country: str, run_id: str) -> dict[str, Any]:
    """The migration DAG's `replay_writes` task (after the flip or the unfreeze, outside the freeze budget):
    writes held during the freeze go to the store that now serves the country. Recorded in the ledger (step
    `replay`); raises ReplayError after draining the rest if any write was dead-lettered."""
    from billing_migration.stores import ledger, write_gate

    country = normalize_country(country)
    st = write_gate.status(cfg, country)
    if st.writes_frozen and not st.cut_over:
        raise ReplayError(f"{country} is still frozen on legacy (run {st.freeze_run_id}): its queued writes are "
                          "replayed once it is cut over or unfrozen; nothing was consumed")
    store = "cassandra" if st.cut_over else "legacy"
    if not hold_state(cfg, country)["holding"] and not queues.total(queues.depth(cfg, "writes", country)):
        return {"store": store, "received": 0, "applied": 0, "dead_lettered": 0, "note": "no write was queued"}
    ledger.start(cfg, country, run_id, STEP, detail=f"into {store}")
    try:
        out = drain(cfg, "writes", country, store, release_hold=True)
    except Exception as exc:
        ledger.fail(cfg, country, run_id, STEP, detail=f"into {store}: {exc}"[:2000])
        raise
    return _record(cfg, country, run_id, STEP, out)


def _record(cfg: Config, country: str, run_id: str, step: str, out: dict[str, Any]) -> dict[str, Any]:
    from billing_migration.stores import ledger

    counts = {k: v for k, v in out.items() if isinstance(v, int)}
    keys = out["dead_letter_keys"]
    if keys:
        detail = (f"into {out['store']}: {len(keys)} write(s) dead-lettered on {out['queue']}-dlq: "
                  + "; ".join(keys[:20]))
        ledger.fail(cfg, country, run_id, step, detail=detail[:2000], counts=counts)
        raise ReplayError(detail[:2000])
    ledger.finish(cfg, country, run_id, step, counts=counts, detail=f"into {out['store']}")
    return {**out, "dead_lettered": 0}


def reverse_sync(cfg: Config, country: str, max_s: float | None = None) -> dict[str, Any]:
    """Mirror a cut-over country's Cassandra writes to legacy MySQL (drain its reverse queue; at most `max_s`
    seconds when the application keeps writing)."""
    country = normalize_country(country)
    before = lag(cfg, "reverse", country)
    out = drain(cfg, "reverse", country, "legacy", max_s=max_s)
    return {**out, "country": country, "depth_before": before["depth"]}


def reverse_sync_all(cfg: Config, countries: list[str] | None = None, fail_on_loss: bool = True,
                     max_s: float | None = REVERSE_SYNC_MAX_S) -> dict[str, Any]:
    """Every cut-over country (from the routing): drain its reverse queue; per country the lag found (depth
    before, oldest message age) and what was applied. Raises ReplayError (`fail_on_loss`) naming the countries
    whose dead-letter queue holds writes (written on Cassandra, missing from the legacy copy)."""
    from billing_migration.stores import write_gate

    codes = [normalize_country(c) for c in (countries or list(cfg.countries))]
    results = {st.country: reverse_sync(cfg, st.country, max_s)
               for st in write_gate.statuses(cfg, codes) if st.cut_over}
    if fail_on_loss:
        assert_no_loss(cfg, results)
    return results


def assert_no_loss(cfg: Config, results: dict[str, Any]) -> dict[str, Any]:
    """Fail when a reverse sync left writes in a dead-letter queue."""
    lost = {cc: r["dlq_depth"] for cc, r in results.items() if r["dlq_depth"]}
    if lost:
        raise ReplayError("reverse sync: writes on Cassandra missing from legacy MySQL (dead-lettered): "
                          + ", ".join(f"{cc}: {n} on {queues.name(cfg, 'reverse', cc, dead_letter=True)}"
                                      for cc, n in lost.items()))
    return {cc: {k: r[k] for k in ("depth_before", "oldest_age_ms", "applied", "depth_after", "dlq_depth")}
            for cc, r in results.items()}
