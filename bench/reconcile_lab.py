"""Reconciliation memory lab: where the nightly reconcile's peak RSS goes, and how it moves with the size.

Two measurements, each in its own process (peak RSS is per process):

  stage   the bench's reconcile stage code (legacy snapshot, then counts, field by field and money) on a
          namespace that holds a seeded country; the Cassandra side is a server-side copy of the legacy
          snapshot, so a 1M country needs only the seed (~10 min), not a 1M load (~1 h):
            python -m bench.reconcile_lab stage --namespace rc1m --country SE --day 2000-01-03
  checks  the three checks alone on local snapshot folders (<dir>/<store>/<table>/*.parquet), per table,
          after `scale` has made a k-times copy of real snapshots (keys and customer ids offset per copy):
            python -m bench.reconcile_lab scale /tmp/x1 /tmp/x10 10
            python -m bench.reconcile_lab checks /tmp/x10

The environment comes from the stack (bench.run.load_stack_env); BM_DUCKDB_MEMORY overrides DuckDB's limit.
"""

from __future__ import annotations

import argparse
import glob
import os
import threading
import time

OFFSET = 10**10  # per copy, added to keys and customer ids: copies never collide


def current_mb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    return 0


def peak_mb() -> int:
    from bench.measure import vm_hwm_mb

    return int(vm_hwm_mb() or 0)


def _sampler(samples: list[int]) -> None:
    def run() -> None:
        while True:
            samples.append(current_mb())
            time.sleep(1)

    threading.Thread(target=run, daemon=True).start()


def stage(namespace: str, country: str, day: str) -> None:
    from bench import run as bench_run

    bench_run.load_stack_env(namespace)
    from billing_migration.config import load_config
    from billing_migration.nightly import reconcile, snapshot
    from billing_migration.stores import s3io

    samples: list[int] = []
    _sampler(samples)
    cfg = load_config()
    client = s3io.client(cfg)
    t0 = time.monotonic()
    counts = snapshot.snapshot_mysql(cfg, day, country)
    t1 = time.monotonic()
    print(f"legacy snapshot: {t1 - t0:.1f} s, {sum(counts.values()):,} rows, peak {peak_mb()} MB, "
          f"now {current_mb()} MB", flush=True)
    for t in snapshot.SNAPSHOT_TABLES:
        for key in snapshot.list_parts(cfg, day, "mysql", country, t.name, client):
            client.copy_object(Bucket=cfg.s3_bucket, Key=key.replace("/store=mysql/", "/store=cassandra/"),
                               CopySource={"Bucket": cfg.s3_bucket, "Key": key})
    t2 = time.monotonic()
    res = reconcile.reconcile_country(cfg, day, snapshot.Routing(country, "cassandra", True, None))
    print(f"checks: {time.monotonic() - t2:.1f} s, ok={res['ok']} {res['problems'][:3]}, peak {peak_mb()} MB, "
          f"now {current_mb()} MB")
    print("RSS every ~1/40 of the run (MB):", samples[::max(1, len(samples) // 40)])


def scale(src: str, dst: str, k: int) -> None:
    import duckdb
    from billing_migration.nightly import snapshot

    con = duckdb.connect()
    for store in snapshot.STORES:
        for t in snapshot.SNAPSHOT_TABLES:
            files = sorted(glob.glob(f"{src}/{store}/{t.name}/*.parquet"))
            os.makedirs(f"{dst}/{store}/{t.name}", exist_ok=True)
            listed = "[" + ", ".join(f"'{f}'" for f in files) + "]"
            for i in range(1 if t.name == "plans" else k):
                shifted = [f"{t.key} + {i * OFFSET} AS {t.key}"]
                if "customer_id" in t.column_names and t.key != "customer_id":
                    shifted.append(f"customer_id + {i * OFFSET} AS customer_id")
                con.execute(f"COPY (SELECT * REPLACE ({', '.join(shifted)}) FROM read_parquet({listed})) TO "
                            f"'{dst}/{store}/{t.name}/part-{i:03d}.parquet' "
                            "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 20000)")


def checks(folder: str) -> None:
    from billing_migration.nightly import reconcile, snapshot

    snaps = {store: {t.name: sorted(glob.glob(f"{folder}/{store}/{t.name}/*.parquet"))
                     for t in snapshot.SNAPSHOT_TABLES} for store in snapshot.STORES}
    spill = os.path.join(folder, "spill")
    t0 = time.monotonic()
    for t in snapshot.SNAPSHOT_TABLES:
        a = time.monotonic()
        out = reconcile.compare_table(t.name, snaps["mysql"][t.name], snaps["cassandra"][t.name], spill)
        print(f"{t.name:22s} {reconcile._rows(snaps['mysql'][t.name]):>11,} rows  {out.num_rows} differences  "
              f"{time.monotonic() - a:6.1f} s  peak {peak_mb():5d} MB", flush=True)
    for store in snapshot.STORES:
        a = time.monotonic()
        reconcile.financial_totals(snaps[store], {}, spill)
        print(f"totals {store:15s} {time.monotonic() - a:6.1f} s  peak {peak_mb():5d} MB", flush=True)
    print(f"all checks: {time.monotonic() - t0:.1f} s, peak {peak_mb()} MB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stage")
    s.add_argument("--namespace", required=True)
    s.add_argument("--country", required=True)
    s.add_argument("--day", default="2000-01-03")
    sc = sub.add_parser("scale")
    sc.add_argument("src")
    sc.add_argument("dst")
    sc.add_argument("k", type=int)
    c = sub.add_parser("checks")
    c.add_argument("folder")
    a = p.parse_args()
    if a.cmd == "stage":
        stage(a.namespace, a.country, a.day)
    elif a.cmd == "scale":
        scale(a.src, a.dst, a.k)
    else:
        checks(a.folder)


if __name__ == "__main__":
    main()
