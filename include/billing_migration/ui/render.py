"""HTML of the plugin's pages: plain server-rendered tables (no JavaScript), every value escaped.

The pages live in an iframe of Airflow's UI, so links to Airflow's own views open in the top window.
Each country row carries `data-country` and `data-state` so a browser test (and a user's script) can read
the page without parsing its text.
"""

from __future__ import annotations

from html import escape
from typing import Any

from markdown_it import MarkdownIt

_CSS = """
body{font-family:system-ui,sans-serif;font-size:14px;margin:16px;color:#1a202c;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:20px 0 6px} .muted{color:#718096}
table{border-collapse:collapse;width:100%} th,td{border-bottom:1px solid #e2e8f0;padding:6px 8px;
text-align:left;vertical-align:top} th{background:#f7fafc;font-weight:600;white-space:nowrap}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-weight:600;font-size:12px}
.migrated{background:#c6f6d5;color:#22543d} .frozen{background:#fed7d7;color:#822727}
.migrating{background:#bee3f8;color:#2a4365} .legacy{background:#edf2f7;color:#4a5568}
.unknown{background:#fefcbf;color:#744210}
.ok{color:#276749;font-weight:600} .bad{color:#c53030;font-weight:600} .errors{background:#fffaf0;
border:1px solid #f6ad55;padding:8px;margin:8px 0} code{font-size:12px} .small{font-size:12px}
"""
_MD = MarkdownIt("commonmark", {"html": False}).enable("table")


def _e(value: Any) -> str:
    return "-" if value is None or value == "" else escape(str(value))


def _time(value: str | None) -> str:
    """ISO-8601 UTC down to the second, for a table cell."""
    return "-" if not value else escape(value[:19].replace("T", " "))


