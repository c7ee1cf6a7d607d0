"""A stand-in for the legacy billing application: a thread that writes at a steady rate through the
application's write path (`billing_migration.app.writes`), for the online-migration tests, the demo and the
benchmark.

It inserts, updates and deletes rows of the customers table and of every entity table, for the customers of
the given countries, one write at a time, and records what the write path answered: each write acknowledged
(applied to the serving store, or accepted and queued while the country is frozen) with the key, the
operation and the `updated_at` marker it wrote (unique per write, so a test can find exactly that version in
the target), and each refusal or other error with its wall-clock time. It knows the rows it may touch from
one read of the legacy store at start plus its own writes (it never reads a store again, so it works the same
before, during and after a cut-over); deletes cascade in that knowledge as in the stores. Values are absolute
(no `amount = amount + x`). One thread, so its own writes never race each other; new ids start at `id_base`,
above any seeded id; sequence numbers start at the writer's start time in microseconds, so they grow per
customer across writers.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from billing_migration.app import writes as wp
from billing_migration.config import Config
from billing_migration.stores import connections

log = logging.getLogger(__name__)

MARKER_BASE = datetime(2031, 1, 1)  # + n ms: the updated_at of the writer's n-th write (UTC, naive as MySQL)
KEYS = {"customers": "customer_id", "subscriptions": "subscription_id", "plan_changes": "change_id",
        "invoices": "invoice_id", "payments": "payment_id", "balance_transactions": "txn_id"}
PARENT = {"plan_changes": ("subscription_id", "subscriptions"), "invoices": ("subscription_id", "subscriptions"),
          "payments": ("invoice_id", "invoices"), "balance_transactions": ("invoice_id", "invoices")}
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
    seq: int = 0
    status: str = wp.APPLIED  # applied / pending (queued while frozen)
    store: str = "legacy"  # legacy / cassandra / queue


def _now_ms() -> datetime:
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass
class _Known:
    """What the writer may touch: per customer, per table, key -> parent key (None for customers/no parent)."""

    rows: dict[int, dict[str, dict[int, int | None]]] = field(default_factory=dict)

    def add(self, cid: int, table: str, key: int, parent: int | None) -> None:
        self.rows.setdefault(cid, {t: {} for t in KEYS})[table][key] = parent

    def remove(self, cid: int, table: str, key: int) -> None:
        if table == "customers":
            self.rows.pop(cid, None)
            return
        mine = self.rows.get(cid, {})
        mine.get(table, {}).pop(key, None)
        for child, (_, parent) in PARENT.items():
            if parent == table:
                for k in [k for k, p in mine.get(child, {}).items() if p == key]:
                    self.remove(cid, child, k)


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
    latencies: dict[str, list[float]] = field(default_factory=dict)  # status/store -> seconds per write

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._rng = random.Random(self.seed)
        self._n = 0
        self._seq_base = time.time_ns() // 1000
        self._thread = threading.Thread(target=self._run, name="app-writer", daemon=True)
        self._customers: dict[str, list[int]] = {}
        self._own: dict[str, list[int]] = {c: [] for c in self.countries}
        self._plans: dict[str, tuple[int, str]] = {}
        self._known = _Known()

    def __enter__(self) -> AppWriter:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        self._load()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def writes(self, country: str) -> list[Write]:
        return [w for w in self.acked if w.country == country]

    def _run(self) -> None:
        with wp.WritePath(self.cfg) as path:
            period, next_at = 1.0 / self.rate_per_s, time.monotonic()
            while not self._stop.is_set():
                self._one(path)
                next_at += period
                time.sleep(max(0.0, next_at - time.monotonic()))

    def _load(self) -> None:
        with connections.mysql_conn("mysql_app", self.cfg) as conn, conn.cursor() as cur:
            for cc in self.countries:
                cur.execute("SELECT customer_id FROM customers WHERE country = %s", (cc,))
                self._customers[cc] = [int(r[0]) for r in cur.fetchall()]
                for cid in self._customers[cc]:
                    self._known.add(cid, "customers", cid, None)
                for table, key in KEYS.items():
                    if table == "customers":
                        continue
                    pcol = PARENT.get(table, (None,))[0]
                    cur.execute(f"SELECT x.{key}, x.customer_id, {f'x.{pcol}' if pcol else 'NULL'} FROM {table} x "
                                "JOIN customers c USING (customer_id) WHERE c.country = %s", (cc,))
                    for k, cid, parent in cur.fetchall():
                        self._known.add(int(cid), table, int(k), None if parent is None else int(parent))
                cur.execute("SELECT plan_id, currency FROM plans WHERE country = %s ORDER BY plan_id LIMIT 1", (cc,))
                plan_id, currency = cur.fetchone()
                self._plans[cc] = (int(plan_id), currency)
            conn.commit()

    def _one(self, path: wp.WritePath) -> None:
        cc = self._rng.choices(list(self.countries), weights=list(self.countries.values()))[0]
        table, op, _ = self._rng.choices(OPS, weights=[w for *_, w in OPS])[0]
        self._n += 1
        marker = MARKER_BASE + timedelta(milliseconds=self._n)
        w = getattr(self, f"_{op}")(cc, table, marker)
        if w is None:
            return
        t0 = time.monotonic()
        try:
            out = path.submit(w)
        except Exception as exc:  # a store error, a deadlock: rolled back, not acknowledged
            (self.refused if "frozen" in str(exc) else self.errors).append((time.time(), cc, str(exc)))
            return
        self.latencies.setdefault(out.store, []).append(time.monotonic() - t0)
        self._remember(w)
        self.acked.append(Write(time.time(), cc, table, w.key, w.customer_id, op,
                                None if op == "delete" else marker, w.seq, out.status, out.store))

    def _remember(self, w: wp.Write) -> None:
        if w.op == "delete":
            self._known.remove(w.customer_id, w.entity, w.key)
            if w.entity == "customers":
                self._customers[w.country].remove(w.customer_id)
        elif w.op == "insert":
            pcol = PARENT.get(w.entity, (None,))[0]
            self._known.add(w.customer_id, w.entity, w.key, w.values.get(pcol) if pcol else None)
            if w.entity == "customers":
                self._customers[w.country].append(w.customer_id)
                self._own[w.country].append(w.customer_id)

    def _write(self, cc: str, table: str, key: int, cid: int, op: str, values: dict[str, Any]) -> wp.Write:
        seq = self._seq_base + self._n
        return wp.Write(cc, table, key, cid, op, seq, f"aw-{self.seed}-{seq}", values)

    def _pick_row(self, cc: str, table: str) -> tuple[int, int] | None:
        ids = self._customers[cc]
        if not ids:
            return None
        cid = self._rng.choice(ids)
        if table == "customers":
            return cid, cid
        keys = sorted(self._known.rows.get(cid, {}).get(table, {}))
        return (self._rng.choice(keys), cid) if keys else None

    def _update(self, cc: str, table: str, marker: datetime) -> wp.Write | None:
        row = self._pick_row(cc, table)
        if row is None:
            return None
        n = self._n
        extra = {"customers": {"full_name": f"App {n}"}, "invoices": {"amount": Decimal(10 + n % 7)},
                 "payments": {"amount": Decimal(5 + n % 5)},
                 "subscriptions": {"status": ("active", "on_hold")[n % 2]},
                 "plan_changes": {"changed_at": datetime(2030, 1, 1) + timedelta(seconds=n % 3)},
                 "balance_transactions": {"amount": Decimal(-(1 + n % 3))}}[table]
        return self._write(cc, table, row[0], row[1], "update", {"updated_at": marker, **extra})

    def _delete(self, cc: str, table: str, marker: datetime) -> wp.Write | None:
        if table == "customers":  # only customers this writer created: the seeded country stays its size
            own = [c for c in self._own[cc] if c in self._customers[cc]]
            row = (own[0], own[0]) if own else None
        else:
            row = self._pick_row(cc, table)
        return None if row is None else self._write(cc, table, row[0], row[1], "delete", {})

    def _insert(self, cc: str, table: str, marker: datetime) -> wp.Write | None:
        new_id = self.id_base + self._n
        if table == "customers":
            return self._write(cc, table, new_id, new_id, "insert", {
                "email": f"app{new_id}@example.com", "full_name": f"App {new_id}", "status": "active",
                "signup_at": _now_ms(), "billing_day": 1 + new_id % 28, "updated_at": marker})
        ids = self._customers[cc]
        if not ids:
            return None
        cid = self._rng.choice(ids)
        parent = None
        if table in PARENT:
            keys = sorted(self._known.rows.get(cid, {}).get(PARENT[table][1], {}))
            if not keys:
                return None
            parent = self._rng.choice(keys)
        plan_id, currency = self._plans[cc]
        return self._write(cc, table, new_id, cid, "insert",
                           _insert_values(table, parent, plan_id, currency, marker, self._n))


def _insert_values(table: str, parent: int | None, plan_id: int, currency: str, marker: datetime,
                   n: int) -> dict[str, Any]:
    """A valid row (passes the transform's rules) of `table`."""
    day = date(2030, 1, 1) + timedelta(days=n)  # unique invoice period per write: never a duplicate invoice
    now = _now_ms()
    if table == "subscriptions":
        return {"plan_id": plan_id, "status": "active", "started_at": now, "next_billing_date": day,
                "updated_at": marker}
    if table == "plan_changes":
        return {"subscription_id": parent, "from_plan_id": plan_id, "to_plan_id": plan_id, "changed_at": now,
                "updated_at": marker}
    if table == "invoices":
        return {"subscription_id": parent, "period_start": day, "period_end": day + timedelta(days=30),
                "amount": Decimal("10"), "tax": Decimal("2"), "currency": currency, "status": "pending",
                "created_at": now, "updated_at": marker}
    if table == "payments":
        return {"invoice_id": parent, "method": "card", "payment_token": None, "amount": Decimal("4"),
                "currency": currency, "status": "succeeded", "processed_at": now, "updated_at": marker}
    return {"kind": "promo_credit", "amount": Decimal("2"), "currency": currency, "invoice_id": parent,
            "created_at": now, "updated_at": marker}


def summary(writer: AppWriter) -> dict[str, Any]:
    """Counts and the span of freeze refusals (refusals of a cut-over country are counted apart)."""
    frozen = sorted(at for at, _, msg in writer.refused if "served by cassandra" not in msg)

    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")

    def pct(values: list[float], q: float) -> float | None:
        return round(sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000, 2) if values else None

    latency = {store: {"p50_ms": pct(v, 0.5), "p99_ms": pct(v, 0.99), "n": len(v)}
               for store, v in writer.latencies.items()}
    return {"acked": len(writer.acked), "pending": sum(w.status == wp.PENDING for w in writer.acked),
            "latency": latency, "refused_while_frozen": len(frozen),
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
