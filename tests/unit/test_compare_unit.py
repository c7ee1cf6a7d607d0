"""The comparator's own normalisation and diff logic, without services."""

from __future__ import annotations

import datetime as dt
import unicodedata
from decimal import Decimal

from billing_migration import compare, schema
from billing_migration.compare import (
    CompareResult,
    Invalid,
    SourceCustomer,
    TargetPartition,
    diff_customer,
    norm_source,
    norm_target,
    same,
)
from cassandra.util import Date


def test_timestamps_compare_as_utc_milliseconds():
    src = norm_source("timestamp", "2026-03-01 12:00:00.123")
    assert src == 1772366400123
    assert same(src, norm_target("timestamp", dt.datetime(2026, 3, 1, 12, 0, 0, 123000)))
    aware = dt.datetime(2026, 3, 1, 13, 0, 0, 123000, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert same(src, norm_target("timestamp", aware))
    assert not same(src, norm_target("timestamp", dt.datetime(2026, 3, 1, 12, 0, 0, 124000)))  # 1 ms
    assert compare.display("timestamp", src) == "2026-03-01T12:00:00.123Z"


def test_zero_dates_never_pass_for_null_or_anything():
    z = norm_source("timestamp", "0000-00-00 00:00:00.000")
    assert isinstance(z, Invalid)
    assert not same(z, None) and not same(z, z) and not same(None, z)
    assert isinstance(norm_source("date", "0000-00-00"), Invalid)
    assert compare.display("date", norm_source("date", "2026-02-30")) == "invalid:2026-02-30"


def test_decimals_compare_numerically_never_as_float():
    assert same(norm_source("decimal", Decimal("10.5000")), norm_target("decimal", Decimal("10.5")))
    assert not same(norm_source("decimal", Decimal("10.5000")), norm_target("decimal", Decimal("10.5001")))
    assert not same(norm_source("decimal", "0.1"), 0.1)  # a float never equals a decimal here
    assert not same(Decimal("0"), None)


def test_dates_ints_and_text():
    assert same(norm_source("date", "2026-01-31"), norm_target("date", Date(dt.date(2026, 1, 31))))
    assert not same(norm_source("date", "2026-01-31"), norm_target("date", dt.date(2026, 2, 1)))
    assert same(norm_source("tinyint", 7), norm_target("tinyint", 7))
    emoji = "😀 Zoë"
    assert same(norm_source("text", emoji), norm_target("text", emoji))
    assert not same(norm_source("text", "a@x.io"), norm_target("text", "a@x.io "))  # no trimming
    nfd = unicodedata.normalize("NFD", emoji)
    assert not same(norm_source("text", emoji), norm_target("text", nfd))  # no Unicode folding
    assert not same(norm_source("text", "1"), norm_target("bigint", 1))  # kinds never mix


def _customer(cid: int = 1) -> tuple[SourceCustomer, TargetPartition]:
    static = {"country": "SE", "email": "anna@example.com", "full_name": "Anna 😀", "status": "active",
              "signup_at": 1000, "billing_day": 5, "updated_at": 2000}
    inv = {"invoice_id": 10, "customer_id": cid, "subscription_id": 20, "period_start": dt.date(2026, 1, 1),
           "period_end": dt.date(2026, 1, 31), "amount": Decimal("9.99"), "tax": Decimal("0"), "currency": "SEK",
           "status": "paid", "created_at": 3000, "updated_at": 3000}
    src = SourceCustomer(cid, dict(static), {("invoice", 10): inv})
    trow = {col: None for col in schema.entity_columns()}
    trow.update({k: v for k, v in inv.items() if k not in ("invoice_id", "customer_id")})
    return src, TargetPartition(cid, dict(static), {("invoice", 10): trow})


def test_clean_customer_has_no_mismatch_and_counts_fields():
    src, tgt = _customer()
    res = CompareResult("SE", 1, 1)
    diff_customer(res, src, tgt, set())
    assert res.ok and res.mismatches == []
    assert res.counts["customers_compared"] == 1 and res.counts["rows_compared"] == 2
    n_inv = len(schema.entity_row_columns(schema.TABLE_BY_ENTITY["invoice"]))
    assert res.counts["fields_compared"] == len(schema.CUSTOMER_STATIC) + n_inv


def test_each_kind_of_difference_is_reported_with_table_key_field():
    src, tgt = _customer()
    tgt.rows[("invoice", 10)]["amount"] = Decimal("9.98")
    tgt.rows[("invoice", 10)]["payment_token"] = "tok_secret_1234"  # a foreign column filled
    tgt.static["email"] = "anna@evil.example"
    tgt.rows[("payment", 99)] = {col: None for col in schema.entity_columns()}
    src.rows[("balance_txn", 7)] = {"txn_id": 7}
    res = CompareResult("SE", 1, 1)
    diff_customer(res, src, tgt, set())
    found = {(m["kind"], m["table"], m["key"], m["field"]): m for m in res.mismatches}
    amount = found[("different", "invoices", 10, "amount")]
    assert (amount["source_value"], amount["target_value"]) == ("9.99", "9.98")
    token = found[("different", "invoices", 10, "payment_token")]
    assert token["target_value"] == "***1234"  # masked
    email = found[("different", "customers", 1, "email")]
    assert email["source_value"] == "a***@example.com" and email["target_value"] == "a***@evil.example"
    assert ("extra", "payments", 99, None) in found
    assert ("missing", "balance_transactions", 7, None) in found
    assert res.counts["different"] == 3 and res.counts["extra"] == 1 and res.counts["missing"] == 1
    assert compare.mismatching_customers(res) == [1]


def test_quarantined_rows_are_not_mismatches():
    src, tgt = _customer()
    del tgt.rows[("invoice", 10)]
    res = CompareResult("SE", 1, 1)
    diff_customer(res, src, tgt, {("invoices", 10)})
    assert res.counts["quarantined"] == 1 and res.ok and compare.mismatching_customers(res) == []
    # a quarantined customer quarantines its whole partition
    res2 = CompareResult("SE", 1, 1)
    diff_customer(res2, src, None, {("customers", 1)})
    assert res2.counts["quarantined"] == 2 and res2.ok
    # without the quarantine entry the same absence is a mismatch
    res3 = CompareResult("SE", 1, 1)
    diff_customer(res3, src, None, set())
    assert res3.counts["missing"] == 2 and compare.mismatching_customers(res3) == [1]


def test_target_only_customer_is_extra():
    _, tgt = _customer(5)
    res = CompareResult("SE", 1, 9)
    diff_customer(res, None, tgt, set())
    kinds = {(m["kind"], m["table"], m["key"]) for m in res.mismatches}
    assert kinds == {("extra", "customers", 5), ("extra", "invoices", 10)}
    assert res.counts["extra_customers"] == 1 and compare.mismatching_customers(res) == [5]


def test_report_is_capped_but_counts_stay_exact(monkeypatch):
    monkeypatch.setattr(compare, "MAX_REPORT_ROWS", 2)
    res = CompareResult("SE", 1, 9)
    for i in range(5):
        res.add("missing", "invoices", i, 1)
    assert len(res.mismatches) == 2 and res.truncated == 3 and res.counts["missing"] == 5
    t = compare.mismatches_table(res)
    assert t.schema == compare.MISMATCH_SCHEMA and t.num_rows == 2
