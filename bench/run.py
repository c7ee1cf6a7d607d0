"""The benchmark: every stage of a country migration on the real stack, beside its peer, in one run.

    scripts/bench                                   # default: countries of 10k and 100k customers, 3 repeats
    .venv/bin/python -m bench.run --sizes 1000000   # 1M on request
    .venv/bin/python -m bench.run --sizes 2000 --repeats 1 --parallel 1,2 --airflow none   # smoke run

Everything runs in its own namespace (BM_NAMESPACE, default `bench`): own MySQL database, Cassandra keyspace
and S3 prefix, dropped at the end unless --keep. Each measured thing runs in a child process (see
bench/measure.py) so peak RSS and CPU are that stage's own. Figures: medians of --repeats runs. Output: a
timestamped JSON under bench/results/, bench/results/scaling.png, and the generated tables in BENCHMARKS.md.
A stage whose module has not landed is recorded as "not available" with the reason, never estimated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pstats
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.measure import ROOT, Sample, StageFailed, run_process, run_workers, summarize

RESULTS = ROOT / "bench" / "results"
# One country per size, so sizes never share rows (all are configured in migration.yaml).
COUNTRY_BY_SIZE = {10_000: "NZ", 100_000: "SE", 1_000_000: "CA"}
SPARE_COUNTRIES = ("CH", "IE", "NL", "MX", "IN")
STAGES = ("export", "transform", "load", "compare", "snapshot", "reconcile")


def log(msg: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def load_stack_env(namespace: str) -> dict[str, str]:
    """The stack's env file (connections as AIRFLOW_CONN_*) plus our namespace, for us and every child."""
    env_file = Path(os.environ.get("BM_STATE_DIR", ROOT / ".state")) / "stack.env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            if line.startswith("export ") and "=" in line:
                key, _, value = line[len("export "):].partition("=")
                os.environ.setdefault(key, shlex.split(value)[0] if value else "")
    os.environ["BM_NAMESPACE"] = namespace
    # This workplace's shells export PYTHONDONTWRITEBYTECODE=1, which makes every process re-compile Airflow
    # from source (~7 s of CPU per process here); production processes have their bytecode cached.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    return dict(os.environ)


# ------------------------------------------------------------------------------------------ machine
def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU, memory, load, and the versions of everything involved."""
    info: dict[str, Any] = {"hostname_hash": hash(platform.node()) & 0xFFFF, "python": sys.version.split()[0],
                            "platform": platform.platform()}
    try:
        cpu = Path("/proc/cpuinfo").read_text()
        models = [ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("model name")]
        info["cpu_model"] = models[0] if models else "unknown"
        info["cpus"] = os.cpu_count()
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["mem_gb"] = round(int(mem) / 1024 / 1024, 1)
        info["loadavg_start"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    pkgs = {}
    for name in ("apache-airflow", "cassandra-driver", "mysqlclient", "connectorx", "pyarrow", "pandas", "boto3",
                 "psutil", "matplotlib"):
        try:
            pkgs[name] = version(name)
        except PackageNotFoundError:
            pkgs[name] = None
    info["packages"] = pkgs
    try:
        from cassandra.cython_deps import HAVE_CYTHON, HAVE_NUMPY

        info["cassandra_driver_cython"] = {"HAVE_CYTHON": HAVE_CYTHON, "HAVE_NUMPY": HAVE_NUMPY}
    except ImportError as exc:
        info["cassandra_driver_cython"] = f"unknown ({exc})"
    return info


def server_versions(cfg) -> dict[str, str]:
    from billing_migration.stores import connections

    out = {}
    with connections.mysql_conn("mysql_export", cfg, database="") as conn, conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        out["mariadb"] = cur.fetchone()[0]
    with connections.cassandra_session(cfg, keyspace=False) as s:
        out["cassandra"] = s.execute("SELECT release_version FROM system.local").one()[0]
    return out


# ------------------------------------------------------------------------------------------ set-up
def setup_namespace(cfg) -> None:
    from billing_migration.stores import bootstrap, connections

    from bench import peers

    bootstrap.ensure_legacy_database(cfg)
    bootstrap.ensure_keyspace(cfg)
    with connections.cassandra_session(cfg, keyspace=False) as s:
        s.execute(peers.peer_table_ddl(cfg.cassandra_keyspace), timeout=60)


def drop_namespace(cfg) -> None:
    """Drop everything this run wrote: the database, the keyspace, the S3 prefix."""
    from billing_migration.stores import connections, s3io

    if not cfg.namespace:
        raise RuntimeError("refusing to drop the un-namespaced installation")
    with connections.mysql_conn("mysql_admin", cfg, database="", autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{cfg.mysql_database}`")
    with connections.cassandra_session(cfg, keyspace=False) as s:
        s.execute(f"DROP KEYSPACE IF EXISTS {cfg.cassandra_keyspace}", timeout=120)
    s3io.delete_prefix(connections.s3_client(cfg), cfg.s3_bucket, cfg.s3_prefix)


def country_has_data(cfg, country: str) -> int:
    from billing_migration.stores import connections

    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM customers WHERE country = %s", (country,))
        return int(cur.fetchone()[0])


def max_customer_id(cfg) -> int:
    from billing_migration.stores import connections

    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT COALESCE(MAX(customer_id), 0) FROM customers")
        return int(cur.fetchone()[0])


def table_bytes(cfg, country: str) -> dict[str, int]:
    """Row counts of the country's rows per table (what export must read)."""
    from billing_migration.stores import connections, schema

    out = {}
    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        for t in schema.CUSTOMER_TABLES:
            if t.name == "customers":
                cur.execute("SELECT COUNT(*) FROM customers WHERE country = %s", (country,))
            else:
                cur.execute(f"SELECT COUNT(*) FROM `{t.name}` t JOIN customers c USING (customer_id) "
                            "WHERE c.country = %s", (country,))
            out[t.name] = int(cur.fetchone()[0])
    return out


