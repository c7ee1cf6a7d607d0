"""Operator commands (scripts/bm) against the real MariaDB, Cassandra, S3 and this worktree's Airflow DB."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime

import pytest
from billing_migration import ops
from billing_migration.stores import bootstrap, connections, write_gate

CC, CUT = "IE", "NL"  # configured countries no other test of this session freezes
RUN = "manual__2026-11-25T21:00:00+00:00"
BASE = 7_500_000


def _app_write(cfg) -> int:
    with connections.mysql_conn("mysql_app", cfg, autocommit=True) as conn, conn.cursor() as cur:
        return cur.execute("UPDATE customers SET email = 'op@x.io' WHERE customer_id = %s", (BASE,))


@pytest.fixture
def crashed(cfg, legacy_db):
    """A run froze CC through the write gate and died: no teardown ran."""
    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as cur:
        cur.execute("INSERT IGNORE INTO customers VALUES (%s,%s,'a@x.io','A B','active','2026-01-01',1,"
                    "'2026-01-01')", (BASE, CC))
        conn.commit()
    write_gate.prepare(cfg)
    write_gate.freeze(cfg, CC, "airflow:migrate_billing", RUN, drain_timeout_s=5)
    yield cfg
    for cc in (CC, CUT):
        if write_gate.status(cfg, cc).legacy_frozen:
            write_gate.unfreeze(cfg, cc, "pytest", None, reason="test teardown", force_rollback=True)


@pytest.fixture
def airflow_run():
    """Put a DagRun of the frozen country in this worktree's Airflow metadata DB; removed afterwards."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunType
    from sqlalchemy import delete, update

    def make(state: str) -> None:
        with create_session() as s:
            s.execute(delete(DagRun).where(DagRun.run_id == RUN))
            now = datetime.now(UTC)
            s.add(DagRun(dag_id=ops.dag_id(CC), run_id=RUN, run_type=DagRunType.MANUAL, state=state,
                         run_after=now, logical_date=now))

    def set_state(state: str) -> None:
        with create_session() as s:
            s.execute(update(DagRun).where(DagRun.run_id == RUN).values(state=state))

    make.set_state = set_state  # type: ignore[attr-defined]
    yield make
    with create_session() as s:
        s.execute(delete(DagRun).where(DagRun.run_id == RUN))


