"""Change capture from the legacy store's row binlog: which customers of a country changed between two positions.

Why this shape:
- The online mode copies a country while it stays writable and re-migrates every customer touched since the
  copy started, so the reader only has to answer "which customers of `country` changed in [start, stop)"
  (whole-customer re-migration makes the row details irrelevant). Deletes and country moves count: a
  customer row whose before OR after image has the country is the country's.
- Entity rows carry only `customer_id`. They are mapped to the country by the `customers` images seen in the
  same read, else by one batched SELECT after the stream is read. A customer that moves or is deleted
  between the stop position and that SELECT can be misattributed here, but its own `customers` event lies
  after the stop, so the next read reports it: nothing is lost across rounds, and while writes are frozen
  nothing can move at all.
- The stream starts at the exact (log_file, log_pos) with a plain COM_BINLOG_DUMP (`is_mariadb=False`, also
  correct for MariaDB servers): mysql-replication 1.0's MariaDB mode ignores the file and position and can
  only start from a GTID, which makes the server scan the start file from its beginning (and
  BINLOG_GTID_POS() scans it again): about 1 s per GB of binlog, paid inside the freeze. A file/position
  start costs only the delta.
- Positions are only handed out at transaction boundaries (SHOW BINLOG STATUS, or the end of an XID event),
  so a read resumed from any position it returned never starts inside a transaction.
- A start position that is no longer in the binlog (purged before the reader caught up) cannot be read
  without losing changes: `BinlogPurgedError`, never a silent skip.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import socket
import time
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pymysql.err import OperationalError
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.constants import BINLOG
from pymysqlreplication.constants import FIELD_TYPE as T
from pymysqlreplication.event import XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from billing_migration.config import Config, normalize_country
from billing_migration.stores import connections, ledger, schema

log = logging.getLogger(__name__)

CUSTOMER_TABLE = schema.CUSTOMERS.name
WATCHED_TABLES = tuple(t.name for t in schema.CUSTOMER_TABLES)  # customers + the six entity tables
LOOKUP_BATCH = 5000  # customer ids per mapping SELECT
_FILE_RE = re.compile(r"^(?P<base>[^/\\\s]+)\.(?P<seq>\d+)$")
_reader_seq = itertools.count()


@dataclass(frozen=True)
class BinlogPosition:
    """A point in the server's binlog: the next event starts at `log_pos` of `log_file`.

    Positions compare by (file sequence number, offset); file names are not compared as text because the
    sequence outgrows its zero padding (binlog.999999 < binlog.1000000).
    """

    log_file: str
    log_pos: int

    def __post_init__(self) -> None:
        if not isinstance(self.log_file, str) or not _FILE_RE.match(self.log_file):
            raise ValueError(f"binlog file must look like 'binlog.000001', got {self.log_file!r}")
        if isinstance(self.log_pos, bool) or not isinstance(self.log_pos, int) or self.log_pos < 0:
            raise ValueError(f"binlog position must be a non-negative integer, got {self.log_pos!r}")

    @property
    def seq(self) -> int:
        """The file's sequence number (binlog.000042 -> 42)."""
        return int(self.log_file.rsplit(".", 1)[1])

    @property
    def key(self) -> tuple[int, int]:
        return self.seq, self.log_pos

    def __lt__(self, other: BinlogPosition) -> bool:
        return self.key < _pos(other).key

    def __le__(self, other: BinlogPosition) -> bool:
        return self.key <= _pos(other).key

    def __gt__(self, other: BinlogPosition) -> bool:
        return self.key > _pos(other).key

    def __ge__(self, other: BinlogPosition) -> bool:
        return self.key >= _pos(other).key

    def __str__(self) -> str:
        return f"{self.log_file}:{self.log_pos}"

    def as_dict(self) -> dict[str, Any]:
        return {"log_file": self.log_file, "log_pos": self.log_pos}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BinlogPosition:
        if not isinstance(d, dict) or set(d) != {"log_file", "log_pos"}:
            raise ValueError(f"a binlog position is {{'log_file': str, 'log_pos': int}}, got {d!r}")
        return cls(d["log_file"], d["log_pos"])

    @classmethod
    def parse(cls, text: str) -> BinlogPosition:
        """The inverse of str(): 'binlog.000002:1234'."""
        file_, sep, pos = str(text).strip().rpartition(":")
        if not sep or not pos.isdigit():
            raise ValueError(f"a binlog position is written 'binlog.000002:1234', got {text!r}")
        return cls(file_, int(pos))


