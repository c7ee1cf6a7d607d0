"""Operator command logic that needs no server: run liveness and argument refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from billing_migration import ops
from billing_migration.ops import TaskSeen, judge_run

NOW = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)


def _ago(s: float | None) -> datetime | None:
    return None if s is None else NOW - timedelta(seconds=s)


def _ti(task: str, state: str | None, hb_s: float | None = None, started_s: float | None = None,
        idx: int = -1) -> TaskSeen:
    ago = _ago
    return TaskSeen(task, idx, state, ago(hb_s), ago(started_s))


def _judge(state, tasks):
    return judge_run("r1", "migrate_billing_nz", state, tasks, NOW, 300)


def test_unknown_or_finished_runs_are_not_alive():
    assert judge_run(None, None, None, [], NOW, 300).alive is False
    assert judge_run("r1", None, None, [], NOW, 300).why.startswith("the run is unknown")
    assert _judge("failed", [_ti("load", "running", hb_s=1)]).alive is False
    assert _judge("success", []).alive is False


def test_a_running_task_with_a_fresh_heartbeat_is_alive():
    live = _judge("running", [_ti("load", "running", hb_s=20, idx=1), _ti("compare", None)])
    assert live.alive and "load[1]" in live.why


def test_a_stale_running_task_means_the_process_is_gone():
    live = _judge("running", [_ti("load", "running", hb_s=3600, idx=0), _ti("compare_and_repair", None)])
    assert live.alive is False and "process is gone" in live.why
    assert _judge("running", [_ti("load", "running", started_s=3600)]).alive is False  # never heartbeat


def test_a_fresh_lane_outweighs_a_stale_one_and_pending_tasks_mean_alive():
    assert _judge("running", [_ti("load", "running", hb_s=3600, idx=0), _ti("load", "running", hb_s=5, idx=1)]).alive
    assert _judge("running", [_ti("plan", "success"), _ti("export", "queued", idx=0)]).alive
    assert _judge("queued", []).alive
    assert _judge("running", [_ti("validate_params", None)]).alive  # the scheduler has not started it yet


def test_drop_namespace_refuses_production_before_touching_anything(capsys):
    assert ops.main(["drop-namespace", ""]) == 2
    assert "PRODUCTION" in capsys.readouterr().err


def test_unfreeze_needs_a_reason_and_a_country():
    with pytest.raises(SystemExit):
        ops.main(["unfreeze", "NZ"])
    with pytest.raises(SystemExit):
        ops.main(["unfreeze", "--reason", "x"])


def test_drop_plan_renders_every_artefact():
    plan = ops.DropPlan("t1", "billing_t1", 3, "billing_t1", None, "b", "ns=t1/", 2, 10)
    text = plan.render()
    assert "billing_t1: 3 table(s)" in text and "absent" in text and "s3://b/ns=t1/: 2 object(s)" in text
    assert "PRODUCTION" in ops.DropPlan("", "billing", None, "billing", None, "b", "", 0, 0).render()
