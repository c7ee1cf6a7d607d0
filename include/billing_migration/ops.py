"""Operator commands for the stores: see and recover the write gate, install it, drop a namespace.

`scripts/bm status [CC]`, `scripts/bm unfreeze CC --reason ...` (then replays the writes queued meanwhile),
`scripts/bm replay CC`, `scripts/bm prepare`,
`scripts/bm drop-namespace NS [--yes]`. Settings come from the same Airflow connections and `BM_NAMESPACE` as
the DAGs (the stack env file locally); nothing here prints a secret.

Why `unfreeze` asks Airflow first: a freeze belongs to a run, and a live run may still be migrating under
it. A run "looks alive" when Airflow's metadata database shows it queued, or running with a task that
heartbeats, or with tasks waiting for the scheduler; a running task whose heartbeat is older than
`[scheduler] task_instance_heartbeat_timeout` belongs to a process that is gone (kill -9, lost worker).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from billing_migration.config import Config, ConfigError, load_config, normalize_country
from billing_migration.stores import connections, s3io, write_gate
from billing_migration.stores.write_gate import RoutingStatus, WriteGateError

log = logging.getLogger(__name__)

_ER_BAD_DB, _ER_NO_TABLE = 1049, 1146
PENDING_TI_STATES = frozenset({"queued", "scheduled", "up_for_retry", "up_for_reschedule", "deferred",
                               "restarting"})


class OpsError(RuntimeError):
    """An operator command refused to act; nothing was changed."""


# ------------------------------------------------------------------------------------------ run liveness
@dataclass(frozen=True)
class TaskSeen:
    """One task instance of a run as Airflow's metadata database shows it."""

    task_id: str
    map_index: int
    state: str | None
    last_heartbeat_at: datetime | None
    start_date: datetime | None


@dataclass(frozen=True)
class RunLiveness:
    """Whether the run that froze a country may still be working under its freeze."""

    run_id: str | None
    dag_id: str | None
    state: str | None
    alive: bool
    why: str
    logical_date: str | None = None


def _age_s(now: datetime, t: datetime | None) -> float | None:
    if t is None:
        return None
    return (now - (t if t.tzinfo else t.replace(tzinfo=UTC))).total_seconds()


def judge_run(run_id: str | None, dag_id: str | None, run_state: str | None, tasks: list[TaskSeen],
              now: datetime, heartbeat_timeout_s: int, logical_date: str | None = None) -> RunLiveness:
    """Decide from what the metadata database shows (pure: unit-tested)."""
    def out(alive: bool, why: str) -> RunLiveness:
        return RunLiveness(run_id, dag_id, run_state, alive, why, logical_date)

    if not run_id:
        return out(False, "no run id is recorded on the freeze")
    if dag_id is None:
        return out(False, "the run is unknown to this Airflow's metadata database")
    if run_state not in ("queued", "running"):
        return out(False, f"the run is {run_state}")
    if run_state == "queued":
        return out(True, "the run is queued")
    running = [t for t in tasks if t.state == "running"]
    for t in running:
        age = _age_s(now, t.last_heartbeat_at or t.start_date)
        if age is not None and age < heartbeat_timeout_s:
            return out(True, f"task {_label(t)} is running (heartbeat {age:.0f}s ago)")
    if running:
        t = running[0]
        age = _age_s(now, t.last_heartbeat_at or t.start_date)
        seen = "never" if age is None else f"{age:.0f}s ago"
        return out(False, f"task {_label(t)} is marked running but last heartbeat {seen} "
                          f"(timeout {heartbeat_timeout_s}s): its process is gone")
    pending = [t for t in tasks if t.state in PENDING_TI_STATES]
    if pending:
        return out(True, f"task {_label(pending[0])} is {pending[0].state}: the scheduler will run it")
    return out(True, "the run is running and the scheduler has not started its next task yet")


