"""One DAG per configured country: migrate_billing_<cc>.

    validate_params → check_routing → begin ⟶ plan → export[lanes] → transform[lanes] → error_budget
      → load[lanes] → compare_and_repair[lanes] → catch_up → cutover ⟶ release_freeze → replay_writes → report

`mode` online (default): begin records the binlog capture position, the copy runs while the country stays
writable, catch_up replays the changes in rounds, and cutover freezes, migrates the last delta, compares it
and flips, all in one task, within `freeze_budget_s`. `mode` offline: begin freezes the country for the whole
copy, catch_up does nothing, cutover flips.
begin / release_freeze are a setup / teardown pair: whatever fails in between, the teardown runs and a country
this run froze but did not cut over is writable again on the legacy store. replay_writes then applies the
writes the application queued while the country was frozen (`billing_migration.app.replay`) to the store that
serves it now: Cassandra after the flip, legacy after an abort (outside the freeze budget). The logic lives in
`billing_migration.country.pipeline` and `billing_migration.online`; this file only wires it.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, get_current_context, task
from billing_migration.config import load_config, param_specs
from billing_migration.country import pipeline
from billing_migration.dag_defaults import dag_defaults
from billing_migration.online import stages
from billing_migration.records import Lane

CFG = load_config()


def _params() -> pipeline.RunParams:
    ctx = get_current_context()
    return pipeline.validate_params(CFG, ctx["params"]["country"], dict(ctx["params"]))


def _run_id() -> str:
    return get_current_context()["run_id"]


# Mapped task instances show their lane and chunk range in the UI instead of [0], [1].
LANE_LABEL = "{{ lane_label }}"


def _lane(lane: dict) -> Lane:
    rec = Lane.from_dict(lane)
    get_current_context()["lane_label"] = rec.label  # type: ignore[typeddict-unknown-key]
    return rec


def build(country: str) -> DAG:
    s = CFG.country(country)
    with DAG(
        dag_id=f"migrate_billing_{country.lower()}",
        description=f"Migrate {country}'s billing data from legacy MySQL to Cassandra and cut over",
        schedule=None,
        **dag_defaults("migrate", country),
        doc_md=__doc__,
        params={name: Param(**spec) for name, spec in param_specs(country, s).items()},
    ) as dag:

        @task
        def validate_params() -> dict:
            return _params().as_dict()

        @task
        def check_routing() -> dict:
            from airflow.sdk.exceptions import AirflowSkipException

            out = pipeline.check_routing(CFG, country, _run_id())
            if out["already_migrated"]:
                raise AirflowSkipException(f"{country} is already served by Cassandra "
                                           f"(cut over by {out['status'].get('cutover_run_id')}); nothing to do")
            return out["status"]

        @task
        def begin() -> dict:
            return stages.begin(CFG, _params(), _run_id())

        @task
        def plan() -> list[dict]:
            return [lane.as_dict() for lane in pipeline.plan(CFG, _params(), _run_id())]

        @task(max_active_tis_per_dagrun=s.max_parallel_chunks, pool=CFG.pools["mysql"].name,
              map_index_template=LANE_LABEL)
        def export(lane: dict) -> dict:
            return pipeline.export_lane(CFG, _params(), _run_id(), _lane(lane))

        @task(max_active_tis_per_dagrun=s.max_parallel_chunks, map_index_template=LANE_LABEL)
        def transform(lane: dict) -> dict:
            return pipeline.transform_lane(CFG, _params(), _run_id(), _lane(lane))

        @task
        def error_budget() -> dict:
            from airflow.sdk.exceptions import AirflowSkipException

            p = _params()
            out = pipeline.check_error_budget(CFG, p, _run_id())
            if p.dry_run:
                raise AirflowSkipException(f"dry run: {out['rejects']} reject(s); nothing loaded")
            return out

        @task(max_active_tis_per_dagrun=s.max_parallel_chunks, pool=CFG.pools["cassandra"].name,
              map_index_template=LANE_LABEL)
        def load(lane: dict) -> dict:
            return pipeline.load_lane(CFG, _params(), _run_id(), _lane(lane))

        @task(max_active_tis_per_dagrun=s.max_parallel_chunks, pool=CFG.pools["mysql"].name,
              map_index_template=LANE_LABEL)
        def compare_and_repair(lane: dict) -> dict:
            return pipeline.compare_lane(CFG, _params(), _run_id(), _lane(lane))

        @task
        def catch_up() -> dict:
            return stages.catch_up(CFG, _params(), _run_id())

        @task
        def cutover() -> dict:
            return stages.finish(CFG, _params(), _run_id())

        @task(trigger_rule="all_done")
        def release_freeze() -> dict:
            return pipeline.release_freeze(CFG, country, _run_id())

        @task(trigger_rule="all_done")
        def replay_writes() -> dict:
            from billing_migration.app import replay

            return replay.after_migration(CFG, country, _run_id())

        @task(trigger_rule="all_done")
        def report() -> dict:
            ctx = get_current_context()
            states = ctx["ti"].get_task_states(dag_id=ctx["dag"].dag_id, run_ids=[ctx["run_id"]])
            return pipeline.final_report(CFG, country, ctx["run_id"], states.get(ctx["run_id"], {}),
                                         dry_run=ctx["params"].get("dry_run") is True)

        frozen = begin()
        lanes = plan()
        validate_params() >> check_routing() >> frozen >> lanes
        transformed = transform.expand(lane=lanes)
        export.expand(lane=lanes) >> transformed
        loaded = load.expand(lane=lanes)
        transformed >> error_budget() >> loaded
        compared = compare_and_repair.expand(lane=lanes)
        loaded >> compared
        compared >> catch_up() >> (flip := cutover())
        flip >> release_freeze().as_teardown(setups=frozen) >> replay_writes() >> report()
    return dag


for _cc in CFG.countries:
    globals()[f"migrate_billing_{_cc.lower()}"] = build(_cc)