# ------------------------------------------------------------------------------------------ measuring
def timeout_for(args: argparse.Namespace, size: int) -> float:
    """Seconds one measured process may take: --timeout, or 1,800 s per 100k customers (at least 1,800 s),
    so a 1M load is not killed midway as it was with a fixed 1,800 s."""
    return args.timeout if args.timeout else 1800.0 * max(1.0, size / 100_000)


class Bench:
    def __init__(self, args: argparse.Namespace, env: dict[str, str], cfg) -> None:
        self.args, self.env, self.cfg = args, env, cfg
        self.avail: dict[str, str | None] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="bm-bench-"))
        self.env["BM_TMP_DIR"] = str(self.tmp)

        self.repeats = args.repeats  # set per size by run_size (large sizes: --large-repeats)
        self.timeout = timeout_for(args, min(args.sizes))  # set per size by run_size
        self.results: dict[str, Any] | None = None  # the run's results, saved after every stage

    def checkpoint(self, size: int, out: dict[str, Any]) -> None:
        """Save what this size has measured so far: a long run (1M) stopped midway keeps its stages."""
        if self.results is not None:
            self.results["sizes"][str(size)] = out
            _save(self.results, self.args)

    def repeat(self, specs_for_rep, repeats: int | None = None) -> list[Sample]:
        out = []
        for i in range(repeats or self.repeats):
            s = run_workers(specs_for_rep(i), self.env, timeout_s=self.timeout)
            log(f"    rep {i + 1}: {s.wall_s:.2f} s, {s.maxrss_mb:.0f} MB, cpu {s.cpu_s:.1f} s, {s.counts}")
            out.append(s)
        return out

    def stage(self, name: str, country: str, run_id: str, chunks: list[dict], procs: int = 1,
              repeats: int | None = None, extra: dict | None = None, work: dict | None = None) -> dict[str, Any]:
        """Measure one stage: chunks dealt round-robin over `procs` processes, `repeats` times."""
        if self.avail.get(name):
            return {"available": False, "reason": self.avail[name]}
        lanes = [chunks[k::procs] for k in range(procs)] if chunks else [[]]
        spec = {"stage": name, "country": country, "run_id": run_id, **(extra or {})}
        try:
            specs = [{**spec, "chunks": lane} for lane in lanes if lane or not chunks]
            samples = self.repeat(lambda _i: specs, repeats)
        except StageFailed as exc:
            log(f"    {name} FAILED: {exc}")
            return {"available": True, "failed": str(exc)[:2000]}
        res = summarize(samples, work)
        res.update(available=True, procs=procs, samples=[s.as_dict() for s in samples])
        return res

    def peer_process(self, argv: list[str], env: dict[str, str], out_path: Path | None = None,
                     before=None, parse_json: bool = False) -> list[Sample]:
        samples = []
        for i in range(self.repeats):
            if before:
                before()
            u = run_process(argv, env=env, timeout_s=self.timeout,
                            stdout_path=str(out_path) if out_path else None)
            if u.returncode != 0:
                raise StageFailed(f"exit {u.returncode}: {u.stderr[-1500:]}")
            counts: dict[str, Any] = {}
            wall = u.wall_s
            if parse_json:
                line = [ln for ln in u.stdout.splitlines() if ln.startswith("{")][-1]
                counts = json.loads(line)
                wall = float(counts.get("seconds", wall))  # the tool's own timer (JVM start-up excluded)
            if out_path:
                counts["bytes"] = out_path.stat().st_size
            s = Sample(wall_s=wall, process_wall_s=u.wall_s, maxrss_mb=u.maxrss_mb, sum_maxrss_mb=u.maxrss_mb,
                       cpu_s=u.cpu_s, counts=counts)
            log(f"    peer rep {i + 1}: {s.wall_s:.2f} s (process {u.wall_s:.2f} s), {s.maxrss_mb:.0f} MB, "
                f"cpu {s.cpu_s:.1f} s")
            samples.append(s)
        return samples


