"""Independent comparator: the frozen legacy MySQL against the migrated Cassandra partitions, field by field.

Why it is built this way (the Netflix lesson: never check a pipeline with itself):
- It shares NO code with export/transform/load. It re-reads the source with its own SQL (never the export
  files), reads the target partitions itself, and normalises both sides with its own small functions. Only
  the declared model in schema.py (CUSTOMER_STATIC, ENTITY_TABLES, entity_row_columns) is shared: that is
  the specification both sides must meet, not an implementation.
- Normalisation is strict where money and time are concerned: decimals compare numerically as Decimal
  (10.5 == 10.5000, never float), timestamps as integer UTC milliseconds (a 1 ms shift is a difference),
  dates as dates, text exactly (no trimming, no Unicode folding: emoji must survive byte for byte). Source
  DATETIME/DATE values are read as text, so a zero date can never pass for a NULL.
- Every customer is compared whole: the static fields and every entity row, plus "foreign" columns (an
  invoice row must not carry a payment_token). Missing, extra and different rows are reported with table,
  key and field; personal data is masked (pii.mask_field). Rows the transform quarantined (rejects, passed
  in by the caller) are reported as `quarantined`, not as mismatches.
- "Extra" customers: ids in the country's `customers_by_country` index within the range that the source
  does not have (and, for an explicit id list, any partition of those ids the source does not have).
- Bounded memory: customers are processed in groups (GROUP_SIZE); at most two groups are held (the one
  compared, the one being read). Only the range's index ids (ints) and at most MAX_REPORT_ROWS mismatch rows
  are kept.
- Speed (the comparator runs inside the write freeze): a group is compared column by column (diff_group). Each
  side's column is put in a cheap canonical form and the two lists are compared with one C-level `==`; only
  a column that differs somewhere is walked value by value with the reference functions (norm_source,
  norm_target, same, display), so every finding is decided and shown exactly as diff_customer decides it.
  Reads overlap: group k+1 is read from MySQL and Cassandra (concurrently) while group k is compared; target
  partitions are read TARGET_BATCH per `IN` query, static part once per partition, dates as epoch ms
  (figures in BENCHMARKS.md). The per-customer path (diff_customer) stays as the reference and for
  target-only customers.
- Records: the diff functions add into a CompareTally; compare_range returns it frozen as a CompareResult
  (counts, Mismatch rows, the customers to re-migrate), the only thing that leaves this module.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from operator import itemgetter
from types import MappingProxyType
from typing import Any

import pyarrow as pa

from billing_migration import pii
from billing_migration.config import Config, normalize_country
from billing_migration.progress import Progress, interval_of
from billing_migration.stores import connections, s3io, schema

log = logging.getLogger(__name__)

GROUP_SIZE = 500
READ_CONCURRENCY = 8  # in-flight target queries (each TARGET_BATCH partitions)
TARGET_BATCH = 50  # partitions per target query
INDEX_CONCURRENCY = 32  # customers_by_country bucket queries in flight
MAX_REPORT_ROWS = 100_000
KINDS = ("missing", "extra", "different", "quarantined")
MISMATCH_KINDS = ("missing", "extra", "different")
MISMATCH_SCHEMA = pa.schema([
    ("kind", pa.string()), ("table", pa.string()), ("key", pa.int64()), ("customer_id", pa.int64()),
    ("field", pa.string()), ("source_value", pa.string()), ("target_value", pa.string()),
])
_EPOCH = dt.datetime(1970, 1, 1)
_MS = dt.timedelta(milliseconds=1)


class CompareError(RuntimeError):
    """The comparison itself could not run (bad arguments, unreadable store); nothing was concluded."""


# ------------------------------------------------------------------------------------------ normalisation
@dataclass(frozen=True)
class Invalid:
    """A value that cannot be represented in the target type (e.g. a zero date): never equal to anything."""

    raw: str

    def __eq__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return hash(self.raw)


def _ms(d: dt.datetime) -> int:
    if d.tzinfo is not None:
        d = d.astimezone(dt.UTC).replace(tzinfo=None)
    return (d - _EPOCH) // _MS


def norm_source(kind: str, value: Any) -> Any:
    """A MySQL value (DATETIME/DATE selected as text) -> the comparison domain of its kind."""
    if value is None:
        return None
    try:
        if kind == "timestamp":
            return _ms(dt.datetime.fromisoformat(value if isinstance(value, str) else value.isoformat()))
        if kind == "date":
            return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)
        if kind == "decimal":
            return value if isinstance(value, Decimal) else Decimal(str(value))
        if kind in ("bigint", "int", "tinyint"):
            return int(value)
    except (ValueError, TypeError, InvalidOperation):
        return Invalid(str(value))
    if kind == "text":
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    raise CompareError(f"unknown column kind {kind!r}")


def norm_target(kind: str, value: Any) -> Any:
    """A cassandra-driver value -> the comparison domain of its kind."""
    if value is None:
        return None
    try:
        if kind == "timestamp":
            return _ms(value) if isinstance(value, dt.datetime) else int(value)
        if kind == "date":
            if isinstance(value, dt.date):
                return value
            if isinstance(value, int):  # toUnixTimestamp(date): epoch milliseconds of its midnight
                return _EPOCH.date() + dt.timedelta(milliseconds=value)
            return value.date()  # cassandra.util.Date
        if kind == "decimal":
            return value if isinstance(value, Decimal) else Decimal(str(value))
        if kind in ("bigint", "int", "tinyint"):
            return int(value)
    except (ValueError, TypeError, OverflowError, InvalidOperation):
        return Invalid(str(value))
    if kind == "text":
        return str(value)
    raise CompareError(f"unknown column kind {kind!r}")


def same(a: Any, b: Any) -> bool:
    """Equality in the comparison domain: None only equals None; Invalid equals nothing."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, Invalid) or isinstance(b, Invalid):
        return False
    if type(a) is not type(b) and not (isinstance(a, int | Decimal) and isinstance(b, int | Decimal)):
        return False
    return bool(a == b)


