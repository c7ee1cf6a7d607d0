"""A stand-in for the legacy billing application: a thread that writes at a steady rate through the
application account, for the online-migration tests, the demo and the benchmark.

It inserts, updates and deletes rows of the customers table and of every entity table, for the customers of
the given countries, one short transaction per write, and records what the database told it: each write it
got acknowledged (committed) with the key, the operation and the `updated_at` marker it wrote (unique per
write, so a test can find exactly that version in the target), and each refusal (the write gate's SIGNAL) or
other error with its wall-clock time. Deletes cascade by hand (children first), as the application would.
One thread, so its own writes never race each other; new ids start at `id_base`, above any seeded id.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from billing_migration.config import Config
from billing_migration.stores import connections

log = logging.getLogger(__name__)

MARKER_BASE = datetime(2031, 1, 1)  # + n ms: the updated_at of the writer's n-th write (UTC, naive as MySQL)
_IN_INVOICES = "invoice_id IN (SELECT invoice_id FROM invoices WHERE subscription_id = %s)"
_CHILDREN = {  # table -> statements deleting what references one of its rows, children first
    "customers": [f"DELETE FROM {t} WHERE customer_id = %s" for t in
                  ("balance_transactions", "payments", "plan_changes", "invoices", "subscriptions")],
    "subscriptions": [f"DELETE FROM balance_transactions WHERE {_IN_INVOICES}",
                      f"DELETE FROM payments WHERE {_IN_INVOICES}",
                      "DELETE FROM plan_changes WHERE subscription_id = %s",
                      "DELETE FROM invoices WHERE subscription_id = %s"],
    "invoices": ["DELETE FROM balance_transactions WHERE invoice_id = %s",
                 "DELETE FROM payments WHERE invoice_id = %s"],
}
KEYS = {"customers": "customer_id", "subscriptions": "subscription_id", "plan_changes": "change_id",
        "invoices": "invoice_id", "payments": "payment_id", "balance_transactions": "txn_id"}
# (table, operation, weight): inserts and updates dominate; customer deletes only hit the writer's own customers
OPS = [(t, op, w) for t in KEYS for op, w in (("insert", 3), ("update", 3), ("delete", 1))]


@dataclass(frozen=True)
class Write:
    at: float
    country: str
    table: str
    key: int
    customer_id: int
    op: str  # insert / update / delete
    marker: datetime | None  # updated_at written (None for deletes)


@dataclass
class AppWriter:
    cfg: Config
    countries: dict[str, float]  # country -> share of the writes
    rate_per_s: float = 50.0
    seed: int = 1
    id_base: int = 1_000_000_000
    acked: list[Write] = field(default_factory=list)
    refused: list[tuple[float, str, str]] = field(default_factory=list)  # (time, country, message)
    errors: list[tuple[float, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._rng = random.Random(self.seed)
        self._n = 0
        self._thread = threading.Thread(target=self._run, name="app-writer", daemon=True)
        self._customers: dict[str, list[int]] = {}
        self._own: dict[str, list[int]] = {c: [] for c in self.countries}
        self._plans: dict[str, tuple[int, str]] = {}

    def __enter__(self) -> AppWriter:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def writes(self, country: str) -> list[Write]:
        return [w for w in self.acked if w.country == country]

    def _run(self) -> None:
        with connections.mysql_conn("mysql_app", self.cfg) as conn, conn.cursor() as cur:
            self._load(cur)
            conn.commit()
            period, next_at = 1.0 / self.rate_per_s, time.monotonic()
            while not self._stop.is_set():
                self._one(conn, cur)
                next_at += period
                time.sleep(max(0.0, next_at - time.monotonic()))

    def _load(self, cur) -> None:
        for cc in self.countries:
            cur.execute("SELECT customer_id FROM customers WHERE country = %s", (cc,))
            self._customers[cc] = [int(r[0]) for r in cur.fetchall()]
            cur.execute("SELECT plan_id, currency FROM plans WHERE country = %s ORDER BY plan_id LIMIT 1", (cc,))
            plan_id, currency = cur.fetchone()
            self._plans[cc] = (int(plan_id), currency)

    def _one(self, conn, cur) -> None:
        cc = self._rng.choices(list(self.countries), weights=list(self.countries.values()))[0]
        table, op, _ = self._rng.choices(OPS, weights=[w for *_, w in OPS])[0]
        self._n += 1
        marker = MARKER_BASE + timedelta(milliseconds=self._n)
        try:
            done = getattr(self, f"_{op}")(cur, cc, table, marker)
            conn.commit()
        except Exception as exc:  # the gate's refusal (SIGNAL 45000), a deadlock: rolled back, not acknowledged
            conn.rollback()
            (self.refused if "frozen" in str(exc) else self.errors).append((time.time(), cc, str(exc)))
            return
        if done is not None:
            key, cid = done
            self.acked.append(Write(time.time(), cc, table, key, cid, op, None if op == "delete" else marker))
            if table == "customers" and op == "delete":
                self._customers[cc].remove(cid)

    def _pick_customer(self, cc: str) -> int | None:
        ids = self._customers[cc]
        return self._rng.choice(ids) if ids else None

    def _pick_row(self, cur, cc: str, table: str) -> tuple[int, int] | None:
        cid = self._pick_customer(cc)
        if cid is None:
            return None
        if table == "customers":
            return cid, cid
        cur.execute(f"SELECT {KEYS[table]} FROM {table} WHERE customer_id = %s", (cid,))
        keys = [int(r[0]) for r in cur.fetchall()]
        return (self._rng.choice(keys), cid) if keys else None

    def _update(self, cur, cc: str, table: str, marker: datetime) -> tuple[int, int] | None:
        row = self._pick_row(cur, cc, table)
        if row is None:
            return None
        extra = {"customers": ", full_name = CONCAT('App ', %s)", "invoices": ", amount = amount + 0.01 * (%s %% 7)",
                 "payments": ", amount = amount + 0.01 * (%s %% 5)", "subscriptions": ", status = ELT(1 + %s %% 2, "
                 "'active', 'on_hold')", "plan_changes": ", changed_at = changed_at + INTERVAL (%s %% 3) SECOND",
                 "balance_transactions": ", amount = amount - 0.01 * (%s %% 3)"}[table]
        cur.execute(f"UPDATE {table} SET updated_at = %s{extra} WHERE {KEYS[table]} = %s", (marker, self._n, row[0]))
        return row

    def _delete(self, cur, cc: str, table: str, marker: datetime) -> tuple[int, int] | None:
        if table == "customers":  # only customers this writer created: the seeded country stays its size
            own = [c for c in self._own[cc] if c in self._customers[cc]]
            row = (own[0], own[0]) if own else None
        else:
            row = self._pick_row(cur, cc, table)
        if row is None:
            return None
        for stmt in _CHILDREN.get(table, []):
            cur.execute(stmt, (row[0],))
        cur.execute(f"DELETE FROM {table} WHERE {KEYS[table]} = %s", (row[0],))
        return row

    def _insert(self, cur, cc: str, table: str, marker: datetime) -> tuple[int, int] | None:
        new_id = self.id_base + self._n
        if table == "customers":
            cur.execute("INSERT INTO customers (customer_id, country, email, full_name, status, signup_at, "
                        "billing_day, updated_at) VALUES (%s, %s, %s, %s, 'active', UTC_TIMESTAMP(3), 1 + %s %% 28, "
                        "%s)", (new_id, cc, f"app{new_id}@example.com", f"App {new_id}", new_id, marker))
            self._customers[cc].append(new_id)
            self._own[cc].append(new_id)
            return new_id, new_id
        cid = self._pick_customer(cc)
        if cid is None:
            return None
        parent = self._parent(cur, table, cid)
        if parent is False:
            return None
        plan_id, currency = self._plans[cc]
        sql, args = _insert_sql(table, new_id, cid, parent, plan_id, currency, marker, self._n)
        cur.execute(sql, args)
        return new_id, cid

    def _parent(self, cur, table: str, cid: int) -> int | bool | None:
        """The customer's row the new one must reference (False: the customer has none)."""
        ref = {"plan_changes": "subscriptions", "invoices": "subscriptions", "payments": "invoices"}.get(table)
        if ref is None:
            return None
        cur.execute(f"SELECT {KEYS[ref]} FROM {ref} WHERE customer_id = %s", (cid,))
        keys = [int(r[0]) for r in cur.fetchall()]
        return self._rng.choice(keys) if keys else False


