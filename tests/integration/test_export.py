"""Export against the real MariaDB and S3: chunk planning, manifests, Parquet content, zero dates, isolation."""

from __future__ import annotations

import hashlib
import io
import itertools
import math

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


def test_connectorx_engine_gives_identical_files(cfg, seeded, s3):
    ch = export.plan_chunks(cfg, "PT", 8)[1]
    export.export_chunk(cfg, "PT", "mc", ch, engine="mysqlclient")
    export.export_chunk(cfg, "PT", "cx", ch, engine="connectorx")
    for t in schema.CUSTOMER_TABLES:
        a = s3io.get_parquet(s3, cfg.s3_bucket, s3io.table_key(cfg, "PT", "mc", t.name, ch["chunk"]))
        b = s3io.get_parquet(s3, cfg.s3_bucket, s3io.table_key(cfg, "PT", "cx", t.name, ch["chunk"]))
        assert a.equals(b), t.name


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