def test_crashed_run_status_then_operator_unfreeze(crashed, capsys):
    cfg = crashed
    with pytest.raises(Exception, match=f"country {CC} are frozen"):
        _app_write(cfg)
    assert ops.main(["status"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith(f"{CC} "))
    assert "FROZEN" in line and RUN in line
    assert all(f"\n{cc} " in out for cc in cfg.countries)  # every configured country is listed
    assert f"{CC} is frozen by run {RUN}" in out and "not running" in out
    assert f"scripts/bm unfreeze {CC}" in out
    assert ops.main(["status", CC]) == 0
    assert f"freeze         airflow:migrate_billing      run={RUN}" in capsys.readouterr().out

    assert ops.main(["unfreeze", CC, "--reason", "run crashed (kill -9)"]) == 0
    assert "writes re-enabled on legacy" in capsys.readouterr().out
    assert _app_write(cfg) == 1  # writes succeed again
    ev = write_gate.events(cfg, CC, limit=1)[0]
    assert ev["action"] == "unfreeze" and ev["actor"] == f"operator:{getpass.getuser()}" and ev["run_id"] == RUN
    assert "run crashed (kill -9)" in ev["detail"]
    assert ops.main(["unfreeze", CC, "--reason", "again"]) == 0  # idempotent: nothing to do
    assert "not frozen; nothing to do" in capsys.readouterr().out
    assert write_gate.events(cfg, CC, limit=1)[0]["event_id"] == ev["event_id"]


def test_unfreeze_refuses_a_cut_over_country(crashed, capsys):
    cfg = crashed
    write_gate.freeze(cfg, CUT, "airflow:migrate_billing", RUN, drain_timeout_s=5)
    write_gate.cutover(cfg, CUT, "airflow:migrate_billing", RUN)
    assert ops.main(["unfreeze", CUT, "--reason", "try", "--force"]) == 2
    assert "served by Cassandra" in capsys.readouterr().err
    st = write_gate.status(cfg, CUT)
    assert st.cut_over and st.writes_frozen and write_gate.events(cfg, CUT, limit=1)[0]["action"] == "cutover"


def test_unfreeze_refuses_while_the_freezing_run_looks_alive_unless_forced(crashed, airflow_run, capsys):
    cfg = crashed
    airflow_run("running")
    assert ops.main(["status", CC]) == 0
    assert "ALIVE" in capsys.readouterr().out
    assert ops.main(["unfreeze", CC, "--reason", "impatient"]) == 2
    assert "looks alive" in capsys.readouterr().err
    assert write_gate.status(cfg, CC).writes_frozen
    airflow_run.set_state("failed")
    assert ops.run_liveness(RUN, ops.dag_id(CC)).alive is False
    airflow_run.set_state("running")
    assert ops.main(["unfreeze", CC, "--reason", "scheduler is gone", "--force"]) == 0
    assert not write_gate.status(cfg, CC).writes_frozen
    assert "--force" in write_gate.events(cfg, CC, limit=1)[0]["detail"]


def test_unfreeze_requires_a_reason(crashed):
    with pytest.raises(SystemExit) as err:
        ops.main(["unfreeze", CC])
    assert err.value.code == 2
    with pytest.raises(ops.OpsError, match="reason"):
        ops.operator_unfreeze(crashed, CC, " ")
    assert write_gate.status(crashed, CC).writes_frozen


def _exists(cfg) -> tuple[bool, bool, int]:
    plan = ops.plan_drop(cfg.namespace)
    return plan.database_tables is not None, plan.keyspace_tables is not None, plan.s3_objects


def test_drop_namespace_drops_its_three_artefacts_and_nothing_else(cfg, capsys):
    doomed, kept = ops.config_for(f"{cfg.namespace}d"), ops.config_for(f"{cfg.namespace}k")
    try:
        for c in (doomed, kept):
            bootstrap.ensure_all(c)
            connections.s3_client(c).put_object(Bucket=c.s3_bucket, Key=f"{c.s3_prefix}runs/x.txt", Body=b"x")
        assert _exists(doomed) == (True, True, 1)
        assert ops.main(["drop-namespace", doomed.namespace]) == 0  # dry run: lists, drops nothing
        out = capsys.readouterr().out
        assert doomed.mysql_database in out and doomed.cassandra_keyspace in out and "1 object(s)" in out
        assert "dry run" in out and _exists(doomed) == (True, True, 1)
        assert ops.main(["drop-namespace", doomed.namespace, "--yes"]) == 0
        assert _exists(doomed) == (False, False, 0)
        assert _exists(kept) == (True, True, 1)  # another namespace is untouched
    finally:
        for c in (doomed, kept):
            ops.drop_namespace(c.namespace)


def test_drop_namespace_refuses_the_default_namespace(capsys):
    assert ops.main(["drop-namespace", ""]) == 2
    assert "PRODUCTION" in capsys.readouterr().err
    with pytest.raises(ops.OpsError, match="i-mean-production"):
        ops.drop_namespace("")


def _password(conn: str) -> str | None:
    import json
    from urllib.parse import unquote, urlsplit

    return json.loads(conn).get("password") if conn.startswith("{") else unquote(urlsplit(conn).password or "")


def test_scripts_bm_wrapper_runs_the_cli_without_printing_secrets(crashed):
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([str(root / "scripts" / "bm"), "status", CC], capture_output=True, text=True, timeout=300,
                         env=os.environ.copy(), check=False)
    assert res.returncode == 0, res.stderr
    assert f"{CC}  legacy" in res.stdout and RUN in res.stdout
    secrets = [_password(v) for k, v in os.environ.items() if k.startswith("AIRFLOW_CONN_BILLING_")]
    secrets = [s for s in secrets if s and len(s) > 4]
    assert secrets and not any(s in res.stdout + res.stderr for s in secrets)