def page(title: str, body: str, refresh_s: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    return (f'<!doctype html><html><head><meta charset="utf-8">{meta}<title>{escape(title)}</title>'
            f"<style>{_CSS}</style></head><body>{body}</body></html>")


def _errors(errors: list[str]) -> str:
    if not errors:
        return ""
    return '<div class="errors">Could not read: ' + "; ".join(_e(x) for x in errors) + "</div>"


def _badge(state: str) -> str:
    return f'<span class="badge {escape(state)}">{escape(state)}</span>'


def _link(href: str | None, text: str, top: bool = False) -> str:
    if not href:
        return ""
    target = ' target="_top"' if top else ""
    return f'<a href="{escape(href)}"{target}>{escape(text)}</a>'


def _writes(row: dict[str, Any]) -> str:
    if not row["frozen"]:
        return "open"
    since = f"<br><span class=small>since {_time(row['frozen_since'] or row['cutover_at'])}</span>"
    run = row["frozen_by_run"] or row["cutover_run_id"]
    return f"{_e(row['legacy_writes'])}{since}<br><span class=small>by <code>{_e(run)}</code></span>"


def _online(online: dict[str, Any] | None) -> str:
    if not online:
        return "-"
    lag = f"<br>lag {_e(online['lag_s'])} s" if online.get("lag_s") is not None else ""
    return f"{_e(online['phase'])}<br>{_e(online.get('catch_up_rounds'))} round(s){lag}"


def _compare(cmp: dict[str, Any] | None) -> str:
    if not cmp:
        return "not run"
    cls = "ok" if cmp["clean"] else "bad"
    return (f'<span class="{cls}">{"clean" if cmp["clean"] else "MISMATCH"}</span><br>'
            f"{_e(cmp['customers_compared'])} customers, {_e(cmp['mismatches_left'])} left, "
            f"{_e(cmp['rounds'])} round(s)")


def _run(run: dict[str, Any] | None) -> str:
    if not run:
        return "<td colspan=6 class=muted>no run yet</td>"
    state = run.get("airflow_state") or run.get("ledger_state")
    lk = run.get("links") or {}
    rows = "<br>".join(f"{_e(k)} {_e(v)}" for k, v in (run.get("rows") or {}).items()) or "-"
    budget = f" / {_e(run['error_budget'])}" if run.get("error_budget") is not None else ""
    window = f"{_e(run['freeze_window_s'])} s" if run.get("freeze_window_s") is not None else "-"
    if run.get("frozen_at"):
        window += f"<br><span class=small>{_time(run['frozen_at'])} → {_time(run.get('thawed_at'))}</span>"
    return (f"<td>{_e(state)} · {_e((run.get('outcome') or '').replace('_', ' '))}"
            f"{' (dry run)' if run.get('dry_run') else ''}<br><span class=small>{_time(run.get('started_at'))} → "
            f"{_time(run.get('ended_at'))}</span><br><span class=small>"
            f"{_link(lk.get('airflow_run'), 'Airflow run', True)} · {_link(lk.get('report'), 'report')}</span></td>"
            f"<td>{window}</td><td class=small>{rows}</td>"
            f"<td>{_e(run.get('rejects'))}{budget}</td><td class=small>{_compare(run.get('compare'))}</td>"
            f"<td>{_e(run.get('remigrated_customers'))}</td>")


def _reconcile(rec: dict[str, Any] | None) -> str:
    if not rec:
        return "-"
    verdict = '<span class="ok">ok</span>' if rec["ok"] else '<span class="bad">DRIFT</span>'
    rows = ", ".join(f"{_e(k)} {_e(v)}" for k, v in rec["rows"].items())
    money = "".join(f"<br>{_e(m['metric'])} {_e(m['currency'])} {_e(m['day'])}: diff {_e(m['diff'])}"
                    for m in rec["money_differences"][:3])
    return (f"{verdict} <span class=small>{_e(rec['date'])}<br>rows {rows}<br>"
            f"{_e(rec['record_differences'])} record difference(s){money}</span>")


def _renewals(ren: dict[str, Any] | None) -> str:
    if not ren:
        return "-"
    return (f"<span class=small>{_e(ren['date'])} from {_e(ren['source'])}<br>{_e(ren['to_bill'])} to bill, "
            f"{_e(ren['held'])} on hold, {_e(ren['skipped'])} skipped</span>")


_HEAD = ("<tr><th>Country</th><th>State</th><th>Served by</th><th>Legacy writes</th><th>Online</th>"
         "<th>Last run</th><th>Freeze window</th><th>Rows exported</th><th>Rejects</th><th>Compare</th>"
         "<th>Re-migrated</th><th>Reconciliation</th><th>Renewals</th></tr>")


def country_tr(row: dict[str, Any], base: str) -> str:
    cc = row["country"]
    return (f'<tr data-country="{escape(cc)}" data-state="{escape(row["state"])}">'
            f'<td><a href="{escape(base)}/billing-migration/countries/{escape(cc)}">{escape(cc)}</a></td>'
            f"<td>{_badge(row['state'])}</td><td>{_e(row['serving_store'])}</td><td>{_writes(row)}</td>"
            f"<td class=small>{_online(row['online'])}</td>{_run(row['last_run'])}"
            f"<td>{_reconcile(row['reconcile'])}</td><td>{_renewals(row['renewals'])}</td></tr>")


def overview_page(data: dict[str, Any], base: str) -> str:
    t = data["totals"]
    summary = " · ".join(f"{_badge(s)} {n}" for s, n in t.items() if n or s != "unknown")
    ns = f" (namespace {_e(data['namespace'])})" if data.get("namespace") else ""
    body = (f"<h1>Billing migration{ns}</h1><p class=muted>{summary} · JSON: "
            f'<a href="{escape(base)}/billing-migration/api/v1/countries">api/v1/countries</a></p>'
            f"{_errors(data['errors'])}<table id=countries>{_HEAD}"
            + "".join(country_tr(r, base) for r in data["countries"]) + "</table>")
    return page("Billing migration", body, refresh_s=60)


def _history_tr(run: dict[str, Any]) -> str:
    lk = run.get("links") or {}
    return (f"<tr><td><code>{_e(run['run_id'])}</code><br>{_link(lk.get('airflow_run'), 'Airflow run', True)} · "
            f"{_link(lk.get('report'), 'report')}</td><td>{_e(run.get('mode'))}</td>" + _run(run) + "</tr>")


def country_page(data: dict[str, Any], base: str) -> str:
    row = data["country"]
    cc = row["country"]
    head = ("<tr><th>Run</th><th>Mode</th><th>State · outcome</th><th>Freeze window</th><th>Rows exported</th>"
            "<th>Rejects</th><th>Compare</th><th>Re-migrated</th></tr>")
    events = "".join(f"<tr><td>{_time(e['at'])}</td><td>{_e(e['action'])}</td><td>{_e(e['actor'])}</td>"
                     f"<td><code>{_e(e['run_id'])}</code></td><td>{_e(e['detail'])}</td></tr>"
                     for e in data["gate_events"])
    body = (f'<p><a href="{escape(base)}/billing-migration/">← all countries</a></p>'
            f"<h1>Billing migration {escape(cc)} {_badge(row['state'])}</h1>{_errors(data['errors'])}"
            f"<table id=countries>{_HEAD}{country_tr(row, base)}</table>"
            f"<h2>Runs</h2><table id=runs>{head}" + "".join(_history_tr(r) for r in data["runs"])
            + "</table><h2>Write-gate events</h2><table id=events><tr><th>At (UTC)</th><th>Action</th>"
            f"<th>Actor</th><th>Run</th><th>Detail</th></tr>{events}</table>")
    return page(f"Billing migration {cc}", body)


def report_page(markdown: str, title: str, back: str | None = None) -> str:
    """The run report's Markdown as HTML (raw HTML in it is escaped, not rendered)."""
    nav = f'<p><a href="{escape(back)}">← country</a></p>' if back else ""
    return page(title, nav + _MD.render(markdown))
