"""Transform rules, one test each, on pure pyarrow input (no services)."""

from __future__ import annotations

import copy
import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest
from billing_migration.country import transform
from billing_migration.stores import schema
from billing_migration.stores.s3io import ZERO_DATE_COL, arrow_schema

UTC = dt.UTC
T0 = dt.datetime(2024, 1, 1, 12, 0, 0, 123000, tzinfo=UTC)


def base_rows() -> dict[str, list[dict]]:
    """One valid customer (id 1) with one of each entity, and a second plain valid customer (id 2)."""
    rows = {
        "plans": [{"plan_id": 7, "country": "US", "currency": "USD", "name": "Std", "price": Decimal("9.99"),
                   "screens": 2, "quality": "HD", "updated_at": T0}],
        "customers": [
            {"customer_id": 1, "country": "US", "email": "a@example.com", "full_name": "Ann", "status": "active",
             "signup_at": T0, "billing_day": 5, "updated_at": T0},
            {"customer_id": 2, "country": "US", "email": None, "full_name": None, "status": "active",
             "signup_at": T0, "billing_day": 6, "updated_at": T0},
        ],
        "subscriptions": [{"subscription_id": 10, "customer_id": 1, "plan_id": 7, "status": "active",
                           "started_at": T0, "cancelled_at": None, "next_billing_date": dt.date(2024, 2, 1),
                           "updated_at": T0}],
        "plan_changes": [{"change_id": 20, "customer_id": 1, "subscription_id": 10, "from_plan_id": 7,
                          "to_plan_id": 7, "changed_at": T0, "updated_at": T0}],
        "invoices": [{"invoice_id": 30, "customer_id": 1, "subscription_id": 10,
                      "period_start": dt.date(2024, 1, 1), "period_end": dt.date(2024, 2, 1),
                      "amount": Decimal("9.99"), "tax": Decimal("0"), "currency": "USD", "status": "paid",
                      "created_at": T0, "updated_at": T0}],
        "payments": [{"payment_id": 40, "customer_id": 1, "invoice_id": 30, "method": "card",
                      "payment_token": None, "amount": Decimal("9.99"), "currency": "USD",
                      "status": "succeeded", "processed_at": T0, "updated_at": T0}],
        "balance_transactions": [{"txn_id": 50, "customer_id": 1, "kind": "invoice_credit",
                                  "amount": Decimal("-1.50"), "currency": "USD", "invoice_id": 30,
                                  "reference": None, "created_at": T0, "updated_at": T0}],
    }
    return rows


def run(rows: dict[str, list[dict]]):
    tables = {}
    for tdef in schema.TABLES:
        sch = arrow_schema(tdef)
        recs = [{ZERO_DATE_COL: None, **r} if ZERO_DATE_COL in sch.names else r for r in rows[tdef.name]]
        tables[tdef.name] = pa.Table.from_pylist(recs, schema=sch)
    plans = tables.pop("plans")
    return transform.validate(tables, plans, "US")


def rejects_of(rows) -> list[dict]:
    _, rejects, _ = run(rows)
    return rejects.to_pylist()


def mutated(table: str, i: int = 0, **changes) -> dict[str, list[dict]]:
    rows = copy.deepcopy(base_rows())
    rows[table][i].update(changes)
    return rows


def test_valid_data_passes_with_no_rejects():
    valid, rejects, counts = run(base_rows())
    assert rejects.num_rows == 0
    assert all(c["in"] == c["out"] for c in counts.values())
    out = transform.to_cassandra_rows(valid, "run1")
    assert out.num_rows == 2 + 5  # two static rows + five entities
    static = out.filter(pa.compute.is_null(out.column("entity_type"))).to_pylist()
    assert [r["customer_id"] for r in static] == [1, 2]
    assert static[0]["customer_status"] == "active" and static[0]["run_id"] == "run1"
    inv = next(r for r in out.to_pylist() if r["entity_type"] == "invoice")
    assert inv["entity_id"] == 30 and inv["amount"] == Decimal("9.99") and isinstance(inv["amount"], Decimal)
    assert inv["created_at"] == T0 and inv["email"] is None  # entity rows leave static columns empty
    assert out.schema.field("created_at").type == pa.timestamp("ms", tz="UTC")


