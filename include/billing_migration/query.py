"""Troubleshooting queries: SQL with DuckDB over the migration's S3 outputs, as named views.

    scripts/bm query "SELECT ... FROM mysql_invoices ..." [--date YYYY-MM-DD] [--country CC] [--format ...]
    scripts/bm query --views                       # the view names and their columns' origin
    scripts/bm query --example money_per_day       # one of EXAMPLES (also in the README)

Views (a name is loaded only when the SQL mentions it):
  mysql_<table>, cassandra_<table>  the night's snapshot of each store (tables: plans, customers, subscriptions,
                                    plan_changes, invoices, payments, balance_transactions) + date, country
  reconcile_differences             every record difference the night's reconciliation found (+ date)
  reconcile_totals                  financial totals per store, currency, day and metric (+ date, country)
  reconcile_reports                 one row per country: ok, record differences, problems (+ date)
  rejects                           every migration run's rejected records (+ country, run)
  renewals, renewals_on_hold, renewals_skipped   the night's renewal crawl (+ date, country)

Nightly views read one date: `--date`, else the newest date that kind of output has. The Parquet objects are
read through the package's S3 client and registered as Arrow tables: DuckDB's httpfs extension would have to
be downloaded, which a locked-down host cannot do, and this way the same connection settings as the DAGs
apply. Personal data columns (email, full_name, payment_token, reference) are masked with `pii`, as in
every report: a troubleshooting query should never put them on a terminal.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from billing_migration import pii
from billing_migration.config import Config, load_config, normalize_country
from billing_migration.stores import s3io, schema

_PART = re.compile(r"([a-z_]+)=([^/]+)/")
_TABLES = [t.name for t in schema.TABLES]


# The README's examples (`scripts/bm query --example NAME` runs one); tested on real snapshots.
EXAMPLES = {
    "one_store_only": """
SELECT coalesce(m.country, c.country) AS country, customer_id,
       CASE WHEN c.customer_id IS NULL THEN 'mysql only' ELSE 'cassandra only' END AS present_in
  FROM mysql_customers m FULL JOIN cassandra_customers c USING (customer_id)
 WHERE m.customer_id IS NULL OR c.customer_id IS NULL
 ORDER BY ALL""",
    "money_per_day": """
WITH t AS (SELECT 'mysql' AS store, country, CAST(created_at AS DATE) AS day, currency, amount FROM mysql_invoices
           UNION ALL
           SELECT 'cassandra', country, CAST(created_at AS DATE), currency, amount FROM cassandra_invoices)
SELECT country, day, currency, sum(amount) FILTER (store = 'mysql') AS mysql,
       sum(amount) FILTER (store = 'cassandra') AS cassandra,
       sum(amount) FILTER (store = 'cassandra') - sum(amount) FILTER (store = 'mysql') AS diff
  FROM t GROUP BY ALL ORDER BY diff <> 0 DESC, country, day, currency""",
    "rejects_by_rule": """
SELECT country, "table", rule, count(*) AS rejects, count(DISTINCT customer_id) AS customers,
       any_value(reason) AS example
  FROM rejects GROUP BY ALL ORDER BY rejects DESC""",
}


class QueryError(ValueError):
    """The query could not run (bad SQL, unknown view, no data for the date); the message says which."""


def _nightly(kind: str, file_re: str, parts: tuple[str, ...] = ("date", "country")) -> dict[str, Any]:
    return {"base": f"nightly/{kind}/", "file": re.compile(file_re), "parts": parts, "dated": True}


def view_specs() -> dict[str, dict[str, Any]]:
    """Name -> where its objects are (relative to the namespace prefix) and which key parts become columns."""
    specs: dict[str, dict[str, Any]] = {}
    for store in ("mysql", "cassandra"):
        for t in _TABLES:
            specs[f"{store}_{t}"] = _nightly("snapshots", rf"store={store}/country=[^/]+/table={t}/[^/]+\.parquet$")
    specs["reconcile_differences"] = _nightly("reconcile", r"/differences\.parquet$", ("date",))
    specs["reconcile_totals"] = _nightly("reconcile", r"/totals\.parquet$")
    specs["reconcile_reports"] = _nightly("reconcile", r"/report\.json$", ("date",))
    for kind in ("renewals", "renewals_on_hold", "renewals_skipped"):
        specs[kind] = _nightly(kind, r"/part-[^/]+\.parquet$")
    specs["rejects"] = {"base": "migration/", "file": re.compile(r"/rejects/[^/]+\.parquet$"),
                        "parts": ("country", "run"), "dated": False}
    return specs


def referenced(sql: str, names: list[str]) -> list[str]:
    """The view names the SQL mentions (whole words, any case)."""
    low = sql.lower()
    return [n for n in names if re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", low)]


def _latest_date(client, cfg: Config, base: str) -> str | None:
    prefix = cfg.s3_prefix + base
    dates: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=cfg.s3_bucket, Prefix=prefix,
                                                                 Delimiter="/"):
        dates += [p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
    dates = sorted(d[5:] for d in dates if d.startswith("date="))
    return dates[-1] if dates else None


def _report_rows(body: dict[str, Any]) -> pa.Table:
    diffs = body.get("differences") or {}
    return pa.table({"country": [body.get("country")], "ok": [bool(body.get("ok"))],
                     "record_differences": [int(diffs.get("failing", 0))],
                     "money_differences": [len(body.get("financial_differences") or [])],
                     "problems": [list(body.get("problems") or [])]})


def _mask(table: pa.Table) -> pa.Table:
    for i, name in enumerate(table.column_names):
        if name in pii.PII_FIELDS:
            masked = [pii.mask_field(name, v) for v in table.column(i).to_pylist()]
            table = table.set_column(i, name, pa.array(masked, pa.string()))
    return table


def _with_parts(table: pa.Table, key: str, parts: tuple[str, ...]) -> pa.Table:
    found = dict(_PART.findall(key))
    for p in parts:
        if p not in table.column_names:
            table = table.append_column(p, pa.array([found.get(p)] * table.num_rows, pa.string()))
    return table


def load_view(cfg: Config, name: str, date: str | None = None, countries: list[str] | None = None,
              client=None) -> pa.Table | None:
    """One view's rows as an Arrow table (None: no object of that view for the date)."""
    spec = view_specs()[name]
    client = client or s3io.client(cfg)
    base = spec["base"]
    if spec["dated"]:
        day = date or _latest_date(client, cfg, base)
        if day is None:
            return None
        base += f"date={day}/"
    tables = []
    for key in s3io.list_keys(client, cfg.s3_bucket, cfg.s3_prefix + base):
        cc = dict(_PART.findall(key)).get("country")
        if not spec["file"].search(key) or (countries and cc not in countries):
            continue
        if key.endswith(".json"):
            t = _report_rows(s3io.get_json(client, cfg.s3_bucket, key))
        else:
            t = pq.read_table(io.BytesIO(client.get_object(Bucket=cfg.s3_bucket, Key=key)["Body"].read()))
        tables.append(_with_parts(_mask(t), key, spec["parts"]))
    if not tables:
        return _empty(name)
    return pa.concat_tables(tables, promote_options="permissive")


