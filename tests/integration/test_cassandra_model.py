"""The Cassandra model on the real server: one customer = one partition, written with plain CQL in one
single-partition batch and read back in one query with its types intact (Decimal scale, ms UTC timestamps,
dates, tinyint, emoji, 255-char strings); batches are all-or-nothing; the DDL is idempotent."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from billing_migration.stores import connections, schema

CID = 424_242
NAME_255 = ("Maximiliana Wolfeschlegelsteinhausenbergerdorff-Ñúñez 😀 " * 6)[:255]
SIGNUP = datetime(2024, 1, 31, 23, 59, 59, 123_000, tzinfo=UTC)

ROWS = {  # entity_type -> (entity_id, {column: value})
    "subscription": (7, {"plan_id": 2, "status": "on_hold", "started_at": SIGNUP, "cancelled_at": None,
                         "next_billing_date": date(2026, 11, 30)}),
    "plan_change": (3, {"subscription_id": 7, "from_plan_id": 1, "to_plan_id": 2,
                        "changed_at": datetime(2025, 2, 28, 12, 0, 0, 1_000, tzinfo=UTC)}),
    "invoice": (1001, {"subscription_id": 7, "period_start": date(2026, 2, 28), "period_end": date(2026, 3, 30),
                       "amount": Decimal("17.9900"), "tax": Decimal("0.0000"), "currency": "USD",
                       "status": "declined", "created_at": datetime(2026, 2, 28, 4, 5, 6, 789_000, tzinfo=UTC)}),
    "payment": (5001, {"invoice_id": 1001, "method": "card", "payment_token": "tok_****4242",
                       "amount": Decimal("990"), "currency": "JPY", "status": "failed",
                       "processed_at": datetime(2026, 2, 28, 4, 6, 0, 1_000, tzinfo=UTC)}),
    "balance_txn": (9001, {"kind": "invoice_credit", "amount": Decimal("-12.3456"), "currency": "EUR",
                           "invoice_id": 1001, "reference": None,
                           "created_at": datetime(2026, 3, 1, 0, 0, 0, 0, tzinfo=UTC)}),
}
STATIC = {"country": "US", "email": "max@example.com", "full_name": NAME_255, "customer_status": "on_hold",
          "signup_at": SIGNUP, "billing_day": 31, "customer_updated_at": SIGNUP, "customer_run_id": "run-1"}
UPDATED = datetime(2026, 10, 31, 23, 59, 59, 999_000, tzinfo=UTC)


@pytest.fixture()
def session(cfg, cassandra_ks):
    with connections.cassandra_session(cfg) as s:
        yield s


def _partition_batch(session, cid: int, rows: dict, static: dict, ts: int | None = None):
    """One logged single-partition batch of prepared statements (static part + one row per entity).

    Prepared, not simple statements: the driver encodes a Decimal in a simple statement through float,
    which drops its scale (see test_simple_statements_lose_decimal_scale).
    """
    from cassandra.query import BatchStatement, BatchType

    using = f" USING TIMESTAMP {ts}" if ts else ""
    batch = BatchStatement(batch_type=BatchType.LOGGED)
    if ts:
        batch.add(session.prepare(f"DELETE FROM customer_billing USING TIMESTAMP {ts - 1} WHERE customer_id = ?"),
                  (cid,))
    cols = ", ".join(static)
    batch.add(session.prepare(f"INSERT INTO customer_billing (customer_id, {cols}) "
                              f"VALUES (?, {', '.join(['?'] * len(static))}){using}"), (cid, *static.values()))
    for etype, (eid, values) in rows.items():
        names = ["customer_id", "entity_type", "entity_id", *values, "updated_at", "run_id"]
        args = (cid, etype, eid, *values.values(), UPDATED, "run-1")
        batch.add(session.prepare(f"INSERT INTO customer_billing ({', '.join(names)}) "
                                  f"VALUES ({', '.join(['?'] * len(names))}){using}"), args)
    return batch


def _naive_utc(v: datetime) -> datetime:
    return v.astimezone(UTC).replace(tzinfo=None)


def test_partition_round_trips_in_one_query_with_types(session):
    session.execute(_partition_batch(session, CID, ROWS, STATIC))
    got = list(session.execute("SELECT * FROM customer_billing WHERE customer_id = %s", (CID,)))
    assert [(r.entity_type, r.entity_id) for r in got] == sorted((t, e) for t, (e, _) in ROWS.items())
    for r in got:  # static customer columns come with every row of the partition
        assert r.full_name == NAME_255 and len(r.full_name) == 255 and "😀" in r.full_name
        assert r.billing_day == 31 and isinstance(r.billing_day, int)
        assert r.signup_at == _naive_utc(SIGNUP)  # driver returns naive UTC, ms kept
        assert r.customer_status == "on_hold" and r.customer_run_id == "run-1"
        assert r.updated_at == _naive_utc(UPDATED) and r.run_id == "run-1"
    by = {r.entity_type: r for r in got}
    inv, pay, bal = by["invoice"], by["payment"], by["balance_txn"]
    assert isinstance(inv.amount, Decimal) and str(inv.amount) == "17.9900" and inv.amount.as_tuple().exponent == -4
    assert str(inv.tax) == "0.0000"
    assert str(pay.amount) == "990" and pay.amount.as_tuple().exponent == 0  # JPY: 0 minor units
    assert str(bal.amount) == "-12.3456" and bal.reference is None
    assert inv.period_start.date() == date(2026, 2, 28) and inv.period_end.date() == date(2026, 3, 30)
    assert by["subscription"].next_billing_date.date() == date(2026, 11, 30)
    assert by["subscription"].cancelled_at is None
    assert inv.created_at == datetime(2026, 2, 28, 4, 5, 6, 789_000)
    assert by["plan_change"].changed_at.microsecond == 1_000  # exactly 1 ms survives
    assert pay.payment_token == "tok_****4242" and pay.invoice_id == 1001


def test_simple_statements_lose_decimal_scale(session):
    """Pitfall guard for the loader: a Decimal bound into a simple (non-prepared) statement goes via float."""
    session.execute("INSERT INTO customer_billing (customer_id, entity_type, entity_id, amount) "
                    "VALUES (%s, 'invoice', 1, %s)", (CID + 3, Decimal("17.9900")))
    simple = session.execute("SELECT amount FROM customer_billing WHERE customer_id = %s", (CID + 3,)).one()
    assert str(simple.amount) != "17.9900"  # scale lost: never write money with simple statements
    ins = session.prepare("INSERT INTO customer_billing (customer_id, entity_type, entity_id, amount) "
                          "VALUES (?, 'invoice', 1, ?)")
    session.execute(ins, (CID + 3, Decimal("17.9900")))
    prepared = session.execute("SELECT amount FROM customer_billing WHERE customer_id = %s", (CID + 3,)).one()
    assert str(prepared.amount) == "17.9900"


def test_timestamps_are_millisecond_precision(session):
    session.execute("INSERT INTO customer_billing (customer_id, entity_type, entity_id, created_at) "
                    "VALUES (%s, 'invoice', 1, %s)", (CID + 1, datetime(2026, 1, 1, 0, 0, 0, 123_999, tzinfo=UTC)))
    row = session.execute("SELECT created_at FROM customer_billing WHERE customer_id = %s", (CID + 1,)).one()
    assert row.created_at == datetime(2026, 1, 1, 0, 0, 0, 123_000)  # sub-ms dropped, never rounded up


def test_single_partition_batch_is_all_or_nothing(session):
    from cassandra import InvalidRequest
    from cassandra.query import BatchStatement

    cid = CID + 2
    session.execute(_partition_batch(session, cid, ROWS, STATIC))
    before = list(session.execute("SELECT * FROM customer_billing WHERE customer_id = %s", (cid,)))
    # 1) a conditional batch whose condition fails applies none of its statements
    lwt = BatchStatement()
    lwt.add("UPDATE customer_billing SET status = 'paid' WHERE customer_id = %s AND entity_type = 'invoice' "
            "AND entity_id = 1001 IF status = 'pending'", (cid,))
    lwt.add("UPDATE customer_billing SET customer_status = 'active' WHERE customer_id = %s", (cid,))
    lwt.add("INSERT INTO customer_billing (customer_id, entity_type, entity_id, status) "
            "VALUES (%s, 'payment', 5002, 'succeeded')", (cid,))
    assert session.execute(lwt).was_applied is False
    # 2) a batch with one invalid statement is rejected whole
    bad = BatchStatement()
    bad.add("INSERT INTO customer_billing (customer_id, entity_type, entity_id, status) "
            "VALUES (%s, 'payment', 5003, 'succeeded')", (cid,))
    bad.add("INSERT INTO customer_billing (customer_id, entity_type, entity_id, status) "
            "VALUES (%s, 'payment', 5004, 'x') USING TTL -1", (cid,))
    with pytest.raises(InvalidRequest):
        session.execute(bad)
    assert list(session.execute("SELECT * FROM customer_billing WHERE customer_id = %s", (cid,))) == before
    # 3) replace semantics: DELETE partition at t-1 + INSERT at t in one batch leaves exactly the new rows
    ts = int(datetime.now(UTC).timestamp() * 1_000_000)
    fewer = {k: ROWS[k] for k in ("subscription", "invoice")}
    session.execute(_partition_batch(session, cid, fewer, {**STATIC, "customer_status": "active"}, ts=ts))
    after = list(session.execute("SELECT * FROM customer_billing WHERE customer_id = %s", (cid,)))
    assert [(r.entity_type, r.entity_id) for r in after] == [("invoice", 1001), ("subscription", 7)]
    assert {r.customer_status for r in after} == {"active"}


def test_apply_cassandra_schema_is_idempotent(cfg, cassandra_ks):
    with connections.cassandra_session(cfg, keyspace=False) as s:
        assert schema.apply_cassandra_schema(s, cassandra_ks) == schema.CASSANDRA_SCHEMA_VERSION
        assert schema.apply_cassandra_schema(s, cassandra_ks) == schema.CASSANDRA_SCHEMA_VERSION
        tables = {r.table_name for r in s.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (cassandra_ks,))}
        assert {"customer_billing", "plans", "customers_by_country", "migration_ledger",
                "schema_migrations"} <= tables
        cols = {r.column_name: (r.type, r.kind) for r in s.execute(
            "SELECT column_name, type, kind FROM system_schema.columns WHERE keyspace_name = %s "
            "AND table_name = 'customer_billing'", (cassandra_ks,))}
        assert cols["customer_id"] == ("bigint", "partition_key")
        assert cols["entity_type"][1] == cols["entity_id"][1] == "clustering"
        assert cols["full_name"] == ("text", "static") and cols["billing_day"] == ("tinyint", "static")
        assert cols["amount"] == ("decimal", "regular") and cols["created_at"] == ("timestamp", "regular")
        versions = list(s.execute(f"SELECT version FROM {cassandra_ks}.schema_migrations"))
        assert [v.version for v in versions] == [schema.CASSANDRA_SCHEMA_VERSION]


def test_a_released_request_is_freed_without_the_cyclic_collector(session):
    """The driver's ResponseFuture and its timeout Timer reference each other; `release` drops that link, so a
    finished request (and its result page) is freed by reference counting while the collector is paused."""
    import gc
    import weakref

    held = {}
    with connections.cyclic_gc_paused():
        for released in (False, True):
            fut = session.execute_async("SELECT release_version FROM system.local", timeout=30)
            assert fut.result().one() is not None
            if released:
                connections.release(fut)
            held[released] = weakref.ref(fut)
            del fut
        assert held[False]() is not None  # kept alive by the cycle until a collection
        assert held[True]() is None
    gc.collect()
    assert held[False]() is None


def test_execute_all_returns_every_page_of_each_statement_in_order(session, cassandra_ks):
    """The compare's reader: all pages of every statement, results in statement order, a few in flight."""
    from cassandra.query import SimpleStatement

    session.execute(f"CREATE TABLE IF NOT EXISTS {cassandra_ks}.paging_probe (k int, c int, PRIMARY KEY (k, c))")
    session.execute(f"TRUNCATE {cassandra_ks}.paging_probe")
    ins = session.prepare(f"INSERT INTO {cassandra_ks}.paging_probe (k, c) VALUES (?, ?)")
    for k in range(3):
        for c in range(25):
            session.execute(ins, (k, c))
    stmt = SimpleStatement(f"SELECT k, c FROM {cassandra_ks}.paging_probe WHERE k = %s", fetch_size=10)
    out = connections.execute_all(session, [(stmt, (k,)) for k in (2, 0, 99, 1)], concurrency=2)
    assert [[tuple(r) for r in rows] for rows in out] == [
        [(2, c) for c in range(25)], [(0, c) for c in range(25)], [], [(1, c) for c in range(25)]]
