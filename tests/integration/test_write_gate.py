"""The write gate against the real MariaDB: enforced freeze, drain of in-flight writers, cut-over, rollback."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from billing_migration.stores import connections, schema, write_gate
from billing_migration.stores.write_gate import RoutingStatus, WriteGateError

FROZEN, OTHER = "LU", "MT"  # countries no generator or other fixture seeds
RUN = "manual__2026-11-23T19:40:00+00:00"
BASE = 7_000_000  # customer ids of this file, away from other tests' data
# Guard triggers of the gate: 3 per billing table, and 3 per routing table (country_routing, write_gate_events).
GATE_TRIGGERS = 3 * len(schema.TABLES) + 3 * len(write_gate.ROUTING_TABLES)


def _seed(cfg) -> None:
    """One customer per country with one row in every child table (ids derived from BASE)."""
    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as cur:
        for i, cc in enumerate((FROZEN, OTHER)):
            cid, pid = BASE + i, 7000 + i
            cur.execute("INSERT IGNORE INTO plans VALUES (%s,%s,'EUR','Std',9.99,2,'HD','2026-01-01 00:00:00')",
                        (pid, cc))
            cur.execute("INSERT IGNORE INTO customers VALUES (%s,%s,'a@x.io','A B','active',"
                        "'2026-01-01 00:00:00.001',1,'2026-01-01 00:00:00')", (cid, cc))
            cur.execute("INSERT IGNORE INTO subscriptions VALUES (%s,%s,%s,'active','2026-01-01 00:00:00',NULL,"
                        "'2026-02-01','2026-01-01 00:00:00')", (cid, cid, pid))
            cur.execute("INSERT IGNORE INTO plan_changes VALUES (%s,%s,%s,%s,%s,'2026-01-02 00:00:00',"
                        "'2026-01-02 00:00:00')", (cid, cid, cid, pid, pid))
            cur.execute("INSERT IGNORE INTO invoices VALUES (%s,%s,%s,'2026-01-01','2026-01-31',9.99,0,'EUR','paid',"
                        "'2026-01-01 00:00:00','2026-01-01 00:00:00')", (cid, cid, cid))
            cur.execute("INSERT IGNORE INTO payments VALUES (%s,%s,%s,'card','tok_1',9.99,'EUR','succeeded',"
                        "'2026-01-01 00:00:00','2026-01-01 00:00:00')", (cid, cid, cid))
            cur.execute("INSERT IGNORE INTO balance_transactions VALUES (%s,%s,'promo_credit',1.5,'EUR',NULL,NULL,"
                        "'2026-01-01 00:00:00','2026-01-01 00:00:00')", (cid, cid))
        conn.commit()


@pytest.fixture
def gate(cfg, legacy_db):
    _seed(cfg)
    write_gate.prepare(cfg)
    yield cfg
    for cc in (FROZEN, OTHER):
        if write_gate.status(cfg, cc).legacy_frozen:
            write_gate.unfreeze(cfg, cc, "pytest", RUN, reason="test teardown", force_rollback=True)


def _app(cfg, sql: str, args: tuple = ()) -> int:
    """One autocommitted statement as the legacy application; returns affected rows."""
    with connections.mysql_conn("mysql_app", cfg, autocommit=True) as conn, conn.cursor() as cur:
        return cur.execute(sql, args)


def _writes(country_idx: int) -> list[tuple[str, str, tuple]]:
    """(label, sql, args) of an insert, update and delete in every billing table for one seeded country."""
    cid, pid = BASE + country_idx, 7000 + country_idx
    cc = (FROZEN, OTHER)[country_idx]
    new = BASE + 100 + country_idx
    return [
        ("plans insert", "INSERT INTO plans VALUES (%s,%s,'EUR','X',1,1,'SD','2026-01-01')", (pid + 100, cc)),
        ("plans update", "UPDATE plans SET price = price + 1 WHERE plan_id = %s", (pid,)),
        ("customers insert", "INSERT INTO customers VALUES (%s,%s,NULL,NULL,'active','2026-01-01',1,'2026-01-01')",
         (new, cc)),
        ("customers update", "UPDATE customers SET email = 'b@x.io' WHERE customer_id = %s", (cid,)),
        ("subscriptions insert", "INSERT INTO subscriptions VALUES (%s,%s,%s,'active','2026-01-01',NULL,NULL,"
         "'2026-01-01')", (new, cid, pid)),
        ("subscriptions update", "UPDATE subscriptions SET status = 'on_hold' WHERE subscription_id = %s", (cid,)),
        ("plan_changes insert", "INSERT INTO plan_changes VALUES (%s,%s,%s,%s,%s,'2026-01-03','2026-01-03')",
         (new, cid, cid, pid, pid)),
        ("plan_changes update", "UPDATE plan_changes SET changed_at = '2026-01-04' WHERE change_id = %s", (cid,)),
        ("invoices insert", "INSERT INTO invoices VALUES (%s,%s,%s,'2026-02-01','2026-02-28',9.99,0,'EUR','pending',"
         "'2026-02-01','2026-02-01')", (new, cid, cid)),
        ("invoices update", "UPDATE invoices SET amount = 10 WHERE invoice_id = %s", (cid,)),
        ("payments insert", "INSERT INTO payments VALUES (%s,%s,%s,'card',NULL,1,'EUR','failed','2026-02-01',"
         "'2026-02-01')", (new, cid, cid)),
        ("payments update", "UPDATE payments SET status = 'refunded' WHERE payment_id = %s", (cid,)),
        ("balance_transactions insert", "INSERT INTO balance_transactions VALUES (%s,%s,'promo_credit',1,'EUR',NULL,"
         "NULL,'2026-02-01','2026-02-01')", (new, cid)),
        ("balance_transactions update", "UPDATE balance_transactions SET amount = 2 WHERE txn_id = %s", (cid,)),
        # deletes, children first so the foreign keys would allow them
        ("balance_transactions delete", "DELETE FROM balance_transactions WHERE txn_id = %s", (cid,)),
        ("payments delete", "DELETE FROM payments WHERE payment_id = %s", (cid,)),
        ("invoices delete", "DELETE FROM invoices WHERE invoice_id IN (%s, %s)", (new, BASE + 9_999)),
        ("plan_changes delete", "DELETE FROM plan_changes WHERE change_id = %s", (cid,)),
        ("subscriptions delete", "DELETE FROM subscriptions WHERE subscription_id = %s", (new,)),
        ("customers delete", "DELETE FROM customers WHERE customer_id = %s", (new,)),
        ("plans delete", "DELETE FROM plans WHERE plan_id = %s", (pid + 100,)),
    ]


def test_freeze_refuses_every_write_of_the_country_and_only_that_country(gate):
    cfg = gate
    out = write_gate.freeze(cfg, FROZEN, "pytest", RUN, drain_timeout_s=5)
    assert out["writes_frozen"] is True and out["freeze_run_id"] == RUN and out["serving_store"] == "legacy"
    # deletes of rows that exist in the frozen country (the "new" rows were never written there)
    frozen_writes = [w for w in _writes(0) if "delete" not in w[0]] + [
        ("balance_transactions delete", "DELETE FROM balance_transactions WHERE txn_id = %s", (BASE,)),
        ("payments delete", "DELETE FROM payments WHERE payment_id = %s", (BASE,)),
        ("invoices delete", "DELETE FROM invoices WHERE invoice_id = %s", (BASE,)),
        ("plan_changes delete", "DELETE FROM plan_changes WHERE change_id = %s", (BASE,)),
        ("subscriptions delete", "DELETE FROM subscriptions WHERE subscription_id = %s", (BASE,)),
        ("customers delete", "DELETE FROM customers WHERE customer_id = %s", (BASE,)),
        ("plans delete", "DELETE FROM plans WHERE plan_id = %s", (7000,)),
    ]
    for label, sql, args in frozen_writes:
        with pytest.raises(Exception, match=f"billing writes for country {FROZEN} are frozen") as err:
            _app(cfg, sql, args)
        assert RUN in str(err.value), label
        assert err.value.args[0] == 1644, label  # ER_SIGNAL_EXCEPTION (SQLSTATE 45000)
    # moving a row into the frozen country is refused too
    with pytest.raises(Exception, match="are frozen"):
        _app(cfg, "UPDATE customers SET country = %s WHERE customer_id = %s", (FROZEN, BASE + 1))
    # moving a child row of the other country onto a frozen customer is refused as well
    with pytest.raises(Exception, match="are frozen"):
        _app(cfg, "UPDATE balance_transactions SET customer_id = %s WHERE txn_id = %s", (BASE, BASE + 1))
    # every write of the other country passes
    for label, sql, args in _writes(1):
        assert _app(cfg, sql, args) >= 0, label
    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT email FROM customers WHERE customer_id = %s", (BASE,))
        assert cur.fetchone()[0] == "a@x.io"  # the frozen country's row is untouched
        cur.execute("SELECT COUNT(*) FROM payments WHERE customer_id = %s", (BASE,))
        assert cur.fetchone()[0] == 1


def test_acknowledged_writes_of_a_concurrent_writer_survive_the_freeze(gate):
    cfg = gate
    acked: list[int] = []
    refused: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        with connections.mysql_conn("mysql_app", cfg, autocommit=True) as conn, conn.cursor() as cur:
            cid = BASE + 1000
            while not stop.is_set() and len(refused) < 5:
                try:
                    cur.execute("INSERT INTO customers VALUES (%s,%s,NULL,NULL,'active','2026-01-01',1,"
                                "'2026-01-01')", (cid, FROZEN))
                    acked.append(cid)
                except Exception as exc:
                    assert "are frozen" in str(exc)
                    refused.append(cid)
                cid += 1

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.5)
    write_gate.freeze(cfg, FROZEN, "pytest", RUN, drain_timeout_s=10)
    t.join(timeout=30)
    stop.set()
    assert acked and len(refused) == 5
    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT customer_id FROM customers WHERE customer_id >= %s", (BASE + 1000,))
        present = {r[0] for r in cur.fetchall()}
    assert set(acked) <= present
    assert not set(refused) & present


def test_freeze_waits_for_an_in_flight_transaction(gate):
    cfg = gate
    done: dict = {}
    with connections.mysql_conn("mysql_app", cfg) as app, app.cursor() as cur:
        cur.execute("INSERT INTO invoices VALUES (%s,%s,%s,'2026-03-01','2026-03-31',5,0,'EUR','pending',"
                    "'2026-03-01','2026-03-01')", (BASE + 500, BASE, BASE))
        t = threading.Thread(target=lambda: done.update(write_gate.freeze(cfg, FROZEN, "pytest", RUN,
                                                                          drain_timeout_s=20)))
        t.start()
        time.sleep(1.5)
        assert not done, "freeze returned while a transaction that wrote the country was still open"
        cur.execute("UPDATE invoices SET amount = 6 WHERE invoice_id = %s", (BASE + 500,))  # still allowed
        app.commit()
        t.join(timeout=20)
    assert done["writes_frozen"] is True and done["drain_s"] >= 1.0
    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT amount FROM invoices WHERE invoice_id = %s", (BASE + 500,))
        assert str(cur.fetchone()[0]) == "6.0000"
    with pytest.raises(Exception, match="are frozen"):
        _app(cfg, "UPDATE invoices SET amount = 7 WHERE invoice_id = %s", (BASE + 500,))


def test_freeze_times_out_clearly_and_leaves_the_country_writable(gate):
    cfg = gate
    with connections.mysql_conn("mysql_app", cfg) as app, app.cursor() as cur:
        cur.execute("UPDATE customers SET full_name = 'In Flight' WHERE customer_id = %s", (BASE,))
        t0 = time.monotonic()
        with pytest.raises(WriteGateError, match=r"timed out after 2s .*writes stay enabled"):
            write_gate.freeze(cfg, FROZEN, "pytest", RUN, drain_timeout_s=2)
        assert 1.5 < time.monotonic() - t0 < 15
        app.commit()  # the in-flight writer is not harmed
    assert write_gate.status(cfg, FROZEN).writes_frozen is False
    assert _app(cfg, "UPDATE customers SET full_name = 'After' WHERE customer_id = %s", (BASE,)) == 1
    assert write_gate.events(cfg, FROZEN, limit=1)[0]["action"] == "freeze_timeout"


def test_idempotent_freeze_and_unfreeze(gate):
    cfg = gate
    first = write_gate.freeze(cfg, FROZEN, "pytest", RUN, drain_timeout_s=5)
    second = write_gate.freeze(cfg, FROZEN, "pytest", RUN, drain_timeout_s=5)
    assert first["already_frozen"] is False and second["already_frozen"] is True
    assert second["frozen_at"] == first["frozen_at"]
    out = write_gate.unfreeze(cfg, FROZEN, "pytest", RUN, reason="test")
    assert out["writes_frozen"] is False and out["was_frozen"] is True
    again = write_gate.unfreeze(cfg, FROZEN, "pytest", RUN, reason="test")
    assert again["was_frozen"] is False
    assert _app(cfg, "UPDATE customers SET email = 'c@x.io' WHERE customer_id = %s", (BASE,)) == 1
    actions = [e["action"] for e in write_gate.events(cfg, FROZEN, limit=4)]
    assert actions == ["unfreeze", "unfreeze", "freeze", "freeze"]
    assert all(e["actor"] == "pytest" and e["run_id"] == RUN for e in write_gate.events(cfg, FROZEN, limit=4))


def test_cutover_keeps_legacy_frozen_and_flips_routing(gate):
    cfg = gate
    with pytest.raises(WriteGateError, match="not frozen"):
        write_gate.cutover(cfg, FROZEN, "pytest", RUN)
    write_gate.freeze(cfg, FROZEN, "pytest", RUN, drain_timeout_s=5)
    out = write_gate.cutover(cfg, FROZEN, "pytest", RUN)
    assert out["serving_store"] == "cassandra" and out["cutover_run_id"] == RUN and out["cutover_at"]
    assert write_gate.cutover(cfg, FROZEN, "pytest", RUN)["already_cut_over"] is True
    assert write_gate.routing(cfg)[FROZEN] == "cassandra"
    assert write_gate.status(cfg, "us").serving_store == "legacy"  # no row: legacy, writable
    with pytest.raises(Exception, match="served by cassandra"):
        _app(cfg, "UPDATE payments SET status = 'failed' WHERE payment_id = %s", (BASE,))
    assert write_gate.freeze(cfg, FROZEN, "pytest", RUN)["serving_store"] == "cassandra"  # no-op
    with pytest.raises(WriteGateError, match="already cut over"):
        write_gate.unfreeze(cfg, FROZEN, "pytest", RUN, reason="oops")
    back = write_gate.unfreeze(cfg, FROZEN, "pytest", RUN, reason="rollback drill", force_rollback=True)
    assert back["action"] == "rollback" and back["serving_store"] == "legacy" and back["writes_frozen"] is False
    assert _app(cfg, "UPDATE payments SET status = 'failed' WHERE payment_id = %s", (BASE,)) == 1


def test_bad_input_is_refused(gate):
    cfg = gate
    with pytest.raises(ValueError, match="ISO"):
        write_gate.freeze(cfg, "XX", "pytest", RUN)
    with pytest.raises(WriteGateError, match="actor"):
        write_gate.freeze(cfg, FROZEN, " ", RUN)
    with pytest.raises(WriteGateError, match="reason"):
        write_gate.unfreeze(cfg, FROZEN, "pytest", RUN, reason="")
    assert write_gate.status(cfg, FROZEN).writes_frozen is False


def test_read_committed_writer_of_a_country_without_routing_row_is_waited_for(gate):
    cfg = gate
    cc, cid = "NO", BASE + 900
    assert write_gate.status(cfg, cc).has_row is False
    done: dict = {}
    try:
        with connections.mysql_conn("mysql_app", cfg) as app, app.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            cur.execute("INSERT INTO customers VALUES (%s,%s,NULL,NULL,'active','2026-01-01',1,'2026-01-01')",
                        (cid, cc))
            t = threading.Thread(target=lambda: done.update(write_gate.freeze(cfg, cc, "pytest", RUN,
                                                                              drain_timeout_s=20)))
            t.start()
            time.sleep(1.5)
            assert not done
            app.commit()
            t.join(timeout=20)
        assert done["writes_frozen"] is True
        with pytest.raises(Exception, match="country NO are frozen"):
            _app(cfg, "DELETE FROM customers WHERE customer_id = %s", (cid,))
    finally:
        write_gate.unfreeze(cfg, cc, "pytest", RUN, reason="test teardown")


def test_steady_state_freeze_does_not_wait_for_other_countries_writers(gate):
    cfg = gate
    write_gate.freeze(cfg, FROZEN, "pytest", RUN, drain_timeout_s=5)  # triggers and routing row exist now
    write_gate.unfreeze(cfg, FROZEN, "pytest", RUN, reason="setup")
    with connections.mysql_conn("mysql_app", cfg) as app, app.cursor() as cur:
        cur.execute("UPDATE customers SET full_name = 'Open' WHERE customer_id = %s", (BASE + 1,))  # OTHER, open
        out = write_gate.freeze(cfg, FROZEN, "pytest", RUN, drain_timeout_s=5)
        assert out["writes_frozen"] is True and out["drain_s"] < 3
        app.commit()


def test_reset_routing_makes_every_country_writable_again(gate, reset_routing):
    cfg = gate
    reset_routing("start clean: other tests of this session may have frozen countries")
    write_gate.freeze(cfg, FROZEN, "pytest", RUN, drain_timeout_s=5)
    write_gate.cutover(cfg, FROZEN, "pytest", RUN)
    write_gate.freeze(cfg, OTHER, "pytest", RUN, drain_timeout_s=5)
    assert write_gate.reset_routing(cfg, "pytest", "reseed") == sorted([FROZEN, OTHER])
    assert set(write_gate.routing(cfg).values()) == {"legacy"}
    assert _app(cfg, "UPDATE plans SET price = price + 1 WHERE plan_id = %s", (7000,)) == 1
    assert write_gate.events(cfg, FROZEN, limit=1)[0]["action"] == "reset"


# ------------------------------------------------------------------------------------------ prepare (issue 9, #10)
@pytest.fixture
def fresh_db(cfg, legacy_db):
    """A second legacy database of this session with the schema but no guard triggers, seeded."""
    fresh = dataclasses.replace(cfg, mysql_database=f"{cfg.mysql_database}_fresh")
    with connections.mysql_conn("mysql_admin", fresh, database="", autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{fresh.mysql_database}`")
        cur.execute(f"CREATE DATABASE `{fresh.mysql_database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    with connections.mysql_conn("mysql_admin", fresh) as conn:
        schema.apply_legacy_schema(conn)
    _seed(fresh)
    yield fresh
    with connections.mysql_conn("mysql_admin", fresh, database="", autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{fresh.mysql_database}`")


class _OtherCountryWriter(threading.Thread):
    """The legacy application writing OTHER's billing rows in multi-statement transactions at a steady rate."""

    def __init__(self, cfg) -> None:
        super().__init__(daemon=True)
        self.cfg, self.stop, self.committed, self.errors = cfg, threading.Event(), 0, []

    def run(self) -> None:
        cid = BASE + 1  # OTHER's seeded customer
        with connections.mysql_conn("mysql_app", self.cfg) as conn, conn.cursor() as cur:
            n = 0
            while not self.stop.is_set():
                n += 1
                try:
                    cur.execute("UPDATE customers SET full_name = %s WHERE customer_id = %s", (f"n{n}", cid))
                    cur.execute("INSERT INTO invoices VALUES (%s,%s,%s,'2026-03-01','2026-03-31',5,0,'EUR',"
                                "'pending','2026-03-01','2026-03-01')", (BASE + 20_000 + n, cid, cid))
                    cur.execute("UPDATE subscriptions SET status = 'active' WHERE subscription_id = %s", (cid,))
                    cur.execute("INSERT INTO balance_transactions VALUES (%s,%s,'promo_credit',1,'EUR',NULL,NULL,"
                                "'2026-02-01','2026-02-01')", (BASE + 20_000 + n, cid))
                    conn.commit()
                    self.committed += 1
                except Exception as exc:  # any failure of another country's write is the defect
                    conn.rollback()
                    self.errors.append(repr(exc))
                time.sleep(0.005)


