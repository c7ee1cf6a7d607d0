"""The status page's data assembly, its HTML, the query views and the trigger form's warnings (no servers)."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest
from billing_migration import query
from billing_migration.config import load_config, param_specs
from billing_migration.stores.write_gate import RoutingStatus
from billing_migration.ui import render, status

RUN = "manual__2026-11-25T10:00:00+00:00"


def _report(**over) -> dict:
    rep = {
        "country": "NZ", "run_id": RUN, "outcome": "cut_over", "dry_run": False, "mode": "online",
        "frozen_at": "2026-11-25T10:05:00+00:00", "thawed_at": "2026-11-25T10:05:02+00:00", "freeze_window_s": 1.8,
        "duration_s": 300.0, "catch_up_rounds": 2, "last_lag_s": 0.4, "last_backlog_customers": 12,
        "delta_customers": 5, "failed_tasks": [], "failed_steps": [],
        "stages": {
            "capture_start": {"state": "succeeded", "parts": 0, "counts": {}, "started_at": "2026-11-25T10:00:00+00:00",
                              "ended_at": "2026-11-25T10:00:01+00:00"},
            "export": {"state": "succeeded", "parts": 2, "counts": {"rows.customers": 10, "rows.invoices": 30},
                       "started_at": "2026-11-25T10:00:02+00:00", "ended_at": "2026-11-25T10:01:00+00:00"},
            "error_budget": {"state": "succeeded", "parts": 0, "counts": {"rejects": 1, "error_budget": 5}},
            "load": {"state": "succeeded", "parts": 2, "counts": {"rows": 40, "customers": 10}},
            "compare": {"state": "succeeded", "parts": 2, "counts": {"customers_compared": 10, "mismatches_left": 0,
                                                                     "rounds": 1, "remigrated_customers": 3}},
            "catch_up": {"state": "succeeded", "parts": 2, "counts": {"lag_ms": 400}},
            "cutover": {"state": "succeeded", "parts": 0, "counts": {}, "started_at": "2026-11-25T10:04:59+00:00",
                        "ended_at": "2026-11-25T10:05:02+00:00",
                        "errors": ["customer jane.doe@example.com: bad date"]},
        },
    }
    return {**rep, **over}


def test_state_of_each_routing():
    assert status.state_of(RoutingStatus("NZ", "cassandra", True, cutover_run_id=RUN), None) == "migrated"
    assert status.state_of(RoutingStatus("SE", "legacy", True, freeze_run_id=RUN), None) == "frozen"
    assert status.state_of(RoutingStatus("CH"), {"state": "running"}) == "migrating"
    assert status.state_of(RoutingStatus("CH"), {"state": "failed"}) == "legacy"


def test_run_summary_has_the_numbers_of_the_report():
    s = status.run_summary(_report())
    assert (s["outcome"], s["mode"], s["freeze_window_s"]) == ("cut_over", "online", 1.8)
    assert s["rows"] == {"customers": 10, "invoices": 30} and (s["rows_loaded"], s["customers_loaded"]) == (40, 10)
    assert (s["rejects"], s["error_budget"], s["remigrated_customers"]) == (1, 5, 3)
    assert s["compare"] == {"customers_compared": 10, "mismatches_left": 0, "rounds": 1, "clean": True}
    assert (s["started_at"], s["ended_at"]) == ("2026-11-25T10:00:00+00:00", "2026-11-25T10:05:02+00:00")
    assert s["online"] == {"phase": "cut over", "catch_up_rounds": 2, "lag_s": 0.4, "backlog_customers": 12,
                           "delta_customers": 5}
    assert s["errors"] == ["customer j***@example.com: bad date"]  # personal data masked


def test_mismatches_left_make_the_compare_unclean():
    rep = _report()
    rep["stages"]["compare"]["counts"]["mismatches_left"] = 2
    assert status.run_summary(rep)["compare"]["clean"] is False
    assert status.run_summary(_report(stages={}))["compare"] is None


@pytest.mark.parametrize(("stages", "phase"), [
    ({"capture_start": {}}, "capture started"),
    ({"capture_start": {}, "export": {}}, "copy (country writable)"),
    ({"export": {}, "catch_up": {"parts": 3}}, "catch-up (round 3)"),
    ({"catch_up": {"parts": 3}, "cutover": {"state": "running"}}, "cutover (writes frozen)"),
    ({"cutover": {"state": "failed"}}, "cutover failed"),
])
def test_online_phase_follows_the_steps(stages, phase):
    assert status.online_progress({"mode": "online", "stages": stages})["phase"] == phase
    assert status.online_progress({"mode": "offline", "stages": stages}) is None


def test_country_row_of_a_migrated_country():
    st = RoutingStatus("NZ", "cassandra", True, frozen_at="2026-11-25T10:05:00.000+00:00", freeze_run_id=RUN,
                       cutover_at="2026-11-25T10:05:02.000+00:00", cutover_run_id=RUN, has_row=True)
    night = {"reconcile": status.reconcile_summary({
        "date": "2026-11-26", "ok": False, "counts": {"mysql": {"invoices": 30}, "cassandra": {"invoices": 30}},
        "differences": {"failing": 1}, "customers": [{"customer_id": 7, "fix": "..."}],
        "financial_differences": [{"metric": "invoiced", "currency": "NZD", "day": "2026-11-01", "mysql": "10.00",
                                   "cassandra": "11.25", "diff": "1.25"}], "problems": ["x@y.org differs"]})}
    row = status.country_row(st, {"state": "succeeded"}, _report(), {"state": "success"}, night, base="/af")
    assert (row["state"], row["serving_store"], row["legacy_writes"]) == ("migrated", "cassandra",
                                                                          "frozen (rollback copy)")
    assert row["frozen"] and row["frozen_by_run"] == RUN and row["last_run"]["airflow_state"] == "success"
    assert row["last_run"]["links"]["airflow_run"] == "/af/dags/migrate_billing_nz/runs/manual__2026-11-25T10%3A00" \
                                                      "%3A00%2B00%3A00"
    rec = row["reconcile"]
    assert (rec["ok"], rec["rows"], rec["customers_to_fix"]) == (False, {"mysql": 30, "cassandra": 30}, [7])
    assert rec["money_differences"][0]["diff"] == "1.25" and rec["problems"] == ["x***@y.org differs"]


def test_legacy_country_without_runs():
    row = status.country_row(RoutingStatus("CH"), None, None, None, {})
    assert (row["state"], row["frozen"], row["last_run"], row["reconcile"]) == ("legacy", False, None, None)


def test_page_escapes_values_and_marks_rows_with_their_state():
    st = RoutingStatus("SE", "legacy", True, frozen_at="2026-11-25T10:00:00.000+00:00",
                       freeze_run_id="<script>alert(1)</script>")
    rows = [status.country_row(st, None, None, None, {}), status.country_row(RoutingStatus("CH"), None, None, None, {})]
    html = render.overview_page({"namespace": None, "countries": rows, "errors": [],
                                 "totals": {"migrated": 0, "frozen": 1, "migrating": 0, "legacy": 1, "unknown": 0}},
                                base="")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert re.findall(r'data-country="(\w+)" data-state="(\w+)"', html) == [("SE", "frozen"), ("CH", "legacy")]


def test_report_markdown_renders_as_html_without_raw_html():
    html = render.report_page("### Billing migration NZ: cut over\n\n| a | b |\n|---|---|\n| 1 | <b>x</b> |", "t")
    assert "<h3>Billing migration NZ: cut over</h3>" in html and "<table>" in html
    assert "<b>x</b>" not in html


def test_query_loads_only_the_views_the_sql_names():
    names = list(query.view_specs())
    assert {"mysql_invoices", "cassandra_customers", "rejects", "renewals", "reconcile_differences"} <= set(names)
    sql = "SELECT * FROM mysql_invoices m JOIN Cassandra_Invoices c USING (invoice_id), renewals_skipped"
    assert query.referenced(sql, names) == ["mysql_invoices", "cassandra_invoices", "renewals_skipped"]


def test_query_masks_personal_data_and_adds_partition_columns():
    t = pa.table({"customer_id": [1], "email": ["jane@example.com"], "full_name": ["Jane Doe"]})
    out = query._with_parts(query._mask(t), "ns=t1/nightly/snapshots/date=2026-11-26/store=mysql/country=NZ/"
                                           "table=customers/part-0.parquet", ("date", "country"))
    assert out.to_pylist() == [{"customer_id": 1, "email": "j***@example.com", "full_name": "***e",
                                "date": "2026-11-26", "country": "NZ"}]


def _invoices(rows: list[tuple]) -> pa.Table:
    return pa.table({"country": [r[0] for r in rows], "created_at": pa.array([r[1] for r in rows], pa.timestamp("ms")),
                     "currency": [r[2] for r in rows], "amount": pa.array([r[3] for r in rows], pa.decimal128(18, 2))})


def test_readme_example_queries():
    from datetime import datetime
    from decimal import Decimal

    import duckdb

    con = duckdb.connect()
    con.register("mysql_customers", pa.table({"customer_id": [1, 2, 3], "country": ["NZ"] * 3}))
    con.register("cassandra_customers", pa.table({"customer_id": [1, 3, 4], "country": ["NZ"] * 3}))
    day = datetime(2026, 11, 1, 12)
    con.register("mysql_invoices", _invoices([("NZ", day, "NZD", Decimal("10.00")), ("NZ", day, "NZD", Decimal("5"))]))
    con.register("cassandra_invoices", _invoices([("NZ", day, "NZD", Decimal("16.25"))]))
    con.register("rejects", pa.table({"country": ["NZ", "NZ", "SE"], "table": ["invoices"] * 3,
                                      "customer_id": [1, 1, 9], "rule": ["zero_date", "zero_date", "billing_day"],
                                      "reason": ["created_at is 0000-00-00"] * 2 + ["billing day 45"]}))
    one = con.sql(query.EXAMPLES["one_store_only"]).fetchall()
    assert one == [("NZ", 2, "mysql only"), ("NZ", 4, "cassandra only")]
    money = con.sql(query.EXAMPLES["money_per_day"]).fetchall()
    assert [(m[0], m[2], m[3], m[4], m[5]) for m in money] == [("NZ", "NZD", Decimal("15.00"), Decimal("16.25"),
                                                                 Decimal("1.25"))]
    rules = con.sql(query.EXAMPLES["rejects_by_rule"]).fetchall()
    assert [(r[0], r[2], r[3], r[4]) for r in rules] == [("NZ", "zero_date", 2, 1), ("SE", "billing_day", 1, 1)]


def test_trigger_form_warns_about_the_freeze_with_its_expected_length_and_ranges():
    specs = param_specs("NZ", load_config().country("NZ"))
    assert "FREEZES production billing writes for NZ" in specs["country"]["description"]
    assert "a few seconds" in specs["mode"]["description"] and "WHOLE copy" in specs["mode"]["description"]
    assert "longest NZ may stay frozen" in specs["freeze_budget_s"]["description"]
    assert "no freeze" in specs["dry_run"]["description"]
    for name, spec in specs.items():
        assert "confirm" not in spec["description"].lower(), name
        if name != "country":
            assert "Allowed: " in spec["description"], name

