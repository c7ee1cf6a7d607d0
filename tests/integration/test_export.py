"""Export against the real MariaDB and S3: chunk planning, manifests, Parquet content, zero dates, isolation."""

from __future__ import annotations

import hashlib
import io
import itertools
import math
import threading
import time

import pyarrow.parquet as pq
import pytest
from billing_migration.country import export
from billing_migration.stores import connections, s3io, schema

from tests.integration import fixture_data

RUN = "manual__2026-11-23T00:00:00+00:00"
PT_BASE, PL_BASE = fixture_data.BASE + 1000, fixture_data.BASE + 5000


@pytest.fixture(scope="module")
def seeded(cfg, s3, seed_customers):
    pt = seed_customers("PT", 30, PT_BASE)
    pl = seed_customers("PL", 12, PL_BASE)
    # a zero date the driver cannot represent, in a PL invoice (PL is only read by the zero-date test)
    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as c:
        c.execute("UPDATE invoices SET created_at = '0000-00-00 00:00:00.000' WHERE invoice_id = %s",
                  (PL_BASE * 100 + 1,))
        conn.commit()
    return {"PT": pt, "PL": pl}


def _chunk_count(cfg, table: schema.Table, country: str, lo: int, hi: int) -> int:
    if table.name == "customers":
        return fixture_data.count(cfg, "SELECT COUNT(*) FROM customers WHERE country=%s "
                                  "AND customer_id BETWEEN %s AND %s", (country, lo, hi))
    return fixture_data.count(cfg, f"SELECT COUNT(*) FROM `{table.name}` t JOIN customers c "
                              "ON c.customer_id = t.customer_id WHERE c.country=%s "
                              "AND c.customer_id BETWEEN %s AND %s", (country, lo, hi))


def test_plan_chunks_cover_the_country_in_keyset_ranges(cfg, seeded):
    chunks = export.plan_chunks(cfg, "PT", 8)
    assert [c["customers"] for c in chunks] == [8, 8, 8, 6]
    assert [c["chunk"] for c in chunks] == [0, 1, 2, 3]
    assert chunks[0]["lo"] == PT_BASE and chunks[-1]["hi"] == PT_BASE + 29
    assert all(a["hi"] < b["lo"] for a, b in itertools.pairwise(chunks))
    assert export.plan_chunks(cfg, "PE", 8) == []


def test_manifest_counts_match_source_and_parquet_is_readable(cfg, seeded, s3):
    chunks = export.plan_chunks(cfg, "PT", 8)
    for ch in chunks[:2]:
        manifest = export.export_chunk(cfg, "PT", RUN, ch)
        stored = s3io.get_json(s3, cfg.s3_bucket, s3io.stage_key(cfg, "PT", RUN, "manifest", ch["chunk"], "json"))
        assert stored["tables"] == manifest["tables"]
        for t in schema.CUSTOMER_TABLES:
            entry = manifest["tables"][t.name]
            assert entry["rows"] == _chunk_count(cfg, t, "PT", ch["lo"], ch["hi"]), t.name
            body = s3.get_object(Bucket=cfg.s3_bucket, Key=entry["key"])["Body"].read()
            assert hashlib.sha256(body).hexdigest() == entry["sha256"]
            data = pq.read_table(io.BytesIO(body))
            assert data.schema.equals(s3io.arrow_schema(t))
            assert data.num_rows == entry["rows"]
            keys = data.column(t.key).to_pylist()
            assert (min(keys), max(keys)) == (entry["min_key"], entry["max_key"])
            ids = set(data.column("customer_id").to_pylist())
            assert ids <= set(range(ch["lo"], ch["hi"] + 1))
        cust = s3io.get_parquet(s3, cfg.s3_bucket, s3io.table_key(cfg, "PT", RUN, "customers", ch["chunk"]))
        assert set(cust.column("country").to_pylist()) == {"PT"}  # no other country's rows


