"""MySQL -> Parquet on S3, one keyset chunk of a country's customers at a time, with a manifest per chunk.

Why it is built this way:
- Chunks are inclusive `customer_id` ranges computed in SQL (ROW_NUMBER over the (country, customer_id)
  index), so planning a country of millions never pulls every id into Python.
- Two read paths, chosen per mode (`engine_for`), because they differ in what they guarantee:
  * offline (the country is frozen for the whole copy; engine "connectorx"): connectorx reads each table
    straight into Arrow on its own connection (per-table reads, no shared snapshot), and reading, typing +
    Parquet encoding, and hashing + upload overlap in three threads joined by a bounded queue (QUEUE_BATCHES
    raw batches; finished files wait on local disk for the uploader), so memory stays flat. Per-table reads
    are one point in time here because the write gate refuses every application write to the country before
    the export starts and until cut-over: nothing can change between two tables' queries.
  * writable country (online pre-copy, catch-up rounds, dry runs; engine "mysqlclient"): every table of a
    chunk is read through ONE connection inside ONE `START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY`
    (server-side cursor). The binlog capture does re-migrate every customer touched after its recorded
    position, but per-table reads of a live country can still split a customer across two points in time
    (a subscription and its invoice committed between the two queries give an invoice without its
    subscription), which the transform rejects as a missing foreign key and the error budget counts before
    catch-up could repair it. This export runs while the country is writable, outside any freeze, so its
    speed costs customers nothing; its consistency would.
  Both paths write the same files (same rows, types, values, row groups): tests/integration/test_export.py.
- DATETIME/DATE/DECIMAL columns are selected as text (`CAST(col AS CHAR)`) and converted vectorised with an
  explicit Arrow schema (s3io.arrow_schema): exact decimals (never float) and zero/invalid dates that no
  driver can represent do not crash the export; they become null plus the marker column `_zero_date_cols`
  ("col1,col2"), which the transform rejects with a reason.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from billing_migration.config import Config, normalize_country
from billing_migration.progress import Progress, interval_of
from billing_migration.stores import connections, s3io, schema

log = logging.getLogger(__name__)

DEFAULT_BATCH_ROWS = 50_000
READERS = 2  # connectorx reader threads in the offline path (each its own connection and server thread)
QUEUE_BATCHES = 2  # raw batches between the reader thread and the encoder (bounds the export's memory)
ENGINES = ("mysqlclient", "connectorx")
_AS_TEXT = ("decimal", "timestamp", "date")  # selected as CAST(... AS CHAR), converted in Arrow


def _date_columns(table: schema.Table) -> list[schema.Column]:
    return [c for c in table.columns if c.kind in ("timestamp", "date")]


def _select_list(table: schema.Table, alias: str, native_decimals: bool = False) -> str:
    """Columns as the export reads them: dates as text (zero dates survive), decimals as text for
    mysqlclient (Python Decimal objects would cost ~1 µs each) or native for connectorx (exact decimal128)."""
    out = []
    for c in table.columns:
        if c.kind in _AS_TEXT and not (native_decimals and c.kind == "decimal"):
            out.append(f"CAST({alias}.`{c.name}` AS CHAR) AS `{c.name}`")
        else:
            out.append(f"{alias}.`{c.name}`")
    return ", ".join(out)


# ------------------------------------------------------------------------------------------- planning
def plan_chunks(cfg: Config, country: str, chunk_customers: int) -> list[dict[str, int]]:
    """Inclusive keyset ranges of `chunk_customers` customers each, computed server-side; [] if empty."""
    country = normalize_country(country)
    if not isinstance(chunk_customers, int) or chunk_customers < 1:
        raise ValueError(f"chunk_customers must be a positive integer, got {chunk_customers!r}")
    sql = ("SELECT FLOOR((rn - 1) / %s) AS chunk, MIN(customer_id), MAX(customer_id), COUNT(*) FROM ("
           " SELECT customer_id, ROW_NUMBER() OVER (ORDER BY customer_id) AS rn"
           " FROM customers WHERE country = %s) x GROUP BY chunk ORDER BY chunk")
    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute(sql, (chunk_customers, country))
        rows = cur.fetchall()
    return [{"chunk": int(ch), "lo": int(lo), "hi": int(hi), "customers": int(n)} for ch, lo, hi, n in rows]


# ------------------------------------------------------------------------------------------ conversion
def to_arrow(table: schema.Table, columns: dict[str, pa.Array]) -> pa.RecordBatch:
    """Raw driver columns (ints, text) -> the explicit schema; zero/invalid dates -> null + marker."""
    out: list[pa.Array] = []
    flags: list[tuple[str, pa.Array]] = []
    for c in table.columns:
        raw = columns[c.name]
        if isinstance(raw, pa.ChunkedArray):
            raw = raw.combine_chunks()
        target = s3io.ARROW_TYPES[c.kind]
        if c.kind in ("timestamp", "date"):
            raw = raw.cast(pa.string())
            value, bad = _parse_datetime(raw, c.kind)
            flags.append((c.name, bad))
            out.append(value)
        elif c.kind == "decimal":  # exact either way: a cast that would drop a digit raises
            out.append(raw.cast(target) if pa.types.is_decimal(raw.type) else raw.cast(pa.string()).cast(target))
        else:
            out.append(raw.cast(target))
    names = [c.name for c in table.columns]
    if flags:
        marks = [pc.if_else(bad, pa.scalar(name + ","), pa.scalar("")) for name, bad in flags]
        joined = pc.utf8_rtrim(pc.binary_join_element_wise(*marks, ""), characters=",")
        joined = pc.if_else(pc.equal(joined, ""), pa.scalar(None, pa.string()), joined)
        out.append(joined)
        names.append(s3io.ZERO_DATE_COL)
    return pa.RecordBatch.from_arrays(out, schema=s3io.arrow_schema(table))


_SHAPE = {"date": (r"^\d{4}-\d{2}-\d{2}$", "1970-01-01", 3),
          "timestamp": (r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$", "1970-01-01 00:00:00", 6)}
_FIELDS = ((pc.year, 0, 4), (pc.month, 5, 7), (pc.day, 8, 10), (pc.hour, 11, 13), (pc.minute, 14, 16),
           (pc.second, 17, 19))


def _parse_datetime(raw: pa.Array, kind: str) -> tuple[pa.Array, pa.Array]:
    """Parse MySQL text dates; returns (values, invalid flag). Invalid = non-null text that is no real date.

    strptime normalises 2024-02-30 to 2024-03-01, so a value is valid only if the text has the canonical
    shape and every field of the parsed value equals the text's (field by field: formatting the values
    back with strftime loads the time-zone database and costs ~30 µs a value).
    """
    none_bad = pa.array(np.zeros(len(raw), dtype=bool))
    try:  # every value a real date or time (the common case): one strict ISO cast, ~7x cheaper than below
        if kind == "date":
            return raw.cast(pa.date32()), none_bad
        return raw.cast(pa.timestamp("ms")).cast(pa.timestamp("ms", tz="UTC")), none_bad
    except pa.ArrowInvalid:
        pass
    pattern, filler, n_fields = _SHAPE[kind]
    head = pc.utf8_slice_codeunits(raw, 0, len(filler))
    try:  # the common case, every value a real date: Arrow's strict ISO cast, ~50x faster than strptime
        parsed = head.cast(pa.timestamp("s"))
        exact = True
    except pa.ArrowInvalid:  # a zero or invalid date somewhere in the batch: value by value below
        fmt = "%Y-%m-%d" if kind == "date" else "%Y-%m-%d %H:%M:%S"
        parsed = pc.strptime(head, format=fmt, unit="s", error_is_null=True)
        exact = False
    if kind == "date":
        value = parsed.cast(pa.date32())
    else:
        frac = pc.utf8_slice_codeunits(pc.fill_null(raw, ""), 20, 23)
        frac = pc.if_else(pc.equal(frac, ""), "0", frac)
        ms = pc.cast(pc.cast(frac, pa.int64()), pa.duration("ms"))
        value = pc.add(parsed.cast(pa.timestamp("ms")), ms).cast(pa.timestamp("ms", tz="UTC"))
    if exact:
        return value, none_bad
    shaped = pc.fill_null(pc.match_substring_regex(head, pattern), False)
    safe = pc.if_else(shaped, head, pa.scalar(filler))  # digits where the fields are read
    ok = pc.and_(shaped, pc.is_valid(parsed))
    for field, a, b in _FIELDS[:n_fields]:
        text = pc.cast(pc.utf8_slice_codeunits(safe, a, b), pa.int64())
        ok = pc.and_(ok, pc.fill_null(pc.equal(field(parsed).cast(pa.int64()), text), False))
    bad = pc.and_(pc.is_valid(raw), pc.invert(ok))
    value = pc.if_else(bad, pa.scalar(None, value.type), value)
    return value, bad


# --------------------------------------------------------------------------------------------- queries
def _chunk_query(table: schema.Table, customer_ids: list[int] | None, native_decimals: bool = False) -> str:
    ids = ""
    if customer_ids is not None:
        ids = f" AND c.customer_id IN ({', '.join(['%s'] * len(customer_ids))})"
    if table.name == "customers":
        return (f"SELECT {_select_list(table, 'c', native_decimals)} FROM customers c"
                f" WHERE c.country = %s AND c.customer_id BETWEEN %s AND %s{ids}"
                " ORDER BY c.customer_id")
    return (f"SELECT {_select_list(table, 't', native_decimals)} FROM `{table.name}` t"
            " JOIN customers c ON c.customer_id = t.customer_id"
            f" WHERE c.country = %s AND c.customer_id BETWEEN %s AND %s"
            f" AND t.customer_id BETWEEN %s AND %s{ids}"
            " ORDER BY c.customer_id")  # index order, no filesort; rows of a customer come in key order


def _chunk_params(table: schema.Table, country: str, lo: int, hi: int,
                  customer_ids: list[int] | None) -> list[Any]:
    params: list[Any] = [country, lo, hi]
    if table.name != "customers":
        params += [lo, hi]
    return params + list(customer_ids or [])


class _TableWriter:
    """One exported table file: the shared Parquet writer plus what the manifest records (rows, batches,
    key range, sha256 of the file bytes)."""

    def __init__(self, table: schema.Table) -> None:
        self.table = table
        self.upload = s3io.ParquetUpload(s3io.arrow_schema(table))
        self.batches = 0
        self.min_key: int | None = None
        self.max_key: int | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        mm = pc.min_max(batch.column(self.table.key))
        lo, hi = mm["min"].as_py(), mm["max"].as_py()
        self.min_key = lo if self.min_key is None else min(self.min_key, lo)
        self.max_key = hi if self.max_key is None else max(self.max_key, hi)
        self.upload.write(batch)
        self.batches += 1

    def finish(self, client, bucket: str, key: str) -> dict[str, Any]:
        obj = self.upload.finish(client, bucket, key)
        return {"key": key, "rows": obj.rows, "batches": self.batches, "key_column": self.table.key,
                "min_key": self.min_key, "max_key": self.max_key, "sha256": obj.sha256, "bytes": obj.bytes}


def _stream_mysqlclient(cur, table: schema.Table, sql: str, params: list[Any], batch_rows: int):
    """Yield Arrow batches from a server-side cursor, `batch_rows` rows at a time."""
    cur.execute(sql, params)
    names = [c.name for c in table.columns]
    raw_types = [pa.int64() if c.kind in ("bigint", "int", "tinyint") else pa.string() for c in table.columns]
    while True:
        rows = cur.fetchmany(batch_rows)
        if not rows:
            break
        cols = list(zip(*rows, strict=True))
        yield to_arrow(table, {n: pa.array(col, type=t) for n, col, t in zip(names, cols, raw_types,
                                                                            strict=True)})


def _cx_literal(sql: str, params: list[Any]) -> str:
    """The query with its parameters inlined (connectorx takes no parameters): the country is quoted by
    the driver's own escaping, every other parameter is an int."""
    import MySQLdb

    return sql % tuple(MySQLdb.string_literal(str(p).encode()).decode() if isinstance(p, str) else int(p)
                       for p in params)