def display(kind: str, value: Any) -> str | None:
    """Human-readable value for the report (before masking)."""
    if value is None:
        return None
    if isinstance(value, Invalid):
        return f"invalid:{value.raw}"
    if kind == "timestamp" and isinstance(value, int):
        return (_EPOCH + value * _MS).isoformat(timespec="milliseconds") + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


# ------------------------------------------------------------------------------------------ result
COUNT_KEYS = ("customers_compared", "rows_compared", "fields_compared", "extra_customers",
              "missing_index_entries", *KINDS)


@dataclass(frozen=True)
class Mismatch:
    """One finding: `kind` in KINDS; `field` is None for a whole missing/extra row; values are masked."""

    kind: str
    table: str
    key: int | None
    customer_id: int
    field: str | None = None
    source_value: str | None = None
    target_value: str | None = None


@dataclass(frozen=True)
class CompareResult:
    """What a comparison concluded (frozen): counts by COUNT_KEYS (+ seconds_ms), the reported Mismatch rows
    (at most MAX_REPORT_ROWS; `truncated` more were counted), the customers with a real mismatch."""

    country: str
    lo: int
    hi: int
    counts: Mapping[str, int]
    mismatches: tuple[Mismatch, ...]
    customers_with_mismatch: frozenset[int]
    truncated: int = 0

    @property
    def ok(self) -> bool:
        return not self.customers_with_mismatch

    def summary(self) -> dict[str, Any]:
        return {**self.counts, "mismatching_customers": len(self.customers_with_mismatch),
                "truncated": self.truncated}


@dataclass
class CompareTally:
    """The mutable accumulator the diff functions add into; `result()` freezes it."""

    country: str
    lo: int
    hi: int
    mismatches: list[Mismatch] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    customers_with_mismatch: set[int] = field(default_factory=set)
    truncated: int = 0  # mismatch rows counted but not kept (over MAX_REPORT_ROWS)

    def __post_init__(self) -> None:
        for k in COUNT_KEYS:
            self.counts.setdefault(k, 0)

    @property
    def ok(self) -> bool:
        return not self.customers_with_mismatch

    def add(self, kind: str, table: str, key: int | None, customer_id: int, fld: str | None = None,
            source_value: str | None = None, target_value: str | None = None) -> None:
        self.counts[kind] += 1
        if kind in MISMATCH_KINDS:
            self.customers_with_mismatch.add(customer_id)
        if len(self.mismatches) >= MAX_REPORT_ROWS:
            self.truncated += 1
            return
        self.mismatches.append(Mismatch(
            kind, table, key, customer_id, fld,
            pii.mask_field(fld, source_value) if fld else source_value,
            pii.mask_field(fld, target_value) if fld else target_value))

    def result(self) -> CompareResult:
        return CompareResult(self.country, self.lo, self.hi, MappingProxyType(dict(self.counts)),
                             tuple(self.mismatches), frozenset(self.customers_with_mismatch), self.truncated)


# ------------------------------------------------------------------------------------------ diff (pure)
_ENTITY_COLS = schema.entity_columns()  # every entity column -> CQL type
_KIND_OF = {c.name: c.kind for t in schema.ENTITY_TABLES for c in t.columns}
_ROW_COLS = {t.entity: schema.entity_row_columns(t) for t in schema.ENTITY_TABLES}
_ROW_SETS = {e: frozenset(cols) for e, cols in _ROW_COLS.items()}
_STATIC_KIND = {legacy: schema.CUSTOMERS.column(legacy).kind for legacy in schema.CUSTOMER_STATIC}


@dataclass
class SourceCustomer:
    """One customer as read from MySQL, normalised: static fields and entity rows keyed (type, id)."""

    customer_id: int
    static: dict[str, Any]  # legacy column name -> value
    rows: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)


@dataclass
class TargetPartition:
    customer_id: int
    static: dict[str, Any] | None  # legacy column name -> value; None when the partition has no static part
    rows: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)  # every entity column