def _label(t: TaskSeen) -> str:
    return t.task_id if t.map_index < 0 else f"{t.task_id}[{t.map_index}]"


def run_liveness(run_id: str | None, dag_id_hint: str | None = None) -> RunLiveness:
    """Look the run up in Airflow's metadata database (unreachable database: reported as alive, to be safe)."""
    if not run_id:
        return judge_run(None, None, None, [], datetime.now(UTC), 0)
    try:
        from airflow.configuration import conf
        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        timeout = conf.getint("scheduler", "task_instance_heartbeat_timeout", fallback=300)
        with create_session() as session:
            runs = session.scalars(select(DagRun).where(DagRun.run_id == run_id)).all()
            dr = next((r for r in runs if r.dag_id == dag_id_hint), runs[0] if runs else None)
            if dr is None:
                return judge_run(run_id, None, None, [], datetime.now(UTC), timeout)
            rows = session.execute(
                select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state,
                       TaskInstance.last_heartbeat_at, TaskInstance.start_date)
                .where(TaskInstance.dag_id == dr.dag_id, TaskInstance.run_id == run_id)).all()
            tasks = [TaskSeen(r[0], int(r[1]), _state(r[2]), r[3], r[4]) for r in rows]
            logical = dr.logical_date.isoformat() if dr.logical_date else None
            return judge_run(run_id, dr.dag_id, _state(dr.state), tasks, datetime.now(UTC), timeout, logical)
    except Exception as exc:  # any failure means "cannot tell", which must not unfreeze
        return RunLiveness(run_id, dag_id_hint, None, True,
                           f"cannot read Airflow's metadata database ({type(exc).__name__}); assuming alive")


