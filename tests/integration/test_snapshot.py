"""Test data for the nightly DAG tests, written straight into both stores (plain INSERTs and plain CQL that
follow schema.py), so these tests do not depend on the migration modules.

Deterministic: the same (country, n, first_id) always gives the same rows.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from billing_migration.nightly import reconcile, renewal, snapshot
from billing_migration.stores import connections, s3io, schema

CURRENCY = {"US": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR", "BR": "BRL", "JP": "JPY", "CA": "CAD",
            "NL": "EUR", "SE": "SEK", "NZ": "NZD", "CH": "CHF", "IE": "EUR", "MX": "MXN", "IN": "INR"}
PRICES = (Decimal("7.9900"), Decimal("12.4900"), Decimal("19.9900"))
UTC = dt.UTC


def _ts(y: int, m: int, d: int, h: int = 12, minute: int = 0, ms: int = 0) -> dt.datetime:
    return dt.datetime(y, m, d, h, minute, 0, ms * 1000)


def build(country: str, n: int, first_id: int) -> dict[str, list[dict[str, Any]]]:
    """Rows per legacy table for n customers of one country, ids first_id.. (every table populated)."""
    cur = CURRENCY[country]
    base_plan = first_id // 1000 + 1
    plans = [{"plan_id": base_plan * 10 + i, "country": country, "currency": cur, "name": f"{q} plan",
              "price": PRICES[i], "screens": i + 1, "quality": q, "updated_at": _ts(2026, 1, 1)}
             for i, q in enumerate(schema.PLAN_QUALITIES)]
    rows: dict[str, list[dict[str, Any]]] = {t.name: [] for t in schema.TABLES}
    rows["plans"] = plans
    for i in range(n):
        cid = first_id + i
        plan = plans[i % 3]
        sub_status = "on_hold" if i % 17 == 5 else "cancelled" if i % 13 == 7 else "active"
        cust_status = sub_status
        rows["customers"].append({
            "customer_id": cid, "country": country, "email": f"user{cid}@example.com",
            "full_name": f"Customer Number {cid}", "status": cust_status,
            "signup_at": _ts(2025, 1 + i % 12, 1 + i % 28, 9, i % 60, i % 1000),
            "billing_day": 1 + i % 31, "updated_at": _ts(2026, 10, 1 + i % 28)})
        sid = cid * 10 + 1
        rows["subscriptions"].append({
            "subscription_id": sid, "customer_id": cid, "plan_id": plan["plan_id"], "status": sub_status,
            "started_at": _ts(2025, 1 + i % 12, 1 + i % 28),
            "cancelled_at": _ts(2026, 10, 15) if sub_status == "cancelled" else None,
            "next_billing_date": dt.date(2026, 11, min(1 + i % 31, 30)), "updated_at": _ts(2026, 10, 2)})
        if i % 5 == 0:
            rows["plan_changes"].append({
                "change_id": cid * 10 + 2, "customer_id": cid, "subscription_id": sid,
                "from_plan_id": plans[(i + 1) % 3]["plan_id"], "to_plan_id": plan["plan_id"],
                "changed_at": _ts(2025, 6, 1 + i % 28), "updated_at": _ts(2025, 6, 1 + i % 28)})
        for k, status in enumerate(("paid", "refunded" if i % 11 == 3 else "paid")):
            inv = cid * 10 + 3 + k
            day = 1 + (i + k * 7) % 28
            rows["invoices"].append({
                "invoice_id": inv, "customer_id": cid, "subscription_id": sid,
                "period_start": dt.date(2026, 9 + k, day), "period_end": dt.date(2026, 9 + k, day) + dt.timedelta(30),
                "amount": plan["price"], "tax": (plan["price"] * Decimal("0.1")).quantize(Decimal("0.01")),
                "currency": cur, "status": status, "created_at": _ts(2026, 9 + k, day, 3),
                "updated_at": _ts(2026, 9 + k, day, 4)})
            pay_status = {"paid": "succeeded", "refunded": "refunded"}[status]
            rows["payments"].append({
                "payment_id": inv * 10, "customer_id": cid, "invoice_id": inv,
                "method": "card", "payment_token": f"tok_{cid:012d}_{k}", "amount": plan["price"],
                "currency": cur, "status": pay_status, "processed_at": _ts(2026, 9 + k, day, 5),
                "updated_at": _ts(2026, 9 + k, day, 5)})
        if i % 4 == 0:
            rows["balance_transactions"].append({
                "txn_id": cid * 10 + 7, "customer_id": cid, "kind": "gift_card_redemption",
                "amount": Decimal("5.0000") if i % 8 else Decimal("25.0000"), "currency": cur, "invoice_id": None,
                "reference": f"GC-{cid}", "created_at": _ts(2026, 10, 1 + i % 28), "updated_at": _ts(2026, 10, 1)})
        if i % 6 == 0:
            rows["balance_transactions"].append({
                "txn_id": cid * 10 + 8, "customer_id": cid, "kind": "invoice_credit",
                "amount": Decimal("-2.5000"), "currency": cur, "invoice_id": cid * 10 + 3,
                "reference": None, "created_at": _ts(2026, 10, 2), "updated_at": _ts(2026, 10, 2)})
    return rows


def write_mysql(cfg, rows: dict[str, list[dict[str, Any]]]) -> None:
    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as cur:
        for t in schema.TABLES:
            if not rows.get(t.name):
                continue
            cols = t.column_names
            names, marks = ", ".join(f"`{c}`" for c in cols), ", ".join(["%s"] * len(cols))
            cur.executemany(
                f"INSERT INTO `{t.name}` ({names}) VALUES ({marks})",
                [tuple(r[c] for c in cols) for r in rows[t.name]])
        conn.commit()


def write_cassandra(cfg, rows: dict[str, list[dict[str, Any]]], run_id: str = "test-seed") -> None:
    from cassandra.concurrent import execute_concurrent_with_args

    with connections.cassandra_session(cfg) as s:
        pcols = schema.PLANS.column_names
        ps = s.prepare(f"INSERT INTO plans ({', '.join(pcols)}, run_id) VALUES ({', '.join(['?'] * (len(pcols) + 1))})")
        execute_concurrent_with_args(s, ps, [(*(p[c] for c in pcols), run_id) for p in rows["plans"]])
        statics = list(schema.CUSTOMER_STATIC)
        cs = s.prepare("INSERT INTO customer_billing (customer_id, "
                       f"{', '.join(schema.CUSTOMER_STATIC.values())}, customer_run_id) "
                       f"VALUES ({', '.join(['?'] * (len(statics) + 2))})")
        args = [(c["customer_id"], *(c[k] for k in statics), run_id) for c in rows["customers"]]
        execute_concurrent_with_args(s, cs, args, concurrency=64, raise_on_first_error=True)
        idx = s.prepare("INSERT INTO customers_by_country (country, bucket, customer_id, run_id) VALUES (?,?,?,?)")
        execute_concurrent_with_args(s, idx, [(c["country"], schema.customer_bucket(c["customer_id"]),
                                               c["customer_id"], run_id) for c in rows["customers"]], concurrency=64)
        for t in schema.ENTITY_TABLES:
            cols = schema.entity_row_columns(t)
            st = s.prepare(f"INSERT INTO customer_billing (customer_id, entity_type, entity_id, {', '.join(cols)}, "
                           f"run_id) VALUES ({', '.join(['?'] * (len(cols) + 4))})")
            args = [(r["customer_id"], t.entity, r[t.key], *(r[c] for c in cols), run_id) for r in rows[t.name]]
            execute_concurrent_with_args(s, st, args, concurrency=64, raise_on_first_error=True)


def seed_both(cfg, country: str, n: int, first_id: int) -> dict[str, list[dict[str, Any]]]:
    rows = build(country, n, first_id)
    write_mysql(cfg, rows)
    write_cassandra(cfg, rows)
    return rows


# ============================================================================================== tests


US, GB, CA, FR = "US", "GB", "CA", "FR"
CUTOVER = dt.datetime(2026, 11, 1, 0, 0)


def take_snapshots(cfg, day: dt.date, countries: list[str], splits: int = 3) -> dict[str, Any]:
    """What the DAG's snapshot tasks do, called directly."""
    with connections.cassandra_session(cfg) as session:
        scans = [snapshot.snapshot_cassandra_split(cfg, day, sp, countries, session=session)
                 for sp in snapshot.token_splits(splits)]
        for cc in countries:
            snapshot.snapshot_mysql(cfg, day, cc, chunk_customers=37)  # several keyset chunks
            snapshot.snapshot_cassandra_plans(cfg, day, cc, session=session)
    return {"scans": scans}