def diff_customer(res: CompareTally, src: SourceCustomer | None, tgt: TargetPartition | None,
                  quarantined: set[tuple[str, int]]) -> None:
    """Compare one customer whole and add what differs to `res` (counts included)."""
    cid = (src or tgt).customer_id  # type: ignore[union-attr]
    tgt_rows = tgt.rows if tgt else {}
    if src is None:
        if tgt is None or (tgt.static is None and not tgt.rows):
            return
        res.counts["extra_customers"] += 1
        if tgt.static is not None:
            res.add("extra", "customers", cid, cid)
        for (etype, eid) in sorted(tgt_rows):
            res.add("extra", _table_name(etype), eid, cid)
        res.counts["rows_compared"] += len(tgt_rows) + (tgt.static is not None)
        return
    res.counts["customers_compared"] += 1
    res.counts["rows_compared"] += 1 + len(src.rows)
    cust_quarantined = ("customers", cid) in quarantined
    if tgt is None or tgt.static is None:
        res.add("quarantined" if cust_quarantined else "missing", "customers", cid, cid)
    else:
        for legacy in schema.CUSTOMER_STATIC:
            kind = _STATIC_KIND[legacy]
            a, b = src.static.get(legacy), tgt.static.get(legacy)
            res.counts["fields_compared"] += 1
            if not same(a, b):
                res.add("different", "customers", cid, cid, legacy, display(kind, a), display(kind, b))
    for (etype, eid), srow in sorted(src.rows.items()):
        tname = _table_name(etype)
        trow = tgt_rows.get((etype, eid))
        if trow is None:
            q = cust_quarantined or (tname, eid) in quarantined
            res.add("quarantined" if q else "missing", tname, eid, cid)
            continue
        own = _ROW_COLS[etype]
        res.counts["fields_compared"] += len(own)
        for col in own:
            a, b = srow.get(col), trow.get(col)
            if not same(a, b):
                kind = _KIND_OF[col]
                res.add("different", tname, eid, cid, col, display(kind, a), display(kind, b))
        if len(trow) > len(own):  # columns of other entities must stay empty in this row
            own_set = _ROW_SETS[etype]
            for col, value in trow.items():
                if col not in own_set and value is not None:
                    res.add("different", tname, eid, cid, col, None, display(_KIND_OF[col], value))
    for (etype, eid) in sorted(set(tgt_rows) - set(src.rows)):
        res.counts["rows_compared"] += 1
        res.add("extra", _table_name(etype), eid, cid)


def _table_name(entity_type: str | None) -> str:
    t = schema.TABLE_BY_ENTITY.get(entity_type or "")
    return t.name if t else f"entity_type={entity_type}"


# ------------------------------------------------------------------------------------------ source (MySQL)
_CUST_ID = schema.CUSTOMERS.column_names.index("customer_id")


def _select_list(t: schema.Table) -> str:
    out = []
    for c in t.columns:
        if c.kind in ("timestamp", "date"):
            out.append(f"CAST(`{c.name}` AS CHAR) AS `{c.name}`")  # zero dates stay visible as text
        else:
            out.append(f"`{c.name}`")
    return ", ".join(out)


@dataclass
class SourceRaw:
    """One group as MySQL returned it: customers rows and each entity table's rows (SELECT order), both
    ordered by customer_id then key. Raw on purpose: the group diff compares whole columns at once."""

    customers: list[tuple] = field(default_factory=list)
    tables: dict[str, list[tuple]] = field(default_factory=dict)  # entity table name -> rows


def _read_source(cur, country: str, ids: list[int]) -> SourceRaw:
    """Customers `ids` of `country` with every entity row: one query per table for the whole group."""
    raw = SourceRaw()
    if not ids:
        return raw
    marks = ", ".join(["%s"] * len(ids))
    cur.execute(f"SELECT {_select_list(schema.CUSTOMERS)} FROM customers "
                f"WHERE country = %s AND customer_id IN ({marks}) ORDER BY customer_id", (country, *ids))
    raw.customers = list(cur.fetchall())
    if not raw.customers:
        return raw
    found = [int(r[_CUST_ID]) for r in raw.customers]
    marks = ", ".join(["%s"] * len(found))
    for t in schema.ENTITY_TABLES:
        cur.execute(f"SELECT {_select_list(t)} FROM `{t.name}` WHERE customer_id IN ({marks}) "
                    f"ORDER BY customer_id, `{t.key}`", found)
        raw.tables[t.name] = list(cur.fetchall())
    return raw


def _source_customers(raw: SourceRaw) -> dict[int, SourceCustomer]:
    """Per-customer normalised view of a raw group (the reference path: extras, tests)."""
    cust_cols = schema.CUSTOMERS.column_names
    out: dict[int, SourceCustomer] = {}
    for row in raw.customers:
        d = dict(zip(cust_cols, row, strict=True))
        static = {legacy: norm_source(_STATIC_KIND[legacy], d[legacy]) for legacy in schema.CUSTOMER_STATIC}
        cid = int(d["customer_id"])
        out[cid] = SourceCustomer(cid, static)
    for t in schema.ENTITY_TABLES:
        names = t.column_names
        kinds = [c.kind for c in t.columns]
        for row in raw.tables.get(t.name, ()):
            d = {n: norm_source(k, v) for n, k, v in zip(names, kinds, row, strict=True)}
            out[d["customer_id"]].rows[(t.entity, d[t.key])] = d
    return out