def _chunks(cfg, country: str, chunk_customers: int) -> list[dict[str, Any]]:
    from billing_migration.country import export

    return export.plan_chunks(cfg, country, chunk_customers)


def run_size(b: Bench, size: int, country: str) -> dict[str, Any]:
    """Seed one country of `size` customers and measure every stage and peer on it."""

    from bench import peers

    cfg, args = b.cfg, b.args
    b.repeats = args.repeats if size < args.large_size else args.large_repeats
    b.timeout = timeout_for(args, size)
    # every stage and peer at this size, or the default run's trimmed set above --large-size
    full = size < args.large_size or args.large_stages == "all"
    out: dict[str, Any] = {"customers": size, "country": country, "stages": {}, "peers": {}, "repeats": b.repeats}
    have = country_has_data(cfg, country)
    if have and have != size:
        raise RuntimeError(f"{country} already holds {have} customers in namespace {cfg.namespace}, not {size}; "
                           "drop the namespace (run without --keep) first")
    if not have:
        if b.avail.get("seed"):
            raise RuntimeError(f"cannot seed: {b.avail['seed']}")
        log(f"seed {country}: {size} customers")
        first_id = max_customer_id(cfg) + 1
        seed = b.stage("seed", country, "", [], repeats=1,
                       extra={"customers": size, "first_customer_id": first_id, "replace": first_id == 1})
        if seed.get("failed"):
            raise RuntimeError(f"seeding failed: {seed['failed']}")
        out["seed"] = {k: seed[k] for k in ("wall_s", "maxrss_mb", "cpu_s", "counts")}
    rows_by_table = table_bytes(cfg, country)
    out["legacy_rows"] = rows_by_table
    total_rows = sum(rows_by_table.values())
    chunk_customers = args.chunk_customers or cfg.country(country).chunk_customers
    chunks = _chunks(cfg, country, chunk_customers)
    out["chunks"], out["chunk_customers"] = len(chunks), chunk_customers
    lo, hi = chunks[0]["lo"], chunks[-1]["hi"]
    run_id = f"bench_{country.lower()}"
    st, pe = out["stages"], out["peers"]

    # ---- export and its peers
    log(f"[{country} {size}] peer: mariadb --quick --batch")
    argv, penv = peers.mysql_client_command(cfg, country, lo, hi)
    tsv = b.tmp / f"{country}.tsv"
    try:
        ps = b.peer_process(argv, penv, out_path=tsv)
        tsv_mb = ps[0].counts["bytes"] / 1e6
        pe["mysql_client"] = {**summarize(ps, {"rows": total_rows, "MB": tsv_mb}), "available": True,
                              "tool": peers.client_version(), "what": "mariadb --quick --batch, one query per "
                              "table over the country's whole id range, TSV to a local file",
                              "samples": [s.as_dict() for s in ps]}
    except (StageFailed, OSError) as exc:
        pe["mysql_client"] = {"available": False, "reason": str(exc)[:1500]}
        tsv_mb = None
    tsv.unlink(missing_ok=True)
    pe["into_outfile"] = peers.outfile_status(cfg)
    from billing_migration.country import export as _export

    _export.export_plans(cfg, country, run_id)  # the plan step's catalogue export, which transform reads
    log(f"[{country} {size}] export ({len(chunks)} chunks)")
    work = {"rows": total_rows, **({"MB": tsv_mb} if tsv_mb else {})}
    if "snapshot" in args.export_paths and full:
        log(f"[{country} {size}] export, one consistent snapshot per chunk (online pre-copy: writable country)")
        st["export_snapshot"] = b.stage("export", country, run_id, chunks, work=work,
                                        extra={"kwargs": {"engine": "mysqlclient"}})
    log(f"[{country} {size}] export, pipelined connectorx (offline: frozen country)")
    st["export"] = b.stage("export", country, run_id, chunks, work=work, extra={"kwargs": {"engine": "connectorx"}})
    if st["export"].get("available") and not st["export"].get("failed"):
        pq_mb = st["export"]["counts"].get("parquet_bytes", 0) / 1e6
        st["export"]["parquet_MB"] = pq_mb
        st["export"]["parquet_MB_per_s"] = pq_mb / st["export"]["wall_s"] if st["export"]["wall_s"] else None

    # ---- transform
    log(f"[{country} {size}] transform")
    st["transform"] = (b.stage("transform", country, run_id, chunks, work={"rows": total_rows})
                       if _ok(st["export"]) else _blocked("export", st["export"]))

    b.checkpoint(size, out)
    # ---- load and its peer
    if _ok(st["transform"]):
        from billing_migration.country import load as _load

        _load.load_plans(cfg, country, run_id)  # the DAG's load_plans step (the nightly check compares plans too)
        csv_path = b.tmp / f"{country}.csv"
        with_peer = args.load_peer_max_size is None or size <= args.load_peer_max_size
        peer_counts = peers.write_peer_csv(cfg, country, run_id, csv_path if with_peer else None)
        out["load_rows"] = peer_counts
        log(f"[{country} {size}] load ({peer_counts})")
        st["load"] = b.stage("load", country, run_id, chunks,
                             work={"rows": peer_counts["rows"], "partitions": peer_counts["partitions"]})
        if with_peer:
            pe["load"] = measure_load_peer(b, csv_path, peer_counts,
                                           limit=full)
        else:
            why = (f"not run at {size:,} customers (--load-peer-max-size {args.load_peer_max_size:,}: the peer's "
                   "ratio is measured at the smaller sizes; this size measures our memory and time)")
            pe["load"] = {"dsbulk": {"available": False, "reason": why}, "java_driver": {"available": False,
                                                                                      "reason": why}}
        csv_path.unlink(missing_ok=True)
    else:
        st["load"] = _blocked("transform", st["transform"])

    b.checkpoint(size, out)
    skip = {"available": False, "reason": f"skipped at {size:,} customers (the default run measures it at the "
            "smaller sizes only, to stay near 20 minutes; --large-stages all to include it)"}
    wanted = set(STAGES) if args.large_stages == "all" else set(args.large_stages.split(","))

    # ---- compare (reads both stores itself)
    log(f"[{country} {size}] compare")
    if not full and "compare" not in wanted:
        st["compare"] = skip
    else:
        st["compare"] = (b.stage("compare", country, run_id, chunks, work={"rows": total_rows})
                         if _ok(st["load"]) else _blocked("load", st["load"]))

    b.checkpoint(size, out)
    # ---- nightly snapshot: token-range scan of the whole ring (every country in the keyspace)
    log(f"[{country} {size}] snapshot")
    if not full and "snapshot" not in wanted:
        st["snapshot"] = skip
    elif _ok(st["load"]) and not b.avail.get("snapshot"):
        from billing_migration.nightly import snapshot

        st["snapshot"] = b.stage("snapshot", country, run_id, snapshot.token_splits(args.snapshot_splits))
        if _ok(st["snapshot"]):
            # rows/s over every row of the ring, as the stage itself counted them while scanning (a separate
            # COUNT(*) per token range took ~5 min at 1M customers)
            snap = st["snapshot"]
            snap["ring_rows"], snap["rows_per_s"] = snap["counts"]["scanned"], snap["scanned_per_s"]
    else:
        st["snapshot"] = ({"available": False, "reason": b.avail["snapshot"]} if b.avail.get("snapshot")
                          else _blocked("load", st["load"]))

    b.checkpoint(size, out)
    # ---- nightly reconciliation of this country: legacy snapshot + counts, field-by-field and money checks
    log(f"[{country} {size}] reconcile")
    if not full and "reconcile" not in wanted:
        st["reconcile"] = skip
    elif _ok(st["snapshot"]):
        st["reconcile"] = b.stage("reconcile", country, run_id, [], work={"rows": total_rows})
    else:
        st["reconcile"] = _blocked("snapshot", st["snapshot"])
    b.checkpoint(size, out)
    return out


