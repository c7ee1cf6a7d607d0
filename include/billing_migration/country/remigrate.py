"""Re-migrate whole customers that the comparator found different: export -> transform -> load again.

A customer is always rewritten as a complete partition (load's DELETE + INSERT batch), never patched field
by field, so whatever was wrong (missing row, extra row, stale value) is gone after one pass. The export uses
chunk number `REMIGRATE_CHUNK_BASE + round_no * 100000 + source_chunk`, which cannot collide with a normal
chunk's files nor with another lane's repair in the same round.
Customers the source no longer has for this country are "extra" in the target: their partition and index
entry are deleted.
"""

from __future__ import annotations

import logging
from typing import Any

from billing_migration.config import Config, normalize_country
from billing_migration.country import export, load, transform
from billing_migration.stores import connections, schema

log = logging.getLogger(__name__)

REMIGRATE_CHUNK_BASE = 10_000_000  # above any real chunk number


def remigrate_customers(cfg: Config, country: str, run_id: str, customer_ids: list[int],
                        round_no: int, source_chunk: int = 0) -> dict[str, Any]:
    """Rewrite the complete partition of each customer in `customer_ids`; returns the stage counts.

    `source_chunk` (the compared chunk) keeps the files of lanes repairing in the same round apart.
    """
    country = normalize_country(country)
    ids = sorted({int(c) for c in customer_ids})
    if not ids:
        return {"customers": 0}
    if not 0 <= round_no < 10000:
        raise ValueError(f"round_no must be in [0, 10000), got {round_no}")
    if not 0 <= source_chunk < 100_000:
        raise ValueError(f"source_chunk must be in [0, 100000), got {source_chunk}")
    chunk = REMIGRATE_CHUNK_BASE + round_no * 100_000 + source_chunk
    manifest = export.export_chunk(cfg, country, run_id, {"chunk": chunk, "lo": ids[0], "hi": ids[-1]},
                                   customer_ids=ids)
    counts = transform.transform_chunk(cfg, country, run_id, chunk)
    loaded = load.load_chunk(cfg, country, run_id, chunk)
    exported = _exported_customers(cfg, country, run_id, chunk)
    gone = [c for c in ids if c not in exported]
    if gone:
        _delete_partitions(cfg, country, gone)
    log.info("remigrate %s round %d: %d customers requested, %d reloaded, %d absent from source (deleted)",
             country, round_no, len(ids), loaded["customers"], len(gone))
    return {"chunk": chunk, "customers": len(ids), "exported_rows": manifest["rows"],
            "rejects": counts["rejects"], "loaded_customers": loaded["customers"], "rows": loaded["rows"],
            "deleted_absent": len(gone), "timeouts_retried": loaded["timeouts_retried"]}


def _exported_customers(cfg: Config, country: str, run_id: str, chunk: int) -> set[int]:
    from billing_migration.stores import s3io

    client = export.s3_client(cfg)
    t = s3io.get_parquet(client, cfg.s3_bucket, s3io.table_key(cfg, country, run_id, "customers", chunk),
                         columns=["customer_id"])
    return set(t.column("customer_id").to_pylist())


def _delete_partitions(cfg: Config, country: str, ids: list[int]) -> None:
    with connections.cassandra_session(cfg) as session:
        part = session.prepare("DELETE FROM customer_billing WHERE customer_id = ?")
        entry = session.prepare("DELETE FROM customers_by_country WHERE country = ? AND bucket = ? "
                                "AND customer_id = ?")
        w = load.AsyncWriter(session, 32)
        for cid in ids:
            w.submit(cid, part.bind((cid,)))
        w.drain()
        w.raise_failures("absent customers' partitions")
        for cid in ids:
            w.submit(cid, entry.bind((country, schema.customer_bucket(cid), cid)))
        w.drain()
        w.raise_failures("absent customers' index entries")