Position = BinlogPosition  # short alias


def _pos(value: BinlogPosition | dict | str) -> BinlogPosition:
    """Accept a position, its as_dict() (XCom, ledger) or its str()."""
    if isinstance(value, BinlogPosition):
        return value
    if isinstance(value, dict):
        return BinlogPosition.from_dict(value)
    if isinstance(value, str):
        return BinlogPosition.parse(value)
    raise TypeError(f"expected a BinlogPosition, got {type(value).__name__}")


@dataclass(frozen=True)
class ChangeSet:
    """What one read found: events in [start, end) were read; end is the next read's start."""

    start: BinlogPosition
    end: BinlogPosition
    customers: frozenset[int]  # the country's customers touched (insert/update/delete, any of the 7 tables)
    events: int  # row changes of the country's customers seen
    lag_s: float  # now - timestamp of the last event read (0 if none); binlog timestamps have 1 s resolution
    rows_scanned: int = 0  # row changes of the 7 tables in this database, every country
    read_s: float = 0.0  # wall time of the read, connection and mapping SELECT included
    complete: bool = True  # False: max_seconds cut the read short of the stop position (end < stop)

    def as_dict(self) -> dict[str, Any]:
        return {"start": self.start.as_dict(), "end": self.end.as_dict(), "customers": sorted(self.customers),
                "events": self.events, "lag_s": self.lag_s, "rows_scanned": self.rows_scanned,
                "read_s": self.read_s, "complete": self.complete}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChangeSet:
        return cls(start=_pos(d["start"]), end=_pos(d["end"]), customers=frozenset(int(c) for c in d["customers"]),
                   events=int(d["events"]), lag_s=float(d["lag_s"]), rows_scanned=int(d.get("rows_scanned", 0)),
                   read_s=float(d.get("read_s", 0.0)), complete=bool(d.get("complete", True)))


class BinlogPositionError(RuntimeError):
    """A position that this server's binlog cannot serve (purged, reset, or from another server)."""


class BinlogPurgedError(BinlogPositionError):
    """The start position is no longer in the binlog: changes since it are lost to the reader."""

    def __init__(self, position: BinlogPosition, oldest: str | None, detail: str = "") -> None:
        self.position, self.oldest = position, oldest
        kept = f"the oldest binlog still kept is {oldest}" if oldest else "the server keeps no binlog file"
        super().__init__(
            f"binlog position {position} has been purged ({kept}){': ' + detail if detail else ''}. "
            "Changes made since that position can no longer be captured, so this run cannot catch up or flip: "
            "rerun the migration of the country from the start (a new run records a new position), and keep "
            "binlogs longer than a migration lasts (expire_logs_days / binlog_expire_logs_seconds).")


# ------------------------------------------------------------------------------------------ server status
def _fetch(cur, statements: Iterable[str]) -> list[tuple]:
    """Rows of the first statement this server understands (MariaDB and MySQL renamed these over time)."""
    last: Exception | None = None
    for sql in statements:
        try:
            cur.execute(sql)
            return list(cur.fetchall())
        except Exception as exc:  # MySQLdb.ProgrammingError (1064 syntax) on the other server's dialect
            if "1064" not in str(exc) and "syntax" not in str(exc).lower():
                raise
            last = exc
    raise RuntimeError(f"none of {list(statements)} is understood by the server: {last}")


def _status(cur) -> BinlogPosition:
    rows = _fetch(cur, ("SHOW BINLOG STATUS", "SHOW BINARY LOG STATUS", "SHOW MASTER STATUS"))
    if not rows or not rows[0][0]:
        raise RuntimeError("the legacy MySQL server has no binary log (start it with --log-bin, "
                           "--binlog-format=ROW, --binlog-row-image=FULL, --binlog-row-metadata=FULL), "
                           "or use mode=offline")
    return BinlogPosition(rows[0][0], int(rows[0][1]))


def current_position(cfg: Config) -> BinlogPosition:
    """The position the next transaction will be written at (a transaction boundary)."""
    with connections.mysql_conn("mysql_cdc", cfg, autocommit=True) as conn, conn.cursor() as cur:
        return _status(cur)


def _binary_logs(cur) -> list[tuple[str, int]]:
    return [(str(r[0]), int(r[1])) for r in _fetch(cur, ("SHOW BINARY LOGS",))]