def test_range_spanning_countries_exports_only_the_country(cfg, seeded):
    m = export.export_chunk(cfg, "PL", RUN, {"chunk": 50, "lo": 0, "hi": 2 * 10**9})
    assert m["customers"] == 12
    assert m["tables"]["invoices"]["rows"] == 36
    assert m["tables"]["customers"]["min_key"] == PL_BASE


def test_batches_bound_memory_one_row_group_per_batch(cfg, seeded, s3):
    ch = export.plan_chunks(cfg, "PT", 8)[0]
    m = export.export_chunk(cfg, "PT", "batches", ch, batch_rows=5)
    inv = m["tables"]["invoices"]
    assert inv["rows"] == 24 and inv["batches"] == math.ceil(24 / 5)
    meta = pq.ParquetFile(io.BytesIO(s3.get_object(Bucket=cfg.s3_bucket, Key=inv["key"])["Body"].read()))
    assert meta.metadata.num_row_groups == inv["batches"]
    assert max(meta.metadata.row_group(i).num_rows for i in range(meta.metadata.num_row_groups)) <= 5


def test_zero_date_does_not_crash_and_stays_detectable(cfg, seeded, s3):
    m = export.export_chunk(cfg, "PL", RUN, {"chunk": 0, "lo": PL_BASE, "hi": PL_BASE + 11})
    assert m["tables"]["invoices"]["rows"] == 36
    inv = s3io.get_parquet(s3, cfg.s3_bucket, s3io.table_key(cfg, "PL", RUN, "invoices", 0))
    flagged = [r for r in inv.to_pylist() if r[s3io.ZERO_DATE_COL]]
    assert [(r["invoice_id"], r[s3io.ZERO_DATE_COL], r["created_at"]) for r in flagged] == [
        (PL_BASE * 100 + 1, "created_at", None)]
    ok = next(r for r in inv.to_pylist() if r["invoice_id"] == PL_BASE * 100)
    assert ok["created_at"].microsecond == 123000  # milliseconds preserved
    cust = s3io.get_parquet(s3, cfg.s3_bucket, s3io.table_key(cfg, "PL", RUN, "customers", 0))
    assert "😀" * 255 in cust.column("full_name").to_pylist()  # non-BMP at max length intact


def test_customer_ids_restrict_the_export(cfg, seeded, s3):
    ids = [PT_BASE + 3, PT_BASE + 17]
    m = export.export_chunk(cfg, "PT", RUN, {"chunk": 90001, "lo": ids[0], "hi": ids[-1]}, customer_ids=ids)
    assert m["customers"] == 2 and m["tables"]["payments"]["rows"] == 6
    pay = s3io.get_parquet(s3, cfg.s3_bucket, s3io.table_key(cfg, "PT", RUN, "payments", 90001))
    assert set(pay.column("customer_id").to_pylist()) == set(ids)


IDENTITY_CASES = {  # (country, chunk, customer_ids, batch_rows): whole chunk, zero dates, a subset, tiny batches
    "chunk": ("PT", {"chunk": 1, "lo": PT_BASE + 8, "hi": PT_BASE + 15}, None, export.DEFAULT_BATCH_ROWS),
    "zero_date": ("PL", {"chunk": 0, "lo": PL_BASE, "hi": PL_BASE + 11}, None, export.DEFAULT_BATCH_ROWS),
    "customer_ids": ("PT", {"chunk": 5, "lo": PT_BASE + 2, "hi": PT_BASE + 20}, [PT_BASE + 2, PT_BASE + 20], 50),
    "small_batches": ("PT", {"chunk": 0, "lo": PT_BASE, "hi": PT_BASE + 29}, None, 7),
}