def _ok(r: dict[str, Any]) -> bool:
    return bool(r.get("available")) and not r.get("failed")


def _blocked(upstream: str, r: dict[str, Any]) -> dict[str, Any]:
    return {"available": False, "reason": f"needs {upstream}, which is " +
            ("not available: " + str(r.get("reason")) if not r.get("available") else "failing")}


def measure_load_peer(b: Bench, csv_path: Path, counts: dict[str, int], limit: bool = True) -> dict[str, Any]:
    """DSBulk if it can be fetched, else the DataStax Java driver loader; best settings found, same rows."""
    from billing_migration.stores import connections

    from bench import peers

    cfg = b.cfg
    host, port = "127.0.0.1", 9042
    cc = json.loads(os.environ.get("AIRFLOW_CONN_BILLING_CASSANDRA", "{}"))
    host, port = cc.get("host", host), int(cc.get("port", port))

    def truncate() -> None:
        with connections.cassandra_session(cfg) as s:
            s.execute(f"TRUNCATE {peers.PEER_TABLE}", timeout=120)

    jar, why = peers.fetch_dsbulk()
    result: dict[str, Any] = {"dsbulk": {"available": jar is not None, "reason": why}}
    variants = []
    conc = b.args.peer_concurrency
    if jar:
        variants.append(("dsbulk", peers.dsbulk_command(jar, host, port, cfg.cassandra_keyspace, csv_path, conc,
                                                        True), False))
    try:
        cp = peers.build_java_loader()
        for batch in (True, False) if b.args.peer_nobatch else (True,):
            variants.append((f"java_driver_{'batch' if batch else 'nobatch'}",
                             peers.java_load_command(cp, host, port, cfg.cassandra_keyspace, csv_path, conc, batch),
                             True))
        if limit and b.args.limit_concurrency:  # the physical limit: Cassandra's write rate, many more in flight
            variants.append(("java_driver_limit", peers.java_load_command(
                cp, host, port, cfg.cassandra_keyspace, csv_path, b.args.limit_concurrency, True), True))
    except (subprocess.SubprocessError, OSError) as exc:
        result["java_driver"] = {"available": False, "reason": str(exc)[:1000]}
    for name, argv, parse in variants:
        log(f"    load peer {name}")
        try:
            samples = b.peer_process(argv, dict(os.environ), before=truncate, parse_json=parse)
        except (StageFailed, IndexError, ValueError) as exc:
            result[name] = {"available": False, "reason": str(exc)[:1500]}
            continue
        result[name] = {**summarize(samples, {"rows": counts["rows"], "partitions": counts["partitions"]}),
                        "available": True,
                        "max_concurrent": b.args.limit_concurrency if name == "java_driver_limit" else conc,
                        "samples": [s.as_dict() for s in samples]}
    result["java_version"] = peers.java_version()
    result["java_driver_version"] = peers.java_driver_version()
    truncate()
    return result


