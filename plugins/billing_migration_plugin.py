"""The "Billing migration" plugin: a status page in the Airflow UI's navigation, a "Migration report" tab on
every run page, and the JSON API behind them. Logic and routes live in `billing_migration.ui`."""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin
from billing_migration.ui.app import PREFIX, create_app


class BillingMigrationPlugin(AirflowPlugin):
    name = "billing_migration"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": create_app(), "url_prefix": PREFIX, "name": "Billing migration"}]
    external_views: ClassVar[list[dict[str, Any]]] = [
        # a page of the navigation bar: every country's state at a glance
        {"name": "Billing migration", "href": "billing-migration/", "destination": "nav",
         "url_route": "billing-migration"},
        # a tab of each DAG run page: that run's report (migrate_billing_<cc> runs; other DAGs get a 404 line)
        {"name": "Migration report", "href": "billing-migration/runs/{DAG_ID}/{RUN_ID}/report",
         "destination": "dag_run", "url_route": "migration-report"},
    ]
