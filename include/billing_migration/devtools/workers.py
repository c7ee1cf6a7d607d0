"""Worker identity for several Celery workers on one host (scripts/celery-wave).

Airflow records each task instance's `hostname` from `[core] hostname_callable`; two workers on one machine
would both report the machine's name. Pointing that setting at `hostname` with `BM_WORKER_NAME` set per
worker makes the task instances say which worker ran them.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    """`BM_WORKER_NAME` when set (one per local worker), else the host's fully qualified name."""
    return os.environ.get("BM_WORKER_NAME") or socket.getfqdn()
