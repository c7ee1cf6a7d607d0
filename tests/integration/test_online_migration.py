"""Online mode against the real MariaDB (row binlog), Cassandra, S3 and ElasticMQ, with the application writing
all along.

A writer thread (the application's write path, ~50 writes/s) inserts, updates and deletes customers and rows of
every entity table of the migrating country and of another one through pre-copy, catch-up, the freeze (its
writes are then accepted and queued, never refused), the replay, the reverse sync and a rollback.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from decimal import Decimal

import pytest

COUNTRY, OTHER = "NZ", "SE"
MIX = {"NZ": 0.5, "SE": 0.5}
WRITES = {"NZ": 0.75, "SE": 0.25}
SLACK_MS = 300  # client clock vs the gate's NOW(3): same host; a refusal is seen after the statement returns


@pytest.fixture
def seeded(fresh_countries):
    """A fresh legacy DB (clean data), routing reset, empty target for the test countries."""
    return fresh_countries(400, MIX, seed=5)


def _writer(cfg):
    from billing_migration.devtools.appwriter import AppWriter

    return AppWriter(cfg, WRITES, rate_per_s=50, seed=3)


def _params(cfg, **kw):
    from billing_migration.country import pipeline

    return pipeline.validate_params(cfg, COUNTRY, {"country": COUNTRY, "chunk_customers": 100, "parallelism": 1,
                                                   **kw})


def _cutover_entries(cfg, run_id) -> list[dict]:
    from billing_migration.stores import ledger

    return [e for e in ledger.get_run(cfg, COUNTRY, run_id) if e["step"] == "cutover"]


def _freeze_windows(cfg, run_id) -> list[tuple[int, int]]:
    return [(e["counts"]["frozen_at_ms"], e["counts"]["thawed_at_ms"]) for e in _cutover_entries(cfg, run_id)
            if "frozen_at_ms" in e["counts"]]


def _assert_refusals_only_while_frozen(writer, windows: list[tuple[int, int]], cut_over_at: int | None) -> None:
    """Freeze refusals fall inside a measured window; after the flip legacy refuses as 'served by cassandra'."""
    assert not [r for r in writer.refused if r[1] == OTHER], "a write of another country was refused"
    for at, _cc, msg in writer.refused:
        ms = int(at * 1000)
        if "served by cassandra" in msg:
            assert cut_over_at is not None and ms >= cut_over_at - SLACK_MS, (ms, cut_over_at, msg)
            continue
        assert any(lo - SLACK_MS <= ms <= hi + SLACK_MS for lo, hi in windows), (ms, windows, msg)
    unexpected = [e for e in writer.errors if "Deadlock" not in e[2]]
    assert not unexpected, unexpected[:3]


def _compare_whole_country(cfg) -> None:
    from billing_migration.country import compare
    from billing_migration.stores import connections

    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT MIN(customer_id), MAX(customer_id) FROM customers WHERE country = %s", (COUNTRY,))
        lo, hi = cur.fetchone()
    result = compare.compare_range(cfg, COUNTRY, 0, max(hi, 2_000_000_000))
    assert result.counts.get("customers_compared", 0) > 0 and lo is not None
    assert compare.mismatching_customers(result) == [], result.summary()


def _source_sums(cfg, exclude: frozenset[int] = frozenset()) -> dict[tuple, tuple[int, Decimal]]:
    """(table, currency) -> (rows, sum of amount), and (table, None) -> rows, by plain SQL (customers in
    `exclude` left out)."""
    from billing_migration.stores import connections
    from billing_migration.stores.schema import ENTITY_TABLES

    out: dict[tuple, tuple[int, Decimal]] = {}
    skip = "".join(f" AND c.customer_id <> {int(c)}" for c in exclude)
    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM customers c WHERE country = %s{skip}", (COUNTRY,))
        out[("customers", None)] = (cur.fetchone()[0], Decimal(0))
        for t in ENTITY_TABLES:
            if "amount" in t.column_names:
                cur.execute(f"SELECT x.currency, COUNT(*), SUM(x.amount) FROM {t.name} x JOIN customers c "
                            f"USING (customer_id) WHERE c.country = %s{skip} GROUP BY x.currency", (COUNTRY,))
                for cur_, n, total in cur.fetchall():
                    out[(t.entity, cur_)] = (n, Decimal(total))
            else:
                cur.execute(f"SELECT COUNT(*) FROM {t.name} x JOIN customers c USING (customer_id) "
                            f"WHERE c.country = %s{skip}", (COUNTRY,))
                out[(t.entity, None)] = (cur.fetchone()[0], Decimal(0))
    return {k: v for k, v in out.items() if v[0]}


def _target_sums(cfg, exclude: frozenset[int] = frozenset()) -> dict[tuple, tuple[int, Decimal]]:
    """The same figures by plain CQL over the country's index and partitions."""
    from billing_migration.stores import connections
    from billing_migration.stores.schema import CUSTOMERS_BY_COUNTRY_BUCKETS, ENTITY_TABLES

    with_amount = {t.entity for t in ENTITY_TABLES if "amount" in t.column_names}
    acc: dict[tuple, list] = defaultdict(lambda: [0, Decimal(0)])
    with connections.cassandra_session(cfg) as s:
        ids = [r.customer_id for b in range(CUSTOMERS_BY_COUNTRY_BUCKETS) for r in s.execute(
            "SELECT customer_id FROM customers_by_country WHERE country=%s AND bucket=%s", (COUNTRY, b))
            if r.customer_id not in exclude]
        acc[("customers", None)][0] = len(ids)
        for cid in ids:
            for r in s.execute("SELECT entity_type, amount, currency FROM customer_billing WHERE customer_id=%s",
                               (cid,)):
                if r.entity_type is None:
                    continue
                key = (r.entity_type, r.currency if r.entity_type in with_amount else None)
                acc[key][0] += 1
                acc[key][1] += r.amount if r.entity_type in with_amount else 0
    return {k: (n, Decimal(total)) for k, (n, total) in acc.items() if n}


