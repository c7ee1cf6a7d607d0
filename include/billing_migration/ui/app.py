"""The "Billing migration" FastAPI app the api-server mounts at /billing-migration (plugins/).

Read-only. Every route requires Airflow's own authentication: the JWT the UI holds in its `_token` cookie
(what the iframe of the navigation item sends) or an `Authorization: Bearer` token from `POST /auth/token`,
resolved by the api-server's auth manager (`airflow.api_fastapi.core_api.security.get_user`); a request
without one gets 401. A country is shown only to users the auth manager lets read its DAG's runs
(`is_authorized_dag(GET, RUN)`), like the run pages it links to.

Airflow and the stores are imported lazily, inside the routes: every Airflow process loads plugins, and only
the api-server serves this app.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

PREFIX = "/billing-migration"


async def current_user(request: Request) -> Any:
    """The user of the request's Airflow JWT (bearer header or the UI's cookie); 401/403 otherwise."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    return await get_user(request, None, await bearer_scheme(request))


def _can_read(user: Any, country: str) -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    from billing_migration.ui.status import dag_id

    return get_auth_manager().is_authorized_dag(method="GET", access_entity=DagAccessEntity.RUN,
                                                details=DagDetails(id=dag_id(country)), user=user)


def _base(request: Request) -> str:
    """The Airflow UI's root path as the browser sees it (this app's mount point stripped)."""
    root = request.scope.get("root_path", "")
    return root[: -len(PREFIX)] if root.endswith(PREFIX) else root


def _cfg():
    from billing_migration.config import load_config

    return load_config()


def _readable(user: Any) -> list[str]:
    return [cc for cc in _cfg().countries if _can_read(user, cc)]


def _country(user: Any, country: str) -> str:
    from billing_migration.config import ConfigError, normalize_country

    try:
        cc = normalize_country(country)
    except ConfigError as exc:
        raise HTTPException(404, str(exc)) from None
    if cc not in _cfg().countries:
        raise HTTPException(404, f"country {cc} is not configured")
    if not _can_read(user, cc):
        raise HTTPException(403, f"not allowed to read the runs of {cc}")
    return cc


def _run_country(user: Any, dag: str) -> str:
    """The country of a migrate_billing_<cc> DAG id (404 for any other DAG)."""
    if not dag.startswith("migrate_billing_") or len(dag) != len("migrate_billing_xx"):
        raise HTTPException(404, f"{dag} is not a billing migration DAG: no migration report")
    return _country(user, dag[-2:])


def _overview(request: Request, user: Any) -> dict[str, Any]:
    from billing_migration.ui import status

    return status.overview(_cfg(), _readable(user), _base(request))


def _detail(request: Request, user: Any, country: str) -> dict[str, Any]:
    from billing_migration.ui import status

    return status.country_detail(_cfg(), _country(user, country), _base(request))


def _report_html(request: Request, cc: str, run_id: str) -> HTMLResponse:
    from billing_migration.ui import render, status

    md = status.load_report_md(_cfg(), cc, run_id)
    return HTMLResponse(render.report_page(md, f"Migration report {cc}",
                                           f"{_base(request)}{PREFIX}/countries/{cc}"))


async def _login_first(request: Request, exc: HTTPException):
    """A browser opening a page without being logged in goes to Airflow's login page and comes back;
    the JSON API (and any non-browser client) gets the 401 itself."""
    wants_html = "text/html" in request.headers.get("accept", "")
    if exc.status_code == 401 and wants_html and "/api/" not in request.url.path:
        root, path = request.scope.get("root_path", ""), request.scope.get("path", "")
        here = path if path.startswith(root) else root + path  # Starlette keeps the mount prefix in `path`
        return RedirectResponse(f"{_base(request)}/auth/login?next={quote(here)}", status_code=303)
    return await http_exception_handler(request, exc)


def create_app() -> FastAPI:
    """The app (no OpenAPI/docs routes: nothing here is served without authentication)."""
    app = FastAPI(title="Billing migration", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(current_user)])
    app.add_exception_handler(HTTPException, _login_first)
    user_dep = Depends(current_user)

    @app.get("/api/v1/countries")
    def api_countries(request: Request, user: Any = user_dep) -> JSONResponse:
        return JSONResponse(_overview(request, user))

    @app.get("/api/v1/countries/{country}")
    def api_country(request: Request, country: str, user: Any = user_dep) -> JSONResponse:
        return JSONResponse(_detail(request, user, country))

    @app.get("/api/v1/countries/{country}/runs/{run_id:path}/report")
    def api_report(country: str, run_id: str, user: Any = user_dep) -> JSONResponse:
        from billing_migration.ui import status

        cc = _country(user, country)
        rep = status.load_report(_cfg(), cc, run_id)
        return JSONResponse({"summary": status.run_summary(rep), "report": rep,
                             "markdown": status.load_report_md(_cfg(), cc, run_id)})

    @app.get("/", response_class=HTMLResponse)
    def page_overview(request: Request, user: Any = user_dep) -> HTMLResponse:
        from billing_migration.ui import render

        return HTMLResponse(render.overview_page(_overview(request, user), _base(request)))

    @app.get("/countries/{country}", response_class=HTMLResponse)
    def page_country(request: Request, country: str, user: Any = user_dep) -> HTMLResponse:
        from billing_migration.ui import render

        return HTMLResponse(render.country_page(_detail(request, user, country), _base(request)))

    @app.get("/countries/{country}/runs/{run_id:path}/report", response_class=HTMLResponse)
    def page_report(request: Request, country: str, run_id: str, user: Any = user_dep) -> HTMLResponse:
        return _report_html(request, _country(user, country), run_id)

    @app.get("/runs/{dag}/{run_id:path}/report", response_class=HTMLResponse)
    def page_run_report(request: Request, dag: str, run_id: str, user: Any = user_dep) -> HTMLResponse:
        """The run page's "Migration report" tab (external view with destination dag_run): the tab shows on
        every DAG's runs, so another DAG's run gets a short page saying there is no report, not raw JSON."""
        from billing_migration.ui import render

        try:
            cc = _run_country(user, dag)
        except HTTPException as exc:
            body = (f"<p class=muted>{render.escape(str(exc.detail))}. Migration status: "
                    f'<a href="{render.escape(_base(request))}{PREFIX}/">Billing migration</a>.</p>')
            return HTMLResponse(render.page("Migration report", body), status_code=exc.status_code)
        return _report_html(request, cc, run_id)

    return app