def run_load_lab(b: Bench, size_result: dict[str, Any]) -> dict[str, Any]:
    """The load experiments of bench/loadlab.py on one size's transformed rows."""
    from bench import loadlab

    country = size_result["country"]
    chunks = _chunks(b.cfg, country, size_result["chunk_customers"])
    work = {k: float(v) for k, v in (size_result.get("load_rows") or {}).items() if k in ("rows", "partitions")}
    out: dict[str, Any] = {"country": country, "customers": size_result["customers"],
                           "concurrency": b.args.lab_concurrency}
    for variant in loadlab.VARIANTS:
        log(f"[load lab {country}] {variant}")
        w = {"rows": work["rows"]} if variant == "rows_unbatched" else work
        out[variant] = b.stage("loadlab", country, f"bench_{country.lower()}", chunks, repeats=b.args.lab_repeats,
                               extra={"variant": variant, "concurrency": b.args.lab_concurrency}, work=w)
    return out


def run_scaling(b: Bench, size: int, country: str, procs_list: list[int]) -> dict[str, Any]:
    """Export and load with 1, 2, 4 ... processes on the same chunks (medians of --scaling-repeats)."""
    cc = b.args.scaling_chunk_customers
    chunks = _chunks(b.cfg, country, cc)
    run_id = f"bench_scaling_{country.lower()}"  # own run id: its chunk numbering differs from the main run's
    from billing_migration.country import export

    export.export_plans(b.cfg, country, run_id)
    out: dict[str, Any] = {"customers": size, "country": country, "chunks": len(chunks), "chunk_customers": cc}
    for stage in ("export", "transform", "load"):
        if stage == "transform":  # load needs this run id's transformed parts; not a scaling measurement
            b.stage("transform", country, run_id, chunks, procs=1, repeats=1)
            continue
        out[stage] = {}
        for p in procs_list:
            log(f"[scaling {country}] {stage} x{p} processes")
            r = b.stage(stage, country, run_id, chunks, procs=p, repeats=b.args.scaling_repeats)
            r["procs_used"] = min(p, len(chunks))
            out[stage][str(p)] = r
    return out