def _assert_acked_writes_in_cassandra(cfg, writer) -> int:
    """The last acknowledged write of every key the writer touched in the country is what Cassandra holds."""
    from billing_migration.stores import connections
    from billing_migration.stores.schema import TABLES_BY_NAME

    last = {}
    for w in writer.writes(COUNTRY):
        last[(w.table, w.key)] = w
    checked = 0
    with connections.cassandra_session(cfg) as s, connections.mysql_conn("mysql_export", cfg) as conn, \
            conn.cursor() as cur:
        for (table, key), w in last.items():
            cur.execute(f"SELECT customer_id, updated_at FROM {table} WHERE {_key(table)} = %s", (key,))
            src = cur.fetchone()  # the cascade of a later delete may have removed the row since
            if table == "customers":
                rows = list(s.execute("SELECT customer_updated_at FROM customer_billing WHERE customer_id=%s "
                                      "LIMIT 1", (key,)))
                got = rows[0].customer_updated_at if rows else None
            else:
                entity = TABLES_BY_NAME[table].entity
                rows = list(s.execute("SELECT updated_at FROM customer_billing WHERE customer_id=%s AND "
                                      "entity_type=%s AND entity_id=%s", (w.customer_id, entity, key)))
                got = rows[0].updated_at if rows else None
            if w.op == "delete" or src is None:
                assert got is None, f"{w} deleted in MySQL but present in Cassandra"
            else:
                assert src[1] >= w.marker  # MySQL holds this write or a later one
                assert got is not None and got.replace(tzinfo=None) == src[1], f"{w}: Cassandra has {got}"
            checked += 1
    return checked


def _key(table: str) -> str:
    from billing_migration.devtools.appwriter import KEYS

    return KEYS[table]


def _gate(cfg, country=COUNTRY):
    from billing_migration.stores import write_gate

    return write_gate.status(cfg, country)


