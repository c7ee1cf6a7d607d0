"""The migration run ledger in Cassandra: per country, run, step and part (chunk), what happened.

Why here and why this shape:
- Resume, the run report and operators all read this one history (`migration_ledger`, partition = country),
  so a retried task knows which chunks are already done and a report is built from facts, not from task
  return values.
- Each write sets only the columns it knows (no nulls written for unknown values): `finish()` after
  `start()` keeps the start time; `start()` of a retried part clears the previous attempt's end, counts and
  error so the row always describes the latest attempt.
- One driver Cluster per process (and per keyspace) is reused: the pipeline writes two ledger rows per chunk
  and per step, and connecting costs far more than the write. The cache is keyed by pid so a forked task
  process never reuses its parent's sockets.
"""

from __future__ import annotations

import atexit
import os
import threading
from datetime import UTC, datetime
from typing import Any

from billing_migration.config import Config, normalize_country
from billing_migration.stores import connections

STATES = ("running", "succeeded", "failed", "skipped")
DONE_STATES = frozenset({"succeeded", "skipped"})

_lock = threading.Lock()
_sessions: dict[tuple[int, str], Any] = {}


def _session(cfg: Config):
    """A cached unbound session for this process (statements name the keyspace)."""
    key = (os.getpid(), cfg.connections["cassandra"])
    with _lock:
        sess = _sessions.get(key)
        if sess is None or sess.is_shutdown:
            cluster = connections.cassandra_cluster(cfg)
            sess = cluster.connect()
            _sessions[key] = sess
            atexit.register(cluster.shutdown)
        return sess


def _now() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _check(country: str, run_id: str, step: str, state: str | None, part: int) -> str:
    cc = normalize_country(country)
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"run_id must be a non-empty string, got {run_id!r}")
    if not isinstance(step, str) or not step:
        raise ValueError(f"step must be a non-empty string, got {step!r}")
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {state!r}")
    if isinstance(part, bool) or not isinstance(part, int) or part < -1:
        raise ValueError(f"part must be an integer >= -1 (-1: the whole step), got {part!r}")
    return cc


def _counts(counts: dict[str, Any] | None) -> dict[str, int] | None:
    if counts is None:
        return None
    out: dict[str, int] = {}
    for k, v in counts.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"ledger counts must be numbers, got {k}={v!r}")
        out[str(k)] = int(v)
    return out


def record(cfg: Config, country: str, run_id: str, step: str, state: str, counts: dict | None = None,
           part: int = -1, detail: str | None = None, started_at: datetime | None = None,
           ended_at: datetime | None = None, *, _clear: bool = False) -> None:
    """Upsert one ledger row; only the given values are written (None leaves a column as it was)."""
    cc = _check(country, run_id, step, state, part)
    values: dict[str, Any] = {"state": state}
    if counts is not None:
        values["counts"] = _counts(counts)
    if detail is not None:
        values["detail"] = detail[:8000]
    if started_at is not None:
        values["started_at"] = started_at
    if ended_at is not None:
        values["ended_at"] = ended_at
    if _clear:
        for col in ("counts", "detail", "ended_at"):
            values.setdefault(col, None)
    ks = cfg.cassandra_keyspace
    sets = ", ".join(f"{c} = %s" for c in values)
    _session(cfg).execute(
        f"UPDATE {ks}.migration_ledger SET {sets} WHERE country = %s AND run_id = %s AND step = %s AND part = %s",
        (*values.values(), cc, run_id, step, part))


def start(cfg: Config, country: str, run_id: str, step: str, part: int = -1, detail: str | None = None) -> None:
    """Mark a step (or one part of it) running; clears what an earlier attempt left."""
    record(cfg, country, run_id, step, "running", part=part, detail=detail, started_at=_now(), _clear=True)


def finish(cfg: Config, country: str, run_id: str, step: str, part: int = -1, counts: dict | None = None,
           detail: str | None = None) -> None:
    record(cfg, country, run_id, step, "succeeded", counts=counts, part=part, detail=detail, ended_at=_now())


def fail(cfg: Config, country: str, run_id: str, step: str, part: int = -1, detail: str | None = None,
         counts: dict | None = None) -> None:
    record(cfg, country, run_id, step, "failed", counts=counts, part=part, detail=detail, ended_at=_now())