# ------------------------------------------------------------------------------------------ Airflow
DAG_SCRIPT = r"""
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
from billing_migration.country import report
from billing_migration.config import load_config
cc, conf = sys.argv[1], json.loads(sys.argv[2])
bag = DagBag(dag_folder=sys.argv[3])
dag = bag.get_dag(f"migrate_billing_{cc.lower()}")
t0 = time.perf_counter()
dr = dag.test(run_conf=conf)
wall = time.perf_counter() - t0
rep = report.build(load_config(), cc, dr.run_id)
stages = {k: {kk: v.get(kk) for kk in ("state", "wall_s", "rows_per_s")} for k, v in rep.get("stages", {}).items()}
print(json.dumps({"run_id": dr.run_id, "state": str(dr.state), "wall_s": wall,
                  "freeze_window_s": rep.get("freeze_window_s"), "outcome": rep.get("outcome"), "stages": stages},
                 default=str))
"""


def reset_country(cfg, country: str) -> None:
    """Put a cut-over country back on legacy, writable, so the DAG can run again (bench namespace only)."""
    from billing_migration.stores import write_gate

    if hasattr(write_gate, "rollback"):
        try:
            write_gate.rollback(cfg, country, "bench", "bench-reset")
            return
        except Exception as exc:  # fall back to a direct reset of the routing row
            log(f"write_gate.rollback failed ({exc}); resetting the routing row directly")
    from billing_migration.stores import connections

    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as cur:
        cur.execute("UPDATE country_routing SET serving_store='legacy', writes_frozen=0 WHERE country=%s",
                    (country,))
        conn.commit()
    if hasattr(write_gate, "unfreeze"):
        try:
            write_gate.unfreeze(cfg, country, "bench", "bench-reset", reason="benchmark reset")
        except Exception as exc:
            log(f"write_gate.unfreeze after reset: {exc}")


def run_airflow(b: Bench, size: int, country: str) -> dict[str, Any]:
    """End-to-end DAG time and freeze window through dag.test() (in-process tasks), medians of repeats."""
    dag_file = ROOT / "dags" / "migrate_billing.py"
    if not dag_file.exists():
        return {"available": False, "reason": "dags/migrate_billing.py does not exist yet"}
    runs = []
    for i in range(b.args.airflow_repeats):
        reset_country(b.cfg, country)
        conf = {"country": country, "parallelism": b.args.dag_parallelism}
        u = run_process([sys.executable, "-c", DAG_SCRIPT, country, json.dumps(conf), str(ROOT / "dags")],
                        env=b.env, timeout_s=b.timeout)
        lines = [ln for ln in u.stdout.splitlines() if ln.startswith("{")]
        if u.returncode != 0 or not lines:
            return {"available": True, "failed": f"exit {u.returncode}: {u.stderr[-2000:]}", "runs": runs}
        r = json.loads(lines[-1])
        r.update(process_wall_s=u.wall_s, maxrss_mb=u.maxrss_mb, cpu_s=u.cpu_s)
        log(f"    dag.test rep {i + 1}: {r['state']} in {r['wall_s']:.1f} s, freeze {r['freeze_window_s']} s")
        runs.append(r)
        if "success" not in r["state"]:
            return {"available": True, "failed": f"DAG run ended {r['state']}", "runs": runs}
    import statistics

    fw = [r["freeze_window_s"] for r in runs if r.get("freeze_window_s") is not None]
    return {"available": True, "mode": "dag.test() (tasks in-process, sequential)", "customers": size,
            "country": country, "parallelism": b.args.dag_parallelism,
            "wall_s": statistics.median(r["wall_s"] for r in runs),
            "freeze_window_s": statistics.median(fw) if fw else None,
            "maxrss_mb": statistics.median(r["maxrss_mb"] for r in runs), "runs": runs}


