"""A run's change capture as the pipeline sees it: where it starts, how far it has caught up, what it touched.

Every call into the binlog reader (`online.changes`) goes through here, so the pipeline depends on one small
surface. The capture start is recorded in the run ledger (step `capture_start`, the position in `detail`)
before the plan: every change after it is replayed by catch-up, so a pre-copy that reads data written after
it is safe. A rerun or resume of the same run reuses that position, never a later one (a later one would
skip the changes made while the first attempt copied).
"""

from __future__ import annotations

import logging
from typing import Any

from billing_migration.config import Config
from billing_migration.stores import ledger

log = logging.getLogger(__name__)

START_STEP = "capture_start"


def changes():
    """The binlog reader module (imported late: it needs the replication client only when used)."""
    from billing_migration.online import changes as mod

    return mod


def pos_text(pos: Any) -> str:
    """A position as text for the ledger and logs ('binlog.000002:1234')."""
    return str(pos)


def pos_parse(text: str) -> Any:
    """The inverse of pos_text."""
    return changes().Position.parse(text)


def _start_entry(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    found = [e for e in entries if e["step"] == START_STEP and e["state"] == "succeeded" and e.get("detail")]
    return found[-1] if found else None


def start(cfg: Config, country: str, run_id: str) -> dict[str, Any]:
    """Record the capture start of this run (once; a rerun reuses it) and make it the first checkpoint."""
    entry = _start_entry(ledger.get_run(cfg, country, run_id))
    if entry is not None:
        log.info("capture %s: reusing this run's capture start %s", country, entry["detail"])
        return {"position": entry["detail"], "reused": True}
    mod = changes()
    ledger.start(cfg, country, run_id, START_STEP)
    try:
        pos = mod.current_position(cfg)
        mod.save_checkpoint(cfg, country, run_id, pos)
    except Exception as exc:
        ledger.fail(cfg, country, run_id, START_STEP, detail=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    text = pos_text(pos)
    ledger.finish(cfg, country, run_id, START_STEP, detail=text)
    log.info("capture %s: changes from %s on are replayed by catch-up", country, text)
    return {"position": text, "reused": False}


def start_position(cfg: Config, country: str, run_id: str,
                   entries: list[dict[str, Any]] | None = None) -> Any:
    entry = _start_entry(entries if entries is not None else ledger.get_run(cfg, country, run_id))
    if entry is None:
        from billing_migration.country.pipeline import MigrationError

        raise MigrationError(f"online run {run_id} of {country} has no recorded capture start; "
                             "clear the run from `begin`")
    return pos_parse(entry["detail"])


def last_checkpoint(cfg: Config, country: str, run_id: str) -> Any:
    """Where catch-up resumes: the last saved checkpoint of this run, else its capture start."""
    pos = changes().load_checkpoint(cfg, country, run_id)
    return pos if pos is not None else start_position(cfg, country, run_id)


def save_checkpoint(cfg: Config, country: str, run_id: str, pos: Any) -> None:
    changes().save_checkpoint(cfg, country, run_id, pos)


def read(cfg: Config, country: str, start_pos: Any, stop: Any = None) -> Any:
    """Changes of the country from `start_pos` (to `stop`, or to now): .customers, .events, .end, .lag_s."""
    mod = changes()
    if stop is None:
        return mod.read_changes(cfg, country, start_pos)
    return mod.read_changes(cfg, country, start_pos, stop)


def current_position(cfg: Config) -> Any:
    return changes().current_position(cfg)


def is_purged(exc: BaseException) -> bool:
    cls = getattr(changes(), "BinlogPurgedError", None)
    return cls is not None and isinstance(exc, cls)


def touched_since_start(cfg: Config, country: str, run_id: str) -> set[int]:
    """Customers of the country changed since this run's capture start (deletes included)."""
    return {int(c) for c in read(cfg, country, start_position(cfg, country, run_id)).customers}


def require_capture_before_plan(cfg: Config, country: str, run_id: str,
                                entries: list[dict[str, Any]] | None = None) -> None:
    """A chunked step of an online run is safe only if the capture started before the chunks were planned."""
    from billing_migration.country.pipeline import MigrationError

    if entries is None:
        entries = ledger.get_run(cfg, country, run_id)
    entry = _start_entry(entries)
    if entry is None:
        raise MigrationError(f"{country}: no capture start recorded for online run {run_id} before the plan; "
                             "clear the run from `begin`")
    planned = [e for e in entries
               if e["step"] == "plan" and e["state"] == "succeeded" and (e.get("part") is None or e["part"] < 0)]
    if planned and planned[-1]["started_at"] < entry["started_at"]:
        raise MigrationError(f"{country}: the plan ({planned[-1]['started_at']}) precedes the capture start "
                             f"({entry['started_at']}); clear the run from `begin`")
