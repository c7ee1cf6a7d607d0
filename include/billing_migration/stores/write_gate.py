"""The write gate: freeze, unfreeze and cut over one country's billing writes on the legacy MySQL.

Why it is built this way:
- ENFORCED, not advisory. A BEFORE INSERT/UPDATE/DELETE trigger on every billing table refuses a write to a
  frozen country (or one already served by Cassandra) with `SIGNAL SQLSTATE '45000'`, whatever client makes
  it. Cost per written row: one primary-key lookup into `country_routing` (plus one into `customers` for
  child tables, which carry only the customer id).
- The trigger reads the routing row with `LOCK IN SHARE MODE`. That matters twice:
  1. a locking read sees the latest committed routing row, not the writer's REPEATABLE READ snapshot, so a
     transaction that began before the freeze cannot slip a write past it;
  2. every open transaction that already wrote the country's rows holds a shared lock on its routing row,
     so the freeze's UPDATE of that row (exclusive lock) waits exactly for those in-flight transactions to
     commit or roll back: when `freeze()` returns, every write the application was told succeeded is in
     the table, and nothing can add more. `innodb_lock_wait_timeout` bounds the wait (drain_timeout_s).
- Child tables find the country through the customer row, also read with a shared lock (as the foreign-key
  check of an INSERT already does): a snapshot read could miss a customer created after the writer's
  snapshot and let its rows through. Cost: a transaction that updates a child row and then its customer
  can wait for (or, rarely, deadlock with) a concurrent update of that customer; InnoDB resolves it and
  the application retries as for any deadlock. The guard's measured cost per row is in BENCHMARKS.md.
- The gate is installed ahead of time by `prepare()` (bootstrap, the DAG's check_routing step, `scripts/bm
  prepare`), never inside a freeze: trigger DDL flushes the table, and a multi-statement transaction of ANY
  country that opens a flushed table is killed with ER_LOCK_DEADLOCK (1213). `prepare()` therefore creates
  each trigger with `lock_wait_timeout = 0` and retries: the DDL only proceeds at an instant when no
  transaction holds the table, so it never queues writers behind it nor flushes a table anyone has open.
  The same rule means no open transaction holds an unguarded write once `prepare()` returns.
- A writer that holds no lock on the routing row (a READ COMMITTED session writing a country that had no
  routing row): in that case only, after the freeze commits, freeze() polls information_schema.INNODB_TRX
  for transactions in this database older than the freeze that modified rows and waits for them within
  the same timeout. On timeout the freeze is undone and a clear error raised.
- The one exception: a session that sets `@bm_reverse_sync` may write a CUT-OVER country (legacy is then a
  copy that only the write path's reverse sync maintains, `billing_migration.app.replay`); a country frozen
  for a migration refuses every session.
- Routing lives next to the data because the legacy application reads it; every action is an event row in
  `write_gate_events` (who, which run, why).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from billing_migration.config import Config, normalize_country
from billing_migration.stores import connections
from billing_migration.stores.schema import TABLES, TABLES_BY_NAME, Table

log = logging.getLogger(__name__)

ROLE = "mysql_gate"
TRIGGER_VERSION = "bm_gate v3"
_OPS = {"INSERT": "bi", "UPDATE": "bu", "DELETE": "bd"}
_ER_LOCK_WAIT_TIMEOUT = 1205
_ER_LOCK_DEADLOCK = 1213


class WriteGateError(RuntimeError):
    """The gate refused an action (or could not drain in time); routing is left in a consistent state."""


# ------------------------------------------------------------------------------------------ triggers
def trigger_name(table: str, op: str) -> str:
    return f"bm_gate_{table}_{_OPS[op]}"


def _check_country_sql(country_expr: str) -> str:
    """Statements that look up the routing row of `country_expr` and SIGNAL if writes are refused."""
    return f"""
  SET v_frozen = NULL, v_store = NULL, v_run = NULL;
  SELECT writes_frozen, serving_store, COALESCE(cutover_run_id, freeze_run_id)
    INTO v_frozen, v_store, v_run
    FROM country_routing WHERE country = {country_expr} LOCK IN SHARE MODE;
  IF (v_store = 'cassandra' AND @bm_reverse_sync IS NULL) OR (v_store <> 'cassandra' AND v_frozen = 1) THEN
    SET v_msg = LEFT(CONCAT('billing writes for country ', {country_expr}, ' are frozen (migration run ',
                            IFNULL(v_run, '?'), IF(v_store = 'cassandra', '; served by cassandra', ''), ')'), 128);
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_msg;
  END IF;"""


def _child_check_sql(row: str) -> str:
    """Child rows carry only the customer id: find the country through the customer (PK lookup)."""
    return f"""
  SET v_country = NULL;
  SELECT country INTO v_country FROM customers WHERE customer_id = {row}.customer_id LOCK IN SHARE MODE;
  IF v_country IS NOT NULL THEN{_check_country_sql('v_country')}
  END IF;"""


def trigger_sql(table: Table, op: str) -> str:
    """The guard trigger of one table and operation (MariaDB 10.11 syntax)."""
    row = {"INSERT": "NEW", "UPDATE": "OLD", "DELETE": "OLD"}[op]
    if table.name in ("customers", "plans"):
        checks = _check_country_sql(f"{row}.country")
        moved = "NOT (NEW.country <=> OLD.country)"
        if op == "UPDATE":  # a row moved into another country: that country is checked too
            checks += f"\n  IF {moved} THEN{_check_country_sql('NEW.country')}\n  END IF;"
    else:
        checks = _child_check_sql(row)
        if op == "UPDATE":  # a row moved to another customer
            checks += (f"\n  IF NOT (NEW.customer_id <=> OLD.customer_id) THEN{_child_check_sql('NEW')}"
                       "\n  END IF;")
    return f"""CREATE OR REPLACE TRIGGER `{trigger_name(table.name, op)}` BEFORE {op} ON `{table.name}`