# ------------------------------------------------------------------------------------------ profile
def profile_stage(b: Bench, stage: str, country: str, top: int = 25) -> dict[str, Any]:
    """One cProfile run of `stage` on `country`; the top entries by cumulative and by own time."""
    chunks = _chunks(b.cfg, country, b.args.chunk_customers or b.cfg.country(country).chunk_customers)
    prof = b.tmp / f"{stage}.prof"
    spec = {"stage": stage, "country": country, "run_id": f"bench_{country.lower()}", "chunks": chunks,
            "profile_path": str(prof)}
    if stage == "snapshot":
        from billing_migration.nightly import snapshot

        spec["chunks"] = snapshot.token_splits(b.args.snapshot_splits)
    s = run_workers([spec], b.env, timeout_s=b.timeout)
    st = pstats.Stats(str(prof))
    root = str(ROOT) + "/"

    def rows(key: str) -> list[dict[str, Any]]:
        st.sort_stats(key)
        out = []
        for func in st.fcn_list[:top]:  # type: ignore[attr-defined]
            _cc, nc, tt, ct, _ = st.stats[func]  # type: ignore[attr-defined]
            file, line, name = func
            file = file.replace(root, "").replace(str(Path(sys.prefix)) + "/", "")
            out.append({"function": f"{file}:{line}({name})", "ncalls": nc, "tottime_s": round(tt, 3),
                        "cumtime_s": round(ct, 3)})
        return out

    return {"stage": stage, "country": country, "wall_s_profiled": s.wall_s, "by_cumulative": rows("cumulative"),
            "by_tottime": rows("tottime")}


