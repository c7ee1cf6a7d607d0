"""Test session setup: the real local stack, isolated per session by a namespace.

Integration tests talk to the servers `scripts/stack up` started (never to mocks). Each pytest session gets
its own BM_NAMESPACE, hence its own MySQL database, Cassandra keyspace and S3 prefix, dropped at the end
(keep them with BM_KEEP_TEST_DATA=1), so concurrent sessions and the demo never see each other's data.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_stack_env() -> None:
    env_file = Path(os.environ.get("BM_STATE_DIR", ROOT / ".state")) / "stack.env"
    if not env_file.exists():
        return
    for line in env_file.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export "):].partition("=")
            os.environ.setdefault(key, shlex.split(value)[0] if value else "")


_load_stack_env()
os.environ.setdefault("BM_NAMESPACE", f"t{os.getpid()}")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def cfg():
    from billing_migration.config import load_config

    return load_config()
