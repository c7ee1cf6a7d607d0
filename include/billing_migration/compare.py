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
- Bounded memory: customers are processed in groups (GROUP_SIZE); target partitions are read with one
  token-aware single-partition query each, GROUP_SIZE at a time with bounded concurrency. Only the range's
  index ids (ints) and at most MAX_REPORT_ROWS mismatch rows are kept.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import pyarrow as pa

from billing_migration import connections, pii, s3io, schema
from billing_migration.config import Config, normalize_country

log = logging.getLogger(__name__)

GROUP_SIZE = 500
READ_CONCURRENCY = 64
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
@dataclass
class CompareResult:
    country: str
    lo: int
    hi: int
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    customers_with_mismatch: set[int] = field(default_factory=set)
    truncated: int = 0  # mismatch rows counted but not kept (over MAX_REPORT_ROWS)

    def __post_init__(self) -> None:
        for k in ("customers_compared", "rows_compared", "fields_compared", "extra_customers",
                  "missing_index_entries", *KINDS):
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
        self.mismatches.append({
            "kind": kind, "table": table, "key": key, "customer_id": customer_id, "field": fld,
            "source_value": pii.mask_field(fld, source_value) if fld else source_value,
            "target_value": pii.mask_field(fld, target_value) if fld else target_value,
        })

    def summary(self) -> dict[str, Any]:
        return {**self.counts, "mismatching_customers": len(self.customers_with_mismatch),
                "truncated": self.truncated}


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


