"""Every file under dags/ imports cleanly and every DAG has the shape we promise."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from billing_migration.config import load_config
from billing_migration.dag_defaults import START_DATE

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def bag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_dag_files_import_without_errors(bag):
    assert bag.import_errors == {}, bag.import_errors
    assert list(DAGS.glob("*.py")), "no DAG files"
    assert bag.dags, "no DAGs found"


def test_one_migration_dag_per_configured_country(bag):
    cfg = load_config()
    want = {f"migrate_billing_{cc.lower()}" for cc in cfg.countries}
    assert want <= set(bag.dag_ids)


def test_country_dag_chain_and_safety_net(bag):
    dag = bag.get_dag("migrate_billing_us")
    order = ["begin", "plan", "export", "transform", "error_budget", "load", "compare_and_repair",
             "catch_up", "cutover", "release_freeze", "replay_writes", "report"]
    for up, down in itertools.pairwise(order):
        assert down in dag.get_task(up).get_flat_relative_ids(upstream=False), f"{up} does not lead to {down}"
    release = dag.get_task("release_freeze")
    assert release.is_teardown and "begin" in release.upstream_task_ids
    assert dag.get_task("report").trigger_rule == "all_done"
    assert dag.get_task("replay_writes").trigger_rule == "all_done"  # queued writes replayed on abort too
    assert dag.schedule is None or str(dag.timetable.summary) in ("None", "")  # triggered by people, not by time
    params = dag.params
    assert params["country"] == "US"
    for name in ("chunk_customers", "parallelism", "error_budget", "rate_limit_rows_per_s", "compare_rounds",
                 "reset", "dry_run"):
        assert name in params


def test_params_are_generated_from_the_settings_model(bag):
    from billing_migration.config import param_names, param_specs

    dag = bag.get_dag("migrate_billing_br")
    assert sorted(dag.params) == param_names()
    specs = param_specs("BR", load_config().country("BR"))
    for name, spec in specs.items():
        param = dag.params.get_param(name)
        for key in ("type", "minimum", "maximum", "enum", "title"):
            assert param.schema.get(key) == spec.get(key), (name, key)
        assert param.description == spec["description"] and param.value == spec["default"]
    assert "FREEZES production billing writes for BR" in dag.params.get_param("country").description


def test_mapped_tasks_are_labelled_by_lane(bag):
    dag = bag.get_dag("migrate_billing_us")
    for task_id in ("export", "transform", "load", "compare_and_repair"):
        assert dag.get_task(task_id).map_index_template == "{{ lane_label }}", task_id


def test_reverse_sync_and_rollback_dags(bag):
    from datetime import timedelta

    cfg = load_config()
    assert {f"rollback_billing_{cc.lower()}" for cc in cfg.countries} <= set(bag.dag_ids)
    rollback = bag.get_dag("rollback_billing_nz")
    assert list(rollback.task_ids) == ["rollback"] and rollback.schedule is None
    sync = bag.get_dag("reverse_sync_billing")
    assert sync.schedule == timedelta(minutes=5) and sync.max_active_runs == 1
    nightly = bag.get_dag("nightly_billing")
    assert "assert_reverse_synced" in nightly.get_task("reverse_sync").downstream_task_ids
    assert "reverse_sync" in nightly.get_task("snapshot_mysql").upstream_task_ids


def test_every_dag_shares_the_package_defaults(bag):
    """One run at a time, no catch-up, a fixed start, and tags by kind and country (dag_defaults)."""
    for dag_id, dag in bag.dags.items():
        assert dag.catchup is False and dag.max_active_runs == 1, dag_id
        assert dag.start_date == START_DATE.replace(tzinfo=dag.start_date.tzinfo), dag_id
        assert "billing-migration" in dag.tags, dag_id
        if dag_id.startswith(("migrate_billing_", "rollback_billing_")):
            assert f"country:{dag_id.rsplit('_', 1)[1].upper()}" in dag.tags, dag_id


def test_the_fault_matrix_runs_the_dags_tasks_in_the_dags_order(bag):
    """devtools.faults replays the country DAG's tasks in a child process; its task list must stay the DAG's
    (same tasks, upstream before downstream), or a fault case would test a pipeline that no longer exists."""
    from billing_migration.devtools import faults

    dag = bag.get_dag("migrate_billing_nz")
    ids = [faults.DAG_TASK.get(t, t) for t in faults.TASKS]
    assert set(ids) <= set(dag.task_ids), set(ids) - set(dag.task_ids)
    for up, down in itertools.pairwise(ids):
        assert down in dag.get_task(up).get_flat_relative_ids(upstream=False), f"{up} does not lead to {down}"
    # every task between the first and the last of the matrix's is in it (none skipped by the child runner)
    between = {t for t in dag.task_ids
               if ids[0] in dag.get_task(t).get_flat_relative_ids(upstream=True)
               and ids[-1] in dag.get_task(t).get_flat_relative_ids(upstream=False)}
    assert between <= set(ids), between - set(ids)