def check_position(cur, start: BinlogPosition) -> None:
    """Refuse a start the server can no longer (or never could) serve: before any event is read."""
    logs = _binary_logs(cur)
    if not logs:
        raise BinlogPurgedError(start, None)
    sizes = dict(logs)
    oldest = logs[0][0]
    if start.log_file in sizes:
        if start.log_pos > sizes[start.log_file]:
            raise BinlogPositionError(f"binlog position {start} lies beyond the end of {start.log_file} "
                                      f"({sizes[start.log_file]} bytes): it does not come from this server")
        return
    same_base = start.log_file.rsplit(".", 1)[0] == oldest.rsplit(".", 1)[0]
    if same_base and start.seq < BinlogPosition(oldest, 4).seq:
        raise BinlogPurgedError(start, oldest)
    raise BinlogPositionError(
        f"binlog position {start} is not in this server's binlog ({oldest} .. {logs[-1][0]}): the binlog was "
        "reset or the position comes from another server; rerun the migration of the country from the start")


# --------------------------------------------------------------------------------------------- the reader
def _server_id() -> int:
    """A replica id of our own, in the upper half of the id space (the server is 1), unique per reader.

    The server drops an older dump connection when another connects with the same id, so concurrent readers
    (processes, hosts, threads) must not share one.
    """
    key = f"{socket.gethostname()}:{os.getpid()}:{next(_reader_seq)}"
    return 0x80000000 | (zlib.crc32(key.encode()) & 0x7FFFFFFF)


@dataclass
class _Tally:
    """What the stream showed, before entity rows are mapped to countries."""

    country: str
    mine: set[int] = field(default_factory=set)  # customers seen with the country in an image
    elsewhere: set[int] = field(default_factory=set)  # customers seen, never with the country
    customer_rows: int = 0  # customer row changes of the country
    child_rows: Counter = field(default_factory=Counter)  # entity row changes per customer-id tuple
    rows: int = 0
    last_ts: int = 0

    def add(self, event) -> None:
        images = _images(event)
        self.rows += len(images)
        if event.table == CUSTOMER_TABLE:
            for imgs in images:
                cids = {int(img["customer_id"]) for img in imgs}
                if any(img.get("country") == self.country for img in imgs):
                    self.mine.update(cids)
                    self.customer_rows += 1
                else:
                    self.elsewhere.update(cids)
            return
        for imgs in images:
            self.child_rows[tuple(sorted({int(img["customer_id"]) for img in imgs}))] += 1

    def unknown(self) -> set[int]:
        known = self.mine | self.elsewhere
        return {c for key in self.child_rows for c in key if c not in known}


def _images(event) -> list[tuple[dict, ...]]:
    """Row images of a row event: (values,) for inserts and deletes, (before, after) for updates."""
    fast = _fast_images(event)
    DECODED["library" if fast is None else "fast"] += 1
    if fast is not None:
        return fast
    out = []
    for row in event.rows:
        if "values" in row:
            out.append((row["values"],))
        else:
            out.append((row["before_values"], row["after_values"]))
    return out


# ---------------------------------------------------------------------------------- fast row-image decoding
# The library decodes every column of every image (decimals, datetimes, strings) into Python objects; the
# reader needs two columns. Skipping the others by their binary sizes reads ~3x as many events per second.
# Any column type or event shape not handled here falls back to the library's decoding of that event.
_COLS_NEEDED = ("customer_id", "country")
_COMPRESSED = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
_FAST_DECODE = True  # False: the library decodes every image (the tests compare both)
DECODED: Counter = Counter()  # row events decoded per path ("fast" / "library") in this process
_NO_LAYOUT = ()


