"""Nightly snapshots of both stores as hive-partitioned Parquet on S3, in the legacy tables' shape.

Why snapshots and not live reads: the Netflix renewal crawler first iterated every Cassandra row from one
process, which stopped scaling; they replaced it with a snapshot to S3 plus MapReduce. Here the Cassandra
snapshot is N parallel token-range scans of `customer_billing` (one mapped task per split, paged with
`fetch_size`, rows streamed into Parquet writers so memory stays bounded by one page plus one row group),
and the MySQL snapshot is a chunked keyset read inside one consistent-snapshot, read-only transaction.

Both stores land in the same shape (the legacy tables and column names), so reconciliation and the renewal
crawl run on Parquet with DuckDB/pandas and never touch the serving stores again:

  {prefix}nightly/snapshots/date=D/store={mysql|cassandra}/country=CC/table=T/part-N.parquet

N is the token split for Cassandra (0 for MySQL and for plans). Every (country, table) of a split gets a
file, even an empty one, so a missing file always means a missing task, never "no rows".

What a date's outputs describe: `date=D/night.json` records the night's plan and when its snapshots were
taken. A run of a past date (a backfill, a late rerun) reuses the date's snapshots when they are complete;
otherwise it takes them now, and every output says, through `as_of`, that it was computed as of now and
not as of D.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import os
import struct
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from billing_migration.config import Config, normalize_country
from billing_migration.progress import Progress, interval_of
from billing_migration.stores import connections, s3io, schema

log = logging.getLogger(__name__)

MIN_TOKEN = -(2**63)  # Murmur3 never yields this token, so `token > MIN_TOKEN` covers the whole ring
MAX_TOKEN = 2**63 - 1
STORES = ("mysql", "cassandra")
SNAPSHOT_TABLES: tuple[schema.Table, ...] = schema.TABLES  # plans + every per-customer table
CUSTOMER_TABLES = schema.CUSTOMER_TABLES
ROW_GROUP_ROWS = 20_000
SCAN_IN_FLIGHT = 4  # range scans at once per split (scan_ranges)
SCAN_SUBRANGES = 16  # a split is read as this many token ranges, SCAN_IN_FLIGHT of them at a time

ARROW_TYPES = {
    "bigint": pa.int64(), "int": pa.int64(), "tinyint": pa.int64(), "text": pa.string(),
    "decimal": pa.decimal128(38, schema.DECIMAL_SCALE), "timestamp": pa.timestamp("ms", tz="UTC"),
    "date": pa.date32(),
}


class SnapshotError(RuntimeError):
    """A snapshot could not be taken faithfully (unknown entity type, value that would lose precision...)."""


def arrow_schema(table: schema.Table) -> pa.Schema:
    """Snapshot schema of a legacy table: integers widened to int64 so both stores compare type for type."""
    return pa.schema([pa.field(c.name, ARROW_TYPES[c.kind], c.nullable) for c in table.columns])


# ------------------------------------------------------------------------------------------- layout
def snapshot_prefix(cfg: Config, day: dt.date | str, store: str | None = None, country: str | None = None) -> str:
    p = f"{cfg.s3_prefix}nightly/snapshots/date={_day(day)}/"
    if store:
        p += f"store={store}/"
        if country:
            p += f"country={country}/"
    return p


def snapshot_key(cfg: Config, day: dt.date | str, store: str, country: str, table: str, part: int) -> str:
    return f"{snapshot_prefix(cfg, day, store, country)}table={table}/part-{part}.parquet"


def night_key(cfg: Config, day: dt.date | str) -> str:
    return f"{snapshot_prefix(cfg, day)}night.json"


def _day(day: dt.date | str) -> str:
    return day.isoformat() if isinstance(day, dt.date) else dt.date.fromisoformat(str(day)[:10]).isoformat()


# ------------------------------------------------------------------------------------------- as of
def of_the_date(day: dt.date | str, read_at: dt.datetime) -> bool:
    """Data read at `read_at` describes `day` when read during that date's night: from D 00:00 UTC up to the
    next night's run (D+1 02:00 UTC)."""
    start = dt.datetime.combine(dt.date.fromisoformat(_day(day)), dt.time(), dt.UTC)
    return start <= read_at < start + dt.timedelta(days=1, hours=2)


