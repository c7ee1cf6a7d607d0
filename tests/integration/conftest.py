"""Fixtures for tests against the real MariaDB, Cassandra and SeaweedFS S3 of `scripts/stack up`."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def stack_ready():
    if "AIRFLOW_CONN_BILLING_MYSQL" not in os.environ:
        pytest.fail("the local stack is not up: run `scripts/stack up` (or `make test`)", pytrace=False)


@pytest.fixture(scope="session")
def legacy_db(cfg):
    """This session's legacy database with the schema applied; dropped at session end."""
    from billing_migration.stores import bootstrap, connections

    bootstrap.ensure_legacy_database(cfg)
    yield cfg.mysql_database
    if cfg.namespace and not os.environ.get("BM_KEEP_TEST_DATA"):
        with connections.mysql_conn("mysql_admin", cfg, database="", autocommit=True) as conn, \
                conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{cfg.mysql_database}`")


@pytest.fixture(scope="session")
def cassandra_ks(cfg):
    """This session's keyspace with the Cassandra model applied; dropped at session end."""
    from billing_migration.stores import bootstrap, connections

    bootstrap.ensure_keyspace(cfg)
    yield cfg.cassandra_keyspace
    if cfg.namespace and not os.environ.get("BM_KEEP_TEST_DATA"):
        with connections.cassandra_session(cfg, keyspace=False) as session:
            session.execute(f"DROP KEYSPACE IF EXISTS {cfg.cassandra_keyspace}", timeout=120)


@pytest.fixture(scope="session")
def s3(cfg):
    """boto3 client for the stack's S3; this session's prefix is emptied at session end."""
    from billing_migration.stores import connections

    client = connections.s3_client(cfg)
    yield client
    if cfg.namespace and not os.environ.get("BM_KEEP_TEST_DATA"):
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=cfg.s3_bucket, Prefix=cfg.s3_prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=cfg.s3_bucket, Delete={"Objects": keys})
