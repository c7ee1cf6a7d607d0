"""Airflow local settings of the Celery deployments (scripts/celery-wave, docker-compose): imported by every
Airflow process before it loads an executor (put this folder's file in $AIRFLOW_HOME/config/).

Compatibility shim: apache-airflow-providers-celery 3.26.0 imports `retry` from `celery.backends.database`,
which celery 5.7.0 removed (its DatabaseBackend retries by itself now). Without the name, the scheduler cannot
load the CeleryExecutor and `airflow celery worker` fails at import. This restores the decorator with the
behaviour it had in celery 5.5 (retry a result-backend DB call up to `max_retries` times). Remove it once the
pins hold a celery with `retry` or a provider that does not import it.
"""

from __future__ import annotations

import functools
import logging


def _restore_celery_database_retry() -> None:
    try:
        import celery.backends.database as db
    except ImportError:  # no celery here: nothing to fix
        return
    if hasattr(db, "retry"):
        return
    from sqlalchemy.exc import DatabaseError, InvalidRequestError
    from sqlalchemy.orm.exc import StaleDataError

    log = logging.getLogger("celery.backends.database")

    def retry(fun):
        @functools.wraps(fun)
        def _inner(*args, **kwargs):
            max_retries = kwargs.pop("max_retries", 3)
            for attempt in range(max_retries):
                try:
                    return fun(*args, **kwargs)
                except (DatabaseError, InvalidRequestError, StaleDataError):
                    log.warning("Failed operation %s; retrying %d more times", fun.__name__,
                                max_retries - attempt - 1, exc_info=True)
                    if attempt + 1 >= max_retries:
                        raise
            return None
        return _inner

    db.retry = retry


_restore_celery_database_retry()
