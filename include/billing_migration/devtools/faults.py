"""Fault matrix: kill -9 and server faults mid-run on the real stack, then the documented recovery, then an
independent check (our own SQL and CQL, not the pipeline's code) that no row was lost, duplicated or altered.

    scripts/faults            the whole matrix (process faults, server faults, drift, security)
    scripts/faults --fast     the CI subset
    scripts/faults --case kill9_offline_load --case drift_matrix --trials 10

Each case runs in its own namespace (BM_NAMESPACE: database, keyspace, S3 prefix), dropped afterwards.
The run's tasks run in a child process that this module starts as a task runner would (one process per
attempt, the DAG's task order and teardown); a fault hook in that child writes a marker at a chosen point
of a step and the parent then kills it with SIGKILL, or stops a server with `scripts/stack stop`. Why a
child and not a scheduler: a killed task's freeze is only released by the scheduler after the heartbeat
timeout (5 min); the state a kill leaves and its recovery are the same, and a case takes minutes, not ten.
Server faults stop only this checkout's stack (pidfiles): never run it against a shared stack.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from billing_migration.config import Config

log = logging.getLogger("faults")

COUNTRY = "NZ"
ROOT = Path(__file__).resolve().parents[3]
TASKS = ("begin", "plan", "export", "transform", "error_budget", "load", "compare", "catch_up", "cutover")
DAG_TASK = {"compare": "compare_and_repair"}  # child task name -> the DAG's task id (report)
WORK = Path(os.environ.get("BM_FAULTS_DIR") or tempfile.gettempdir()) / "bm-faults"


# ------------------------------------------------------------------------------------------ the matrix
@dataclass(frozen=True)
class Case:
    """One row of the matrix. `fault`: (kind, target, hook, part): kind kill9 (task process), or a service
    name stopped (cassandra, s3) or restarted (mysql); hook `after` = the step's effects done, its ledger
    row not yet (worst moment), `during` = the step's work in progress."""

    name: str
    mode: str
    task: str  # the task whose process dies (or that is running when the server fails)
    step: str  # the ledger step where the hook fires
    hook: str
    part: int
    fault: str  # kill9 | stop:<svc> | restart:<svc>
    recovery: str  # resume (clear the task and downstream) | unfreeze (scripts/bm unfreeze, then a new run)
    customers: int = 300


PROCESS_CASES = [
    Case("kill9_offline_disable_writes", "offline", "begin", "disable_writes", "after", -1, "kill9", "unfreeze"),
    Case("kill9_offline_export", "offline", "export", "export", "after", 1, "kill9", "resume"),
    Case("kill9_offline_transform", "offline", "transform", "transform", "after", 1, "kill9", "resume"),
    Case("kill9_offline_load", "offline", "load", "load", "during", 1, "kill9", "resume"),
    Case("kill9_offline_compare", "offline", "compare", "compare", "after", 1, "kill9", "resume"),
    Case("kill9_offline_enable_writes", "offline", "cutover", "enable_writes", "after", -1, "kill9", "resume"),
    Case("kill9_online_catch_up", "online", "catch_up", "catch_up", "after", 1, "kill9", "resume"),
    Case("kill9_online_cutover_frozen", "online", "cutover", "disable_writes", "after", -1, "kill9", "resume"),
    Case("kill9_online_cutover_frozen_unfreeze", "online", "cutover", "disable_writes", "after", -1, "kill9",
         "unfreeze"),
]
SERVER_CASES = [
    Case("cassandra_stop_mid_load", "offline", "load", "load", "during", 1, "stop:cassandra", "resume"),
    Case("mysql_restart_mid_export", "offline", "export", "export", "during", 1, "restart:mysql", "resume"),
    Case("s3_stop_mid_export", "offline", "export", "export", "during", 1, "stop:s3", "resume"),
]


@dataclass
class Outcome:
    case: str
    runs: int = 1
    outcome: str = ""  # state right after the fault: cut_over | writable | frozen (+ how shown)
    recovery: str = ""
    final: str = ""
    lost: int | None = None
    duplicated: int | None = None
    altered: int | None = None
    extra: int | None = None
    money_match: bool | None = None
    recover_s: float | None = None
    ok: bool = False
    detail: str = ""
    extra_figures: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ environment
