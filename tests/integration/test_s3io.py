"""The package's one Parquet writer (s3io.ParquetUpload / put_parquet) against the real S3."""

from __future__ import annotations

import hashlib
import io
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from billing_migration.stores import s3io, schema

SCHEMA = pa.schema([("id", pa.int64()), ("amount", pa.decimal128(18, 4)), ("name", pa.string())])


def _batch(lo: int, n: int) -> pa.RecordBatch:
    from decimal import Decimal

    return pa.record_batch([pa.array(range(lo, lo + n), pa.int64()),
                            pa.array([Decimal(i).scaleb(-4) for i in range(n)], pa.decimal128(18, 4)),
                            pa.array([f"n{i} 😀" for i in range(n)])], schema=SCHEMA)


def test_streamed_batches_become_one_typed_zstd_object_with_its_checksum(cfg, s3):
    key = f"{cfg.s3_prefix}s3io/streamed.parquet"
    with s3io.ParquetUpload(SCHEMA, row_group_size=40) as up:
        for lo in (0, 100, 200):
            up.write(_batch(lo, 100))
        up.write(_batch(999, 0))  # empty batches are skipped
        assert not s3io.exists(s3, cfg.s3_bucket, key)  # nothing visible before finish
        obj = up.finish(s3, cfg.s3_bucket, key)
    assert not os.path.exists(up.path)  # temp file removed
    body = s3.get_object(Bucket=cfg.s3_bucket, Key=key)["Body"].read()
    assert obj == s3io.ParquetObject(key, 300, len(body), hashlib.sha256(body).hexdigest())
    meta = pq.ParquetFile(io.BytesIO(body)).metadata
    assert meta.num_rows == 300 and meta.num_row_groups == 9  # 3 batches of 100, at most 40 rows per group
    assert meta.row_group(0).column(0).compression == "ZSTD"
    back = pq.read_table(io.BytesIO(body))
    assert back.schema.equals(SCHEMA) and back.column("id").to_pylist() == [*range(300)]


def test_failure_inside_the_writer_uploads_nothing_and_leaves_no_temp_file(cfg, s3):
    key = f"{cfg.s3_prefix}s3io/failed.parquet"
    with pytest.raises(RuntimeError, match="boom"), s3io.ParquetUpload(SCHEMA) as up:
        up.write(_batch(0, 10))
        raise RuntimeError("boom")
    assert not os.path.exists(up.path)
    assert not s3io.exists(s3, cfg.s3_bucket, key)


def test_put_parquet_and_the_export_schema(cfg, s3):
    key = f"{cfg.s3_prefix}s3io/table.parquet"
    sch = s3io.arrow_schema(schema.INVOICES)
    assert sch.names[-1] == s3io.ZERO_DATE_COL  # invoices have dates: the zero-date marker column
    assert s3io.arrow_schema(schema.PLANS).field("price").type == pa.decimal128(schema.DECIMAL_PRECISION,
                                                                                 schema.DECIMAL_SCALE)
    size = s3io.put_parquet(s3, cfg.s3_bucket, key, sch.empty_table())
    assert size > 0 and s3io.get_parquet(s3, cfg.s3_bucket, key).schema.equals(sch)
    assert s3io.client(cfg) is s3io.client(cfg)  # one client per connection and process