def as_of(day: dt.date | str, read_at: dt.datetime | str, computed_from: str) -> dict[str, Any]:
    """The label every nightly output carries: what it was computed from, and whether that is the date."""
    at = dt.datetime.fromisoformat(read_at) if isinstance(read_at, str) else read_at
    ok = of_the_date(day, at)
    note = "" if ok else (f"computed from data as of {at:%Y-%m-%d %H:%M} UTC, not as of {_day(day)} "
                          "(run after the date's night, without snapshots of that date)")
    return {"computed_from": computed_from, "data_read_at": at.isoformat(), "of_the_date": ok, "note": note}


# ------------------------------------------------------------------------------------------- routing
@dataclass(frozen=True)
class Routing:
    country: str
    serving_store: str  # 'legacy' | 'cassandra'
    writes_frozen: bool
    cutover_at: dt.datetime | None

    @property
    def in_scope(self) -> bool:
        """Reconciled nightly: migrated (serving from Cassandra) or mid-migration (frozen)."""
        return self.serving_store == "cassandra" or self.writes_frozen

    @property
    def source_of_truth(self) -> str:
        return "cassandra" if self.serving_store == "cassandra" else "mysql"

    def as_dict(self) -> dict[str, Any]:
        return {"country": self.country, "serving_store": self.serving_store,
                "writes_frozen": self.writes_frozen,
                "cutover_at": self.cutover_at.isoformat() if self.cutover_at else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Routing:
        cut = d.get("cutover_at")
        return cls(d["country"], d["serving_store"], bool(d["writes_frozen"]),
                   dt.datetime.fromisoformat(cut) if cut else None)


def read_routing(cfg: Config) -> dict[str, Routing]:
    """country_routing read with the read-only role (countries absent from it are served by legacy)."""
    out = {cc: Routing(cc, "legacy", False, None) for cc in cfg.countries}
    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT country, serving_store, writes_frozen, cutover_at FROM country_routing")
        for cc, store, frozen, cut in cur.fetchall():
            out[cc] = Routing(cc, store, bool(frozen), cut)
    return out


# ------------------------------------------------------------------------------------------- writers
class _PartWriter:
    """Buffers rows of one table into columns and streams them, ROW_GROUP_ROWS at a time, through
    the shared Parquet writer (s3io.ParquetUpload) in the snapshot schema."""

    def __init__(self, table: schema.Table, tmpdir: str) -> None:
        self.table = table
        self.schema = arrow_schema(table)
        self.cols: dict[str, list[Any]] = {n: [] for n in self.schema.names}
        self.upload = s3io.ParquetUpload(self.schema, row_group_size=ROW_GROUP_ROWS, tmpdir=tmpdir)
        self.tables: list[pa.Table] = []
        self.buffered = 0

    def add_rows(self, rows: list[tuple]) -> None:
        """Row tuples in the table's column order (a cursor's fetch), appended column by column: a dict per
        row was most of the legacy snapshot's time."""
        if not rows:
            return
        for values, column in zip(self.cols.values(), zip(*rows, strict=True), strict=True):
            values.extend(column)
        if len(self.cols[self.schema.names[0]]) >= ROW_GROUP_ROWS:
            self.flush()

    def add_table(self, tbl: pa.Table) -> None:
        """Rows already in the snapshot schema (the column-wise scan): buffered up to a row group."""
        if tbl.num_rows:
            self.tables.append(tbl)
            self.buffered += tbl.num_rows
            if self.buffered >= ROW_GROUP_ROWS:
                self.flush()

    def flush(self) -> None:
        if self.tables:
            self.upload.write(pa.concat_tables(self.tables))
            self.tables, self.buffered = [], 0
        if not self.cols[self.schema.names[0]]:
            return
        try:
            arrays = [pa.array(self.cols[f.name], type=f.type) for f in self.schema]
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise SnapshotError(f"table {self.table.name}: value does not fit the snapshot schema: {exc}") from exc
        self.upload.write(pa.Table.from_arrays(arrays, schema=self.schema))
        for values in self.cols.values():
            values.clear()

    def finish(self, client, bucket: str, key: str) -> int:
        self.flush()
        return self.upload.finish(client, bucket, key).rows


# ------------------------------------------------------------------------------------------- Cassandra
def token_splits(n: int) -> list[dict[str, int]]:
    """N contiguous (lo, hi] ranges covering the whole Murmur3 ring."""
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1024:
        raise ValueError(f"token splits must be an integer in [1, 1024], got {n!r}")
    step = 2**64 // n
    bounds = [MIN_TOKEN + i * step for i in range(n)] + [MAX_TOKEN]
    return [{"split": i, "lo": bounds[i], "hi": bounds[i + 1]} for i in range(n)]


@contextlib.contextmanager
def _session(cfg: Config, session=None) -> Iterator[Any]:
    """The caller's session (callers scanning several ranges reuse one), or a new one closed on exit."""
    if session is not None:
        yield session
        return
    with connections.cassandra_session(cfg) as s:
        yield s


def _cql_columns() -> list[str]:
    statics = list(schema.CUSTOMER_STATIC.values())
    ents = [c for c in schema.entity_columns() if c != "updated_at"]
    return ["customer_id", "entity_type", "entity_id", *statics, *ents, "updated_at"]


def _to_py(value: Any) -> Any:
    """Driver types -> plain Python (cassandra.util.Date -> date)."""
    if value is not None and type(value).__name__ == "Date" and hasattr(value, "date"):
        return value.date()
    return value


def _customer_row(r: dict[str, Any]) -> dict[str, Any]:
    row = {"customer_id": r["customer_id"]}
    for legacy, cql in schema.CUSTOMER_STATIC.items():
        row[legacy] = _to_py(r[cql])
    return row


def _entity_row(t: schema.Table, r: dict[str, Any]) -> dict[str, Any]:
    row = {t.key: r["entity_id"], "customer_id": r["customer_id"]}
    for c in schema.entity_row_columns(t):
        row[c] = _to_py(r[c])
    return row


def token_fraction(customer_id: int, split: dict[str, int]) -> float:
    """How far through its token range (lo, hi] a scan is at this partition (Murmur3, as Cassandra orders)."""
    from cassandra.metadata import Murmur3Token

    token = Murmur3Token.hash_fn(struct.pack(">q", int(customer_id)))
    span = split["hi"] - split["lo"]
    return (token - split["lo"]) / span if span > 0 else 1.0


def subranges(lo: int, hi: int, n: int) -> list[tuple[int, int]]:
    """(lo, hi] cut into n contiguous token ranges (fewer when the range holds fewer tokens)."""
    n = max(1, min(n, hi - lo))
    step = (hi - lo) // n
    bounds = [lo + i * step for i in range(n)] + [hi]
    return list(itertools.pairwise(bounds))


def scan_ranges(session, keyspace: str, ranges: list[tuple[int, int]], fetch_size: int = 5000,
                in_flight: int = SCAN_IN_FLIGHT) -> Iterator[tuple[int, list[tuple]]]:
    """(range index, page) of every token range, up to `in_flight` range scans running at once.

    Why several at once: one range scan is served by one Cassandra read thread, page after page, so a lone
    scan leaves the server idle while the client converts a page and the client idle while the server reads
    one. With a few scans in flight both sides stay busy (measured here: 33k -> 46k rows/s with 4 in flight,
    decode only). Each scan still reads one page ahead at most, so memory stays bounded by in_flight + 1
    pages. Pages of one range arrive in order; pages of different ranges interleave (partitions never span
    two ranges, so per-range order is all the callers need).
    """
    cols = _cql_columns()
    stmt = session.prepare(f"SELECT {', '.join(cols)} FROM {keyspace}.customer_billing "
                           "WHERE token(customer_id) > ? AND token(customer_id) <= ?")
    stmt.fetch_size = fetch_size
    yield from connections.pages(session, [(stmt, rng) for rng in ranges], in_flight, timeout=120)


def _sources(table: schema.Table) -> dict[str, str]:
    """Snapshot column of `table` -> the CQL column it comes from."""
    if table.name == "customers":
        return {"customer_id": "customer_id", **schema.CUSTOMER_STATIC}
    return {table.key: "entity_id", "customer_id": "customer_id",
            **{c: c for c in schema.entity_row_columns(table)}}


class _Page:
    """One page as columns: each CQL column converted to Arrow once, on first use, in the snapshot type."""

    def __init__(self, rows: list[tuple], index: dict[str, int]) -> None:
        self.columns = list(zip(*rows, strict=True))
        self.index = index
        self.cache: dict[str, pa.Array] = {}
        self.n = len(rows)

    def get(self, cql: str, typ: pa.DataType) -> pa.Array:
        if cql not in self.cache:
            values = self.columns[self.index[cql]]
            try:
                if typ == pa.date32():  # cassandra.util.Date: days since the epoch, as date32 stores it
                    arr = pa.array([None if v is None else v.days_from_epoch for v in values], pa.int32())
                    self.cache[cql] = arr.cast(typ)
                else:
                    self.cache[cql] = pa.array(values, type=typ)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                raise SnapshotError(f"column {cql}: value does not fit the snapshot schema: {exc}") from exc
        return self.cache[cql]

    def table(self, t: schema.Table, mask: pa.Array) -> pa.Table:
        snap = arrow_schema(t)
        src = _sources(t)
        arrays = [self.get(src[f.name], f.type).filter(mask) for f in snap]
        return pa.Table.from_arrays(arrays, schema=snap)


def _split_page(page: _Page, wanted: set[str], last_customer: int | None,
                split: dict[str, int]) -> tuple[dict[str, dict[str, pa.Table]], int]:
    """Rows of the wanted countries, per country and table; returns them and the rows skipped (other
    countries). A partition's first row (customer_id differs from the previous row's of the same token range)
    carries its static part."""
    import pyarrow.compute as pc

    cid = page.get("customer_id", pa.int64())
    npcid = cid.to_numpy(zero_copy_only=False)
    first = np.empty(page.n, dtype=bool)
    first[0] = npcid[0] != last_customer
    first[1:] = npcid[1:] != npcid[:-1]
    country = page.get("country", pa.string())
    etype = page.get("entity_type", pa.string())
    keep = pc.fill_null(pc.is_in(country, value_set=pa.array(sorted(wanted), pa.string())), False)
    unknown = set(pc.unique(pc.filter(etype, keep)).to_pylist()) - {None} - set(schema.TABLE_BY_ENTITY)
    if unknown:
        bad = next(iter(sorted(unknown)))
        at = pc.index(etype, bad).as_py()
        raise SnapshotError(f"customer {npcid[at]}: unknown entity_type {bad!r} "
                            f"in token range ({split['lo']}, {split['hi']}]")
    first_arr = pa.array(first)
    out: dict[str, dict[str, pa.Table]] = {}
    for cc in sorted(wanted):
        mine = keep if len(wanted) == 1 else pc.fill_null(pc.equal(country, cc), False)
        tables = {"customers": page.table(schema.CUSTOMERS, pc.and_(mine, first_arr))}
        for t in CUSTOMER_TABLES:
            if t.entity is not None:
                mask = pc.and_(mine, pc.fill_null(pc.equal(etype, t.entity), False))
                if pc.any(mask).as_py():
                    tables[t.name] = page.table(t, mask)
        out[cc] = tables
    skipped = page.n - pc.sum(keep.cast(pa.int64())).as_py() if page.n else 0
    return out, skipped


def snapshot_cassandra_split(cfg: Config, day: dt.date | str, split: dict[str, int], countries: list[str],
                             fetch_size: int = 5000, client=None, session=None,
                             in_flight: int = SCAN_IN_FLIGHT) -> dict[str, Any]:
    """Scan one token range and write, for every requested country, one Parquet part per table.

    One scan serves every country (customers are filtered by their static `country`), so the ring is read
    once a night whatever the number of migrated countries. Returns rows per country and table. Pages are
    converted column by column (Arrow), never row by row, while SCAN_IN_FLIGHT sub-ranges are read meanwhile.
    """
    from cassandra.query import tuple_factory

    wanted = {normalize_country(c) for c in countries}
    client = client or s3io.client(cfg)
    t0 = time.monotonic()
    scanned = skipped_other = 0
    index = {c: i for i, c in enumerate(_cql_columns())}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BM_TMP_DIR")) as tmp:
        writers: dict[str, dict[str, _PartWriter]] = {}
        for cc in sorted(wanted):
            os.makedirs(os.path.join(tmp, cc))
            writers[cc] = {t.name: _PartWriter(t, os.path.join(tmp, cc)) for t in CUSTOMER_TABLES}
        prog = Progress(f"snapshot split {split['split']}", interval=interval_of(cfg))
        ranges = subranges(split["lo"], split["hi"], SCAN_SUBRANGES)
        last: list[int | None] = [None] * len(ranges)  # last customer seen per range: a partition's first row
        done_frac = [0.0] * len(ranges)
        with _session(cfg, session) as sess, connections.cyclic_gc_paused():
            sess.row_factory = tuple_factory
            for i, rows in scan_ranges(sess, cfg.cassandra_keyspace, ranges, fetch_size, in_flight):
                if not rows:
                    continue
                lo, hi = ranges[i]
                page = _Page(rows, index)
                per_country, skipped = _split_page(page, wanted, last[i], split)
                last[i] = rows[-1][0]
                scanned += page.n
                skipped_other += skipped
                for cc, tables in per_country.items():
                    for name, tbl in tables.items():
                        writers[cc][name].add_table(tbl)
                done_frac[i] = token_fraction(last[i], {"lo": lo, "hi": hi})
                prog.update(page.n, sum(t["customers"].num_rows for t in per_country.values()),
                            fraction=sum(done_frac) / len(ranges))
        counts: dict[str, dict[str, int]] = {}
        for cc, ws in writers.items():
            counts[cc] = {name: pw.finish(client, cfg.s3_bucket,
                                          snapshot_key(cfg, day, "cassandra", cc, name, split["split"]))
                          for name, pw in ws.items()}
    prog.finish()
    elapsed = time.monotonic() - t0
    log.info("cassandra split %s: %d rows scanned in %.2fs (%.0f rows/s)", split["split"], scanned, elapsed,
             scanned / elapsed if elapsed else 0)
    return {"split": split["split"], "scanned": scanned, "other_countries": skipped_other,
            "seconds": round(elapsed, 3), "counts": counts}


def read_cassandra_plans(cfg: Config, country: str, session=None) -> pa.Table:
    """The country's plan catalogue: one Cassandra partition, read directly (cheap, no scan)."""
    from cassandra.query import tuple_factory

    country = normalize_country(country)
    cols = schema.PLANS.column_names
    with _session(cfg, session) as sess:
        sess.row_factory = tuple_factory
        rows = [{c: _to_py(v) for c, v in zip(cols, row, strict=True)}
                for row in sess.execute(f"SELECT {', '.join(cols)} FROM plans WHERE country = %s", (country,))]
    try:
        return pa.Table.from_pylist(rows, schema=arrow_schema(schema.PLANS))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SnapshotError(f"plans of {country}: value does not fit the snapshot schema: {exc}") from exc


def snapshot_cassandra_plans(cfg: Config, day: dt.date | str, country: str, client=None, session=None) -> int:
    """The country's plan catalogue as table=plans/part-0 of the Cassandra snapshot."""
    client = client or s3io.client(cfg)
    table = read_cassandra_plans(cfg, country, session)
    s3io.put_parquet(client, cfg.s3_bucket, snapshot_key(cfg, day, "cassandra", normalize_country(country),
                                                         "plans", 0), table)
    return table.num_rows


# ------------------------------------------------------------------------------------------- MySQL
def _select(t: schema.Table, alias: str) -> str:
    return ", ".join(f"{alias}.`{c}`" for c in t.column_names)


def mysql_customer_chunks(cur, country: str, chunk: int) -> Iterable[tuple[int, int]]:
    """Inclusive (lo, hi) customer_id ranges of the country, by keyset on (country, customer_id)."""
    after = -1
    while True:
        cur.execute("SELECT customer_id FROM customers WHERE country = %s AND customer_id > %s "
                    "ORDER BY customer_id LIMIT %s", (country, after, chunk))
        ids = [r[0] for r in cur.fetchall()]
        if not ids:
            return
        yield ids[0], ids[-1]
        after = ids[-1]


def mysql_chunk_sql(t: schema.Table) -> str:
    if t.name == "customers":
        return (f"SELECT {_select(t, 'c')} FROM customers c WHERE c.country = %s "
                "AND c.customer_id BETWEEN %s AND %s ORDER BY c.customer_id")
    return (f"SELECT {_select(t, 'x')} FROM `{t.name}` x JOIN customers c ON c.customer_id = x.customer_id "
            f"WHERE c.country = %s AND x.customer_id BETWEEN %s AND %s ORDER BY x.`{t.key}`")


def snapshot_mysql(cfg: Config, day: dt.date | str, country: str, chunk_customers: int = 5000,
                   client=None) -> dict[str, int]:
    """All tables of one country from legacy MySQL (read-only role, one consistent snapshot, keyset chunks)."""
    country = normalize_country(country)
    client = client or s3io.client(cfg)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BM_TMP_DIR")) as tmp, \
            connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        writers = {t.name: _PartWriter(t, tmp) for t in SNAPSHOT_TABLES}
        cur.execute(f"SELECT {_select(schema.PLANS, 'p')} FROM plans p WHERE p.country = %s ORDER BY p.plan_id",
                    (country,))
        writers["plans"].add_rows(cur.fetchall())
        cur.execute("SELECT COUNT(*) FROM customers WHERE country = %s", (country,))
        prog = Progress(f"mysql snapshot {country}", customers_total=int(cur.fetchone()[0]),
                        interval=interval_of(cfg))
        for lo, hi in mysql_customer_chunks(cur, country, chunk_customers):
            rows = customers = 0
            for t in CUSTOMER_TABLES:
                cur.execute(mysql_chunk_sql(t), (country, lo, hi))
                fetched = cur.fetchall()
                writers[t.name].add_rows(fetched)
                rows += len(fetched)
                if t.name == "customers":
                    customers = len(fetched)
            prog.update(rows=rows, customers=customers)
        conn.rollback()
        prog.finish()
        counts = {name: pw.finish(client, cfg.s3_bucket, snapshot_key(cfg, day, "mysql", country, name, 0))
                  for name, pw in writers.items()}
    log.info("mysql snapshot %s: %s in %.2fs", country, counts, time.monotonic() - t0)
    return counts


# ------------------------------------------------------------------------------------------- reading
def read_snapshot(cfg: Config, day: dt.date | str, store: str, country: str, table: str,
                  client=None) -> pa.Table:
    """Every part of one (store, country, table) concatenated; an empty table if none was written."""
    client = client or s3io.client(cfg)
    prefix = f"{snapshot_prefix(cfg, day, store, country)}table={table}/"
    parts = [k for k in s3io.list_keys(client, cfg.s3_bucket, prefix) if k.endswith(".parquet")]
    sch = arrow_schema(schema.TABLES_BY_NAME[table])
    if not parts:
        return sch.empty_table()
    tables = [s3io.get_parquet(client, cfg.s3_bucket, k).cast(sch) for k in parts]
    return pa.concat_tables(tables)


def download_parts(cfg: Config, day: dt.date | str, store: str, country: str, table: str, dest: str,
                   client=None) -> list[str]:
    """Local copies of one (store, country, table)'s parts, for DuckDB to stream (never all in memory)."""
    client = client or s3io.client(cfg)
    out = []
    os.makedirs(os.path.join(dest, table), exist_ok=True)
    for key in list_parts(cfg, day, store, country, table, client):
        path = os.path.join(dest, table, key.rsplit("/", 1)[1])
        client.download_file(cfg.s3_bucket, key, path)
        out.append(path)
    return out


def list_parts(cfg: Config, day: dt.date | str, store: str, country: str, table: str, client=None) -> list[str]:
    client = client or s3io.client(cfg)
    prefix = f"{snapshot_prefix(cfg, day, store, country)}table={table}/"
    return [k for k in s3io.list_keys(client, cfg.s3_bucket, prefix) if k.endswith(".parquet")]


# ------------------------------------------------------------------------------------------- the night's plan
def plan_night(cfg: Config, day: dt.date | str, countries: list[str] | None = None, splits: int = 8,
               client=None, reuse: bool = True, now: dt.datetime | None = None) -> dict[str, Any]:
    """What tonight's run covers, decided once from country_routing, and a clean slate for the date's
    snapshots (a rerun or backfill with another split count must not leave stale parts behind).

    A past date (`now` outside the date's night) whose complete snapshots exist reuses them and the routing
    recorded with them (`take_snapshots` False) unless `reuse` is off (a re-sync must be verified afresh).
    """
    wanted = [normalize_country(c) for c in (countries or [])]
    for cc in wanted:
        cfg.country(cc)  # refuses an unconfigured country with a clear message
    now = now or dt.datetime.now(dt.UTC)
    client = client or s3io.client(cfg)
    if reuse and not of_the_date(day, now):
        stored = _stored_night(cfg, day, wanted, client)
        if stored is not None:
            log.info("night %s: reusing the snapshots taken at %s", _day(day), stored["taken_at"])
            return stored
    routing = read_routing(cfg)
    chosen = [routing[cc] for cc in sorted(routing) if not wanted or cc in wanted]
    reconcile = [r.as_dict() for r in chosen if r.in_scope]
    s3io.delete_prefix(client, cfg.s3_bucket, snapshot_prefix(cfg, day))
    night = {
        "date": _day(day),
        "reconcile": reconcile,
        "renew": [r.as_dict() for r in chosen],
        "scan_countries": [r["country"] for r in reconcile],
        "splits": token_splits(splits) if reconcile else [],
        "taken_at": now.isoformat(),
        "take_snapshots": True,
    }
    s3io.put_json(client, cfg.s3_bucket, night_key(cfg, day), night)
    return night


def _stored_night(cfg: Config, day: dt.date | str, wanted: list[str], client) -> dict[str, Any] | None:
    """The date's recorded plan narrowed to `wanted`, if it covers them and every snapshot part exists."""
    if not s3io.exists(client, cfg.s3_bucket, night_key(cfg, day)):
        return None
    stored = s3io.get_json(client, cfg.s3_bucket, night_key(cfg, day))
    have = {r["country"] for r in stored["renew"]}
    if not (set(wanted) or set(cfg.countries)) <= have:  # the stored night covered fewer countries
        return None
    keep = set(wanted) or have
    reconcile = [r for r in stored["reconcile"] if r["country"] in keep]
    keys = set(s3io.list_keys(client, cfg.s3_bucket, snapshot_prefix(cfg, day)))
    for r in reconcile:
        cc = r["country"]
        need = [snapshot_key(cfg, day, "mysql", cc, t.name, 0) for t in SNAPSHOT_TABLES]
        need += [snapshot_key(cfg, day, "cassandra", cc, "plans", 0)]
        need += [snapshot_key(cfg, day, "cassandra", cc, t.name, sp["split"])
                 for t in CUSTOMER_TABLES for sp in stored["splits"]]
        if not set(need) <= keys:
            return None
    return stored | {"reconcile": reconcile, "renew": [r for r in stored["renew"] if r["country"] in keep],
                     "scan_countries": [r["country"] for r in reconcile], "take_snapshots": False}