def _state(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


# ------------------------------------------------------------------------------------------ status
def dag_id(country: str) -> str:
    return f"migrate_billing_{country.lower()}"


def resume_hint(st: RoutingStatus, live: RunLiveness) -> list[str]:
    """How to finish the frozen country's migration instead of unfreezing it."""
    dag = live.dag_id or dag_id(st.country)
    if live.dag_id is None:
        lines = [f"resume: run {st.freeze_run_id} is not in this Airflow's metadata database (another Airflow, "
                 "or a script / dag.test() process): resume it where it ran"]
    else:
        lines = [f"resume: Airflow UI → DAG {dag} → run {st.freeze_run_id} → the failed or stuck task → Clear "
                 "(with Downstream); the run continues under its freeze, finished chunks are skipped"]
    if live.logical_date:
        lines.append(f"    or: airflow tasks clear {dag} --start-date {live.logical_date} "
                     f"--end-date {live.logical_date} --only-failed --downstream --yes")
    lines.append(f"give up: scripts/bm unfreeze {st.country} --reason \"...\"  (writes back on legacy; "
                 "a later run starts again from disable_writes)")
    return lines


def collect_status(cfg: Config, country: str | None = None, event_limit: int = 3) -> list[dict[str, Any]]:
    """Every configured country's routing (plus any other country with a routing row), or one country."""
    codes = [normalize_country(country)] if country else sorted(set(cfg.countries) | set(write_gate.routing(cfg)))
    out = []
    for st in write_gate.statuses(cfg, codes):
        live = run_liveness(st.freeze_run_id, dag_id(st.country)) if st.writes_frozen and not st.cut_over \
            else None
        out.append({"status": st, "liveness": live, "events": write_gate.events(cfg, st.country, event_limit)})
    return out


def _writes(st: RoutingStatus) -> str:
    if st.cut_over:
        return "frozen (served by cassandra)"
    return "FROZEN" if st.writes_frozen else "open"


def render_status(cfg: Config, rows: list[dict[str, Any]], missing: list[str]) -> str:
    gate = "installed" if not missing else f"NOT INSTALLED ({len(missing)} trigger(s) missing): scripts/bm prepare"
    lines = [f"namespace {cfg.namespace or '(default)'}: database {cfg.mysql_database}, "
             f"keyspace {cfg.cassandra_keyspace}; write gate {gate}", "",
             f"{'CC':<3} {'SERVED BY':<10} {'LEGACY WRITES':<28} {'SINCE':<30} {'RUN':<40} LAST EVENT"]
    for row in rows:
        st: RoutingStatus = row["status"]
        since = st.cutover_at if st.cut_over else st.frozen_at
        ev = row["events"][0] if row["events"] else None
        last = f"{ev['at']} {ev['action']} by {ev['actor']}" if ev else "-"
        lines.append(f"{st.country:<3} {st.serving_store:<10} {_writes(st):<28} {since or '-':<30} "
                     f"{st.run_id or '-':<40} {last}")
    for row in rows:
        st, live = row["status"], row["liveness"]
        if live is None:
            continue
        lines += ["", f"{st.country} is frozen by run {st.freeze_run_id} (actor {st.frozen_by}) since {st.frozen_at}: "
                      f"{'ALIVE' if live.alive else 'not running'} - {live.why}", *resume_hint(st, live)]
    if len(rows) == 1:
        lines += ["", f"last events of {rows[0]['status'].country}:"]
        lines += [f"  {e['at']}  {e['action']:<14} {e['actor']:<28} run={e['run_id'] or '-'}  {e['detail'] or ''}"
                  for e in rows[0]["events"]] or ["  (none)"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ unfreeze
def operator_actor() -> str:
    return f"operator:{getpass.getuser()}"


def operator_unfreeze(cfg: Config, country: str, reason: str, force: bool = False) -> dict[str, Any]:
    """Re-enable legacy writes of a country left frozen by a run that is not running anymore."""
    country = normalize_country(country)
    if not isinstance(reason, str) or not reason.strip():
        raise OpsError("--reason is required (it is recorded with the event)")
    st = write_gate.status(cfg, country)
    if st.cut_over:
        raise OpsError(f"{country} is cut over: served by Cassandra since {st.cutover_at} (run {st.cutover_run_id}); "
                       "legacy stays frozen by design as the rollback copy. Nothing changed.")
    if not st.writes_frozen:
        return {"country": country, "action": "none", "message": f"{country} is not frozen; nothing to do"}
    live = run_liveness(st.freeze_run_id, dag_id(country))
    if live.alive and not force:
        raise OpsError(f"{country} is frozen by run {st.freeze_run_id}, which looks alive: {live.why}. Let it "
                       "finish (its teardown re-enables writes), or pass --force if you know it is dead")
    note = f"{reason.strip()} [freezing run {st.freeze_run_id}: {live.why}{'; --force' if force else ''}]"
    out = write_gate.unfreeze(cfg, country, operator_actor(), st.freeze_run_id, reason=note,
                              expected_run_id=st.freeze_run_id)
    replayed = operator_replay(cfg, country)
    return {"country": country, "action": out["action"], "run_id": st.freeze_run_id, "liveness": asdict(live),
            "replay": replayed,
            "message": f"{country}: writes re-enabled on legacy (was frozen by run {st.freeze_run_id}); "
                       f"{replayed['message']}"}


def operator_replay(cfg: Config, country: str) -> dict[str, Any]:
    """Apply the writes the application queued while the country was frozen to the store that serves it now:
    the dead run's `replay_writes` never ran, and until they are applied the write path keeps holding new
    writes (accepted, pending) behind them. Safe to repeat: applied writes are skipped by idempotency key."""
    from billing_migration.app import replay

    run_id = f"operator__replay_{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    try:
        out = replay.after_migration(cfg, country, run_id)
    except Exception as exc:  # the unfreeze before it stands; say so and how to retry, never hide it
        return {"ok": False, "message": f"replay of queued writes FAILED: {type(exc).__name__}: {exc} "
                                        f"(retry: scripts/bm replay {country})"}
    n = out.get("applied", 0)
    return {"ok": True, **out, "message": f"{n} queued write(s) replayed into {out['store']}"
            if out.get("received") else "no queued write to replay"}


# ------------------------------------------------------------------------------------------ drop-namespace
@contextmanager
def _namespace(ns: str) -> Iterator[None]:
    old = os.environ.get("BM_NAMESPACE")
    os.environ["BM_NAMESPACE"] = ns
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("BM_NAMESPACE", None)
        else:
            os.environ["BM_NAMESPACE"] = old


def config_for(namespace: str) -> Config:
    """The config of another namespace: config.py derives its database, keyspace and S3 prefix."""
    with _namespace(namespace):
        return load_config()


@dataclass(frozen=True)
class DropPlan:
    """What `drop-namespace` removes (and what exists of it now)."""

    namespace: str
    mysql_database: str
    database_tables: int | None  # None: the database does not exist
    cassandra_keyspace: str
    keyspace_tables: int | None
    s3_bucket: str
    s3_prefix: str
    s3_objects: int
    s3_bytes: int

    def render(self) -> str:
        def have(n: int | None, what: str) -> str:
            return "absent" if n is None else f"{n} {what}"

        prefix = self.s3_prefix or "(whole bucket except other namespaces' ns=*/ prefixes)"
        return "\n".join([
            f"namespace {self.namespace or '(default: PRODUCTION)'}:",
            f"  MySQL database      {self.mysql_database}: {have(self.database_tables, 'table(s)')}",
            f"  Cassandra keyspace  {self.cassandra_keyspace}: {have(self.keyspace_tables, 'table(s)')}",
            f"  S3                  s3://{self.s3_bucket}/{prefix}: {self.s3_objects} object(s), "
            f"{self.s3_bytes} bytes"])


def _s3_keys(cfg: Config) -> Iterator[tuple[str, int]]:
    client = s3io.client(cfg)
    if cfg.s3_bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        return
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=cfg.s3_bucket, Prefix=cfg.s3_prefix):
        for o in page.get("Contents", []):
            if cfg.s3_prefix or not o["Key"].startswith("ns="):  # the default namespace never owns ns=*/
                yield o["Key"], int(o.get("Size", 0))


def plan_drop(namespace: str) -> DropPlan:
    cfg = config_for(namespace)
    with connections.mysql_conn("mysql_admin", cfg, database="", autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(t.TABLE_NAME) FROM information_schema.SCHEMATA s LEFT JOIN "
                    "information_schema.TABLES t ON t.TABLE_SCHEMA = s.SCHEMA_NAME WHERE s.SCHEMA_NAME = %s "
                    "GROUP BY s.SCHEMA_NAME", (cfg.mysql_database,))
        row = cur.fetchone()
    with connections.cassandra_session(cfg, keyspace=False) as session:
        if session.execute("SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s",
                           (cfg.cassandra_keyspace,)).one() is None:
            ks_tables = None
        else:
            ks_tables = len(list(session.execute("SELECT table_name FROM system_schema.tables "
                                                 "WHERE keyspace_name = %s", (cfg.cassandra_keyspace,))))
    keys = list(_s3_keys(cfg))
    return DropPlan(namespace, cfg.mysql_database, None if row is None else int(row[0]), cfg.cassandra_keyspace,
                    ks_tables, cfg.s3_bucket, cfg.s3_prefix, len(keys), sum(s for _, s in keys))


def drop_namespace(namespace: str, i_mean_production: bool = False) -> DropPlan:
    """Drop the namespace's MySQL database, Cassandra keyspace and S3 objects; returns what existed."""
    if not namespace and not i_mean_production:
        raise OpsError("refusing to drop the default namespace: it is PRODUCTION (database, keyspace and "
                       "bucket without a suffix). Pass --i-mean-production if that is really what you want")
    plan = plan_drop(namespace)
    cfg = config_for(namespace)
    with connections.mysql_conn("mysql_admin", cfg, database="", autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{cfg.mysql_database}`")
    with connections.cassandra_session(cfg, keyspace=False) as session:
        session.execute(f"DROP KEYSPACE IF EXISTS {cfg.cassandra_keyspace}", timeout=120)
    client = s3io.client(cfg)
    batch: list[dict[str, str]] = []
    for key, _ in list(_s3_keys(cfg)):
        batch.append({"Key": key})
        if len(batch) == 1000:
            client.delete_objects(Bucket=cfg.s3_bucket, Delete={"Objects": batch, "Quiet": True})
            batch = []
    if batch:
        client.delete_objects(Bucket=cfg.s3_bucket, Delete={"Objects": batch, "Quiet": True})
    return plan


# ------------------------------------------------------------------------------------------ CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/bm", description="Operator commands for the billing migration.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("status", help="routing of every configured country (or one), freezes, how to recover")
    s.add_argument("country", nargs="?")
    s.add_argument("--events", type=int, default=10, help="gate events shown for one country (default 10)")
    s.add_argument("--json", action="store_true")
    u = sub.add_parser("unfreeze", help="re-enable legacy writes of a country left frozen by a dead run")
    u.add_argument("country")
    u.add_argument("--reason", required=True)
    u.add_argument("--force", action="store_true", help="even if the freezing run looks alive")
    rp = sub.add_parser("replay", help="apply the writes queued while a country was frozen (after unfreeze)")
    rp.add_argument("country")
    pr = sub.add_parser("prepare", help="install the write gate's guard triggers (safe while the app writes)")
    pr.add_argument("--timeout", type=int, default=120)
    d = sub.add_parser("drop-namespace", help="drop a namespace's database, keyspace and S3 prefix")
    d.add_argument("namespace", help="the BM_NAMESPACE to drop ('' is production)")
    d.add_argument("--yes", action="store_true", help="really drop (without it: list what would be dropped)")
    d.add_argument("--i-mean-production", action="store_true", help="allow dropping the default namespace")
    return p


def _cmd_status(args: argparse.Namespace) -> int:
    cfg = load_config()
    rows = collect_status(cfg, args.country, event_limit=args.events if args.country else 1)
    if args.json:
        print(json.dumps([{"status": r["status"].as_dict(), "events": r["events"],
                           "liveness": asdict(r["liveness"]) if r["liveness"] else None} for r in rows], indent=2))
    else:
        print(render_status(cfg, rows, write_gate.missing_triggers(cfg)))
    return 0


def _cmd_drop(args: argparse.Namespace) -> int:
    if not args.namespace and not args.i_mean_production:
        raise OpsError("refusing to drop the default namespace: it is PRODUCTION. "
                       "Pass --i-mean-production if that is really what you want")
    if not args.yes:
        print(plan_drop(args.namespace).render() + "\n(dry run: add --yes to drop all of the above)")
        return 0
    print(drop_namespace(args.namespace, args.i_mean_production).render() + "\ndropped.")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "status":
            return _cmd_status(args)
        if args.command == "unfreeze":
            print(operator_unfreeze(load_config(), args.country, args.reason, args.force)["message"])
            return 0
        if args.command == "replay":
            out = operator_replay(load_config(), args.country)
            print(f"{normalize_country(args.country)}: {out['message']}")
            return 0 if out["ok"] else 1
        if args.command == "prepare":
            res = write_gate.prepare(load_config(), timeout_s=args.timeout)
            print(f"write gate ready: {len(res.installed)} guard trigger(s) installed in {res.seconds}s")
            return 0
        return _cmd_drop(args)
    except (OpsError, WriteGateError, ConfigError) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if getattr(exc, "args", (None,))[0] in (_ER_BAD_DB, _ER_NO_TABLE):
            ns = os.environ.get("BM_NAMESPACE", "") or "(default)"
            print(f"refused: the legacy database of namespace {ns} does not exist or has no schema; "
                  "set it up with `python -m billing_migration.stores.bootstrap`", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
