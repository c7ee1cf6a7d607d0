"""The binlog change reader against the real MariaDB (row binlog): which customers changed, checkpoints, purge.

Writes go through the admin account into this session's database; the reader sees only that database, so
other sessions writing to the same server at the same time cannot disturb the counts.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import pytest
from billing_migration.online import changes
from billing_migration.online.changes import BinlogPosition, BinlogPositionError, BinlogPurgedError
from billing_migration.stores import connections, schema

from tests.integration import fixture_data

A, B = "PT", "PL"  # the migrating country and another one
A_BASE, B_BASE = fixture_data.BASE + 6_000_000, fixture_data.BASE + 6_100_000
N_A, N_B = 10, 3
NEW_A = A_BASE + 50  # a customer created in A during the capture


def _exec(cfg, *statements: tuple[str, tuple]) -> None:
    """Run statements in one transaction of the admin account."""
    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as cur:
        for sql, args in statements:
            cur.execute(sql, args)
        conn.commit()


@pytest.fixture(scope="module")
def seeded(cfg, legacy_db, cassandra_ks):
    a = fixture_data.seed(cfg, A, N_A, A_BASE)
    b = fixture_data.seed(cfg, B, N_B, B_BASE)
    yield a, b
    # Leave the session's database as found: later modules seed (and count) their own PT/PL customers.
    _exec(cfg, *[(f"DELETE FROM `{t.name}` WHERE customer_id BETWEEN %s AND %s", (A_BASE, B_BASE + 99_999))
                 for t in reversed(schema.TABLES) if "customer_id" in t.column_names])


def _touch_everything(cfg, a: list[int], b: list[int]) -> tuple[set[int], int]:
    """Insert/update/delete rows of every table for A and B; returns A's touched customers and row changes."""
    ts = dt.datetime(2026, 11, 25, 12, 0, 0)
    _exec(cfg, ("UPDATE subscriptions SET status = 'on_hold' WHERE customer_id = %s", (a[0],)))
    _exec(cfg, ("INSERT INTO plan_changes VALUES (%s,%s,%s,%s,%s,%s,%s)",
                (a[1] * 10 + 1, a[1], a[1] * 10, 9001, 9001, ts, ts)))
    _exec(cfg, ("UPDATE invoices SET amount = amount + 1 WHERE customer_id = %s", (a[2],)))  # 3 rows, 1 event
    _exec(cfg, ("DELETE FROM payments WHERE customer_id = %s", (a[3],)))  # 3 rows
    _exec(cfg, ("UPDATE balance_transactions SET amount = %s WHERE customer_id = %s", (Decimal("-1.5"), a[4])))
    _exec(cfg, ("UPDATE customers SET email = 'new@example.com' WHERE customer_id = %s", (a[5],)))
    _exec(cfg, ("INSERT INTO customers VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                (NEW_A, A, None, "Nova 😀", "active", ts, 3, ts)),
          ("INSERT INTO subscriptions VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
           (NEW_A * 10, NEW_A, 9001, "active", ts, None, dt.date(2026, 12, 3), ts)))
    gone = a[7]  # deleted whole: 3 payments, 1 balance txn, 3 invoices, 1 plan change, 1 subscription, itself
    _exec(cfg, *[(f"DELETE FROM {t} WHERE customer_id = %s", (gone,)) for t in
                 ("payments", "balance_transactions", "invoices", "plan_changes", "subscriptions", "customers")])
    _exec(cfg, ("UPDATE customers SET country = %s WHERE customer_id = %s", (B, a[8])))  # moves A -> B
    _exec(cfg, ("UPDATE invoices SET status = 'refunded' WHERE invoice_id = %s", (a[8] * 100,)))
    _exec(cfg, ("UPDATE customers SET country = %s WHERE customer_id = %s", (A, b[2])))  # moves B -> A
    # B only: never A's
    _exec(cfg, ("UPDATE subscriptions SET status = 'on_hold' WHERE customer_id = %s", (b[0],)))
    _exec(cfg, ("UPDATE customers SET full_name = 'Other' WHERE customer_id = %s", (b[1],)))
    touched = {a[0], a[1], a[2], a[3], a[4], a[5], NEW_A, gone, a[8], b[2]}
    rows = 1 + 1 + 3 + 3 + 1 + 1 + 2 + 10 + 2 + 1
    return touched, rows


@pytest.fixture(scope="module")
def window(cfg, seeded):
    """Positions around A's and B's changes: p0 [changes] p1 [one more change of A] p2."""
    a, b = seeded
    p0 = changes.current_position(cfg)
    touched, rows = _touch_everything(cfg, a, b)
    p1 = changes.current_position(cfg)
    _exec(cfg, ("UPDATE customers SET billing_day = 9 WHERE customer_id = %s", (a[9],)))
    p2 = changes.current_position(cfg)
    return {"p0": p0, "p1": p1, "p2": p2, "touched": touched, "rows": rows, "later": a[9], "a": a, "b": b}


def test_reads_exactly_the_countrys_touched_customers(cfg, window):
    cs = changes.read_changes(cfg, A, window["p0"], window["p1"])
    assert cs.customers == frozenset(window["touched"])
    assert window["a"][6] not in cs.customers and window["later"] not in cs.customers
    assert cs.events == window["rows"] == 25
    assert cs.rows_scanned == 25 + 2  # B's two own changes are read but are not A's
    assert cs.start == window["p0"] and cs.end == window["p1"] and cs.complete
    assert 0 <= cs.lag_s < 120
    other = changes.read_changes(cfg, B, window["p0"], window["p1"])
    # B: its two changes, A's customer that moved in (after image), and its own customer that moved out
    assert other.customers == frozenset({window["b"][0], window["b"][1], window["b"][2], window["a"][8]})


def test_fast_decoding_finds_what_the_librarys_full_decoding_finds(cfg, window, monkeypatch):
    """Emoji names at max length, NULLs, decimals, dates, CHARs: the skipped columns are stepped over right."""
    before = dict(changes.DECODED)
    fast = changes.read_changes(cfg, A, window["p0"], window["p2"])
    assert changes.DECODED["library"] == before.get("library", 0), "every table took the fast path"
    assert changes.DECODED["fast"] - before.get("fast", 0) >= 20
    monkeypatch.setattr(changes, "_FAST_DECODE", False)
    slow = changes.read_changes(cfg, A, window["p0"], window["p2"])
    assert (fast.customers, fast.events, fast.rows_scanned, fast.end) == (
        slow.customers, slow.events, slow.rows_scanned, slow.end)
    assert fast.events == window["rows"] + 1


def test_stop_position_excludes_later_events_and_default_stop_is_now(cfg, window):
    later = changes.read_changes(cfg, A, window["p1"], window["p2"])
    assert later.customers == {window["later"]} and later.events == 1 and later.end == window["p2"]
    upto_now = changes.read_changes(cfg, A, window["p0"])
    assert upto_now.customers == frozenset(window["touched"] | {window["later"]})
    assert upto_now.events == window["rows"] + 1 and upto_now.end >= window["p2"]
    empty = changes.read_changes(cfg, A, window["p2"], window["p2"])
    assert empty.customers == frozenset() and empty.events == 0 and empty.end == window["p2"]
    assert empty.lag_s == 0
    with pytest.raises(ValueError, match="precedes"):
        changes.read_changes(cfg, A, window["p2"], window["p0"])


def test_max_seconds_cuts_at_transaction_boundaries_without_gap_or_double_count(cfg, window):
    """A reader stopped after every transaction and resumed from where it stopped sees exactly the same."""
    pos, seen, events, reads = window["p0"], set(), 0, 0
    while pos < window["p1"]:
        cs = changes.read_changes(cfg, A, pos, window["p1"], max_seconds=1e-9)
        assert cs.end > pos, "a read must make progress"
        seen |= cs.customers
        events += cs.events
        pos, reads = cs.end, reads + 1
    assert pos == window["p1"]
    assert seen == window["touched"]
    # Read on its own, the invoice change of the customer who had already moved to B is B's, not A's: the
    # customer itself is still A's (its move), so A's re-migration covers it either way.
    assert events == window["rows"] - 1
    assert reads >= 10  # one per transaction of A's and B's changes


def test_checkpoint_round_trip_and_resume_after_a_killed_reader(cfg, window):
    run = f"manual__cdc_{os.getpid()}"
    assert changes.load_checkpoint(cfg, A, run) is None
    first = changes.read_changes(cfg, A, window["p0"], window["p1"])
    changes.save_checkpoint(cfg, A, run, first.end, {"events": first.events, "customers": len(first.customers)})
    changes.save_checkpoint(cfg, A, run, window["p0"])  # a late write from an older attempt: no step back
    assert changes.load_checkpoint(cfg, A, run) == window["p1"]
    assert changes.load_checkpoint(cfg, B, run) is None
    # The reader is "killed" here; a new one resumes from the durable checkpoint: the later change only.
    resumed = changes.read_changes(cfg, A, changes.load_checkpoint(cfg, A, run), window["p2"])
    assert resumed.customers == {window["later"]} and resumed.events == 1
    assert first.customers | resumed.customers == changes.read_changes(cfg, A, window["p0"], window["p2"]).customers
    changes.save_checkpoint(cfg, A, run, resumed.end.as_dict(), {"events": resumed.events})
    assert changes.load_checkpoint(cfg, A, run) == window["p2"]


def test_a_few_thousand_events_are_read_fast(cfg, seeded):
    a, _ = seeded
    invoices = [cid * 100 + k for cid in a[:6] for k in range(3)]
    start = changes.current_position(cfg)
    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as cur:
        for i in range(3000):
            cur.execute("UPDATE invoices SET tax = %s WHERE invoice_id = %s",
                        (Decimal(i % 100 + 1) / 100, invoices[i % len(invoices)]))  # never a no-op
            if i % 50 == 49:
                conn.commit()
        conn.commit()
    t = time.perf_counter()
    cs = changes.read_changes(cfg, A, start)
    took = time.perf_counter() - t
    assert cs.events == 3000 and cs.customers == frozenset(a[:6])
    print(f"\nread {cs.events} row events in {took:.3f} s: {cs.events / took:,.0f} events/s")
    assert cs.events / took > 1000, "the freeze reads its final delta inside a 10-second budget"


def test_positions_this_server_cannot_serve_are_refused(cfg, window):
    newest = changes.current_position(cfg)
    ahead = BinlogPosition(newest.log_file.rsplit(".", 1)[0] + f".{newest.seq + 5:06d}", 4)
    with pytest.raises(BinlogPositionError, match="not in this server's binlog"):
        changes.read_changes(cfg, A, ahead)
    beyond = BinlogPosition(window["p0"].log_file, 10**12)
    with pytest.raises(BinlogPositionError, match="beyond the end"):
        changes.read_changes(cfg, A, beyond, BinlogPosition(window["p0"].log_file, 10**12 + 1))


def _root_sql(sql: str) -> str:
    """Run SQL as root over the server's socket (purging binlogs needs BINLOG ADMIN)."""
    sock = Path(os.environ.get("BM_STATE_DIR", Path(__file__).resolve().parents[2] / ".state")) / "mysql/mysqld.sock"
    return subprocess.run(["mariadb", "-S", str(sock), "-uroot", "-N", "-B", "-e", sql], check=True,
                          capture_output=True, text=True, timeout=60).stdout


def test_purged_start_position_is_refused_loudly(cfg, window):
    """Only files older than a FLUSH done here are purged, never the current one (other sessions share it)."""
    old = changes.current_position(cfg)
    _root_sql("FLUSH BINARY LOGS")
    new = changes.current_position(cfg)
    assert new.seq > old.seq
    # The server keeps the previous file until its binlog checkpoint moves on (InnoDB made its commits
    # durable): retry the purge until the old file is gone.
    deadline = time.monotonic() + 30
    while True:
        _root_sql(f"PURGE BINARY LOGS TO '{new.log_file}'")
        kept = _root_sql("SHOW BINARY LOGS").split()
        if old.log_file not in kept or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert old.log_file not in kept, f"the server kept {old.log_file}: {kept}"
    with pytest.raises(BinlogPurgedError) as err:
        changes.read_changes(cfg, A, old)
    msg = str(err.value)
    assert str(old) in msg and new.log_file in msg and "rerun the migration" in msg
    assert err.value.position == old and err.value.oldest == new.log_file
    assert changes.read_changes(cfg, A, new).start == new  # the reader still works from a kept position
