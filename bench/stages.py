"""Adapters from a worker spec to the project's real stage functions (never re-implementations).

`prepare(spec)` does the imports and argument checks outside the timed region and returns a zero-argument
callable that runs the stage over the spec's chunks and returns counts. `availability()` says which stages
exist in this checkout, so a stage that has not landed yet is reported as "not available", never faked.
"""

from __future__ import annotations

import importlib
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

# stage -> (module, function) it measures
STAGE_FUNCS: dict[str, tuple[str, str]] = {
    "seed": ("billing_migration.devtools.generator", "seed"),
    "export": ("billing_migration.country.export", "export_chunk"),
    "transform": ("billing_migration.country.transform", "transform_chunk"),
    "load": ("billing_migration.country.load", "load_chunk"),
    "compare": ("billing_migration.country.compare", "compare_range"),
    "snapshot": ("billing_migration.nightly.snapshot", "snapshot_cassandra_split"),
    "reconcile": ("billing_migration.nightly.reconcile", "reconcile_country"),
}


def availability() -> dict[str, str | None]:
    """stage -> None if importable and callable, else the reason it is not available."""
    out: dict[str, str | None] = {}
    for stage, (mod, fn) in STAGE_FUNCS.items():
        try:
            m = importlib.import_module(mod)
        except ImportError as exc:
            out[stage] = f"module {mod} not importable ({exc})"
            continue
        out[stage] = None if callable(getattr(m, fn, None)) else f"{mod} has no {fn}()"
    return out


def _cfg():
    from billing_migration.config import load_config

    return load_config()


def _sum_numeric(acc: dict[str, Any], counts: Any, prefix: str = "") -> None:
    if not isinstance(counts, dict):
        return
    for k, v in counts.items():
        if isinstance(v, dict):
            _sum_numeric(acc, v, f"{prefix}{k}.")
        elif isinstance(v, int | float) and not isinstance(v, bool):
            acc[f"{prefix}{k}"] = acc.get(f"{prefix}{k}", 0) + v


def _legacy_snapshot(day: str, country: str) -> tuple[dict[str, int], float, float]:
    """The nightly DAG's `snapshot_mysql` task for one country, in a process of its own: its counts, peak
    RSS (MB) and CPU seconds."""
    import resource

    from billing_migration.nightly import snapshot

    from bench.measure import vm_hwm_mb

    counts = snapshot.snapshot_mysql(_cfg(), day, country)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return counts, vm_hwm_mb() or 0.0, ru.ru_utime + ru.ru_stime


def warm_up(cfg) -> None:
    """Import the hooks and drivers every stage touches, outside the timed region (a one-off per process)."""
    from billing_migration.stores import connections

    connections.s3_client(cfg)
    # libraries a stage imports lazily on first use (pyarrow pulls pandas in for time-zone casts): ~0.5-2 s once
    # per process, which a long-lived worker has paid long before; the peers have no such cost either
    import connectorx  # noqa: F401
    import MySQLdb  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.compute
    import pyarrow.parquet  # noqa: F401
    from airflow.providers.apache.cassandra.hooks.cassandra import CassandraHook  # noqa: F401
    from airflow.providers.mysql.hooks.mysql import MySqlHook  # noqa: F401


