"""The application's write path: the one call the legacy billing application makes for every write.

    app ── Write(entity, key, values, op, seq, idempotency key) ──▶ WritePath.submit
             │ routing (country_routing) + hold flag (write_queue_state), read with shared locks
             ├─ legacy, writable, not held   → MySQL (app account)              → APPLIED (legacy)
             ├─ frozen on legacy, or held    → FIFO queue `writes` (group = customer, dedup = key)
             │                                                                   → PENDING (accepted)
             └─ cut over, not held           → Cassandra, then FIFO queue `reverse` → APPLIED (cassandra)

Writes are data, never SQL from the caller: validated against the schema (entity, columns, types, the
operation's required columns) before anything is written or queued, so a bad write is a clear error and never
a poison message. `seq` must grow per customer (gaps allowed): consumers use it to skip duplicates and keep
order. A write to a frozen country is accepted and queued instead of refused; the queue is replayed after the
flip (`app.replay`). The first queued write marks the country as held (same transaction as the send), and it
stays held until a replay has drained the queue: a write accepted after the flip can never overtake one
queued during the freeze. The shared locks make freeze, flip, hold and release wait for writes in flight.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from billing_migration.config import Config, normalize_country
from billing_migration.stores import connections, queues, schema

OPS = ("insert", "update", "delete")
ENTITIES = tuple(t.name for t in schema.CUSTOMER_TABLES)
_IDEM = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
APPLIED, PENDING = "applied", "pending"


class WriteError(ValueError):
    """The write is invalid; nothing was written or queued."""


def _decode(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind in ("bigint", "int", "tinyint"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("an integer")
        return value
    if kind == "decimal":
        return Decimal(str(value))
    if kind == "timestamp":
        return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if kind == "date":
        return value if isinstance(value, date) else date.fromisoformat(str(value))
    if not isinstance(value, str):
        raise TypeError("a string")
    return value


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


@dataclass(frozen=True)
class Write:
    """One row operation of the billing application. `values`: legacy column -> absolute value (insert: every
    required column; update: the changed ones; delete: none). `customer_id`: the customer the row belongs to
    (the key itself for customers)."""

    country: str
    entity: str
    key: int
    customer_id: int
    op: str
    seq: int
    idempotency_key: str
    values: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "country", normalize_country(self.country))
        if self.entity not in ENTITIES:
            raise WriteError(f"entity must be one of {list(ENTITIES)}, got {self.entity!r}")
        if self.op not in OPS:
            raise WriteError(f"op must be one of {list(OPS)}, got {self.op!r}")
        for name in ("key", "customer_id", "seq"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise WriteError(f"{name} must be a positive integer, got {v!r}")
        if self.entity == "customers" and self.key != self.customer_id:
            raise WriteError(f"a customers write has key == customer_id, got {self.key} and {self.customer_id}")
        if not isinstance(self.idempotency_key, str) or not _IDEM.match(self.idempotency_key):
            raise WriteError(f"idempotency_key must be 1-100 characters of [A-Za-z0-9._:-], "
                             f"got {self.idempotency_key!r}")
        object.__setattr__(self, "values", self._checked_values())

    def _checked_values(self) -> dict[str, Any]:
        t = schema.TABLES_BY_NAME[self.entity]
        fixed = {t.key, "customer_id", "country"}
        if not isinstance(self.values, dict):
            raise WriteError("values must be a mapping of column -> value")
        unknown = sorted(set(self.values) - set(t.column_names))
        if unknown or fixed & set(self.values):
            raise WriteError(f"{self.entity}: cannot set {sorted(unknown or fixed & set(self.values))}; settable: "
                             f"{[c for c in t.column_names if c not in fixed]}")
        if self.op == "delete" and self.values:
            raise WriteError("a delete carries no values")
        if self.op == "update" and not self.values:
            raise WriteError("an update needs at least one value")
        out = {}
        for c in t.columns:
            if c.name not in self.values:
                if self.op == "insert" and not c.nullable and c.name not in fixed:
                    raise WriteError(f"{self.entity} insert: {c.name} is required")
                continue
            try:
                out[c.name] = _decode(c.kind, self.values[c.name])
            except (TypeError, ValueError, InvalidOperation) as exc:
                raise WriteError(f"{self.entity}.{c.name} must be a {c.kind} value, got "
                                 f"{type(self.values[c.name]).__name__} ({exc})") from None
            if out[c.name] is None and not c.nullable:
                raise WriteError(f"{self.entity}.{c.name} cannot be null")
        return out

    @property
    def group(self) -> str:
        """The FIFO group: every write of one customer, in order."""
        return f"customer-{self.customer_id}"

    def body(self) -> dict[str, Any]:
        d = asdict(self)
        d["values"] = {k: _encode(v) for k, v in self.values.items()}
        return {"v": 1, **d, "accepted_at_ms": int(time.time() * 1000)}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Write:
        """The write a queued message describes; WriteError (or KeyError/TypeError) if it is not one."""
        if not isinstance(body, dict) or body.get("v") != 1:
            raise WriteError("not a version-1 write message")
        return cls(**{k: body[k] for k in ("country", "entity", "key", "customer_id", "op", "seq",
                                           "idempotency_key", "values")})

    def describe(self) -> str:
        """Key, operation and sequence, no values (reports: no personal data)."""
        return f"{self.entity}/{self.key} (customer {self.customer_id}, seq {self.seq}, {self.op})"


class Outcome(NamedTuple):
    """What the write path answered: applied to a store, or accepted and queued (pending)."""

    status: str  # applied / pending
    store: str  # legacy / cassandra / queue
    message_id: str | None = None


class WritePath:
    """Connections of one application worker (MySQL app account, Cassandra, SQS), opened on first use."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._mysql = None
        self._mysql_cm = None
        self._cassandra_cm = None
        self._session = None

    def __enter__(self) -> WritePath:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for cm in (self._mysql_cm, self._cassandra_cm):
            if cm is not None:
                cm.__exit__(None, None, None)
        self._mysql_cm = self._cassandra_cm = self._mysql = self._session = None

    def mysql(self):
        if self._mysql is None:
            self._mysql_cm = connections.mysql_conn("mysql_app", self.cfg)
            self._mysql = self._mysql_cm.__enter__()
        return self._mysql

    def cassandra(self):
        if self._session is None:
            self._cassandra_cm = connections.cassandra_session(self.cfg)
            self._session = self._cassandra_cm.__enter__()
        return self._session

    def submit(self, w: Write) -> Outcome:
        """Apply or queue one write; raises on a store error (rolled back, nothing acknowledged)."""
        from billing_migration.app import apply

        conn = self.mysql()
        try:
            with conn.cursor() as cur:
                store, frozen = route(cur, w.country)
                if store == "legacy" and frozen:
                    hold(cur, w.country, "app")
                    out = Outcome(PENDING, "queue", self._queue("writes", w))
                elif held(cur, w.country):
                    out = Outcome(PENDING, "queue", self._queue("writes", w))
                elif store == "cassandra":
                    apply.apply_cassandra(self.cassandra(), w)
                    self._queue("reverse", w)
                    out = Outcome(APPLIED, "cassandra")
                else:
                    apply.apply_mysql(cur, w)
                    out = Outcome(APPLIED, "legacy")
            conn.commit()
            return out
        except BaseException:
            conn.rollback()
            raise

    def _queue(self, purpose: str, w: Write) -> str:
        return queues.send(self.cfg, purpose, w.country, w.group, w.idempotency_key, w.body())


def route(cur, country: str) -> tuple[str, bool]:
    """(serving store, legacy frozen) read with a shared lock: a freeze or flip waits for this transaction."""
    cur.execute("SELECT serving_store, writes_frozen FROM country_routing WHERE country = %s LOCK IN SHARE MODE",
                (country,))
    row = cur.fetchone()
    return ("legacy", False) if row is None else (str(row[0]), bool(row[1]))


def held(cur, country: str) -> bool:
    cur.execute("SELECT holding FROM write_queue_state WHERE country = %s LOCK IN SHARE MODE", (country,))
    row = cur.fetchone()
    return bool(row and row[0])


def hold(cur, country: str, by: str) -> None:
    """Mark the country held: its writes go to the queue until a replay drains it and releases the hold."""
    cur.execute("INSERT INTO write_queue_state (country, holding, held_since, held_by) VALUES (%s, 1, NOW(3), %s) "
                "ON DUPLICATE KEY UPDATE held_since = IF(holding = 1, held_since, VALUES(held_since)), "
                "held_by = IF(holding = 1, held_by, VALUES(held_by)), holding = 1", (country, by[:250]))
