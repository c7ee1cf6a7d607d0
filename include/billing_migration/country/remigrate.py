"""Re-migrate whole customers: export -> transform -> load again, the one validated write path to Cassandra.

The migration's compare rounds and the nightly re-sync (`nightly.reconcile.resync_customers`) both come
through here, so every write to `customer_billing` gets the transform's validation and rejects (a zero date
is a reject, never a NULL) and load's partition-replacing UNLOGGED batches (UNSET for nulls: no tombstones),
with the run's rate limit and concurrency.

A customer is always rewritten as a complete partition (load's DELETE + INSERT batch), never patched field
by field, so whatever was wrong (missing row, extra row, stale value) is gone after one pass. The export uses
chunk number `REMIGRATE_CHUNK_BASE + round_no * 100000 + source_chunk`, which cannot collide with a normal
chunk's files nor with another lane's repair in the same round.
Customers the source no longer has for this country are "extra" in the target: their partition and index
entry are deleted.

Two steps, so a caller can validate everything before writing anything: `stage` (export + transform, S3
only) then `write` (Cassandra).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from billing_migration.config import Config, normalize_country
from billing_migration.country import export, load, transform
from billing_migration.stores import connections, s3io, schema

log = logging.getLogger(__name__)

REMIGRATE_CHUNK_BASE = 10_000_000  # above any real chunk number


@dataclass(frozen=True)
class Staged:
    """Customers exported and transformed under one run and chunk, not yet written to Cassandra."""

    country: str
    run_id: str
    chunk: int
    requested: tuple[int, ...]
    exported: frozenset[int]
    exported_rows: int
    rejects: int

    @property
    def absent(self) -> list[int]:
        """Requested customers the source no longer has for this country (their partitions get deleted)."""
        return [c for c in self.requested if c not in self.exported]


def chunk_number(round_no: int, source_chunk: int = 0) -> int:
    if not 0 <= round_no < 10000:
        raise ValueError(f"round_no must be in [0, 10000), got {round_no}")
    if not 0 <= source_chunk < 100_000:
        raise ValueError(f"source_chunk must be in [0, 100000), got {source_chunk}")
    return REMIGRATE_CHUNK_BASE + round_no * 100_000 + source_chunk


def stage(cfg: Config, country: str, run_id: str, customer_ids: list[int], chunk: int) -> Staged:
    """Export the customers (one consistent snapshot) and transform them; writes transformed/ and rejects/."""
    country = normalize_country(country)
    ids = tuple(sorted({int(c) for c in customer_ids}))
    if not ids:
        raise ValueError("customer_ids is empty: nothing to re-migrate")
    manifest = export.export_chunk(cfg, country, run_id, {"chunk": chunk, "lo": ids[0], "hi": ids[-1]},
                                   customer_ids=list(ids))
    counts = transform.transform_chunk(cfg, country, run_id, chunk)
    return Staged(country, run_id, chunk, ids, frozenset(_exported_customers(cfg, country, run_id, chunk)),
                  int(manifest["rows"]), int(counts["rejects"]))


def rejects_key(cfg: Config, staged: Staged) -> str:
    return s3io.stage_key(cfg, staged.country, staged.run_id, "rejects", staged.chunk)


def write(cfg: Config, staged: Staged, concurrency: int, rate_limit_rows_per_s: int) -> dict[str, Any]:
    """Load the staged rows (whole partitions) and delete the partitions of absent customers."""
    loaded = load.load_chunk(cfg, staged.country, staged.run_id, staged.chunk, concurrency=concurrency,
                             rate_limit_rows_per_s=rate_limit_rows_per_s)
    if staged.absent:
        _delete_partitions(cfg, staged.country, staged.absent, concurrency)
    return {"chunk": staged.chunk, "customers": len(staged.requested), "exported_rows": staged.exported_rows,
            "rejects": staged.rejects, "loaded_customers": loaded["customers"], "rows": loaded["rows"],
            "deleted_absent": len(staged.absent), "timeouts_retried": loaded["timeouts_retried"],
            "load_seconds": loaded["seconds"], "rows_per_s": loaded["rows_per_s"], "concurrency": concurrency,
            "rate_limit_rows_per_s": rate_limit_rows_per_s}


def write_settings(cfg: Config, country: str, concurrency: int | None,
                   rate_limit_rows_per_s: int | None) -> tuple[int, int]:
    """The run's values when given, else the country's configured ones (never silently unthrottled)."""
    settings = cfg.countries.get(normalize_country(country), cfg.defaults)
    conc = settings.load_concurrency if concurrency is None else int(concurrency)
    rate = settings.rate_limit_rows_per_s if rate_limit_rows_per_s is None else int(rate_limit_rows_per_s)
    if conc < 1:
        raise ValueError(f"concurrency must be >= 1, got {conc}")
    if rate < 0:
        raise ValueError(f"rate_limit_rows_per_s must be >= 0 (0: unthrottled), got {rate}")
    return conc, rate


def remigrate_customers(cfg: Config, country: str, run_id: str, customer_ids: list[int],
                        round_no: int, source_chunk: int = 0, *, concurrency: int | None = None,
                        rate_limit_rows_per_s: int | None = None) -> dict[str, Any]:
    """Rewrite the complete partition of each customer in `customer_ids`; returns the stage counts.

    `source_chunk` (the compared chunk) keeps the files of lanes repairing in the same round apart.
    `concurrency` / `rate_limit_rows_per_s`: the run's load settings (default: the country's configured ones).
    """
    country = normalize_country(country)
    if not customer_ids:
        return {"customers": 0}
    conc, rate = write_settings(cfg, country, concurrency, rate_limit_rows_per_s)
    staged = stage(cfg, country, run_id, customer_ids, chunk_number(round_no, source_chunk))
    out = write(cfg, staged, conc, rate)
    log.info("remigrate %s round %d: %d customers requested, %d reloaded, %d absent from source (deleted), "
             "%d rejects", country, round_no, out["customers"], out["loaded_customers"], out["deleted_absent"],
             out["rejects"])
    return out


def _exported_customers(cfg: Config, country: str, run_id: str, chunk: int) -> set[int]:
    client = s3io.client(cfg)
    t = s3io.get_parquet(client, cfg.s3_bucket, s3io.table_key(cfg, country, run_id, "customers", chunk),
                         columns=["customer_id"])
    return set(t.column("customer_id").to_pylist())


def _delete_partitions(cfg: Config, country: str, ids: list[int], concurrency: int = 32) -> None:
    with connections.cassandra_session(cfg) as session:
        part = session.prepare("DELETE FROM customer_billing WHERE customer_id = ?")
        entry = session.prepare("DELETE FROM customers_by_country WHERE country = ? AND bucket = ? "
                                "AND customer_id = ?")
        w = load.AsyncWriter(session, concurrency)
        for cid in ids:
            w.submit(cid, part.bind((cid,)))
        w.drain()
        w.raise_failures("absent customers' partitions")
        for cid in ids:
            w.submit(cid, entry.bind((country, schema.customer_bucket(cid), cid)))
        w.drain()
        w.raise_failures("absent customers' index entries")
