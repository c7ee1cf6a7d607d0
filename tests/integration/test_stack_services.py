"""Each real service answers through the same Airflow hooks the DAGs use."""

from __future__ import annotations

import uuid


def test_mysql_hook_reaches_mariadb_with_read_only_export_user(cfg, legacy_db):
    from billing_migration.stores import connections

    hook = connections.mysql_hook("mysql_export", cfg)
    version = hook.get_first("SELECT VERSION()")[0]
    print("MariaDB", version)
    assert "MariaDB" in version
    assert hook.get_first("SELECT DATABASE()")[0] == legacy_db
    # The export account is read-only: a write is refused by the server.
    import MySQLdb

    try:
        hook.run("INSERT INTO schema_migrations (version) VALUES (999)")
    except MySQLdb.OperationalError as exc:
        assert exc.args[0] == 1142  # command denied
    else:
        raise AssertionError("read-only export user could write")


def test_cassandra_hook_reaches_cassandra_5(cfg, cassandra_ks):
    from airflow.providers.apache.cassandra.hooks.cassandra import CassandraHook

    hook = CassandraHook(cassandra_conn_id=cfg.connections["cassandra"])
    hook.keyspace = cassandra_ks
    session = hook.get_conn()
    try:
        version = session.execute("SELECT release_version FROM system.local").one()[0]
        print("Cassandra", version)
        assert version.startswith("5.0.")
        assert hook.table_exists(f"{cassandra_ks}.customer_billing")
    finally:
        hook.shutdown_cluster()


def test_s3_hook_reaches_seaweedfs(cfg, s3):
    from billing_migration.stores import connections

    hook = connections.s3_hook(cfg)
    key = f"{cfg.s3_prefix}probe/{uuid.uuid4()}.txt"
    hook.load_bytes(b"hello", key=key, bucket_name=cfg.s3_bucket)
    assert hook.read_key(key, bucket_name=cfg.s3_bucket) == "hello"
    server = s3.head_object(Bucket=cfg.s3_bucket, Key=key)["ResponseMetadata"]["HTTPHeaders"].get("server", "")
    print("S3 server:", server)
    assert hook.check_for_key(key, bucket_name=cfg.s3_bucket)