FOR EACH ROW
BEGIN
  /* {TRIGGER_VERSION}: refuse billing writes of frozen countries (billing_migration.stores.write_gate) */
  DECLARE v_frozen TINYINT DEFAULT NULL;
  DECLARE v_store VARCHAR(16) DEFAULT NULL;
  DECLARE v_run VARCHAR(250) DEFAULT NULL;
  DECLARE v_country CHAR(2) DEFAULT NULL;
  DECLARE v_msg VARCHAR(128) DEFAULT NULL;
  DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN END;{checks}
END"""


@dataclass(frozen=True)
class PrepareResult:
    """The guard triggers `prepare()` (re)installed (empty when the gate was ready) and how long it took."""

    installed: tuple[str, ...]
    retries: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "installed": list(self.installed)}


def _trigger_bodies(cur) -> dict[str, str]:
    cur.execute("SELECT TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS "
                "WHERE TRIGGER_SCHEMA = DATABASE() AND TRIGGER_NAME LIKE 'bm\\_gate\\_%%'")
    return {name: body or "" for name, body in cur.fetchall()}


# The routing and its events are the gate itself: the legacy application's account can write billing tables
# (SELECT, INSERT, UPDATE, DELETE on the whole database) and so could unfreeze a country by one UPDATE. These
# triggers let only the gate's own accounts (the mysql_gate and mysql_admin connections' logins) write them.
ROUTING_GUARD_VERSION = "bm_gate routing v1"
ROUTING_TABLES = ("country_routing", "write_gate_events")
ROUTING_WRITER_ROLES = ("mysql_gate", "mysql_admin")


def routing_writers(cfg: Config) -> list[str]:
    """MySQL user names allowed to write routing and gate events: the gate's and the admin's logins."""
    from airflow.sdk import BaseHook

    return sorted({BaseHook.get_connection(cfg.connections[r]).login for r in ROUTING_WRITER_ROLES
                   if r in cfg.connections} - {None, ""})


def routing_trigger_sql(table: str, op: str, users: list[str]) -> str:
    """The guard of a routing table: refuse any account but the gate's (SIGNAL, before the write)."""
    allowed = ", ".join("'" + u.replace("\\", "\\\\").replace("'", "''") + "'" for u in users)
    return f"""CREATE OR REPLACE TRIGGER `{trigger_name(table, op)}` BEFORE {op} ON `{table}`
FOR EACH ROW
BEGIN
  /* {ROUTING_GUARD_VERSION}: routing changes only through the write gate (billing_migration.stores.write_gate) */
  IF SUBSTRING_INDEX(USER(), '@', 1) NOT IN ({allowed or "''"}) THEN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT =
      'country routing and gate events change only through the write gate (scripts/bm, the migration DAG)';
  END IF;
END"""