def test_online_run_with_a_concurrent_writer_freezes_only_for_the_delta_and_loses_nothing(dags, seeded):
    from billing_migration.app import replay
    from billing_migration.country import report
    from billing_migration.devtools.appwriter import summary

    cfg = seeded
    dag = dags.get_dag(f"migrate_billing_{COUNTRY.lower()}")
    with _writer(cfg) as writer:
        time.sleep(1.0)
        run = dag.test(run_conf={"country": COUNTRY, "chunk_customers": 100, "parallelism": 2, "mode": "online"})
        time.sleep(1.0)
    assert str(getattr(run.state, "value", run.state)) == "success"
    gate = _gate(cfg)
    assert gate["serving_store"] == "cassandra"

    (cut,) = _cutover_entries(cfg, run.run_id)
    assert cut["state"] == "succeeded"
    frozen_at, flipped = cut["counts"]["frozen_at_ms"], cut["counts"]["thawed_at_ms"]
    assert 0 < cut["counts"]["freeze_ms"] == flipped - frozen_at < 30_000
    copied_while_writable = [w for w in writer.writes(COUNTRY) if w.at * 1000 < frozen_at]
    assert len(copied_while_writable) > 100, "the application could not write during the pre-copy"
    assert not writer.refused, writer.refused[:3]  # frozen: accepted and queued instead
    _assert_refusals_only_while_frozen(writer, [(frozen_at, flipped)], flipped)
    assert writer.writes(OTHER), "the other country's writes were not acknowledged"
    pending = [w for w in writer.writes(COUNTRY) if w.status == "pending"]
    assert pending and [w for w in pending if frozen_at <= w.at * 1000 <= flipped], "nothing was queued frozen"
    assert writer.writes(COUNTRY)[-1].store == "cassandra"  # after the replay: straight to Cassandra

    rep = report.build(cfg, COUNTRY, run.run_id)
    queued = rep["queued_writes"]  # every accepted write replayed into Cassandra, in per-customer order
    assert queued["state"] == "succeeded" and queued["applied"] == len(pending) and not queued["dead_lettered"]
    _assert_replayed_in_order(cfg, pending)
    synced = replay.reverse_sync_all(cfg, max_s=None)  # what the app wrote on Cassandra reaches legacy MySQL
    assert synced[COUNTRY]["applied"] >= len(pending) and not synced[COUNTRY]["dlq_depth"]

    _compare_whole_country(cfg)
    assert _target_sums(cfg) == _source_sums(cfg)
    assert _assert_acked_writes_in_cassandra(cfg, writer) > 100

    assert rep["mode"] == "online" and rep["catch_up_rounds"] >= 1 and rep["last_lag_s"] is not None
    assert rep["freeze_window_s"] == cut["counts"]["freeze_ms"] / 1000
    print(report.render(rep), summary(writer))
    assert "catch-up rounds" in report.render(rep) and f"{len(pending)} replayed" in report.render(rep)
    _rollback_loses_nothing(cfg, writer)


def _assert_replayed_in_order(cfg, pending) -> None:
    """Per customer, the last sequence Cassandra applied is the last one queued: none skipped or reordered
    (a write applied out of order would have been skipped as older, leaving a lower mark)."""
    from billing_migration.stores import connections

    last: dict[int, int] = {}
    for w in pending:
        last[w.customer_id] = max(last.get(w.customer_id, 0), w.seq)
    with connections.cassandra_session(cfg) as s:
        got = {r.customer_id: r.seq for r in s.execute("SELECT customer_id, seq FROM write_path_applied")}
    assert {c: got.get(c) for c in last} == last


