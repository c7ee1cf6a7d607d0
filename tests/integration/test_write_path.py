"""The application's write path against the real MariaDB, Cassandra and ElasticMQ (no DAG): routing, queueing
while frozen, the hold, replay into legacy after an aborted run with a poison message, idempotent appliers."""

from __future__ import annotations

import dataclasses
import os
import time
from decimal import Decimal

import pytest

COUNTRY = "IE"


@pytest.fixture(scope="module")
def fast(cfg):
    """Short redrive timings: a poison message is dead-lettered after 3 receives about a second apart."""
    from billing_migration.config import QueueSettings

    return dataclasses.replace(cfg, queues=QueueSettings(max_receive_count=3, visibility_timeout_s=10,
                                                         retry_delay_s=1, receive_wait_s=0))


def _invoice(cfg) -> tuple[int, int]:
    from billing_migration.stores import connections

    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT i.invoice_id, i.customer_id FROM invoices i JOIN customers c USING (customer_id) "
                    "WHERE c.country = %s ORDER BY i.invoice_id LIMIT 1", (COUNTRY,))
        key, cid = cur.fetchone()
    return int(key), int(cid)


def _legacy(cfg, sql: str, args: tuple) -> tuple | None:
    from billing_migration.stores import connections

    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()




def test_frozen_writes_are_accepted_held_and_replayed_into_legacy_after_an_abort(fresh_countries, fast):
    from billing_migration.app import apply, replay
    from billing_migration.app.writes import APPLIED, PENDING, Write, WritePath
    from billing_migration.country import report
    from billing_migration.stores import queues, write_gate

    cfg = fresh_countries(100, {COUNTRY: 1.0}, seed=7)
    run_id = f"manual__writepath_{os.getpid()}_{time.time_ns()}"
    key, cid = _invoice(cfg)
    seq = time.time_ns() // 1000

    def upd(n: int, amount: str) -> Write:
        return Write(COUNTRY, "invoices", key, cid, "update", seq + n, f"wp-{seq + n}", {"amount": Decimal(amount)})

    with WritePath(fast) as path:
        assert path.submit(upd(1, "11")) == (APPLIED, "legacy", None)
        write_gate.freeze(cfg, COUNTRY, "pytest", run_id)
        assert path.submit(upd(2, "12")).status == PENDING
        txn = Write(COUNTRY, "balance_transactions", 4_000_000_001, cid, "insert", seq + 3, f"wp-{seq + 3}",
                    {"kind": "promo_credit", "amount": "2", "currency": "EUR", "created_at": "2030-01-01T00:00:00",
                     "updated_at": "2031-01-01T00:00:00"})
        assert path.submit(txn).status == PENDING
        assert _legacy(cfg, "SELECT amount FROM invoices WHERE invoice_id = %s", (key,)) == (Decimal("11"),)
        # A poison message (an update of a row that exists nowhere) from another producer, another customer.
        poison = Write(COUNTRY, "invoices", 999_999_999, cid + 1, "update", seq, "poison-1", {"amount": 1})
        queues.send(fast, "writes", COUNTRY, poison.group, poison.idempotency_key, poison.body())
        write_gate.unfreeze(cfg, COUNTRY, "pytest", run_id, reason="the run aborted")
        late = path.submit(upd(4, "14"))  # writable again but held: queued behind the frozen writes
        assert late.status == PENDING and replay.hold_state(cfg, COUNTRY)["holding"]

        with pytest.raises(replay.ReplayError, match=r"1 write\(s\) dead-lettered.*invoices/999999999"):
            replay.after_migration(fast, COUNTRY, run_id)
        assert _legacy(cfg, "SELECT amount FROM invoices WHERE invoice_id = %s", (key,)) == (Decimal("14"),)
        assert _legacy(cfg, "SELECT customer_id FROM balance_transactions WHERE txn_id = 4000000001", ()) == (cid,)
        assert queues.depth(fast, "writes", COUNTRY, dead_letter=True)["visible"] == 1
        assert not replay.hold_state(cfg, COUNTRY)["holding"]
        assert path.submit(upd(5, "15")) == (APPLIED, "legacy", None)

    rep = report.build(cfg, COUNTRY, run_id)
    assert rep["queued_writes"]["applied"] == 3 and rep["queued_writes"]["dead_lettered"] == 1
    text = report.render(rep)
    assert "3 replayed" in text and "invoices/999999999" in text and "@" not in text

    # Applying a replayed write again (a redelivery) changes nothing, in either store.
    from billing_migration.stores import connections

    with connections.mysql_conn("mysql_app", cfg) as conn, conn.cursor() as cur:
        assert apply.apply_mysql(cur, upd(4, "14"), consumer=True) == apply.DUPLICATE
        conn.commit()
    assert _legacy(cfg, "SELECT amount FROM invoices WHERE invoice_id = %s", (key,)) == (Decimal("15"),)
    with connections.cassandra_session(cfg) as s:
        new_id = 9_000_000_000 + seq % 1_000_000_000  # an id no generator gives (IE's own customers are 4e9+)
        ins = Write(COUNTRY, "customers", new_id, new_id, "insert", seq, f"wp-c-{seq}",
                    {"email": "x@example.com", "status": "active", "signup_at": "2030-01-01T00:00:00",
                     "billing_day": 3, "updated_at": "2031-01-01T00:00:00"})
        assert apply.apply_cassandra(s, ins, consumer=True) == apply.APPLIED
        assert apply.apply_cassandra(s, ins, consumer=True) == apply.DUPLICATE
        apply.apply_cassandra(s, ins)  # applied twice without the mark: the same partition
        rows = list(s.execute("SELECT email, country FROM customer_billing WHERE customer_id = %s", (new_id,)))
        assert [(r.email, r.country) for r in rows] == [("x@example.com", COUNTRY)]

    # The guard triggers: only the reverse sync's session may write a cut-over country's legacy copy, and
    # nobody a country frozen for a migration.
    from billing_migration.app.replay import _Target

    write_gate.freeze(cfg, COUNTRY, "pytest", run_id + "b")
    for reverse in (False, True):
        target = _Target(cfg, "legacy", reverse_sync=reverse)
        with pytest.raises(Exception, match="frozen"):
            target.apply(upd(6, "16"))
        target.close()
    write_gate.cutover(cfg, COUNTRY, "pytest", run_id + "b")
    target = _Target(cfg, "legacy", reverse_sync=False)
    with pytest.raises(Exception, match="served by cassandra"):
        target.apply(upd(6, "16"))
    target.close()
    target = _Target(cfg, "legacy", reverse_sync=True)
    assert target.apply(upd(6, "16")) == apply.APPLIED
    target.close()
    assert _legacy(cfg, "SELECT amount FROM invoices WHERE invoice_id = %s", (key,)) == (Decimal("16"),)


