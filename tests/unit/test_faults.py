"""The fault matrix's pure parts: each drift changes exactly what it says, the independent sums, the table."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pyarrow as pa
import pytest
from billing_migration.devtools import faults
from billing_migration.nightly import snapshot
from billing_migration.stores import schema

T0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


def _table(name: str, rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, snapshot.arrow_schema(schema.TABLES_BY_NAME[name]))


def _invoice(i: int, cid: int) -> dict:
    return {"invoice_id": i, "customer_id": cid, "subscription_id": i, "period_start": dt.date(2026, 5, 1),
            "period_end": dt.date(2026, 5, 31), "amount": Decimal("9.99"), "tax": Decimal("1.50"),
            "currency": "NZD", "status": "paid", "created_at": T0, "updated_at": T0}


def _customer(cid: int) -> dict:
    return {"customer_id": cid, "country": "NZ", "email": f"c{cid}@x.io", "full_name": f"C {cid}",
            "status": "active", "signup_at": T0, "billing_day": 3, "updated_at": T0}


@pytest.fixture
def snaps() -> faults.Snaps:
    tables = {t.name: snapshot.arrow_schema(t).empty_table() for t in snapshot.SNAPSHOT_TABLES}
    tables["invoices"] = _table("invoices", [_invoice(i, 10 + i % 3) for i in range(1, 7)])
    tables["customers"] = _table("customers", [_customer(c) for c in (10, 11, 12)])
    return {"mysql": tables, "cassandra": dict(tables)}


def _changed(before: pa.Table, after: pa.Table) -> list[tuple[dict, dict | None]]:
    a, b = before.to_pylist(), after.to_pylist()
    return [(x, y) for x, y in zip(a, b, strict=False) if x != y] + [(x, None) for x in a[len(b):]]


@pytest.mark.parametrize("kind", ["money off by one cent", "wrong currency", "timestamp off by 1 ms",
                                  "row moved to another customer"])
def test_a_drift_changes_one_field_of_one_row_and_names_its_customer(snaps, kind):
    drifted, cid = faults.DRIFT_KINDS[kind](random.Random(1), snaps)
    (old, new), = _changed(snaps["cassandra"]["invoices"], drifted["cassandra"]["invoices"])
    assert old["customer_id"] == cid
    diff = {k for k in old if old[k] != new[k]}
    assert len(diff) == 1, diff
    if kind == "money off by one cent":
        assert abs(new["amount"] - old["amount"]) == Decimal("0.01")
    assert snaps["mysql"]["invoices"] is drifted["mysql"]["invoices"]  # the other store is untouched


def test_missing_and_extra_rows(snaps):
    gone, cid = faults.DRIFT_KINDS["missing row"](random.Random(2), snaps)
    assert gone["cassandra"]["invoices"].num_rows == 5 and cid in (10, 11, 12)
    more, cid = faults.DRIFT_KINDS["extra row"](random.Random(2), snaps)
    rows = more["cassandra"]["invoices"].to_pylist()
    assert len(rows) == 7 and rows[-1]["customer_id"] == cid
    assert len({r["invoice_id"] for r in rows}) == 7


def test_routing_flipped_leaves_cassandra_without_the_country(snaps):
    drifted, cid = faults.DRIFT_KINDS["routing flipped without data"](random.Random(3), snaps)
    assert cid is None and drifted["cassandra"]["customers"].num_rows == 0


def test_money_per_currency_counts_and_sums_each_entity_and_currency():
    rows = {("invoice", 1): (10, "paid", Decimal("9.99"), Decimal("1.50"), "NZD", 0),
            ("invoice", 2): (11, "paid", Decimal("5.00"), Decimal("0"), "NZD", 0),
            ("payment", 3): (10, "succeeded", Decimal("11.49"), None, "NZD", 0),
            ("customer", 10): ("NZ", "a@x.io", "active", 0)}
    assert faults.money_per_currency(rows) == {("invoice", "NZD"): (2, Decimal("16.49")),
                                                ("payment", "NZD"): (1, Decimal("11.49"))}


def test_the_matrix_table_has_a_row_per_case_and_the_command():
    out = faults.render([faults.Outcome("kill9_x", 2, "frozen", "resume", "cut_over", 0, 0, 0, 0, True, 12.5,
                                        True)], "scripts/faults --case kill9_x")
    assert "`scripts/faults --case kill9_x`" in out
    assert "| kill9_x | 2 | frozen | resume | cut_over | 0 / 0 / 0 / 0 | match | 12.5 | yes |" in out


def test_a_frozen_status_message_must_name_both_ways_out():
    assert faults.frozen_message_ok("NZ ... not running ... resume: ... give up: scripts/bm unfreeze NZ --reason")
    assert not faults.frozen_message_ok("NZ FROZEN")


def test_a_static_field_drift_changes_one_customer_field():
    for seed_no in range(8):  # every field the drift may pick
        tables = {"customers": _table("customers", [_customer(c) for c in (10, 11, 12)])}
        snaps = {"mysql": tables, "cassandra": dict(tables)}
        drifted, cid = faults.DRIFT_KINDS["changed static (customer) field"](random.Random(seed_no), snaps)
        (old, new), = _changed(snaps["cassandra"]["customers"], drifted["cassandra"]["customers"])
        assert old["customer_id"] == cid and len({k for k in old if old[k] != new[k]}) == 1


def test_drift_is_planted_only_among_rows_unchanged_since_the_cutover(snaps):
    late = _invoice(99, 10) | {"updated_at": T0 + dt.timedelta(days=2)}
    snaps["cassandra"]["invoices"] = pa.concat_tables([snaps["cassandra"]["invoices"], _table("invoices", [late])])
    out = faults.settled(snaps, (T0 + dt.timedelta(days=1)).replace(tzinfo=None))
    assert 99 not in out["cassandra"]["invoices"]["invoice_id"].to_pylist()
    assert out["cassandra"]["invoices"].num_rows == out["mysql"]["invoices"].num_rows == 6


def test_planned_chunks_tile_every_customer_id():
    from billing_migration.country.pipeline import MAX_CUSTOMER_ID, tile
    from billing_migration.records import Chunk

    out = tile([Chunk(0, 5, 9, 3), Chunk(1, 12, 20, 3), Chunk(2, 25, 30, 2)])
    assert [(c.lo, c.hi) for c in out] == [(0, 9), (10, 20), (21, MAX_CUSTOMER_ID)]
    assert [c.customers for c in out] == [3, 3, 2] and tile([]) == []
