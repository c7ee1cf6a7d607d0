"""Every file under dags/ imports cleanly and every DAG has the shape we promise."""

from __future__ import annotations

from pathlib import Path

DAGS = Path(__file__).resolve().parents[2] / "dags"


def test_dag_files_import_without_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}, bag.import_errors
    assert list(DAGS.glob("*.py")), "no DAG files"
    assert bag.dags, "no DAGs found"
