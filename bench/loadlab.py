"""Load-stage experiments: what makes the Python write path fast, on the same rows as the real load.

Every variant writes exactly what `load.py` writes (its own `_prepare` and `customer_batches`: one UNLOGGED
batch per customer = DELETE + INSERTs, into `customer_billing`, idempotent), except `build_only` (no I/O) and
`rows_unbatched` (one INSERT per row, no DELETE: the cost of batching, for reference). The transformed
Parquet is read before the clock starts, so these time the Cassandra path only.

Variants:
  asis              load.load_rows with one session for all chunks (load_chunk opens one per chunk)
  build_only        only build the BatchStatements (the client-side CPU floor of the current design)
  exec_concurrent   the same batches through cassandra.concurrent.execute_concurrent
  rows_unbatched    every row as its own prepared INSERT through execute_concurrent
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

VARIANTS = ("asis", "build_only", "exec_concurrent", "rows_unbatched")


def _consume(results) -> None:
    """execute_concurrent's generator is lazy: nothing is sent beyond the first window until it is iterated."""
    for ok, res in results:
        if not ok:
            raise res


def prepare(cfg, spec: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    import pyarrow as pa
    from billing_migration.country import load
    from billing_migration.stores import connections, s3io

    variant = spec.get("variant", "asis")
    if variant not in VARIANTS:
        raise ValueError(f"unknown load variant {variant!r}; one of {VARIANTS}")
    country, run_id = spec["country"], spec["run_id"]
    concurrency = int(spec.get("concurrency") or 64)
    client = connections.s3_client(cfg)
    tables = [s3io.get_parquet(client, cfg.s3_bucket, s3io.stage_key(cfg, country, run_id, "transformed", c["chunk"]))
              for c in spec["chunks"]]
    rows = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    ctx = connections.cassandra_session(cfg)
    session = ctx.__enter__()
    prepared = load._prepare(session)

    def _asis() -> dict[str, Any]:
        try:
            return load.load_rows(session, country, rows, run_id, concurrency, 0)
        finally:
            ctx.__exit__(None, None, None)

    def _build_only() -> dict[str, Any]:
        n = b = 0
        for _cid, _batch, count in load.customer_batches(rows, prepared, run_id):
            n += count
            b += 1
        ctx.__exit__(None, None, None)
        return {"rows": n, "batches": b}

    def _exec_concurrent() -> dict[str, Any]:
        from cassandra.concurrent import execute_concurrent

        counts = {"rows": 0, "batches": 0}

        def gen():
            for _cid, batch, count in load.customer_batches(rows, prepared, run_id):
                counts["rows"] += count
                counts["batches"] += 1
                yield batch, None

        try:
            _consume(execute_concurrent(session, gen(), concurrency=concurrency, raise_on_first_error=True,
                                        results_generator=True))
        finally:
            ctx.__exit__(None, None, None)
        return counts

    def _rows_unbatched() -> dict[str, Any]:
        from cassandra.concurrent import execute_concurrent

        counts = {"rows": 0}

        def gen():
            for _cid, batch, _count in load.customer_batches(rows, prepared, run_id):
                for stmt in batch._statements_and_parameters[1:]:  # skip the DELETE
                    _is_prepared, query_id, values = stmt
                    counts["rows"] += 1
                    yield _bound(query_id, values), None

        by_id = {p.query_id: p for p in prepared.values()}

        def _bound(query_id, values):
            from cassandra.query import BoundStatement

            bs = BoundStatement(by_id[query_id])
            bs.values = list(values)
            return bs

        try:
            _consume(execute_concurrent(session, gen(), concurrency=concurrency, raise_on_first_error=True,
                                        results_generator=True))
        finally:
            ctx.__exit__(None, None, None)
        return counts

    return {"asis": _asis, "build_only": _build_only, "exec_concurrent": _exec_concurrent,
            "rows_unbatched": _rows_unbatched}[variant]
