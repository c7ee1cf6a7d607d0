"""The shared progress line: rate and ETA maths, throttling by the clock, the final totals line."""

from __future__ import annotations

import logging

import pytest
from billing_migration import config, progress
from billing_migration.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, **kw) -> Progress:
    return Progress("load NZ chunk 3", clock=clock, logger=logging.getLogger("test.progress"), **kw)


def test_eta_is_the_rest_at_the_average_pace():
    assert progress.eta_seconds(10.0, 0.25) == pytest.approx(30.0)
    assert progress.eta_seconds(10.0, 1.0) == 0.0
    assert progress.eta_seconds(10.0, None) is None
    assert progress.eta_seconds(10.0, 0.0) is None
    assert progress.eta_seconds(0.0, 0.5) is None


def test_durations_read_like_a_clock():
    assert progress.fmt_duration(None) == "?"
    assert progress.fmt_duration(6.4) == "6 s"
    assert progress.fmt_duration(125) == "2 min 05 s"
    assert progress.fmt_duration(3 * 3600 + 7 * 60) == "3 h 07 min"


def test_line_gives_rows_customers_of_total_rate_and_eta(clock):
    p = make(clock, customers_total=5000, rows_total=200_000)
    clock.now += 4.0
    p.update(rows=60_000, customers=1250)
    assert p.rate() == pytest.approx(15_000)
    assert p.line() == ("load NZ chunk 3: 60,000/200,000 rows, 1,250/5,000 customers (25.0 %), "
                        "15,000 rows/s, ETA 12 s")


def test_fraction_prefers_a_hint_then_customers_then_rows(clock):
    p = make(clock, customers_total=100, rows_total=1000)
    p.update(rows=900, customers=10)
    assert p.fraction() == pytest.approx(0.10)
    p.update(fraction=0.5)
    assert p.fraction() == pytest.approx(0.5)
    q = make(clock, rows_total=1000)
    q.update(rows=900)
    assert q.fraction() == pytest.approx(0.9)
    assert make(clock).fraction() is None
    assert "ETA ?" in make(clock).line()


def test_lines_are_throttled_by_the_clock_not_by_calls(clock, caplog):
    p = make(clock, interval=5.0, rows_total=10_000)
    caplog.set_level(logging.INFO, logger="test.progress")
    logged = []
    for _ in range(100):  # 100 updates over 9.9 s: lines at 5 s only (the next would be at 10 s)
        clock.now += 0.099
        logged.append(p.update(rows=10))
    assert logged.count(True) == 1 and logged.index(True) == 50
    clock.now += 0.2
    assert p.update(rows=1) is True  # 10.1 s: 5.1 s after the last line
    assert len([r for r in caplog.records if r.name == "test.progress"]) == 2


def test_finish_logs_the_totals_once(clock, caplog):
    caplog.set_level(logging.INFO, logger="test.progress")
    p = make(clock, customers_total=2)
    clock.now += 2.0
    p.update(rows=300, customers=2)  # within the interval: no line
    text = p.finish()
    assert text == "load NZ chunk 3 done: 300 rows, 2 customers in 2.0 s (150 rows/s)"
    assert [r.getMessage() for r in caplog.records if r.name == "test.progress"] == [text]


def test_interval_must_be_positive(clock):
    with pytest.raises(ValueError, match="interval"):
        make(clock, interval=0)


def test_interval_comes_from_the_config():
    assert config.load_config().progress_interval_s == 5.0
    assert progress.interval_of(config.load_config()) == 5.0
    raw = {"connections": {k: k for k in ("mysql_export", "mysql_gate", "mysql_admin", "cassandra", "s3")},
           "countries": {"NZ": {}}}
    assert config.parse({**raw, "progress_interval_s": 0.5}).progress_interval_s == 0.5
    for bad in (0, -1, "5", True, 7200):
        with pytest.raises(config.ConfigError, match="progress_interval_s"):
            config.parse({**raw, "progress_interval_s": bad})
