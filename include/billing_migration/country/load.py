"""Transformed rows -> Cassandra. One customer = one single-partition UNLOGGED batch that replaces the partition.

Why a batch of `DELETE ... USING TIMESTAMP t-1` + `INSERT ... USING TIMESTAMP t`: the delete shadows every
cell older than t (a previous load, a stale row that should not exist), the inserts land right after it, and
single-partition batches are applied atomically by the replica. A rerun picks a later t, so loading the same
chunk twice leaves exactly the same partition: idempotent, no duplicates, no stale rows. Each row is
inserted with only its own entity's columns, so no null-cell tombstones are written.

The `customers_by_country` index entry of a chunk is written before its partitions, so a reset (or the
comparator) can always find every partition that a crashed load may have written.

Throughput: batches are built column-wise (per entity type, with Arrow) from values serialized once per
column, byte-identical to binding row by row but ~4x less client CPU (customer_batches); async requests bounded
by a semaphore (`concurrency` in flight), token-aware routing (see connections.cassandra_cluster), optional
token-bucket rate limit in rows/s. Write timeouts, unavailable and overloaded errors are retried with
exponential backoff and counted (`timeouts_retried`); a customer that still fails makes the task fail loudly
(`LoadError`) after the rest of the chunk is written; it is never dropped.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from billing_migration.config import Config, normalize_country
from billing_migration.progress import Progress, interval_of
from billing_migration.stores import connections, s3io, schema

log = logging.getLogger(__name__)

STATIC_COLS = list(schema.CUSTOMER_STATIC.values())
MAX_RETRIES = 6
MAX_BATCH_ROWS = 2000  # rows per batch (~0.5 MiB); batch_size_fail_threshold is 1 MiB here
REQUEST_TIMEOUT_S = 30.0
DATE_EPOCH_OFFSET = 2**31  # CQL `date` on the wire: unsigned days with 1970-01-01 at 2^31


class LoadError(RuntimeError):
    """Some customers could not be written after retries; the chunk must be rerun (it is idempotent)."""


def _retryable() -> tuple[type[BaseException], ...]:
    from cassandra import OperationTimedOut, Unavailable, WriteFailure, WriteTimeout
    from cassandra.cluster import NoHostAvailable
    from cassandra.protocol import OverloadedErrorMessage

    return (WriteTimeout, Unavailable, OperationTimedOut, NoHostAvailable, OverloadedErrorMessage, WriteFailure)


class TokenBucket:
    """Rows/s limiter; `take(n)` sleeps until n tokens are available. rate <= 0: unlimited."""

    def __init__(self, rate: float) -> None:
        self.rate = float(rate)
        self.tokens = float(rate)
        self.last = time.monotonic()

    def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        self.tokens = min(max(self.rate, n), self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < n:
            time.sleep((n - self.tokens) / self.rate)
            self.last = time.monotonic()
            self.tokens = n
        self.tokens -= n


class AsyncWriter:
    """Bounded-concurrency async executor with retry/backoff of transient write errors."""

    def __init__(self, session, concurrency: int, rate_limit_rows_per_s: int = 0,
                 max_retries: int | None = None, backoff_s: float = 0.05) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.session = session
        self.slots = threading.Semaphore(concurrency)
        self.cond = threading.Condition()
        self.inflight = 0
        self.retry_q: deque = deque()
        self.failed: list[tuple[Any, BaseException]] = []
        self.bucket = TokenBucket(rate_limit_rows_per_s)
        self.max_retries = MAX_RETRIES if max_retries is None else max_retries
        self.backoff_s = backoff_s
        self.retryable = _retryable()
        self.timeouts_retried = 0
        self.requests = 0

    def submit(self, key: Any, statement, cost: int = 1, attempt: int = 0) -> None:
        if attempt == 0:
            self.bucket.take(cost)
        self.slots.acquire()
        with self.cond:
            self.inflight += 1
        self.requests += 1
        try:
            fut = self.session.execute_async(statement, timeout=REQUEST_TIMEOUT_S)
        except Exception as exc:  # e.g. NoHostAvailable raised synchronously
            self._err(exc, None, key, statement, cost, attempt)
            return
        fut.add_callbacks(self._ok, self._err, callback_args=(fut,),
                          errback_args=(fut, key, statement, cost, attempt))

    def _done(self) -> None:
        self.slots.release()
        with self.cond:
            self.inflight -= 1
            self.cond.notify_all()

    def _ok(self, _result, fut) -> None:
        connections.release(fut)
        self._done()

    def _err(self, exc: BaseException, fut, key, statement, cost: int, attempt: int) -> None:
        if fut is not None:
            connections.release(fut)
        if isinstance(exc, self.retryable) and attempt < self.max_retries:
            self.retry_q.append((key, statement, cost, attempt + 1))
        else:
            self.failed.append((key, exc))
        self._done()

    def pump_retries(self) -> None:
        """Resubmit failed-but-retryable requests (main thread: the backoff sleep is the back-pressure)."""
        while self.retry_q:
            key, statement, cost, attempt = self.retry_q.popleft()
            time.sleep(min(5.0, self.backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random()))
            self.timeouts_retried += 1
            log.warning("retrying write for %s (attempt %d)", key, attempt)
            self.submit(key, statement, cost, attempt)

    def drain(self) -> None:
        """Wait until nothing is in flight and nothing is left to retry."""
        while True:
            with self.cond:
                while self.inflight:
                    self.cond.wait(timeout=1.0)
            if not self.retry_q:
                return
            self.pump_retries()

    def raise_failures(self, what: str) -> None:
        if self.failed:
            keys = sorted({k for k, _ in self.failed}, key=str)
            raise LoadError(f"{len(keys)} {what} could not be written after {self.max_retries} retries "
                            f"(e.g. {keys[:10]}); first error: {self.failed[0][1]!r}. Rerun the task: "
                            "the load is idempotent.")


def _prepare(session) -> dict[str, Any]:

    stmts = {
        "delete": "DELETE FROM customer_billing USING TIMESTAMP ? WHERE customer_id = ?",
        "static": (f"INSERT INTO customer_billing (customer_id, {', '.join(STATIC_COLS)}, customer_run_id) "
                   f"VALUES ({', '.join(['?'] * (len(STATIC_COLS) + 2))}) USING TIMESTAMP ?"),
        "index": "INSERT INTO customers_by_country (country, bucket, customer_id, run_id) VALUES (?, ?, ?, ?)",
    }
    for t in schema.ENTITY_TABLES:
        cols = schema.entity_row_columns(t)
        stmts[t.entity] = (f"INSERT INTO customer_billing (customer_id, entity_type, entity_id, {', '.join(cols)}, "
                           f"run_id) VALUES ({', '.join(['?'] * (len(cols) + 4))}) USING TIMESTAMP ?")
    out = {}
    for name, cql in stmts.items():
        p = session.prepare(cql)
        p.consistency_level = connections.consistency("write")
        out[name] = p
    return out


def _now_us() -> int:
    return time.time_ns() // 1000


def _py(col: pa.ChunkedArray) -> list:
    """Column -> Python values for the driver; timestamps as epoch ms ints (exact, and ~5x cheaper to
    serialise than tz-aware datetimes); dates as the CQL `date` wire integer, days since 1970 + 2^31, which
    SimpleDateType packs as-is (a datetime.date costs a calendar.timegm per value to reach the same int)."""
    if pa.types.is_timestamp(col.type):
        return col.cast(pa.timestamp("ms")).cast(pa.int64()).to_pylist()
    if pa.types.is_date32(col.type):
        return pc.add(col.cast(pa.int32()).cast(pa.int64()), DATE_EPOCH_OFFSET).to_pylist()
    return col.to_pylist()


def _serialized(col: pa.ChunkedArray, cql_type, protocol_version: int) -> list:
    """Column -> the bytes BoundStatement.bind would produce for each value; a null is sent as UNSET.

    UNSET writes no cell at all, where a bound null would write a tombstone cell: every load first deletes
    the whole partition, so an absent cell reads back as null all the same, without tombstones piling up for
    the compare, the nightly scans and compaction to wade through.
    """
    from cassandra.query import UNSET_VALUE

    return [UNSET_VALUE if v is None else v for v in _serialized_or_null(col, cql_type, protocol_version)]


def _serialized_or_null(col: pa.ChunkedArray, cql_type, protocol_version: int) -> list:
    """Column -> the bytes BoundStatement.bind would produce for each value (None stays None = null).

    The driver's own serialize is used, except for the two types whose ints it packs through a failed
    attribute lookup first (timestamp: int64_pack(int(v)), date: uint32_pack(v)): packing those ints
    directly gives the same bytes without two exceptions per value.
    """
    from cassandra import cqltypes
    from cassandra.marshal import int64_pack, uint32_pack

    if pa.types.is_decimal128(col.type) and issubclass(cql_type, cqltypes.DecimalType):
        fast = _decimal_bytes(col)
        if fast is not None:
            return fast
    values = _py(col)
    if pa.types.is_timestamp(col.type) and issubclass(cql_type, cqltypes.DateType):
        pack = int64_pack
    elif pa.types.is_date32(col.type) and issubclass(cql_type, cqltypes.SimpleDateType):
        pack = uint32_pack
    else:
        ser = cql_type.serialize
        return [None if v is None else ser(v, protocol_version) for v in values]
    return [None if v is None else pack(v) for v in values]


def _decimal_bytes(col: pa.ChunkedArray) -> list | None:
    """decimal128 column -> DecimalType bytes (int32 scale + minimal two's-complement unscaled varint), read
    straight from Arrow's unscaled integers instead of going through Decimal.as_tuple() and varint_pack.
    None when a value does not fit 64 bits (the caller then uses the driver's serializer)."""
    from cassandra.marshal import int32_pack

    scale = int32_pack(col.type.scale)
    out: list = []
    for chunk in col.chunks:
        if len(chunk) == 0:
            continue
        words = np.frombuffer(chunk.buffers()[1], dtype="<i8")[2 * chunk.offset: 2 * (chunk.offset + len(chunk))]
        low, high = words[0::2], words[1::2]
        valid = chunk.is_valid().to_numpy(zero_copy_only=False)
        if not np.array_equal(high[valid], low[valid] >> 63):  # needs more than 64 bits
            return None
        out += [scale + x.to_bytes(((~x if x < 0 else x).bit_length() + 8) // 8, "big", signed=True) if ok
                else None for x, ok in zip(low.tolist(), valid.tolist(), strict=True)]
    return out


def _row_params(rows: pa.Table, prepared: dict[str, Any], run_id: str) -> list[tuple[bytes, tuple]]:
    """Per row of `rows`, (query id, serialized values without the trailing write timestamp).

    Column-wise instead of row-wise: each entity's rows are taken out with Arrow, only that entity's columns
    are converted and serialized (the driver's serializers, see _serialized), and the value tuples are built
    with zip; constants (entity type, run id) are serialized once. Same bytes as binding row by row.
    """
    n = rows.num_rows
    out: list[Any] = [None] * n
    matched = 0
    etype = rows.column("entity_type")
    groups = [("static", None, pc.is_null(etype))]
    groups += [(t.entity, t.entity, pc.equal(etype, t.entity)) for t in schema.ENTITY_TABLES]
    for name, et, mask in groups:
        idx = np.flatnonzero(mask.fill_null(False).to_numpy(zero_copy_only=False))
        if not len(idx):
            continue
        stmt = prepared[name]
        meta = stmt.column_metadata
        proto = stmt.protocol_version
        cols = STATIC_COLS if et is None else ["entity_id", *_entity_cols(et)]
        sub = rows.select(["customer_id", *cols]).take(pa.array(idx))
        first = 1 if et is None else 2  # bind positions: customer_id[, entity_type], cols..., run id, ts
        series = [_serialized(sub.column("customer_id"), meta[0].type, proto)]
        if et is not None:
            series.append(repeat(meta[1].type.serialize(et, proto)))
        series += [_serialized(sub.column(c), meta[first + k].type, proto) for k, c in enumerate(cols)]
        series.append(repeat(meta[-2].type.serialize(run_id, proto)))
        qid = stmt.query_id
        for i, values in zip(idx.tolist(), zip(*series, strict=False), strict=True):
            out[i] = (qid, values)
        matched += len(idx)
    if matched != n:
        known = {t.entity for t in schema.ENTITY_TABLES}
        unknown = sorted(set(pc.unique(etype.drop_null()).to_pylist()) - known)
        raise ValueError(f"transformed rows with unknown entity_type {unknown}: expected one of {sorted(known)}")
    return out


def _entity_cols(entity: str) -> list[str]:
    """Cassandra columns an entity row fills (besides customer_id, entity_type, entity_id, run_id)."""
    return schema.entity_row_columns(schema.TABLE_BY_ENTITY[entity])


def customer_batches(rows: pa.Table, prepared: dict[str, Any], run_id: str):
    """Yield (customer_id, BatchStatement, rows in batch) for transformed rows sorted by customer.

    One batch per customer; a customer with more than MAX_BATCH_ROWS rows (far beyond any real one) is
    split so no batch nears batch_size_fail_threshold: every part carries the same timestamp t, so the parts
    still converge to exactly the new partition whatever order they apply in (only atomicity is given up).

    The DELETE goes through BatchStatement.add (it gives the batch its routing key and keyspace); the rows are
    appended as already-serialized (query id, values) entries, which is what add() stores after binding:
    binding 40 columns per row in Python was half the load's CPU.
    """
    from cassandra.marshal import int64_pack
    from cassandra.query import BatchStatement, BatchType

    level = prepared["delete"].consistency_level  # set once from the config by _prepare

    def new_batch():
        return BatchStatement(batch_type=BatchType.UNLOGGED, consistency_level=level)

    n = rows.num_rows
    if n == 0:
        return
    if any(p.column_encryption_policy for p in prepared.values()):  # bind() would encrypt: keep the slow path
        yield from _customer_batches_bound(rows, prepared, run_id)
        return
    cust = rows.column("customer_id").to_numpy()
    starts = np.flatnonzero(np.r_[True, cust[1:] != cust[:-1]])
    ends = np.r_[starts[1:], n]
    params = _row_params(rows, prepared, run_id)
    delete = prepared["delete"]
    limit = max(1, MAX_BATCH_ROWS)
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        cid = int(cust[s])
        t = _now_us()
        ts = (int64_pack(t),)
        first = batch = new_batch()
        batch.add(delete, (t - 1, cid))
        for lo in range(s, e, limit):
            if lo > s:  # a later part of a split customer: same partition, no second DELETE
                batch = new_batch()
                batch.routing_key, batch.keyspace = first.routing_key, first.keyspace
            hi = min(e, lo + limit)
            batch._statements_and_parameters.extend([(True, q, v + ts) for q, v in params[lo:hi]])
            yield cid, batch, hi - lo


def _customer_batches_bound(rows: pa.Table, prepared: dict[str, Any], run_id: str):
    """customer_batches through BatchStatement.add (bind per row): only when column encryption is on."""
    from cassandra.query import BatchStatement, BatchType

    level = prepared["delete"].consistency_level  # set once from the config by _prepare

    def new_batch():
        return BatchStatement(batch_type=BatchType.UNLOGGED, consistency_level=level)

    cust = rows.column("customer_id").to_numpy()
    starts = np.flatnonzero(np.r_[True, cust[1:] != cust[:-1]])
    ends = np.r_[starts[1:], rows.num_rows]
    cols = {name: _py(rows.column(name)) for name in rows.column_names}
    etype = cols["entity_type"]
    entity_cols = {t.entity: schema.entity_row_columns(t) for t in schema.ENTITY_TABLES}
    limit = max(1, MAX_BATCH_ROWS)
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        cid = int(cust[s])
        t = _now_us()
        batch = new_batch()
        batch.add(prepared["delete"], (t - 1, cid))
        count = 0
        for i in range(s, e):
            if count == limit:
                yield cid, batch, count
                batch, count = new_batch(), 0
            et = etype[i]
            if et is None:
                batch.add(prepared["static"], (cid, *(_unset(cols[c][i]) for c in STATIC_COLS), run_id, t))
            else:
                batch.add(prepared[et], (cid, et, cols["entity_id"][i],
                                         *(_unset(cols[c][i]) for c in entity_cols[et]), run_id, t))
            count += 1
        yield cid, batch, count


def _unset(value: Any) -> Any:
    """A null is sent as UNSET (no cell, no tombstone; see _serialized)."""
    from cassandra.query import UNSET_VALUE

    return UNSET_VALUE if value is None else value


INDEX_BATCH_ROWS = 100  # index entries per request: one (country, bucket) partition, ~4 KB


def index_batches(insert, country: str, customers: list[int], run_id: str):
    """The chunk's customers_by_country entries as unlogged batches, each within ONE (country, bucket)
    partition (so a batch is one mutation on one replica set, not a multi-partition batch): a 5,000-customer
    chunk costs ~64 requests instead of 5,000 (one request per entry was a quarter of the load's time).
    Yields (label for errors, batch, entries)."""
    from cassandra.query import BatchStatement, BatchType

    level = insert.consistency_level  # set once from the config by _prepare
    by_bucket: dict[int, list[int]] = {}
    for cid in customers:
        by_bucket.setdefault(schema.customer_bucket(cid), []).append(cid)
    for bucket, cids in sorted(by_bucket.items()):
        for i in range(0, len(cids), INDEX_BATCH_ROWS):
            part = cids[i:i + INDEX_BATCH_ROWS]
            batch = BatchStatement(batch_type=BatchType.UNLOGGED, consistency_level=level)
            for cid in part:
                batch.add(insert, (country, bucket, cid, run_id))
            yield f"bucket {bucket} customers {part[0]}..{part[-1]}", batch, len(part)


def load_rows(session, country: str, rows: pa.Table, run_id: str, concurrency: int = 64,
              rate_limit_rows_per_s: int = 0, progress: Progress | None = None) -> dict[str, Any]:
    """Write transformed rows (index entries first, then one batch per customer). Raises LoadError."""
    with connections.cyclic_gc_paused():  # ~30 % of the client's CPU otherwise (connections.cyclic_gc_paused)
        return _load_rows(session, country, rows, run_id, concurrency, rate_limit_rows_per_s, progress)


def _load_rows(session, country: str, rows: pa.Table, run_id: str, concurrency: int,
               rate_limit_rows_per_s: int, progress: Progress | None) -> dict[str, Any]:
    t0 = time.monotonic()
    prepared = _prepare(session)
    customers = sorted(set(pc.unique(rows.column("customer_id")).to_pylist())) if rows.num_rows else []
    if progress is not None:
        progress.customers_total, progress.rows_total = len(customers), rows.num_rows
    idx = AsyncWriter(session, concurrency)
    for key, batch, count in index_batches(prepared["index"], country, customers, run_id):
        idx.submit(key, batch, cost=count)
    idx.drain()
    idx.raise_failures("customers_by_country batches")
    w = AsyncWriter(session, concurrency, rate_limit_rows_per_s)
    batches = written = 0
    last = None
    for cid, batch, count in customer_batches(rows, prepared, run_id):
        w.submit(cid, batch, cost=count)
        batches += 1
        written += count
        if progress is not None:
            progress.update(count, int(cid != last))
            last = cid
        if w.retry_q:
            w.pump_retries()
    w.drain()
    w.raise_failures("customers")
    seconds = time.monotonic() - t0
    return {"customers": len(customers), "rows": written, "batches": batches,
            "timeouts_retried": w.timeouts_retried + idx.timeouts_retried, "seconds": round(seconds, 3),
            "rows_per_s": round(written / seconds, 1) if seconds > 0 else 0.0}


def load_chunk(cfg: Config, country: str, run_id: str, chunk: int, concurrency: int = 64,
               rate_limit_rows_per_s: int = 0) -> dict[str, Any]:
    """Load one transformed chunk; every customer's partition is replaced whole."""
    country = normalize_country(country)
    client = s3io.client(cfg)
    rows = s3io.get_parquet(client, cfg.s3_bucket, s3io.stage_key(cfg, country, run_id, "transformed", chunk))
    prog = Progress(f"load {country} chunk {chunk}", interval=interval_of(cfg))
    with connections.cassandra_session(cfg) as session:
        counts = load_rows(session, country, rows, run_id, concurrency, rate_limit_rows_per_s, prog)
    prog.finish()
    counts["chunk"] = chunk
    log.info("load %s chunk %d: %d customers, %d rows, %d batches, %d retried, %.0f rows/s", country, chunk,
             counts["customers"], counts["rows"], counts["batches"], counts["timeouts_retried"],
             counts["rows_per_s"])
    return counts


def load_plans(cfg: Config, country: str, run_id: str) -> dict[str, Any]:
    """Replace the country's plan catalogue (one partition) with the exported plans that pass validation."""
    from cassandra.query import BatchStatement, BatchType

    from billing_migration.country import transform

    country = normalize_country(country)
    client = s3io.client(cfg)
    plans = s3io.get_parquet(client, cfg.s3_bucket, s3io.table_key(cfg, country, run_id, "plans", 0))
    plans = plans.select(s3io.arrow_schema(schema.PLANS).names).cast(s3io.arrow_schema(schema.PLANS))
    empty = {t.name: s3io.arrow_schema(t).empty_table() for t in schema.CUSTOMER_TABLES}
    valid, rejects, _ = transform.validate(empty, plans, country)
    good = valid["plans"]
    cols = ["plan_id", "currency", "name", "price", "screens", "quality", "updated_at"]
    with connections.cassandra_session(cfg) as session:
        delete = session.prepare("DELETE FROM plans USING TIMESTAMP ? WHERE country = ?")
        insert = session.prepare(f"INSERT INTO plans (country, {', '.join(cols)}, run_id) "
                                 f"VALUES ({', '.join(['?'] * (len(cols) + 2))}) USING TIMESTAMP ?")
        t = _now_us()
        batch = BatchStatement(batch_type=BatchType.UNLOGGED, consistency_level=connections.consistency("write"))
        batch.add(delete, (t - 1, country))
        data = {c: good.column(c).to_pylist() for c in cols}
        for i in range(good.num_rows):
            batch.add(insert, (country, *(data[c][i] for c in cols), run_id, t))
        session.execute(batch, timeout=REQUEST_TIMEOUT_S)
    return {"plans": good.num_rows, "rejected": rejects.num_rows}


def delete_country(cfg: Config, country: str, table: str | None = None,
                   concurrency: int = 64) -> dict[str, Any]:
    """Reset a country's target data, found through customers_by_country (never a full table scan).

    table=None: every partition of the country, its index entries and its plans. table = an entity table
    (e.g. "invoices") or entity type ("invoice"): only those rows of the country's customers.
    """
    country = normalize_country(country)
    entity = None
    if table is not None:
        tdef = schema.TABLES_BY_NAME.get(table) or schema.TABLE_BY_ENTITY.get(table)
        if tdef is None or tdef.entity is None:
            raise ValueError(f"table must be one of {[t.name for t in schema.ENTITY_TABLES]} or None, got {table!r}")
        entity = tdef.entity
    t0 = time.monotonic()
    customers = 0
    with connections.cassandra_session(cfg) as session:
        select = session.prepare("SELECT customer_id FROM customers_by_country WHERE country = ? AND bucket = ?")
        if entity is None:
            stmt = session.prepare("DELETE FROM customer_billing WHERE customer_id = ?")
        else:
            stmt = session.prepare("DELETE FROM customer_billing WHERE customer_id = ? AND entity_type = ?")
        drop_bucket = session.prepare("DELETE FROM customers_by_country WHERE country = ? AND bucket = ?")
        w = AsyncWriter(session, concurrency)
        for bucket in range(schema.CUSTOMERS_BY_COUNTRY_BUCKETS):
            ids = [r.customer_id for r in session.execute(select, (country, bucket), timeout=REQUEST_TIMEOUT_S)]
            for cid in ids:
                w.submit(cid, stmt.bind((cid,) if entity is None else (cid, entity)))
            customers += len(ids)
            if w.retry_q:
                w.pump_retries()
        w.drain()
        w.raise_failures("partitions")
        if entity is None:  # index entries last: a crash above leaves them for the next reset
            for bucket in range(schema.CUSTOMERS_BY_COUNTRY_BUCKETS):
                w.submit(("bucket", bucket), drop_bucket.bind((country, bucket)))
            w.submit(("plans", country), session.prepare("DELETE FROM plans WHERE country = ?").bind((country,)))
            w.drain()
            w.raise_failures("index buckets")
    seconds = time.monotonic() - t0
    log.info("delete_country %s (%s): %d customers in %.1fs", country, entity or "all", customers, seconds)
    return {"customers": customers, "entity_type": entity, "seconds": round(seconds, 3)}
