"""One way to reach each store, through the same Airflow connections the DAGs use.

Secrets come only from Airflow connections (in this project: `AIRFLOW_CONN_*` environment variables that
`scripts/stack` writes, or any secrets backend in production); nothing here logs them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from billing_migration.config import Config, ConfigError, load_config


def _conn_id(role: str, cfg: Config | None) -> str:
    conns = (cfg or load_config()).connections
    if role not in conns:
        raise ConfigError(f"connections: no {role!r} role in migration.yaml (known: {sorted(conns)})")
    return conns[role]


def mysql_hook(role: str = "mysql_export", cfg: Config | None = None, database: str | None = None):
    """MySqlHook for a role (mysql_export / mysql_gate / mysql_admin), pointed at this namespace's database."""
    from airflow.providers.mysql.hooks.mysql import MySqlHook

    cfg = cfg or load_config()
    db = cfg.mysql_database if database is None else database
    return MySqlHook(mysql_conn_id=_conn_id(role, cfg), schema=db, local_infile=role == "mysql_admin")


@contextlib.contextmanager
def mysql_conn(role: str = "mysql_export", cfg: Config | None = None, database: str | None = None,
               autocommit: bool = False) -> Iterator[Any]:
    """A MySQLdb connection in UTC with utf8mb4; closed on exit."""
    conn = mysql_hook(role, cfg, database).get_conn()
    try:
        conn.autocommit(autocommit)
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00', NAMES utf8mb4")
        yield conn
    finally:
        conn.close()


def mysql_url(role: str = "mysql_export", cfg: Config | None = None) -> str:
    """A `mysql://` URL for connectorx; built from the Airflow connection, never logged."""
    from airflow.sdk import BaseHook

    cfg = cfg or load_config()
    c = BaseHook.get_connection(_conn_id(role, cfg))
    return (f"mysql://{quote(c.login or '', safe='')}:{quote(c.password or '', safe='')}@"
            f"{c.host}:{c.port or 3306}/{cfg.mysql_database}")


def mysql_cdc_settings(cfg: Config | None = None) -> dict[str, Any]:
    """pymysql keyword arguments of the binlog reader's account (role `mysql_cdc`); holds the password.

    The replication stream is pymysql-based (mysql-replication), so it gets plain settings, not a hook.
    """
    from airflow.sdk import BaseHook

    c = BaseHook.get_connection(_conn_id("mysql_cdc", cfg))
    return {"host": c.host or "127.0.0.1", "port": int(c.port or 3306), "user": c.login or "",
            "password": c.password or "", "connect_timeout": 10}


def cassandra_cluster(cfg: Config | None = None):
    """A driver Cluster from the Airflow connection, always with token-aware routing.

    The Airflow hook falls back to a plain RoundRobinPolicy when the connection names no policy, so every
    write would take an extra coordinator hop: wrap it in TokenAwarePolicy (replicas of the key first).
    """
    from airflow.providers.apache.cassandra.hooks.cassandra import CassandraHook
    from cassandra.policies import TokenAwarePolicy

    cluster = CassandraHook(cassandra_conn_id=_conn_id("cassandra", cfg)).get_cluster()
    if not isinstance(cluster.load_balancing_policy, TokenAwarePolicy):
        cluster.load_balancing_policy = TokenAwarePolicy(cluster.load_balancing_policy)
    return cluster


@contextlib.contextmanager
def cassandra_session(cfg: Config | None = None, keyspace: str | bool | None = True) -> Iterator[Any]:
    """A session bound to this namespace's keyspace (keyspace=False: unbound, for DDL); shut down on exit."""
    cfg = cfg or load_config()
    cluster = cassandra_cluster(cfg)
    try:
        ks = cfg.cassandra_keyspace if keyspace is True else (keyspace or None)
        yield cluster.connect(ks)
    finally:
        cluster.shutdown()


def s3_hook(cfg: Config | None = None):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=_conn_id("s3", cfg))


def s3_client(cfg: Config | None = None):
    """A boto3 S3 client for the configured endpoint (SeaweedFS locally, AWS in production)."""
    return s3_hook(cfg).get_conn()