def prepare(spec: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    stage = spec["stage"]
    cfg = _cfg()
    warm_up(cfg)
    country = spec.get("country")
    run_id = spec.get("run_id", "")
    chunks: list[dict[str, Any]] = spec.get("chunks") or []

    if stage == "seed":
        from billing_migration.devtools import generator

        def _seed() -> dict[str, Any]:
            import dataclasses

            res = generator.seed(cfg, spec["customers"], seed=spec.get("seed", 42), countries={country: 1.0},
                                 dirty_rate=0.0, first_customer_id=spec.get("first_customer_id", 1),
                                 replace=spec.get("replace", True))
            acc: dict[str, Any] = {}
            _sum_numeric(acc, dataclasses.asdict(res) if dataclasses.is_dataclass(res) else res)
            return acc

        return _seed

    if stage == "export":
        from billing_migration.country import export

        def _export() -> dict[str, Any]:
            acc: dict[str, Any] = {"rows": 0, "parquet_bytes": 0, "customers": 0}
            for ch in chunks:
                m = export.export_chunk(cfg, country, run_id, ch, **spec.get("kwargs", {}))
                acc["rows"] += sum(t["rows"] for t in m["tables"].values())
                acc["parquet_bytes"] += sum(t.get("bytes", 0) for t in m["tables"].values())
                acc["customers"] += m.get("customers", 0)
            return acc

        return _export

    if stage == "transform":
        from billing_migration.country import transform

        def _transform() -> dict[str, Any]:
            acc: dict[str, Any] = {}
            for ch in chunks:
                _sum_numeric(acc, transform.transform_chunk(cfg, country, run_id, ch["chunk"]))
            return acc

        return _transform

    if stage == "load":
        from billing_migration.country import load

        concurrency = int(spec.get("concurrency") or cfg.country(country).load_concurrency)

        def _load() -> dict[str, Any]:
            acc: dict[str, Any] = {}
            for ch in chunks:
                _sum_numeric(acc, load.load_chunk(cfg, country, run_id, ch["chunk"], concurrency=concurrency,
                                                  rate_limit_rows_per_s=0))
            return acc

        return _load

    if stage == "compare":
        from billing_migration.country import compare

        def _compare() -> dict[str, Any]:
            acc: dict[str, Any] = {}
            mismatching = 0
            for ch in chunks:
                res = compare.compare_range(cfg, country, ch["lo"], ch["hi"])
                _sum_numeric(acc, getattr(res, "counts", res))
                if hasattr(compare, "mismatching_customers"):
                    mismatching += len(compare.mismatching_customers(res))
            acc["mismatching_customers"] = mismatching
            return acc

        return _compare

    if stage == "snapshot":
        from billing_migration.nightly import snapshot

        day = spec.get("day", "2000-01-01")

        def _snapshot() -> dict[str, Any]:
            acc: dict[str, Any] = {"scanned": 0, "rows_written": 0}
            for split in chunks:  # token ranges of the ring, from snapshot.token_splits
                res = snapshot.snapshot_cassandra_split(cfg, day, split, [country])
                acc["scanned"] += int(res.get("scanned", 0))
                acc["rows_written"] += sum(sum(t.values()) for t in res.get("counts", {}).values())
            return acc

        return _snapshot

    if stage == "reconcile":
        from billing_migration.nightly import reconcile, snapshot

        day = spec.get("day", "2000-01-01")

        def _reconcile() -> dict[str, Any]:
            # the night's other half for this country (the Cassandra side is the snapshot stage's output):
            # legacy snapshot, the plans read from Cassandra, then the three checks (counts, field by field, money).
            # The legacy snapshot runs in a child process, as it runs in its own task in the DAG: the stage's
            # peak RSS is then the larger task's, not the two tasks' heaps stacked in one process. Forked (no
            # driver thread runs yet), so the child's progress lines reach the harness like the stage's own.
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
                mysql_counts, child_peak, child_cpu = pool.submit(_legacy_snapshot, day, country).result()
            snapshot.snapshot_cassandra_plans(cfg, day, country)
            res = reconcile.reconcile_country(cfg, day, snapshot.Routing(country, "cassandra", True, None))
            if not res["ok"]:  # the stores were loaded from the same rows: a problem here is a defect, not a figure
                raise RuntimeError(f"reconciliation of {country} found problems: {res['problems']}")
            return {"mysql_rows": sum(mysql_counts.values()), "ok": int(bool(res["ok"])),
                    "child_peak_mb": round(child_peak, 1), "child_cpu_s": round(child_cpu, 2),
                    "problems": len(res["problems"]), "record_differences": res.get("record_differences", 0)}

        return _reconcile

    if stage == "loadlab":
        from bench import loadlab

        return loadlab.prepare(cfg, spec)

    raise ValueError(f"unknown stage {stage!r}")
