"""Child-process entry point: run one stage over a list of chunks and write what it did as JSON.

    python -m bench.worker '{"stage": "export", "country": "NZ", "run_id": "...", "chunks": [...],
                             "result_path": "/tmp/x.json", "profile_path": null, ...}'

Only the stage call itself is timed (wall via perf_counter, CPU via getrusage(RUSAGE_SELF) deltas, all
threads); imports and connection set-up happen before the clock starts, in `stages.prepare`.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from typing import Any


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _barrier(spec: dict[str, Any], timeout_s: float = 300.0) -> None:
    """Parallel runs: say ready, then wait for the parent's go, so all workers start the stage together."""
    if not spec.get("go_path"):
        return
    with open(spec["ready_path"], "w") as fh:
        fh.write("ready")
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(spec["go_path"]):
        if time.monotonic() > deadline:
            raise TimeoutError("parent never said go")
        time.sleep(0.01)


def _show_progress() -> None:
    """Progress lines of the stage to the harness's stderr (the fd it passed in BM_PROGRESS_FD)."""
    import logging

    fd = os.environ.get("BM_PROGRESS_FD")
    if not fd:
        return
    handler = logging.StreamHandler(os.fdopen(int(fd), "w", buffering=1))
    handler.setFormatter(logging.Formatter("[bench %(asctime)s]     %(message)s", "%H:%M:%S"))
    progress_log = logging.getLogger("billing_migration.progress")
    progress_log.addHandler(handler)
    progress_log.setLevel(logging.INFO)
    progress_log.propagate = False


def main(raw: str) -> int:
    spec: dict[str, Any] = json.loads(raw)
    _show_progress()
    result: dict[str, Any] = {}
    try:
        from bench import stages

        p0 = time.perf_counter()
        fn = stages.prepare(spec)
        prepare_s = time.perf_counter() - p0
        _barrier(spec)
        profiler = None
        if spec.get("profile_path"):
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        c0, t0, e0 = _cpu(), time.perf_counter(), time.time()
        counts = fn()
        wall = time.perf_counter() - t0
        e1 = time.time()
        cpu = _cpu() - c0
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(spec["profile_path"])
        # a stage that runs one of its tasks in a child process (as the DAG does) reports the child's peak
        # RSS and CPU in its counts: the stage's peak is the larger process's, its CPU both processes'
        cpu += float(counts.get("child_cpu_s", 0.0)) if isinstance(counts, dict) else 0.0
        result = {"wall_s": wall, "stage_cpu_s": cpu, "counts": counts, "t_start": e0, "t_end": e1,
                  "prepare_s": prepare_s}
    except Exception as exc:  # the parent reports it; a benchmark never hides a failing stage
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
    from bench.measure import vm_hwm_mb

    counts = result.get("counts")
    child_peak = float(counts.get("child_peak_mb", 0.0)) if isinstance(counts, dict) else 0.0
    result["vm_hwm_mb"] = max(vm_hwm_mb() or 0.0, child_peak)
    with open(spec["result_path"], "w") as fh:
        json.dump(result, fh, default=str)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
