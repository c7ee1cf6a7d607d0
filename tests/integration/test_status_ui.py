"""The "Billing migration" plugin on a real api-server, after a real migration, and the troubleshooting query.

One module-scoped world: NZ migrated by its DAG (dag.test, online mode), then a drift injected in Cassandra and
one night's snapshots, reconciliation and renewals of NZ; SE frozen by a run that never finished; CH untouched
(legacy). A real `airflow api-server` (this checkout's plugins folder, simple auth manager with a generated
password, 127.0.0.1 on a free port) boots while the migration runs; headless Chromium from Debian logs in to it.

Slow (a whole DAG run, an api-server and a browser), so a bare `pytest` leaves it out unless BM_UI_TESTS=1;
`make test` (the README's test command, which CI runs) sets it, and `make test-ui` runs this module alone.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
MIGRATED, FROZEN, LEGACY = "NZ", "SE", "CH"
FROZEN_RUN = "manual__2026-11-20T10:00:00+00:00"
DAY = dt.date(2026, 11, 21)
pytestmark = pytest.mark.skipif(not os.environ.get("BM_UI_TESTS"), reason="slow: BM_UI_TESTS=1 (make test sets it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    """A real api-server with this checkout's plugin; users and passwords generated for this session only."""
    tmp = tmp_path_factory.mktemp("api")
    port = _free_port()
    passwords = {"admin": secrets.token_urlsafe(12)}
    (tmp / "passwords.json").write_text(json.dumps(passwords))
    env = {**os.environ,
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp / "passwords.json"),
           "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
           "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(port)}
    log = open(tmp / "api-server.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([str(Path(sys.executable).with_name("airflow")), "api-server", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    yield {"url": f"http://127.0.0.1:{port}", "passwords": passwords, "proc": proc, "log": tmp / "api-server.log"}
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def _wait_ready(server: dict, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server["proc"].poll() is None, server["log"].read_text()[-3000:]
        try:
            if requests.get(server["url"] + "/api/v2/monitor/health", timeout=5).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(1)
    pytest.fail(f"api-server not ready after {timeout_s}s: {server['log'].read_text()[-3000:]}")


def _night(cfg, country: str) -> None:
    """One night for a country, as nightly_billing's tasks do it: both snapshots, reconcile, renewals."""
    from billing_migration.nightly import reconcile, renewal, snapshot

    routing = snapshot.read_routing(cfg)[country]
    split = snapshot.token_splits(1)[0]
    snapshot.snapshot_cassandra_split(cfg, DAY, split, [country])
    snapshot.snapshot_mysql(cfg, DAY, country)
    snapshot.snapshot_cassandra_plans(cfg, DAY, country)
    reconcile.reconcile_country(cfg, DAY, routing)
    renewal.renew_country(cfg, DAY, routing, expected_parts=1)


@pytest.fixture(scope="module")
def world(cfg, api_server, dags, fresh_countries, reset_routing):
    """NZ migrated (then drifted in Cassandra and reconciled), SE frozen by a dead run, CH on legacy."""
    from billing_migration.stores import connections, write_gate

    fresh_countries(80, {MIGRATED: 0.5, FROZEN: 0.3, LEGACY: 0.2}, seed=13)
    run = dags.get_dag(f"migrate_billing_{MIGRATED.lower()}").test(
        run_conf={"country": MIGRATED, "chunk_customers": 100, "parallelism": 1, "mode": "offline",
                  "dry_run": False, "reset": "none", "error_budget": 0})
    assert str(getattr(run.state, "value", run.state)) == "success"
    with connections.cassandra_session(cfg) as s:
        row = s.execute("SELECT customer_id, entity_id, amount FROM customer_billing WHERE entity_type='invoice' "
                        "AND country=%s LIMIT 1 ALLOW FILTERING", (MIGRATED,)).one()
        s.execute("UPDATE customer_billing SET amount=%s WHERE customer_id=%s AND entity_type='invoice' "
                  "AND entity_id=%s", (row.amount + Decimal("1.25"), row.customer_id, row.entity_id))
    _night(cfg, MIGRATED)
    write_gate.freeze(cfg, FROZEN, actor="pytest", run_id=FROZEN_RUN)
    _wait_ready(api_server)
    yield {"run_id": run.run_id, "drift": row, "cfg": cfg}
    reset_routing("status UI tests done")


def _token(server: dict) -> str:
    r = requests.post(server["url"] + "/auth/token", timeout=30,
                      json={"username": "admin", "password": server["passwords"]["admin"]})
    r.raise_for_status()
    return r.json()["access_token"]


def _get(server: dict, path: str, token: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(server["url"] + path, headers=headers, timeout=120)


def test_unauthenticated_requests_are_refused(api_server, world):
    for path in ("/billing-migration/", "/billing-migration/api/v1/countries",
                 f"/billing-migration/api/v1/countries/{MIGRATED}",
                 f"/billing-migration/runs/migrate_billing_nz/{quote(world['run_id'], safe='')}/report"):
        r = _get(api_server, path)
        assert r.status_code == 401, (path, r.status_code, r.text[:200])
        assert "Billing migration" not in r.text and MIGRATED not in r.text
    forged = _get(api_server, "/billing-migration/api/v1/countries", token="not-a-jwt")
    assert forged.status_code in (401, 403)
    # a browser without a session is sent to Airflow's login page, and back to the page afterwards
    page = requests.get(api_server["url"] + f"/billing-migration/countries/{MIGRATED}", allow_redirects=False,
                        headers={"Accept": "text/html"}, timeout=60)
    assert page.status_code == 303
    assert page.headers["location"] == f"/auth/login?next=/billing-migration/countries/{MIGRATED}"


def test_api_shows_migrated_frozen_and_legacy_countries(api_server, world):
    data = _get(api_server, "/billing-migration/api/v1/countries", _token(api_server)).json()
    rows = {r["country"]: r for r in data["countries"]}
    assert data["errors"] == [] and set(rows) == set(world["cfg"].countries)
    nz, se, ch = rows[MIGRATED], rows[FROZEN], rows[LEGACY]
    assert (nz["state"], nz["serving_store"]) == ("migrated", "cassandra")
    assert nz["legacy_writes"] == "frozen (rollback copy)"
    run = nz["last_run"]
    assert run["run_id"] == world["run_id"] and run["outcome"] == "cut_over" and run["airflow_state"] == "success"
    assert run["mode"] == "offline" and run["online"] is None and run["freeze_window_s"] > 0
    assert run["rows"]["invoices"] > 0 and run["rejects"] == 0 and run["compare"]["clean"] is True
    assert run["links"]["airflow_run"] == f"/dags/migrate_billing_nz/runs/{quote(world['run_id'], safe='')}"
    rec = nz["reconcile"]
    assert rec["date"] == DAY.isoformat() and rec["ok"] is False
    assert rec["customers_to_fix"] == [world["drift"].customer_id]
    assert [Decimal(m["diff"]) for m in rec["money_differences"]] == [Decimal("1.25")]
    assert nz["renewals"]["source"] == "cassandra" and nz["renewals"]["date"] == DAY.isoformat()
    assert (se["state"], se["frozen"], se["frozen_by_run"], se["last_run"]) == ("frozen", True, FROZEN_RUN, None)
    assert (ch["state"], ch["frozen"], ch["serving_store"]) == ("legacy", False, "legacy")
    assert data["totals"]["migrated"] == 1 and data["totals"]["frozen"] == 1


def test_country_page_history_and_run_report(api_server, world):
    token = _token(api_server)
    detail = _get(api_server, f"/billing-migration/api/v1/countries/{MIGRATED.lower()}", token).json()
    assert detail["runs"][0]["run_id"] == world["run_id"]  # newest first (other tests' NZ runs may follow)
    assert {"cutover"} <= {e["action"] for e in detail["gate_events"]}
    rid = quote(world["run_id"], safe="")
    rep = _get(api_server, f"/billing-migration/api/v1/countries/{MIGRATED}/runs/{rid}/report", token).json()
    assert rep["report"]["outcome"] == "cut_over" and rep["markdown"].startswith(f"### Billing migration {MIGRATED}")
    tab = _get(api_server, f"/billing-migration/runs/migrate_billing_nz/{rid}/report", token)
    assert tab.status_code == 200 and "<table>" in tab.text and "cut over" in tab.text
    assert _get(api_server, f"/billing-migration/runs/nightly_billing/{rid}/report", token).status_code == 404
    assert _get(api_server, "/billing-migration/api/v1/countries/ZZ", token).status_code == 404


def test_query_finds_the_injected_drift(world):
    from billing_migration import query

    cfg, drift = world["cfg"], world["drift"]
    day = DAY.isoformat()  # this module's night (other modules' nights may be newer in the session)
    differing = query.query(cfg, """
        SELECT m.customer_id, m.invoice_id, c.amount - m.amount AS diff
          FROM mysql_invoices m JOIN cassandra_invoices c USING (invoice_id)
         WHERE m.amount IS DISTINCT FROM c.amount""", date=day, countries=[MIGRATED]).to_pylist()
    assert differing == [{"customer_id": drift.customer_id, "invoice_id": drift.entity_id, "diff": Decimal("1.25")}]
    assert query.query(cfg, query.EXAMPLES["one_store_only"], date=day, countries=[MIGRATED]).num_rows == 0
    money = query.query(cfg, query.EXAMPLES["money_per_day"], date=day, countries=[MIGRATED]).to_pylist()
    assert money[0]["diff"] == Decimal("1.25") and all(m["diff"] == 0 for m in money[1:])
    rejects = query.query(cfg, query.EXAMPLES["rejects_by_rule"]).to_pylist()
    assert rejects == [] or all(r["rejects"] > 0 for r in rejects)
    cli = subprocess.run([str(ROOT / "scripts" / "bm"), "query", "--format", "json", "--date", DAY.isoformat(),
                          "SELECT customer_id, kind, field FROM reconcile_differences"],
                         capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(cli.stdout) == [{"customer_id": drift.customer_id, "kind": "different", "field": "amount"}]
    emails = query.query(cfg, "SELECT DISTINCT email FROM mysql_customers", date=day).column("email").to_pylist()
    assert emails and all("***@" in e for e in emails)  # personal data masked


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium through its own chromedriver (no browser download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1600,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    yield driver
    driver.quit()


def _login(driver, server: dict, next_path: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{server['url']}/auth/login?next={quote(next_path)}")
    wait = WebDriverWait(driver, 60)
    wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys("admin")
    driver.find_element(By.NAME, "password").send_keys(server["passwords"]["admin"])
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: "/auth/login" not in d.current_url)


def _in_plugin_frame(driver, css: str):
    """Switch into the page's plugin iframe once it shows `css`; returns those elements."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, 90)
    wait.until(ec.frame_to_be_available_and_switch_to_it((By.CSS_SELECTOR, "iframe[src*='billing-migration']")))
    return wait.until(ec.presence_of_all_elements_located((By.CSS_SELECTOR, css)))


def test_browser_shows_migrated_frozen_and_legacy_countries(api_server, world, browser):
    """Logged in through Airflow's own login page, the navigation item's page shows each country's state."""
    from selenium.webdriver.common.by import By

    ARTIFACTS.mkdir(exist_ok=True)
    _login(browser, api_server, "/plugin/billing-migration")
    assert browser.current_url.endswith("/plugin/billing-migration")
    rows = _in_plugin_frame(browser, "tr[data-country]")
    shown = {r.get_attribute("data-country"): (r.get_attribute("data-state"),
                                               r.find_element(By.CSS_SELECTOR, ".badge").text) for r in rows}
    assert shown[MIGRATED] == ("migrated", "migrated")
    assert shown[FROZEN] == ("frozen", "frozen")
    assert shown[LEGACY] == ("legacy", "legacy")
    nz = next(r for r in rows if r.get_attribute("data-country") == MIGRATED).text
    assert "cut over" in nz and "DRIFT" in nz
    browser.switch_to.default_content()
    browser.save_screenshot(str(ARTIFACTS / "status-page.png"))

    # The run page's "Migration report" tab shows the run's report.
    rid = quote(world["run_id"], safe="")
    browser.get(f"{api_server['url']}/dags/migrate_billing_nz/runs/{rid}/plugin/migration-report")
    heading = _in_plugin_frame(browser, "h3")[0].text
    assert heading == f"Billing migration {MIGRATED}: cut over"
    browser.switch_to.default_content()
    browser.save_screenshot(str(ARTIFACTS / "run-report-tab.png"))