def run_reconcile(cfg, day: dt.date, country: str, threshold: float = 0.05) -> dict[str, Any]:
    return reconcile.reconcile_country(cfg, day, snapshot.read_routing(cfg)[country], threshold)


def differences(cfg, s3, result) -> list[dict[str, Any]]:
    key = result["report_uri"].split("/", 3)[3].replace("report.json", "differences.parquet")
    return s3io.get_parquet(s3, cfg.s3_bucket, key).to_pylist()


@pytest.fixture(scope="module")
def seeded(cfg, s3, reset_stores, set_routing, reset_routing):
    reset_stores()
    data = {US: seed_both(cfg, US, 120, 10_000), GB: seed_both(cfg, GB, 60, 20_000),
            CA: seed_both(cfg, CA, 40, 30_000)}
    set_routing(US, "legacy", 1)                 # frozen, not yet cut over: MySQL is the truth
    set_routing(GB, "cassandra", 1, CUTOVER)     # cut over: Cassandra is the truth
    set_routing(CA, "legacy", 1)
    set_routing(FR, "legacy", 1)                 # frozen but nothing there: absence of expected state
    yield data
    reset_routing("snapshot tests done")


def test_token_splits_cover_the_ring_without_overlap():
    sp = snapshot.token_splits(7)
    assert sp[0]["lo"] == snapshot.MIN_TOKEN and sp[-1]["hi"] == snapshot.MAX_TOKEN
    assert all(a["hi"] == b["lo"] for a, b in itertools.pairwise(sp))
    with pytest.raises(ValueError):
        snapshot.token_splits(0)