def diff_customer(res: CompareResult, src: SourceCustomer | None, tgt: TargetPartition | None,
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
def _select_list(t: schema.Table) -> str:
    out = []
    for c in t.columns:
        if c.kind in ("timestamp", "date"):
            out.append(f"CAST(`{c.name}` AS CHAR) AS `{c.name}`")  # zero dates stay visible as text
        else:
            out.append(f"`{c.name}`")
    return ", ".join(out)


def _source_group(cur, country: str, ids: list[int]) -> dict[int, SourceCustomer]:
    """Customers `ids` of `country` with every entity row, normalised."""
    if not ids:
        return {}
    marks = ", ".join(["%s"] * len(ids))
    cust_cols = schema.CUSTOMERS.column_names
    cur.execute(f"SELECT {_select_list(schema.CUSTOMERS)} FROM customers "
                f"WHERE country = %s AND customer_id IN ({marks})", (country, *ids))
    out: dict[int, SourceCustomer] = {}
    for row in cur.fetchall():
        d = dict(zip(cust_cols, row, strict=True))
        static = {legacy: norm_source(_STATIC_KIND[legacy], d[legacy]) for legacy in schema.CUSTOMER_STATIC}
        cid = int(d["customer_id"])
        out[cid] = SourceCustomer(cid, static)
    if not out:
        return out
    found = sorted(out)
    marks = ", ".join(["%s"] * len(found))
    for t in schema.ENTITY_TABLES:
        names = t.column_names
        kinds = [c.kind for c in t.columns]
        cur.execute(f"SELECT {_select_list(t)} FROM `{t.name}` WHERE customer_id IN ({marks})", found)
        for row in cur.fetchall():
            d = {n: norm_source(k, v) for n, k, v in zip(names, kinds, row, strict=True)}
            out[d["customer_id"]].rows[(t.entity, d[t.key])] = d
    return out


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
    return f"SELECT {', '.join(_TARGET_COLS)} FROM customer_billing WHERE customer_id = ?"


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


def _target_group(session, prepared, ids: list[int]) -> dict[int, TargetPartition]:
    from cassandra.concurrent import execute_concurrent_with_args

    out: dict[int, TargetPartition] = {}
    if not ids:
        return out
    results = execute_concurrent_with_args(session, prepared, [(cid,) for cid in ids],
                                           concurrency=READ_CONCURRENCY, raise_on_first_error=True)
    for cid, (ok, rs) in zip(ids, results, strict=True):
        if not ok:  # pragma: no cover - raise_on_first_error raises instead
            raise CompareError(f"reading partition {cid} failed: {rs}")
        part = _partition(cid, rs)
        if part is not None:
            out[cid] = part
    return out


def _index_ids(session, country: str, lo: int, hi: int) -> set[int]:
    """Customer ids of the country's customers_by_country index within [lo, hi] (all buckets)."""
    from cassandra.concurrent import execute_concurrent_with_args

    stmt = session.prepare("SELECT customer_id FROM customers_by_country WHERE country = ? AND bucket = ? "
                           "AND customer_id >= ? AND customer_id <= ?")
    args = [(country, b, lo, hi) for b in range(schema.CUSTOMERS_BY_COUNTRY_BUCKETS)]
    ids: set[int] = set()
    for ok, rs in execute_concurrent_with_args(session, stmt, args, concurrency=READ_CONCURRENCY,
                                               raise_on_first_error=True):
        if ok:
            ids.update(int(r[0]) for r in rs)
    return ids


# ------------------------------------------------------------------------------------------ public API
def compare_range(cfg: Config, country: str, lo: int, hi: int, *, customer_ids: list[int] | None = None,
                  quarantined: set[tuple[str, int]] | None = None, group_size: int = GROUP_SIZE) -> CompareResult:
    """Compare the country's customers with lo <= customer_id <= hi (or only `customer_ids`), field by field.

    `quarantined`: (table, key) of records the transform rejected; when absent from the target they are
    reported as kind `quarantined` (counted, not a mismatch). A quarantined customer quarantines its rows.
    """
    country = normalize_country(country)
    for name, v in (("lo", lo), ("hi", hi)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise CompareError(f"{name} must be a non-negative integer, got {v!r}")
    if hi < lo:
        raise CompareError(f"empty range: hi ({hi}) < lo ({lo})")
    if not 1 <= group_size <= 5000:
        raise CompareError(f"group_size must be in [1, 5000], got {group_size}")
    quarantined = quarantined or set()
    res = CompareResult(country, lo, hi)
    t0 = time.monotonic()
    with connections.cassandra_session(cfg) as session, connections.mysql_conn("mysql_export", cfg) as conn, \
            ThreadPoolExecutor(1, thread_name_prefix="compare-target") as pool:
        from cassandra.query import tuple_factory

        session.row_factory = tuple_factory
        prepared = session.prepare(_target_select())
        index = _index_ids(session, country, lo, hi)
        wanted = None if customer_ids is None else {int(c) for c in customer_ids}
        if wanted is not None:
            index &= wanted
        seen: set[int] = set()
        with conn.cursor() as cur:
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            id_cur = conn.cursor()
            try:
                for ids in _source_id_groups(id_cur, country, lo, hi, customer_ids, group_size):
                    # both reads are I/O bound: read the target partitions while MySQL answers
                    fut = pool.submit(_target_group, session, prepared, ids)
                    src = _source_group(cur, country, ids)
                    tgt = fut.result()
                    for cid in ids:
                        s = src.get(cid)
                        if s is None:
                            continue  # an explicit id the source lacks: handled with the extras below
                        diff_customer(res, s, tgt.get(cid), quarantined)
                        if cid not in index and ("customers", cid) not in quarantined:
                            res.counts["missing_index_entries"] += 1
                            res.add("missing", "customers_by_country", cid, cid)
                    seen.update(src)
            finally:
                id_cur.close()
                conn.rollback()
        # Target-only customers: in the index (or asked for explicitly) but not in the source.
        extra = sorted((index | (wanted or set())) - seen)
        for i in range(0, len(extra), group_size):
            ids = extra[i:i + group_size]
            tgt = _target_group(session, prepared, ids)
            for cid in ids:
                if cid in tgt:
                    diff_customer(res, None, tgt[cid], quarantined)
                elif cid in index:  # an index entry pointing at nothing
                    res.add("extra", "customers_by_country", cid, cid)
    res.counts["seconds_ms"] = int((time.monotonic() - t0) * 1000)
    log.info("compare %s [%d, %d]: %s", country, lo, hi, res.summary())
    return res


def mismatching_customers(result: CompareResult) -> list[int]:
    """Customers with a missing/extra/different finding: re-migrate each whole (quarantined ones excluded)."""
    return sorted(result.customers_with_mismatch)


def mismatches_table(result: CompareResult) -> pa.Table:
    cols = {f.name: [m[f.name] for m in result.mismatches] for f in MISMATCH_SCHEMA}
    return pa.table(cols, schema=MISMATCH_SCHEMA)


def mismatch_key(cfg: Config, country: str, run_id: str, round_no: int, chunk: int | None = None) -> str:
    name = "mismatches" if chunk is None else s3io.part_name(chunk)
    return f"{s3io.run_prefix(cfg, country, run_id)}compare/round={round_no}/{name}.parquet"


def write_mismatches(cfg: Config, country: str, run_id: str, round_no: int, result: CompareResult,
                     chunk: int | None = None) -> str:
    """Write the (masked) mismatch rows as Parquet; returns the S3 key. `chunk` keeps chunks apart."""
    country = normalize_country(country)
    if isinstance(round_no, bool) or not isinstance(round_no, int) or round_no < 0:
        raise CompareError(f"round_no must be a non-negative integer, got {round_no!r}")
    key = mismatch_key(cfg, country, run_id, round_no, chunk)
    s3io.put_parquet(connections.s3_client(cfg), cfg.s3_bucket, key, mismatches_table(result))
    return key
