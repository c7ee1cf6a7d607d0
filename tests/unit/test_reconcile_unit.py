"""Reconciliation logic on in-memory Arrow tables: field comparison, source-of-truth rules, exact money."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest
from billing_migration.nightly import reconcile, snapshot
from billing_migration.nightly.snapshot import Routing
from billing_migration.stores import schema

UTC = dt.UTC
CUT = dt.datetime(2026, 11, 1)


def invoices(rows: list[dict]) -> pa.Table:
    base = {"customer_id": 1, "subscription_id": 11, "period_start": dt.date(2026, 10, 1),
            "period_end": dt.date(2026, 10, 31), "amount": Decimal("9.9900"), "tax": Decimal("0.9990"),
            "currency": "USD", "status": "paid", "created_at": dt.datetime(2026, 10, 1, 3, tzinfo=UTC),
            "updated_at": dt.datetime(2026, 10, 1, 4, tzinfo=UTC)}
    return pa.Table.from_pylist([base | r for r in rows], schema=snapshot.arrow_schema(schema.INVOICES))


def empty(name: str) -> pa.Table:
    return snapshot.arrow_schema(schema.TABLES_BY_NAME[name]).empty_table()


def test_arrow_schema_refuses_precision_loss():
    t = schema.INVOICES
    sch = snapshot.arrow_schema(t)
    assert sch.field("amount").type == pa.decimal128(38, 4)
    assert sch.field("created_at").type == pa.timestamp("ms", tz="UTC")
    with pytest.raises(pa.ArrowInvalid):
        pa.array([Decimal("1.23456")], sch.field("amount").type)


def test_compare_table_finds_missing_extra_different_and_duplicates():
    m = invoices([{"invoice_id": 1}, {"invoice_id": 2}, {"invoice_id": 3, "customer_id": 3}])
    c = invoices([{"invoice_id": 1}, {"invoice_id": 3, "customer_id": 3, "amount": Decimal("9.99"),
                                      "status": "refunded"},
                  {"invoice_id": 4, "customer_id": 4}, {"invoice_id": 4, "customer_id": 5}])
    d = reconcile.compare_table("invoices", m, c).to_pylist()
    got = {(x["key"], x["customer_id"], x["kind"], x["field"]) for x in d}
    # 9.99 == 9.9900: same decimal value, not a difference; status is
    # key 4 twice, under two customers (two Cassandra partitions): a duplicate, and both copies are extra
    assert got == {(2, 1, "missing", None), (4, 4, "extra", None), (4, 5, "extra", None),
                   (4, 4, "duplicate", None), (3, 3, "different", "status")}


def test_compare_table_in_key_buckets_finds_what_one_pass_finds():
    """The join runs per bucket of keys to bound its memory; a key lands in one bucket on both sides, so
    duplicates (even under two customers), missing, extra and different rows are all still found."""
    m = invoices([{"invoice_id": i, "customer_id": i % 7} for i in range(1, 60) if i != 5]
                 + [{"invoice_id": 9, "customer_id": 3}])
    c = invoices([{"invoice_id": i, "customer_id": i % 7, "status": "void" if i % 10 == 0 else "paid"}
                  for i in range(2, 64)] + [{"invoice_id": 33, "customer_id": 8}])
    whole = reconcile.compare_table("invoices", m, c).to_pylist()
    bucketed = reconcile.compare_table("invoices", m, c, bucket_rows=7).to_pylist()  # 9 buckets
    assert bucketed == whole
    kinds = {(x["kind"], x["key"]) for x in whole}
    assert {("missing", 1), ("extra", 5), ("extra", 60), ("duplicate", 9), ("duplicate", 33),
            ("different", 10)} <= kinds


def test_compare_table_sees_a_millisecond_and_a_null():
    m = invoices([{"invoice_id": 1}, {"invoice_id": 2}])
    c = invoices([{"invoice_id": 1, "created_at": dt.datetime(2026, 10, 1, 3, 0, 0, 1000, tzinfo=UTC)},
                  {"invoice_id": 2, "currency": None}])
    d = {(x["key"], x["field"]): x for x in reconcile.compare_table("invoices", m, c).to_pylist()}
    assert set(d) == {(1, "created_at"), (2, "currency")}
    assert d[(2, "currency")]["mysql_value"] == "USD" and d[(2, "currency")]["cassandra_value"] is None


def test_compare_table_lists_each_differing_column_of_a_pair_with_both_updated_at():
    later = dt.datetime(2026, 10, 2, tzinfo=UTC)
    m = invoices([{"invoice_id": 1}, {"invoice_id": 2}])
    c = invoices([{"invoice_id": 1, "tax": Decimal("1"), "status": "void", "updated_at": later},
                  {"invoice_id": 2}])
    d = reconcile.compare_table("invoices", m, c).to_pylist()
    assert [(x["key"], x["kind"], x["field"], x["mysql_value"], x["cassandra_value"]) for x in d[:2]] == [
        (1, "different", "status", "paid", "void"), (1, "different", "tax", "0.9990", "1.0000")]
    assert d[2]["field"] == "updated_at" and len(d) == 3
    assert d[2]["mysql_value"].startswith("2026-10-01 04:00:00") and d[2]["cassandra_value"].startswith("2026-10-02")
    assert all(x["m_updated_at"] < x["c_updated_at"] == later for x in d)


def test_compare_table_of_a_table_without_customer_id():
    plan = {"country": "SE", "currency": "SEK", "name": "basic", "price": Decimal("99"), "screens": 1,
            "quality": "HD", "updated_at": dt.datetime(2026, 1, 1, tzinfo=UTC)}
    sch = snapshot.arrow_schema(schema.PLANS)
    m = pa.Table.from_pylist([plan | {"plan_id": 1}, plan | {"plan_id": 2}], schema=sch)
    c = pa.Table.from_pylist([plan | {"plan_id": 2, "screens": 4}, plan | {"plan_id": 3}], schema=sch)
    got = [(x["key"], x["customer_id"], x["kind"], x["field"])
           for x in reconcile.compare_table("plans", m, c).to_pylist()]
    assert got == [(1, None, "missing", None), (2, None, "different", "screens"), (3, None, "extra", None)]


def _diff(kind: str, mu: dt.datetime | None, cu: dt.datetime | None, field: str | None = None) -> dict:
    return {"table": "customers", "key": 7, "customer_id": 7, "kind": kind, "field": field,
            "mysql_value": "a.person@example.com" if field == "email" else "x",
            "cassandra_value": "b.person@example.com" if field == "email" else "y",
            "m_updated_at": mu.replace(tzinfo=UTC) if mu else None,
            "c_updated_at": cu.replace(tzinfo=UTC) if cu else None}


def test_classify_before_cutover_mysql_is_the_truth_and_pii_is_masked():
    frozen = Routing("US", "legacy", True, None)
    [d] = reconcile.classify([_diff("different", dt.datetime(2026, 12, 1), None, "email")], frozen)
    assert d["kind"] == "different" and "resync_customer_ids=[7]" in d["fix"]
    assert d["mysql_value"] == "a***@example.com" and "person" not in d["cassandra_value"]


def test_classify_after_cutover():
    cut = Routing("GB", "cassandra", True, CUT)
    before, after = dt.datetime(2026, 10, 1), dt.datetime(2026, 11, 2)
    out = reconcile.classify([
        _diff("extra", None, after),              # new row in the live store
        _diff("different", before, after),        # the live store changed a migrated row
        _diff("different", after, before),        # somebody wrote to the frozen legacy
        _diff("missing", after, None),            # a row created in the legacy after cut-over
        _diff("different", before, before),       # drift in the serving store
    ], cut)
    assert [d["kind"] for d in out] == ["post_cutover_change", "post_cutover_change",
                                        "legacy_changed_after_cutover", "legacy_changed_after_cutover",
                                        "different"]
    assert "never copied" in out[2]["fix"] and "resync_force_from_legacy" in out[4]["fix"]
    assert [k for k in (d["kind"] for d in out) if k in reconcile.FAILING_KINDS] == [
        "legacy_changed_after_cutover", "legacy_changed_after_cutover", "different"]


def _tables(inv: pa.Table) -> dict[str, pa.Table]:
    return {"invoices": inv, "payments": empty("payments"), "balance_transactions": empty("balance_transactions")}


def test_financial_totals_exact_per_currency_day_and_metric():
    m = invoices([{"invoice_id": i, "amount": Decimal("0.1000")} for i in range(1, 11)]
                 + [{"invoice_id": 99, "currency": "EUR", "amount": Decimal("5.0000")}])
    c = invoices([{"invoice_id": i, "amount": Decimal("0.1000")} for i in range(1, 11)]
                 + [{"invoice_id": 99, "currency": "EUR", "amount": Decimal("5.0001")}])
    tm = reconcile.financial_totals(_tables(m))
    usd = [r for r in tm.to_pylist() if r["currency"] == "USD" and r["metric"] == "invoiced"]
    assert usd[0]["total"] == Decimal("1.0000")  # ten times 0.1: exact, never 0.9999999
    diffs = reconcile.compare_totals(tm, reconcile.financial_totals(_tables(c)))
    assert diffs == [{"currency": "EUR", "day": "2026-10-01", "metric": "invoiced", "mysql": Decimal("5.0000"),
                      "cassandra": Decimal("5.0001"), "diff": Decimal("0.0001")}]


def test_financial_totals_leave_out_excluded_keys():
    m = invoices([{"invoice_id": 1}])
    c = invoices([{"invoice_id": 1}, {"invoice_id": 2, "amount": Decimal("100")}])
    assert reconcile.compare_totals(reconcile.financial_totals(_tables(m), {"invoices": [2]}),
                                    reconcile.financial_totals(_tables(c), {"invoices": [2]})) == []


def test_assert_reconciled_names_the_report():
    ok = {"country": "US", "ok": True, "problems": [], "report_uri": "s3://b/us/report.json"}
    bad = {"country": "GB", "ok": False, "problems": ["row count invoices: mysql 2 != cassandra 1"],
           "report_uri": "s3://b/ns=x/nightly/reconcile/date=2026-11-02/country=GB/report.json"}
    assert reconcile.assert_reconciled([ok])["ok"]
    with pytest.raises(reconcile.ReconciliationFailed, match=r"GB: row count .* -> report s3://b/ns=x/.*GB/report"):
        reconcile.assert_reconciled([ok, bad])


def test_resync_ids_are_validated_before_anything_is_touched():
    with pytest.raises(ValueError, match="integers"):
        reconcile.resync_customers(None, ["12; DROP TABLE"], run_id="r", routing={})  # type: ignore[arg-type]


@pytest.mark.parametrize(("routing", "force", "refused"), [
    (Routing("US", "legacy", True, None), False, None),                  # frozen mid-migration: legacy is the truth
    (Routing("US", "legacy", True, None), True, None),
    (Routing("US", "legacy", False, None), False, "not frozen"),         # legacy still written: copy stale at once
    (Routing("US", "legacy", False, None), True, "not frozen"),          # force does not lift that
    (Routing("US", "cassandra", True, CUT), False, "cut over"),          # cassandra is the truth
    (Routing("US", "cassandra", True, CUT), True, None),                 # operator restores from the frozen copy
    (Routing("US", "cassandra", False, CUT), True, "legacy copy is not frozen"),
])
def test_resync_requires_legacy_to_be_the_frozen_source(routing, force, refused):
    why = reconcile.resync_refusal(routing, force)
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why and "US" in why
