"""What every billing-migration DAG shares, in one place: a fixed start date in the past with no catch-up (runs
are triggered or scheduled from now on, never back-filled by accident), one run at a time per DAG (two runs of
one country, wave or night would race on its write gate, queues and S3 prefix), and tags that let the UI
filter by kind and country."""

from __future__ import annotations

from datetime import datetime
from typing import Any

START_DATE = datetime(2026, 1, 1)


def dag_defaults(kind: str, country: str | None = None) -> dict[str, Any]:
    """DAG(...) keyword arguments for a DAG of `kind` ('migrate', 'rollback', 'waves', 'nightly', ...)."""
    tags = ["billing-migration", kind] + ([f"country:{country.upper()}"] if country else [])
    return {"start_date": START_DATE, "catchup": False, "max_active_runs": 1, "tags": tags}
