"""Least privilege of the MySQL roles, on the real server (what it refuses, not what the grants say)."""

from __future__ import annotations

import pytest


def test_the_application_role_cannot_touch_routing_or_gate_events(cfg, legacy_db):
    """The app account may write billing tables, so without the routing guard it could unfreeze a country."""
    from billing_migration.stores import connections, write_gate

    run = "manual__security_test"
    write_gate.prepare(cfg)
    assert write_gate.freeze(cfg, "ZA", "pytest", run, drain_timeout_s=5)["writes_frozen"]
    for sql in ("UPDATE country_routing SET writes_frozen = 0 WHERE country = 'ZA'",
                "INSERT INTO country_routing (country) VALUES ('ZW')",
                "DELETE FROM country_routing WHERE country = 'ZA'",
                "INSERT INTO write_gate_events (country, action, actor) VALUES ('NZ', 'unfreeze', 'app')"):
        with connections.mysql_conn("mysql_app", cfg) as conn, conn.cursor() as cur:
            with pytest.raises(Exception, match="only through the write gate"):
                cur.execute(sql)
            conn.rollback()
    assert write_gate.status(cfg, "ZA").writes_frozen is True  # the app's attempts changed nothing
    # The gate itself still works through its own account.
    write_gate.unfreeze(cfg, "ZA", "pytest", run, reason="test done")
    assert write_gate.status(cfg, "ZA").writes_frozen is False


def test_every_role_can_do_only_what_it_needs(cfg, legacy_db):
    from billing_migration.devtools import faults
    from billing_migration.stores import write_gate

    write_gate.prepare(cfg)
    checks = faults.role_checks(cfg)
    assert [k for k, ok in checks.items() if not ok] == []


def test_the_airflow_api_server_of_the_stack_binds_loopback_only():
    """Airflow's default [api] host is 0.0.0.0: the stack's env file must pin it (standalone, api-server)."""
    from airflow.configuration import conf

    assert conf.get("api", "host") == "127.0.0.1"
