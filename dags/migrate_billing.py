"""One DAG per configured country: migrate_billing_<cc>.

    validate_params → check_routing → begin ⟶ plan → export[lanes] → transform[lanes] → error_budget
      → load[lanes] → compare_and_repair[lanes] → catch_up → cutover ⟶ release_freeze → report

`mode` online (default): begin records the binlog capture position, the copy runs while the country stays
writable, catch_up replays the changes in rounds, and cutover freezes, migrates the last delta, compares it
and flips, all in one task, within `freeze_budget_s`. `mode` offline: begin freezes the country for the whole
copy, catch_up does nothing, cutover flips.
begin / release_freeze are a setup / teardown pair: whatever fails in between, the teardown runs and a country
this run froze but did not cut over is writable again on the legacy store. The logic lives in
`billing_migration.country.pipeline` and `billing_migration.online`; this file only wires it.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param, get_current_context, task
from billing_migration.config import load_config
from billing_migration.country import pipeline
from billing_migration.online import stages

CFG = load_config()


def _params() -> pipeline.RunParams:
    ctx = get_current_context()
    return pipeline.validate_params(CFG, ctx["params"]["country"], dict(ctx["params"]))


def _run_id() -> str:
    return get_current_context()["run_id"]


def build(country: str) -> DAG:
    s = CFG.country(country)
    with DAG(
        dag_id=f"migrate_billing_{country.lower()}",
        description=f"Migrate {country}'s billing data from legacy MySQL to Cassandra and cut over",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["billing-migration", f"country:{country}"],
        doc_md=__doc__,
        params={
            "country": Param(country, type="string", enum=[country], title="Country",
                             description="Confirms which country this run freezes and migrates."),
            "chunk_customers": Param(s.chunk_customers, type="integer", minimum=100, maximum=1_000_000,
                                     title="Chunk size (customers)",
                                     description="Customers per export/transform/load chunk."),
            "parallelism": Param(s.max_parallel_chunks, type="integer", minimum=1, maximum=64,
                                 title="Parallel lanes", description="Mapped task instances per stage."),
            "error_budget": Param(s.error_budget, type="integer", minimum=0, title="Error budget",
                                  description="Rejected records allowed before the run stops before loading."),
            "rate_limit_rows_per_s": Param(s.rate_limit_rows_per_s, type="integer", minimum=0,
                                           title="Rate limit (rows/s per lane)",
                                           description="0 = unthrottled. Protects a production cluster."),
            "load_concurrency": Param(s.load_concurrency, type="integer", minimum=1, maximum=2048,
                                      title="In-flight writes per lane"),
            "compare_rounds": Param(s.compare_rounds, type="integer", minimum=1, maximum=20,
                                    title="Compare rounds",
                                    description="compare → re-migrate mismatching customers → compare again."),
            "reset": Param("none", type="string", enum=list(pipeline.RESET_CHOICES), title="Reset target",
                           description="Delete this country's target data (or one table's) before loading."),
            "dry_run": Param(False, type="boolean", title="Dry run",
                             description="Export and validate only: no freeze, no Cassandra writes, no flip."),
            "mode": Param("online", type="string", enum=list(pipeline.MODES), title="Mode",
                          description="online: copy while writable, freeze only for the last changes (needs "
                                      "the row binlog). offline: freeze for the whole copy."),
            "catchup_max_customers": Param(200, type="integer", minimum=0, maximum=10_000_000,
                                           title="Catch-up target backlog (customers)",
                                           description="Online: catch-up rounds stop once a round touched "
                                                       "at most this many customers; then the cutover freezes."),
            "catchup_max_rounds": Param(10, type="integer", minimum=1, maximum=1000,
                                        title="Catch-up rounds (max)"),
            "freeze_budget_s": Param(30, type="integer", minimum=1, maximum=3600, title="Freeze budget (s)",
                                     description="Online: never refuse writes longer than this; the cutover "
                                                 "aborts and unfreezes past it."),
        },
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
            return pipeline.plan(CFG, _params(), _run_id())

        @task(max_active_tis_per_dagrun=s.max_parallel_chunks, pool=CFG.pools["mysql"].name)
        def export(lane: dict) -> dict:
            return pipeline.export_lane(CFG, _params(), _run_id(), lane)

        @task(max_active_tis_per_dagrun=s.max_parallel_chunks)
        def transform(lane: dict) -> dict:
            return pipeline.transform_lane(CFG, _params(), _run_id(), lane)

        @task
        def error_budget(results: list[dict]) -> dict:
            from airflow.sdk.exceptions import AirflowSkipException

            p = _params()
            out = pipeline.check_error_budget(CFG, p, _run_id(), list(results))
            if p.dry_run:
                raise AirflowSkipException(f"dry run: {out['rejects']} reject(s); nothing loaded")
            return out

        @task(max_active_tis_per_dagrun=s.max_parallel_chunks, pool=CFG.pools["cassandra"].name)
        def load(lane: dict) -> dict:
            return pipeline.load_lane(CFG, _params(), _run_id(), lane)

        @task(max_active_tis_per_dagrun=s.max_parallel_chunks, pool=CFG.pools["mysql"].name)
        def compare_and_repair(lane: dict) -> dict:
            return pipeline.compare_lane(CFG, _params(), _run_id(), lane)

        @task
        def catch_up() -> dict:
            return stages.catch_up(CFG, _params(), _run_id())

        @task
        def cutover(results: list[dict]) -> dict:
            return stages.finish(CFG, _params(), _run_id(), list(results))

        @task(trigger_rule="all_done")
        def release_freeze() -> dict:
            return pipeline.release_freeze(CFG, country, _run_id())

        @task(trigger_rule="all_done")
        def report() -> dict:
            ctx = get_current_context()
            states = ctx["ti"].get_task_states(dag_id=ctx["dag"].dag_id, run_ids=[ctx["run_id"]])
            return pipeline.final_report(CFG, country, ctx["run_id"], states.get(ctx["run_id"], {}))

        frozen = begin()
        lanes = plan()
        validate_params() >> check_routing() >> frozen >> lanes
        transformed = transform.expand(lane=lanes)
        export.expand(lane=lanes) >> transformed
        loaded = load.expand(lane=lanes)
        error_budget(transformed) >> loaded
        compared = compare_and_repair.expand(lane=lanes)
        loaded >> compared
        compared >> catch_up() >> (flip := cutover(compared))
        flip >> release_freeze().as_teardown(setups=frozen) >> report()
    return dag


for _cc in CFG.countries:
    globals()[f"migrate_billing_{_cc.lower()}"] = build(_cc)
