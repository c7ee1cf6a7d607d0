"""A rerun after customers were deleted from legacy: the target must lose them too, wherever their ids fall.

Chunks are keyset ranges of the customers legacy has at plan time. A customer an earlier (failed) run loaded
and legacy deleted since may have an id above the last chunk, below the first, or between two chunks: the
compare must still see it in the target's index and remove it, or it outlives the cut-over in the store that
serves the country (found by the fault matrix: kill -9 in the online catch-up, then a new run).
"""

from __future__ import annotations

import os
import time

from billing_migration.app.apply import MYSQL_CHILDREN

COUNTRY = "NZ"


def _params(cfg):
    from billing_migration.country import pipeline

    return pipeline.validate_params(cfg, COUNTRY, {"country": COUNTRY, "chunk_customers": 100, "parallelism": 1,
                                                   "mode": "offline"})


def _delete_customers(cfg, ids: list[int]) -> None:
    from billing_migration.stores import connections

    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as cur:
        for cid in ids:
            for sql in MYSQL_CHILDREN["customers"]:
                cur.execute(sql, (cid,))
            cur.execute("DELETE FROM customers WHERE customer_id = %s", (cid,))
        conn.commit()


def _in_target(cfg, ids: list[int]) -> list[int]:
    from billing_migration.stores import connections, schema

    with connections.cassandra_session(cfg) as s:
        return [c for c in ids
                if s.execute("SELECT customer_id FROM customer_billing WHERE customer_id=%s LIMIT 1", (c,)).one()
                or s.execute("SELECT customer_id FROM customers_by_country WHERE country=%s AND bucket=%s AND "
                             "customer_id=%s", (COUNTRY, schema.customer_bucket(c), c)).one()]


def test_customers_deleted_from_legacy_since_an_earlier_load_are_removed_wherever_their_ids_fall(
        cfg, fresh_countries):
    from billing_migration.country import export, pipeline
    from billing_migration.stores import write_gate

    fresh_countries(150, {COUNTRY: 1.0}, seed=21)  # 2 chunks
    p = _params(cfg)
    first = f"manual__deletes_a_{os.getpid()}_{time.time_ns()}"
    pipeline.disable_writes(cfg, p, first)
    (lane,) = pipeline.plan(cfg, p, first)
    for stage in (pipeline.export_lane, pipeline.transform_lane, pipeline.load_lane):
        stage(cfg, p, first, lane)
    pipeline.release_freeze(cfg, COUNTRY, first)  # that run failed later; its teardown released the country
    chunks = export.plan_chunks(cfg, COUNTRY, 100)
    gone = [chunks[0]["lo"], chunks[0]["hi"], chunks[-1]["hi"]]  # below, between and above the next plan
    _delete_customers(cfg, gone)
    assert _in_target(cfg, gone) == gone

    second = f"manual__deletes_b_{os.getpid()}_{time.time_ns()}"
    pipeline.disable_writes(cfg, p, second)
    (lane,) = pipeline.plan(cfg, p, second)
    for stage in (pipeline.export_lane, pipeline.transform_lane, pipeline.load_lane, pipeline.compare_lane):
        stage(cfg, p, second, lane)
    pipeline.enable_writes(cfg, p, second)
    assert write_gate.status(cfg, COUNTRY).cut_over
    assert _in_target(cfg, gone) == []