def test_subranges_cut_a_split_into_contiguous_ranges():
    for sp in snapshot.token_splits(3):
        rs = snapshot.subranges(sp["lo"], sp["hi"], 16)
        assert len(rs) == 16 and rs[0][0] == sp["lo"] and rs[-1][1] == sp["hi"]
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in itertools.pairwise(rs))
    assert snapshot.subranges(0, 3, 16) == [(0, 1), (1, 2), (2, 3)]  # never an empty range


def test_concurrent_range_scans_write_what_one_scan_writes(cfg, s3, seeded):
    """Several sub-range scans in flight (pages interleaved) give the same parts as one scan at a time,
    with a page size that splits partitions across pages (the static part must still come once)."""
    day = dt.date(2026, 3, 3)
    split = snapshot.token_splits(1)[0]
    out = {}
    with connections.cassandra_session(cfg) as session:
        for k in (1, 4):
            res = snapshot.snapshot_cassandra_split(cfg, day, split, [US, GB], fetch_size=7, session=session,
                                                    in_flight=k)
            out[k] = (res["counts"], {(cc, t.name): snapshot.read_snapshot(cfg, day, "cassandra", cc, t.name, s3)
                                      .sort_by(t.key).to_pylist()
                                      for cc in (US, GB) for t in snapshot.CUSTOMER_TABLES})
    assert out[1] == out[4]
    assert out[4][0][US]["customers"] == 120 and out[4][0][GB]["customers"] == 60