@pytest.mark.parametrize("case", sorted(IDENTITY_CASES))
def test_pipelined_connectorx_path_writes_the_same_parquet(cfg, seeded, s3, case):
    """The fast path (connectorx reads, pipelined encode and upload) and the consistent-snapshot path
    write the same rows with the same types and values, and the same manifest figures."""
    country, ch, ids, batch_rows = IDENTITY_CASES[case]
    ma = export.export_chunk(cfg, country, "mc", ch, customer_ids=ids, batch_rows=batch_rows, engine="mysqlclient")
    mb = export.export_chunk(cfg, country, "cx", ch, customer_ids=ids, batch_rows=batch_rows, engine="connectorx")
    assert ma["rows"] > 0 and ma["rows"] == mb["rows"] and ma["customers"] == mb["customers"]
    for t in schema.CUSTOMER_TABLES:
        a = s3io.get_parquet(s3, cfg.s3_bucket, s3io.table_key(cfg, country, "mc", t.name, ch["chunk"]))
        b = s3io.get_parquet(s3, cfg.s3_bucket, s3io.table_key(cfg, country, "cx", t.name, ch["chunk"]))
        assert a.schema == b.schema == s3io.arrow_schema(t), t.name
        assert a.equals(b), t.name
        ea, eb = ma["tables"][t.name], mb["tables"][t.name]
        assert {k: ea[k] for k in ("rows", "batches", "min_key", "max_key")} == \
            {k: eb[k] for k in ("rows", "batches", "min_key", "max_key")}, t.name
    if case == "zero_date":
        inv = s3io.get_parquet(s3, cfg.s3_bucket, s3io.table_key(cfg, country, "cx", "invoices", 0))
        assert inv.column(s3io.ZERO_DATE_COL).drop_null().to_pylist() == ["created_at"]


def test_pipelined_export_failure_leaves_no_manifest(cfg, seeded, s3, monkeypatch):
    """A read failing mid-chunk stops the pipeline, raises, and writes no manifest for the chunk."""
    ch = {"chunk": 71, "lo": PT_BASE, "hi": PT_BASE + 9}
    original = export._cx_batches

    def failing(cfg_, sql, params, batch_rows):
        if "`payments`" in sql:
            raise RuntimeError("connection lost")
        yield from original(cfg_, sql, params, batch_rows)

    monkeypatch.setattr(export, "_cx_batches", failing)
    with pytest.raises(RuntimeError, match="connection lost"):
        export.export_chunk(cfg, "PT", "fails", ch, engine="connectorx")
    assert not s3io.exists(s3, cfg.s3_bucket, s3io.stage_key(cfg, "PT", "fails", "manifest", 71, "json"))


def test_pipelined_export_reads_two_tables_at_once(cfg, seeded, s3, monkeypatch):
    """The offline path keeps two reads in flight (two server threads), and still writes every table whole."""
    ch = {"chunk": 72, "lo": PT_BASE, "hi": PT_BASE + 29}
    original, active, peak = export._cx_batches, [0], [0]
    lock = threading.Lock()

    def tracked(cfg_, sql, params, batch_rows):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.3)  # long enough for the other reader to start its table
            yield from original(cfg_, sql, params, batch_rows)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(export, "_cx_batches", tracked)
    m = export.export_chunk(cfg, "PT", "par", ch, engine="connectorx")
    assert peak[0] == export.READERS == 2
    for t in schema.CUSTOMER_TABLES:
        assert m["tables"][t.name]["rows"] == _chunk_count(cfg, t, "PT", ch["lo"], ch["hi"]), t.name


def test_export_plans_only_the_countrys_plans(cfg, seeded, s3):
    entry = export.export_plans(cfg, "PL", RUN)
    plans = s3io.get_parquet(s3, cfg.s3_bucket, s3io.table_key(cfg, "PL", RUN, "plans", 0))
    assert entry["rows"] == plans.num_rows == 1
    assert plans.column("country").to_pylist() == ["PL"]


def test_bad_arguments_are_refused(cfg, seeded):
    with pytest.raises(ValueError):
        export.plan_chunks(cfg, "PT", 0)
    with pytest.raises(ValueError):
        export.export_chunk(cfg, "PT", RUN, {"chunk": 0, "lo": 5, "hi": 1})
    with pytest.raises(ValueError):
        export.export_chunk(cfg, "PT", RUN, {"chunk": 0, "lo": 1, "hi": 5}, engine="odbc")


