"""Canary waves on the real stack. Each country runs through its real `migrate_billing_<cc>` DAG with
dag.test(): dag.test() cannot run a child run triggered by the wave DAG, so the wave logic the DAG wires
(`waves.run_inline`, the same plan / lanes / run_lane / close_wave / summary) is driven here with a runner
that runs the country's DAG in-process. The real trigger-and-wait path runs through a scheduler and two
Celery workers in scripts/celery-wave (tests/integration/test_celery_wave.py)."""

from __future__ import annotations

import os
import time
from decimal import Decimal

import pytest

MIX = {"NZ": 0.4, "IE": 0.3, "CH": 0.3}
COUNTRY_CONF = {"chunk_customers": 100, "parallelism": 1, "mode": "offline", "dry_run": False, "reset": "none",
                "error_budget": 0}


@pytest.fixture(scope="module")
def seeded(fresh_countries):
    return fresh_countries(90, MIX, seed=11)


def _runner(dags, calls: list[str], fail: str | None = None, drift: str | None = None):
    def run(country: str, run_id: str, conf: dict) -> tuple[str, str]:
        calls.append(country)
        if country == fail:
            os.environ["BM_FAIL_AT"] = "load"
        try:
            dr = dags.get_dag(f"migrate_billing_{country.lower()}").test(run_conf=conf)
        finally:
            os.environ.pop("BM_FAIL_AT", None)
        if country == drift:
            _corrupt_one_row(country)
        return dr.run_id, str(getattr(dr.state, "value", dr.state))
    return run


def _corrupt_one_row(country: str) -> None:
    from billing_migration.config import load_config
    from billing_migration.stores import connections

    cfg = load_config()
    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT i.customer_id, i.invoice_id FROM invoices i JOIN customers c USING (customer_id) "
                    "WHERE c.country = %s ORDER BY i.invoice_id LIMIT 1", (country,))
        cid, iid = cur.fetchone()
    with connections.cassandra_session(cfg) as s:
        row = s.execute("SELECT amount FROM customer_billing WHERE customer_id=%s AND entity_type='invoice' "
                        "AND entity_id=%s", (cid, iid)).one()
        s.execute("UPDATE customer_billing SET amount=%s WHERE customer_id=%s AND entity_type='invoice' "
                  "AND entity_id=%s", (row.amount + Decimal("1.00"), cid, iid))


def _serving(cfg, countries) -> dict[str, tuple[str, bool]]:
    from billing_migration.stores import write_gate

    return {s.country: (s.serving_store, s.writes_frozen) for s in write_gate.statuses(cfg, countries)}


def _target_customers(cfg, country) -> int:
    from billing_migration.stores import connections
    from billing_migration.stores.schema import CUSTOMERS_BY_COUNTRY_BUCKETS

    with connections.cassandra_session(cfg) as s:
        return sum(len(list(s.execute("SELECT customer_id FROM customers_by_country WHERE country=%s AND "
                                      "bucket=%s", (country, b)))) for b in range(CUSTOMERS_BY_COUNTRY_BUCKETS))


def _wave_run() -> str:
    return f"manual__waves_{os.getpid()}_{time.time_ns()}"


def test_waves_halt_on_drift_then_on_a_failure_and_a_rerun_resumes(dags, seeded):
    from billing_migration import waves
    from billing_migration.stores import connections, s3io

    cfg = seeded
    conf = {"waves": ["canary", "wave1"], "countries": ["NZ", "IE", "CH"], "concurrency": 1,
            "country_conf": COUNTRY_CONF}
    calls: list[str] = []
    # 1. The canary cuts over, its reconciliation finds drift: halt before wave1 starts.
    first = _wave_run()
    with pytest.raises(waves.WaveHalted, match=r"halted at NZ \(wave canary\): drift after cut-over: 1 customer"):
        waves.run_inline(cfg, conf, first, _runner(dags, calls, drift="NZ"))
    assert calls == ["NZ"]
    assert _serving(cfg, ["NZ", "IE", "CH"]) == {"NZ": ("cassandra", True), "IE": ("legacy", False),
                                                 "CH": ("legacy", False)}
    assert _target_customers(cfg, "IE") == _target_customers(cfg, "CH") == 0
    canary = waves.outcomes(cfg, first)["NZ"]
    assert canary["state"] == "success" and canary["outcome"] == "cut_over"

    # 2. Rerun: NZ (cut over) is skipped; IE fails, so CH, after IE in the same lane, is never started.
    calls.clear()
    second = _wave_run()
    with pytest.raises(waves.WaveHalted, match=r"halted at IE \(wave wave1\): run .* ended failed at load"):
        waves.run_inline(cfg, conf, second, _runner(dags, calls, fail="IE"))
    assert calls == ["IE"]
    assert _serving(cfg, ["IE", "CH"]) == {"IE": ("legacy", False), "CH": ("legacy", False)}
    assert _target_customers(cfg, "CH") == 0
    assert waves.halt_record(cfg, second)["country"] == "IE"

    # 3. Rerun once more: resumes with IE and CH, reconciled clean.
    calls.clear()
    third = _wave_run()
    out = waves.run_inline(cfg, conf, third, _runner(dags, calls))
    assert calls == ["IE", "CH"]
    assert out["plan"][0] == {"wave": "canary", "run": [], "already_cut_over": ["NZ"]}
    assert {c: o["outcome"] for c, o in out["outcomes"].items()} == {"IE": "cut_over", "CH": "cut_over"}
    assert all(v == ("cassandra", True) for v in _serving(cfg, ["NZ", "IE", "CH"]).values())
    rec = s3io.get_json(connections.s3_client(cfg), cfg.s3_bucket,
                        waves.wave_prefix(cfg, third) + "reconcile/wave1.json")
    assert [(r["country"], r["mismatching_customers"]) for r in rec] == [("CH", 0), ("IE", 0)]
    assert all(r["customers_compared"] > 0 for r in rec)


def test_bad_wave_params_are_refused_before_any_trigger(dags, seeded):
    from billing_migration import waves
    from billing_migration.config import ConfigError

    cfg = seeded
    bad = [({"concurrency": 0}, "concurrency must be an integer in \\[1, 32\\]"),
           ({"waves": ["wave9"]}, "unknown wave"),
           ({"waves": ["canary"], "countries": ["SE"]}, "not in the selected waves"),
           ({"country_conf": {"chunk_customers": 5}}, "chunk_customers must be"),
           ({"halt_on_drift": "yes"}, "halt_on_drift must be true or false"),
           ({"speed": 3}, "unknown setting 'speed'")]
    calls: list[str] = []
    for conf, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            waves.run_inline(cfg, conf, _wave_run(), _runner(dags, calls))
    assert calls == []
