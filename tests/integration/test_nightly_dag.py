"""The nightly_billing DAG end to end with dag.test(): a generated country migrated by migrate_billing_<cc>,
then clean nights, a drift that fails the run loudly, the re-sync param, and three backfilled dates."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from billing_migration.nightly import reconcile, renewal, snapshot
from billing_migration.stores import connections, s3io

ROOT = Path(__file__).resolve().parents[2]
MIGRATED, LEGACY = "NL", "SE"


@pytest.fixture(scope="module")
def bag():
    from airflow.dag_processing.dagbag import DagBag

    b = DagBag(dag_folder=str(ROOT / "dags"))
    assert not b.import_errors, b.import_errors
    return b


@pytest.fixture(scope="module")
def migrated(cfg, legacy_db, cassandra_ks, s3, bag, reset_stores, reseed, reset_routing):
    """NL generated (clean data) and migrated by its own DAG; SE generated and left on legacy."""
    from billing_migration.stores import write_gate

    reset_stores()
    reseed(160, seed=3, countries={MIGRATED: 0.6, LEGACY: 0.4})
    run = bag.get_dag("migrate_billing_nl").test(
        run_conf={"country": MIGRATED, "chunk_customers": 100, "parallelism": 2})
    assert str(getattr(run.state, "value", run.state)) == "success"
    assert write_gate.routing(cfg)[MIGRATED] == "cassandra"
    yield cfg
    reset_routing("nightly DAG tests done")


def _night(bag, day: dt.date, **conf):
    dag = bag.get_dag("nightly_billing")
    run = dag.test(logical_date=dt.datetime(day.year, day.month, day.day, 2, tzinfo=dt.UTC),
                   # every param given: a dag.test run's conf outlives it in the shared DAG object's params
                   run_conf={"token_splits": 2, "countries": [MIGRATED, LEGACY], "resync_customer_ids": [],
                             "resync_force_from_legacy": False, **conf})
    states: dict[str, set[str]] = {}
    for ti in run.get_task_instances():
        states.setdefault(ti.task_id, set()).add(str(getattr(ti.state, "value", ti.state)))
    return str(getattr(run.state, "value", run.state)), states


def _report(cfg, s3, day: dt.date, country: str) -> dict:
    return s3io.get_json(s3, cfg.s3_bucket, reconcile.report_prefix(cfg, day, country) + "report.json")


def test_migrated_country_reconciles_and_renews_from_cassandra(cfg, s3, bag, migrated):
    day = dt.date(2026, 11, 30)
    state, states = _night(bag, day)
    assert state == "success", states
    assert states["snapshot_cassandra"] == {"success"} and states["resync_customers"] == {"skipped"}
    rep = _report(cfg, s3, day, MIGRATED)
    assert rep["ok"] and rep["source_of_truth"] == "cassandra"
    assert rep["counts"]["mysql"]["customers"] == rep["counts"]["cassandra"]["customers"] > 0
    assert not s3io.list_keys(s3, cfg.s3_bucket, reconcile.report_prefix(cfg, day, LEGACY))  # not in scope
    sums = {}
    for cc, source in ((MIGRATED, "cassandra"), (LEGACY, "mysql")):
        prefix = renewal.renewal_prefix(cfg, day, cc)
        assert s3io.exists(s3, cfg.s3_bucket, prefix + "_SUCCESS")
        sums[cc] = s3io.get_json(s3, cfg.s3_bucket, prefix + "summary.json")
        assert sums[cc]["source"] == source
    assert sums[MIGRATED]["to_bill"] > 0
    # The list the DAG computed from Cassandra equals one computed from the frozen legacy copy.
    bill, _, _ = renewal.crawl(renewal.mysql_batches(cfg, MIGRATED), renewal.mysql_plans(cfg, MIGRATED), day,
                            MIGRATED)
    from_mysql = renewal.to_arrow(bill, renewal.RENEWAL_SCHEMA)
    from_dag = s3io.get_parquet(s3, cfg.s3_bucket, renewal.renewal_prefix(cfg, day, MIGRATED) + "part-0.parquet")
    assert from_dag.equals(from_mysql)


def test_drift_fails_the_run_loudly_and_the_resync_param_repairs_it(cfg, s3, bag, migrated):
    with connections.cassandra_session(cfg) as s:
        row = s.execute("SELECT customer_id, entity_id, amount FROM customer_billing WHERE entity_type='invoice' "
                        "AND country=%s LIMIT 1 ALLOW FILTERING", (MIGRATED,)).one()
        s.execute("UPDATE customer_billing SET amount=%s WHERE customer_id=%s AND entity_type='invoice' "
                  "AND entity_id=%s", (row.amount + Decimal("1.25"), row.customer_id, row.entity_id))
    day = dt.date(2026, 12, 1)
    state, states = _night(bag, day)
    assert state == "failed"
    assert states["assert_reconciled"] == {"failed"}
    assert states["renew"] == {"success"}  # billing still runs; only the reconciliation fails
    rep = _report(cfg, s3, day, MIGRATED)
    assert [c["customer_id"] for c in rep["customers"]] == [row.customer_id]
    assert "resync_force_from_legacy" in rep["customers"][0]["fix"]
    assert [Decimal(m["diff"]) for m in rep["financial_differences"]] == [Decimal("1.25")]

    # Cut over: a plain re-sync is refused (Cassandra is the truth); an operator's explicit restore from the
    # legacy copy, passed as params, repairs it and the same run verifies it.
    with pytest.raises(reconcile.ResyncRefused):
        reconcile.resync_customers(cfg, [row.customer_id], run_id="test")
    state, states = _night(bag, day + dt.timedelta(days=2), resync_customer_ids=[row.customer_id],
                           resync_force_from_legacy=True)
    assert state == "success", states
    assert _report(cfg, s3, day + dt.timedelta(days=2), MIGRATED)["ok"]


def test_backfill_of_three_dates_writes_three_partitions(cfg, s3, bag, migrated):
    """What `airflow backfill create --from-date 2026-10-28 --to-date 2026-10-30T02:00:00+00:00` produces,
    via dag.test (scripts/backfill-demo runs the real backfill through a scheduler)."""
    days = [dt.date(2026, 10, 28), dt.date(2026, 10, 29), dt.date(2026, 10, 30)]
    for d in days:
        state, _ = _night(bag, d, countries=[LEGACY])
        assert state == "success"
    root = f"{cfg.s3_prefix}nightly/renewals/"
    done = [k for k in s3io.list_keys(s3, cfg.s3_bucket, root) if k.endswith(f"country={LEGACY}/_SUCCESS")]
    assert [k.split("date=")[1][:10] for k in done if "date=2026-10" in k] == [d.isoformat() for d in days]
    key = renewal.renewal_prefix(cfg, days[1], LEGACY) + "part-0.parquet"
    before = s3.get_object(Bucket=cfg.s3_bucket, Key=key)["Body"].read()
    assert _night(bag, days[1], countries=[LEGACY])[0] == "success"  # rerun of one date
    assert s3.get_object(Bucket=cfg.s3_bucket, Key=key)["Body"].read() == before
    assert snapshot.plan_night(cfg, days[1], [LEGACY])["reconcile"] == []


def _summary(cfg, s3, day: dt.date, country: str) -> dict:
    return s3io.get_json(s3, cfg.s3_bucket, renewal.renewal_prefix(cfg, day, country) + "summary.json")


def test_backfilled_past_date_says_what_it_was_computed_from(cfg, s3, bag, migrated):
    """A past date with no snapshot of its own is computed from today's data and says so; once the date has
    snapshots (here: an earlier run's, stamped as taken that night) a rerun uses them and says so."""
    day = dt.date(2026, 10, 20)
    state, states = _night(bag, day)
    assert state == "success", states
    for cc in (MIGRATED, LEGACY):
        as_of = _summary(cfg, s3, day, cc)["as_of"]
        assert as_of["of_the_date"] is False
        assert "not as of 2026-10-20" in as_of["note"], as_of
    rep = _report(cfg, s3, day, MIGRATED)
    assert rep["as_of"]["of_the_date"] is False and "snapshots taken" in rep["as_of"]["computed_from"]

    # The date's own snapshots exist (the original night's run, simulated by stamping the plan): reused.
    key = snapshot.night_key(cfg, day)
    night = s3io.get_json(s3, cfg.s3_bucket, key)
    night["taken_at"] = "2026-10-20T02:00:07+00:00"
    s3io.put_json(s3, cfg.s3_bucket, key, night)
    state, states = _night(bag, day)
    assert state == "success", states
    assert states["snapshot_cassandra"] == {"skipped"} and states["snapshot_mysql"] == {"skipped"}
    nl = _summary(cfg, s3, day, MIGRATED)["as_of"]
    assert nl["of_the_date"] is True and nl["note"] == ""
    assert nl["computed_from"] == "cassandra snapshot of 2026-10-20 taken at 2026-10-20T02:00:07+00:00"
    assert _report(cfg, s3, day, MIGRATED)["as_of"]["of_the_date"] is True
    se = _summary(cfg, s3, day, LEGACY)["as_of"]  # served by legacy: read live, so still as of now
    assert se["of_the_date"] is False and se["computed_from"].startswith("live mysql read at ")