def test_chunk_is_read_in_one_consistent_snapshot(cfg, seeded, monkeypatch):
    """A row committed by another session while the chunk is being read is not in this chunk's files."""
    ch = {"chunk": 70, "lo": PT_BASE, "hi": PT_BASE + 4}
    sql = ("SELECT COUNT(*) FROM balance_transactions WHERE customer_id BETWEEN %s AND %s")
    before = fixture_data.count(cfg, sql, (ch["lo"], ch["hi"]))
    new_txn = PT_BASE * 1000 + 7
    original = export._stream_mysqlclient

    def write_between_tables(cur, table, *args):
        yield from original(cur, table, *args)
        if table.name == "customers":  # after the first table, before balance_transactions is read
            with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as c:
                c.execute("INSERT INTO balance_transactions VALUES (%s, %s, 'promo_credit', 1.00, 'EUR', NULL, "
                          "NULL, NOW(3), NOW(3))", (new_txn, PT_BASE))
                conn.commit()

    monkeypatch.setattr(export, "_stream_mysqlclient", write_between_tables)
    try:
        m = export.export_chunk(cfg, "PT", "snapshot", ch)
        assert fixture_data.count(cfg, sql, (ch["lo"], ch["hi"])) == before + 1  # committed...
        assert m["tables"]["balance_transactions"]["rows"] == before  # ...but after the snapshot
    finally:
        with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as c:
            c.execute("DELETE FROM balance_transactions WHERE txn_id = %s", (new_txn,))
            conn.commit()


# ------------------------------------------------------------------------ consistency of per-table reads
NEW_SUB, NEW_INV = PT_BASE * 10 + 9, PT_BASE * 100 + 9  # ids no fixture row uses


def _after_table(monkeypatch, table_name: str, action) -> None:
    """Run `action` once, right after the fast path has read `table_name` (before the next table's query)."""
    original = export._cx_batches
    done = []

    def hooked(cfg_, sql, params, batch_rows):
        yield from original(cfg_, sql, params, batch_rows)
        if (f"FROM `{table_name}` " in sql or f"FROM {table_name} " in sql) and not done:
            done.append(action())

    monkeypatch.setattr(export, "_cx_batches", hooked)


def _new_subscription_with_invoice(cfg) -> None:
    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as c:
        c.execute("INSERT INTO subscriptions VALUES (%s,%s,%s,'active','2026-01-01 00:00:00',NULL,'2026-02-01',"
                  "'2026-01-01 00:00:00')", (NEW_SUB, PT_BASE, fixture_data.PLANS["PT"][0]))
        c.execute("INSERT INTO invoices VALUES (%s,%s,%s,'2026-01-01','2026-01-31',9.99,0,'EUR','paid',"
                  "'2026-01-01 00:00:00','2026-01-01 00:00:00')", (NEW_INV, PT_BASE, NEW_SUB))
        conn.commit()


@pytest.fixture
def cleanup_new_rows(cfg):
    yield
    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as c:
        c.execute("DELETE FROM invoices WHERE invoice_id = %s", (NEW_INV,))
        c.execute("DELETE FROM subscriptions WHERE subscription_id = %s", (NEW_SUB,))
        c.execute("DELETE FROM balance_transactions WHERE txn_id = %s", (PT_BASE * 1000 + 8,))
        conn.commit()


