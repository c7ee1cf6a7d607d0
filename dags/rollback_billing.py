"""One DAG per configured country: rollback_billing_<cc>, move a cut-over country back to legacy MySQL.

    rollback   (reverse sync → hold writes → reverse sync → compare → flip to legacy → replay held writes)

Zero loss: every write made on Cassandra reaches legacy before the flip, writes arriving meanwhile are queued
and replayed into legacy after it. On failure before the flip the country stays on Cassandra. Logic:
`billing_migration.online.rollback`; this file only wires it.
"""

from __future__ import annotations

from airflow.sdk import DAG, get_current_context, task
from billing_migration.config import load_config
from billing_migration.dag_defaults import dag_defaults

CFG = load_config()


def build(country: str) -> DAG:
    with DAG(
        dag_id=f"rollback_billing_{country.lower()}",
        description=f"Roll {country}'s billing back from Cassandra to legacy MySQL without losing a write",
        schedule=None,
        **dag_defaults("rollback", country),
        doc_md=__doc__,
    ) as dag:

        @task
        def rollback() -> dict:
            from billing_migration.online import rollback as rb

            return rb.run(CFG, country, get_current_context()["run_id"])

        rollback()
    return dag


for _cc in CFG.countries:
    globals()[f"rollback_billing_{_cc.lower()}"] = build(_cc)