def _source_group(cur, country: str, ids: list[int]) -> dict[int, SourceCustomer]:
    """Customers `ids` of `country` with every entity row, normalised per customer."""
    return _source_customers(_read_source(cur, country, ids))


def _source_id_groups(cur, country: str, lo: int, hi: int, customer_ids: list[int] | None,
                      size: int) -> Iterator[list[int]]:
    """Customer ids of the range in groups (keyset pages), or the given ids in groups."""
    if customer_ids is not None:
        ids = sorted({int(c) for c in customer_ids})
        for i in range(0, len(ids), size):
            yield ids[i:i + size]
        return
    last = lo - 1
    while True:
        cur.execute("SELECT customer_id FROM customers WHERE country = %s AND customer_id > %s AND customer_id <= %s "
                    "ORDER BY customer_id LIMIT %s", (country, last, hi, size))
        ids = [int(r[0]) for r in cur.fetchall()]
        if not ids:
            return
        yield ids
        last = ids[-1]


# ------------------------------------------------------------------------------------------ target (Cassandra)
_STATIC_CQL = schema.CUSTOMER_STATIC  # legacy -> cassandra name


_TARGET_COLS = ["customer_id", "entity_type", "entity_id", *_STATIC_CQL.values(), "customer_run_id", *_ENTITY_COLS]
_POS = {c: i for i, c in enumerate(_TARGET_COLS)}
_STATIC_POS = [(legacy, _POS[cql], _STATIC_KIND[legacy]) for legacy, cql in _STATIC_CQL.items()]
# Per entity: its own columns (normalised) and the others (only kept when not null: a finding).
_OWN_POS = {e: [(c, _POS[c], _KIND_OF[c]) for c in cols] for e, cols in _ROW_COLS.items()}
_FOREIGN_POS = {e: [(c, _POS[c], _KIND_OF[c]) for c in _ENTITY_COLS if c not in cols] for e, cols in _ROW_COLS.items()}


def _target_select() -> str:
    return f"SELECT {', '.join(_TARGET_COLS)} FROM customer_billing WHERE customer_id IN ?"


def _partition(cid: int, rows: Iterable[tuple]) -> TargetPartition | None:
    """Rows of one partition (tuples in _TARGET_COLS order) -> static part + entity rows, normalised."""
    static: dict[str, Any] | None = None
    out: dict[tuple[str, int], dict[str, Any]] = {}
    seen = False
    run_pos = _POS["customer_run_id"]
    for r in rows:
        if not seen:
            seen = True
            if r[run_pos] is not None or any(r[pos] is not None for _, pos, _ in _STATIC_POS):
                static = {legacy: norm_target(kind, r[pos]) for legacy, pos, kind in _STATIC_POS}
        etype = r[1]
        if etype is None:
            continue
        own = _OWN_POS.get(etype)
        if own is None:  # an entity type the model does not know: every non-null column is kept
            out[(etype, int(r[2]))] = {c: norm_target(_KIND_OF[c], r[_POS[c]]) for c in _ENTITY_COLS
                                      if r[_POS[c]] is not None}
            continue
        row = {c: norm_target(kind, r[pos]) for c, pos, kind in own}
        for c, pos, kind in _FOREIGN_POS[etype]:
            if r[pos] is not None:
                row[c] = norm_target(kind, r[pos])
        out[(etype, int(r[2]))] = row
    if not seen:
        return None
    return TargetPartition(cid, static, out)


def _read_target(session, prepared, ids: list[int]) -> dict[int, list[tuple]]:
    """Raw rows (tuples in _TARGET_COLS order, clustering order) of each partition of `ids` that exists.

    Partitions are read TARGET_BATCH at a time with `customer_id IN ?` (READ_CONCURRENCY queries in
    flight): one request per partition costs more in request overhead on both ends than the rows
    themselves (BENCHMARKS.md)."""
    out: dict[int, list[tuple]] = {}
    if not ids:
        return out
    stmts = [(prepared, (ids[i:i + TARGET_BATCH],)) for i in range(0, len(ids), TARGET_BATCH)]
    for rows in connections.execute_all(session, stmts, READ_CONCURRENCY):
        _add_rows(out, rows)
    return out


def _add_rows(into: dict[int, list[tuple]], rs) -> None:
    """Group result rows by partition key (column 0); a partition's rows arrive together, in clustering order."""
    for r in rs:
        part = into.get(r[0])
        if part is None:
            into[r[0]] = [r]
        else:
            part.append(r)


def _target_group(session, prepared, ids: list[int]) -> dict[int, TargetPartition]:
    out: dict[int, TargetPartition] = {}
    for cid, rows in _read_target(session, prepared, ids).items():
        part = _partition(cid, rows)
        if part is not None:
            out[cid] = part
    return out


# The fast path reads the static part once per partition (PER PARTITION LIMIT 1) and the entity rows without
# the static columns: Cassandra repeats static values on every row, and deserialising 7 of them (2 timestamps)
# per row cost more than the row's own columns. Entity dates are selected as toUnixTimestamp (epoch ms).
_FAST_STATIC_COLS = ["customer_id", *_STATIC_CQL.values(), "customer_run_id"]
_FAST_ROW_COLS = ["customer_id", "entity_type", "entity_id", *_ENTITY_COLS]
_FS = {c: i for i, c in enumerate(_FAST_STATIC_COLS)}
_FR = {c: i for i, c in enumerate(_FAST_ROW_COLS)}


