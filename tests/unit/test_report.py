"""The run report aggregates the ledger truthfully: sums per chunk, no summed rates, freeze window, failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from billing_migration.config import parse
from billing_migration.country import report

CFG = parse({"connections": {k: k for k in ("mysql_export", "mysql_gate", "mysql_admin", "cassandra", "s3")},
             "countries": {"NZ": {}}})
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _e(step, state, part=-1, start=0.0, end=1.0, **counts):
    return {"step": step, "part": part, "state": state, "counts": counts, "detail": None,
            "started_at": T0 + timedelta(seconds=start), "ended_at": T0 + timedelta(seconds=end)}


@pytest.fixture
def fake_sources(monkeypatch):
    def install(entries, gate):
        monkeypatch.setattr(report.ledger, "get_run", lambda cfg, country, run_id: entries)
        monkeypatch.setattr(report.write_gate, "status", lambda cfg, country: gate)
    return install


def test_cut_over_run(fake_sources):
    fake_sources([
        _e("disable_writes", "succeeded", start=0, end=1),
        _e("load", "succeeded", part=0, start=2, end=4, rows=100, rows_per_s=50, duration_ms=2000),
        _e("load", "succeeded", part=1, start=2, end=6, rows=300, rows_per_s=75, duration_ms=4000),
        _e("enable_writes", "succeeded", start=7, end=8),
    ], {"serving_store": "cassandra", "writes_frozen": True})
    rep = report.build(CFG, "NZ", "run1")
    load = rep["stages"]["load"]
    assert load["counts"]["rows"] == 400
    assert "rows_per_s" not in load["counts"]
    assert load["wall_s"] == 4.0 and load["rows_per_s"] == 100.0
    assert rep["freeze_window_s"] == 8.0
    assert rep["outcome"] == "cut_over" and rep["failed_steps"] == []
    text = report.render(rep)
    assert text.index("disable_writes") < text.index("load ") < text.index("enable_writes")


def test_failed_run_lists_the_failing_step_and_its_error(fake_sources):
    failed = _e("transform", "failed", part=3, start=2, end=3)
    failed["detail"] = "MigrationError: injected"
    fake_sources([_e("disable_writes", "succeeded"), failed, _e("release_freeze", "succeeded", start=4, end=5)],
                 {"serving_store": "legacy", "writes_frozen": False})
    rep = report.build(CFG, "NZ", "run2")
    assert rep["outcome"] == "failed" and rep["failed_steps"] == ["transform"]
    assert rep["stages"]["transform"]["failed_parts"] == [3]
    assert rep["freeze_window_s"] == 5.0  # frozen until the teardown re-enabled writes
    assert "MigrationError: injected" in report.render(rep)