def _insert_sql(table: str, new_id: int, cid: int, parent: int | None, plan_id: int, currency: str,
                marker: datetime, n: int) -> tuple[str, tuple]:
    """A valid row (passes the transform's rules) of `table` for customer `cid`."""
    day = date(2030, 1, 1) + timedelta(days=n)  # unique invoice period per write: never a duplicate invoice
    if table == "subscriptions":
        return ("INSERT INTO subscriptions (subscription_id, customer_id, plan_id, status, started_at, "
                "next_billing_date, updated_at) VALUES (%s, %s, %s, 'active', UTC_TIMESTAMP(3), %s, %s)",
                (new_id, cid, plan_id, day, marker))
    if table == "plan_changes":
        return ("INSERT INTO plan_changes (change_id, customer_id, subscription_id, from_plan_id, to_plan_id, "
                "changed_at, updated_at) VALUES (%s, %s, %s, %s, %s, UTC_TIMESTAMP(3), %s)",
                (new_id, cid, parent, plan_id, plan_id, marker))
    if table == "invoices":
        return ("INSERT INTO invoices (invoice_id, customer_id, subscription_id, period_start, period_end, amount, "
                "tax, currency, status, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, 9.99, 1.50, %s, "
                "'pending', UTC_TIMESTAMP(3), %s)", (new_id, cid, parent, day, day + timedelta(days=30),
                                                    currency, marker))
    if table == "payments":
        return ("INSERT INTO payments (payment_id, customer_id, invoice_id, method, payment_token, amount, currency, "
                "status, processed_at, updated_at) VALUES (%s, %s, %s, 'card', NULL, 4.25, %s, 'succeeded', "
                "UTC_TIMESTAMP(3), %s)", (new_id, cid, parent, currency, marker))
    return ("INSERT INTO balance_transactions (txn_id, customer_id, kind, amount, currency, created_at, updated_at) "
            "VALUES (%s, %s, 'promo_credit', 2.00, %s, UTC_TIMESTAMP(3), %s)", (new_id, cid, currency, marker))