@dataclass
class TargetRaw:
    """One group as Cassandra returned it: each partition's static tuple (_FAST_STATIC_COLS order) and its
    entity rows (_FAST_ROW_COLS order, clustering order)."""

    static: dict[int, tuple] = field(default_factory=dict)
    rows: dict[int, list[tuple]] = field(default_factory=dict)


def _fast_selects() -> tuple[str, str]:
    return (f"SELECT {', '.join(_FAST_STATIC_COLS)} FROM customer_billing WHERE customer_id IN ? "
            "PER PARTITION LIMIT 1",
            f"SELECT {', '.join(_row_selector(c) for c in _FAST_ROW_COLS)} FROM customer_billing "
            "WHERE customer_id IN ?")


def _row_selector(col: str) -> str:
    # dates as epoch ms (a bigint): the driver's Date objects cost as much as the rest of the row together
    return f"toUnixTimestamp({col})" if _KIND_OF.get(col) == "date" else col


def _read_target_fast(session, static_stmt, rows_stmt, ids: list[int]) -> TargetRaw:
    """Static parts and entity rows of the partitions of `ids`, TARGET_BATCH partitions per query
    (READ_CONCURRENCY queries in flight): one request per partition costs more in request overhead on both
    ends than the rows themselves (BENCHMARKS.md)."""
    raw = TargetRaw()
    if not ids:
        return raw
    batches = [ids[i:i + TARGET_BATCH] for i in range(0, len(ids), TARGET_BATCH)]
    stmts = [(static_stmt, (b,)) for b in batches] + [(rows_stmt, (b,)) for b in batches]
    n = len(batches)
    for i, rs in enumerate(connections.execute_all(session, stmts, READ_CONCURRENCY)):
        if i < n:
            for r in rs:
                raw.static[r[0]] = r
            continue
        _add_rows(raw.rows, rs)
    return raw


# ------------------------------------------------------------------------------------------ group diff (pure)
# Why column-wise: a whole column of a group is normalised to a cheap canonical form on each side and the two
# lists are compared in one C-level `==`. Only a column that is not equal as a whole is walked value by value
# with the reference functions (norm_source / norm_target / same / display), so a finding is decided and
# displayed exactly as diff_customer decides it. The canonical forms are chosen so that "equal" implies
# `same()` for every value: datetimes (ms precision on both sides) for timestamps, days since the epoch for
# dates, and the driver values themselves for text, integers and Decimals (numeric ==, never float).
_EPOCH_ORD = dt.date(1970, 1, 1).toordinal()
_DAY_MS = 86_400_000
_TKEY = itemgetter(0, 2)
_FAST_ERRORS = (ValueError, TypeError, AttributeError, OverflowError)
_CUST_POS = {n: i for i, n in enumerate(schema.CUSTOMERS.column_names)}
_SRC_POS = {t.entity: {n: i for i, n in enumerate(t.column_names)} for t in schema.ENTITY_TABLES}
_STATIC_TPOS = [_FS[cql] for cql in _STATIC_CQL.values()]
_OWN_GET = {e: itemgetter(*(_FR[c] for c in cols), _FR["entity_id"])  # a tuple even for one own column
            for e, cols in _ROW_COLS.items()}
_FOREIGN_GET = {e: itemgetter(*(_FR[c] for c in _ENTITY_COLS if c not in cols), _FR["entity_type"])
                for e, cols in _ROW_COLS.items()}  # entity_type: a tuple even for one foreign column
_FOREIGN_NONE = {e: (*(None for c in _ENTITY_COLS if c not in cols), e) for e, cols in _ROW_COLS.items()}
_FAST_FOREIGN = {e: [(c, _FR[c], _KIND_OF[c]) for c in _ENTITY_COLS if c not in cols] for e, cols in _ROW_COLS.items()}
Finding = tuple[tuple[int, int, str, int, int], str, str, int, int, str | None, str | None, str | None]


def _fast_source(kind: str, col: tuple) -> list:
    if kind == "timestamp":
        f = dt.datetime.fromisoformat
        return [None if v is None else f(v) for v in col]
    if kind == "date":
        g = dt.date.fromisoformat
        return [None if v is None else g(v).toordinal() - _EPOCH_ORD for v in col]
    return list(col)


