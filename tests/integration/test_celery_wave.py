"""The wave DAG through a real scheduler and two Celery workers (scripts/celery-wave): the trigger-and-await
path dag.test() cannot run. The script asserts (and fails otherwise) that both workers ran task instances,
both countries cut over, the wave's reconciliation and an independent compare are clean, and no worker left
a local file behind; it stops everything it started and drops its namespace.

In the default run (`make test` starts Redis and sets BM_CELERY_WAVE=1): about 5 minutes on a quiet 2-core host
(Airflow up ~1 min, the wave ~2.5 min, stopping and dropping ~30 s). Alone: `make celery-wave`, or
`BM_CELERY_WAVE=1 pytest tests/integration/test_celery_wave.py` after `scripts/stack up --celery`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not os.environ.get("BM_CELERY_WAVE"), reason="needs BM_CELERY_WAVE=1 and Redis (make test)")
def test_a_wave_of_two_countries_runs_on_two_celery_workers(stack_ready):
    env_file = Path(os.environ.get("BM_STATE_DIR", ROOT / ".state")) / "stack.env"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "BM_NAMESPACE"))}
    env["BM_STACK_ENV"] = str(env_file)
    proc = subprocess.run([str(ROOT / "scripts" / "celery-wave"), "200", "2", "IE,CH"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "[celery-wave] OK: every country cut over, compare clean, tasks on worker-a, worker-b" in out, out[-2000:]
    assert "reconciliation wave1 IE:" in out and "reconciliation wave1 CH:" in out
