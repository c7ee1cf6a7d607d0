"""The README's main job on the embedded default: seed a demo legacy database, migrate one country end to
end through its Airflow DAG (dag.test, in-process), print the run's Markdown report (its report.md).

Runs in its own namespace (BM_NAMESPACE=demo unless set) so it never touches test or production data, and
starts from a clean slate each time: legacy reseeded, routing back to legacy, target data of the namespace
dropped.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def show_progress() -> None:
    """The progress lines of long work (billing_migration.progress), as a task log shows them, on stdout."""
    progress_log = logging.getLogger("billing_migration.progress")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("   %(message)s"))
    progress_log.addHandler(handler)
    progress_log.setLevel(logging.INFO)
    progress_log.propagate = False  # once, not again through the root handler


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--customers", type=int, default=20_000, help="customers in the demo legacy DB (all countries)")
    ap.add_argument("--country", default="BR", help="country to migrate")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    os.environ.setdefault("BM_NAMESPACE", "demo")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")  # the report is the demo's output
    logging.basicConfig(level=logging.WARNING)
    # Raised by fastapi's test client, which dag.test's in-process execution API imports: not ours to fix.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")

    from billing_migration.config import load_config, normalize_country
    from billing_migration.devtools import generator
    from billing_migration.stores import bootstrap, connections, s3io, write_gate

    cfg = load_config()
    country = normalize_country(args.country)
    cfg.country(country)
    print(f"== demo namespace {cfg.namespace!r}: MySQL database {cfg.mysql_database}, "
          f"keyspace {cfg.cassandra_keyspace}, s3://{cfg.s3_bucket}/{cfg.s3_prefix}")
    with connections.cassandra_session(cfg, keyspace=False) as session:
        session.execute(f"DROP KEYSPACE IF EXISTS {cfg.cassandra_keyspace}", timeout=120)
    bootstrap.ensure_all(cfg)
    write_gate.reset_routing(cfg, "demo", "demo starts from a clean slate")
    t0 = time.time()
    seeded = generator.seed(cfg, args.customers, seed=args.seed)
    print(f"== seeded legacy database in {time.time() - t0:.1f} s: {seeded}")

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "migrate_billing.py"))
    dag = bag.get_dag(f"migrate_billing_{country.lower()}")
    print(f"== running {dag.dag_id} (dag.test, in-process) ...")
    show_progress()
    t0 = time.time()
    run = dag.test(run_conf={"country": country})
    print(f"== DAG run {run.run_id} ended {run.state} in {time.time() - t0:.1f} s")
    key = s3io.run_prefix(cfg, country, run.run_id) + "report.md"
    print(s3io.client(cfg).get_object(Bucket=cfg.s3_bucket, Key=key)["Body"].read().decode())
    return 0 if str(run.state) in ("success", "DagRunState.SUCCESS") else 1


if __name__ == "__main__":
    raise SystemExit(main())
