"""Test data for the nightly DAG tests, written straight into both stores (plain INSERTs and plain CQL that
follow schema.py), so these tests do not depend on the migration modules.

Deterministic: the same (country, n, first_id) always gives the same rows.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from billing_migration import connections, schema

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
                "amount": plan["price"], "tax": (plan["price"] * Decimal("0.1")).quantize(Decimal("0.0001")),
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


def set_routing(cfg, country: str, serving: str, frozen: int, cutover_at: dt.datetime | None = None) -> None:
    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO country_routing (country, serving_store, writes_frozen, cutover_at) "
                    "VALUES (%s,%s,%s,%s) ON DUPLICATE KEY UPDATE serving_store=VALUES(serving_store), "
                    "writes_frozen=VALUES(writes_frozen), cutover_at=VALUES(cutover_at)",
                    (country, serving, frozen, cutover_at))
        conn.commit()


def seed_both(cfg, country: str, n: int, first_id: int) -> dict[str, list[dict[str, Any]]]:
    rows = build(country, n, first_id)
    write_mysql(cfg, rows)
    write_cassandra(cfg, rows)
    return rows