def skip(cfg: Config, country: str, run_id: str, step: str, part: int = -1, detail: str | None = None) -> None:
    record(cfg, country, run_id, step, "skipped", part=part, detail=detail, ended_at=_now())


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


_COLS = ("country", "run_id", "step", "part", "state", "started_at", "ended_at", "counts", "detail")


def _rows(cfg: Config, where: str, args: tuple) -> list[dict[str, Any]]:
    rs = _session(cfg).execute(
        f"SELECT {', '.join(_COLS)} FROM {cfg.cassandra_keyspace}.migration_ledger WHERE {where}", args)
    out = []
    for r in rs:
        d = dict(zip(_COLS, r, strict=True))
        d["started_at"], d["ended_at"] = _utc(d["started_at"]), _utc(d["ended_at"])
        d["counts"] = dict(d["counts"] or {})
        out.append(d)
    return out


def get_run(cfg: Config, country: str, run_id: str) -> list[dict[str, Any]]:
    """Every ledger row of one run (step, part order); timestamps are UTC-aware datetimes."""
    return _rows(cfg, "country = %s AND run_id = %s", (normalize_country(country), run_id))


def completed_parts(cfg: Config, country: str, run_id: str, step: str) -> set[int]:
    """Parts (chunks) of a step already succeeded or skipped in this run: what a resumed task skips."""
    rows = _rows(cfg, "country = %s AND run_id = %s AND step = %s", (normalize_country(country), run_id, step))
    return {r["part"] for r in rows if r["state"] in DONE_STATES and r["part"] >= 0}


def last_runs(cfg: Config, country: str, limit: int = 10) -> list[dict[str, Any]]:
    """The country's latest runs, newest first: run_id, state, started_at, ended_at, steps, failed_steps.

    A run is `failed` if any row failed (and was not retried to success), `running` if any row still runs,
    else `succeeded`.
    """
    runs: dict[str, dict[str, Any]] = {}
    for r in _rows(cfg, "country = %s", (normalize_country(country),)):
        run = runs.setdefault(r["run_id"], {"run_id": r["run_id"], "country": r["country"], "started_at": None,
                                            "ended_at": None, "steps": [], "failed_steps": [], "running": []})
        if r["step"] not in run["steps"]:
            run["steps"].append(r["step"])
        if r["state"] == "failed" and r["step"] not in run["failed_steps"]:
            run["failed_steps"].append(r["step"])
        if r["state"] == "running":
            run["running"].append(r["step"])
        for bound, pick in (("started_at", min), ("ended_at", max)):
            v = r[bound]
            if v is not None:
                run[bound] = v if run[bound] is None else pick(run[bound], v)
    for run in runs.values():
        run["state"] = "failed" if run["failed_steps"] else "running" if run.pop("running") else "succeeded"
    epoch = datetime.min.replace(tzinfo=UTC)
    ordered = sorted(runs.values(), key=lambda x: x["started_at"] or epoch, reverse=True)
    return ordered[:max(0, int(limit))]


# ------------------------------------------------------------------------- online mode: reader checkpoints
def save_cdc_checkpoint(cfg: Config, country: str, run_id: str, log_file: str, log_seq: int, log_pos: int,
                        counts: dict | None = None) -> None:
    """Record that the change reader of a run has handled every binlog event before (log_file, log_pos)."""
    cc = _check(country, run_id, "cdc_checkpoint", None, -1)
    _session(cfg).execute(
        f"INSERT INTO {cfg.cassandra_keyspace}.cdc_checkpoints (country, run_id, log_seq, log_pos, log_file, "
        "saved_at, counts) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (cc, run_id, int(log_seq), int(log_pos), log_file, _now(), _counts(counts or {})))


def load_cdc_checkpoint(cfg: Config, country: str, run_id: str) -> dict[str, Any] | None:
    """The run's furthest checkpoint (log_file, log_pos, saved_at, counts), or None if it saved none."""
    cc = _check(country, run_id, "cdc_checkpoint", None, -1)
    row = _session(cfg).execute(
        f"SELECT log_file, log_pos, saved_at, counts FROM {cfg.cassandra_keyspace}.cdc_checkpoints "
        "WHERE country = %s AND run_id = %s LIMIT 1", (cc, run_id)).one()
    if row is None:
        return None
    return {"log_file": row.log_file, "log_pos": int(row.log_pos), "saved_at": _utc(row.saved_at),
            "counts": dict(row.counts or {})}
