"""The run ledger against the real Cassandra: states, counts, resume, latest runs."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from billing_migration.stores import ledger

CC = "LI"  # countries no other test writes ledger rows for


def test_start_finish_keeps_start_time_and_counts(cfg, cassandra_ks):
    run = "manual__ledger_1"
    ledger.start(cfg, CC, run, "disable_writes")
    ledger.finish(cfg, CC, run, "disable_writes", counts={"drain_ms": 12, "rows": 3.0})
    (row,) = ledger.get_run(cfg, CC, run)
    assert row["state"] == "succeeded" and row["part"] == -1 and row["step"] == "disable_writes"
    assert row["counts"] == {"drain_ms": 12, "rows": 3}
    assert row["started_at"].tzinfo is not None and row["started_at"] <= row["ended_at"]
    assert abs((datetime.now(UTC) - row["ended_at"]).total_seconds()) < 60


def test_completed_parts_for_resume_and_retry_clears_failure(cfg, cassandra_ks):
    run = "manual__ledger_2"
    for part in range(4):
        ledger.start(cfg, CC, run, "export", part=part)
    ledger.finish(cfg, CC, run, "export", part=0, counts={"rows": 10})
    ledger.finish(cfg, CC, run, "export", part=2, counts={"rows": 7})
    ledger.skip(cfg, CC, run, "export", part=3, detail="empty chunk")
    ledger.fail(cfg, CC, run, "export", part=1, detail="ConnectionError: boom")
    ledger.finish(cfg, CC, run, "load", part=1)  # another step does not count
    assert ledger.completed_parts(cfg, CC, run, "export") == {0, 2, 3}
    failed = next(r for r in ledger.get_run(cfg, CC, run) if r["step"] == "export" and r["part"] == 1)
    assert failed["state"] == "failed" and failed["detail"] == "ConnectionError: boom"
    # the retry: start clears the previous attempt's error and end time
    ledger.start(cfg, CC, run, "export", part=1)
    retried = next(r for r in ledger.get_run(cfg, CC, run) if r["step"] == "export" and r["part"] == 1)
    assert retried["state"] == "running" and retried["detail"] is None and retried["ended_at"] is None
    ledger.finish(cfg, CC, run, "export", part=1, counts={"rows": 1})
    assert ledger.completed_parts(cfg, CC, run, "export") == {0, 1, 2, 3}
    assert ledger.completed_parts(cfg, CC, "manual__never_ran", "export") == set()


def test_last_runs_newest_first_with_outcome(cfg, cassandra_ks):
    cc = "MC"
    ledger.record(cfg, cc, "b_run_old", "plan", "succeeded", started_at=datetime(2026, 1, 1, tzinfo=UTC),
                  ended_at=datetime(2026, 1, 1, 0, 1, tzinfo=UTC))
    ledger.start(cfg, cc, "a_run_new", "plan")
    time.sleep(0.01)
    ledger.fail(cfg, cc, "a_run_new", "plan", detail="MigrationError: over budget")
    ledger.start(cfg, cc, "c_run_running", "export", part=0)
    runs = ledger.last_runs(cfg, cc, limit=10)
    assert [r["run_id"] for r in runs][-1] == "b_run_old"
    by_id = {r["run_id"]: r for r in runs}
    assert by_id["a_run_new"]["state"] == "failed" and by_id["a_run_new"]["failed_steps"] == ["plan"]
    assert by_id["b_run_old"]["state"] == "succeeded"
    assert by_id["c_run_running"]["state"] == "running"
    assert len(ledger.last_runs(cfg, cc, limit=1)) == 1


def test_bad_input_is_refused(cfg, cassandra_ks):
    with pytest.raises(ValueError, match="state"):
        ledger.record(cfg, CC, "r", "plan", "done")
    with pytest.raises(ValueError, match="part"):
        ledger.record(cfg, CC, "r", "plan", "running", part=-2)
    with pytest.raises(ValueError, match="counts"):
        ledger.finish(cfg, CC, "r", "plan", counts={"rows": "many"})
    with pytest.raises(ValueError, match="ISO"):
        ledger.start(cfg, "ZZ", "r", "plan")
    assert ledger.get_run(cfg, CC, "r") == []
