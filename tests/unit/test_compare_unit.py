"""The comparator's own normalisation and diff logic, without services."""

from __future__ import annotations

import datetime as dt
import unicodedata
from decimal import Decimal

from billing_migration.country import compare
from billing_migration.country.compare import (
    CompareTally,
    Invalid,
    SourceCustomer,
    TargetPartition,
    diff_customer,
    norm_source,
    norm_target,
    same,
)
from billing_migration.stores import schema
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
    res = CompareTally("SE", 1, 1)
    diff_customer(res, src, tgt, set())
    assert res.ok and not res.mismatches
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
    res = CompareTally("SE", 1, 1)
    diff_customer(res, src, tgt, set())
    found = {(m.kind, m.table, m.key, m.field): m for m in res.mismatches}
    amount = found[("different", "invoices", 10, "amount")]
    assert (amount.source_value, amount.target_value) == ("9.99", "9.98")
    token = found[("different", "invoices", 10, "payment_token")]
    assert token.target_value == "***1234"  # masked
    email = found[("different", "customers", 1, "email")]
    assert email.source_value == "a***@example.com" and email.target_value == "a***@evil.example"
    assert ("extra", "payments", 99, None) in found
    assert ("missing", "balance_transactions", 7, None) in found
    assert res.counts["different"] == 3 and res.counts["extra"] == 1 and res.counts["missing"] == 1
    assert compare.mismatching_customers(res) == [1]


def test_quarantined_rows_are_not_mismatches():
    src, tgt = _customer()
    del tgt.rows[("invoice", 10)]
    res = CompareTally("SE", 1, 1)
    diff_customer(res, src, tgt, {("invoices", 10)})
    assert res.counts["quarantined"] == 1 and res.ok and compare.mismatching_customers(res) == []
    # a quarantined customer quarantines its whole partition
    res2 = CompareTally("SE", 1, 1)
    diff_customer(res2, src, None, {("customers", 1)})
    assert res2.counts["quarantined"] == 2 and res2.ok
    # without the quarantine entry the same absence is a mismatch
    res3 = CompareTally("SE", 1, 1)
    diff_customer(res3, src, None, set())
    assert res3.counts["missing"] == 2 and compare.mismatching_customers(res3) == [1]


def test_target_only_customer_is_extra():
    _, tgt = _customer(5)
    res = CompareTally("SE", 1, 9)
    diff_customer(res, None, tgt, set())
    kinds = {(m.kind, m.table, m.key) for m in res.mismatches}
    assert kinds == {("extra", "customers", 5), ("extra", "invoices", 10)}
    assert res.counts["extra_customers"] == 1 and compare.mismatching_customers(res) == [5]


def test_report_is_capped_but_counts_stay_exact(monkeypatch):
    monkeypatch.setattr(compare, "MAX_REPORT_ROWS", 2)
    res = CompareTally("SE", 1, 9)
    for i in range(5):
        res.add("missing", "invoices", i, 1)
    assert len(res.mismatches) == 2 and res.truncated == 3 and res.counts["missing"] == 5
    t = compare.mismatches_table(res)
    assert t.schema == compare.MISMATCH_SCHEMA and t.num_rows == 2


# ------------------------------------------------------------------------------------------ grouped (fast) path
def _raw_value(kind: str, rnd) -> object:
    """A value as MySQLdb returns it for our SELECT (dates/timestamps as text), sometimes NULL."""
    if rnd.random() < 0.1:
        return None
    if kind == "timestamp":
        ms = rnd.randrange(1_600_000_000_000, 1_800_000_000_000)
        return (dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=ms)).isoformat(sep=" ", timespec="milliseconds")
    if kind == "date":
        return (dt.date(2020, 1, 1) + dt.timedelta(days=rnd.randrange(3000))).isoformat()
    if kind == "decimal":
        return Decimal(rnd.randrange(-10**8, 10**8)).scaleb(-4)
    if kind == "text":
        return rnd.choice(["a@x.io", "Åsa 😀 Öberg", "", "USD", "tok_9999_secret", "ZoË"])
    return rnd.randrange(0, 100)


def _non_null(kind: str, rnd) -> object:
    while (v := _raw_value(kind, rnd)) is None:
        pass
    return v