def _cx_batches(cfg: Config, sql: str, params: list[Any], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Raw Arrow batches of one query from connectorx's arrow_stream (its own connection)."""
    import connectorx as cx

    reader = cx.read_sql(connections.mysql_url("mysql_export", cfg), _cx_literal(sql, params),
                         return_type="arrow_stream", batch_size=batch_rows)
    for rb in reader:
        if rb.num_rows:
            yield rb


class _ChunkProgress:
    """The export's progress: customers counted from the customers table, the fraction done from how far
    through the chunk's key range each table's rows are (rows come in customer_id order; tables may be read
    in parallel, so the fraction is the mean over tables)."""

    def __init__(self, cfg: Config, label: str, lo: int, hi: int, n_tables: int, customers: int | None) -> None:
        self.prog = Progress(label, customers_total=customers, interval=interval_of(cfg))
        self.lo, self.span, self.n_tables = lo, max(hi - lo + 1, 1), n_tables
        self.within = [0.0] * n_tables

    def batch(self, index: int, table: schema.Table, batch: pa.RecordBatch) -> None:
        last = batch.column("customer_id")[batch.num_rows - 1].as_py() if batch.num_rows else self.lo
        self.within[index] = min(max((int(last) - self.lo + 1) / self.span, 0.0), 1.0)
        self.prog.update(batch.num_rows, batch.num_rows if table.name == "customers" else 0,
                         fraction=sum(self.within) / self.n_tables)

    def table_done(self, index: int) -> None:
        self.within[index] = 1.0

    def finish(self) -> None:
        self.prog.finish()


def _write_table(client, bucket: str, key: str, table: schema.Table, batches, index: int = 0,
                 prog: _ChunkProgress | None = None) -> dict[str, Any]:
    """Stream `batches` into one Parquet file and upload it; a failure leaves nothing behind."""
    w = _TableWriter(table)
    with w.upload:  # an exception drops the temp file
        for batch in batches:
            w.write(batch)
            if prog is not None:
                prog.batch(index, table, batch)
    return w.finish(client, bucket, key)


def _ss_batches(conn, table: schema.Table, sql: str, params: list[Any], batch_rows: int):
    import MySQLdb.cursors

    with conn.cursor(MySQLdb.cursors.SSCursor) as cur:
        yield from _stream_mysqlclient(cur, table, sql, params, batch_rows)


def _export_snapshot(cfg: Config, tables: list[tuple[schema.Table, str, list[Any], str]], batch_rows: int,
                     prog: _ChunkProgress | None) -> dict[str, dict[str, Any]]:
    """Every table of the chunk through ONE connection inside one consistent-snapshot transaction."""
    client = s3io.client(cfg)
    out: dict[str, dict[str, Any]] = {}
    with connections.mysql_conn("mysql_export", cfg) as conn:
        with conn.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        try:
            for i, (table, sql, params, key) in enumerate(tables):
                out[table.name] = _write_table(client, cfg.s3_bucket, key, table,
                                               _ss_batches(conn, table, sql, params, batch_rows), i, prog)
        finally:
            conn.rollback()
    return out


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put with back-pressure; gives up (False) once the consumer has stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.2)
            return True
        except queue.Full:
            continue
    return False


