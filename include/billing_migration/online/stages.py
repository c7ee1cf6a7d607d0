"""The mode-dependent tasks of the per-country DAG (`begin`, `catch_up`, `cutover`), for both modes.

offline: begin = freeze (the whole copy runs frozen), catch_up = nothing, cutover = flip.
online:  begin = record the capture start (writable), catch_up = replay the binlog in rounds (writable),
         cutover = freeze + delta + compare + flip in one call, within the freeze budget.
"""

from __future__ import annotations

from typing import Any

from billing_migration.config import Config, RunParams
from billing_migration.country import pipeline
from billing_migration.online import capture, catchup, cutover


def begin(cfg: Config, p: RunParams, run_id: str) -> dict[str, Any]:
    if p.dry_run:
        return {"dry_run": True, "frozen": False}
    if p.mode == "offline":
        return pipeline.disable_writes(cfg, p, run_id)
    # The guard triggers are already installed (check_routing runs write_gate.prepare, outside any freeze).
    return capture.start(cfg, p.country, run_id)


def catch_up(cfg: Config, p: RunParams, run_id: str) -> dict[str, Any]:
    if p.mode == "offline":
        return {"mode": "offline", "rounds": 0, "note": "offline: the copy ran frozen; nothing to catch up"}
    capture.require_capture_before_plan(cfg, p.country, run_id)
    return catchup.catch_up(cfg, p.country, run_id, p.catchup_max_customers, p.catchup_max_rounds)


def finish(cfg: Config, p: RunParams, run_id: str) -> dict[str, Any]:
    if p.mode == "offline":
        return pipeline.enable_writes(cfg, p, run_id)
    return cutover.run(cfg, p, run_id)