def test_operator_unfreeze_replays_the_writes_queued_while_a_dead_run_held_the_freeze(fresh_countries, fast, capsys):
    """A run died inside its freeze (its replay_writes never ran): `scripts/bm unfreeze` re-enables legacy
    writes and applies what the application queued meanwhile, so new writes stop being held behind them."""
    from billing_migration import ops
    from billing_migration.app import replay
    from billing_migration.app.writes import APPLIED, PENDING, Write, WritePath
    from billing_migration.stores import write_gate

    cfg = fresh_countries(100, {COUNTRY: 1.0}, seed=7)
    dead_run = f"manual__died_{os.getpid()}_{time.time_ns()}"
    key, cid = _invoice(cfg)
    seq = time.time_ns() // 1000
    with WritePath(fast) as path:
        write_gate.freeze(cfg, COUNTRY, "airflow:migrate_billing", dead_run)
        queued = Write(COUNTRY, "invoices", key, cid, "update", seq, f"op-{seq}", {"amount": Decimal("21")})
        assert path.submit(queued).status == PENDING
        out = ops.operator_unfreeze(fast, COUNTRY, "run died (kill -9)")
        assert out["replay"]["ok"] and out["replay"]["applied"] == 1, out
        assert "1 queued write(s) replayed into legacy" in out["message"]
        assert _legacy(cfg, "SELECT amount FROM invoices WHERE invoice_id = %s", (key,)) == (Decimal("21"),)
        assert not replay.hold_state(cfg, COUNTRY)["holding"]
        nxt = Write(COUNTRY, "invoices", key, cid, "update", seq + 1, f"op-{seq + 1}", {"amount": Decimal("22")})
        assert path.submit(nxt) == (APPLIED, "legacy", None)
    assert ops.operator_replay(fast, COUNTRY)["message"] == "no queued write to replay"  # safe to repeat


@pytest.mark.skipif(os.environ.get("BM_ALLOW_RESTARTS") != "1",
                    reason="restarts the stack's ElasticMQ: only on a private stack (BM_ALLOW_RESTARTS=1)")
def test_elasticmq_restarted_mid_replay_loses_nothing_and_applies_nothing_twice(fresh_countries, fast):
    import signal
    import subprocess
    from pathlib import Path

    from billing_migration.app import replay
    from billing_migration.app.writes import Write, WritePath
    from billing_migration.stores import queues, write_gate

    cfg = fresh_countries(100, {COUNTRY: 1.0}, seed=8)
    run_id = f"manual__restart_{os.getpid()}_{time.time_ns()}"
    _, cid = _invoice(cfg)
    seq = time.time_ns() // 1000
    write_gate.freeze(cfg, COUNTRY, "pytest", run_id)
    with WritePath(fast) as path:
        for n in range(1, 41):  # 40 balance transactions of one customer, in order
            path.submit(Write(COUNTRY, "balance_transactions", 4_100_000_000 + n, cid, "insert", seq + n,
                              f"rs-{seq + n}", {"kind": "promo_credit", "amount": str(n), "currency": "EUR",
                                                "created_at": "2030-01-01T00:00:00",
                                                "updated_at": "2031-01-01T00:00:00"}))
    write_gate.unfreeze(cfg, COUNTRY, "pytest", run_id, reason="replay then restart")
    target = replay._Target(cfg, "legacy", reverse_sync=False)
    tally = replay.Tally()
    replay._batch(fast, "writes", COUNTRY, target, tally, mirror=False)  # 10 applied and deleted
    got = queues.receive(fast, "writes", COUNTRY)  # the next ones applied but never deleted: in flight
    for m in got:
        target.apply(Write.from_body(m.body))
    target.close()
    pidfile = Path(os.environ["BM_STATE_DIR"]) / "elasticmq" / "elasticmq.pid"
    pid = int(pidfile.read_text())
    os.kill(pid, signal.SIGTERM)
    assert queues.wait_for(lambda: not Path(f"/proc/{pid}").exists(), 60), "ElasticMQ did not stop"
    subprocess.run([str(Path(__file__).resolve().parents[2] / "scripts" / "stack"), "up"], check=True,
                   timeout=600, capture_output=True)
    queues._clients.clear()
    out = replay.after_migration(fast, COUNTRY, run_id)
    assert out["applied"] + out["duplicates"] == 30 and out["duplicates"] == len(got)  # redelivered: skipped
    rows = _legacy(cfg, "SELECT COUNT(*), SUM(amount) FROM balance_transactions WHERE txn_id > 4100000000", ())
    assert rows == (40, Decimal(sum(range(1, 41))))
