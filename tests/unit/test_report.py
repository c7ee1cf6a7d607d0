"""The run report aggregates the ledger truthfully: sums per chunk, no summed rates, freeze window, failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from billing_migration.config import parse
from billing_migration.country import report

CFG = parse({"connections": {k: k for k in ("mysql_export", "mysql_gate", "mysql_admin", "cassandra", "s3")},
             "countries": {"NZ": {}}})
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _e(step, state, part=-1, start=0.0, end=1.0, **counts):
    return {"step": step, "part": part, "state": state, "counts": counts, "detail": None,
            "started_at": T0 + timedelta(seconds=start), "ended_at": T0 + timedelta(seconds=end)}


@pytest.fixture
def fake_sources(monkeypatch):
    def install(entries, gate):
        monkeypatch.setattr(report.ledger, "get_run", lambda cfg, country, run_id: entries)
        monkeypatch.setattr(report.write_gate, "status", lambda cfg, country: gate)
        monkeypatch.setattr(report.write_gate, "events", lambda cfg, country, limit=100: [])
    return install


def test_cut_over_run(fake_sources):
    fake_sources([
        _e("disable_writes", "succeeded", start=0, end=1),
        _e("load", "succeeded", part=0, start=2, end=4, rows=100, rows_per_s=50, duration_ms=2000),
        _e("load", "succeeded", part=1, start=2, end=6, rows=300, rows_per_s=75, duration_ms=4000),
        _e("enable_writes", "succeeded", start=7, end=8),
    ], {"serving_store": "cassandra", "writes_frozen": True})
    rep = report.build(CFG, "NZ", "run1")
    load = rep["stages"]["load"]
    assert load["counts"]["rows"] == 400
    assert "rows_per_s" not in load["counts"]
    assert load["wall_s"] == 4.0 and load["rows_per_s"] == 100.0
    assert rep["freeze_window_s"] == 8.0
    assert rep["outcome"] == "cut_over" and rep["failed_steps"] == []
    text = report.render(rep)
    assert text.index("disable_writes") < text.index("load ") < text.index("enable_writes")


def test_failed_run_lists_the_failing_step_and_its_error(fake_sources):
    failed = _e("transform", "failed", part=3, start=2, end=3)
    failed["detail"] = "MigrationError: injected"
    fake_sources([_e("disable_writes", "succeeded"), failed, _e("release_freeze", "succeeded", start=4, end=5)],
                 {"serving_store": "legacy", "writes_frozen": False})
    rep = report.build(CFG, "NZ", "run2")
    assert rep["outcome"] == "failed" and rep["failed_steps"] == ["transform"]
    assert rep["stages"]["transform"]["failed_parts"] == [3]
    assert rep["freeze_window_s"] == 5.0  # frozen until the teardown re-enabled writes
    assert "MigrationError: injected" in report.render(rep)


def _events(run_id, *pairs):
    return [{"action": a, "run_id": run_id, "at": (T0 + timedelta(seconds=t)).isoformat()} for a, t in pairs][::-1]


@pytest.fixture
def sources(monkeypatch):
    def install(entries, gate, events=()):
        monkeypatch.setattr(report.ledger, "get_run", lambda cfg, country, run_id: entries)
        monkeypatch.setattr(report.write_gate, "status", lambda cfg, country: gate)
        monkeypatch.setattr(report.write_gate, "events", lambda cfg, country, limit=100: list(events))
    return install


CUT = {"serving_store": "cassandra", "writes_frozen": True, "cutover_run_id": "r", "freeze_run_id": "r"}
LEGACY = {"serving_store": "legacy", "writes_frozen": False}


def test_chunk_ids_rounds_and_seconds_are_not_summed(sources):
    sources([
        _e("transform", "succeeded", part=0, start=1, end=2, chunk=0, rejects=2, seconds=0, rows_out=10),
        _e("transform", "succeeded", part=1, start=1, end=3.5, chunk=1, rejects=1, seconds=0, rows_out=20),
        _e("compare", "succeeded", part=0, start=4, end=6, chunk=0, rounds=3, remigrated_customers=2),
        _e("compare", "succeeded", part=1, start=4, end=5, chunk=1, rounds=1, remigrated_customers=0),
    ], LEGACY)
    rep = report.build(CFG, "NZ", "r")
    t, c = rep["stages"]["transform"], rep["stages"]["compare"]
    assert "chunk" not in t["counts"] and "seconds" not in t["counts"]
    assert t["counts"]["rejects"] == 3 and t["wall_s"] == 2.5 and t["parts"] == 2
    assert c["counts"]["rounds"] == 3 and c["counts"]["remigrated_customers"] == 2
    text = report.render(rep)
    assert "chunk=" not in text and "seconds=" not in text and "rounds=3" in text


def test_freeze_window_of_a_failed_run_that_was_frozen(sources):
    failed = _e("load", "failed", part=0, start=10, end=11)
    released = {**_e("release_freeze", "succeeded"), "started_at": None, "ended_at": None}
    sources([_e("disable_writes", "succeeded", start=1, end=2), failed, released], LEGACY,
            _events("r", ("freeze", 1.5), ("unfreeze", 31.5)))
    rep = report.build(CFG, "NZ", "r", task_states={"load_0": "failed", "enable_writes": "upstream_failed"})
    assert rep["outcome"] == "failed"
    assert rep["freeze_window_s"] == 30.0
    assert "30.0 s" in report.render_markdown(rep)


def test_dry_run_says_dry_run_and_never_frozen(sources):
    sources([_e("plan", "succeeded"), _e("transform", "succeeded", part=0, rejects=0),
             _e("error_budget", "succeeded", rejects=0, error_budget=0)], LEGACY)
    rep = report.build(CFG, "NZ", "r", task_states={"error_budget": "skipped", "load_0": "skipped"}, dry_run=True)
    assert rep["outcome"] == "dry_run" and rep["freeze_window_s"] is None
    md = report.render_markdown(rep)
    assert "dry run" in md.lower() and "writable" in md


def test_rerun_of_a_cut_over_country_is_a_no_op(sources):
    sources([], {**CUT, "cutover_run_id": "earlier", "freeze_run_id": "earlier"})
    rep = report.build(CFG, "NZ", "r", task_states={"check_routing": "skipped", "disable_writes": "skipped"})
    assert rep["outcome"] == "already_cut_over"
    assert "earlier" in report.render(rep)


def test_cut_over_says_which_store_serves_and_why_legacy_is_frozen(sources):
    sources([_e("disable_writes", "succeeded", start=0, end=1), _e("enable_writes", "succeeded", start=7, end=8)],
            CUT, _events("r", ("freeze", 0.5), ("cutover", 7.5)))
    rep = report.build(CFG, "NZ", "r")
    assert rep["outcome"] == "cut_over" and rep["freeze_window_s"] == 7.0
    for text in (report.render(rep), report.render_markdown(rep)):
        assert "writes frozen: True" not in text
        assert "served by Cassandra" in text and "legacy copy is frozen because NZ moved" in text


def test_failure_line_names_the_task_that_failed_not_the_skipped_ones(sources):
    sources([_e("disable_writes", "succeeded"), _e("load", "failed", part=1)], LEGACY)
    states = {"check_routing": "success", "compare_and_repair_0": "upstream_failed", "enable_writes": "upstream_failed",
              "load_0": "success", "load_1": "failed", "release_freeze": "success", "error_budget": "success"}
    rep = report.build(CFG, "NZ", "r", task_states=states)
    assert rep["failed_tasks"] == ["load_1"]
    assert "failed at load_1" in report.render(rep)
    assert "writable on legacy" in report.render_markdown(rep)


def test_incomplete_only_while_a_step_still_runs(sources):
    sources([_e("disable_writes", "succeeded"), {**_e("export", "running", part=0), "ended_at": None}],
            {"serving_store": "legacy", "writes_frozen": True, "freeze_run_id": "r"})
    assert report.build(CFG, "NZ", "r")["outcome"] == "incomplete"


def test_markdown_summary_reads_without_scrolling(sources):
    sources([
        _e("disable_writes", "succeeded", start=0, end=1),
        _e("export", "succeeded", part=0, start=1, end=2, rows=30, **{"rows.invoices": 20, "rows.customers": 10}),
        _e("load", "succeeded", part=0, start=3, end=4, rows=30, customers=10),
        _e("error_budget", "succeeded", rejects=1, error_budget=5),
        _e("compare", "succeeded", part=0, start=4, end=5, rounds=2, remigrated_customers=1, mismatches_left=0,
           customers_compared=10),
        _e("enable_writes", "succeeded", start=6, end=7),
    ], CUT, _events("r", ("freeze", 0), ("cutover", 7)))
    md = report.render_markdown(report.build(CFG, "NZ", "r"))
    assert max(len(line) for line in md.splitlines()) <= 120
    for label in ("Outcome", "Serving store", "Freeze window", "Rows", "Rejects", "Compare", "Re-migrated",
                  "Duration"):
        assert f"| {label}" in md, label
    assert "| invoices | 20 |" in md and "1 / budget 5" in md


def test_steps_render_in_run_order_even_from_a_report_read_back_with_sorted_keys(fake_sources):
    fake_sources([
        _e("capture_start", "succeeded", start=0, end=0.1),
        _e("plan", "succeeded", start=1, end=2),
        _e("compare", "succeeded", part=0, start=3, end=4),
        _e("catch_up", "succeeded", part=1, start=5, end=6, customers=3, lag_ms=100),
        _e("cutover", "succeeded", start=7, end=8, freeze_ms=500, delta_customers=2, delta_events=4),
        _e("enable_writes", "succeeded", start=7.9, end=8),
    ], {"serving_store": "cassandra", "writes_frozen": True})
    rep = report.build(CFG, "NZ", "run1")
    rep["stages"] = dict(sorted(rep["stages"].items()))  # as json.dumps(sort_keys=True) gives it back
    assert rep["mode"] == "online" and rep["freeze_window_s"] == 0.5
    for text in (report.render(rep), report.render_markdown(rep)):
        at = [text.index(s) for s in ("capture_start", "plan", "compare", "catch_up", "cutover")]
        assert at == sorted(at), text


def test_catch_up_lag_is_the_worst_round_not_a_sum_and_rounds_are_called_rounds(fake_sources):
    fake_sources([
        _e("capture_start", "succeeded", start=0, end=0.1),
        _e("catch_up", "succeeded", part=1, start=5, end=6, customers=30, lag_ms=1200),
        _e("catch_up", "succeeded", part=2, start=6, end=7, customers=3, lag_ms=300),
    ], {"serving_store": "legacy", "writes_frozen": False})
    rep = report.build(CFG, "NZ", "run1")
    assert rep["stages"]["catch_up"]["counts"]["lag_ms"] == 1200
    assert "catch_up** succeeded · 2 round(s)" in report.render_markdown(rep)