def _guard_triggers(cfg) -> int:
    with connections.mysql_conn("mysql_gate", cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE() "
                    "AND TRIGGER_NAME LIKE 'bm\\_gate\\_%%'")
        return int(cur.fetchone()[0])


@pytest.mark.parametrize("explicit_prepare", [True, False], ids=["prepare-then-freeze", "first-freeze-prepares"])
def test_other_countries_writes_never_fail_on_a_fresh_database(fresh_db, explicit_prepare):
    """Install the gate (explicitly, or by the very first freeze) while another country's transactions write."""
    cfg = fresh_db
    assert _guard_triggers(cfg) == 0  # a fresh database: no gate yet
    writer = _OtherCountryWriter(cfg)
    writer.start()
    try:
        time.sleep(0.5)
        if explicit_prepare:
            assert len(write_gate.prepare(cfg).installed) == GATE_TRIGGERS
            time.sleep(0.3)
        out = write_gate.freeze(cfg, FROZEN, "pytest", RUN, drain_timeout_s=10)
        assert out["writes_frozen"] is True and _guard_triggers(cfg) == GATE_TRIGGERS
        with pytest.raises(Exception, match="are frozen"):
            _app(cfg, "UPDATE customers SET email = 'x@x.io' WHERE customer_id = %s", (BASE,))
        time.sleep(0.3)
        write_gate.unfreeze(cfg, FROZEN, "pytest", RUN, reason="test")
        time.sleep(0.3)
    finally:
        writer.stop.set()
        writer.join(timeout=30)
    assert writer.errors == []
    assert writer.committed >= 20
    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM invoices WHERE invoice_id > %s", (BASE + 20_000,))
        assert cur.fetchone()[0] == writer.committed  # every acknowledged write is there


