"""The whole per-country DAG, run with dag.test() against the real MariaDB, Cassandra and S3."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from decimal import Decimal

import pytest

COUNTRY, OTHER = "NZ", "SE"
MIX = {"NZ": 0.5, "SE": 0.3, "CH": 0.2}


@pytest.fixture
def seeded(fresh_countries):
    """A fresh legacy DB (clean data), routing reset, empty target for the test countries."""
    return fresh_countries(300, MIX, seed=7)


def _run(dag, **conf):
    # dag.test() carries a previous run's conf over to the next run of the same DAG object: name the params
    # that change behaviour explicitly, so each test runs with the defaults unless it says otherwise.
    base = {"country": COUNTRY, "chunk_customers": 100, "parallelism": 2, "mode": "online", "dry_run": False,
            "reset": "none", "error_budget": 0}
    return dag.test(run_conf={**base, **conf})


def _offline_run_params(cfg):
    """Params of a run driven stage by stage (no scheduler), frozen for the whole copy, one lane."""
    from billing_migration.country import pipeline

    return pipeline.validate_params(cfg, COUNTRY, {"country": COUNTRY, "chunk_customers": 100, "parallelism": 1,
                                                   "mode": "offline"})


def _state(run) -> str:
    return str(getattr(run.state, "value", run.state))


def _gate(cfg, country):
    from billing_migration.stores import write_gate

    return write_gate.status(cfg, country)


def _source_counts(cfg, country) -> dict[str, int]:
    from billing_migration.stores import connections
    from billing_migration.stores.schema import ENTITY_TABLES

    out = {}
    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM customers WHERE country = %s", (country,))
        out["customers"] = cur.fetchone()[0]
        for t in ENTITY_TABLES:
            cur.execute(f"SELECT COUNT(*) FROM {t.name} x JOIN customers c USING (customer_id) "
                        "WHERE c.country = %s", (country,))
            out[t.entity] = cur.fetchone()[0]
    return out


def _target_counts(cfg, country) -> dict[str, int]:
    from billing_migration.stores import connections
    from billing_migration.stores.schema import CUSTOMERS_BY_COUNTRY_BUCKETS, ENTITY_TABLES

    out = {t.entity: 0 for t in ENTITY_TABLES}
    ids: list[int] = []
    with connections.cassandra_session(cfg) as s:
        for b in range(CUSTOMERS_BY_COUNTRY_BUCKETS):
            ids += [r.customer_id for r in s.execute(
                "SELECT customer_id FROM customers_by_country WHERE country=%s AND bucket=%s", (country, b))]
        for cid in ids:
            for r in s.execute("SELECT entity_type, country FROM customer_billing WHERE customer_id=%s", (cid,)):
                assert r.country == country
                if r.entity_type in out:
                    out[r.entity_type] += 1
    out["customers"] = len(ids)
    return out


def _report(cfg, run_id) -> dict:
    from billing_migration.stores import connections, s3io

    key = s3io.run_prefix(cfg, COUNTRY, run_id) + "report.json"
    return s3io.get_json(connections.s3_client(cfg), cfg.s3_bucket, key)


def _app_write(cfg, country) -> None:
    """A legacy-application write (a promo credit) to one of the country's customers."""
    from billing_migration.stores import connections

    with connections.mysql_conn("mysql_app", cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT customer_id FROM customers WHERE country=%s ORDER BY customer_id LIMIT 1", (country,))
        cid = cur.fetchone()[0]
        cur.execute("SELECT COALESCE(MAX(txn_id), 0) + 1 FROM balance_transactions")
        txn = cur.fetchone()[0]
        cur.execute("INSERT INTO balance_transactions (txn_id, customer_id, kind, amount, currency, created_at, "
                    "updated_at) VALUES (%s, %s, 'promo_credit', 5.00, 'NZD', UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))",
                    (txn, cid))
        conn.commit()


def test_migrates_a_country_end_to_end_and_leaves_others_untouched(dags, seeded):
    from billing_migration.country import compare, export

    cfg = seeded
    dag = dags.get_dag(f"migrate_billing_{COUNTRY.lower()}")
    before_other = _gate(cfg, OTHER)
    run = _run(dag)
    assert _state(run) == "success"

    assert _target_counts(cfg, COUNTRY) == _source_counts(cfg, COUNTRY)
    chunks = export.plan_chunks(cfg, COUNTRY, 1000)
    result = compare.compare_range(cfg, COUNTRY, chunks[0]["lo"], chunks[-1]["hi"])
    assert compare.mismatching_customers(result) == []

    gate = _gate(cfg, COUNTRY)
    assert gate["serving_store"] == "cassandra"
    assert gate["writes_frozen"]  # the legacy copy stays frozen for rollback
    with pytest.raises(Exception, match="frozen"):
        _app_write(cfg, COUNTRY)
    assert _gate(cfg, OTHER) == before_other
    assert _target_counts(cfg, OTHER)["customers"] == 0
    _app_write(cfg, OTHER)  # another country is still writable on legacy

    rep = _report(cfg, run.run_id)
    assert rep["outcome"] == "cut_over" and rep["freeze_window_s"] > 0
    assert "legacy copy is frozen because NZ moved" in rep["serving"]
    assert rep["stages"]["compare"]["counts"]["rounds"] == 1  # max over chunks, not their sum

    # Rerunning an already migrated country is a safe no-op.
    rerun = _run(dag)
    assert _state(rerun) == "success"
    assert _report(cfg, rerun.run_id)["outcome"] == "already_cut_over"
    assert _target_counts(cfg, COUNTRY) == _source_counts(cfg, COUNTRY)


def test_concurrent_writer_is_refused_during_the_freeze_and_loses_nothing(dags, seeded):
    """Offline mode: the whole copy runs frozen (online mode: tests/integration/test_online_migration.py)."""
    from billing_migration.stores import connections

    cfg = seeded
    acked: list[int] = []
    refused: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        with connections.mysql_conn("mysql_app", cfg) as conn, conn.cursor() as cur:
            cur.execute("SELECT customer_id FROM customers WHERE country=%s ORDER BY customer_id LIMIT 1",
                        (COUNTRY,))
            cid = cur.fetchone()[0]
            n = 0
            while not stop.is_set():
                n += 1
                txn = 10_000_000 + n
                try:
                    cur.execute("INSERT INTO balance_transactions (txn_id, customer_id, kind, amount, currency, "
                                "created_at, updated_at) VALUES (%s, %s, 'promo_credit', 1.00, 'NZD', "
                                "UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))", (txn, cid))
                    conn.commit()
                    acked.append(txn)
                except Exception as exc:  # the guard trigger's refusal
                    conn.rollback()
                    refused.append(str(exc))
                time.sleep(0.02)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        run = _run(dags.get_dag(f"migrate_billing_{COUNTRY.lower()}"), mode="offline")
    finally:
        stop.set()
        t.join(10)
    assert _state(run) == "success"
    assert acked, "the writer never wrote before the freeze"
    assert refused, "no write was refused during the freeze"
    assert all("frozen" in r for r in refused), refused[:3]
    with connections.cassandra_session(cfg) as s:
        found = set()
        for txn in acked:
            rows = list(s.execute("SELECT entity_id FROM customer_billing WHERE customer_id=%s "
                                  "AND entity_type='balance_txn' AND entity_id=%s",
                                  (_customer_of_txn(cfg, txn), txn)))
            if rows:
                found.add(txn)
    assert found == set(acked), f"acknowledged writes missing from Cassandra: {sorted(set(acked) - found)[:10]}"


def _customer_of_txn(cfg, txn: int) -> int:
    from billing_migration.stores import connections

    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT customer_id FROM balance_transactions WHERE txn_id=%s", (txn,))
        return cur.fetchone()[0]


@pytest.mark.parametrize("stage", ["disable_writes", "export", "transform", "load", "compare", "enable_writes"])
def test_failure_in_a_stage_leaves_the_country_writable_on_legacy(dags, seeded, stage, monkeypatch):
    cfg = seeded
    dag = dags.get_dag(f"migrate_billing_{COUNTRY.lower()}")
    monkeypatch.setenv("BM_FAIL_AT", stage)
    run = _run(dag)
    assert _state(run) == "failed"
    gate = _gate(cfg, COUNTRY)
    assert gate["serving_store"] == "legacy"
    assert not gate["writes_frozen"]
    _app_write(cfg, COUNTRY)  # writable again on the old store
    if stage != "disable_writes":
        rep = _report(cfg, run.run_id)
        assert rep["outcome"] == "failed"
        if stage == "enable_writes":  # online (the default) freezes only inside cutover: frozen, then released
            assert rep["freeze_window_s"] > 0
        else:  # the copy ran writable: a failure there never froze the country
            assert rep["freeze_window_s"] is None and rep["mode"] == "online"
        # online (the default): the freeze and the flip run inside the one `cutover` task
        task = {"compare": "compare_and_repair", "enable_writes": "cutover"}.get(stage, stage)
        assert rep["failed_tasks"][0].startswith(task)
    monkeypatch.delenv("BM_FAIL_AT")
    if stage in ("load", "enable_writes"):  # a rerun completes (checked on two stages to keep the suite short)
        rerun = _run(dag)
        assert _state(rerun) == "success"
        assert _gate(cfg, COUNTRY)["serving_store"] == "cassandra"
        assert _target_counts(cfg, COUNTRY) == _source_counts(cfg, COUNTRY)


def test_dirty_records_are_rejected_with_reasons_and_the_budget_decides(dags, cfg, legacy_db, cassandra_ks, s3):
    from billing_migration.country.pipeline import quarantined_keys
    from billing_migration.devtools import generator
    from billing_migration.stores import connections, s3io, write_gate

    write_gate.reset_routing(cfg, "test", "fresh seed")
    generator.seed(cfg, 600, seed=11, countries=MIX, dirty_rate=0.02)
    dag = dags.get_dag(f"migrate_billing_{COUNTRY.lower()}")
    strict = _run(dag)
    assert _state(strict) == "failed"  # default budget 0: stops before any Cassandra write
    assert _gate(cfg, COUNTRY)["serving_store"] == "legacy"
    assert not _gate(cfg, COUNTRY)["writes_frozen"]
    rejected = quarantined_keys(cfg, COUNTRY, strict.run_id)
    assert rejected, "no record was rejected"
    client = connections.s3_client(cfg)
    keys = s3io.list_keys(client, cfg.s3_bucket, s3io.run_prefix(cfg, COUNTRY, strict.run_id) + "rejects/")
    reasons = set()
    for k in keys:
        t = s3io.get_parquet(client, cfg.s3_bucket, k).to_pylist()
        for r in t:
            assert r["table"] and r["key"] is not None and r["reason"]
            reasons.add(r["reason"].split(" ")[0])
    assert len(reasons) >= 3, reasons

    lenient = _run(dag, error_budget=100_000)
    assert _state(lenient) == "success"
    assert _gate(cfg, COUNTRY)["serving_store"] == "cassandra"


def test_corrupted_target_row_is_caught_by_compare_and_repaired(cfg, seeded):
    """Stage functions without the scheduler: load, corrupt one row, compare_and_repair fixes it."""
    from billing_migration.country import pipeline
    from billing_migration.stores import connections, ledger, write_gate

    run_id = f"manual__corrupt_{os.getpid()}_{time.time_ns()}"
    p = _offline_run_params(cfg)
    pipeline.disable_writes(cfg, p, run_id)
    try:
        (lane,) = pipeline.plan(cfg, p, run_id)
        pipeline.export_lane(cfg, p, run_id, lane)
        pipeline.transform_lane(cfg, p, run_id, lane)
        pipeline.load_lane(cfg, p, run_id, lane)
        # An invoice of this country (chunks tile every id from 0, and the keyspace holds other tests' rows).
        with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
            cur.execute("SELECT i.customer_id, i.invoice_id FROM invoices i JOIN customers c USING (customer_id) "
                        "WHERE c.country = %s ORDER BY i.invoice_id LIMIT 1", (COUNTRY,))
            cid, iid = cur.fetchone()
        with connections.cassandra_session(cfg) as s:
            row = s.execute("SELECT customer_id, entity_id, amount FROM customer_billing WHERE customer_id=%s "
                            "AND entity_type='invoice' AND entity_id=%s", (int(cid), int(iid))).one()
            s.execute("UPDATE customer_billing SET amount=%s WHERE customer_id=%s AND entity_type='invoice' "
                      "AND entity_id=%s", (row.amount + Decimal("1.00"), row.customer_id, row.entity_id))
        out = pipeline.compare_lane(cfg, p, run_id, lane)
        assert out["round1_mismatches"] >= 1
        assert out["remigrated_customers"] >= 1
        assert out["mismatches_left"] == 0
        with connections.cassandra_session(cfg) as s:
            fixed = s.execute("SELECT amount FROM customer_billing WHERE customer_id=%s AND entity_type='invoice' "
                              "AND entity_id=%s", (row.customer_id, row.entity_id)).one()
        assert fixed.amount == row.amount
        assert any(e["step"] == "compare" and e["state"] == "succeeded"
                   for e in ledger.get_run(cfg, COUNTRY, run_id))
    finally:
        write_gate.unfreeze(cfg, COUNTRY, "test", run_id, reason="test done")


def test_bad_param_is_refused_before_any_write(dags, seeded):
    from airflow.sdk.definitions.param import ParamValidationError
    from billing_migration.stores import ledger

    cfg = seeded
    dag = dags.get_dag(f"migrate_billing_{COUNTRY.lower()}")
    before = ledger.last_runs(cfg, COUNTRY, 100)
    for conf in ({"country": "XX"}, {"chunk_customers": 0}, {"reset": "everything"}, {"dry_run": "maybe"}):
        with pytest.raises((ParamValidationError, ValueError)):
            dag.test(run_conf={"country": COUNTRY, **conf})
    gate = _gate(cfg, COUNTRY)
    assert gate["serving_store"] == "legacy" and not gate["writes_frozen"]
    assert ledger.last_runs(cfg, COUNTRY, 100) == before
    assert _target_counts(cfg, COUNTRY)["customers"] == 0


def test_resume_after_the_country_was_unfrozen_refuses_stale_chunks_then_completes(cfg, seeded, monkeypatch):
    """A failed attempt's teardown re-enables writes; a cleared task must not load what was exported before."""
    from billing_migration.country import compare, pipeline
    from billing_migration.country.pipeline import MigrationError
    from billing_migration.stores import connections, write_gate

    run_id = f"manual__resume_{os.getpid()}_{time.time_ns()}"
    p = _offline_run_params(cfg)
    pipeline.disable_writes(cfg, p, run_id)
    (lane,) = pipeline.plan(cfg, p, run_id)
    pipeline.export_lane(cfg, p, run_id, lane)
    pipeline.transform_lane(cfg, p, run_id, lane)
    monkeypatch.setenv("BM_FAIL_AT", "load")
    with pytest.raises(MigrationError):
        pipeline.load_lane(cfg, p, run_id, lane)
    monkeypatch.delenv("BM_FAIL_AT")
    pipeline.release_freeze(cfg, COUNTRY, run_id)  # the teardown of the failed attempt
    _app_write(cfg, COUNTRY)  # the country is writable again and takes a write
    # Clearing `load` re-runs the setup (a new freeze) but not plan/export: the step refuses stale chunks.
    pipeline.disable_writes(cfg, p, run_id)
    with pytest.raises(MigrationError, match="clear the run from `plan`"):
        pipeline.load_lane(cfg, p, run_id, lane)
    # Cleared from plan: every chunk is redone inside the new freeze (none skipped as done before it).
    (lane,) = pipeline.plan(cfg, p, run_id)
    assert pipeline.export_lane(cfg, p, run_id, lane)["skipped_chunks"] == 0
    pipeline.transform_lane(cfg, p, run_id, lane)
    pipeline.load_lane(cfg, p, run_id, lane)
    out = pipeline.compare_lane(cfg, p, run_id, lane)
    assert out["round1_mismatches"] == 0  # the write made while unfrozen was exported and loaded
    pipeline.enable_writes(cfg, p, run_id)
    assert write_gate.status(cfg, COUNTRY)["serving_store"] == "cassandra"
    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT MIN(customer_id), MAX(customer_id) FROM customers WHERE country=%s", (COUNTRY,))
        lo, hi = cur.fetchone()
    assert compare.mismatching_customers(compare.compare_range(cfg, COUNTRY, lo, hi)) == []


def test_dry_run_with_reset_leaves_the_target_untouched(dags, seeded):
    """A dry run writes nothing but its own S3 prefix and ledger rows: `reset` is not applied."""
    from billing_migration.stores import connections

    cfg = seeded
    with connections.cassandra_session(cfg) as s:
        s.execute("INSERT INTO customers_by_country (country, bucket, customer_id, run_id) VALUES (%s, 0, 1, 'x')",
                  (COUNTRY,))
    before = _target_counts(cfg, COUNTRY)
    assert before["customers"] == 1
    run = _run(dags.get_dag(f"migrate_billing_{COUNTRY.lower()}"), dry_run=True, reset="country")
    assert _state(run) == "success"
    assert _target_counts(cfg, COUNTRY) == before
    assert _report(cfg, run.run_id)["outcome"] == "dry_run"
    gate = _gate(cfg, COUNTRY)
    assert gate["serving_store"] == "legacy" and not gate["writes_frozen"]


def test_unknown_conf_key_fails_the_run_before_any_write(dags, seeded, caplog, capsys):
    from billing_migration.stores import ledger

    cfg = seeded
    before = ledger.last_runs(cfg, COUNTRY, 100)
    run = dags.get_dag(f"migrate_billing_{COUNTRY.lower()}").test(run_conf={"country": COUNTRY, "chunk_size": 1000})
    assert _state(run) == "failed"
    logs = caplog.text + "".join(capsys.readouterr())
    assert "unknown param(s) ['chunk_size']" in logs and "'chunk_customers'" in logs
    gate = _gate(cfg, COUNTRY)
    assert gate["serving_store"] == "legacy" and not gate["writes_frozen"]
    assert ledger.last_runs(cfg, COUNTRY, 100) == before
    assert _target_counts(cfg, COUNTRY)["customers"] == 0


def test_error_budget_counts_the_rejects_of_chunks_done_before_a_resume(cfg, legacy_db, cassandra_ks, s3):
    """A resumed transform lane returns only what it did now; the budget still counts every reject of the run."""
    from billing_migration.country import pipeline
    from billing_migration.country.pipeline import MigrationError
    from billing_migration.devtools import generator
    from billing_migration.stores import ledger, write_gate

    write_gate.reset_routing(cfg, "test", "fresh seed")
    generator.seed(cfg, 300, seed=11, countries=MIX, dirty_rate=0.02)
    run_id = f"manual__budget_{os.getpid()}_{time.time_ns()}"
    p = _offline_run_params(cfg)
    pipeline.disable_writes(cfg, p, run_id)
    try:
        (lane,) = pipeline.plan(cfg, p, run_id)
        assert len(lane.chunks) >= 2
        pipeline.export_lane(cfg, p, run_id, lane)
        first = pipeline.transform_lane(cfg, p, run_id, replace(lane, chunks=lane.chunks[:-1]))  # then "crash"
        resumed = pipeline.transform_lane(cfg, p, run_id, lane)
        assert resumed["skipped_chunks"] == len(lane.chunks) - 1
        total = sum(e["counts"].get("rejects", 0) for e in ledger.get_run(cfg, COUNTRY, run_id)
                    if e["step"] == "transform" and e["part"] >= 0)
        assert first["rejects"] > 0 and total > resumed["rejects"]
        with pytest.raises(MigrationError, match=f"{total} record\\(s\\) rejected"):
            pipeline.check_error_budget(cfg, p.model_copy(update={"error_budget": total - 1}), run_id)
        ok = pipeline.check_error_budget(cfg, p.model_copy(update={"error_budget": total}), run_id)
        assert ok["rejects"] == total
    finally:
        write_gate.unfreeze(cfg, COUNTRY, "test", run_id, reason="test done")


NOISE = ("[error", "ERROR", "XCom not found", "USE <keyspace>", "Legacy execution parameters")


def test_a_successful_run_logs_no_error_and_none_of_our_warnings(dags, seeded, caplog, capfd):
    run = _run(dags.get_dag(f"migrate_billing_{COUNTRY.lower()}"))
    assert _state(run) == "success"
    out, err = capfd.readouterr()
    lines = (caplog.text + out + err).splitlines()
    assert any("[DAG TEST] end task" in line for line in lines), "the task logs were not captured"
    noisy = [line for line in lines if any(n in line for n in NOISE)]
    assert noisy == [], noisy[:5]
    labels = {ti.task_id: ti.rendered_map_index for ti in run.get_task_instances() if ti.map_index >= 0}
    assert labels and all(v and v.startswith("lane ") for v in labels.values()), labels