def test_tricky_valid_data_passes_intact():
    emoji = "😀" * 255  # non-BMP, exactly max length in characters (1020 bytes)
    rows = mutated("customers", full_name=emoji, email="e" * 242 + "@example.com")
    rows["payments"][0]["payment_token"] = "t" * 64
    rows["balance_transactions"][0]["reference"] = "🧾" * 64
    valid, rejects, _ = run(rows)
    assert rejects.num_rows == 0
    out = transform.to_cassandra_rows(valid, "r").to_pylist()
    assert out[0]["full_name"] == emoji and len(out[0]["email"]) == 254
    assert next(r for r in out if r["entity_type"] == "balance_txn")["reference"] == "🧾" * 64
    assert out[1]["email"] is None and out[1]["full_name"] is None  # NULLs stay NULL


@pytest.mark.parametrize(("table", "changes", "rule", "fld"), [
    ("customers", {"full_name": "😀" * 256}, "length", "full_name"),
    ("payments", {"payment_token": "x" * 65}, "length", "payment_token"),
    ("customers", {"status": "zombie"}, "enum", "status"),
    ("subscriptions", {"status": "paused"}, "enum", "status"),
    ("invoices", {"status": "unknown"}, "enum", "status"),
    ("payments", {"method": "cash"}, "enum", "method"),
    ("payments", {"status": "lost"}, "enum", "status"),
    ("balance_transactions", {"kind": "bonus"}, "enum", "kind"),
    ("invoices", {"currency": "XXX"}, "currency", "currency"),
    ("payments", {"currency": None}, "missing", "currency"),
    ("balance_transactions", {"currency": None}, "missing", "currency"),
    ("invoices", {"amount": Decimal("-1.00")}, "negative_amount", "amount"),
    ("payments", {"amount": Decimal("-0.01")}, "negative_amount", "amount"),
    ("invoices", {"amount": Decimal("9.999")}, "precision", "amount"),
    ("balance_transactions", {"amount": Decimal("-1.005")}, "precision", "amount"),
    ("invoices", {"period_end": dt.date(2023, 12, 31)}, "period", "period_end"),
    ("invoices", {"created_at": None, ZERO_DATE_COL: "created_at"}, "zero_date", "created_at"),
    ("customers", {"signup_at": None, ZERO_DATE_COL: "signup_at,updated_at", "updated_at": None},
     "zero_date", "signup_at"),
    ("customers", {"status": None}, "missing", "status"),
    ("payments", {"invoice_id": 999}, "fk_missing", "invoice_id"),
    ("invoices", {"subscription_id": 999}, "fk_missing", "subscription_id"),
    ("plan_changes", {"subscription_id": 999}, "fk_missing", "subscription_id"),
    ("balance_transactions", {"invoice_id": 999}, "fk_missing", "invoice_id"),
    ("subscriptions", {"plan_id": 8}, "fk_missing", "plan_id"),
    ("customers", {"billing_day": 45}, "range", "billing_day"),
    ("customers", {"billing_day": 0}, "range", "billing_day"),
])
def test_rule_rejects_with_reason(table, changes, rule, fld):
    rejects = rejects_of(mutated(table, **changes))
    own = [r for r in rejects if r["table"] == table]
    assert own, f"no reject for {table} {changes}"
    assert any(r["rule"] == rule and r["field"] == fld for r in own), own
    assert all(r["reason"] for r in rejects)
    key = schema.TABLES_BY_NAME[table].key
    assert own[0]["key"] == base_rows()[table][0][key]


@pytest.mark.parametrize("day", [1, 28, 31])
def test_billing_day_within_the_month_passes(day):
    assert rejects_of(mutated("customers", billing_day=day)) == []