def test_writable_country_per_table_reads_can_split_a_customer(cfg, seeded, s3, monkeypatch, cleanup_new_rows):
    """Why a writable country keeps the one-snapshot path: a subscription and its invoice committed between
    the fast path's table reads give an invoice without its subscription (the transform would reject it)."""
    ch = {"chunk": 72, "lo": PT_BASE, "hi": PT_BASE + 4}
    # one reader, so invoices are read after the write lands (with two, the invoice read may already be
    # under way: the split is still possible, only not deterministic)
    monkeypatch.setattr(export, "READERS", 1)
    _after_table(monkeypatch, "subscriptions", lambda: _new_subscription_with_invoice(cfg))
    export.export_chunk(cfg, "PT", "split", ch, engine="connectorx")
    subs = s3io.get_parquet(s3, cfg.s3_bucket, s3io.table_key(cfg, "PT", "split", "subscriptions", 72))
    inv = s3io.get_parquet(s3, cfg.s3_bucket, s3io.table_key(cfg, "PT", "split", "invoices", 72))
    assert NEW_INV in inv.column("invoice_id").to_pylist()
    assert NEW_SUB not in subs.column("subscription_id").to_pylist()
    assert export.engine_for("online", frozen=False) == "mysqlclient"


def test_frozen_country_per_table_reads_are_one_point_in_time(cfg, seeded, s3, monkeypatch, cleanup_new_rows):
    """Offline mode exports a frozen country: the gate refuses every application write during the reads, so
    the fast path's files are exactly the one-snapshot path's."""
    from billing_migration.stores import write_gate

    ch = {"chunk": 73, "lo": PT_BASE, "hi": PT_BASE + 4}
    refused: list[str] = []

    def app_write() -> None:
        try:
            with connections.mysql_conn("mysql_app", cfg, autocommit=True) as conn, conn.cursor() as c:
                c.execute("INSERT INTO balance_transactions VALUES (%s, %s, 'promo_credit', 1.00, 'EUR', NULL, "
                          "NULL, NOW(3), NOW(3))", (PT_BASE * 1000 + 8, PT_BASE))
        except Exception as exc:  # the gate's trigger refuses it
            refused.append(str(exc))

    write_gate.prepare(cfg)
    write_gate.freeze(cfg, "PT", "pytest", RUN, drain_timeout_s=5)
    try:
        assert export.engine_for("offline", frozen=True) == "connectorx"
        export.export_chunk(cfg, "PT", "frozen-snap", ch, engine="mysqlclient")
        _after_table(monkeypatch, "customers", app_write)
        export.export_chunk(cfg, "PT", "frozen-cx", ch, engine="connectorx")
    finally:
        write_gate.unfreeze(cfg, "PT", "pytest", RUN, reason="test teardown", force_rollback=True)
    assert len(refused) == 1 and "frozen" in refused[0].lower(), refused
    for t in schema.CUSTOMER_TABLES:
        a = s3io.get_parquet(s3, cfg.s3_bucket, s3io.table_key(cfg, "PT", "frozen-snap", t.name, 73))
        b = s3io.get_parquet(s3, cfg.s3_bucket, s3io.table_key(cfg, "PT", "frozen-cx", t.name, 73))
        assert a.equals(b), t.name


def test_export_logs_progress_lines_and_a_final_total(cfg, seeded, caplog):
    """The shared progress helper's lines in a stage's log: rows and customers of total, rate, ETA; then
    the totals (interval shortened so this small chunk logs several lines)."""
    import dataclasses
    import re

    fast = dataclasses.replace(cfg, progress_interval_s=1e-6)
    caplog.set_level("INFO", logger="billing_migration.progress")
    ch = export.plan_chunks(cfg, "PT", 8)[0]
    m = export.export_chunk(fast, "PT", "progress", ch, batch_rows=4, engine="connectorx")
    lines = [r.getMessage() for r in caplog.records if r.name == "billing_migration.progress"]
    label = f"export PT chunk {ch['chunk']}"
    ticks = [ln for ln in lines if re.fullmatch(
        rf"{label}: [\d,]+ rows, [\d,]+/8 customers \(\d+\.\d %\), [\d,]+ rows/s, ETA (\d+ s|\?)", ln)]
    assert len(ticks) >= 3, lines
    assert lines[-1].startswith(f"{label} done: {m['rows']:,} rows, 8 customers in ")