# ------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.run", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ints = lambda s: [int(x) for x in s.split(",") if x.strip()]  # noqa: E731
    p.add_argument("--sizes", type=ints, default=[10_000, 100_000], help="customers per country, comma-separated")
    p.add_argument("--repeats", type=int, default=3, help="runs per stage and peer (median reported)")
    p.add_argument("--large-size", type=int, default=100_000, help="sizes from here on use --large-repeats")
    p.add_argument("--large-repeats", type=int, default=1,
                   help="runs per stage at large sizes (one 100k pass of every stage takes ~10 min here)")
    p.add_argument("--large-stages", default="export,transform,load,compare",
                   help="stages measured at large sizes ('all' adds the nightly snapshot and reconcile, the "
                        "writable-country export path and the write-rate limit at 100k: ~29 min here, not ~20)")
    p.add_argument("--parallel", type=ints, default=[1], help="process counts for the scaling runs (e.g. 1,2; "
                   "default: none, 1.3 min at 10k)")
    p.add_argument("--scaling-size", type=int, default=None, help="size for scaling runs (default: smallest)")
    p.add_argument("--scaling-repeats", type=int, default=1)
    p.add_argument("--scaling-chunk-customers", type=int, default=1000,
                   help="chunk size for the scaling runs (enough chunks to deal over 4 processes)")
    p.add_argument("--chunk-customers", type=int, default=None, help="default: migration.yaml's chunk_customers")
    p.add_argument("--peer-concurrency", type=int, default=64, help="DSBulk/Java in-flight requests")
    p.add_argument("--limit-concurrency", type=int, default=256,
                   help="also run the Java peer with this many requests in flight: Cassandra's write rate here, "
                        "the load's physical limit (below --large-size, or at every size with --large-stages all; "
                        "0 = skip)")
    p.add_argument("--load-peer-max-size", type=int, default=None,
                   help="largest size at which the Java load peer runs (its CSV alone is ~6 GB at 1M)")
    p.add_argument("--peer-nobatch", action="store_true",
                   help="also run the Java peer with one INSERT per row (slow; the load lab covers batching)")
    p.add_argument("--snapshot-splits", type=int, default=4)
    p.add_argument("--export-paths", default="fast,snapshot",
                   help="export paths to measure: fast (pipelined connectorx, the offline path) and snapshot "
                        "(one consistent snapshot per chunk, the writable-country path); fast is always measured")
    p.add_argument("--load-lab", type=int, default=0, help="size for the load experiments (0 = skip, the default; "
                   "-1 = the smallest size)")
    p.add_argument("--lab-repeats", type=int, default=1)
    p.add_argument("--lab-concurrency", type=int, default=64)
    p.add_argument("--airflow", choices=("none", "test"), default="test")
    p.add_argument("--airflow-size", type=int, default=None, help="size for the DAG run (default: smallest)")
    p.add_argument("--airflow-repeats", type=int, default=1)
    p.add_argument("--dag-parallelism", type=int, default=2)
    p.add_argument("--profile", default="auto", help="stage to cProfile ('auto' = slowest, 'none')")
    p.add_argument("--namespace", default="bench")
    p.add_argument("--keep", action="store_true", help="keep the namespace's data afterwards")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per measured process (default: 1,800 per 100k customers, at least 1,800)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--no-markdown", action="store_true", help="do not rewrite BENCHMARKS.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = load_stack_env(args.namespace)
    from billing_migration.config import load_config

    from bench import report, stages

    cfg = load_config()
    t_start = time.perf_counter()
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "command": " ".join(["scripts/bench" if os.environ.get("BM_BENCH_VIA_SCRIPT") else "python -m bench.run",
                             *(argv if argv is not None else sys.argv[1:])]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "namespace": args.namespace, "machine": machine(), "sizes": {}, "notes": [],
    }
    b = Bench(args, env, cfg)
    b.results = results
    b.avail = stages.availability()
    results["availability"] = {k: (v or "available") for k, v in b.avail.items()}
    log(f"stages: {results['availability']}")
    try:
        setup_namespace(cfg)
        results["servers"] = server_versions(cfg)
        countries = dict(COUNTRY_BY_SIZE)
        for size in args.sizes:
            if size not in countries:
                countries[size] = next(c for c in SPARE_COUNTRIES if c not in countries.values())
            results["sizes"][str(size)] = run_size(b, size, countries[size])
            _save(results, args)  # partial results survive a later failure
        if args.load_lab and not b.avail.get("load"):
            size = args.load_lab if args.load_lab in args.sizes else min(args.sizes)
            if results["sizes"][str(size)].get("load_rows"):
                results["load_lab"] = run_load_lab(b, results["sizes"][str(size)])
        if len(args.parallel) > 1 and not b.avail.get("export"):
            size = args.scaling_size or min(args.sizes)
            results["scaling"] = run_scaling(b, size, countries[size], args.parallel)
        if args.profile != "none":
            stage = args.profile if args.profile != "auto" else report.slowest_stage(results)
            if stage:
                size = min(args.sizes)
                log(f"profile {stage} on {countries[size]}")
                try:
                    results["profile"] = profile_stage(b, stage, countries[size])
                except StageFailed as exc:
                    results["profile"] = {"stage": stage, "failed": str(exc)[:1500]}
        if args.airflow == "test":
            size = args.airflow_size or min(args.sizes)
            log(f"Airflow dag.test() on {countries[size]} ({size} customers)")
            results["airflow"] = run_airflow(b, size, countries[size])
    finally:
        results["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        results["total_wall_s"] = round(time.perf_counter() - t_start, 1)
        if not args.keep:
            log("dropping the bench namespace (database, keyspace, S3 prefix)")
            try:
                drop_namespace(cfg)
                results["dropped"] = True
            except Exception as exc:
                results["dropped"] = f"failed: {exc}"
        path = _save(results, args)
        log(f"results: {path}")
        if results["sizes"]:
            png = report.plot(results, args.out / "scaling.png")
            log(f"plot: {png}")
            if not args.no_markdown:
                report.write_markdown(results, ROOT / "BENCHMARKS.md", path)
                log("BENCHMARKS.md updated")
    log(f"done in {results['total_wall_s']} s")
    return 0


_RUN_FILE: dict[str, Path] = {}


def _save(results: dict[str, Any], args: argparse.Namespace) -> Path:
    args.out.mkdir(parents=True, exist_ok=True)
    if "path" not in _RUN_FILE:
        stamp = results["started_at"].replace(":", "").replace("-", "").replace("+0000", "Z")
        _RUN_FILE["path"] = args.out / f"bench-{stamp}.json"
    _RUN_FILE["path"].write_text(json.dumps(results, indent=1, default=str, sort_keys=False))
    return _RUN_FILE["path"]


if __name__ == "__main__":
    sys.exit(main())