def _decimal_size(precision: int, decimals: int) -> int:
    integral = precision - decimals
    return (integral // 9 * 4 + _COMPRESSED[integral % 9] + decimals // 9 * 4 + _COMPRESSED[decimals % 9])


def _column_layout(col) -> tuple[str, int] | None:
    """(how, n) to step over one non-NULL value: fixed n bytes, or a length prefix of n bytes."""
    fixed = {T.TINY: 1, T.SHORT: 2, T.INT24: 3, T.LONG: 4, T.LONGLONG: 8, T.FLOAT: 4, T.DOUBLE: 8,
             T.YEAR: 1, T.DATE: 3, T.TIME: 3, T.TIMESTAMP: 4, T.DATETIME: 8}
    if col.type in fixed:
        return "fixed", fixed[col.type]
    if col.type in (T.DATETIME2, T.TIMESTAMP2, T.TIME2):
        base = {T.DATETIME2: 5, T.TIMESTAMP2: 4, T.TIME2: 3}[col.type]
        return "fixed", base + (col.fsp + 1) // 2
    if col.type == T.NEWDECIMAL:
        return "fixed", _decimal_size(col.precision, col.decimals)
    if col.type in (T.VARCHAR, T.STRING):
        return "prefixed", 2 if col.max_length > 255 else 1
    if col.type in (T.BLOB, T.JSON, T.GEOMETRY):
        return "prefixed", col.length_size
    if col.type in (T.ENUM, T.SET):
        return "fixed", col.size
    if col.type == T.BIT:
        return "fixed", col.bytes
    return None


def _table_layout(event) -> tuple | None:
    """Per column: (step, name we need or None, unsigned); None when a column type is not handled.

    Kept on the library's Table object of the event's TABLE_MAP, so it lives exactly as long as that map.
    """
    table = event.table_map[event.table_id]
    layout = getattr(table, "_bm_layout", None)
    if layout is None:
        cols = []
        for col in table.columns:
            step = _column_layout(col)
            if step is None:
                cols = None
                break
            cols.append((*step, col.name if col.name in _COLS_NEEDED else None, col.unsigned))
        if cols is not None and "customer_id" not in {c[2] for c in cols}:
            cols = None  # no column names in the TABLE_MAP (binlog_row_metadata != FULL): the library looks up
        layout = _NO_LAYOUT if cols is None else tuple(cols)
        table._bm_layout = layout
    return layout or None


def _fast_images(event) -> list[tuple[dict, ...]] | None:
    if not _FAST_DECODE:
        return None
    layout = _table_layout(event)
    n = len(layout) if layout else 0
    full = (1 << n) - 1
    bitmaps = [event.columns_present_bitmap]
    if isinstance(event, UpdateRowsEvent):
        bitmaps.append(event.columns_present_bitmap2)
    if (layout is None or not event.complete or event.event_type == BINLOG.PARTIAL_UPDATE_ROWS_EVENT
            or any(int.from_bytes(b, "little") & full != full for b in bitmaps)):
        return None  # not a full row image of known column types: let the library decode it
    data = event.packet.read(event.event_size - event.packet.read_bytes)
    nb = (n + 7) // 8
    out, o = [], 0
    while o < len(data):
        imgs = []
        for _ in bitmaps:
            nulls, o, img = int.from_bytes(data[o:o + nb], "little"), o + nb, {}
            for i, (how, size, name, unsigned) in enumerate(layout):
                if nulls >> i & 1:
                    if name:
                        img[name] = None
                    continue
                if how == "prefixed":
                    length, o = int.from_bytes(data[o:o + size], "little"), o + size
                else:
                    length = size
                if name == "customer_id":
                    img[name] = int.from_bytes(data[o:o + length], "little", signed=not unsigned)
                elif name == "country":
                    img[name] = bytes(data[o:o + length]).decode("utf-8").rstrip(" ")
                o += length
            imgs.append(img)
        out.append(tuple(imgs))
    return out


def _stream(cfg: Config, start: BinlogPosition):
    return BinLogStreamReader(
        connection_settings=connections.mysql_cdc_settings(cfg), server_id=_server_id(),
        resume_stream=True, log_file=start.log_file, log_pos=start.log_pos, blocking=False,
        only_schemas=[cfg.mysql_database], only_tables=list(WATCHED_TABLES),
        # XID events end every transaction: they carry the position checks even when no row is ours.
        # freeze_schema: a TABLE_MAP is decoded once per table id and read (an ALTER gives a new table id).
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent],
        is_mariadb=False, enable_logging=False, freeze_schema=True)


