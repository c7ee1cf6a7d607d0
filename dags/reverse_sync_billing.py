"""reverse_sync_billing: every 5 minutes, mirror the writes made on Cassandra back to legacy MySQL.

    reverse_sync      (every cut-over country: drain its reverse-sync FIFO queue into the legacy copy)

Keeps legacy current for a zero-loss rollback and for the legacy consumers. Fails when a write ended in a
dead-letter queue (on Cassandra, missing from legacy). The nightly DAG drains the same queues before it
snapshots. Logic: `billing_migration.app.replay`; this file only wires it.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, task
from billing_migration.config import load_config
from billing_migration.dag_defaults import dag_defaults

CFG = load_config()

with DAG(
    dag_id="reverse_sync_billing",
    description="Mirror cut-over countries' Cassandra writes to legacy MySQL (reverse-sync queues)",
    schedule=timedelta(minutes=5),
    **dag_defaults("reverse-sync"),
    doc_md=__doc__,
) as dag:

    @task(retries=2, retry_delay=timedelta(seconds=30))
    def reverse_sync() -> dict:
        from billing_migration.app import replay

        return replay.reverse_sync_all(CFG)

    reverse_sync()