def _fast_target(kind: str, col: tuple) -> list:
    if kind == "date":
        return [None if v is None else v // _DAY_MS for v in col]  # toUnixTimestamp(date) -> days
    return list(col)


def _diff_column(out: list[Finding], kind: str, name: str, table: str, sect: int, etype: str, pos: int,
                 cids: list[int], keys: list[int], scol: tuple, tcol: tuple) -> None:
    """Append a `different` finding for each value of the aligned columns that is not `same`."""
    try:
        if _fast_source(kind, scol) == _fast_target(kind, tcol):
            return
    except _FAST_ERRORS:
        pass  # a value the fast form cannot hold (zero date, unexpected type): the reference path decides
    for cid, key, a, b in zip(cids, keys, scol, tcol, strict=True):
        na, nb = norm_source(kind, a), norm_target(kind, b)
        if not same(na, nb):
            out.append(((cid, sect, etype, key, pos), "different", table, key, cid, name,
                        display(kind, na), display(kind, nb)))


def _has_static(r: tuple) -> bool:
    return r[_FS["customer_run_id"]] is not None or any(r[p] is not None for p in _STATIC_TPOS)


def diff_group(res: CompareTally, src: SourceRaw, tgt: TargetRaw, index: set[int] | None,
               quarantined: set[tuple[str, int]]) -> set[int]:
    """Compare a group of source customers whole, column-wise; same findings and counts as diff_customer
    per customer (plus the customers_by_country check when `index` is given). Target partitions of ids the
    source lacks are ignored here (the caller reports them as extras). Returns the source customer ids."""
    findings: list[Finding] = []
    cids = [int(r[_CUST_ID]) for r in src.customers]
    res.counts["customers_compared"] += len(cids)
    res.counts["rows_compared"] += len(cids) + sum(len(v) for v in src.tables.values())
    cust_q = {cid for cid in cids if ("customers", cid) in quarantined}
    t_static, t_rows = _target_by_entity(tgt, cids)
    _diff_static(res, findings, src.customers, t_static, cust_q)
    for t in schema.ENTITY_TABLES:
        _diff_entity_table(res, findings, t, src.tables.get(t.name, []), t_rows.pop(t.entity, []), cust_q,
                           quarantined)
    for e, rows in t_rows.items():  # entity types the model does not know
        for r in rows:
            res.counts["rows_compared"] += 1
            findings.append(((int(r[0]), 2, e, int(r[2]), 0), "extra", _table_name(e), int(r[2]), int(r[0]),
                             None, None, None))
    if index is not None:
        _diff_index(res, findings, cids, index, quarantined)
    findings.sort(key=lambda f: f[0])
    for _, kind, table, key, cid, fld, a, b in findings:
        res.add(kind, table, key, cid, fld, a, b)
    return set(cids)


def _target_by_entity(tgt: TargetRaw, cids: list[int]) -> tuple[dict[int, tuple], dict[str, list[tuple]]]:
    """The group's target partitions that have a static part, and their entity rows by entity type."""
    t_static: dict[int, tuple] = {}
    t_rows: dict[str, list[tuple]] = {}
    for cid in cids:
        st = tgt.static.get(cid)
        if st is not None and _has_static(st):
            t_static[cid] = st
        rows = tgt.rows.get(cid)
        if rows:
            for r in rows:
                if r[1] is not None:
                    t_rows.setdefault(r[1], []).append(r)
    return t_static, t_rows


def _diff_static(res: CompareTally, out: list[Finding], customers: list[tuple], t_static: dict[int, tuple],
                 cust_q: set[int]) -> None:
    """Customers rows against the partitions' static parts: missing (or quarantined) partitions, then each
    static field column-wise."""
    both = []
    for r in customers:
        cid = int(r[_CUST_ID])
        if cid in t_static:
            both.append(r)
        else:
            out.append(((cid, 0, "", cid, -1), "quarantined" if cid in cust_q else "missing", "customers",
                        cid, cid, None, None, None))
    if not both:
        return
    bc = [int(r[_CUST_ID]) for r in both]
    res.counts["fields_compared"] += len(both) * len(_STATIC_POS)
    scols = list(zip(*both, strict=True))
    tcols = list(zip(*(t_static[c] for c in bc), strict=True))
    for i, (legacy, cql) in enumerate(_STATIC_CQL.items()):
        _diff_column(out, _STATIC_KIND[legacy], legacy, "customers", 0, "", i, bc, bc,
                     scols[_CUST_POS[legacy]], tcols[_FS[cql]])


def _diff_entity_table(res: CompareTally, out: list[Finding], t: schema.Table, srows: list[tuple],
                       trows: list[tuple], cust_q: set[int], quarantined: set[tuple[str, int]]) -> None:
    """One entity table of the group, aligned on (customer_id, entity_id): own columns column-wise, then
    the other entities' columns, which must be empty in these rows."""
    e = t.entity
    spos = _SRC_POS[e]
    skeys = list(map(itemgetter(spos["customer_id"], spos[t.key]), srows))
    tkeys = list(map(_TKEY, trows))
    if skeys != tkeys:
        srows, trows, skeys = _align_rows(res, out, t, srows, trows, skeys, tkeys, cust_q, quarantined)
    if not srows:
        return
    own = _ROW_COLS[e]
    res.counts["fields_compared"] += len(srows) * len(own)
    scols = list(zip(*srows, strict=True))
    tcols = list(zip(*map(_OWN_GET[e], trows), strict=True))  # this entity's own columns (+ entity_id)
    mc = [k[0] for k in skeys]
    me = [k[1] for k in skeys]
    for i, col in enumerate(own):
        _diff_column(out, _KIND_OF[col], col, t.name, 1, e, i, mc, me, scols[spos[col]], tcols[i])
    _diff_foreign(out, t, trows, mc, me, len(own))


def _align_rows(res: CompareTally, out: list[Finding], t: schema.Table, srows: list[tuple], trows: list[tuple],
                skeys: list, tkeys: list, cust_q: set[int], quarantined: set[tuple[str, int]]
                ) -> tuple[list[tuple], list[tuple], list]:
    """Rows on one side only become missing (or quarantined) / extra findings; returns the matched rows of
    both sides and their keys, in source order."""
    e = t.entity
    tmap = dict(zip(tkeys, trows, strict=True))
    sset = set(skeys)
    s_m, t_m, k_m = [], [], []
    for k, r in zip(skeys, srows, strict=True):
        tr = tmap.get(k)
        if tr is None:
            cid, eid = k
            q = cid in cust_q or (t.name, eid) in quarantined
            out.append(((cid, 1, e, eid, -1), "quarantined" if q else "missing", t.name, eid, cid,
                        None, None, None))
        else:
            s_m.append(r)
            t_m.append(tr)
            k_m.append(k)
    for cid, eid in tkeys:
        if (cid, eid) not in sset:
            res.counts["rows_compared"] += 1
            out.append(((cid, 2, e, eid, 0), "extra", t.name, eid, cid, None, None, None))
    return s_m, t_m, k_m


def _diff_foreign(out: list[Finding], t: schema.Table, trows: list[tuple], mc: list[int], me: list[int],
                  first_pos: int) -> None:
    """Columns of other entities must stay empty in these rows: one C-level pass (tuple equality with an
    all-None tuple short-cuts on identity; `count(None)` would call Decimal.__eq__ on every value)."""
    e = t.entity
    if list(map(_FOREIGN_GET[e], trows)).count(_FOREIGN_NONE[e]) == len(trows):
        return
    for j, (col, pos, kind) in enumerate(_FAST_FOREIGN[e], start=first_pos):
        for cid, eid, r in zip(mc, me, trows, strict=True):
            if r[pos] is not None:
                out.append(((cid, 1, e, eid, j), "different", t.name, eid, cid, col, None,
                            display(kind, norm_target(kind, r[pos]))))


def _diff_index(res: CompareTally, out: list[Finding], cids: list[int], index: set[int],
                quarantined: set[tuple[str, int]]) -> None:
    """Every compared customer must be in the country's customers_by_country index (unless quarantined)."""
    for cid in cids:
        if cid not in index and ("customers", cid) not in quarantined:
            res.counts["missing_index_entries"] += 1
            out.append(((cid, 3, "", cid, 0), "missing", "customers_by_country", cid, cid, None, None, None))


def _index_query(session, where: str, args: list[tuple]) -> set[int]:
    """customer_id of the customers_by_country rows matching `where`, one concurrent query per args tuple."""
    stmt = session.prepare(f"SELECT customer_id FROM customers_by_country WHERE country = ? AND bucket = ? {where}")
    ids: set[int] = set()
    for rows in connections.execute_all(session, [(stmt, a) for a in args], INDEX_CONCURRENCY):
        ids.update(int(r[0]) for r in rows)
    return ids


def _index_ids(session, country: str, lo: int, hi: int) -> set[int]:
    """Customer ids of the country's customers_by_country index within [lo, hi] (all buckets)."""
    return _index_query(session, "AND customer_id >= ? AND customer_id <= ?",
                        [(country, b, lo, hi) for b in range(schema.CUSTOMERS_BY_COUNTRY_BUCKETS)])


def _index_entries(session, country: str, ids: set[int]) -> set[int]:
    """Those of `ids` that have an entry in the country's customers_by_country index (point lookups)."""
    return _index_query(session, "AND customer_id = ?",
                        [(country, schema.customer_bucket(c), c) for c in sorted(ids)])


# ------------------------------------------------------------------------------------------ public API
def compare_range(cfg: Config, country: str, lo: int, hi: int, *, customer_ids: list[int] | None = None,
                  quarantined: set[tuple[str, int]] | None = None, group_size: int = GROUP_SIZE) -> CompareResult:
    """Compare the country's customers with lo <= customer_id <= hi (or only `customer_ids`), field by field.

    `quarantined`: (table, key) of records the transform rejected; when absent from the target they are
    reported as kind `quarantined` (counted, not a mismatch). A quarantined customer quarantines its rows.
    """
    country = normalize_country(country)
    _check_args(lo, hi, group_size)
    quarantined = quarantined or set()
    res = CompareTally(country, lo, hi)
    t0 = time.monotonic()
    with connections.cassandra_session(cfg) as session, connections.mysql_conn("mysql_export", cfg) as conn:
        from cassandra.query import tuple_factory

        session.row_factory = tuple_factory
        wanted = None if customer_ids is None else {int(c) for c in customer_ids}
        # Given ids: point lookups, so comparing a few customers costs the same in any size of country.
        index = (_index_ids(session, country, lo, hi) if wanted is None
                 else _index_entries(session, country, {c for c in wanted if lo <= c <= hi}))
        groups = _GroupReader(session, conn, country)
        prog = Progress(f"compare {country} [{lo}, {hi}]", interval=interval_of(cfg),
                        customers_total=len(wanted) if wanted is not None else max(len(index), 1))
        with connections.cyclic_gc_paused():  # every request is released (execute_all): no cycle piles up
            seen = groups.compare_all(res, lo, hi, customer_ids, group_size, index, quarantined, prog)
        # Target-only customers: in the index (or asked for explicitly) but not in the source.
        _diff_extras(res, session, sorted((index | (wanted or set())) - seen), index, quarantined, group_size)
    res.counts["seconds_ms"] = int((time.monotonic() - t0) * 1000)
    prog.rows, prog.customers = res.counts["rows_compared"], res.counts["customers_compared"]
    prog.finish()
    out = res.result()
    log.info("compare %s [%d, %d]: %s", country, lo, hi, out.summary())
    return out


def _check_args(lo: int, hi: int, group_size: int) -> None:
    for name, v in (("lo", lo), ("hi", hi)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise CompareError(f"{name} must be a non-negative integer, got {v!r}")
    if hi < lo:
        raise CompareError(f"empty range: hi ({hi}) < lo ({lo})")
    if not 1 <= group_size <= 5000:
        raise CompareError(f"group_size must be in [1, 5000], got {group_size}")


class _GroupReader:
    """Reads group k+1 from MySQL and Cassandra (concurrently) while group k is compared. MySQL is read in
    one consistent-snapshot, read-only transaction on the reader thread only (never shared)."""

    def __init__(self, session, conn, country: str) -> None:
        self.session, self.conn, self.country = session, conn, country
        self.static_stmt, self.rows_stmt = (session.prepare(q) for q in _fast_selects())

    def compare_all(self, res: CompareTally, lo: int, hi: int, customer_ids: list[int] | None, group_size: int,
                    index: set[int], quarantined: set[tuple[str, int]], prog: Progress | None = None) -> set[int]:
        """diff_group over every group of the range; returns the source customer ids seen."""
        seen: set[int] = set()
        with ThreadPoolExecutor(1, thread_name_prefix="compare-read") as reader, \
                ThreadPoolExecutor(1, thread_name_prefix="compare-target") as target_pool, \
                self.conn.cursor() as cur:
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            id_cur = self.conn.cursor()
            groups = _source_id_groups(id_cur, self.country, lo, hi, customer_ids, group_size)

            def read_next() -> tuple[SourceRaw, TargetRaw] | None:
                ids = next(groups, None)
                if ids is None:
                    return None
                fut = target_pool.submit(_read_target_fast, self.session, self.static_stmt, self.rows_stmt, ids)
                src = _read_source(cur, self.country, ids)
                return src, fut.result()

            pending = None
            try:
                pending = reader.submit(read_next)
                while (got := pending.result()) is not None:
                    pending = reader.submit(read_next)
                    seen |= diff_group(res, got[0], got[1], index, quarantined)
                    if prog is not None:
                        prog.update(res.counts["rows_compared"] - prog.rows,
                                    res.counts["customers_compared"] - prog.customers)
            finally:
                if pending is not None:
                    pending.cancel()
                    with contextlib.suppress(Exception):
                        pending.result()  # the reader is done with the connection before it is rolled back
                id_cur.close()
                self.conn.rollback()
        return seen


def _diff_extras(res: CompareTally, session, extra: list[int], index: set[int],
                 quarantined: set[tuple[str, int]], group_size: int) -> None:
    """Customers the source lacks: their partitions are extra; an index entry pointing at nothing is too."""
    if not extra:
        return
    prepared = session.prepare(_target_select())
    for i in range(0, len(extra), group_size):
        ids = extra[i:i + group_size]
        tgt = _target_group(session, prepared, ids)
        for cid in ids:
            if cid in tgt:
                diff_customer(res, None, tgt[cid], quarantined)
            elif cid in index:
                res.add("extra", "customers_by_country", cid, cid)


def mismatching_customers(result: CompareResult | CompareTally) -> list[int]:
    """Customers with a missing/extra/different finding: re-migrate each whole (quarantined ones excluded)."""
    return sorted(result.customers_with_mismatch)


def mismatches_table(result: CompareResult | CompareTally) -> pa.Table:
    cols = {f.name: [getattr(m, f.name) for m in result.mismatches] for f in MISMATCH_SCHEMA}
    return pa.table(cols, schema=MISMATCH_SCHEMA)


def mismatch_key(cfg: Config, country: str, run_id: str, round_no: int, chunk: int | None = None) -> str:
    name = "mismatches" if chunk is None else s3io.part_name(chunk)
    return f"{s3io.run_prefix(cfg, country, run_id)}compare/round={round_no}/{name}.parquet"


def write_mismatches(cfg: Config, country: str, run_id: str, round_no: int, result: CompareResult | CompareTally,
                     chunk: int | None = None) -> str:
    """Write the (masked) mismatch rows as Parquet; returns the S3 key. `chunk` keeps chunks apart."""
    country = normalize_country(country)
    if isinstance(round_no, bool) or not isinstance(round_no, int) or round_no < 0:
        raise CompareError(f"round_no must be a non-negative integer, got {round_no!r}")
    key = mismatch_key(cfg, country, run_id, round_no, chunk)
    s3io.put_parquet(s3io.client(cfg), cfg.s3_bucket, key, mismatches_table(result))
    return key