def _stale(have: dict[str, str]) -> list[tuple[str, str]]:
    """(table name, operation) of every guard trigger missing or of an older version."""
    billing = [(t.name, op) for t in TABLES for op in _OPS
               if TRIGGER_VERSION not in have.get(trigger_name(t.name, op), "")]
    return billing + [(t, op) for t in ROUTING_TABLES for op in _OPS
                      if ROUTING_GUARD_VERSION not in have.get(trigger_name(t, op), "")]


def missing_triggers(cfg: Config) -> list[str]:
    """Names of the guard triggers that are missing or outdated (empty: the gate is installed)."""
    with connections.mysql_conn(ROLE, cfg, autocommit=True) as conn, conn.cursor() as cur:
        return [trigger_name(t, op) for t, op in _stale(_trigger_bodies(cur))]


def _sql(table: str, op: str, users: list[str]) -> str:
    return routing_trigger_sql(table, op, users) if table in ROUTING_TABLES else \
        trigger_sql(TABLES_BY_NAME[table], op)


def _install(cur, table: str, op: str, deadline: float, users: list[str]) -> int:
    """Create one trigger without ever waiting for a metadata lock; returns the number of retries.

    With lock_wait_timeout = 0 the DDL fails at once (ER_LOCK_WAIT_TIMEOUT) instead of queueing when any
    transaction holds the table, so writers never wait behind it and never open a table it flushed.
    """
    retries, pause = 0, 0.01
    while True:
        try:
            cur.execute(_sql(table, op, users))
            return retries
        except Exception as exc:
            if _errno(exc) not in (_ER_LOCK_WAIT_TIMEOUT, _ER_LOCK_DEADLOCK):
                raise
            if time.monotonic() >= deadline:
                raise WriteGateError(
                    f"could not install guard trigger {trigger_name(table, op)}: transactions kept "
                    f"`{table}` busy without a pause for the whole prepare timeout; nothing was frozen. "
                    "Retry `scripts/bm prepare` at a quieter time") from exc
        retries += 1
        time.sleep(pause * random.uniform(0.5, 1.5))
        pause = min(pause * 2, 0.5)


def prepare(cfg: Config, timeout_s: int = 120) -> PrepareResult:
    """Install the write gate ahead of any freeze: create the guard triggers that are missing or outdated.

    Idempotent, and one information_schema read when the gate is ready. Safe while the application writes
    (see the module docstring); raises WriteGateError if a table never had a moment without an open
    transaction within `timeout_s`.
    """
    t0 = time.monotonic()
    with connections.mysql_conn(ROLE, cfg, autocommit=True) as conn, conn.cursor() as cur:
        todo = _stale(_trigger_bodies(cur))
        users = routing_writers(cfg) if todo else []
        if todo:
            cur.execute("SET SESSION lock_wait_timeout = 0")
        retries = sum(_install(cur, t, op, t0 + timeout_s, users) for t, op in todo)
    out = PrepareResult(tuple(trigger_name(t, op) for t, op in todo), retries, round(time.monotonic() - t0, 3))
    if todo:
        log.info("write gate prepared: %d guard trigger(s) installed in %.3fs (%d retries)",
                 len(todo), out.seconds, retries)
    return out


def ensure_triggers(cfg: Config, lock_wait_timeout_s: int = 30) -> list[str]:
    """Transitional alias of `prepare()` (triggers only); returns the names (re)created."""
    return list(prepare(cfg, timeout_s=lock_wait_timeout_s).installed)


