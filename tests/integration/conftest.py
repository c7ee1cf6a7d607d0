"""Fixtures for tests against the real MariaDB, Cassandra and SeaweedFS S3 of `scripts/stack up`."""

from __future__ import annotations

import os
from collections.abc import Callable

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


# ------------------------------------------------------------------------------------------ shared data fixtures
# Factories (session scope, so module-scoped fixtures can use them): every module reseeds and resets the
# routing the same way. Other modules of the session may have frozen or cut over countries, and a frozen
# country's guard triggers refuse writes, so a module that seeds starts with `reset_routing()`.
@pytest.fixture(scope="session")
def reset_routing(cfg, legacy_db) -> Callable[..., list[str]]:
    """`reset_routing(reason=...)`: every country back to legacy and writable, through the write gate (each
    frozen or cut-over country gets a `reset` event); returns those countries."""
    from billing_migration.stores import write_gate

    def reset(reason: str = "test starts from a clean slate") -> list[str]:
        return write_gate.reset_routing(cfg, "pytest", reason)

    return reset


@pytest.fixture(scope="session")
def set_routing(cfg, legacy_db) -> Callable[..., None]:
    """`set_routing(country, serving, frozen, cutover_at=None)`: write a routing row as-is (no gate, no
    guard triggers): the state a nightly or generator test starts from."""
    from tests.integration import fixture_data

    return lambda country, serving, frozen, cutover_at=None: fixture_data.set_routing(
        cfg, country, serving, frozen, cutover_at)


@pytest.fixture(scope="session")
def reset_stores(cfg, legacy_db, cassandra_ks) -> Callable[[], None]:
    """`reset_stores()`: empty every legacy table (routing included) and the session's Cassandra tables."""
    from tests.integration import fixture_data

    return lambda: fixture_data.reset_stores(cfg)


@pytest.fixture(scope="session")
def reseed(cfg, legacy_db, reset_routing) -> Callable[..., object]:
    """`reseed(customers, countries=None, seed=42, **generator_kwargs)`: routing reset, then the legacy
    database replaced by generator.seed's deterministic data; returns its SeedResult."""
    from billing_migration.devtools import generator

    def _reseed(customers: int, countries: dict[str, float] | None = None, seed: int = 42, **kw):
        reset_routing("reseed")
        return generator.seed(cfg, customers, seed=seed, countries=countries, **kw)

    return _reseed


@pytest.fixture(scope="session")
def seed_customers(cfg, legacy_db) -> Callable[..., list[int]]:
    """`seed_customers(country, n, base, n_inv=3)`: fixture_data's hand-written customers (ids base..base+n-1,
    countries migration.yaml does not configure) added to the legacy database; returns the ids."""
    from tests.integration import fixture_data

    return lambda country, n, base, n_inv=3: fixture_data.seed(cfg, country, n, base, n_inv)


@pytest.fixture(scope="module")
def dags():
    """The per-country migration DAGs, parsed from this checkout's dags/ (module-scoped: dag.test reuses them)."""
    from pathlib import Path

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags" / "migrate_billing.py"))
    assert not bag.import_errors, bag.import_errors
    return bag


@pytest.fixture(scope="session")
def fresh_countries(cfg, legacy_db, cassandra_ks, s3, reseed) -> Callable[..., object]:
    """`fresh_countries(customers, mix, seed)`: routing reset, the legacy database reseeded with generator data
    for the countries of `mix` (country -> share), their target data deleted; returns cfg."""
    from billing_migration.country import load

    def _fresh(customers: int, mix: dict[str, float], seed: int):
        reseed(customers, countries=mix, seed=seed)
        for cc in mix:
            load.delete_country(cfg, cc)
        return cfg

    return _fresh
