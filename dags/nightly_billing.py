"""nightly_billing: snapshot reconciliation of both stores and the renewal crawl, every night at 02:00 UTC.

    plan → reverse_sync → assert_reverse_synced (lag per cut-over country; fails if writes were dead-lettered)
    plan → resync_customers (only when asked) → snapshot_cassandra[token splits] + snapshot_mysql[countries]
         → reconcile[countries] → assert_reconciled      (fails loudly, naming each report on S3)
         → renew[countries] → renewal_summary

Reconciled: countries migrated (serving from Cassandra) or mid-migration (frozen), from country_routing.
Renewals: every configured country, read from the store that serves it. Logic lives in
`billing_migration.nightly.snapshot`, `.reconcile` and `.renewal`; this file only wires it. Backfillable: every output
is keyed by the logical date and replaced whole by a rerun (`airflow backfill create --dag-id nightly_billing
--from-date D1 --to-date D2T02:00:00+00:00`, the runs being at 02:00; scripts/backfill-demo runs one through a
real scheduler). A past date reuses its own snapshots when they are complete (the scan tasks are skipped);
otherwise it is computed from today's data, and every report and summary says so in `as_of`.

Failure semantics: a mismatch or missing state fails `assert_reconciled` (message = report URIs) while the
renewals still complete; a failed Cassandra scan blocks renewals (never bill from a partial snapshot); a
refused re-sync request (a country not frozen, a cut-over country without resync_force_from_legacy, or a
legacy record the transform rejects) fails the run before any snapshot and before any write: fix the params
or the legacy data and trigger again.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param, get_current_context, task
from billing_migration.config import load_config
from billing_migration.dag_defaults import dag_defaults
from billing_migration.nightly import reconcile, renewal, snapshot

CFG = load_config()


def _day() -> str:
    return get_current_context()["ds"]


def _params() -> dict:
    return dict(get_current_context()["params"])


with DAG(
    dag_id="nightly_billing",
    description="Nightly snapshot reconciliation of MySQL and Cassandra, and the renewal crawl",
    schedule="0 2 * * *",
    **dag_defaults("nightly"),
    doc_md=__doc__,
    params={
        "drift_threshold": Param(0.05, type="number", minimum=0, maximum=1, title="Shrink threshold",
                                 description="Fail if a snapshot has this fraction fewer rows than the previous "
                                             "day's (0.05 = 5%)."),
        "countries": Param([], type="array", items={"type": "string", "pattern": "^[A-Za-z]{2}$"},
                           title="Countries", description="Only these countries (empty: every configured one)."),
        "token_splits": Param(8, type="integer", minimum=1, maximum=256, title="Token-range splits",
                              description="Parallel Cassandra scan tasks (ranges of the Murmur3 ring)."),
        "resync_customer_ids": Param([], type="array", items={"type": "integer", "minimum": 1},
                                     title="Re-sync customers",
                                     description="Customers to re-copy whole from MySQL to Cassandra before the "
                                                 "snapshots (frozen, not cut-over countries). Never automatic."),
        "resync_force_from_legacy": Param(False, type="boolean", title="Force re-sync after cut-over",
                                          description="Restore the named customers of a cut-over country from the "
                                                      "frozen legacy copy (Cassandra is the source of truth)."),
    },
) as dag:

    @task
    def plan() -> dict:
        p = _params()
        # A re-sync is verified on fresh snapshots, never on reused ones.
        return snapshot.plan_night(CFG, _day(), p["countries"], int(p["token_splits"]),
                                   reuse=not p["resync_customer_ids"])

    @task
    def resync_customers() -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        p = _params()
        if not p["resync_customer_ids"]:
            raise AirflowSkipException("no resync_customer_ids given: nothing is re-synced automatically")
        return reconcile.resync_customers(CFG, p["resync_customer_ids"], get_current_context()["run_id"],
                                          bool(p["resync_force_from_legacy"]))

    @task
    def token_ranges(night: dict) -> list[dict]:
        return night["splits"] if night["take_snapshots"] else []

    @task
    def snapshot_countries(night: dict) -> list[dict]:
        return night["reconcile"] if night["take_snapshots"] else []

    @task
    def reconcile_countries(night: dict) -> list[dict]:
        return night["reconcile"]

    @task
    def renew_countries(night: dict) -> list[dict]:
        return night["renew"]

    @task(trigger_rule="none_failed", max_active_tis_per_dagrun=4, retries=2, retry_delay=timedelta(seconds=30))
    def snapshot_cassandra(split: dict, night: dict) -> dict:
        return snapshot.snapshot_cassandra_split(CFG, _day(), split, night["scan_countries"])

    @task(trigger_rule="none_failed", max_active_tis_per_dagrun=2, retries=2, retry_delay=timedelta(seconds=30))
    def snapshot_mysql(routing: dict) -> dict:
        counts = snapshot.snapshot_mysql(CFG, _day(), routing["country"])
        counts["cassandra_plans"] = snapshot.snapshot_cassandra_plans(CFG, _day(), routing["country"])
        return counts

    @task(trigger_rule="none_failed", max_active_tis_per_dagrun=2)
    def reconcile_country(routing: dict, night: dict) -> dict:
        return reconcile.reconcile_country(CFG, _day(), snapshot.Routing.from_dict(routing),
                                           float(_params()["drift_threshold"]), taken_at=night["taken_at"])

    @task(trigger_rule="none_failed")
    def assert_reconciled(results) -> dict:
        return reconcile.assert_reconciled(list(results or []))

    @task(trigger_rule="none_failed", max_active_tis_per_dagrun=2, retries=2, retry_delay=timedelta(seconds=30))
    def renew(routing: dict, night: dict) -> dict:
        # A failed scan blocks renewals (none_failed): never bill from a partial snapshot.
        return renewal.renew_country(CFG, _day(), snapshot.Routing.from_dict(routing),
                                     expected_parts=len(night["splits"]), taken_at=night["taken_at"],
                                     reused=not night["take_snapshots"])

    @task(trigger_rule="none_failed")
    def renewal_summary(results) -> dict:
        keys = ("to_bill", "held", "skipped", "skipped_by_rule", "source", "as_of")
        out = {r["country"]: {k: r.get(k) for k in keys} for r in (results or [])}
        return out

    @task
    def reverse_sync() -> dict:
        from billing_migration.app import replay

        return replay.reverse_sync_all(CFG, _params()["countries"] or None, fail_on_loss=False)

    @task
    def assert_reverse_synced(results: dict) -> dict:
        from billing_migration.app import replay

        return replay.assert_no_loss(CFG, results)

    night = plan()
    resync = resync_customers()
    night >> resync
    synced = reverse_sync()
    night >> synced
    assert_reverse_synced(synced)
    scans = snapshot_cassandra.partial(night=night).expand(split=token_ranges(night))
    countries = reconcile_countries(night)
    mysql_snaps = snapshot_mysql.expand(routing=snapshot_countries(night))
    resync >> [scans, mysql_snaps]
    synced >> [scans, mysql_snaps]  # the legacy copy of cut-over countries is current when snapshotted
    reconciled = reconcile_country.partial(night=night).expand(routing=countries)
    [scans, mysql_snaps] >> reconciled
    assert_reconciled(reconciled)
    renewals = renew.partial(night=night).expand(routing=renew_countries(night))
    scans >> renewals
    renewal_summary(renewals)