def _read_stream(cfg: Config, country: str, start: BinlogPosition, stop: BinlogPosition,
                 max_seconds: float | None) -> tuple[_Tally, BinlogPosition, bool]:
    """Tally row events in [start, stop); returns the tally, the end position and whether stop was reached.

    Every returned event's end position is checked: the first one beyond `stop` ends the read (a transaction
    never straddles `stop`, a boundary). `max_seconds` is only honoured at an XID, so `end` stays a boundary.
    """
    tally = _Tally(country)
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    end_file, end_pos, reached = start.log_file, start.log_pos, False
    seq_of: dict[str, int] = {}
    stream = _stream(cfg, start)
    try:
        for event in stream:
            fname = stream.log_file
            seq = seq_of[fname] if fname in seq_of else seq_of.setdefault(fname, BinlogPosition(fname, 0).seq)
            key = (seq, stream.log_pos)
            if key > stop.key:
                reached = True
                break
            tally.last_ts = max(tally.last_ts, event.timestamp)
            if not isinstance(event, XidEvent):
                tally.add(event)
                continue
            end_file, end_pos = fname, stream.log_pos
            if key == stop.key:
                reached = True
                break
            if deadline is not None and time.monotonic() > deadline:
                break
        else:  # end of the binlog (non-blocking): everything up to the stream's position was seen
            end_file, end_pos = stream.log_file or end_file, stream.log_pos or end_pos
            reached = BinlogPosition(end_file, end_pos) >= stop
    except OperationalError as exc:
        if exc.args and exc.args[0] == 1236:  # ER_MASTER_FATAL_ERROR_READING_BINLOG: purged since the check
            raise BinlogPurgedError(start, None, str(exc.args[-1])) from exc
        raise
    finally:
        stream.close()
    return tally, (stop if reached else BinlogPosition(end_file, end_pos)), reached


def _lookup(cur, country: str, ids: set[int]) -> set[int]:
    """Which of these customers are the country's now (entity rows whose customer row was not in the read)."""
    found: set[int] = set()
    ordered = sorted(ids)
    for i in range(0, len(ordered), LOOKUP_BATCH):
        batch = ordered[i:i + LOOKUP_BATCH]
        cur.execute(f"SELECT customer_id FROM `{CUSTOMER_TABLE}` WHERE country = %s AND customer_id IN "
                    f"({', '.join(['%s'] * len(batch))})", (country, *batch))
        found.update(int(r[0]) for r in cur.fetchall())
    return found


def read_changes(cfg: Config, country: str, start: BinlogPosition, stop: BinlogPosition | None = None,
                 max_seconds: float | None = None) -> ChangeSet:
    """The country's customers touched by row events of this database's billing tables in [start, stop).

    `stop` defaults to the current position at call time; the read never waits for new events. With
    `max_seconds`, the read ends at the first transaction boundary after that budget (`complete` False).
    Raises BinlogPurgedError / BinlogPositionError before reading when `start` cannot be served.
    """
    t0 = time.monotonic()
    cc = normalize_country(country)
    start = _pos(start)
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds!r}")
    with connections.mysql_conn("mysql_cdc", cfg, autocommit=True) as conn, conn.cursor() as cur:
        check_position(cur, start)
        stop = _status(cur) if stop is None else _pos(stop)
        if stop < start:
            raise ValueError(f"stop position {stop} precedes start position {start}")
        if stop.key == start.key:
            tally, end, reached = _Tally(cc), stop, True
        else:
            tally, end, reached = _read_stream(cfg, cc, start, stop, max_seconds)
        mine = tally.mine | _lookup(cur, cc, tally.unknown())
    events = tally.customer_rows + sum(n for key, n in tally.child_rows.items() if any(c in mine for c in key))
    lag = max(0.0, time.time() - tally.last_ts) if tally.last_ts else 0.0
    out = ChangeSet(start=start, end=end, customers=frozenset(mine), events=events, lag_s=round(lag, 3),
                    rows_scanned=tally.rows, read_s=round(time.monotonic() - t0, 4), complete=reached)
    log.info("changes %s [%s, %s): %d customers, %d row changes (%d scanned) in %.3f s, lag %.0f s%s", cc,
             start, end, len(out.customers), events, tally.rows, out.read_s, lag,
             "" if reached else f" (stopped short of {stop}: max_seconds={max_seconds})")
    return out


# ------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(cfg: Config, country: str, run_id: str, pos: BinlogPosition,
                    counts: dict[str, int] | None = None) -> None:
    """Durably record that every change before `pos` has been handled by this run (ledger keyspace)."""
    p = _pos(pos)
    ledger.save_cdc_checkpoint(cfg, country, run_id, p.log_file, p.seq, p.log_pos, counts)


def load_checkpoint(cfg: Config, country: str, run_id: str) -> BinlogPosition | None:
    """The run's furthest saved position (None if it saved none): where a killed reader resumes."""
    row = ledger.load_cdc_checkpoint(cfg, country, run_id)
    return None if row is None else BinlogPosition(row["log_file"], row["log_pos"])
