"""Make an installation ready: legacy database and schema, Cassandra keyspace and model, S3 bucket, queues.

The one place that creates a store and applies its schema: the demo, the data generator, the test fixtures,
the benchmark and docker-compose's airflow-init all call these. Idempotent:
`python -m billing_migration.stores.bootstrap`.
"""

from __future__ import annotations

import logging

from billing_migration.config import Config, load_config
from billing_migration.stores import connections, queues, s3io, schema, write_gate

log = logging.getLogger(__name__)


def ensure_legacy_database(cfg: Config) -> int:
    """Create the namespace's MySQL database if missing and apply the legacy schema; returns its version."""
    with connections.mysql_conn("mysql_admin", cfg, database="", autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{cfg.mysql_database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    with connections.mysql_conn("mysql_admin", cfg) as conn:
        return schema.apply_legacy_schema(conn)


def ensure_keyspace(cfg: Config) -> int:
    """Create the namespace's keyspace if missing and apply the Cassandra model; returns its version."""
    with connections.cassandra_session(cfg, keyspace=False) as session:
        return schema.apply_cassandra_schema(session, cfg.cassandra_keyspace, cfg.cassandra.replication)


def ensure_bucket(cfg: Config) -> None:
    """Create the configured S3 bucket if missing (the namespace's prefix needs no creation)."""
    s3 = s3io.client(cfg)
    if cfg.s3_bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=cfg.s3_bucket)


def ensure_all(cfg: Config | None = None) -> dict[str, object]:
    cfg = cfg or load_config()
    legacy = ensure_legacy_database(cfg)
    write_gate.prepare(cfg)  # guard triggers exist before anything can be frozen
    target = ensure_keyspace(cfg)
    ensure_bucket(cfg)
    queue_names = queues.ensure_all(cfg) if "sqs" in cfg.connections else []
    out = {"mysql_database": cfg.mysql_database, "legacy_schema_version": legacy,
           "cassandra_keyspace": cfg.cassandra_keyspace, "cassandra_schema_version": target,
           "s3_bucket": cfg.s3_bucket, "queues": len(queue_names)}
    log.info("bootstrap: %s", out)
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(ensure_all())
