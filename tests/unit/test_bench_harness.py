"""The benchmark harness's own arithmetic and rendering: medians, throughputs, ratios, tables, JSON round trip,
and the child-process measurement (peak memory must be the child's own, not inherited from the parent)."""

from __future__ import annotations

import json
import sys

import pytest

from bench import measure, report
from bench.measure import Sample, summarize


def _s(wall: float, rss: float = 100.0, cpu: float = 1.0, **counts) -> Sample:
    return Sample(wall_s=wall, process_wall_s=wall + 1, maxrss_mb=rss, sum_maxrss_mb=rss, cpu_s=cpu,
                  stage_cpu_s=cpu / 2, counts=counts)


def test_summarize_takes_medians_and_per_rep_throughput():
    samples = [_s(2.0, 100, 4.0, rows=1000), _s(4.0, 300, 2.0, rows=1000), _s(1.0, 200, 3.0, rows=1000)]
    out = summarize(samples)
    assert out["repeats"] == 3
    assert out["wall_s"] == 2.0 and out["wall_s_min"] == 1.0 and out["wall_s_max"] == 4.0
    assert out["maxrss_mb"] == 200 and out["cpu_s"] == 3.0
    # median of per-repetition rates (1000/2, 1000/4, 1000/1) = 500, not 1000 / median(wall)
    assert out["rows_per_s"] == 500.0


def test_summarize_uses_given_work_units_and_rejects_empty():
    out = summarize([_s(2.0), _s(2.0)], {"rows": 10.0, "MB": 4.0})
    assert out["rows_per_s"] == 5.0 and out["MB_per_s"] == 2.0
    with pytest.raises(ValueError):
        summarize([])


def test_ratio_and_time_ratio_handle_missing_sides():
    assert measure.ratio(6.0, 2.0) == 3.0
    assert measure.ratio(None, 2.0) is None and measure.ratio(1.0, 0) is None
    ours = {"available": True, "wall_s": 9.0}
    peer = {"available": True, "wall_s": 3.0}
    assert report.time_ratio(ours, peer) == "3.00×"
    assert report.time_ratio(ours, {"available": False, "reason": "x"}) == "—"
    assert report.time_ratio(ours, {"available": True, "failed": "boom", "wall_s": 1.0}) == "—"


def test_table_and_fmt():
    md = report.table(["a", "b"], [["x", 1234567], ["y", 0.05], ["z", None]])
    lines = md.splitlines()
    assert lines[0] == "| a | b |" and lines[1] == "|---|---|"
    assert "1,234,567" in lines[2] and "0.05" in lines[3] and "—" in lines[4]
    assert report.fmt(12.345) == "12.3" and report.fmt(1500.7) == "1,501"


def _results() -> dict:
    stage = {"available": True, "wall_s": 10.0, "rows_per_s": 1000.0, "maxrss_mb": 300.0, "cpu_s": 12.0,
             "counts": {"rows": 10000}}
    peer = {"available": True, "wall_s": 2.0, "rows_per_s": 5000.0, "maxrss_mb": 10.0, "cpu_s": 1.0}
    return {
        "started_at": "2026-01-01T00:00:00+00:00", "command": "scripts/bench", "total_wall_s": 1.0,
        "args": {"repeats": 3}, "machine": {"cpus": 2, "packages": {}}, "servers": {},
        "availability": {"export": "available", "snapshot": "module missing"},
        "sizes": {"10000": {"customers": 10000, "country": "NZ", "chunks": 2, "chunk_customers": 5000,
                            "legacy_rows": {"customers": 10000},
                            "stages": {"export": stage, "transform": {"available": True, "failed": "KeyError: x"},
                                       "snapshot": {"available": False, "reason": "module missing"}},
                            "peers": {"mysql_client": peer, "into_outfile": {"allowed": False, "reason": "no FILE"},
                                      "load": {}}}},
    }


def test_render_shows_ratio_failures_and_unavailable_stages():
    text = report.render(_results())
    assert "5.00×" in text  # 10 s ours / 2 s peer
    assert "FAILED: KeyError: x" in text
    assert "not available: module missing" in text
    assert "no FILE" in text
    assert report.slowest_stage(_results()) == "export"


def test_write_markdown_keeps_hand_written_text(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# B\n\nintro\n\n{report.BEGIN}\nold\n{report.END}\n\nanalysis stays\n")
    report.write_markdown(_results(), path)
    text = path.read_text()
    assert "intro" in text and "analysis stays" in text and "old" not in text
    assert text.count(report.BEGIN) == 1 and "5.00×" in text


def test_results_json_round_trip():
    r = _results()
    assert json.loads(json.dumps(r, default=str)) == r


def test_child_peak_memory_is_its_own_not_the_parents():
    ballast = bytearray(300 * 1024 * 1024)  # the parent's high-water mark goes above 300 MB
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    code = "b = bytearray(40 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\nimport time; time.sleep(0.3)"
    u = measure.run_process([sys.executable, "-c", code])
    assert u.returncode == 0
    assert 40 <= u.maxrss_mb < 200, u.maxrss_mb  # ru_maxrss would report >= 300 here
    assert u.cpu_s > 0 and u.wall_s >= 0.3
    del ballast


def _size(rss: dict[str, float]) -> dict:
    return {"stages": {k: {"available": True, "wall_s": 1.0, "maxrss_mb": v} for k, v in rss.items()}}


def test_memory_section_judges_the_largest_size_against_100k():
    results = {"sizes": {"10000": _size({"export": 300, "load": 500}),
                         "100000": _size({"export": 350, "load": 500}),
                         "1000000": _size({"export": 400, "load": 700})}}
    text = "\n".join(report.memory_section(results))
    assert "| export | 300 | 350 | 400 | 1.14× | yes |" in text
    assert "| load | 500 | 500 | 700 | 1.40× | no |" in text
    assert "| compare | — | — | — | — | — |" in text


def test_merge_adds_the_other_runs_sizes_and_says_where_they_came_from():
    default = {"sizes": {"10000": _size({"export": 300})}, "started_at": "a"}
    big = {"sizes": {"1000000": _size({"export": 310})}, "started_at": "b", "command": "scripts/bench --sizes 1000000",
           "total_wall_s": 3600.0, "machine": {"loadavg_start": ["1.0"], "loadavg_end": ["2.0"]}}
    merged = report.merge(default, big)
    assert sorted(merged["sizes"]) == ["10000", "1000000"]
    assert merged["merged_runs"][0]["sizes"] == ["1000000"] and merged["merged_runs"][0]["started_at"] == "b"
    assert "from the run of b (`scripts/bench --sizes 1000000`" in "\n".join(report.memory_section(merged))


def test_process_timeout_scales_with_the_size_unless_given():
    import argparse

    from bench.run import timeout_for

    default = argparse.Namespace(timeout=None)
    assert timeout_for(default, 10_000) == timeout_for(default, 100_000) == 1800.0
    assert timeout_for(default, 1_000_000) == 18_000.0  # a 1M load is not killed midway
    assert timeout_for(argparse.Namespace(timeout=60.0), 1_000_000) == 60.0


def test_a_multi_line_peer_error_stays_in_one_table_cell():
    cell = report._why({"available": False, "reason": "exit 1: --------------\n\n--------------\n\nERROR 6 (HY000) "
                                                          "at line 1: Error | on delete\n"})
    assert "\n" not in cell and "|" not in cell and "--" not in cell
    assert cell == "not available: exit 1: ERROR 6 (HY000) at line 1: Error / on delete"