def summary(writer: AppWriter) -> dict[str, Any]:
    """Counts and the span of freeze refusals (refusals of a cut-over country are counted apart)."""
    frozen = sorted(at for at, _, msg in writer.refused if "served by cassandra" not in msg)

    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")

    return {"acked": len(writer.acked), "refused_while_frozen": len(frozen),
            "refused_after_cutover": len(writer.refused) - len(frozen), "other_errors": len(writer.errors),
            "first_refusal": iso(frozen[0]) if frozen else None, "last_refusal": iso(frozen[-1]) if frozen else None,
            "refusal_span_s": round(frozen[-1] - frozen[0], 3) if frozen else 0.0}


def main(argv: list[str]) -> int:
    """`python -m billing_migration.devtools.appwriter COUNTRY WRITES_PER_S STOP_FILE OUT_JSON`: write until
    STOP_FILE exists, then save the summary (benchmarks run it next to a real scheduler)."""
    import json
    from pathlib import Path

    from billing_migration.config import load_config

    country, rate, stop, out = argv[0], float(argv[1]), Path(argv[2]), Path(argv[3])
    with AppWriter(load_config(), {country: 1.0}, rate_per_s=rate) as writer:
        while not stop.exists():
            time.sleep(0.2)
    out.write_text(json.dumps(summary(writer)))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
