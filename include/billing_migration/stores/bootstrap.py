"""Make an installation ready: legacy database and schema, Cassandra keyspace and model, S3 bucket.

Idempotent; run by the demo, by docker-compose's airflow-init and by anyone setting up a new environment:
`python -m billing_migration.stores.bootstrap`.
"""

from __future__ import annotations

import logging

from billing_migration.config import Config, load_config
from billing_migration.stores import connections, schema, write_gate

log = logging.getLogger(__name__)


def ensure_all(cfg: Config | None = None) -> dict[str, object]:
    cfg = cfg or load_config()
    with connections.mysql_conn("mysql_admin", cfg, database="", autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{cfg.mysql_database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    with connections.mysql_conn("mysql_admin", cfg) as conn:
        legacy = schema.apply_legacy_schema(conn)
    write_gate.prepare(cfg)  # guard triggers exist before anything can be frozen
    with connections.cassandra_session(cfg, keyspace=False) as session:
        target = schema.apply_cassandra_schema(session, cfg.cassandra_keyspace)
    s3 = connections.s3_client(cfg)
    if cfg.s3_bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=cfg.s3_bucket)
    out = {"mysql_database": cfg.mysql_database, "legacy_schema_version": legacy,
           "cassandra_keyspace": cfg.cassandra_keyspace, "cassandra_schema_version": target,
           "s3_bucket": cfg.s3_bucket}
    log.info("bootstrap: %s", out)
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(ensure_all())