def test_clean_night_passes_and_duckdb_reads_the_snapshots(cfg, s3, seeded, caplog):
    day = dt.date(2026, 11, 2)
    with caplog.at_level(logging.INFO, logger="billing_migration.progress"):
        out = take_snapshots(cfg, day, [US, GB, CA])
    assert sum(s["counts"][US]["customers"] for s in out["scans"]) == 120
    res = run_reconcile(cfg, day, US)
    assert res["ok"], res["problems"]
    assert res["counts"]["mysql"] == res["counts"]["cassandra"]
    # the legacy snapshot reports its progress like every long stage: its final line has the totals
    legacy_rows = sum(n for t, n in res["counts"]["mysql"].items() if t != "plans")
    assert f"mysql snapshot US done: {legacy_rows:,} rows, 120 customers in" in caplog.text
    assert res["counts"]["mysql"]["invoices"] == 240 and res["counts"]["mysql"]["plans"] == 3
    report = s3io.get_json(s3, cfg.s3_bucket, res["report_uri"].split("/", 3)[3])
    assert report["ok"] and report["financial_differences"] == [] and report["customers"] == []

    # The hive layout is queryable as is: DuckDB over a pyarrow dataset on S3 (no httpfs needed).
    import duckdb
    import pyarrow.dataset as pds
    from billing_migration.stores import connections
    from pyarrow import fs

    hook = connections.s3_hook(cfg)
    cred = hook.get_credentials()
    endpoint = hook.conn_config.endpoint_url
    s3fs = fs.S3FileSystem(access_key=cred.access_key, secret_key=cred.secret_key, region="us-east-1",
                           endpoint_override=endpoint.split("://")[1], scheme=endpoint.split("://")[0])
    root = f"{cfg.s3_prefix}nightly/snapshots/"
    files = [f"{cfg.s3_bucket}/{k}" for k in s3io.list_keys(s3, cfg.s3_bucket, root)
             if "/table=invoices/" in k and "date=2026-11-02" in k]
    ds = pds.dataset(files, filesystem=s3fs, format="parquet", partitioning="hive",
                     partition_base_dir=f"{cfg.s3_bucket}/{root}")
    con = duckdb.connect()
    con.register("invoices", ds)
    rows = con.execute("SELECT store, country, count(*), sum(amount) FROM invoices "
                       "WHERE country IN ('US', 'CA') GROUP BY ALL ORDER BY ALL").fetchall()
    assert [r[:3] for r in rows] == [("cassandra", "CA", 80), ("cassandra", "US", 240),
                                     ("mysql", "CA", 80), ("mysql", "US", 240)]
    assert rows[1][3] == rows[3][3]  # exact DECIMAL totals, same on both sides


