"""The status page's data against the real stores (routing in MariaDB, ledger in Cassandra, reports on S3),
without a DAG run: the quick check of the default test run. The whole path (a real migration, the real
api-server, a browser) is tests/integration/test_status_ui.py, run by `make test-ui`."""

from __future__ import annotations

import pytest

# Countries no other test module migrates: their ledger and routing hold only this module's runs.
MIGRATED, FROZEN, LEGACY = "JP", "IN", "MX"
RUN_NZ, RUN_SE = "manual__2026-11-24T09:00:00+00:00", "manual__2026-11-25T09:00:00+00:00"


@pytest.fixture(scope="module")
def states(cfg, legacy_db, cassandra_ks, s3, reset_routing):
    """NZ cut over by a run with a report on S3; SE frozen by a run still in its copy; CH never touched."""
    from billing_migration.country import report
    from billing_migration.stores import ledger, write_gate

    reset_routing("status data test starts")
    # Started now: the newest run of NZ even when earlier tests of the session left NZ runs in the ledger.
    ledger.start(cfg, MIGRATED, RUN_NZ, "disable_writes")
    ledger.finish(cfg, MIGRATED, RUN_NZ, "disable_writes")
    ledger.finish(cfg, MIGRATED, RUN_NZ, "export", part=0, counts={"rows.customers": 4, "rows.invoices": 9})
    ledger.finish(cfg, MIGRATED, RUN_NZ, "compare", part=0,
                  counts={"customers_compared": 4, "mismatches_left": 0, "rounds": 1, "remigrated_customers": 1})
    write_gate.freeze(cfg, MIGRATED, actor="pytest", run_id=RUN_NZ)
    write_gate.cutover(cfg, MIGRATED, actor="pytest", run_id=RUN_NZ)
    ledger.finish(cfg, MIGRATED, RUN_NZ, "enable_writes")
    report.write(cfg, report.build(cfg, MIGRATED, RUN_NZ))
    ledger.start(cfg, FROZEN, RUN_SE, "export", part=0)
    write_gate.freeze(cfg, FROZEN, actor="pytest", run_id=RUN_SE)
    yield cfg
    reset_routing("status data test done")


def test_overview_shows_migrated_frozen_and_legacy(states):
    from billing_migration.ui import status

    seen: list = []
    data = status.overview(states, [MIGRATED, FROZEN, LEGACY], airflow=lambda pairs: seen.extend(pairs) or {})
    assert data["errors"] == []
    rows = {r["country"]: r for r in data["countries"]}
    nz, se, ch = rows[MIGRATED], rows[FROZEN], rows[LEGACY]
    assert (nz["state"], nz["serving_store"], nz["cutover_run_id"]) == ("migrated", "cassandra", RUN_NZ)
    run = nz["last_run"]
    assert (run["run_id"], run["outcome"], run["ledger_state"]) == (RUN_NZ, "cut_over", "succeeded")
    assert run["rows"] == {"customers": 4, "invoices": 9} and run["compare"]["clean"]
    assert run["remigrated_customers"] == 1 and run["freeze_window_s"] is not None
    assert (se["state"], se["frozen_by_run"], se["last_run"]["ledger_state"]) == ("frozen", RUN_SE, "running")
    assert se["last_run"]["outcome"] == "incomplete"  # no report.json yet: built live from the ledger
    assert (ch["state"], ch["last_run"], ch["frozen"]) == ("legacy", None, False)
    assert sorted(seen) == sorted([(f"migrate_billing_{MIGRATED.lower()}", RUN_NZ),
                                   (f"migrate_billing_{FROZEN.lower()}", RUN_SE)])


def test_country_detail_lists_runs_and_gate_events(states):
    from billing_migration.ui import status

    detail = status.country_detail(states, MIGRATED.lower(), airflow=lambda pairs: {})
    assert detail["runs"][0]["run_id"] == RUN_NZ  # newest first (other tests' NZ runs may follow)
    assert [e["action"] for e in detail["gate_events"]][:2] == ["cutover", "freeze"]
    assert status.load_report_md(states, MIGRATED, RUN_NZ).startswith(f"### Billing migration {MIGRATED}: cut over")