# ------------------------------------------------------------------------------------------ helpers
def _errno(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        return dt.isoformat(timespec="milliseconds")
    return str(value)


_STATUS_COLS = ("country", "serving_store", "writes_frozen", "frozen_by", "frozen_at", "freeze_run_id",
                "cutover_at", "cutover_run_id", "updated_at")


@dataclass(frozen=True)
class RoutingStatus:
    """The routing of one country as the legacy database holds it (times: ISO-8601 UTC strings).

    A country without a routing row is served by legacy and writable (`has_row=False`).
    """

    country: str
    serving_store: str = "legacy"
    writes_frozen: bool = False
    frozen_by: str | None = None
    frozen_at: str | None = None
    freeze_run_id: str | None = None
    cutover_at: str | None = None
    cutover_run_id: str | None = None
    updated_at: str | None = None
    has_row: bool = False

    @property
    def cut_over(self) -> bool:
        return self.serving_store == "cassandra"

    @property
    def legacy_frozen(self) -> bool:
        """Legacy refuses this country's writes (frozen by a run, or cut over: legacy is the rollback copy)."""
        return self.writes_frozen or self.cut_over

    @property
    def run_id(self) -> str | None:
        """The run that owns the current state: the cut-over run, else the freezing run."""
        return self.cutover_run_id or self.freeze_run_id

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe dict (XCom, reports)."""
        return asdict(self)

    # Transitional: callers written against the former dict (`st["writes_frozen"]`, `st.get(...)`) keep
    # working until they are converted to attributes; new code uses attributes.
    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.__dataclass_fields__ else default


def _status_row(row: tuple) -> RoutingStatus:
    v = dict(zip(_STATUS_COLS, row, strict=True))
    return RoutingStatus(
        country=v["country"], serving_store=v["serving_store"], writes_frozen=bool(v["writes_frozen"]),
        frozen_by=v["frozen_by"], frozen_at=_iso(v["frozen_at"]), freeze_run_id=v["freeze_run_id"],
        cutover_at=_iso(v["cutover_at"]), cutover_run_id=v["cutover_run_id"], updated_at=_iso(v["updated_at"]),
        has_row=True)


def _read_status(cur, country: str, lock: bool = False) -> RoutingStatus:
    cur.execute(f"SELECT {', '.join(_STATUS_COLS)} FROM country_routing WHERE country = %s"
                + (" FOR UPDATE" if lock else ""), (country,))
    row = cur.fetchone()
    return RoutingStatus(country=country) if row is None else _status_row(row)


def _event(cur, country: str, action: str, actor: str, run_id: str | None, detail: str | None) -> None:
    cur.execute("INSERT INTO write_gate_events (country, action, actor, run_id, detail) VALUES (%s,%s,%s,%s,%s)",
                (country, action[:16], actor[:128], run_id, (detail or "")[:1024] or None))


def _log_event(cfg: Config, country: str, action: str, actor: str, run_id: str | None, detail: str) -> None:
    with connections.mysql_conn(ROLE, cfg, autocommit=True) as conn, conn.cursor() as cur:
        _event(cur, country, action, actor, run_id, detail)


def _check_actor(actor: str, run_id: str | None) -> None:
    if not isinstance(actor, str) or not actor.strip():
        raise WriteGateError("actor is required (who is changing the write gate)")
    if run_id is not None and (not isinstance(run_id, str) or len(run_id) > 250):
        raise WriteGateError(f"run_id must be a string of at most 250 characters, got {run_id!r}")


def _old_writers(cur, since_epoch: float) -> list[tuple[int, str, int]]:
    """(thread id, started, rows modified) of open transactions in this database older than the freeze."""
    cur.execute(
        "SELECT t.trx_mysql_thread_id, CAST(t.trx_started AS CHAR), t.trx_rows_modified "
        "FROM information_schema.INNODB_TRX t JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
        "WHERE p.DB = DATABASE() AND t.trx_mysql_thread_id <> CONNECTION_ID() AND t.trx_rows_modified > 0 "
        "AND t.trx_started <= FROM_UNIXTIME(%s)", (int(since_epoch) + 1,))
    return [(int(a), str(b), int(c)) for a, b, c in cur.fetchall()]


# ------------------------------------------------------------------------------------------ actions
def _gate_ready(cfg: Config, prepare_if_needed: bool, timeout_s: int) -> tuple[str, ...]:
    """Before any lock: the guard triggers are current, or installed now by `prepare()` (never later)."""
    if prepare_if_needed:
        return prepare(cfg, timeout_s=max(30, timeout_s)).installed
    stale = missing_triggers(cfg)
    if stale:
        raise WriteGateError(_not_prepared(stale))
    return ()


def _not_prepared(stale: list[str]) -> str:
    return (f"the write gate is not installed ({len(stale)} guard trigger(s) missing or outdated, e.g. {stale[0]}); "
            "run `scripts/bm prepare` (or the DAG's check_routing step) first; nothing was frozen")


def _lock_and_freeze(conn, cur, country: str, actor: str, run_id: str, drain_timeout_s: int
                     ) -> tuple[RoutingStatus, float | None]:
    """One transaction: lock the routing row (waits for the country's in-flight writers), check the gate is
    in place, set the freeze and its event. Returns the status before and the freeze's epoch (None: no-op)."""
    # The exclusive lock on the routing row waits for every open transaction that wrote this country.
    before = _read_status(cur, country, lock=True)
    if before.cut_over:
        conn.rollback()
        return before, None
    stale = [trigger_name(t, op) for t, op in _stale(_trigger_bodies(cur))]
    if stale:  # never DDL with the routing row locked: refuse instead
        conn.rollback()
        raise WriteGateError(_not_prepared(stale))
    if before.writes_frozen and before.freeze_run_id == run_id:
        detail = "already frozen by this run"
    elif before.writes_frozen:
        detail = f"taking over a freeze of run {before.freeze_run_id}"
    else:
        detail = f"drain timeout {drain_timeout_s}s"
    cur.execute(
        "INSERT INTO country_routing (country, writes_frozen, frozen_by, frozen_at, freeze_run_id) "
        "VALUES (%s, 1, %s, NOW(3), %s) ON DUPLICATE KEY UPDATE "
        "frozen_at = IF(writes_frozen = 1, frozen_at, VALUES(frozen_at)), writes_frozen = 1, "
        "frozen_by = VALUES(frozen_by), freeze_run_id = VALUES(freeze_run_id)",
        (country, actor[:128], run_id))
    _event(cur, country, "freeze", actor, run_id, detail)
    cur.execute("SELECT UNIX_TIMESTAMP(NOW(3))")
    frozen_epoch = float(cur.fetchone()[0])
    conn.commit()
    return before, frozen_epoch


def freeze(cfg: Config, country: str, actor: str, run_id: str, drain_timeout_s: int = 30,
           prepare_if_needed: bool = True) -> dict[str, Any]:
    """Refuse the country's billing writes from now on and wait for in-flight writers; idempotent.

    Never runs DDL once the routing row is locked: a gate that is not installed is installed by `prepare()`
    first (or, with `prepare_if_needed=False`, the freeze is refused). Returns the routing status as a dict
    plus `drain_s` (time spent waiting for in-flight transactions), `already_frozen` and `prepared` (triggers
    installed first). Raises WriteGateError (country left writable) if the drain does not finish in time.
    """
    country = normalize_country(country)
    _check_actor(actor, run_id)
    if not isinstance(drain_timeout_s, int) or drain_timeout_s < 1:
        raise WriteGateError(f"drain_timeout_s must be a positive integer, got {drain_timeout_s!r}")
    t0 = time.monotonic()
    prepared = _gate_ready(cfg, prepare_if_needed, drain_timeout_s)
    with connections.mysql_conn(ROLE, cfg) as conn, conn.cursor() as cur:
        cur.execute("SET SESSION innodb_lock_wait_timeout = %s", (max(1, drain_timeout_s),))
        try:
            before, frozen_epoch = _lock_and_freeze(conn, cur, country, actor, run_id, drain_timeout_s)
        except Exception as exc:
            conn.rollback()
            _raise_drain_failure(cfg, exc, country, actor, run_id, drain_timeout_s)
            raise
        if frozen_epoch is None:
            return {**before.as_dict(), "already_frozen": True, "drain_s": 0.0, "prepared": list(prepared),
                    "note": "country is served by cassandra; legacy stays frozen"}
        if not before.has_row and not before.writes_frozen:
            _drain_unlocked_writers(cfg, conn, cur, country, actor, run_id, drain_timeout_s, frozen_epoch)
        status = _read_status(cur, country)
        conn.commit()
    drain = round(time.monotonic() - t0, 3)
    log.info("write gate: %s frozen by %s (run %s) after %.3fs drain", country, actor, run_id, drain)
    return {**status.as_dict(), "already_frozen": before.writes_frozen, "drain_s": drain,
            "prepared": list(prepared)}


def _raise_drain_failure(cfg: Config, exc: Exception, country: str, actor: str, run_id: str,
                         drain_timeout_s: int) -> None:
    if _errno(exc) not in (_ER_LOCK_WAIT_TIMEOUT, _ER_LOCK_DEADLOCK):
        return
    _log_event(cfg, country, "freeze_timeout", actor, run_id,
               f"in-flight writers did not finish within {drain_timeout_s}s")
    why = (f"timed out after {drain_timeout_s}s waiting for" if _errno(exc) == _ER_LOCK_WAIT_TIMEOUT
           else "deadlocked with")
    raise WriteGateError(
        f"freeze of {country} {why} in-flight transactions that wrote its billing rows; "
        "nothing was frozen, writes stay enabled on legacy; retry") from exc


def _drain_unlocked_writers(cfg: Config, conn, cur, country: str, actor: str, run_id: str, timeout_s: int,
                            frozen_epoch: float) -> None:
    """The country had no routing row, so a READ COMMITTED writer took no lock the freeze could wait for:
    wait for every older writing transaction of this database instead (undo the freeze on timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        old = _old_writers(cur, frozen_epoch)
        conn.commit()
        if not old:
            return
        if time.monotonic() >= deadline:
            _unfreeze_after_timeout(cfg, country, actor, run_id, timeout_s, old)
        time.sleep(0.1)


def _unfreeze_after_timeout(cfg: Config, country: str, actor: str, run_id: str, timeout_s: int,
                            old: list[tuple[int, str, int]]) -> None:
    with connections.mysql_conn(ROLE, cfg) as conn, conn.cursor() as cur:
        cur.execute("UPDATE country_routing SET writes_frozen = 0, frozen_by = NULL, frozen_at = NULL, "
                    "freeze_run_id = NULL WHERE country = %s AND serving_store = 'legacy' AND freeze_run_id = %s",
                    (country, run_id))
        threads = ", ".join(f"thread {t} (started {s}, {n} rows modified)" for t, s, n in old[:5])
        _event(cur, country, "freeze_timeout", actor, run_id, f"unfrozen: in-flight writers: {threads}")
        conn.commit()
    raise WriteGateError(
        f"freeze of {country} timed out after {timeout_s}s waiting for in-flight transactions ({threads}); "
        "the freeze was undone, writes stay enabled on legacy")


def unfreeze(cfg: Config, country: str, actor: str, run_id: str | None, reason: str,
             force_rollback: bool = False, expected_run_id: str | None = None) -> dict[str, Any]:
    """Re-enable legacy writes; idempotent. A cut-over country is refused unless `force_rollback=True`, which
    routes it back to legacy (writes made on Cassandra since the cut-over are NOT copied back).

    `expected_run_id`: refuse unless the country is still frozen by that run (an operator's check-then-act
    must not release a freeze a new run took meanwhile).
    """
    country = normalize_country(country)
    _check_actor(actor, run_id)
    if not isinstance(reason, str) or not reason.strip():
        raise WriteGateError("a reason is required to unfreeze")
    with connections.mysql_conn(ROLE, cfg) as conn, conn.cursor() as cur:
        st = _read_status(cur, country, lock=True)
        if st.cut_over and not force_rollback:
            conn.rollback()
            raise WriteGateError(
                f"{country} is already cut over to cassandra (run {st.cutover_run_id}); unfreezing legacy "
                "would split writes between two stores. Pass force_rollback=True to route it back to legacy.")
        if expected_run_id is not None and st.freeze_run_id != expected_run_id:
            conn.rollback()
            raise WriteGateError(f"{country} is no longer frozen by run {expected_run_id} (now: "
                                 f"{st.freeze_run_id or 'not frozen'}); nothing changed, check the status again")
        action = "rollback" if st.cut_over else "unfreeze"
        was_frozen = st.legacy_frozen
        if st.has_row:
            cur.execute("UPDATE country_routing SET serving_store = 'legacy', writes_frozen = 0, frozen_by = NULL, "
                        "frozen_at = NULL, freeze_run_id = NULL, cutover_at = NULL, cutover_run_id = NULL "
                        "WHERE country = %s", (country,))
        detail = reason if was_frozen else f"already writable; {reason}"
        if action == "rollback":
            detail = f"routed back to legacy from cassandra (cut over by {st.cutover_run_id}): {reason}"
        _event(cur, country, action, actor, run_id, detail)
        conn.commit()
        out = _read_status(cur, country)
        conn.commit()
    log.info("write gate: %s %s by %s (run %s): %s", country, action, actor, run_id, reason)
    return {**out.as_dict(), "was_frozen": was_frozen, "action": action}


def cutover(cfg: Config, country: str, actor: str, run_id: str) -> dict[str, Any]:
    """Route the country to Cassandra; requires it frozen. Legacy stays frozen (the rollback copy)."""
    country = normalize_country(country)
    _check_actor(actor, run_id)
    with connections.mysql_conn(ROLE, cfg) as conn, conn.cursor() as cur:
        st = _read_status(cur, country, lock=True)
        if st.cut_over:
            conn.rollback()
            return {**st.as_dict(), "already_cut_over": True}
        if not st.writes_frozen:
            conn.rollback()
            raise WriteGateError(f"cannot cut {country} over: its legacy writes are not frozen "
                                 "(freeze, migrate and compare first)")
        cur.execute("UPDATE country_routing SET serving_store = 'cassandra', writes_frozen = 1, cutover_at = NOW(3), "
                    "cutover_run_id = %s WHERE country = %s", (run_id, country))
        _event(cur, country, "cutover", actor, run_id, f"frozen since {st.frozen_at} by {st.freeze_run_id}")
        conn.commit()
        out = _read_status(cur, country)
        conn.commit()
    log.info("write gate: %s cut over to cassandra by %s (run %s)", country, actor, run_id)
    return {**out.as_dict(), "already_cut_over": False}


def reset_routing(cfg: Config, actor: str, reason: str) -> list[str]:
    """Route every country back to legacy, writable (demo/test reseeding only: it discards cut-overs).

    Returns the countries that were frozen or cut over. Each gets a `reset` event.
    """
    _check_actor(actor, None)
    if not isinstance(reason, str) or not reason.strip():
        raise WriteGateError("a reason is required to reset the routing")
    with connections.mysql_conn(ROLE, cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT country, serving_store, COALESCE(cutover_run_id, freeze_run_id) FROM country_routing "
                    "WHERE writes_frozen = 1 OR serving_store = 'cassandra' ORDER BY country FOR UPDATE")
        changed = cur.fetchall()
        cur.execute("UPDATE country_routing SET serving_store = 'legacy', writes_frozen = 0, frozen_by = NULL, "
                    "frozen_at = NULL, freeze_run_id = NULL, cutover_at = NULL, cutover_run_id = NULL")
        for country, store, run in changed:
            _event(cur, country, "reset", actor, run, f"was {store}: {reason}")
        conn.commit()
    return [c for c, _, _ in changed]


def status(cfg: Config, country: str) -> RoutingStatus:
    """Routing of one country (a country without a row is legacy and writable)."""
    country = normalize_country(country)
    with connections.mysql_conn(ROLE, cfg, autocommit=True) as conn, conn.cursor() as cur:
        return _read_status(cur, country)


def statuses(cfg: Config, countries: list[str]) -> list[RoutingStatus]:
    """Routing of several countries in one query, in the order given."""
    codes = [normalize_country(c) for c in countries]
    if not codes:
        return []
    with connections.mysql_conn(ROLE, cfg, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(_STATUS_COLS)} FROM country_routing WHERE country IN "
                    f"({', '.join(['%s'] * len(codes))})", codes)
        rows = {r[0]: _status_row(r) for r in cur.fetchall()}
    return [rows.get(c) or RoutingStatus(country=c) for c in codes]


def routing(cfg: Config) -> dict[str, str]:
    """country -> serving store for every country with a routing row (others are served by legacy)."""
    with connections.mysql_conn(ROLE, cfg, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT country, serving_store FROM country_routing ORDER BY country")
        return {c: s for c, s in cur.fetchall()}


def events(cfg: Config, country: str, limit: int = 100) -> list[dict[str, Any]]:
    """The latest write-gate events of a country, newest first."""
    country = normalize_country(country)
    with connections.mysql_conn(ROLE, cfg, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT event_id, action, actor, run_id, detail, at FROM write_gate_events WHERE country = %s "
                    "ORDER BY event_id DESC LIMIT %s", (country, int(limit)))
        cols = ("event_id", "action", "actor", "run_id", "detail", "at")
        return [{**dict(zip(cols, r, strict=True)), "at": _iso(r[5])} for r in cur.fetchall()]
