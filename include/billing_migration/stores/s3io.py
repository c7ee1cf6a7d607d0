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
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from billing_migration.config import Config


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


def put_parquet(client, bucket: str, key: str, table: pa.Table, compression: str = "zstd") -> int:
    """Write a Parquet object; spooled through a temp file so large tables use multipart upload."""
    with tempfile.NamedTemporaryFile(suffix=".parquet", dir=os.environ.get("BM_TMP_DIR")) as tmp:
        pq.write_table(table, tmp.name, compression=compression)
        size = os.path.getsize(tmp.name)
        client.upload_file(tmp.name, bucket, key)
    return size


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
