"""Measurement primitives: run work in child processes and read exactly that child's resource usage.

Each stage run is its own process (`python -m bench.worker`) so one stage's imports, caches and heap never
inflate another's peak memory. CPU: the parent waits with `os.wait4(pid)`, which returns the rusage of that
one child (RUSAGE_CHILDREN would mix every child ever waited for).

Peak memory is NOT taken from ru_maxrss: on Linux a child's ru_maxrss starts at the parent's high-water mark
at fork (exec records the forked copy's VmHWM in the process's signal struct), so every child of a 470 MB
parent "peaks" at >= 470 MB. Instead: VmHWM of the child's own post-exec address space, reported by our
workers from /proc/self/status just before they exit, and polled from /proc/<pid>/status every few ms for
peers (VmHWM only grows, so the last reading is the peak unless it rose in the last few ms).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ProcUsage:
    """What one child process cost: wall (parent's clock), peak RSS and CPU from wait4."""

    returncode: int
    wall_s: float
    maxrss_mb: float
    cpu_s: float
    stdout: str = ""
    stderr: str = ""


def vm_hwm_mb(pid: int | str = "self") -> float | None:
    """VmHWM (peak RSS of the current address space) of a process in MB, None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _wait(pid: int, deadline: float, kill) -> tuple[int, Any, float]:
    """wait4 one child, polling its VmHWM meanwhile; kills it past the deadline. (status, rusage, peak MB)."""
    peak = 0.0
    while True:
        hwm = vm_hwm_mb(pid)
        if hwm:
            peak = max(peak, hwm)
        done, status, ru = os.wait4(pid, os.WNOHANG)
        if done:
            return status, ru, peak
        if time.perf_counter() > deadline:
            kill()
            _, status, ru = os.wait4(pid, 0)
            return status, ru, peak
        time.sleep(0.005)


def run_process(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
                timeout_s: float = 3600.0, stdout_path: str | None = None) -> ProcUsage:
    """Run argv to completion; wall time, peak RSS and user+sys CPU of exactly this child."""
    out = open(stdout_path, "wb") if stdout_path else tempfile.TemporaryFile()  # noqa: SIM115
    err = tempfile.TemporaryFile()  # noqa: SIM115
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd or ROOT, stdout=out, stderr=err)
    status, ru, peak = _wait(proc.pid, t0 + timeout_s, proc.kill)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # tell Popen the child is reaped
    text_out = ""
    if not stdout_path:
        out.seek(0)
        text_out = out.read().decode(errors="replace")
    out.close()
    err.seek(0)
    text_err = err.read().decode(errors="replace")
    err.close()
    return ProcUsage(proc.returncode, wall, peak, ru.ru_utime + ru.ru_stime, text_out, text_err)


@dataclass
class Sample:
    """One repetition of one measured thing (a stage, a peer, a parallel run)."""

    wall_s: float  # the measured work only (the worker's own timer around the stage call, or the tool's)
    process_wall_s: float  # whole child process(es), start-up included
    maxrss_mb: float  # peak RSS of the largest child
    sum_maxrss_mb: float  # sum of the children's peaks (parallel runs)
    cpu_s: float  # user+sys of all children, whole process lifetime
    stage_cpu_s: float | None = None  # user+sys inside the measured call only (ours), if known
    prepare_s: float | None = None  # imports + first connections before the clock starts (ours)
    counts: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class StageFailed(RuntimeError):
    """A worker exited non-zero; carries the tail of its stderr so the report can say why."""


def run_workers(specs: list[dict[str, Any]], env: dict[str, str], timeout_s: float = 3600.0) -> Sample:
    """Run one worker per spec at the same time (1 spec = sequential run) and combine into one Sample.

    wall = longest worker's own stage time; counts are summed over workers.
    """
    procs = []
    t0 = time.perf_counter()
    # The stages' progress lines (billing_migration.progress) go live to the harness's stderr, on a copy of
    # it passed to each worker (the worker's own stderr is captured for failure reports).
    progress_fd = os.dup(sys.stderr.fileno())
    env = {**env, "BM_PROGRESS_FD": str(progress_fd)}
    sync_dir = tempfile.mkdtemp(prefix="bench-sync-") if len(specs) > 1 else None
    for i, spec in enumerate(specs):
        fd, result_path = tempfile.mkstemp(prefix="bench-", suffix=".json")
        os.close(fd)
        spec = {**spec, "result_path": result_path}
        if sync_dir:
            spec.update(ready_path=f"{sync_dir}/ready-{i}", go_path=f"{sync_dir}/go")
        err = tempfile.TemporaryFile()  # noqa: SIM115
        p = subprocess.Popen([sys.executable, "-m", "bench.worker", json.dumps(spec)], env=env, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=err, pass_fds=(progress_fd,))
        procs.append((p, err, result_path))
    if sync_dir:
        _release_when_ready(sync_dir, procs, timeout_s)
    usages = []
    failures = []
    for p, err, result_path in procs:
        remaining = max(1.0, timeout_s - (time.perf_counter() - t0))
        status, ru, polled = _wait(p.pid, time.perf_counter() + remaining, p.kill)
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace")[-3000:]
        err.close()
        result: dict[str, Any] = {}
        try:
            with open(result_path) as fh:
                result = json.load(fh)
        except (OSError, ValueError):
            pass
        finally:
            Path(result_path).unlink(missing_ok=True)
        if p.returncode != 0 or "error" in result:
            failures.append(result.get("error") or f"exit {p.returncode}: {tail}")
        result.setdefault("vm_hwm_mb", polled)  # the worker's own reading when it got that far
        usages.append((ru, result))
    process_wall = time.perf_counter() - t0
    os.close(progress_fd)
    if sync_dir:
        shutil.rmtree(sync_dir, ignore_errors=True)
    if failures:
        raise StageFailed(failures[0])
    counts: dict[str, Any] = {}
    for _, result in usages:
        for k, v in (result.get("counts") or {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                counts[k] = counts.get(k, 0) + v
    return Sample(
        # parallel workers: from the first start to the last end (they start together after the barrier)
        wall_s=(max(r["t_end"] for _, r in usages) - min(r["t_start"] for _, r in usages)) if len(usages) > 1
        else usages[0][1]["wall_s"],
        process_wall_s=process_wall,
        maxrss_mb=max(r["vm_hwm_mb"] for _, r in usages),
        sum_maxrss_mb=sum(r["vm_hwm_mb"] for _, r in usages),
        cpu_s=sum(ru.ru_utime + ru.ru_stime for ru, _ in usages),
        stage_cpu_s=sum(r.get("stage_cpu_s", 0.0) for _, r in usages),
        prepare_s=max(r.get("prepare_s", 0.0) for _, r in usages),
        counts=counts,
    )


def _exited(pid: int) -> bool:
    """True once the child is a zombie (not reaped: wait4 must still get its rusage, so no poll())."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _release_when_ready(sync_dir: str, procs: list, timeout_s: float) -> None:
    """Wait until every worker has imported and connected (or died), then let them all start at once."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        ready = sum(os.path.exists(f"{sync_dir}/ready-{i}") or _exited(p.pid) for i, (p, _, _) in enumerate(procs))
        if ready == len(procs):
            break
        time.sleep(0.01)
    Path(f"{sync_dir}/go").write_text("go")


# ------------------------------------------------------------------------------------------- statistics
def summarize(samples: list[Sample], work: dict[str, float] | None = None) -> dict[str, Any]:
    """Medians (and min/max) over repetitions; throughputs computed per repetition, then the median.

    `work` maps a unit name (rows, partitions, MB) to the amount of work one repetition did; when absent,
    the units come from each sample's own counts.
    """
    if not samples:
        raise ValueError("no samples to summarize")

    def med(values: list[float]) -> float:
        return float(statistics.median(values))

    out: dict[str, Any] = {
        "repeats": len(samples),
        "wall_s": med([s.wall_s for s in samples]),
        "wall_s_min": min(s.wall_s for s in samples),
        "wall_s_max": max(s.wall_s for s in samples),
        "process_wall_s": med([s.process_wall_s for s in samples]),
        "maxrss_mb": med([s.maxrss_mb for s in samples]),
        "sum_maxrss_mb": med([s.sum_maxrss_mb for s in samples]),
        "cpu_s": med([s.cpu_s for s in samples]),
    }
    prep = [s.prepare_s for s in samples if s.prepare_s is not None]
    if prep:
        out["prepare_s"] = med(prep)
    stage_cpu = [s.stage_cpu_s for s in samples if s.stage_cpu_s is not None]
    if stage_cpu:
        out["stage_cpu_s"] = med(stage_cpu)
    units = dict(work or {})
    if not units:
        for k, v in samples[0].counts.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                units[k] = float(v)
    for unit, amount in units.items():
        rates = [amount / s.wall_s for s in samples if s.wall_s > 0]
        if rates:
            out[f"{unit}_per_s"] = med(rates)
    out["counts"] = samples[0].counts
    return out


def ratio(ours: float | None, peer: float | None) -> float | None:
    """ours/peer for a figure (None when either side is missing or the peer is zero)."""
    if ours is None or peer is None or peer == 0:
        return None
    return ours / peer