def test_injected_drift_is_reported_per_customer_and_kind_and_fixed_by_resync(cfg, s3, seeded):
    rows = seeded[US]
    a, b, c, d, e = 10_000, 10_001, 10_002, 10_003, 10_004
    inv_c = next(r for r in rows["invoices"] if r["customer_id"] == c)
    pay_e = next(r for r in rows["payments"] if r["customer_id"] == e)
    with connections.cassandra_session(cfg) as s:
        # missing: a plan change of customer a is gone from Cassandra
        s.execute("DELETE FROM customer_billing WHERE customer_id=%s AND entity_type='plan_change' "
                  "AND entity_id=%s", (a, a * 10 + 2))
        # extra: a credit of 3.0000 for customer b that the legacy never had
        s.execute("INSERT INTO customer_billing (customer_id, entity_type, entity_id, kind, amount, currency, "
                  "created_at, updated_at) VALUES (%s, 'balance_txn', %s, 'promo_credit', %s, 'USD', %s, %s)",
                  (b, b * 10 + 9, Decimal("3.0000"), _ts(2026, 10, 20), _ts(2026, 10, 20)))
        # changed amount: one cent more on an invoice of customer c
        s.execute("UPDATE customer_billing SET amount=%s WHERE customer_id=%s AND entity_type='invoice' "
                  "AND entity_id=%s", (inv_c["amount"] + Decimal("0.01"), c, inv_c["invoice_id"]))
        # changed status: customer d's subscription put on hold
        s.execute("UPDATE customer_billing SET status='on_hold' WHERE customer_id=%s AND entity_type="
                  "'subscription' AND entity_id=%s", (d, d * 10 + 1))
        # shifted timestamp: customer e's payment one millisecond later
        s.execute("UPDATE customer_billing SET processed_at=%s WHERE customer_id=%s AND entity_type='payment' "
                  "AND entity_id=%s", (pay_e["processed_at"] + dt.timedelta(milliseconds=1), e,
                                       pay_e["payment_id"]))
    day = dt.date(2026, 11, 3)
    take_snapshots(cfg, day, [US])
    res = run_reconcile(cfg, day, US)
    assert not res["ok"]
    assert res["customers"] == [a, b, c, d, e]
    diffs = {(x["customer_id"], x["kind"], x["table"], x["field"]) for x in differences(cfg, s3, res)}
    assert diffs == {
        (a, "missing", "plan_changes", None),
        (b, "extra", "balance_transactions", None),
        (c, "different", "invoices", "amount"),
        (d, "different", "subscriptions", "status"),
        (e, "different", "payments", "processed_at"),
    }
    report = s3io.get_json(s3, cfg.s3_bucket, res["report_uri"].split("/", 3)[3])
    money = {(m["metric"], m["currency"]): Decimal(m["diff"]) for m in report["financial_differences"]}
    assert money == {("invoiced", "USD"): Decimal("0.0100"), ("credit_balance", "USD"): Decimal("3.0000")}
    assert any("row count plan_changes" in p for p in res["problems"])
    assert all("resync_customer_ids=[" in cst["fix"] for cst in report["customers"])
    with pytest.raises(reconcile.ReconciliationFailed, match=r"s3://.*/country=US/report\.json"):
        reconcile.assert_reconciled([res])

    # The fix, on request: the complete customers re-copied from MySQL, then the next night is clean.
    out = reconcile.resync_customers(cfg, [a, b, c, d, e], run_id="test-resync")
    assert out["resynced"] == [a, b, c, d, e]
    day2 = dt.date(2026, 11, 4)
    take_snapshots(cfg, day2, [US])
    res2 = run_reconcile(cfg, day2, US)
    assert res2["ok"], res2["problems"]


def test_after_cutover_new_cassandra_writes_pass_but_legacy_writes_are_drift(cfg, s3, seeded, set_routing):
    new_invoice = 20_000 * 10 + 9
    with connections.cassandra_session(cfg) as s:
        s.execute("INSERT INTO customer_billing (customer_id, entity_type, entity_id, subscription_id, "
                  "period_start, period_end, amount, tax, currency, status, created_at, updated_at) "
                  "VALUES (%s, 'invoice', %s, %s, %s, %s, %s, %s, 'GBP', 'pending', %s, %s)",
                  (20_000, new_invoice, 20_000 * 10 + 1, dt.date(2026, 11, 2), dt.date(2026, 12, 2),
                   Decimal("7.9900"), Decimal("0.7990"), _ts(2026, 11, 2), _ts(2026, 11, 2)))
    # A writer that bypassed the gate (simulated by lifting the routing row the guard triggers read).
    set_routing(GB, "legacy", 0)
    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as cur:
        cur.execute("UPDATE customers SET email='changed@example.org', updated_at=%s WHERE customer_id=%s",
                    (_ts(2026, 11, 2), 20_001))
        conn.commit()
    set_routing(GB, "cassandra", 1, CUTOVER)
    day = dt.date(2026, 11, 5)
    take_snapshots(cfg, day, [GB])
    res = run_reconcile(cfg, day, GB)
    assert not res["ok"]
    assert res["customers"] == [20_001] and res["post_cutover_changes"] == 1
    diffs = differences(cfg, s3, res)
    kinds = {(x["customer_id"], x["kind"]) for x in diffs}
    assert kinds == {(20_000, "post_cutover_change"), (20_001, "legacy_changed_after_cutover")}
    legacy = next(x for x in diffs if x["kind"] == "legacy_changed_after_cutover" and x["field"] == "email")
    assert legacy["mysql_value"] == "c***@example.org"  # masked
    assert "never copied" in legacy["fix"]
    assert not any("row count" in p or "financial" in p for p in res["problems"]), res["problems"]
    with pytest.raises(reconcile.ResyncRefused):
        reconcile.resync_customers(cfg, [20_001], run_id="test-resync")