def _sh(args: list[str], env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=env or os.environ.copy(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def stack(verb: str, service: str) -> float:
    """`scripts/stack stop|start SERVICE` of this checkout's stack; returns its seconds."""
    t0 = time.monotonic()
    out = _sh([str(ROOT / "scripts" / "stack"), verb, service], timeout=400)
    if out.returncode:
        raise RuntimeError(f"scripts/stack {verb} {service} failed: {out.stderr[-800:]}")
    return time.monotonic() - t0


@contextmanager
def namespace(tag: str, keep: bool = False) -> Iterator[Config]:
    """A fresh namespace (database, keyspace, S3 prefix) for one case; dropped afterwards."""
    from billing_migration import ops
    from billing_migration.config import load_config
    from billing_migration.stores import bootstrap

    ns = f"f{tag[:14]}{os.getpid() % 10000}".lower()
    old = os.environ.get("BM_NAMESPACE")
    os.environ["BM_NAMESPACE"] = ns
    try:
        cfg = load_config()
        bootstrap.ensure_all(cfg)
        yield cfg
    finally:
        try:
            if not keep:
                ops.drop_namespace(ns)
        except Exception as exc:  # a server left down by a failed case: say so, go on
            log.warning("could not drop namespace %s: %s", ns, exc)
        if old is None:
            os.environ.pop("BM_NAMESPACE", None)
        else:
            os.environ["BM_NAMESPACE"] = old


@contextmanager
def case_namespace(tag: str, keep: bool, cfg: Config | None) -> Iterator[Config]:
    """The given config (a pytest session's namespace), else a fresh namespace of its own."""
    if cfg is not None:
        yield cfg
        return
    with namespace(tag, keep) as fresh:
        yield fresh


def seed(cfg: Config, customers: int, seed_no: int = 7) -> None:
    from billing_migration.country import load
    from billing_migration.devtools import generator
    from billing_migration.stores import write_gate

    write_gate.reset_routing(cfg, "faults", "fresh case")
    load.delete_country(cfg, COUNTRY)  # both stores start clean (a shared namespace may hold earlier rows)
    generator.seed(cfg, customers, seed=seed_no, countries={COUNTRY: 1.0})


# ------------------------------------------------------------------------------------------ the task runner
def _params(cfg: Config, mode: str, customers: int):
    from billing_migration.country import pipeline

    return pipeline.validate_params(cfg, COUNTRY, {"country": COUNTRY, "mode": mode, "parallelism": 1,
                                                   "chunk_customers": max(100, customers // 3)})


def _install_hook(spec: dict[str, Any]) -> None:
    """In the child: at the hook point write the marker; `after` then waits to be killed."""
    from billing_migration.stores import ledger

    target, marker, hook = (spec["step"], spec["part"]), Path(spec["marker"]), spec["hook"]
    real_start, real_finish = ledger.start, ledger.finish

    def start(cfg, country, run_id, name, part=-1, **kw):
        real_start(cfg, country, run_id, name, part=part, **kw)
        if hook == "during" and (name, part) == target:
            marker.write_text(str(os.getpid()))

    def finish(cfg, country, run_id, name, part=-1, **kw):
        if hook == "after" and (name, part) == target:
            marker.write_text(str(os.getpid()))
            time.sleep(3600)  # the parent kills this process now
        real_finish(cfg, country, run_id, name, part=part, **kw)

    ledger.start, ledger.finish = start, finish


def child_main(spec: dict[str, Any]) -> int:
    """Run the DAG's tasks from `spec['from']` on, then its teardown and report, as the scheduler would."""
    from billing_migration.config import load_config
    from billing_migration.country import pipeline
    from billing_migration.online import stages

    cfg = load_config()
    p = _params(cfg, spec["mode"], spec["customers"])
    run_id, lanes_file = spec["run_id"], Path(spec["lanes"])
    if spec.get("hook"):
        _install_hook(spec)
    states: dict[str, str] = {"validate_params": "success", "check_routing": "success"}
    calls: dict[str, Callable[[], Any]] = {
        "begin": lambda: stages.begin(cfg, p, run_id),
        "plan": lambda: lanes_file.write_text(json.dumps([ln.as_dict() for ln in pipeline.plan(cfg, p, run_id)])),
        "export": lambda: [pipeline.export_lane(cfg, p, run_id, ln) for ln in _lanes(lanes_file)],
        "transform": lambda: [pipeline.transform_lane(cfg, p, run_id, ln) for ln in _lanes(lanes_file)],
        "error_budget": lambda: pipeline.check_error_budget(cfg, p, run_id),
        "load": lambda: [pipeline.load_lane(cfg, p, run_id, ln) for ln in _lanes(lanes_file)],
        "compare": lambda: [pipeline.compare_lane(cfg, p, run_id, ln) for ln in _lanes(lanes_file)],
        "catch_up": lambda: stages.catch_up(cfg, p, run_id),
        "cutover": lambda: stages.finish(cfg, p, run_id),
    }
    if spec["from"] == "begin":
        pipeline.check_routing(cfg, COUNTRY, run_id)
    rc = 0
    for name in TASKS[TASKS.index(spec["from"]):]:
        try:
            calls[name]()
            states[DAG_TASK.get(name, name)] = "success"
        except Exception as exc:
            log.error("task %s failed: %s: %s", name, type(exc).__name__, exc)
            states[DAG_TASK.get(name, name)] = "failed"
            rc = 1
            break
    # The teardown, the replay of writes queued while frozen and the report run whatever happened (all_done).
    for name in ("release_freeze", "replay_writes", "report"):
        try:
            if name == "release_freeze":
                pipeline.release_freeze(cfg, COUNTRY, run_id)
            elif name == "replay_writes":
                from billing_migration.app import replay

                replay.after_migration(cfg, COUNTRY, run_id)
            else:
                pipeline.final_report(cfg, COUNTRY, run_id, states)
            states[name] = "success"
        except Exception as exc:
            log.error("%s: %s: %s", name, type(exc).__name__, exc)
            rc = 1
    return rc


def _lanes(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())


@dataclass
class Run:
    """One migration run driven through child processes (one per attempt)."""

    cfg: Config
    mode: str
    customers: int
    run_id: str
    workdir: Path
    attempts: int = 0
    in_process: bool = False  # recovery attempts in this process (the CI subset: no process start-up)

    def spawn(self, start: str, case: Case | None = None) -> tuple[subprocess.Popen, Path]:
        self.attempts += 1
        marker = self.workdir / f"{self.run_id}.{self.attempts}.marker"
        spec = {"run_id": self.run_id, "mode": self.mode, "customers": self.customers, "from": start,
                "lanes": str(self.workdir / f"{self.run_id}.lanes.json"), "marker": str(marker)}
        if case is not None:
            spec.update(step=case.step, part=case.part, hook=case.hook)
        logf = open(self.workdir / f"{self.run_id}.{self.attempts}.log", "w")  # noqa: SIM115 - the child's
        proc = subprocess.Popen([sys.executable, "-m", "billing_migration.devtools.faults", "--child",
                                 json.dumps(spec)], cwd=ROOT, env=os.environ.copy(), stdout=logf,
                                stderr=subprocess.STDOUT)
        return proc, marker

    def run(self, start: str = "begin", timeout: int = 600) -> int:
        if self.in_process:
            self.attempts += 1
            return child_main({"run_id": self.run_id, "mode": self.mode, "customers": self.customers,
                               "from": start, "lanes": str(self.workdir / f"{self.run_id}.lanes.json")})
        proc, _ = self.spawn(start)
        return proc.wait(timeout)


def wait_marker(proc: subprocess.Popen, marker: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"the task process exited ({proc.returncode}) before the fault point")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the fault point was not reached in time")
        time.sleep(0.02)


def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)


# ------------------------------------------------------------------------------------------ independent check
_ENTITY = {"subscriptions": ("subscription", "subscription_id", "status", None, None),
           "plan_changes": ("plan_change", "change_id", "to_plan_id", None, None),
           "invoices": ("invoice", "invoice_id", "status", "amount", "tax"),
           "payments": ("payment", "payment_id", "status", "amount", None),
           "balance_transactions": ("balance_txn", "txn_id", "kind", "amount", None)}
_CURRENCY = {"invoices", "payments", "balance_transactions"}


def _ms(value: Any) -> int | None:
    if value is None:
        return None
    return int(value.replace(tzinfo=None).timestamp() * 1000) if hasattr(value, "timestamp") else int(value)


def mysql_side(cfg: Config) -> dict[tuple[str, int], tuple]:
    """(entity_type, id) -> (customer_id, field, money1, money2, currency, updated_at ms) read by our own SQL;
    customers as ('customer', id) -> (country, email, status, updated_at ms)."""
    from billing_migration.stores import connections

    out: dict[tuple[str, int], tuple] = {}
    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT customer_id, country, email, status, updated_at FROM customers WHERE country = %s",
                    (COUNTRY,))
        for cid, cc, email, status, upd in cur.fetchall():
            out[("customer", int(cid))] = (cc, email, status, _ms(upd))
        for table, (etype, key, fld, m1, m2) in _ENTITY.items():
            cur.execute(f"SELECT x.{key}, x.customer_id, x.{fld}, {('x.' + m1) if m1 else 'NULL'}, "
                        f"{('x.' + m2) if m2 else 'NULL'}, {'x.currency' if table in _CURRENCY else 'NULL'}, "
                        f"x.updated_at FROM {table} x JOIN customers c USING (customer_id) WHERE c.country = %s",
                        (COUNTRY,))
            for k, cid, f, a, b, cur_, upd in cur.fetchall():
                out[(etype, int(k))] = (int(cid), str(f), a, b, cur_, _ms(upd))
    return out


def cassandra_side(cfg: Config) -> tuple[dict[tuple[str, int], tuple], int]:
    """The same tuples read by our own CQL (a full scan of the namespace's keyspace), and the number of
    duplicated keys (one entity id under two customers)."""
    from billing_migration.stores import connections

    fields = {etype: fld for etype, _, fld, _, _ in _ENTITY.values()}
    money = {etype: (m1, m2) for etype, _, _, m1, m2 in _ENTITY.values()}
    out: dict[tuple[str, int], tuple] = {}
    dup = 0
    cols = sorted({f for f in fields.values()} | {"amount", "tax", "kind"})
    with connections.cassandra_session(cfg) as s:
        rows = s.execute(f"SELECT customer_id, entity_type, entity_id, country, email, customer_status, "
                         f"customer_updated_at, currency, updated_at, {', '.join(cols)} FROM customer_billing")
        for r in rows:
            d = r._asdict()
            if r.country == COUNTRY:
                out[("customer", int(r.customer_id))] = (r.country, r.email, r.customer_status,
                                                         _ms(r.customer_updated_at))
            if r.entity_type is None:
                continue
            k = (r.entity_type, int(r.entity_id))
            m1, m2 = money[r.entity_type]
            val = (int(r.customer_id), str(d[fields[r.entity_type]]), d[m1] if m1 else None,
                   d[m2] if m2 else None, r.currency, _ms(r.updated_at))
            if k in out:
                dup += 1
            out[k] = val
    return out, dup


def money_per_currency(rows: dict[tuple[str, int], tuple]) -> dict[tuple[str, str], tuple[int, Decimal]]:
    """(entity_type, currency) -> (rows, sum of the money columns)."""
    out: dict[tuple[str, str], tuple[int, Decimal]] = {}
    for (etype, _), v in rows.items():
        if etype == "customer":
            continue
        n, total = out.get((etype, v[4] or ""), (0, Decimal(0)))
        out[(etype, v[4] or "")] = (n + 1, total + (v[2] or 0) + (v[3] or 0))
    return out


def verify(cfg: Config) -> dict[str, Any]:
    """Lost / duplicated / altered / extra rows between the stores, and counts and sums per currency."""
    m = mysql_side(cfg)
    c, dup = cassandra_side(cfg)

    def same(a: tuple, b: tuple) -> bool:
        return all((x == y) if not isinstance(x, Decimal | int) or x is None or y is None
                   else Decimal(x) == Decimal(y) for x, y in zip(a, b, strict=True))

    lost = [k for k in m if k not in c]
    extra = [k for k in c if k not in m]
    altered = [k for k in m if k in c and not same(m[k], c[k])]
    mm, cm = money_per_currency(m), money_per_currency(c)
    return {"mysql_rows": len(m), "cassandra_rows": len(c), "lost": len(lost), "duplicated": dup,
            "altered": len(altered), "extra": len(extra), "money_match": mm == cm,
            "examples": {"lost": lost[:3], "altered": altered[:3], "extra": extra[:3]},
            "currencies": sorted({cur for _, cur in mm})}


# ------------------------------------------------------------------------------------------ state and recovery
def gate_state(cfg: Config) -> str:
    from billing_migration.stores import write_gate

    st = write_gate.status(cfg, COUNTRY)
    return "cut_over" if st.cut_over else ("frozen" if st.writes_frozen else "writable")


def bm(*args: str, in_process: bool = False) -> subprocess.CompletedProcess:
    """`scripts/bm ARGS`, or its `main()` in this process (same code and output, no start-up)."""
    if not in_process:
        return _sh([str(ROOT / "scripts" / "bm"), *args], timeout=120)
    import contextlib
    import io

    from billing_migration import ops

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = ops.main(list(args))
    return subprocess.CompletedProcess(["scripts/bm", *args], rc, out.getvalue(), err.getvalue())


def frozen_message_ok(out: str) -> bool:
    """`scripts/bm status CC` of a country frozen by a dead run says so and how to resume or release it."""
    return ("not running" in out or "not in this Airflow" in out) and f"scripts/bm unfreeze {COUNTRY}" in out \
        and "resume" in out


def app_write_ok(cfg: Config) -> bool:
    """A legacy-application write to the country goes through (it is writable on its old store)."""
    from billing_migration.stores import connections

    with connections.mysql_conn("mysql_app", cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT customer_id FROM customers WHERE country=%s ORDER BY customer_id LIMIT 1", (COUNTRY,))
        cid = cur.fetchone()[0]
        try:
            cur.execute("UPDATE customers SET updated_at = UTC_TIMESTAMP(3) WHERE customer_id = %s", (cid,))
            conn.commit()
            return True
        except Exception:
            conn.rollback()
            return False


# ------------------------------------------------------------------------------------------ one case
def _inject(case: Case, proc: subprocess.Popen) -> str:
    """The fault itself; returns what happened to the task process."""
    kind, _, svc = case.fault.partition(":")
    if kind == "kill9":
        kill9(proc)
        return "killed -9"
    stack("stop", svc)
    if kind == "restart":
        stack("start", svc)
    try:
        rc = proc.wait(120)
        return f"task process exited {rc}"
    except subprocess.TimeoutExpired:  # a task hung on a dead server: what a lost worker looks like
        kill9(proc)
        return "task process hung; killed -9"


def _after_fault(cfg: Config, out: Outcome, in_process: bool = False) -> str:
    """State right after the fault: cut over, writable on legacy, or frozen with the way out printed."""
    state = gate_state(cfg)
    if state == "frozen":
        shown = bm("status", COUNTRY, in_process=in_process)
        if shown.returncode or not frozen_message_ok(shown.stdout):
            out.detail += f" | bm status unclear: {shown.stdout[-600:]} {shown.stderr[-300:]}"
            return "frozen, NO clear recovery message"
        return "frozen by a dead run; `scripts/bm status` names it and prints resume / unfreeze"
    if state == "writable":
        return "writable on legacy" + (" (app write ok)" if app_write_ok(cfg) else " (APP WRITE REFUSED)")
    return "cut over"


def _recover(cfg: Config, case: Case, run: Run, out: Outcome) -> int:
    """The documented recovery for the state the fault left; returns the last attempt's exit code.

    A resumed task may itself give up and release the country (the online cut-over whose freeze budget the
    dead attempt already spent): then, as its message says, a new run."""
    state = gate_state(cfg)
    steps = []
    if state == "frozen" and case.recovery == "unfreeze":
        u = bm("unfreeze", COUNTRY, "--reason", f"faults: {case.name}", in_process=run.in_process)
        steps.append("scripts/bm unfreeze")
        if u.returncode or not app_write_ok(cfg):
            out.detail += f" | unfreeze failed: {u.stdout} {u.stderr}"
            out.recovery = steps[0] + " (FAILED)"
            return 1
        state = gate_state(cfg)
    rc = 1
    if state in ("frozen", "cut_over"):
        steps.append(f"resume (clear `{case.task}` + downstream)")
        rc = run.run(case.task)
        state = gate_state(cfg)
        if rc and state == "writable":
            steps[-1] += f" → {_last_error(run)}"
    if state == "writable":
        steps.append("a new run")
        run.run_id += "_rerun"
        rc = run.run("begin")
    out.recovery = ", then ".join(steps)
    return rc


def _last_error(run: Run) -> str:
    """The reason the last attempt gave up, short (from its log)."""
    log_file = run.workdir / f"{run.run_id}.{run.attempts}.log"
    for line in reversed(log_file.read_text().splitlines() if log_file.exists() else []):
        if "task " in line and " failed: " in line:
            reason = line.split(" failed: ", 1)[1].split(" [", 1)[0]
            return reason.split(";")[0][:90] + "; writable on legacy"
    return "failed; writable on legacy"


def run_case(case: Case, keep: bool = False, given: Config | None = None) -> Outcome:
    from billing_migration.devtools.appwriter import AppWriter

    out = Outcome(case.name)
    with case_namespace("".join(w[:3] for w in case.name.split("_")), keep, given) as cfg:
        seed(cfg, case.customers)
        workdir = WORK / cfg.namespace
        workdir.mkdir(parents=True, exist_ok=True)
        run = Run(cfg, case.mode, case.customers, f"faults__{case.name}_{time.time_ns()}", workdir,
                  in_process=given is not None)
        writer = AppWriter(cfg, {COUNTRY: 1.0}, rate_per_s=20, seed=11)
        writer.start()
        try:
            proc, marker = run.spawn("begin", case)
            wait_marker(proc, marker)
            t0 = time.monotonic()
            out.detail = _inject(case, proc)
            if case.fault.startswith("stop:"):
                out.extra_figures["service_down_s"] = round(time.monotonic() - t0, 1)
                stack("start", case.fault.split(":")[1])
            out.outcome = _after_fault(cfg, out, run.in_process)
            rc = _recover(cfg, case, run, out)
            out.recover_s = round(time.monotonic() - t0, 1)
        finally:
            writer.stop()
        out.runs = run.attempts
        out.final = gate_state(cfg)
        if out.final == "cut_over":  # writes acknowledged on Cassandra reach legacy through the reverse sync
            from billing_migration.app import replay

            out.extra_figures["reverse_synced"] = replay.reverse_sync(cfg, COUNTRY).get("applied", 0)
        _check(cfg, out, rc)
        out.extra_figures["app_writes"] = {"acked": len(writer.acked), "refused": len(writer.refused),
                                           "errors": len(writer.errors)}
    return out


def _check(cfg: Config, out: Outcome, rc: int) -> None:
    v = verify(cfg)
    out.lost, out.duplicated, out.altered, out.extra = v["lost"], v["duplicated"], v["altered"], v["extra"]
    out.money_match = v["money_match"]
    out.extra_figures.update(rows=v["mysql_rows"], currencies=v["currencies"])
    out.ok = (rc == 0 and out.final == "cut_over" and "NO clear" not in out.outcome
              and "REFUSED" not in out.outcome and not (v["lost"] or v["duplicated"] or v["altered"] or v["extra"])
              and v["money_match"])
    if not out.ok:
        out.detail += f" | rc={rc} final={out.final} examples={v['examples']}"


# ------------------------------------------------------------------------------------------ the nightly
NIGHT, NIGHT2 = "2026-11-20", "2026-11-21"


def nightly(cfg: Config, day: str = NIGHT, splits: int = 2) -> dict[str, Any]:
    """One night's snapshots and reconciliation of the country, through the nightly package functions."""
    from billing_migration.nightly import reconcile, snapshot

    night = snapshot.plan_night(cfg, day, [COUNTRY], splits, reuse=False)
    for sp in night["splits"]:
        snapshot.snapshot_cassandra_split(cfg, day, sp, night["scan_countries"])
    for r in night["reconcile"]:
        snapshot.snapshot_mysql(cfg, day, r["country"])
        snapshot.snapshot_cassandra_plans(cfg, day, r["country"])
    results = [reconcile.reconcile_country(cfg, day, snapshot.Routing.from_dict(r), taken_at=night["taken_at"])
               for r in night["reconcile"]]
    return {"results": results, "ok": all(r["ok"] for r in results) and bool(results)}


def _nightly_child(spec: dict[str, Any]) -> int:
    """The nightly's tasks in a child; the hook pauses before the MySQL snapshot (the Cassandra scan is done)."""
    from billing_migration.config import load_config
    from billing_migration.nightly import snapshot

    real = snapshot.snapshot_mysql

    def paused(*a, **kw):
        Path(spec["marker"]).write_text(str(os.getpid()))
        time.sleep(float(spec.get("pause_s", 3)))
        return real(*a, **kw)

    if spec.get("hook"):
        snapshot.snapshot_mysql = paused
    try:
        return 0 if nightly(load_config())["ok"] else 1
    except Exception as exc:
        log.error("nightly failed: %s: %s", type(exc).__name__, exc)
        return 1


def run_snapshot_case(keep: bool = False) -> Outcome:
    """The S3 gateway stopped mid-snapshot (Cassandra scanned, MySQL snapshot uploading); rerun the night."""
    out = Outcome("s3_stop_mid_snapshot")
    with namespace("s3snap", keep) as cfg:
        seed(cfg, 300)
        workdir = WORK / cfg.namespace
        workdir.mkdir(parents=True, exist_ok=True)
        run = Run(cfg, "offline", 300, f"faults__snap_{time.time_ns()}", workdir)
        rc = run.run("begin")
        before = verify(cfg)
        marker = workdir / "night.marker"
        spec = {"nightly": True, "hook": True, "marker": str(marker), "pause_s": 4}
        logf = open(workdir / "night.1.log", "w")  # noqa: SIM115 - the child's log
        proc = subprocess.Popen([sys.executable, "-m", "billing_migration.devtools.faults", "--child",
                                 json.dumps(spec)], cwd=ROOT, env=os.environ.copy(), stdout=logf,
                                stderr=subprocess.STDOUT)
        wait_marker(proc, marker)
        t0 = time.monotonic()
        stack("stop", "s3")
        night_rc = proc.wait(300)
        out.detail = f"nightly exited {night_rc} with S3 down"
        stack("start", "s3")
        out.outcome = f"night failed loudly (exit {night_rc}); country {gate_state(cfg)}, data untouched"
        again = nightly(cfg)
        out.recovery = "rerun the night (nightly_billing: clear the failed tasks)"
        out.recover_s = round(time.monotonic() - t0, 1)
        out.runs, out.final = 2, gate_state(cfg)
        _check(cfg, out, 0 if rc == 0 and again["ok"] and night_rc != 0 else 1)
        out.ok = out.ok and before["lost"] == 0 and verify(cfg) == before
    return out


# ------------------------------------------------------------------------------------------ drift matrix
Snaps = dict[str, dict[str, Any]]  # store -> table -> pa.Table
DRIFT_TABLES = ("subscriptions", "plan_changes", "invoices", "payments", "balance_transactions")
MONEY_TABLES = ("invoices", "payments", "balance_transactions")


def _pick(rng: random.Random, snaps: Snaps, tables: tuple[str, ...]) -> tuple[str, list[dict], int]:
    table = rng.choice([t for t in tables if snaps["cassandra"][t].num_rows])
    rows = snaps["cassandra"][table].to_pylist()
    return table, rows, rng.randrange(len(rows))


def _put(snaps: Snaps, table: str, rows: list[dict]) -> Snaps:
    import pyarrow as pa

    sch = snaps["cassandra"][table].schema
    return {"mysql": snaps["mysql"], "cassandra": {**snaps["cassandra"], table: pa.Table.from_pylist(rows, sch)}}


def _drift_money_cent(rng, snaps):
    table, rows, i = _pick(rng, snaps, MONEY_TABLES)
    rows[i]["amount"] += Decimal("0.01") * rng.choice((1, -1))
    return _put(snaps, table, rows), rows[i]["customer_id"]


def _drift_missing_row(rng, snaps):
    table, rows, i = _pick(rng, snaps, DRIFT_TABLES)
    gone = rows.pop(i)
    return _put(snaps, table, rows), gone["customer_id"]


def _drift_extra_row(rng, snaps):
    from billing_migration.stores import schema

    table, rows, i = _pick(rng, snaps, DRIFT_TABLES)
    key = schema.TABLES_BY_NAME[table].key
    rows.append({**rows[i], key: max(r[key] for r in rows) + rng.randint(1, 1000)})
    return _put(snaps, table, rows), rows[i]["customer_id"]


def _drift_static_field(rng, snaps):
    _, rows, i = _pick(rng, snaps, ("customers",))
    field_ = rng.choice(("email", "full_name", "status", "billing_day"))
    v = rows[i][field_]
    change = {"email": lambda: f"x{v}", "full_name": lambda: f"{v} Jr", "billing_day": lambda: v % 28 + 1,
              "status": lambda: "cancelled" if v != "cancelled" else "active"}
    rows[i][field_] = change[field_]()
    return _put(snaps, "customers", rows), rows[i]["customer_id"]


def _drift_timestamp_1ms(rng, snaps):
    import datetime as dt

    table, rows, i = _pick(rng, snaps, DRIFT_TABLES)
    col = rng.choice([c for c, v in rows[i].items() if isinstance(v, dt.datetime)])
    rows[i][col] += dt.timedelta(milliseconds=rng.choice((1, -1)))
    return _put(snaps, table, rows), rows[i]["customer_id"]


def _drift_wrong_currency(rng, snaps):
    table, rows, i = _pick(rng, snaps, MONEY_TABLES)
    rows[i]["currency"] = rng.choice([c for c in ("USD", "EUR", "GBP", "JPY") if c != rows[i]["currency"]])
    return _put(snaps, table, rows), rows[i]["customer_id"]


def _drift_moved_customer(rng, snaps):
    table, rows, i = _pick(rng, snaps, DRIFT_TABLES)
    was = rows[i]["customer_id"]
    others = [r["customer_id"] for r in snaps["cassandra"]["customers"].to_pylist() if r["customer_id"] != was]
    rows[i]["customer_id"] = rng.choice(others)
    return _put(snaps, table, rows), was


def _drift_routing_flipped(rng, snaps):
    """Routing says Cassandra serves the country but Cassandra holds none (or only a stray part) of its data."""
    keep = rng.choice(((), ("plans",), ("plans", "subscriptions")))
    empty = {t: (v if t in keep else v.schema.empty_table()) for t, v in snaps["cassandra"].items()}
    return {"mysql": snaps["mysql"], "cassandra": empty}, None


DRIFT_KINDS: dict[str, Callable[[random.Random, Snaps], tuple[Snaps, int | None]]] = {
    "money off by one cent": _drift_money_cent,
    "missing row": _drift_missing_row,
    "extra row": _drift_extra_row,
    "changed static (customer) field": _drift_static_field,
    "timestamp off by 1 ms": _drift_timestamp_1ms,
    "wrong currency": _drift_wrong_currency,
    "row moved to another customer": _drift_moved_customer,
    "routing flipped without data": _drift_routing_flipped,
}


def reconcile_snaps(cfg: Config, snaps: Snaps, routing, client=None) -> tuple[list[str], list[int]]:
    """The nightly reconciliation's checks (package functions) on in-memory snapshots: problems, customers."""
    import datetime as dt

    from billing_migration.nightly import reconcile, snapshot

    counts = {s: {t: snaps[s][t].num_rows for t in snaps[s]} for s in snapshot.STORES}
    records = reconcile.check_records(snaps, routing)
    money = reconcile.check_money(snaps, records.expected)
    problems = (reconcile.check_counts(counts, records) + money.problems + records.problems
                + reconcile.check_expected_state(cfg, client or _s3(cfg), dt.date.fromisoformat(NIGHT), COUNTRY,
                                                 routing, counts, 0.05))
    return problems, sorted({d["customer_id"] for d in records.failing if d["customer_id"] is not None})


def _s3(cfg: Config):
    from billing_migration.stores import s3io

    return s3io.client(cfg)


def load_snaps(cfg: Config, day: str = NIGHT) -> Snaps:
    from billing_migration.nightly import snapshot

    client = _s3(cfg)
    return {s: {t.name: snapshot.read_snapshot(cfg, day, s, COUNTRY, t.name, client)
                for t in snapshot.SNAPSHOT_TABLES} for s in snapshot.STORES}


def settled(snaps: Snaps, cutover_at) -> Snaps:
    """Both snapshots without the rows changed after the cut-over (on either side): Cassandra is the truth
    after it, so a change there is a legitimate write (`post_cutover_change`), never drift; drift is planted
    among the rows both stores have held unchanged since."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.compute as pc

    from billing_migration.stores import schema

    if cutover_at is None:
        return snaps
    cut = pa.scalar(cutover_at.replace(tzinfo=dt.UTC), pa.timestamp("ms", tz="UTC"))
    key = {name: schema.TABLES_BY_NAME[name].key for name in snaps["mysql"]}
    late: dict[str, set[int]] = {name: set() for name in key}
    for tabs in snaps.values():
        for name, t in tabs.items():
            late[name].update(t.filter(pc.fill_null(pc.greater(t["updated_at"], cut), False))[key[name]].to_pylist())
    return {store: {name: t.filter(pc.invert(pc.is_in(t[key[name]], pa.array(sorted(late[name]), pa.int64()))))
                    for name, t in tabs.items()} for store, tabs in snaps.items()}


def drift_trials(cfg: Config, snaps: Snaps, routing, trials: int, seed_no: int = 15) -> dict[str, Any]:
    """Each drift kind `trials` times at random rows, and `trials` clean nights; detection and naming rates."""
    rng = random.Random(seed_no)
    snaps = settled(snaps, routing.cutover_at)
    client = _s3(cfg)
    out: dict[str, Any] = {"kinds": {}, "clean": {}}
    for kind, fn in DRIFT_KINDS.items():
        got = {"trials": 0, "detected": 0, "named": 0, "named_only_it": 0, "misses": []}
        for _ in range(trials):
            drifted, cid = fn(rng, snaps)
            problems, named = reconcile_snaps(cfg, drifted, routing, client)
            got["trials"] += 1
            hit = bool(problems)
            right = (cid in named) if cid is not None else any(COUNTRY in p for p in problems)
            got["detected"] += hit
            got["named"] += hit and right
            got["named_only_it"] += hit and (named == [cid] if cid is not None else right)
            if not (hit and right):
                got["misses"].append({"customer": cid, "named": named[:5], "problems": problems[:3]})
        out["kinds"][kind] = got
    alarms = 0
    for _ in range(trials):
        shuffled = {s: {t: v.take(sorted(range(v.num_rows), key=lambda _i: rng.random())) for t, v in tabs.items()}
                    for s, tabs in snaps.items()}
        alarms += bool(reconcile_snaps(cfg, shuffled, routing, client)[0])
    out["clean"] = {"nights": trials, "alarms": alarms}
    return out


def drift_on(cfg: Config, trials: int) -> Outcome:
    """On a cut-over country: one clean night (package functions), then the drift kinds × trials."""
    from billing_migration.nightly import snapshot

    out = Outcome("drift_matrix")
    if gate_state(cfg) != "cut_over":
        raise RuntimeError(f"the drift matrix needs {COUNTRY} cut over; it is {gate_state(cfg)}")
    night = nightly(cfg)
    snaps = load_snaps(cfg)
    res = drift_trials(cfg, snaps, snapshot.read_routing(cfg)[COUNTRY], trials)
    kinds = res["kinds"]
    total = sum(k["trials"] for k in kinds.values())
    detected = sum(k["detected"] for k in kinds.values())
    named = sum(k["named"] for k in kinds.values())
    out.runs = total + res["clean"]["nights"]
    out.outcome = (f"{detected}/{total} drifts detected ({len(kinds)} kinds), right customer named in {named}; "
                   f"{res['clean']['alarms']} alarms in {res['clean']['nights']} clean nights")
    out.ok = night["ok"] and detected == named == total and res["clean"]["alarms"] == 0
    out.detail = "" if night["ok"] else f"the clean night did not reconcile: {night['results']}"
    out.extra_figures = res
    out.final = gate_state(cfg)
    return out


def run_drift(trials: int = 10, keep: bool = False) -> Outcome:
    """Migrate a country (offline run), then `drift_on`."""
    with namespace("drift", keep) as cfg:
        seed(cfg, 300, seed_no=9)
        workdir = WORK / cfg.namespace
        workdir.mkdir(parents=True, exist_ok=True)
        rc = Run(cfg, "offline", 300, f"faults__drift_{time.time_ns()}", workdir).run("begin")
        out = drift_on(cfg, trials)
        out.ok = out.ok and rc == 0
        return out


# ------------------------------------------------------------------------------------------ security
_DENIED = (1142, 1044, 1227, 1370, 1045, 1143)  # command / database / privilege / routine / column denied


def _denied(cfg: Config, role: str, sql: str) -> bool:
    """True when `role` is refused `sql` (and nothing was changed: rolled back either way)."""
    from billing_migration.stores import connections

    with connections.mysql_conn(role, cfg) as conn, conn.cursor() as cur:
        try:
            cur.execute(sql)
        except Exception as exc:
            conn.rollback()
            if exc.args and exc.args[0] in _DENIED:
                return True
            if exc.args and exc.args[0] == 1644 and "routing" in str(exc):  # the routing guard's SIGNAL
                return True
            raise
        conn.rollback()
        return False


def _allowed(cfg: Config, role: str, sql: str) -> bool:
    from billing_migration.stores import connections

    with connections.mysql_conn(role, cfg) as conn, conn.cursor() as cur:
        try:
            cur.execute(sql)
            cur.fetchall()
            return True
        except Exception:
            return False
        finally:
            conn.rollback()


def role_checks(cfg: Config) -> dict[str, bool]:
    """Each role can do what it needs and nothing more (the real server's answer, not the grant text)."""
    db = cfg.mysql_database
    trig = f"CREATE TRIGGER `{db}`.bm_faults_t BEFORE INSERT ON `{db}`.plans FOR EACH ROW SET @x = 1"
    return {
        "export: reads": _allowed(cfg, "mysql_export", "SELECT COUNT(*) FROM customers"),
        "export: cannot INSERT": _denied(cfg, "mysql_export", "INSERT INTO write_gate_events (country, action, "
                                                              "actor) VALUES ('NZ', 'x', 'x')"),
        "export: cannot UPDATE": _denied(cfg, "mysql_export", "UPDATE customers SET status = status"),
        "export: cannot DELETE": _denied(cfg, "mysql_export", "DELETE FROM plans WHERE plan_id = -1"),
        "export: cannot CREATE": _denied(cfg, "mysql_export", "CREATE TABLE bm_faults_x (a INT)"),
        "cdc: reads the tables": _allowed(cfg, "mysql_cdc", "SELECT COUNT(*) FROM customers"),
        "cdc: reads the binlog position": _allowed(cfg, "mysql_cdc", "SHOW BINLOG STATUS"),
        "cdc: lists the binlogs": _allowed(cfg, "mysql_cdc", "SHOW BINARY LOGS"),
        "cdc: cannot INSERT": _denied(cfg, "mysql_cdc", "INSERT INTO write_gate_events (country, action, actor) "
                                                        "VALUES ('NZ', 'x', 'x')"),
        "cdc: cannot UPDATE routing": _denied(cfg, "mysql_cdc", "UPDATE country_routing SET writes_frozen = 0"),
        "cdc: cannot DELETE": _denied(cfg, "mysql_cdc", "DELETE FROM plans WHERE plan_id = -1"),
        "cdc: cannot CREATE": _denied(cfg, "mysql_cdc", "CREATE TABLE bm_faults_x (a INT)"),
        "cdc: cannot purge binlogs": _denied(cfg, "mysql_cdc", "PURGE BINARY LOGS BEFORE '2000-01-01'"),
        "cdc: cannot SET GLOBAL": _denied(cfg, "mysql_cdc", "SET GLOBAL binlog_format = 'ROW'"),
        "app: writes billing rows": _allowed(cfg, "mysql_app", "UPDATE plans SET name = name WHERE plan_id = -1"),
        "app: cannot UPDATE routing": _denied(cfg, "mysql_app", "UPDATE country_routing SET writes_frozen = 0"),
        "app: cannot INSERT routing": _denied(cfg, "mysql_app", "INSERT INTO country_routing (country) "
                                                                "VALUES ('ZZ')"),
        "app: cannot DELETE routing": _denied(cfg, "mysql_app", "DELETE FROM country_routing"),
        "app: cannot write gate events": _denied(cfg, "mysql_app", "INSERT INTO write_gate_events (country, "
                                                                   "action, actor) VALUES ('NZ', 'x', 'x')"),
        "app: cannot CREATE TRIGGER": _denied(cfg, "mysql_app", trig),
        "app: cannot DROP the gate's trigger": _denied(cfg, "mysql_app", "DROP TRIGGER bm_gate_invoices_bi"),
    }


def secrets(state_dir: Path) -> dict[str, str]:
    """Every password and key of the stack's secrets file (never printed: only names are reported)."""
    out = {}
    for line in (state_dir / "secrets.env").read_text().splitlines():
        name, _, value = line.partition("=")
        if value.strip():
            out[name.strip()] = value.strip()
    return out


def s3_objects(cfg: Config) -> Iterator[tuple[str, bytes]]:
    from billing_migration.stores import s3io

    client = _s3(cfg)
    for key in s3io.list_keys(client, cfg.s3_bucket, cfg.s3_prefix):
        yield key, client.get_object(Bucket=cfg.s3_bucket, Key=key)["Body"].read()


def files_under(*dirs: Path) -> Iterator[tuple[str, bytes]]:
    for d in dirs:
        for p in d.rglob("*") if d.is_dir() else ():
            if p.is_file() and p.stat().st_size < 50_000_000:
                yield str(p), p.read_bytes()


def _report_text(key: str, body: bytes) -> str | None:
    """Reports a person reads: run reports, compare mismatches, nightly reconcile reports and differences."""
    import io

    import pyarrow.parquet as pq

    if not any(s in key for s in ("report.", "/compare/", "/reconcile/")):
        return None
    if key.endswith(".parquet"):
        return pq.read_table(io.BytesIO(body)).to_pandas().to_csv()
    return body.decode("utf-8", "replace")


def pii_values(cfg: Config) -> set[str]:
    from billing_migration.stores import connections

    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT email, full_name FROM customers")
        vals = {v for row in cur.fetchall() for v in row if v and len(v) > 4}
        cur.execute("SELECT payment_token FROM payments WHERE payment_token IS NOT NULL")
        vals |= {r[0] for r in cur.fetchall() if len(r[0]) > 4}
    return vals


def listening_sockets(pidfiles: list[Path]) -> list[dict[str, Any]]:
    """`ss -ltnp` lines of this stack's processes (by pidfile): address and process."""
    pids = {p.read_text().strip() for p in pidfiles if p.exists()}
    out = []
    for line in _sh(["ss", "-ltnpH"]).stdout.splitlines():
        owners = set(__import__("re").findall(r"pid=(\d+)", line))
        if owners & pids:
            out.append({"local": line.split()[3], "pids": sorted(owners & pids)})
    return out


def _pii_drift(cfg: Config) -> int:
    """Change one customer's email and name in Cassandra: the night must report it, masked."""
    from billing_migration.stores import connections

    with connections.cassandra_session(cfg) as s:
        cid = next(iter(s.execute("SELECT customer_id FROM customers_by_country WHERE country=%s AND bucket=%s "
                                  "LIMIT 1", (COUNTRY, 1)))).customer_id
        s.execute("UPDATE customer_billing SET email=%s, full_name=%s WHERE customer_id=%s",
                  ("drifted.person@example.org", "Drifted Person", cid))
    return int(cid)


def security_on(cfg: Config, workdir: Path) -> Outcome:
    """After a full run of the country: a PII drift and its night, then roles, secrets, masking, binds."""
    out = Outcome("security")
    state = Path(os.environ.get("BM_STATE_DIR") or ROOT / ".state")
    cut_over = gate_state(cfg) == "cut_over"
    drifted = _pii_drift(cfg)
    night = nightly(cfg, NIGHT2)
    named = [c for r in night["results"] for c in r["customers"]]
    checks = role_checks(cfg)
    secret = secrets(state)
    pii = pii_values(cfg) | {"drifted.person@example.org", "Drifted Person"}
    leaks, pii_leaks, reports = [], [], 0
    sources = [*s3_objects(cfg), *files_under(workdir, Path(os.environ.get("AIRFLOW_HOME", "/nonexistent")) / "logs")]
    for where, body in sources:
        leaks += [f"{name} in {where}" for name, v in secret.items() if v.encode() in body]
        text = _report_text(where, body)
        if text is not None:
            reports += 1
            pii_leaks += [f"personal data in {where}" for v in pii if v in text][:3]
    socks = listening_sockets([state / "mysql" / "mysqld.pid", state / "cassandra" / "cassandra.pid",
                               state / "seaweedfs" / "weed.pid"])
    public = [s for s in socks if not s["local"].startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:"))]
    checks.update({
        "the country was cut over by a full run": cut_over,
        "the night reports a PII drift, naming the customer": not night["ok"] and drifted in named,
        f"no secret ({len(secret)}) in {len(sources)} task logs / reports / S3 objects": not leaks,
        f"personal data masked in {reports} reports": reports > 0 and not pii_leaks,
        f"{len(socks)} listening sockets of the stack, all on 127.0.0.1": bool(socks) and not public,
        "the Airflow api-server binds 127.0.0.1 ([api] host)": _api_host() == "127.0.0.1",
    })
    failed = [k for k, v in checks.items() if not v]
    out.outcome = f"{len(checks) - len(failed)}/{len(checks)} checks pass"
    out.ok, out.final = not failed, gate_state(cfg)
    out.detail = "; ".join(failed + leaks[:3] + pii_leaks[:3] + [str(p) for p in public[:3]])
    out.extra_figures = {"checks": checks}
    return out


def _api_host() -> str:
    from airflow.configuration import conf

    return conf.get("api", "host")


def run_security(keep: bool = False) -> Outcome:
    """A full online run with the application writing, then `security_on`."""
    from billing_migration.devtools.appwriter import AppWriter

    with namespace("sec", keep) as cfg:
        seed(cfg, 300, seed_no=5)
        workdir = WORK / cfg.namespace
        workdir.mkdir(parents=True, exist_ok=True)
        with AppWriter(cfg, {COUNTRY: 1.0}, rate_per_s=20, seed=4):
            Run(cfg, "online", 300, f"faults__sec_{time.time_ns()}", workdir).run("begin")
        return security_on(cfg, workdir)


def run_fast(cfg: Config | None = None, keep: bool = False, trials: int = 1) -> list[Outcome]:
    """The CI subset, chained on one country: kill -9 while frozen in the online cut-over and its recovery,
    then the drift matrix (`trials` per kind) on its snapshots, then the security checks."""
    case = replace(next(c for c in PROCESS_CASES if c.name == FAST_CASE), customers=200)  # 2 chunks
    with case_namespace("fast", keep, cfg) as c:
        out = [_timed(FAST_CASE, lambda: run_case(case, keep, c))]
        out.append(_timed("drift_matrix", lambda: drift_on(c, trials)))
        out.append(_timed("security", lambda: security_on(c, WORK / c.namespace)))
    return out


# ------------------------------------------------------------------------------------------ CLI
FAST_CASE = "kill9_offline_load"
ALL = [c.name for c in PROCESS_CASES + SERVER_CASES] + ["s3_stop_mid_snapshot", "drift_matrix", "security"]


def run_named(name: str, trials: int, keep: bool) -> Outcome:
    by_name = {c.name: c for c in PROCESS_CASES + SERVER_CASES}
    if name not in by_name and name not in ALL:
        raise SystemExit(f"unknown case {name!r}; known: {', '.join(ALL)}")
    if name in by_name:
        return _timed(name, lambda: run_case(by_name[name], keep))
    return _timed(name, {"s3_stop_mid_snapshot": lambda: run_snapshot_case(keep),
                         "drift_matrix": lambda: run_drift(trials, keep),
                         "security": lambda: run_security(keep)}[name])


def _timed(name: str, fn: Callable[[], Outcome]) -> Outcome:
    """Run one case; an exception is a failed row of the matrix, not the end of the matrix."""
    t0 = time.monotonic()
    log.info("case %s ...", name)
    try:
        out = fn()
    except Exception as exc:
        log.exception("case %s failed", name)
        out = Outcome(name, outcome="ERROR", detail=f"{type(exc).__name__}: {exc}"[:500])
    out.extra_figures["case_s"] = round(time.monotonic() - t0, 1)
    log.info("case %s: %s in %.0f s: %s %s", name, "pass" if out.ok else "FAIL", out.extra_figures["case_s"],
             out.outcome, out.detail)
    return out


def render(results: list[Outcome], command: str) -> str:
    lines = [f"Reproduce: `{command}`", "",
             "| case | runs | outcome after the fault | recovery | final | lost / dup / altered / extra | "
             "money per currency | time to recover (s) | pass |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rows = "-" if r.lost is None else f"{r.lost} / {r.duplicated} / {r.altered} / {r.extra}"
        money = "-" if r.money_match is None else ("match" if r.money_match else "DIFFER")
        lines.append(f"| {r.case} | {r.runs} | {r.outcome} | {r.recovery or '-'} | {r.final or '-'} | {rows} | "
                     f"{money} | {r.recover_s if r.recover_s is not None else '-'} | {'yes' if r.ok else 'NO'} |")
    return "\n".join(lines)


def render_drift(res: dict[str, Any]) -> str:
    """The drift matrix per kind: trials, detected, right customer named, only that customer named."""
    lines = ["| drift kind | trials | detected | right customer named | only that customer named |",
             "|---|---|---|---|---|"]
    for kind, k in res["kinds"].items():
        lines.append(f"| {kind} | {k['trials']} | {k['detected']} | {k['named']} | {k['named_only_it']} |")
    lines.append(f"| clean nights (no drift) | {res['clean']['nights']} | {res['clean']['alarms']} alarms | - | - |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/faults", description=__doc__.split("\n\n")[0])
    ap.add_argument("--fast", action="store_true", help=f"the CI subset: {FAST_CASE}, then the drift matrix "
                    "and the security checks on the same country")
    ap.add_argument("--case", action="append", default=[], help=f"one case (repeatable): {', '.join(ALL)}")
    ap.add_argument("--trials", type=int, default=None, help="drift trials per kind (default 10, 1 with --fast)")
    ap.add_argument("--json", help="write the results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep each case's namespace (for a post-mortem)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        return _nightly_child(spec) if spec.get("nightly") else child_main(spec)
    trials = args.trials or (1 if args.fast else 10)
    results = run_fast(None, args.keep, trials) if args.fast else []
    for name in [] if args.fast else (args.case or ALL):
        results.append(run_named(name, trials, args.keep))
    command = "scripts/faults" + (" --fast" if args.fast else "") + "".join(f" --case {c}" for c in args.case)
    print(render(results, command))
    for r in results:
        if r.case == "drift_matrix" and "kinds" in r.extra_figures:
            print("\n" + render_drift(r.extra_figures))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2, default=str))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("BM_LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(message)s")
    sys.exit(main())