def _rollback_loses_nothing(cfg, writer1) -> None:
    """Back to legacy while the application keeps writing (on Cassandra, then held, then on legacy): every
    acknowledged write is in MySQL, and both stores hold the same rows and money for every customer not
    written after the rollback (independent SQL and CQL)."""
    from pathlib import Path

    from airflow.dag_processing.dagbag import DagBag
    from billing_migration.app import replay
    from billing_migration.devtools.appwriter import AppWriter

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags" / "rollback_billing.py"))
    with AppWriter(cfg, {COUNTRY: 1.0}, rate_per_s=40, seed=11, id_base=1_500_000_000) as writer:
        time.sleep(1.0)
        run = bag.get_dag(f"rollback_billing_{COUNTRY.lower()}").test()
        time.sleep(1.0)
    assert str(getattr(run.state, "value", run.state)) == "success"
    gate = _gate(cfg)
    assert gate["serving_store"] == "legacy" and not gate["writes_frozen"]
    assert not replay.hold_state(cfg, COUNTRY)["holding"]
    assert not writer.refused and not [e for e in writer.errors if "Deadlock" not in e[2]], writer.errors[:3]
    stores = [w.store for w in writer.acked]
    assert stores[0] == "cassandra" and stores[-1] == "legacy", "the rollback did not happen under writes"
    _assert_acked_writes_in_mysql(cfg, [*writer1.writes(COUNTRY), *writer.writes(COUNTRY)])
    # Customers written on legacy after the flip back (directly, or held and replayed there) differ by design.
    after = frozenset(w.customer_id for w in writer.acked if w.store in ("legacy", "queue"))
    assert _target_sums(cfg, after) == _source_sums(cfg, after)


def _assert_acked_writes_in_mysql(cfg, acked) -> None:
    """MySQL holds exactly the last acknowledged write of every key (both writers, in time order)."""
    from billing_migration.stores import connections

    last = {}
    for w in acked:
        last[(w.table, w.key)] = w
    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        for (table, key), w in last.items():
            cur.execute(f"SELECT updated_at FROM {table} WHERE {_key(table)} = %s", (key,))
            row = cur.fetchone()
            if w.op == "delete":
                assert row is None, f"{w} deleted but still in MySQL"
            elif row is not None:  # absent: removed since by the cascade of a later delete
                assert row[0] == w.marker, f"{w} lost: MySQL has {row[0]}"