def _read_all(cfg: Config, tables: list[tuple[schema.Table, str, list[Any], str]], batch_rows: int,
              q: queue.Queue, stop: threading.Event, todo: Iterator[int], lock: threading.Lock) -> None:
    """Reader thread: takes the next table not yet taken, puts (table index, raw batch) for every batch and
    (index, None) at the table's end; (-1, exception) if reading fails."""
    try:
        while not stop.is_set():
            with lock:
                i = next(todo, None)
            if i is None:
                return
            _table, sql, params, _key = tables[i]
            for rb in _cx_batches(cfg, sql, params, batch_rows):
                if not _put(q, (i, rb), stop):
                    return
            if not _put(q, (i, None), stop):
                return
    except BaseException as exc:  # handed to the consumer, which raises it
        _put(q, (-1, exc), stop)


_M_ARENA_MAX = -8  # glibc mallopt parameter
_ARENAS_LIMITED: list[bool] = []


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas for this process (once). Each chunk's reader/uploader threads and
    connectorx's own threads otherwise get fresh arenas whose freed memory is never returned: RSS grew by
    ~20 MB per chunk (348 -> 491 MB over 8 chunks; flat at ~335 MB with the cap). No-op off glibc."""
    if _ARENAS_LIMITED:
        return
    _ARENAS_LIMITED.append(True)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, arenas)
    except (OSError, AttributeError):
        pass


def _export_pipelined(cfg: Config, tables: list[tuple[schema.Table, str, list[Any], str]], batch_rows: int,
                      prog: _ChunkProgress | None) -> dict[str, dict[str, Any]]:
    """connectorx reads (READERS threads, one table each at a time) -> typed Arrow + Parquet encode (this
    thread, one writer per table being read) -> sha256 + upload (thread).

    Two readers keep two server threads busy (MariaDB runs a query on one core; the big tables, invoices
    and payments, are read side by side). The queue holds at most QUEUE_BATCHES raw batches, so memory
    stays flat whatever the chunk's size; finished table files wait on local disk for the uploader.
    """
    _limit_malloc_arenas()
    client = s3io.client(cfg)
    q: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
    stop = threading.Event()
    todo, lock = iter(range(len(tables))), threading.Lock()
    readers = [threading.Thread(target=_read_all, args=(cfg, tables, batch_rows, q, stop, todo, lock),
                                name=f"export-read-{r}", daemon=True) for r in range(min(READERS, len(tables)))]
    uploads: dict[str, Future] = {}
    writers: dict[int, _TableWriter] = {}
    with ThreadPoolExecutor(1, thread_name_prefix="export-upload") as uploader:
        for r in readers:
            r.start()
        try:
            while len(uploads) < len(tables):
                i, item = q.get()
                if i < 0:
                    raise item
                table, _sql, _params, key = tables[i]
                if i not in writers:
                    writers[i] = _TableWriter(table)
                writer = writers[i]
                if item is None:
                    uploads[table.name] = uploader.submit(writers.pop(i).finish, client, cfg.s3_bucket, key)
                    if prog is not None:
                        prog.table_done(i)
                    continue
                batch = to_arrow(table, {n: item.column(n) for n in item.schema.names})
                writer.write(batch)
                if prog is not None:
                    prog.batch(i, table, batch)
            return {tables[i][0].name: uploads[tables[i][0].name].result() for i in range(len(tables))}
        except BaseException:
            for writer in writers.values():
                writer.upload.abort()
            for fut in uploads.values():
                fut.cancel()
            raise
        finally:
            stop.set()
            for r in readers:
                r.join(timeout=30)


def _export_tables(cfg: Config, tables: list[tuple[schema.Table, str, list[Any], str]], batch_rows: int,
                   engine: str, prog: _ChunkProgress | None = None) -> dict[str, dict[str, Any]]:
    if engine == "connectorx":
        return _export_pipelined(cfg, tables, batch_rows, prog)
    if engine != "mysqlclient":
        raise ValueError(f"engine must be 'mysqlclient' or 'connectorx', got {engine!r}")
    return _export_snapshot(cfg, tables, batch_rows, prog)


def engine_for(mode: str, frozen: bool) -> str:
    """The export engine of a run: per-table reads (connectorx) only where the country cannot change
    during the export (see the module docstring), else one consistent snapshot."""
    return "connectorx" if frozen and mode == "offline" else "mysqlclient"


# --------------------------------------------------------------------------------------------- exports
def export_chunk(cfg: Config, country: str, run_id: str, chunk: dict[str, int],
                 customer_ids: list[int] | None = None, batch_rows: int = DEFAULT_BATCH_ROWS,
                 engine: str = "mysqlclient") -> dict[str, Any]:
    """Export every customer table of one chunk to Parquet; write and return the chunk's manifest.

    `customer_ids` restricts the chunk to those customers (re-migration). Rerunning replaces the files whole.
    """
    country = normalize_country(country)
    n, lo, hi = int(chunk["chunk"]), int(chunk["lo"]), int(chunk["hi"])
    if lo > hi:
        raise ValueError(f"chunk {n}: lo {lo} > hi {hi}")
    if customer_ids is not None:
        customer_ids = sorted({int(c) for c in customer_ids})
        if not customer_ids:
            raise ValueError("customer_ids is empty: nothing to export")
    if batch_rows < 1:
        raise ValueError("batch_rows must be >= 1")
    t0 = time.monotonic()
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    native = engine == "connectorx"
    jobs = [(t, _chunk_query(t, customer_ids, native), _chunk_params(t, country, lo, hi, customer_ids),
             s3io.table_key(cfg, country, run_id, t.name, n)) for t in schema.CUSTOMER_TABLES]
    prog = _ChunkProgress(cfg, f"export {country} chunk {n}", lo, hi, len(jobs),
                          len(customer_ids) if customer_ids is not None else chunk.get("customers"))
    tables = _export_tables(cfg, jobs, batch_rows, engine, prog)
    prog.finish()
    seconds = time.monotonic() - t0
    rows = sum(t["rows"] for t in tables.values())
    manifest = {
        "country": country, "run_id": run_id, "chunk": n, "lo": lo, "hi": hi,
        "customers": tables["customers"]["rows"], "customer_ids": customer_ids, "engine": engine,
        "batch_rows": batch_rows, "tables": tables, "rows": rows, "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds, 1) if seconds > 0 else None,
    }
    s3io.put_json(s3io.client(cfg), cfg.s3_bucket,
                  s3io.stage_key(cfg, country, run_id, "manifest", n, "json"), manifest)
    log.info("export %s chunk %d [%d..%d]: %d customers, %d rows in %.2fs (%s)", country, n, lo, hi,
             manifest["customers"], rows, seconds, engine)
    return manifest


def export_plans(cfg: Config, country: str, run_id: str) -> dict[str, Any]:
    """Export the country's plan catalogue to `table=plans/part-00000.parquet`; returns its manifest entry."""
    country = normalize_country(country)
    sql = f"SELECT {_select_list(schema.PLANS, 'p')} FROM plans p WHERE p.country = %s ORDER BY p.plan_id"
    key = s3io.table_key(cfg, country, run_id, "plans", 0)
    return _export_tables(cfg, [(schema.PLANS, sql, [country], key)], DEFAULT_BATCH_ROWS,
                          "mysqlclient")["plans"]
