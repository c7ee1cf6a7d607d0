"""migration_waves: countries migrated in waves (canary first), each through its own migrate_billing_<cc> run.

    validate_params → plan → for each wave of migration.yaml (canary, wave1, ...):
        lanes → run_lane[≤ concurrency] (trigger + await each country's DAG run) → close_wave (reconcile)
    → summary

A wave starts only after the previous one closed: its countries cut over and reconciled. The waves halt
(nothing more triggered; the failing task and `summary` name the country and the reason) on a failed
country run, rejects over `max_rejects`, or drift. A rerun skips countries already cut over, so it resumes.
Logic lives in `billing_migration.waves`; this file only wires it.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, TaskGroup, get_current_context, task
from billing_migration import waves
from billing_migration.config import load_config
from billing_migration.dag_defaults import dag_defaults

CFG = load_config()
SETTINGS = CFG.waves


def _params() -> waves.WaveParams:
    return waves.WaveParams.model_validate(get_current_context()["ti"].xcom_pull(task_ids="validate_params"))


def _run_id() -> str:
    return get_current_context()["run_id"]


if SETTINGS is not None:
    with DAG(
        dag_id="migration_waves",
        description="Migrate countries in waves (canary first) through their migrate_billing_<cc> DAGs",
        schedule=None,
        **dag_defaults("waves"),
        doc_md=__doc__,
        params={name: Param(**spec) for name, spec in waves.param_specs(CFG).items()},
    ) as dag:

        @task
        def validate_params() -> dict:
            return waves.validate_params(CFG, dict(get_current_context()["params"])).as_dict()

        @task
        def plan() -> list[dict]:
            return waves.plan(CFG, _params())

        @task(trigger_rule="none_failed", map_index_template="{{ lane_label }}")
        def run_lane(lane: dict) -> dict:
            ctx = get_current_context()
            ctx["lane_label"] = f"{lane['wave']} lane {lane['lane']}: {', '.join(lane['countries'])}"  # type: ignore[typeddict-unknown-key]
            p = _params()
            return waves.run_lane(CFG, p, _run_id(), lane, waves.airflow_runner(ctx["ti"], p.poke_interval_s))

        @task(trigger_rule="all_done")
        def summary(waves_plan) -> dict:
            ctx = get_current_context()
            states = ctx["ti"].get_task_states(dag_id=ctx["dag"].dag_id, run_ids=[ctx["run_id"]])
            mine = {k: v for k, v in states.get(ctx["run_id"], {}).items() if k != "summary"}
            return waves.summary(CFG, _run_id(), waves_plan, mine)

        waves_plan = plan()
        validate_params() >> waves_plan
        previous = waves_plan
        for spec in SETTINGS.plan:
            with TaskGroup(spec.name):

                @task(task_id="lanes", trigger_rule="none_failed")
                def wave_lanes(waves_plan: list[dict], wave: str = spec.name) -> list[dict]:
                    return waves.lanes(waves_plan, wave, _params().concurrency)

                @task(task_id="close_wave", trigger_rule="none_failed")
                def close_wave(wave: str = spec.name) -> dict:
                    return waves.close_wave(CFG, _params(), _run_id(), wave)

                lanes = wave_lanes(waves_plan)
                previous >> lanes
                closed = close_wave()
                run_lane.expand(lane=lanes) >> closed
                previous = closed
        previous >> summary(waves_plan)
