"""Small hand-written legacy data for the data-path tests (export/transform/load), independent of generator.py.

Countries are ones migration.yaml does not configure (PT, PL, AR, ZA, KR) and ids/plan ids are far above
anything generator.seed produces, so these fixtures never collide with generated data in the same session.

Deterministic: customer ids are `base + i`, every customer has one subscription, one plan change, `n_inv`
monthly invoices each with a payment, and one balance transaction. Tricky-but-valid values are included on
purpose: emoji (non-BMP) names at exactly the column's max length, NULL emails/tokens/references/invoice ids.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from billing_migration.stores import connections, schema

PLANS = {"PT": (9001, "EUR"), "PL": (9002, "PLN"), "AR": (9003, "ARS"), "ZA": (9004, "ZAR"), "KR": (9005, "KRW")}
BASE = 10**9  # customer id offset of every fixture
EMOJI_NAME = "😀" * 255  # 255 characters, 1020 bytes: exactly full_name's max length


def _money(currency: str, value: str) -> Decimal:
    """A valid amount for the currency: 9.99 -> 999 in a currency without minor units."""
    return Decimal(value) if schema.CURRENCY_MINOR_UNITS[currency] else Decimal(value) * 100


def seed(cfg, country: str, n: int, base: int, n_inv: int = 3) -> list[int]:
    """Insert `n` customers of `country` with ids base..base+n-1 (and their rows); returns the ids."""
    plan_id, cur = PLANS[country]
    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as c:
        c.execute("INSERT IGNORE INTO plans VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                  (plan_id, country, cur, f"Standard {country}", _money(cur, "9.99"),
                   2, "HD", dt.datetime(2020, 1, 1)))
        ids = []
        for i in range(n):
            cid = base + i
            ids.append(cid)
            name = EMOJI_NAME if i % 7 == 0 else f"Name {cid} Ünïcødé"
            email = None if i % 5 == 0 else f"user{cid}@example.com"
            signup = dt.datetime(2021, 1, 1, 12, 0, 0, (cid % 1000) * 1000)
            c.execute("INSERT INTO customers VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                      (cid, country, email, name, "active", signup, 1 + cid % 28, signup))
            sid = cid * 10
            c.execute("INSERT INTO subscriptions VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                      (sid, cid, plan_id, "active", signup, None, dt.date(2024, 6, 1), signup))
            c.execute("INSERT INTO plan_changes VALUES (%s,%s,%s,%s,%s,%s,%s)",
                      (sid, cid, sid, plan_id, plan_id, signup, signup))
            for k in range(n_inv):
                iid = cid * 100 + k
                ps = dt.date(2024, 1 + k, 1)
                pe = dt.date(2024, 2 + k, 1)
                amt = _money(cur, "9.99")
                c.execute("INSERT INTO invoices VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                          (iid, cid, sid, ps, pe, amt, Decimal("0.00"), cur, "paid",
                           dt.datetime(2024, 1 + k, 1, 0, 0, 1, 123000), signup))
                c.execute("INSERT INTO payments VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                          (iid, cid, iid, "card", None if k % 2 else "tok_" + "x" * 60, amt, cur,
                           "succeeded", dt.datetime(2024, 1 + k, 1, 0, 5, 0, 999000), signup))
            c.execute("INSERT INTO balance_transactions VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                      (cid, cid, "promo_credit", _money(cur, "-5.00"), cur,
                       None if i % 2 else cid * 100, None, signup, signup))
        conn.commit()
    return ids


def count(cfg, sql: str, params: tuple) -> int:
    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as c:
        c.execute(sql, params)
        return int(c.fetchone()[0])


# ------------------------------------------------------------------------------------------ store state
# Plain functions behind the conftest fixtures (reset_stores, set_routing), also importable by helpers.
def set_routing(cfg, country: str, serving: str, frozen: int, cutover_at: dt.datetime | None = None) -> None:
    """Write a country's routing row as-is (no gate, no event): the state a nightly test starts from."""
    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO country_routing (country, serving_store, writes_frozen, cutover_at) "
                    "VALUES (%s,%s,%s,%s) ON DUPLICATE KEY UPDATE serving_store=VALUES(serving_store), "
                    "writes_frozen=VALUES(writes_frozen), cutover_at=VALUES(cutover_at)",
                    (country, serving, frozen, cutover_at))
        conn.commit()


def reset_stores(cfg) -> None:
    """Empty every legacy table (routing included) and the session's Cassandra tables."""
    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as cur:
        cur.execute("SET FOREIGN_KEY_CHECKS = 0")
        for t in reversed(schema.TABLES):
            cur.execute(f"TRUNCATE TABLE `{t.name}`")
        cur.execute("DELETE FROM country_routing")
        cur.execute("SET FOREIGN_KEY_CHECKS = 1")
        conn.commit()
    with connections.cassandra_session(cfg) as s:
        for table in ("customer_billing", "plans", "customers_by_country"):
            s.execute(f"TRUNCATE {table}", timeout=120)
