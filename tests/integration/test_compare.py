"""The independent comparator against real MariaDB + Cassandra: clean, then every kind of corruption."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from billing_migration.country import compare
from billing_migration.stores import connections, s3io, schema

CC = "IS"  # a country neither the generator nor other fixtures seed
PLAN = 8100


def _customer(cid: int, i: int) -> dict:
    """One customer of hand-written values: emoji, NULLs, 4-place decimals, millisecond timestamps."""
    ts = dt.datetime(2025, 1, 2, 3, 4, 5, (i * 7 % 1000) * 1000)
    return {
        "customer": {"customer_id": cid, "country": CC, "email": None if i == 2 else f"kund{cid}@example.se",
                     "full_name": "Åsa 😀 Öberg" if i % 2 == 0 else "Nils Holgersson", "status": "active",
                     "signup_at": ts, "billing_day": 1 + i, "updated_at": ts},
        "subscriptions": [{"subscription_id": cid, "customer_id": cid, "plan_id": PLAN, "status": "active",
                           "started_at": ts, "cancelled_at": None, "next_billing_date": dt.date(2026, 1, 1 + i),
                           "updated_at": ts}],
        "plan_changes": [{"change_id": cid, "customer_id": cid, "subscription_id": cid, "from_plan_id": PLAN,
                          "to_plan_id": PLAN, "changed_at": ts, "updated_at": ts}],
        "invoices": [{"invoice_id": cid * 10 + k, "customer_id": cid, "subscription_id": cid,
                      "period_start": dt.date(2025, 1 + k, 1), "period_end": dt.date(2025, 2 + k, 1),
                      "amount": Decimal("99.1234"), "tax": Decimal("24.7800"), "currency": "SEK", "status": "paid",
                      "created_at": ts, "updated_at": ts} for k in range(2)],
        "payments": [{"payment_id": cid * 10, "customer_id": cid, "invoice_id": cid * 10, "method": "card",
                      "payment_token": f"tok_{cid}_secret", "amount": Decimal("99.1234"), "currency": "SEK",
                      "status": "succeeded", "processed_at": ts, "updated_at": ts}],
        "balance_transactions": [{"txn_id": cid, "customer_id": cid, "kind": "invoice_credit",
                                  "amount": Decimal("-5.5000"), "currency": "SEK", "invoice_id": cid * 10,
                                  "reference": None, "created_at": ts, "updated_at": ts}],
    }


def _to_mysql(cfg, customers: list[dict]) -> None:
    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as cur:
        cur.execute("INSERT IGNORE INTO plans VALUES (%s,%s,'SEK','Standard',99.1234,2,'HD','2025-01-01')",
                    (PLAN, CC))
        for c in customers:
            for t in schema.CUSTOMER_TABLES:
                rows = [c["customer"]] if t.name == "customers" else c[t.name]
                for r in rows:
                    cur.execute(f"INSERT INTO `{t.name}` ({', '.join(t.column_names)}) VALUES "
                                f"({', '.join(['%s'] * len(t.columns))})", [r[n] for n in t.column_names])
        conn.commit()


def _to_cassandra(session, customers: list[dict], run_id: str = "fixture") -> None:
    """Partitions written with plain CQL (no load.py): what a correct migration must produce."""
    static = list(schema.CUSTOMER_STATIC.items())
    for c in customers:
        cust = c["customer"]
        cid = cust["customer_id"]
        session.execute(
            f"INSERT INTO customer_billing (customer_id, {', '.join(q for _, q in static)}, customer_run_id) "
            f"VALUES (%s, {', '.join(['%s'] * len(static))}, %s)",
            [cid, *(cust[legacy] for legacy, _ in static), run_id])
        session.execute("INSERT INTO customers_by_country (country, bucket, customer_id, run_id) VALUES (%s,%s,%s,%s)",
                        (CC, schema.customer_bucket(cid), cid, run_id))
        for t in schema.ENTITY_TABLES:
            cols = schema.entity_row_columns(t)
            for r in c[t.name]:
                session.execute(
                    f"INSERT INTO customer_billing (customer_id, entity_type, entity_id, {', '.join(cols)}, run_id) "
                    f"VALUES (%s, %s, %s, {', '.join(['%s'] * len(cols))}, %s)",
                    [cid, t.entity, r[t.key], *(r[n] for n in cols), run_id])


@pytest.fixture(scope="module")
def stores(cfg, legacy_db, cassandra_ks):
    with connections.cassandra_session(cfg) as session:
        yield cfg, session


def _seed(stores, base: int, n: int) -> list[dict]:
    cfg, session = stores
    customers = [_customer(base + i, i) for i in range(n)]
    _to_mysql(cfg, customers)
    _to_cassandra(session, customers)
    return customers


def test_clean_range_has_zero_mismatches(stores):
    cfg, _ = stores
    base = 8_000_000
    _seed(stores, base, 5)
    res = compare.compare_range(cfg, CC, base, base + 99, quarantined=set(), group_size=2)
    assert res.mismatches == () and compare.mismatching_customers(res) == []
    assert res.counts["customers_compared"] == 5
    assert res.counts["rows_compared"] == 5 * (1 + 1 + 1 + 2 + 1 + 1)
    per_customer = len(schema.CUSTOMER_STATIC) + sum(
        len(schema.entity_row_columns(t)) * k for t, k in zip(schema.ENTITY_TABLES, (1, 1, 2, 1, 1), strict=True))
    assert res.counts["fields_compared"] == 5 * per_customer


def test_every_corruption_is_reported_with_kind_table_key_field(stores, s3):
    cfg, session = stores
    base = 8_100_000
    _seed(stores, base, 4)
    a, b, c = base, base + 1, base + 2
    session.execute("UPDATE customer_billing SET amount = 99.1235 WHERE customer_id = %s AND entity_type = 'invoice' "
                    "AND entity_id = %s", (a, a * 10))
    session.execute("DELETE FROM customer_billing WHERE customer_id = %s AND entity_type = 'payment' "
                    "AND entity_id = %s", (a, a * 10))
    session.execute("INSERT INTO customer_billing (customer_id, entity_type, entity_id, kind, amount, currency) "
                    "VALUES (%s, 'balance_txn', 424242, 'promo_credit', 1, 'SEK')", (b,))
    session.execute("UPDATE customer_billing SET email = 'kund.changed@example.se' WHERE customer_id = %s", (b,))
    shifted = _customer(c, 2)["subscriptions"][0]["started_at"] + dt.timedelta(milliseconds=1)
    session.execute("UPDATE customer_billing SET started_at = %s WHERE customer_id = %s "
                    "AND entity_type = 'subscription' AND entity_id = %s", (shifted, c, c))
    session.execute("DELETE FROM customer_billing WHERE customer_id = %s AND entity_type = 'invoice' "
                    "AND entity_id = %s", (c, c * 10 + 1))  # quarantined by the transform: not a mismatch
    # source-only customer (never migrated) and target-only customer (not in the source)
    _to_mysql(cfg, [_customer(base + 10, 0)])
    _to_cassandra(session, [_customer(base + 20, 1)])
    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as cur:
        for t in reversed(schema.CUSTOMER_TABLES):
            cur.execute(f"DELETE FROM `{t.name}` WHERE customer_id = %s", (base + 20,))
        conn.commit()

    res = compare.compare_range(cfg, CC, base, base + 99, quarantined={("invoices", c * 10 + 1)})
    found = {(m.kind, m.table, m.key, m.field): m for m in res.mismatches}

    amount = found[("different", "invoices", a * 10, "amount")]
    assert (amount.source_value, amount.target_value, amount.customer_id) == ("99.1234", "99.1235", a)
    assert ("missing", "payments", a * 10, None) in found
    assert ("extra", "balance_transactions", 424242, None) in found
    email = found[("different", "customers", b, "email")]
    assert email.source_value == "k***@example.se" and email.target_value == "k***@example.se"
    assert "kund" not in str(email)  # personal data masked
    ts = found[("different", "subscriptions", c, "started_at")]
    assert ts.source_value.endswith(".014Z") and ts.target_value.endswith(".015Z")
    assert ("quarantined", "invoices", c * 10 + 1, None) in found
    assert ("missing", "customers", base + 10, None) in found
    assert ("missing", "invoices", (base + 10) * 10, None) in found
    assert ("missing", "customers_by_country", base + 10, None) in found
    assert ("extra", "customers", base + 20, None) in found
    assert ("extra", "payments", (base + 20) * 10, None) in found
    assert compare.mismatching_customers(res) == [a, b, c, base + 10, base + 20]
    assert res.counts["quarantined"] == 1 and res.counts["extra_customers"] == 1
    assert {k for k, *_ in found} == {"different", "missing", "extra", "quarantined"}
    clean = base + 3
    assert all(m.customer_id != clean for m in res.mismatches)

    # a round restricted to the bad customers finds the same customers (and nothing about the clean one)
    again = compare.compare_range(cfg, CC, base, base + 99, customer_ids=[b, base + 20, clean])
    assert compare.mismatching_customers(again) == [b, base + 20]
    assert again.counts["customers_compared"] == 2

    key = compare.write_mismatches(cfg, CC, "manual__cmp", 1, res, chunk=3)
    assert key == s3io.run_prefix(cfg, CC, "manual__cmp") + "compare/round=1/part-00003.parquet"
    table = s3io.get_parquet(s3, cfg.s3_bucket, key)
    assert table.num_rows == len(res.mismatches)
    assert not any("kund" in str(v) or "secret" in str(v) for v in table.column("target_value").to_pylist())


def test_pipeline_output_compares_clean(stores, seed_customers):
    """Through the real export -> transform -> load path: the comparator agrees with a correct migration."""
    from billing_migration.country import export, load, transform

    from tests.integration import fixture_data

    cfg, _ = stores
    cc, base, n, run = "KR", fixture_data.BASE + 850_000, 8, "manual__compare_e2e"  # KRW: no minor units
    seed_customers(cc, n, base, n_inv=2)
    chunk = {"chunk": 0, "lo": base, "hi": base + n - 1, "customers": n}
    export.export_plans(cfg, cc, run)
    export.export_chunk(cfg, cc, run, chunk)
    counts = transform.transform_chunk(cfg, cc, run, 0)
    assert counts.get("rejects", 0) == 0
    load.load_chunk(cfg, cc, run, 0)
    res = compare.compare_range(cfg, cc, base, base + n - 1)
    assert res.mismatches == () and res.counts["customers_compared"] == n


def test_bad_arguments_are_refused(cfg):
    with pytest.raises(compare.CompareError, match="empty range"):
        compare.compare_range(cfg, CC, 10, 5)
    with pytest.raises(ValueError, match="ISO"):
        compare.compare_range(cfg, "QQ", 1, 5)


def test_dates_zero_dates_and_foreign_dates_through_the_grouped_path(stores):
    """Dates travel as epoch ms on the fast path: a 1-day shift, a zero date and a foreign date are findings."""
    cfg, session = stores
    base = 8_200_000
    _seed(stores, base, 3)
    a, b, c = base, base + 1, base + 2
    session.execute("UPDATE customer_billing SET period_end = '2025-02-02' WHERE customer_id = %s "
                    "AND entity_type = 'invoice' AND entity_id = %s", (a, a * 10))  # source: 2025-02-01
    session.execute("UPDATE customer_billing SET next_billing_date = '2026-01-01' WHERE customer_id = %s "
                    "AND entity_type = 'invoice' AND entity_id = %s", (b, b * 10))  # a subscription's column
    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute("UPDATE subscriptions SET next_billing_date = '0000-00-00' WHERE subscription_id = %s", (c,))
        conn.commit()
    res = compare.compare_range(cfg, CC, base, base + 99, group_size=2)
    found = {(m.kind, m.table, m.key, m.field): m for m in res.mismatches}
    shifted = found[("different", "invoices", a * 10, "period_end")]
    assert (shifted.source_value, shifted.target_value) == ("2025-02-01", "2025-02-02")
    foreign = found[("different", "invoices", b * 10, "next_billing_date")]
    assert (foreign.source_value, foreign.target_value) == (None, "2026-01-01")
    zero = found[("different", "subscriptions", c, "next_billing_date")]
    assert zero.source_value == "invalid:0000-00-00" and zero.target_value == "2026-01-03"
    assert compare.mismatching_customers(res) == [a, b, c] and res.counts["different"] == 3
    assert res.counts["customers_compared"] == 3