def _as_target(kind: str, v: object) -> object:
    """The source value as the driver returns it for the fast selects (dates as toUnixTimestamp ms)."""
    if v is None:
        return None
    if kind == "timestamp":
        return dt.datetime.fromisoformat(v)
    if kind == "date":
        return (dt.date.fromisoformat(v) - dt.date(1970, 1, 1)).days * 86_400_000
    if kind == "decimal":
        return v.quantize(Decimal("0.000001"))  # another scale, same number: never a difference
    return v


def _random_group(rnd, n: int):
    """Raw source + target of n customers, then one random corruption per corrupted customer."""
    src = compare.SourceRaw(tables={t.name: [] for t in schema.ENTITY_TABLES})
    tgt = compare.TargetRaw()
    cust_cols = schema.CUSTOMERS.columns
    for cid in range(100, 100 + n):
        srow = [cid if c.name == "customer_id" else _raw_value(c.kind, rnd) for c in cust_cols]
        src.customers.append(tuple(srow))
        static = [cid] + [_as_target(schema.CUSTOMERS.column(legacy).kind, srow[schema.CUSTOMERS.column_names.index(
            legacy)]) for legacy in schema.CUSTOMER_STATIC] + ["run"]
        tgt.static[cid] = tuple(static)
        rows = []
        for t in schema.ENTITY_TABLES:
            for k in range(rnd.randrange(0, 3)):
                key = cid * 100 + k
                r = tuple(cid if c.name == "customer_id" else key if c.name == t.key else _raw_value(c.kind, rnd)
                          for c in t.columns)
                src.tables[t.name].append(r)
                d = dict(zip(t.column_names, r, strict=True))
                rows.append((t.entity, key, {c: _as_target(compare._KIND_OF[c], d[c]) for c in
                                             schema.entity_row_columns(t)}))
        rows.sort(key=lambda x: (x[0], x[1]))  # clustering order
        tgt.rows[cid] = [tuple([cid, e, key] + [vals.get(c) for c in schema.entity_columns()])
                         for e, key, vals in rows]
    quarantined: set[tuple[str, int]] = set()
    for cid in rnd.sample(range(100, 100 + n), n // 2):
        rows = tgt.rows[cid]
        what = rnd.choice(["value", "delete", "extra", "foreign", "unknown", "static", "partition",
                           "quarantine", "ms", "day", "zero", "nfd"])
        pos = compare._FR
        if what in ("value", "delete", "foreign", "quarantine", "ms", "day") and not rows:
            what = "static"
        if what == "value":
            i = rnd.randrange(len(rows))
            own = compare._ROW_COLS[rows[i][1]]
            c = rnd.choice(own)
            r = list(rows[i])
            r[pos[c]] = None if r[pos[c]] is not None else _as_target(compare._KIND_OF[c],
                                                                       _non_null(compare._KIND_OF[c], rnd))
            rows[i] = tuple(r)
        elif what in ("delete", "quarantine"):
            e, key = rows.pop(rnd.randrange(len(rows)))[1:3]
            if what == "quarantine":
                quarantined.add((schema.TABLE_BY_ENTITY[e].name, key))
        elif what == "extra":
            rows.append(tuple([cid, "payment", 999_999] + [None] * len(schema.entity_columns())))
        elif what == "unknown":
            rows.append(tuple([cid, "refund", 1] + [None] * len(schema.entity_columns())))
        elif what == "foreign":
            i = rnd.randrange(len(rows))
            r = list(rows[i])
            foreign = [c for c in schema.entity_columns() if c not in compare._ROW_COLS[r[1]]]
            c = rnd.choice(foreign)
            r[pos[c]] = _as_target(compare._KIND_OF[c], _non_null(compare._KIND_OF[c], rnd))
            rows[i] = tuple(r)
        elif what == "static":
            tgt.static[cid] = tuple([cid] + [None] * (len(compare._FAST_STATIC_COLS) - 1))
        elif what == "partition":
            tgt.static.pop(cid)
            tgt.rows.pop(cid)
            if rnd.random() < 0.5:
                quarantined.add(("customers", cid))
        elif what in ("ms", "day"):
            i = rnd.randrange(len(rows))
            kind = "timestamp" if what == "ms" else "date"
            r = list(rows[i])
            cols = [c for c in compare._ROW_COLS[r[1]] if compare._KIND_OF[c] == kind and r[pos[c]] is not None]
            if cols:
                c = cols[0]
                r[pos[c]] += dt.timedelta(milliseconds=1) if kind == "timestamp" else 86_400_000
            rows[i] = tuple(r)
        elif what == "zero":  # a zero date in the source: never equal to anything
            j = schema.CUSTOMERS.column_names.index("signup_at")
            k = next(i for i, r in enumerate(src.customers) if r[0] == cid)
            r = list(src.customers[k])
            r[j] = "0000-00-00 00:00:00.000"
            src.customers[k] = tuple(r)
        elif what == "nfd":
            st = list(tgt.static[cid])
            st[compare._FS["full_name"]] = unicodedata.normalize("NFD", "Åsa 😀 Öberg")
            tgt.static[cid] = tuple(st)
    return src, tgt, quarantined


def _reference(src, tgt, index, quarantined) -> CompareTally:
    """The per-customer path (diff_customer) on the same raw group, plus the index check."""
    res = CompareTally("SE", 1, 1)
    customers = compare._source_customers(src)
    for cid, s in customers.items():
        full = []
        st = tgt.static.get(cid)
        for r in tgt.rows.get(cid, []) or ([None] if st else []):
            row = [cid, r[1] if r else None, r[2] if r else None]
            row += list(st[1:]) if st else [None] * (len(compare._FAST_STATIC_COLS) - 1)
            row += list(r[3:]) if r else [None] * len(schema.entity_columns())
            full.append(tuple(row))
        diff_customer(res, s, compare._partition(cid, full), quarantined)
        if cid not in index and ("customers", cid) not in quarantined:
            res.counts["missing_index_entries"] += 1
            res.add("missing", "customers_by_country", cid, cid)
    return res


def test_grouped_path_finds_exactly_what_the_per_customer_path_finds():
    import random
    from collections import Counter

    for seed in range(6):
        rnd = random.Random(seed)
        src, tgt, quarantined = _random_group(rnd, 40)
        index = {r[0] for r in src.customers} - {src.customers[seed][0]}  # one index entry missing
        fast = CompareTally("SE", 1, 1)
        seen = compare.diff_group(fast, src, tgt, index, quarantined)
        ref = _reference(src, tgt, index, quarantined)
        assert seen == {r[0] for r in src.customers}
        assert fast.counts == ref.counts, seed
        assert fast.counts["fields_compared"] > 0 and fast.counts["missing_index_entries"] == 1
        assert Counter(fast.mismatches) == Counter(ref.mismatches), seed
        assert fast.customers_with_mismatch == ref.customers_with_mismatch
        assert len(fast.customers_with_mismatch) >= 5  # the corruptions were really there


def test_grouped_path_clean_group_and_masking():
    import random

    src, tgt, quarantined = _random_group(random.Random(8), 1)  # one customer, nothing corrupted
    assert not quarantined
    res = CompareTally("SE", 1, 1)
    compare.diff_group(res, src, tgt, {100}, set())
    assert res.ok and not res.mismatches and res.counts["customers_compared"] == 1
    # a payment token leaked onto an invoice row is reported, masked
    row = [100, "invoice", 5] + [None] * len(schema.entity_columns())
    row[compare._FR["payment_token"]] = "tok_leak_1234"
    src.tables["invoices"].append(tuple(100 if c == "customer_id" else 5 if c == "invoice_id" else None
                                        for c in schema.INVOICES.column_names))
    tgt.rows[100] = sorted([*tgt.rows[100], tuple(row)], key=lambda r: (r[1], r[2]))
    res2 = CompareTally("SE", 1, 1)
    compare.diff_group(res2, src, tgt, {100}, set())
    (leak,) = [m for m in res2.mismatches if m.field == "payment_token"]
    assert (leak.kind, leak.table, leak.key, leak.target_value) == ("different", "invoices", 5, "***1234")
    assert compare.mismatching_customers(res2) == [100]


def test_target_dates_as_epoch_ms():
    assert norm_target("date", 20484 * 86_400_000) == dt.date(2026, 1, 31)
    assert same(norm_source("date", "2026-01-31"), norm_target("date", 20484 * 86_400_000))
    assert isinstance(norm_target("date", 10**20), Invalid)