def test_impossible_billing_day_is_rejected_with_the_value_in_the_reason():
    rej = rejects_of(mutated("customers", billing_day=45))
    own = [r for r in rej if r["table"] == "customers"]
    assert [(r["key"], r["rule"], r["reason"]) for r in own] == [(1, "range", "billing_day 45 outside 1..31")]
    assert {r["table"] for r in rej} == {t.name for t in schema.CUSTOMER_TABLES}  # the whole customer


def test_jpy_has_no_minor_units():
    rows = mutated("invoices", currency="JPY", amount=Decimal("990.5"))
    rows["payments"][0].update(currency="JPY", amount=Decimal("990"))
    rej = rejects_of(rows)
    assert [(r["table"], r["rule"]) for r in rej if r["table"] == "invoices"] == [("invoices", "precision")]
    assert not [r for r in rej if r["table"] == "payments" and r["rule"] != "cascade"]


def test_balance_transactions_are_signed_and_null_invoice_is_allowed():
    rows = mutated("balance_transactions", amount=Decimal("-25.00"), invoice_id=None)
    assert rejects_of(rows) == []


def test_fk_to_another_customers_parent_is_rejected():
    rows = base_rows()
    rows["payments"].append({**rows["payments"][0], "payment_id": 41, "customer_id": 2})
    rej = rejects_of(rows)
    assert [(r["key"], r["rule"]) for r in rej] == [(41, "fk_missing")]


def test_duplicate_natural_key_rejects_the_later_invoice_and_names_the_first():
    rows = base_rows()
    rows["invoices"].append({**rows["invoices"][0], "invoice_id": 31})
    rej = rejects_of(rows)
    dup = [r for r in rej if r["rule"] == "duplicate"]
    assert [r["key"] for r in dup] == [31]
    assert "invoice 30" in dup[0]["reason"]


def test_cascade_rejects_children_of_rejected_parents():
    rows = mutated("subscriptions", status="bogus")
    rej = {(r["table"], r["key"]): r for r in rejects_of(rows)}
    assert rej[("subscriptions", 10)]["rule"] == "enum"
    assert rej[("invoices", 30)]["reason"] == "parent subscriptions 10 rejected"
    assert rej[("plan_changes", 20)]["rule"] == "cascade"
    # grandchildren follow: the payment and the balance transaction of the rejected invoice
    assert rej[("payments", 40)]["reason"] == "parent invoices 30 rejected"
    assert rej[("balance_transactions", 50)]["reason"] == "parent invoices 30 rejected"
    valid, _, counts = run(rows)
    assert counts["customers"]["rejected"] == 0 and valid["customers"].num_rows == 2


def test_rejected_customer_takes_its_whole_partition():
    rows = mutated("customers", email="x" * 255)
    valid, rejects, counts = run(rows)
    assert counts["customers"]["rejected"] == 1
    assert {r["table"] for r in rejects.to_pylist()} == {t.name for t in schema.CUSTOMER_TABLES}
    out = transform.to_cassandra_rows(valid, "r")
    assert set(out.column("customer_id").to_pylist()) == {2}


def test_rejected_plan_cascades_to_subscription():
    rows = mutated("plans", currency="ZZZ")
    rej = {(r["table"], r["key"]): r for r in rejects_of(rows)}
    assert rej[("plans", 7)]["rule"] == "currency"
    assert rej[("subscriptions", 10)]["reason"] == "parent plans 7 rejected"


def test_counts_per_table_and_rule():
    rows = mutated("payments", method="cash", amount=Decimal("-1"))
    _, rejects, counts = run(rows)
    assert counts["payments"] == {"in": 1, "out": 0, "rejected": 1,
                                  "rejects_by_rule": {"enum": 1, "negative_amount": 1}}
    assert rejects.schema.names[:5] == ["table", "key", "customer_id", "reason", "field"]


def test_empty_chunk_gives_empty_output():
    rows = {k: [] for k in base_rows()}
    rows["plans"] = base_rows()["plans"]
    valid, rejects, _ = run(rows)
    assert rejects.num_rows == 0
    assert transform.to_cassandra_rows(valid, "r").num_rows == 0