def test_killed_catch_up_resumes_from_its_checkpoint_and_the_freeze_budget_is_enforced(seeded, monkeypatch):
    from billing_migration.country import pipeline, report
    from billing_migration.country.pipeline import MigrationError
    from billing_migration.online import capture, cutover, stages
    from billing_migration.stores import ledger

    cfg = seeded
    run_id = f"manual__online_{os.getpid()}_{time.time_ns()}"
    p = _params(cfg)
    with _writer(cfg) as writer:
        stages.begin(cfg, p, run_id)
        start = capture.start_position(cfg, COUNTRY, run_id)
        (lane,) = pipeline.plan(cfg, p, run_id)
        pipeline.export_lane(cfg, p, run_id, lane)
        pipeline.transform_lane(cfg, p, run_id, lane)
        pipeline.check_error_budget(cfg, p, run_id)
        pipeline.load_lane(cfg, p, run_id, lane)
        pipeline.compare_lane(cfg, p, run_id, lane)

        # The reader is killed right after its first checkpoint; the rerun resumes exactly there.
        monkeypatch.setenv("BM_FAIL_AT", "catch_up_checkpointed")
        with pytest.raises(MigrationError, match="injected failure"):
            stages.catch_up(cfg, p, run_id)
        monkeypatch.delenv("BM_FAIL_AT")
        saved = capture.changes().load_checkpoint(cfg, COUNTRY, run_id)
        assert saved > start
        out = stages.catch_up(cfg, p, run_id)
        resumed = [e for e in ledger.get_run(cfg, COUNTRY, run_id)
                   if e["step"] == "catch_up" and e["part"] == out["first_round"]]
        assert resumed[0]["detail"].startswith(f"{saved} -> "), resumed[0]["detail"]
        assert not _gate(cfg)["writes_frozen"]

        # Over budget by estimate: refused before freezing.
        with pytest.raises(MigrationError, match="Raise freeze_budget_s or lower catchup_max_customers"):
            cutover.run(cfg, p.model_copy(update={"freeze_budget_s": 1}), run_id)
        assert not _gate(cfg)["writes_frozen"] and not _freeze_windows(cfg, run_id)

        # Over budget while frozen (a slow store, simulated): unfrozen at once, reported.
        budget = max(8, int(cutover.estimate(cfg, COUNTRY, run_id)["estimate_s"]) + 4)
        monkeypatch.setenv("BM_FREEZE_DELAY_S", str(budget + 0.5))
        with pytest.raises(MigrationError, match=f"freeze budget of {budget} s exceeded"):
            cutover.run(cfg, p.model_copy(update={"freeze_budget_s": budget}), run_id)
        monkeypatch.delenv("BM_FREEZE_DELAY_S")
        gate = _gate(cfg)
        assert gate["serving_store"] == "legacy" and not gate["writes_frozen"]
        (aborted,) = _freeze_windows(cfg, run_id)
        assert aborted[1] - aborted[0] <= (2 * budget + 2) * 1000
        rep = report.build(cfg, COUNTRY, run_id)  # the abort is reported with its measured freeze
        assert rep["outcome"] == "failed" and "cutover" in rep["failed_steps"]
        assert rep["freeze_window_s"] == (aborted[1] - aborted[0]) / 1000
        assert "freeze budget of" in report.render(rep)
        time.sleep(1.0)  # the writer is acknowledged again after the abort
        assert [w for w in writer.writes(COUNTRY) if w.at * 1000 > aborted[1] + SLACK_MS]

        # A rerun of the cutover with room completes.
        done = cutover.run(cfg, p, run_id)
        time.sleep(0.5)
    assert done["serving_store"] == "cassandra"
    from billing_migration.app import replay

    assert replay.after_migration(cfg, COUNTRY, run_id)["applied"] > 0  # the replay_writes task's work
    replay.reverse_sync_all(cfg, max_s=None)
    windows = _freeze_windows(cfg, run_id)
    assert len(windows) == 1  # the ledger row of the cutover describes its latest attempt
    _assert_refusals_only_while_frozen(writer, [aborted, *windows], windows[0][1])
    _compare_whole_country(cfg)
    assert _target_sums(cfg) == _source_sums(cfg)
    assert _assert_acked_writes_in_cassandra(cfg, writer) > 50


def test_purged_binlog_position_refuses_to_flip_and_leaves_the_country_writable(seeded):
    from billing_migration.country.pipeline import MigrationError
    from billing_migration.online import capture, stages
    from billing_migration.stores import ledger, write_gate

    cfg = seeded
    run_id = f"manual__purged_{os.getpid()}_{time.time_ns()}"
    p = _params(cfg)
    purged = capture.changes().Position("binlog.000000", 4)  # older than any binlog the server keeps
    ledger.start(cfg, COUNTRY, run_id, capture.START_STEP)
    ledger.finish(cfg, COUNTRY, run_id, capture.START_STEP, detail=str(purged))
    capture.save_checkpoint(cfg, COUNTRY, run_id, purged)
    with pytest.raises(MigrationError, match="rerun the migration"):
        stages.catch_up(cfg, p, run_id)
    with pytest.raises(MigrationError, match=r"purged.*rerun the migration"):
        stages.finish(cfg, p, run_id)
    gate = _gate(cfg)
    assert gate["serving_store"] == "legacy" and not gate["writes_frozen"]
    rounds = [e for e in ledger.get_run(cfg, COUNTRY, run_id) if e["step"] == "catch_up"]
    assert rounds and all(e["state"] == "failed" and "purged" in e["detail"] for e in rounds)
    assert not [e for e in write_gate.events(cfg, COUNTRY) if e["run_id"] == run_id]  # never frozen
    from billing_migration.devtools.appwriter import AppWriter

    with AppWriter(cfg, {COUNTRY: 1.0}, rate_per_s=50, seed=9) as w:
        time.sleep(0.5)
    assert w.writes(COUNTRY) and not w.refused  # still writable on legacy