def _empty(name: str) -> pa.Table | None:
    """No rejects is an answer (zero rows), not an error: every run of clean data has none."""
    if name != "rejects":
        return None
    from billing_migration.country.transform import REJECT_SCHEMA

    return REJECT_SCHEMA.append(pa.field("country", pa.string())).append(pa.field("run", pa.string())).empty_table()


def connect(cfg: Config, sql: str, date: str | None = None, countries: list[str] | None = None,
            client=None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every view the SQL mentions registered."""
    con = duckdb.connect()
    for name in referenced(sql, list(view_specs())):
        table = load_view(cfg, name, date, countries, client)
        if table is None:
            con.close()
            raise QueryError(f"view {name} has no data{f' for {date}' if date else ''} "
                             f"under s3://{cfg.s3_bucket}/{cfg.s3_prefix}{view_specs()[name]['base']}")
        con.register(name, table)
    return con


def query(cfg: Config, sql: str, date: str | None = None, countries: list[str] | None = None,
          client=None) -> pa.Table:
    """Run one SQL statement over the named views; returns its result as an Arrow table."""
    con = connect(cfg, sql, date, [normalize_country(c) for c in countries or []], client)
    try:
        return con.sql(sql).to_arrow_table()
    except duckdb.Error as exc:
        raise QueryError(str(exc).splitlines()[0]) from None
    finally:
        con.close()


def _render(table: pa.Table, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(table.to_pylist(), default=str, indent=1)
    if fmt == "csv":
        buf = io.StringIO()
        out = csv.writer(buf, lineterminator="\n")
        out.writerow(table.column_names)
        out.writerows([("" if v is None else v) for v in r.values()] for r in table.to_pylist())
        return buf.getvalue().rstrip("\n")
    cols = table.column_names
    rows = [[("NULL" if v is None else str(v)) for v in r.values()] for r in table.to_pylist()]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(cols)]

    def line(vals: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True)).rstrip()

    return "\n".join([line(cols), line(["-" * w for w in widths]), *map(line, rows), f"({len(rows)} rows)"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bm query", description=__doc__.split("\n\n")[0])
    p.add_argument("sql", nargs="?", help="one SQL statement over the views (see --views)")
    p.add_argument("--date", help="the night to read (YYYY-MM-DD); default: the newest of each kind")
    p.add_argument("--country", action="append", help="only these countries (repeatable)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--views", action="store_true", help="list the views and exit")
    p.add_argument("--example", choices=sorted(EXAMPLES), help="run one of the README's example queries")
    args = p.parse_args(argv)
    if args.example:
        args.sql = EXAMPLES[args.example]
    if args.views or not args.sql:
        print(__doc__.split("Views (")[1].split("\n\nNightly")[0].split("\n", 1)[1])
        return 0 if args.views else 2
    # Libraries log to stdout (Airflow's hooks, the drivers): keep stdout for the result alone, so that
    # `--format csv|json` can be piped.
    sys.stdout.flush()
    result = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    try:
        result.write(_render(query(load_config(), args.sql, args.date, args.country), args.format) + "\n")
    except QueryError as exc:
        print(f"query failed: {exc}", file=sys.stderr)
        return 2
    finally:
        result.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
