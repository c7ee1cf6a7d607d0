"""Where things live on S3 and how they are written: Parquet and JSON, atomically per object.

Layout (under the namespace prefix):
  migration/country=CC/run=RUN/table=T/part-00007.parquet      export output, one file per table and chunk
  migration/country=CC/run=RUN/manifest/part-00007.json         per chunk: rows, key range, checksum per table
  migration/country=CC/run=RUN/transformed/part-00007.parquet   Cassandra rows
  migration/country=CC/run=RUN/rejects/part-00007.parquet       bad records: table, key, reason
  migration/country=CC/run=RUN/compare/round=N/mismatches.parquet
  migration/country=CC/run=RUN/report.json
  nightly/... (see the nightly modules)

An S3 PUT is atomic per object, so a rerun of the same run id replaces a chunk's files whole.

Every Parquet object of the package is written by ParquetUpload (put_parquet for a table already in memory):
one typed schema per file, zstd, batches streamed to a local temp file (memory bounded by a batch), then one
upload (multipart for large files, still atomic: readers see the old object or the new one, never half).
The S3 client is `client(cfg)`: one per connection and process, shared by every module.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from billing_migration.config import Config
from billing_migration.stores import connections, schema

PARQUET_OPTS: dict[str, Any] = {"compression": "zstd", "use_dictionary": True, "write_statistics": True}
_CLIENTS: dict[str, Any] = {}


def client(cfg: Config):
    """One boto3 client per S3 connection and process (building one through the hook is slow)."""
    conn_id = cfg.connections["s3"]
    if conn_id not in _CLIENTS:
        _CLIENTS[conn_id] = connections.s3_client(cfg)
    return _CLIENTS[conn_id]


# ------------------------------------------------------------------------------------------ export files
ZERO_DATE_COL = "_zero_date_cols"  # "col1,col2": the dates of this row that were zero/invalid in MySQL
ARROW_TYPES: dict[str, pa.DataType] = {
    "bigint": pa.int64(),
    "int": pa.int64(),  # INT UNSIGNED can exceed int32; the transform range-checks for Cassandra int
    "tinyint": pa.int16(),  # TINYINT UNSIGNED goes to 255
    "text": pa.string(),
    "decimal": pa.decimal128(schema.DECIMAL_PRECISION, schema.DECIMAL_SCALE),
    "timestamp": pa.timestamp("ms", tz="UTC"),
    "date": pa.date32(),
}


def arrow_schema(table: schema.Table) -> pa.Schema:
    """The explicit schema of an exported table's files (plus the zero-date marker when it has dates):
    written by the export, read by the transform and the load."""
    fields = [pa.field(c.name, ARROW_TYPES[c.kind], nullable=True) for c in table.columns]
    if any(c.kind in ("timestamp", "date") for c in table.columns):
        fields.append(pa.field(ZERO_DATE_COL, pa.string(), nullable=True))
    return pa.schema(fields)


# ------------------------------------------------------------------------------------------ layout
def run_key(run_id: str) -> str:
    """An Airflow run id made safe for S3 keys (`:` and `+` become `_`)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)


def run_prefix(cfg: Config, country: str, run_id: str) -> str:
    return f"{cfg.s3_prefix}migration/country={country}/run={run_key(run_id)}/"


def part_name(chunk: int) -> str:
    return f"part-{chunk:05d}"


def table_key(cfg: Config, country: str, run_id: str, table: str, chunk: int) -> str:
    return f"{run_prefix(cfg, country, run_id)}table={table}/{part_name(chunk)}.parquet"


def stage_key(cfg: Config, country: str, run_id: str, stage: str, chunk: int, ext: str = "parquet") -> str:
    return f"{run_prefix(cfg, country, run_id)}{stage}/{part_name(chunk)}.{ext}"


@dataclass(frozen=True)
class ParquetObject:
    """What ParquetUpload wrote: the key, its rows and bytes, and the sha256 of the file's bytes."""

    key: str
    rows: int
    bytes: int
    sha256: str


class ParquetUpload:
    """The package's one Parquet writer: batches of a fixed schema -> local temp file -> one S3 object.

    Use as a context manager (an exception drops the temp file, nothing is uploaded) or call abort().
    `row_group_size` caps the rows of a row group (default: one row group per written batch); `tmpdir`
    holds the temp file (default BM_TMP_DIR or the system's); `compression_level` pins the zstd level
    (default: the library's), for outputs whose bytes must not change with a library upgrade.
    """

    def __init__(self, schema: pa.Schema, row_group_size: int | None = None, tmpdir: str | None = None,
                 compression_level: int | None = None) -> None:
        self.schema = schema
        self.row_group_size = row_group_size
        fd, self.path = tempfile.mkstemp(suffix=".parquet", dir=tmpdir or os.environ.get("BM_TMP_DIR"))
        os.close(fd)
        self._writer = pq.ParquetWriter(self.path, schema, compression_level=compression_level, **PARQUET_OPTS)
        self.rows = 0

    def write(self, data: pa.RecordBatch | pa.Table) -> None:
        if data.num_rows == 0:
            return
        if isinstance(data, pa.RecordBatch):
            self._writer.write_batch(data, row_group_size=self.row_group_size)
        else:
            self._writer.write_table(data, row_group_size=self.row_group_size)
        self.rows += data.num_rows

    def abort(self) -> None:
        """Drop the temp file (nothing was uploaded)."""
        with contextlib.suppress(Exception):
            self._writer.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def finish(self, s3, bucket: str, key: str) -> ParquetObject:
        """Close the file, upload it whole to `key`, remove the temp file."""
        try:
            self._writer.close()
            digest = hashlib.sha256()
            with open(self.path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            size = os.path.getsize(self.path)
            s3.upload_file(self.path, bucket, key)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        return ParquetObject(key, self.rows, size, digest.hexdigest())

    def __enter__(self) -> ParquetUpload:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def put_parquet(s3, bucket: str, key: str, table: pa.Table, compression_level: int | None = None) -> int:
    """Write an in-memory table as one Parquet object (through ParquetUpload); returns its size in bytes."""
    with ParquetUpload(table.schema, compression_level=compression_level) as up:
        up.write(table)
        return up.finish(s3, bucket, key).bytes


def get_parquet(client, bucket: str, key: str, columns: list[str] | None = None) -> pa.Table:
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return pq.read_table(io.BytesIO(body), columns=columns)


def put_json(client, bucket: str, key: str, obj: Any) -> None:
    client.put_object(Bucket=bucket, Key=key, ContentType="application/json",
                      Body=json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def get_json(client, bucket: str, key: str) -> Any:
    return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())


def exists(client, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
        return True
    except client.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def list_keys(client, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return sorted(keys)


def delete_prefix(client, bucket: str, prefix: str) -> int:
    keys = list_keys(client, bucket, prefix)
    for i in range(0, len(keys), 1000):
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
    return len(keys)
