"""The waves of migration.yaml and the wave DAG's shape: refused at parse time when wrong."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from billing_migration import waves
from billing_migration.config import ConfigError, load_config, parse

BASE = {
    "connections": {k: k for k in ("mysql_export", "mysql_gate", "mysql_admin", "cassandra", "s3")},
    "countries": {"NZ": {}, "IE": {}, "CH": {}, "SE": {}},
}
PLAN = [{"name": "canary", "countries": ["NZ"]}, {"name": "wave1", "countries": ["IE", "CH"]}]


def test_shipped_waves_start_with_a_canary_and_cover_each_country_once():
    cfg = load_config()
    assert cfg.waves is not None and cfg.waves.plan[0].name == "canary"
    listed = [c for w in cfg.waves.plan for c in w.countries]
    assert sorted(listed) == sorted(cfg.countries)


@pytest.mark.parametrize(
    ("waves_raw", "message"),
    [
        ({"plan": [{"name": "wave1", "countries": ["NZ"]}]}, "first wave must be named 'canary'"),
        ({"plan": [{"name": "canary", "countries": ["NZ", "IE", "CH"]}]}, "at most 2 countries"),
        ({"plan": [*PLAN, {"name": "wave2", "countries": ["NZ"]}]}, "NZ is in wave 'canary' and in 'wave2'"),
        ({"plan": [*PLAN, {"name": "wave2", "countries": ["US"]}]}, "'US' is not a configured country"),
        ({"plan": [*PLAN, {"name": "wave1", "countries": ["SE"]}]}, "wave names must be unique"),
        ({"plan": PLAN, "concurrency": 0}, r"waves.concurrency must be an integer in \[1, 32\]"),
        ({"plan": PLAN, "speed": 1}, "unknown setting 'speed'"),
        ({"plan": []}, "waves"),
    ],
)
def test_bad_waves_are_refused_at_parse_time(waves_raw, message):
    with pytest.raises(ConfigError, match=message):
        parse({**BASE, "waves": waves_raw})


def test_lanes_hold_at_most_concurrency_countries_at_once():
    plan = [{"wave": "w", "run": ["A1", "A2", "A3", "A4", "A5"], "already_cut_over": []}]
    got = waves.lanes(plan, "w", 2)
    assert [lane["countries"] for lane in got] == [["A1", "A3", "A5"], ["A2", "A4"]]
    assert len(waves.lanes(plan, "w", 9)) == 5
    assert waves.lanes([{"wave": "w", "run": [], "already_cut_over": ["A1"]}], "w", 2) == []


def test_wave_dag_runs_each_wave_after_the_previous_one_closed():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags" / "migration_waves.py"))
    assert not bag.import_errors
    dag = bag.get_dag("migration_waves")
    names = [w.name for w in load_config().waves.plan]
    for prev, nxt in itertools.pairwise(names):
        assert f"{prev}.close_wave" in dag.get_task(f"{nxt}.lanes").upstream_task_ids
    assert dag.get_task("canary.lanes").upstream_task_ids == {"plan"}
    assert dag.get_task("summary").trigger_rule == "all_done"
    assert set(dag.params) == set(waves.WaveParams.model_fields)


def test_dag_run_state_from_the_task_sdk_is_read_as_its_value():
    from airflow.sdk.api.datamodels._generated import DagRunState  # what ti.get_dagrun_state returns

    assert str(DagRunState.SUCCESS) != "success"  # 'DagRunState.SUCCESS': a lane would poll forever
    assert waves._state(DagRunState.SUCCESS) == "success"
    assert waves._state("failed") == "failed"