def test_freeze_without_the_gate_refuses_instead_of_running_ddl(fresh_db):
    cfg = fresh_db
    with pytest.raises(WriteGateError, match=r"not installed .*scripts/bm prepare.*nothing was frozen"):
        write_gate.freeze(cfg, FROZEN, "pytest", RUN, drain_timeout_s=5, prepare_if_needed=False)
    assert write_gate.status(cfg, FROZEN).writes_frozen is False
    assert len(write_gate.missing_triggers(cfg)) == GATE_TRIGGERS  # nothing installed behind the caller's back
    out = write_gate.freeze(cfg, FROZEN, "pytest", RUN, drain_timeout_s=5)  # default: prepare first, then lock
    assert out["writes_frozen"] and len(out["prepared"]) == GATE_TRIGGERS
    assert write_gate.prepare(cfg).installed == ()  # idempotent
    again = write_gate.freeze(cfg, FROZEN, "pytest", RUN, drain_timeout_s=5, prepare_if_needed=False)
    assert again["already_frozen"] and again["prepared"] == []
    write_gate.unfreeze(cfg, FROZEN, "pytest", RUN, reason="test")


def test_prepare_waits_for_a_quiet_moment_instead_of_queueing_writers(fresh_db):
    cfg = fresh_db
    with connections.mysql_conn("mysql_app", cfg) as app, app.cursor() as cur:
        cur.execute("UPDATE customers SET full_name = 'Open' WHERE customer_id = %s", (BASE + 1,))
        t0 = time.monotonic()
        with pytest.raises(WriteGateError, match="could not install guard trigger bm_gate_customers_"):
            write_gate.prepare(cfg, timeout_s=2)
        assert time.monotonic() - t0 < 10
        # the open transaction was never blocked nor killed by the attempts: it goes on and commits
        cur.execute("UPDATE customers SET email = 'still@x.io' WHERE customer_id = %s", (BASE + 1,))
        app.commit()
    assert write_gate.prepare(cfg, timeout_s=10).retries >= 0 and write_gate.missing_triggers(cfg) == []


def test_status_is_a_typed_record_with_a_transitional_dict_shim(gate):
    cfg = gate
    write_gate.freeze(cfg, FROZEN, "pytest", RUN, drain_timeout_s=5)
    st = write_gate.status(cfg, FROZEN)
    assert isinstance(st, RoutingStatus) and st.writes_frozen and st.freeze_run_id == RUN and st.has_row
    assert st.legacy_frozen and not st.cut_over and st.run_id == RUN
    assert st["writes_frozen"] is True and st.get("serving_store") == "legacy" and st.get("nope", 1) == 1
    with pytest.raises(KeyError):
        st["nope"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.writes_frozen = False  # type: ignore[misc]
    assert st.as_dict()["freeze_run_id"] == RUN
    # ZW: a country no test ever routes, so it has no routing row whatever ran before in this session
    assert [s.country for s in write_gate.statuses(cfg, [FROZEN, "ZW"])] == [FROZEN, "ZW"]
    assert write_gate.statuses(cfg, ["ZW"])[0] == RoutingStatus(country="ZW")
