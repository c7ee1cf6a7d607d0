"""The peers each stage is measured against, on the same data in the same run.

- export  <-> the raw `mariadb --quick --batch` client streaming the same rows of the same country to a file
              (the floor for reading MySQL from a client), and `SELECT ... INTO OUTFILE` where the server allows.
- load    <-> DSBulk if Maven Central serves it; otherwise `bench/peers/JavaLoad.java`, a minimal DSBulk-style
              loader on the DataStax Java driver 4.x (what DSBulk is built on), clearly labelled as such.
Both load into `customer_billing_peer`, a table with the same columns and primary key as `customer_billing`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from bench.measure import ROOT

PEER_DIR = Path(os.environ.get("BM_STATE_DIR", ROOT / ".state")) / "bench" / "peers"
POM = ROOT / "bench" / "pom.xml"
JAVA_SRC = ROOT / "bench" / "peers" / "JavaLoad.java"
PEER_TABLE = "customer_billing_peer"
DSBULK_VERSION = "1.11.0"


# ------------------------------------------------------------------------------------- MySQL export peer
def _mysql_login(cfg) -> tuple[str, int, str, str]:
    from airflow.sdk import BaseHook

    c = BaseHook.get_connection(cfg.connections["mysql_export"])
    return c.host or "127.0.0.1", int(c.port or 3306), c.login or "", c.password or ""


def export_queries(cfg, country: str, lo: int, hi: int) -> list[str]:
    """The same rows the export reads (every customer table of the country's id range), selected raw."""
    from billing_migration.stores import schema

    out = []
    for t in schema.CUSTOMER_TABLES:
        if t.name == "customers":
            out.append(f"SELECT c.* FROM customers c WHERE c.country = '{country}' "
                       f"AND c.customer_id BETWEEN {int(lo)} AND {int(hi)} ORDER BY c.customer_id")
        else:
            out.append(f"SELECT t.* FROM `{t.name}` t JOIN customers c ON c.customer_id = t.customer_id "
                       f"WHERE c.country = '{country}' AND c.customer_id BETWEEN {int(lo)} AND {int(hi)} "
                       f"AND t.customer_id BETWEEN {int(lo)} AND {int(hi)} ORDER BY t.customer_id, t.`{t.key}`")
    return out


def mysql_client_command(cfg, country: str, lo: int, hi: int) -> tuple[list[str], dict[str, str]]:
    """argv and env for `mariadb --quick --batch` streaming the country to stdout (password via MYSQL_PWD)."""
    host, port, user, password = _mysql_login(cfg)
    client = shutil.which("mariadb") or shutil.which("mysql")
    if not client:
        raise FileNotFoundError("no mariadb/mysql client on PATH")
    sql = "SET time_zone = '+00:00'; " + "; ".join(export_queries(cfg, country, lo, hi)) + ";"
    argv = [client, "--quick", "--batch", "--default-character-set=utf8mb4", f"--host={host}", f"--port={port}",
            f"--user={user}", cfg.mysql_database, "-e", sql]
    env = {**os.environ, "MYSQL_PWD": password}
    return argv, env


def client_version() -> str:
    client = shutil.which("mariadb") or shutil.which("mysql") or "mysql"
    try:
        return subprocess.run([client, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError as exc:
        return f"unknown ({exc})"


def outfile_status(cfg) -> dict[str, Any]:
    """Can the export role use SELECT ... INTO OUTFILE here? Tries it on one row and reports why not."""
    from billing_migration.stores import connections

    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT @@secure_file_priv")
        priv = cur.fetchone()[0]
        cur.execute("SHOW GRANTS")
        has_file = any(" FILE" in g[0] or "ALL PRIVILEGES ON *.*" in g[0] for g in cur.fetchall())
        target = f"/tmp/bm_bench_outfile_{os.getpid()}.tsv"
        try:
            cur.execute(f"SELECT customer_id FROM customers LIMIT 1 INTO OUTFILE '{target}'")
            allowed, error = True, None
            Path(target).unlink(missing_ok=True)
        except Exception as exc:
            allowed, error = False, f"{type(exc).__name__}: {exc}"
    reason = None
    if not allowed:
        reason = (f"not allowed for the export role: secure_file_priv={priv!r}, FILE privilege "
                  f"{'granted' if has_file else 'not granted'} ({error}). The export role is read-only by "
                  "design, and INTO OUTFILE writes on the database host, not where the pipeline runs, so "
                  "it is not a usable path for this pipeline either.")
    return {"allowed": allowed, "secure_file_priv": priv, "file_privilege": has_file, "reason": reason}


# ---------------------------------------------------------------------------------------- load peer
def peer_table_ddl(keyspace: str) -> str:
    """`customer_billing`'s DDL under another name: same columns, same primary key."""
    from billing_migration.stores import schema

    ddl = next(s for s in schema.cassandra_ddl(keyspace) if ".customer_billing (" in s)
    return ddl.replace(f"{keyspace}.customer_billing (", f"{keyspace}.{PEER_TABLE} (")


def fetch_dsbulk() -> tuple[Path | None, str | None]:
    """(runnable dsbulk jar, None) or (None, why not). The distribution tar.gz holds lib/dsbulk-<v>.jar."""
    dest = PEER_DIR / "dsbulk"
    jars = sorted(dest.glob(f"dsbulk-{DSBULK_VERSION}/lib/dsbulk-*.jar")) if dest.exists() else []
    if jars:
        return jars[0], None
    dest.mkdir(parents=True, exist_ok=True)
    art = f"com.datastax.oss:dsbulk-distribution:{DSBULK_VERSION}:tar.gz"
    proc = subprocess.run(["mvn", "-q", "-B", "-U", "-f", str(POM), "dependency:copy", f"-Dartifact={art}",
                           f"-DoutputDirectory={dest}"], capture_output=True, text=True, timeout=600)
    tars = sorted(dest.glob("dsbulk-distribution-*.tar.gz"))
    if proc.returncode != 0 or not tars:
        first = next((ln for ln in proc.stdout.splitlines() + proc.stderr.splitlines() if "ERROR" in ln), "")
        first = re.sub(r"\x1b\[[0-9;]*m", "", first)
        cause = first.split("Could not find artifact")[-1].strip() if "Could not find" in first else first.strip()
        return None, (f"Maven Central as reachable from this machine does not serve {art} (mvn: could not find "
                      f"artifact {cause[:200]}); dsbulk-runner and dsbulk-workflow-load jars are missing too")
    with tarfile.open(tars[0]) as tf:
        tf.extractall(dest, filter="data")
    jars = sorted(dest.glob("dsbulk-*/lib/dsbulk-*.jar"))
    return (jars[0], None) if jars else (None, "dsbulk tarball has no lib/dsbulk-*.jar")


def build_java_loader() -> str:
    """Fetch the Java driver with Maven and compile JavaLoad.java; returns the classpath."""
    lib, classes = PEER_DIR / "lib", PEER_DIR / "classes"
    if not any(lib.glob("java-driver-core-*.jar")):
        lib.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", "-DincludeScope=runtime",
                        f"-DoutputDirectory={lib}"], check=True, capture_output=True, timeout=900)
    cls = classes / "JavaLoad.class"
    if not cls.exists() or cls.stat().st_mtime < JAVA_SRC.stat().st_mtime:
        classes.mkdir(parents=True, exist_ok=True)
        subprocess.run(["javac", "-nowarn", "-cp", f"{lib}/*", "-d", str(classes), str(JAVA_SRC)], check=True,
                       capture_output=True, timeout=300)
    return f"{lib}/*:{classes}"


def java_version() -> str:
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        return (out.stderr or out.stdout).splitlines()[0]
    except (OSError, IndexError):
        return "unknown"


def java_driver_version() -> str:
    jars = sorted((PEER_DIR / "lib").glob("java-driver-core-*.jar"))
    return jars[0].stem.removeprefix("java-driver-core-") if jars else "unknown"


def java_load_command(classpath: str, host: str, port: int, keyspace: str, csv_path: Path,
                      max_concurrent: int, batch: bool) -> list[str]:
    return ["java", "-Xmx1g", "-cp", classpath, "JavaLoad", host, str(port), keyspace, PEER_TABLE, str(csv_path),
            str(max_concurrent), "1" if batch else "0"]


def dsbulk_command(jar: Path, host: str, port: int, keyspace: str, csv_path: Path, max_concurrent: int,
                   batch: bool) -> list[str]:
    return ["java", "-Xmx1g", "-jar", str(jar), "load", "-h", host, "-port", str(port), "-k", keyspace,
            "-t", PEER_TABLE, "-url", str(csv_path), "-header", "true", "--executor.maxPerSecond", "-1",
            "-maxConcurrentRequests", str(max_concurrent), "--batch.mode", "PARTITION_KEY" if batch else "DISABLED",
            "--log.directory", str(PEER_DIR / "dsbulk-logs")]


def write_peer_csv(cfg, country: str, run_id: str, path: Path | None) -> dict[str, int]:
    """CSV of the transformed rows (the rows our load writes), restricted to customer_billing's columns;
    with `path` None only the counts (rows, partitions) are returned.

    Sorted by partition key, so the peer can group a partition's rows into one batch, as ours does. Written by
    Arrow's CSV writer (timestamps as `2026-01-01 00:00:00.000Z`, decimals exact, nulls as empty fields), one
    transformed part at a time (a part is one chunk's customers, so partitions never span two parts and the
    harness's memory stays flat at 1M customers).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    from billing_migration.stores import connections, s3io

    client = connections.s3_client(cfg)
    keys = s3io.list_keys(client, cfg.s3_bucket, s3io.run_prefix(cfg, country, run_id) + "transformed/")
    if not keys:
        raise FileNotFoundError(f"no transformed parts for {country} run {run_id}")
    with connections.cassandra_session(cfg) as session:
        cols = {r.column_name for r in session.execute(
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name=%s AND table_name=%s",
            (cfg.cassandra_keyspace, "customer_billing"))}
    rows = partitions = 0
    writer = None
    try:
        for k in keys:
            tbl = s3io.get_parquet(client, cfg.s3_bucket, k)
            rows += tbl.num_rows
            partitions += len(pc.unique(tbl.column("customer_id")))
            if path is None:
                continue
            # the static row of a partition carries the run id as customer_run_id, as load.py writes it
            static = pc.is_null(tbl.column("entity_type"))
            run = tbl.column("run_id")
            tbl = tbl.set_column(tbl.column_names.index("run_id"), "run_id",
                                 pc.if_else(static, pa.scalar(None, pa.string()), run))
            tbl = tbl.append_column("customer_run_id", pc.if_else(static, run, pa.scalar(None, pa.string())))
            first = ["customer_id", "entity_type", "entity_id"]
            tbl = tbl.select(first + [n for n in tbl.column_names if n in cols and n not in first])
            if writer is None:
                csv_schema = tbl.schema
                writer = pacsv.CSVWriter(str(path), csv_schema)
            writer.write_table(tbl.cast(csv_schema) if tbl.schema != csv_schema else tbl)
    finally:
        if writer is not None:
            writer.close()
    return {"rows": rows, "partitions": partitions, "bytes": path.stat().st_size if path is not None else 0}