def test_absence_of_expected_state_fails(cfg, s3, seeded):
    day = dt.date(2026, 11, 6)
    take_snapshots(cfg, day, [FR, CA], splits=2)
    fr = run_reconcile(cfg, day, FR)
    assert not fr["ok"] and any("no customers in the cassandra snapshot" in p for p in fr["problems"])
    ca = run_reconcile(cfg, day, CA)
    assert ca["ok"], ca["problems"]
    with connections.cassandra_session(cfg) as s:
        for cid in (30_000, 30_001, 30_002):  # 3 of 40 customers lost: ~7% of the rows
            s.execute("DELETE FROM customer_billing WHERE customer_id=%s", (cid,))
    nxt = day + dt.timedelta(days=1)
    take_snapshots(cfg, nxt, [CA], splits=2)
    ca2 = run_reconcile(cfg, nxt, CA)
    assert any("cassandra snapshot shrank" in p for p in ca2["problems"]), ca2["problems"]
    assert sorted(ca2["customers"]) == [30_000, 30_001, 30_002]
    # A looser threshold tolerates the shrink (the row differences still fail).
    ca3 = run_reconcile(cfg, nxt, CA, threshold=0.5)
    assert not any("shrank" in p for p in ca3["problems"])
    reconcile.resync_customers(cfg, [30_000, 30_001, 30_002], run_id="test-resync")


def test_resync_goes_through_the_transform_and_refuses_a_zero_date(cfg, s3, seeded, set_routing):
    """One write path: a zero date is a reject (nothing written), never a NULL in Cassandra."""
    cid = 10_010
    inv = next(r for r in seeded[US]["invoices"] if r["customer_id"] == cid)
    set_routing(US, "legacy", 0)  # a legacy writer slips a zero date in (the guard reads routing)
    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute("UPDATE invoices SET period_start = '0000-00-00' WHERE invoice_id = %s", (inv["invoice_id"],))
        conn.commit()
    set_routing(US, "legacy", 1)
    try:
        with pytest.raises(reconcile.ResyncRejected, match=r"zero or invalid date in period_start.*rejects/"):
            reconcile.resync_customers(cfg, [cid, 10_011], run_id="test-resync-zero")
        with connections.cassandra_session(cfg) as s:
            row = s.execute("SELECT period_start FROM customer_billing WHERE customer_id=%s AND "
                            "entity_type='invoice' AND entity_id=%s", (cid, inv["invoice_id"])).one()
        assert row.period_start is not None and row.period_start.date() == inv["period_start"]
    finally:
        set_routing(US, "legacy", 0)
        with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as cur:
            cur.execute("UPDATE invoices SET period_start = %s WHERE invoice_id = %s",
                        (inv["period_start"], inv["invoice_id"]))
            conn.commit()
        set_routing(US, "legacy", 1)
    out = reconcile.resync_customers(cfg, [cid], run_id="test-resync-zero")
    assert out["resynced"] == [cid] and out["rejected"] == []


def test_resync_refused_while_the_country_is_not_frozen(cfg, s3, seeded, set_routing):
    set_routing(CA, "legacy", 0)
    try:
        with pytest.raises(reconcile.ResyncRefused, match="CA is not frozen"):
            reconcile.resync_customers(cfg, [30_005], run_id="test-resync")
    finally:
        set_routing(CA, "legacy", 1)


