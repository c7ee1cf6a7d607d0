"""Pure parts of load.py (no services): the rows/s token bucket and the driver value conversion."""

from __future__ import annotations

import datetime as dt
import time

import pyarrow as pa
from billing_migration import load


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
