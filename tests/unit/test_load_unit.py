"""Pure parts of load.py (no services): the rows/s token bucket and the driver value conversion."""

from __future__ import annotations

import datetime as dt
import time

import pyarrow as pa
from billing_migration.country import load


def test_token_bucket_unlimited_never_sleeps():
    bucket = load.TokenBucket(0)
    t0 = time.monotonic()
    for _ in range(1000):
        bucket.take(10_000)
    assert time.monotonic() - t0 < 0.5


def test_token_bucket_paces_to_the_rate():
    bucket = load.TokenBucket(200)  # starts with one second of tokens
    t0 = time.monotonic()
    for _ in range(20):
        bucket.take(20)  # 400 rows: 200 free, 200 more at 200 rows/s -> ~1 s
    elapsed = time.monotonic() - t0
    assert 0.8 <= elapsed < 2.0


def test_token_bucket_lets_a_batch_bigger_than_the_rate_through_after_its_wait():
    bucket = load.TokenBucket(25)
    t0 = time.monotonic()
    bucket.take(50)  # a customer's batch is never split or refused: it waits for the missing 25 tokens
    assert 0.8 <= time.monotonic() - t0 < 2.0


def test_timestamps_are_bound_as_exact_epoch_ms():
    ts = dt.datetime(2024, 2, 29, 23, 59, 59, 999000, tzinfo=dt.UTC)
    col = pa.chunked_array([pa.array([ts, None], pa.timestamp("ms", tz="UTC"))])
    assert load._py(col) == [int(ts.timestamp() * 1000), None]
    assert load._py(pa.chunked_array([pa.array(["😀", None])])) == ["😀", None]


def test_dates_are_bound_as_the_bytes_the_driver_sends_for_datetime_dates():
    """SimpleDateType packs an int as the CQL offset form; it must equal what a datetime.date becomes."""
    from cassandra.cqltypes import SimpleDateType

    dates = [dt.date(1, 1, 1), dt.date(1900, 3, 1), dt.date(1969, 12, 31), dt.date(1970, 1, 1),
             dt.date(2024, 2, 29), dt.date(9999, 12, 31), None]
    col = pa.chunked_array([pa.array(dates, pa.date32())])
    assert load._py(col)[3] == 2**31 and load._py(col)[-1] is None
    expected = [None if d is None else SimpleDateType.serialize(d, 5) for d in dates]
    assert load._serialized_or_null(col, SimpleDateType, 5) == expected
    assert [None if v is None else SimpleDateType.serialize(v, 5) for v in load._py(col)] == expected


def test_decimals_and_timestamps_serialize_exactly_like_the_driver():
    from decimal import Decimal

    from cassandra.cqltypes import DateType, DecimalType, LongType, UTF8Type

    money = [Decimal("0.0000"), Decimal("-0.0001"), Decimal("-1.2800"), Decimal("1.2800"), None,
             Decimal("12345678901234.5678"), Decimal("-92233720368547.7580")]
    arr = pa.array(money, pa.decimal128(18, 4))
    col = pa.chunked_array([arr.slice(1), arr.slice(0, 1)])  # chunk offsets and order must be honoured
    want = [None if v is None else DecimalType.serialize(v, 5) for v in col.to_pylist()]
    assert load._serialized_or_null(col, DecimalType, 5) == want
    huge = pa.chunked_array([pa.array([Decimal("1E30"), Decimal("-3.5")], pa.decimal128(38, 2))])  # > 64 bits
    assert load._serialized_or_null(huge, DecimalType, 5) == [DecimalType.serialize(v, 5) for v in huge.to_pylist()]
    ts = dt.datetime(1960, 5, 1, 12, 0, 0, 123000, tzinfo=dt.UTC)
    tcol = pa.chunked_array([pa.array([ts, None], pa.timestamp("ms", tz="UTC"))])
    assert load._serialized_or_null(tcol, DateType, 5) == [DateType.serialize(ts, 5), None]
    assert load._serialized_or_null(pa.chunked_array([pa.array([-5, None], pa.int64())]), LongType, 5) == [
        LongType.serialize(-5, 5), None]
    assert load._serialized_or_null(pa.chunked_array([pa.array(["😀"])]), UTF8Type, 5) == ["😀".encode()]


def test_nulls_are_sent_unset_so_no_tombstone_cells_are_written():
    from cassandra.cqltypes import LongType
    from cassandra.query import UNSET_VALUE

    col = pa.chunked_array([pa.array([7, None], pa.int64())])
    out = load._serialized(col, LongType, 5)
    assert out[0] == LongType.serialize(7, 5)
    assert out[1] is UNSET_VALUE
    assert load._unset(None) is UNSET_VALUE and load._unset(0) == 0


def test_cyclic_gc_pauses_nest_and_restore_the_collector_state():
    import gc

    from billing_migration.stores import connections

    assert gc.isenabled()
    with connections.cyclic_gc_paused():
        assert not gc.isenabled()
        with connections.cyclic_gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()
    gc.disable()
    try:  # a collector the caller had turned off stays off
        with connections.cyclic_gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