def test_renewal_lists_agree_between_mysql_and_cassandra(cfg, s3, seeded):
    """The same customers give the same renewal list whether read from MySQL or the Cassandra snapshot."""
    day = dt.date(2026, 11, 8)
    take_snapshots(cfg, day, [US], splits=4)
    plans_m = renewal.mysql_plans(cfg, US)
    plans_c = snapshot.read_snapshot(cfg, day, "cassandra", US, "plans", s3)
    total = 0
    for d in (dt.date(2026, 11, 30), dt.date(2027, 2, 28), dt.date(2028, 2, 29), dt.date(2026, 11, 15),
              dt.date(2026, 12, 1)):
        bm, hm, _ = renewal.crawl(renewal.mysql_batches(cfg, US, 25), plans_m, d, US)
        bc, hc, _ = renewal.crawl(renewal.cassandra_snapshot_batches(cfg, day, US, s3), plans_c, d, US)
        ta, tb = renewal.to_arrow(bm, renewal.RENEWAL_SCHEMA), renewal.to_arrow(bc, renewal.RENEWAL_SCHEMA)
        assert ta.equals(tb), d
        assert renewal.to_arrow(hm, renewal.HELD_SCHEMA).equals(renewal.to_arrow(hc, renewal.HELD_SCHEMA))
        total += ta.num_rows
        assert len(hm) > 0  # on-hold customers are listed every day
    assert total > 10
    with pytest.raises(renewal.RenewalError, match="expected 5"):  # a lost split never bills a partial list
        list(renewal.cassandra_snapshot_batches(cfg, day, US, s3, expected_parts=5))
    by_day = {}
    for d in (dt.date(2026, 11, 30), dt.date(2026, 11, 29)):
        b, _, _ = renewal.crawl(renewal.mysql_batches(cfg, US, 1000), plans_m, d, US)
        by_day[d] = b
    assert set(by_day[dt.date(2026, 11, 30)]["billing_day"]) == {30, 31}  # November has 30 days
    assert (by_day[dt.date(2026, 11, 30)]["amount_due"] >= 0).all()


def test_renewal_output_is_atomic_and_byte_for_byte_reproducible(cfg, s3, seeded):
    day = dt.date(2026, 11, 30)
    routing = snapshot.Routing(US, "legacy", True, None)
    first = renewal.renew_country(cfg, day, routing)
    prefix = renewal.renewal_prefix(cfg, day, US)
    keys = s3io.list_keys(s3, cfg.s3_bucket, prefix)
    assert [k.rsplit("/", 1)[1] for k in keys] == ["_SUCCESS", "part-0.parquet", "summary.json"]
    body1 = s3.get_object(Bucket=cfg.s3_bucket, Key=prefix + "part-0.parquet")["Body"].read()
    s3.put_object(Bucket=cfg.s3_bucket, Key=prefix + "part-7.parquet", Body=b"stale")  # left by an old run
    second = renewal.renew_country(cfg, day, routing)
    body2 = s3.get_object(Bucket=cfg.s3_bucket, Key=prefix + "part-0.parquet")["Body"].read()
    assert body1 == body2
    # Same rows, same summary; only the read time of the live legacy store differs.
    assert {k: v for k, v in first.items() if k != "as_of"} == {k: v for k, v in second.items() if k != "as_of"}
    assert second["as_of"]["computed_from"].startswith("live mysql read at ")
    read_at = dt.datetime.fromisoformat(second["as_of"]["data_read_at"])
    assert second["as_of"]["of_the_date"] is snapshot.of_the_date(day, read_at)
    assert second["skipped"] == 0 and second["skipped_list"].endswith("renewals_skipped/date=2026-11-30/"
                                                                      "country=US/part-0.parquet")
    assert "part-7.parquet" not in str(s3io.list_keys(s3, cfg.s3_bucket, prefix))
    summary = s3io.get_json(s3, cfg.s3_bucket, prefix + "summary.json")
    assert summary["to_bill"] == first["to_bill"] > 0
    usd = summary["per_currency"]["USD"]
    assert Decimal(usd["price"]) - Decimal(usd["credit_used"]) == Decimal(usd["amount_due"])
    t = s3io.get_parquet(s3, cfg.s3_bucket, prefix + "part-0.parquet")
    assert t.schema.field("amount_due").type == pa.decimal128(38, 4)
    assert t.column("customer_id").to_pylist() == sorted(t.column("customer_id").to_pylist())
