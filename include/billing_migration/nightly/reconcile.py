"""Nightly reconciliation of the two stores from their snapshots, and the on-request customer re-sync.

Three checks per country (the talk's "daily automated snapshot reconciliation", "checks on row counts",
"run financial reports on both databases"):
  1. row counts per table;
  2. every record field by field (missing / extra / different / duplicate, keys listed, PII masked);
  3. financial totals per currency and day (invoiced, tax, paid, refunded, charged back, gift-card and
     credit balance movements), aggregated on each side separately, compared exactly (DECIMAL, never float).

Source of truth and what a difference means:
  - frozen, not yet cut over (serving_store=legacy, writes_frozen=1): MySQL is the truth. Any difference is
    a migration defect; fix = `resync_customers` (MySQL -> Cassandra through the migration's own export,
    transform and load, whole partition replaced; refused for a country that is not frozen).
  - cut over (serving_store=cassandra): Cassandra is the truth, MySQL is the frozen rollback copy.
      * Cassandra rows written after `cutover_at` (new invoices, status changes) are expected divergence:
        kind `post_cutover_change`, counted, never a failure, left out of the financial comparison.
      * A legacy row whose `updated_at` is after `cutover_at` means someone wrote to the frozen legacy:
        kind `legacy_changed_after_cutover`. It is drift to report and the run fails; it is NEVER copied
        into Cassandra (resync refuses the direction unless an operator forces it for named customers).
      * Any other difference is drift in the serving store; reported with the fix "investigate; restore
        from the legacy copy only with resync_force_from_legacy".
Nothing is fixed silently: re-sync only runs for customer ids an operator passes as a DAG param.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from billing_migration import pii
from billing_migration.config import Config, normalize_country
from billing_migration.country import export, remigrate
from billing_migration.nightly import snapshot
from billing_migration.nightly.snapshot import Routing
from billing_migration.stores import connections, s3io, schema

log = logging.getLogger(__name__)

FAILING_KINDS = ("missing", "extra", "different", "duplicate", "legacy_changed_after_cutover")
DIFF_SCHEMA = pa.schema([
    ("country", pa.string()), ("table", pa.string()), ("key", pa.int64()), ("customer_id", pa.int64()),
    ("kind", pa.string()), ("field", pa.string()), ("mysql_value", pa.string()),
    ("cassandra_value", pa.string()), ("fix", pa.string()),
])
METRICS = ("invoiced", "invoiced_tax", "paid", "refunded", "charged_back", "gift_card_balance", "credit_balance")


class ReconciliationFailed(RuntimeError):
    """The stores disagree, or expected state is absent; the message names the report on S3."""


class ResyncRefused(RuntimeError):
    """A re-sync would copy data against the direction of the source of truth, or from a moving legacy."""


class ResyncRejected(RuntimeError):
    """Legacy rows of the named customers fail the transform's validation; nothing was written."""


def report_prefix(cfg: Config, day: dt.date | str, country: str) -> str:
    return f"{cfg.s3_prefix}nightly/reconcile/date={snapshot._day(day)}/country={country}/"


def _stats():
    try:
        from airflow.sdk.observability.stats import Stats
    except ImportError:  # pragma: no cover - older Airflow
        from airflow.stats import Stats
    return Stats


# A snapshot table is either an Arrow table (tests, small data) or local Parquet files that DuckDB streams,
# spilling to disk past its memory limit: a country's reconciliation never has to fit in memory.
Source = pa.Table | list[str]


# DuckDB's working memory, a safety net: past it joins and sorts spill to `spill_dir`. The comparison never
# needs it whole: it runs in key buckets of at most BUCKET_ROWS rows (compare_table), so its working set is
# the same for a 100k- and a 1M-customer country. A 256 MB limit alone held RSS level too, but failed once at
# 1M ("failed to pin block"): an out-of-memory night is worse than a bigger one. BM_DUCKDB_MEMORY overrides
# it (DuckDB's syntax: '512MB', '2GB').
DUCKDB_MEMORY = "1GB"
BUCKET_ROWS = 2_000_000


def _con(spill_dir: str | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{os.environ.get('BM_DUCKDB_MEMORY') or DUCKDB_MEMORY}'")
    if spill_dir:
        con.execute(f"SET temp_directory = '{spill_dir}'")
    return con


def _register(con: duckdb.DuckDBPyConnection, name: str, src: Source, table: str) -> None:
    if isinstance(src, pa.Table):
        con.register(name, src)
    elif src:
        files = ", ".join("'" + f.replace("'", "''") + "'" for f in src)
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{files}])")
    else:
        con.register(name, snapshot.arrow_schema(schema.TABLES_BY_NAME[table]).empty_table())


def _rows(src: Source) -> int:
    if isinstance(src, pa.Table):
        return src.num_rows
    return sum(pq.ParquetFile(f).metadata.num_rows for f in src)


# ------------------------------------------------------------------------------------------- field by field
_DIFF = "STRUCT(field VARCHAR, mv VARCHAR, cv VARCHAR)"


def compare_table(table: str, mysql: Source, cassandra: Source, spill_dir: str | None = None,
                  bucket_rows: int = BUCKET_ROWS) -> pa.Table:
    """Differences of one table between the two snapshots, with both `updated_at`s for classification.

    One FULL OUTER JOIN per table: an unmatched legacy row is `missing`, an unmatched Cassandra row `extra`,
    and each column of a matched pair that differs is one `different` row (unnested from a list built per
    pair). One join per column instead built the same hash table once per column: at 1.7M invoices it took
    4.3 s and 960 MB, against 1.6 s and 530 MB for the single join (BENCHMARKS.md, reconcile).
    The join runs once per bucket of keys (hash(key) % buckets), each of at most `bucket_rows` rows, so the
    memory it needs does not grow with the country; a key is in one bucket on both sides, so duplicates,
    missing and extra rows are found within it.
    Columns: table, key, customer_id, kind, field, mysql_value, cassandra_value, m_updated_at, c_updated_at.
    """
    t = schema.TABLES_BY_NAME[table]
    buckets = max(1, -(-max(_rows(mysql), _rows(cassandra)) // bucket_rows))
    con = _con(spill_dir)
    _register(con, "m_all", mysql, table)
    _register(con, "c_all", cassandra, table)
    parts = []
    for b in range(buckets):
        for side in ("m", "c"):
            where = f"WHERE hash({t.key}) % {buckets} = {b}" if buckets > 1 else ""
            con.execute(f"CREATE OR REPLACE TEMP VIEW {side} AS SELECT * FROM {side}_all {where}")
        parts.append(con.sql(_differences_sql(t)).to_arrow_table())
    con.close()
    out = pa.concat_tables(parts).sort_by([("key", "ascending"), ("kind", "ascending"), ("field", "ascending")])
    return out.rename_columns(["table", "key", "customer_id", "kind", "field", "mysql_value",
                               "cassandra_value", "m_updated_at", "c_updated_at"])


def _differences_sql(t: schema.Table) -> str:
    """compare_table's query over views `m` (legacy) and `c` (Cassandra) of one table."""
    table, key = t.name, t.key
    cols = [c for c in t.column_names if c != key]

    def cust(alias: str) -> str:
        return f"{alias}.customer_id" if "customer_id" in t.column_names else "NULL::BIGINT"

    # One key twice (in Cassandra: the same entity id under two customers' partitions).
    dups = [f"""SELECT '{table}' AS tbl, {key} AS key, min({cust(side)}) AS customer_id, 'duplicate' AS kind,
                       NULL AS field, {mv} AS mv, {cv} AS cv, {mu} AS mu, {cu} AS cu
                FROM {side} GROUP BY {key} HAVING count(*) > 1"""
            for side, mv, cv, mu, cu in (
                ("m", "CAST(count(*) AS VARCHAR)", "NULL", "max(updated_at)", "NULL::TIMESTAMPTZ"),
                ("c", "NULL", "CAST(count(*) AS VARCHAR)", "NULL::TIMESTAMPTZ", "max(updated_at)"))]
    differs = {c: f'm."{c}" IS DISTINCT FROM c."{c}"' for c in cols}
    per_column = ", ".join(f"""CASE WHEN {cond} THEN {{'field': '{c}', 'mv': CAST(m."{c}" AS VARCHAR),
                                     'cv': CAST(c."{c}" AS VARCHAR)}} END""" for c, cond in differs.items())
    joined = f"""
        SELECT '{table}' AS tbl, coalesce(m.{key}, c.{key}) AS key,
               CASE WHEN m.{key} IS NULL THEN {cust('c')} ELSE {cust('m')} END AS customer_id,
               CASE WHEN c.{key} IS NULL THEN 'missing' WHEN m.{key} IS NULL THEN 'extra' ELSE 'different' END
                   AS kind,
               CASE WHEN m.{key} IS NULL OR c.{key} IS NULL THEN [NULL::{_DIFF}]
                    ELSE list_filter([{per_column}], lambda d: d IS NOT NULL) END AS diffs,
               m.updated_at AS mu, c.updated_at AS cu
        FROM m FULL OUTER JOIN c ON m.{key} = c.{key}
        WHERE m.{key} IS NULL OR c.{key} IS NULL OR {" OR ".join(differs.values())}"""
    rows = f"""SELECT tbl, key, customer_id, kind, d.field, d.mv, d.cv, mu, cu
               FROM (SELECT *, unnest(diffs) AS d FROM ({joined}))"""
    return " UNION ALL ".join([*dups, rows])


def classify(diffs: list[dict[str, Any]], routing: Routing) -> list[dict[str, Any]]:
    """Apply the source-of-truth rules (module docstring) and attach the fix to each difference."""
    cut = routing.cutover_at.replace(tzinfo=dt.UTC) if routing.cutover_at else None
    post = routing.serving_store == "cassandra"
    out = []
    for d in diffs:
        kind = d["kind"]
        mu, cu = d.get("m_updated_at"), d.get("c_updated_at")
        if post and cut is not None and kind in ("missing", "extra", "different"):
            if mu is not None and mu > cut:
                kind = "legacy_changed_after_cutover"
            elif cu is not None and cu > cut:
                kind = "post_cutover_change"
        if kind == "post_cutover_change":
            fix = ""
        elif kind == "legacy_changed_after_cutover":
            fix = ("legacy row written after cut-over (freeze bypassed): investigate the writer; the change is "
                   "never copied to cassandra")
        elif post:
            fix = ("cassandra is the source of truth: investigate; restore this customer from the frozen legacy "
                   "copy only via params resync_customer_ids + resync_force_from_legacy=true")
        else:
            fix = f"trigger nightly_billing with params resync_customer_ids=[{d['customer_id']}] (mysql -> cassandra)"
        field = d.get("field")
        out.append({**d, "kind": kind, "raw_kind": d["kind"], "fix": fix,
                    "mysql_value": pii.mask_field(field or "", d.get("mysql_value")),
                    "cassandra_value": pii.mask_field(field or "", d.get("cassandra_value"))})
    return out


# ------------------------------------------------------------------------------------------- money
def financial_totals(tables: dict[str, Source], exclude: dict[str, list[int]] | None = None,
                     spill_dir: str | None = None) -> pa.Table:
    """Totals per (currency, day, metric) of one store's snapshot, as DECIMAL (exact to the cent and below).

    `exclude` leaves out keys per table (post-cut-over changes, which only the live store has).
    """
    con = _con(spill_dir)
    for name in ("invoices", "payments", "balance_transactions"):
        _register(con, f"{name}_all", tables[name], name)
        keys = pa.table({"k": pa.array((exclude or {}).get(name, []), pa.int64())})
        con.register(f"{name}_ex", keys)
        key = schema.TABLES_BY_NAME[name].key
        con.execute(f"CREATE TEMP VIEW {name} AS SELECT * FROM {name}_all "
                    f"WHERE {key} NOT IN (SELECT k FROM {name}_ex)")
    sql = """
      SELECT currency, CAST(created_at AS DATE) AS day, 'invoiced' AS metric, sum(amount) AS total
        FROM invoices GROUP BY ALL
      UNION ALL SELECT currency, CAST(created_at AS DATE), 'invoiced_tax', sum(tax) FROM invoices GROUP BY ALL
      UNION ALL SELECT currency, CAST(processed_at AS DATE),
               CASE status WHEN 'succeeded' THEN 'paid' ELSE status END, sum(amount)
        FROM payments WHERE status IN ('succeeded', 'refunded', 'charged_back') GROUP BY ALL
      UNION ALL SELECT currency, CAST(created_at AS DATE),
               CASE WHEN kind = 'gift_card_redemption' THEN 'gift_card_balance' ELSE 'credit_balance' END,
               sum(amount)
        FROM balance_transactions GROUP BY ALL
    """
    out = con.sql(f"SELECT * FROM ({sql}) ORDER BY ALL").to_arrow_table()
    con.close()
    return out.cast(pa.schema([("currency", pa.string()), ("day", pa.date32()), ("metric", pa.string()),
                               ("total", pa.decimal128(38, schema.DECIMAL_SCALE))]))


def compare_totals(mysql: pa.Table, cassandra: pa.Table) -> list[dict[str, Any]]:
    """Every (currency, day, metric) where the two sides' totals differ; diff = cassandra - mysql."""
    con = _con()
    con.register("m", mysql)
    con.register("c", cassandra)
    rows = con.execute("""
      SELECT coalesce(m.currency, c.currency), coalesce(m.day, c.day), coalesce(m.metric, c.metric),
             m.total, c.total
      FROM m FULL OUTER JOIN c ON m.currency IS NOT DISTINCT FROM c.currency AND m.day = c.day
                                AND m.metric = c.metric
      WHERE m.total IS DISTINCT FROM c.total ORDER BY ALL""").fetchall()
    con.close()
    out = []
    for cur, day, metric, mt, ct in rows:
        diff = (ct or Decimal(0)) - (mt or Decimal(0))
        out.append({"currency": cur, "day": day.isoformat(), "metric": metric,
                    "mysql": mt, "cassandra": ct, "diff": diff})
    return out


# ------------------------------------------------------------------------------------------- per country
@dataclass
class CountryResult:
    country: str
    ok: bool
    problems: list[str]
    report_uri: str
    counts: dict[str, dict[str, int]]
    failing: int
    post_cutover_changes: int
    customers: list[int]
    as_of: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _previous_counts(cfg: Config, client, day: dt.date, country: str) -> dict[str, Any] | None:
    key = report_prefix(cfg, day - dt.timedelta(days=1), country) + "report.json"
    if not s3io.exists(client, cfg.s3_bucket, key):
        return None
    return s3io.get_json(client, cfg.s3_bucket, key).get("counts")


def reconcile_country(cfg: Config, day: dt.date | str, routing: Routing, drift_threshold: float = 0.05,
                      client=None, taken_at: str | None = None) -> dict[str, Any]:
    """Run the three checks on the day's snapshots of one country and write the report; never raises on a
    mismatch (the DAG's `assert_reconciled` does, so every country is reported first).

    `taken_at` (the night's plan) dates the snapshots, for the report's `as_of` label."""
    t0 = time.monotonic()
    taken = taken_at or dt.datetime.now(dt.UTC).isoformat()
    day = dt.date.fromisoformat(snapshot._day(day))
    country = normalize_country(routing.country)
    client = client or s3io.client(cfg)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BM_TMP_DIR")) as tmp:
        snaps = _download(cfg, day, country, client, tmp)
        spill = os.path.join(tmp, "spill")
        counts = {store: {t: _rows(src) for t, src in snaps[store].items()} for store in snapshot.STORES}
        records = check_records(snaps, routing, spill)
        money = check_money(snaps, records.expected, spill)
    problems = (check_counts(counts, records) + money.problems + records.problems
                + check_expected_state(cfg, client, day, country, routing, counts, drift_threshold))
    as_of = snapshot.as_of(day, taken, f"snapshots taken at {taken}")
    return _report(cfg, client, day, routing, Checks(counts, records, money, problems, as_of), t0)


@dataclass(frozen=True)
class RecordCheck:
    """Field-by-field differences, classified: `failing` ones fail the night, `expected` ones are
    post-cut-over changes (counted, left out of the money check)."""

    diffs: list[dict[str, Any]]
    failing: list[dict[str, Any]]
    expected: list[dict[str, Any]]

    @property
    def problems(self) -> list[str]:
        if not self.failing:
            return []
        kinds: dict[str, int] = {}
        for d in self.failing:
            kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
        return [f"{len(self.failing)} record differences: {kinds}"]


@dataclass(frozen=True)
class MoneyCheck:
    """Financial totals of each store and every (currency, day, metric) where they differ."""

    mysql: pa.Table
    cassandra: pa.Table
    differences: list[dict[str, Any]]

    @property
    def problems(self) -> list[str]:
        return [f"financial total {m['metric']} {m['currency']} {m['day']}: mysql {m['mysql']} "
                f"cassandra {m['cassandra']} (diff {m['diff']})" for m in self.differences]


@dataclass(frozen=True)
class Checks:
    """Everything one country's reconciliation found; `problems` empty means reconciled."""

    counts: dict[str, dict[str, int]]
    records: RecordCheck
    money: MoneyCheck
    problems: list[str]
    as_of: dict[str, Any]


def _download(cfg: Config, day: dt.date, country: str, client, tmp: str) -> dict[str, dict[str, Source]]:
    return {store: {t.name: snapshot.download_parts(cfg, day, store, country, t.name, os.path.join(tmp, store),
                                                    client)
                    for t in snapshot.SNAPSHOT_TABLES} for store in snapshot.STORES}


def check_records(snaps: dict[str, dict[str, Source]], routing: Routing, spill: str | None = None) -> RecordCheck:
    """Every record of every table field by field, classified by the source-of-truth rules."""
    raw: list[dict[str, Any]] = []
    for t in snapshot.SNAPSHOT_TABLES:
        raw += compare_table(t.name, snaps["mysql"][t.name], snaps["cassandra"][t.name], spill).to_pylist()
    diffs = classify(raw, routing)
    return RecordCheck(diffs, [d for d in diffs if d["kind"] in FAILING_KINDS],
                       [d for d in diffs if d["kind"] == "post_cutover_change"])


def check_counts(counts: dict[str, dict[str, int]], records: RecordCheck) -> list[str]:
    """Row counts per table; rows created in Cassandra after cut-over are expected, nothing else is."""
    problems = []
    for t in snapshot.SNAPSHOT_TABLES:
        new_rows = sum(1 for d in records.expected if d["table"] == t.name and d["raw_kind"] == "extra")
        m, c = counts["mysql"][t.name], counts["cassandra"][t.name]
        if m != c - new_rows:
            problems.append(f"row count {t.name}: mysql {m} != cassandra {c}"
                            + (f" - {new_rows} created after cut-over" if new_rows else ""))
    return problems


def check_money(snaps: dict[str, dict[str, Source]], expected: list[dict[str, Any]],
                spill: str | None = None) -> MoneyCheck:
    """Financial totals of both stores, post-cut-over changes left out (only the live store has them)."""
    exclude: dict[str, list[int]] = {}
    for d in expected:
        exclude.setdefault(d["table"], []).append(d["key"])
    totals_m = financial_totals(snaps["mysql"], exclude, spill)
    totals_c = financial_totals(snaps["cassandra"], exclude, spill)
    return MoneyCheck(totals_m, totals_c, compare_totals(totals_m, totals_c))


def check_expected_state(cfg: Config, client, day: dt.date, country: str, routing: Routing,
                         counts: dict[str, dict[str, int]], drift_threshold: float) -> list[str]:
    """Absence of expected state: an empty store, or a snapshot that shrank past the threshold overnight."""
    problems = []
    state = "migrated" if routing.source_of_truth == "cassandra" else "frozen (mid-migration)"
    for store in snapshot.STORES:
        if counts[store]["customers"] == 0:
            problems.append(f"no customers in the {store} snapshot of {country}, a {state} country")
    prev = _previous_counts(cfg, client, day, country)
    for store in snapshot.STORES if prev else ():
        before = sum(prev.get(store, {}).values())
        now = sum(counts[store].values())
        if before and now < before * (1 - drift_threshold):
            problems.append(f"{store} snapshot shrank from {before} to {now} rows since {day - dt.timedelta(1)} "
                            f"(threshold {drift_threshold:.0%})")
    return problems


def _report(cfg: Config, client, day: dt.date, routing: Routing, checks: Checks, t0: float) -> dict[str, Any]:
    """Write differences.parquet, totals.parquet and report.json; emit the metrics; return the result."""
    country = normalize_country(routing.country)
    prefix = report_prefix(cfg, day, country)
    uri = f"s3://{cfg.s3_bucket}/{prefix}report.json"
    rec, money = checks.records, checks.money
    customers = sorted({d["customer_id"] for d in rec.failing if d["customer_id"] is not None})
    fixes: dict[int, str] = {}
    for d in rec.failing:
        if d["customer_id"] is not None:
            fixes.setdefault(d["customer_id"], d["fix"])
    rows = [{k: d.get(k) for k in DIFF_SCHEMA.names} | {"country": country} for d in rec.diffs]
    s3io.put_parquet(client, cfg.s3_bucket, prefix + "differences.parquet",
                     pa.Table.from_pylist(rows, schema=DIFF_SCHEMA))
    tot = pa.concat_tables([t.append_column("store", pa.array([store] * t.num_rows))
                            for store, t in (("mysql", money.mysql), ("cassandra", money.cassandra))])
    s3io.put_parquet(client, cfg.s3_bucket, prefix + "totals.parquet", tot)
    ok = not checks.problems
    s3io.put_json(client, cfg.s3_bucket, prefix + "report.json", {
        "date": day.isoformat(), "country": country, "ok": ok, "routing": routing.as_dict(),
        "source_of_truth": routing.source_of_truth, "counts": checks.counts, "problems": checks.problems,
        "differences": {"failing": len(rec.failing), "post_cutover_change": len(rec.expected),
                        "parquet": f"s3://{cfg.s3_bucket}/{prefix}differences.parquet"},
        "customers": [{"customer_id": c, "fix": fixes[c]} for c in customers],
        "financial_differences": money.differences, "seconds": round(time.monotonic() - t0, 3),
        "as_of": checks.as_of,
    })
    stats = _stats()
    for store in snapshot.STORES:
        stats.gauge(f"billing_nightly.snapshot_rows.{store}.{country}", sum(checks.counts[store].values()))
    stats.gauge(f"billing_nightly.record_differences.{country}", len(rec.failing))
    stats.gauge(f"billing_nightly.financial_differences.{country}", len(money.differences))
    if not ok:
        stats.incr("billing_nightly.reconcile_failed")
    log.info("reconcile %s: ok=%s problems=%d report=%s", country, ok, len(checks.problems), uri)
    return CountryResult(country, ok, checks.problems, uri, checks.counts, len(rec.failing), len(rec.expected),
                         customers, checks.as_of).as_dict()


def assert_reconciled(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Fail loudly if any country did not reconcile; the message names each report on S3."""
    bad = [r for r in results if not r["ok"]]
    if bad:
        lines = [f"{r['country']}: {'; '.join(r['problems'][:5])} -> report {r['report_uri']}"
                 + (f" ({r['as_of']['note']})" if r.get("as_of", {}).get("note") else "") for r in bad]
        raise ReconciliationFailed(f"{len(bad)} of {len(results)} countries did not reconcile:\n" +
                                   "\n".join(lines))
    return {"countries": [r["country"] for r in results], "ok": True}


# ------------------------------------------------------------------------------------------- re-sync
def resync_refusal(routing: Routing, force_from_legacy: bool) -> str | None:
    """Why the country's customers must not be re-synced from legacy now, or None when it is safe.

    A re-sync writes Cassandra from legacy, so legacy must be the truth and must not be moving: frozen and
    not cut over. After cut-over Cassandra is the truth and a copy from legacy would overwrite every write
    made since; only an operator restoring named customers from the frozen rollback copy may force it.
    """
    cc = routing.country
    if routing.serving_store == "cassandra":
        if not routing.writes_frozen:
            return (f"{cc} is cut over but its legacy copy is not frozen (legacy takes writes again): there is no "
                    "stable copy to restore from; refused even with resync_force_from_legacy")
        if not force_from_legacy:
            return (f"{cc} is cut over (since {routing.cutover_at}): cassandra is the source of truth and a copy "
                    "from legacy would overwrite the writes made since; pass resync_force_from_legacy=true to "
                    "restore the named customers from the frozen legacy copy")
        return None
    if not routing.writes_frozen:
        return (f"{cc} is not frozen: legacy still takes writes, so a copy would be stale at once and no nightly "
                f"reconciles it; migrate the country with migrate_billing_{cc.lower()} instead (its compare "
                "re-migrates whatever differs)")
    return None


def _resync_ids(customer_ids: list[Any] | None) -> list[int]:
    ids = []
    for c in customer_ids or []:
        if isinstance(c, bool) or not str(c).strip().isdigit():
            raise ValueError(f"resync_customer_ids must be integers, got {c!r}")
        ids.append(int(c))
    return sorted(set(ids))


def _countries_of(cfg: Config, ids: list[int]) -> dict[str, list[int]]:
    """Each customer's country: legacy's, else the Cassandra partition's (a customer legacy no longer has)."""
    out: dict[str, list[int]] = {}
    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT customer_id, country FROM customers WHERE customer_id IN ({', '.join(['%s'] * len(ids))})",
                    ids)
        found = {int(cid): cc for cid, cc in cur.fetchall()}
    missing = [c for c in ids if c not in found]
    if missing:
        with connections.cassandra_session(cfg) as session:
            for cid in missing:
                row = session.execute("SELECT country FROM customer_billing WHERE customer_id = %s LIMIT 1",
                                      (cid,)).one()
                if row is None or row.country is None:
                    raise ValueError(f"customer {cid} exists in neither store")
                found[cid] = row.country
    for cid in ids:
        out.setdefault(found[cid], []).append(cid)
    return out


def _refuse_rejects(cfg: Config, staged: list[remigrate.Staged]) -> None:
    """Raise ResyncRejected, naming each rejected record and where the rejects are, if any record failed."""
    client = s3io.client(cfg)
    lines: list[str] = []
    uris: list[str] = []
    for st in staged:
        if not st.rejects:
            continue
        key = remigrate.rejects_key(cfg, st)
        uris.append(f"s3://{cfg.s3_bucket}/{key}")
        for r in s3io.get_parquet(client, cfg.s3_bucket, key).to_pylist():
            lines.append(f"customer {r['customer_id']} {r['table']} {r['key']}: {r['reason']}")
    if lines:
        raise ResyncRejected(f"{len(lines)} legacy record(s) of the named customers fail validation, nothing was "
                             f"written to cassandra: {'; '.join(lines[:10])}; fix them in legacy and re-sync; "
                             f"rejects: {', '.join(uris)}")


def resync_customers(cfg: Config, customer_ids: list[int], run_id: str, force_from_legacy: bool = False,
                     routing: dict[str, Routing] | None = None, *, concurrency: int | None = None,
                     rate_limit_rows_per_s: int | None = None) -> dict[str, Any]:
    """Replace each named customer's Cassandra partition with the complete legacy customer.

    The same path as the migration (country.remigrate): export, the transform's validation, load's
    partition-replacing batches with the country's rate limit and concurrency (or the ones given). Allowed
    only where `resync_refusal` finds none; every customer is validated before any is written (a reject
    refuses the whole request). A customer absent from legacy has its Cassandra partition deleted.
    """
    ids = _resync_ids(customer_ids)
    if not ids:
        return {"resynced": [], "deleted": [], "rejected": []}
    routing = routing or snapshot.read_routing(cfg)
    groups = _countries_of(cfg, ids)
    settings = {}
    for cc, cids in sorted(groups.items()):
        why = resync_refusal(routing.get(cc) or Routing(cc, "legacy", False, None), force_from_legacy)
        if why:
            raise ResyncRefused(f"re-sync of customer(s) {cids[:10]}: {why}")
        settings[cc] = remigrate.write_settings(cfg, cc, concurrency, rate_limit_rows_per_s)
    staged = []
    for cc, cids in sorted(groups.items()):
        export.export_plans(cfg, cc, run_id)
        staged.append(remigrate.stage(cfg, cc, run_id, cids, remigrate.chunk_number(0)))
    _refuse_rejects(cfg, staged)
    done: list[int] = []
    deleted: list[int] = []
    for st in staged:
        remigrate.write(cfg, st, *settings[st.country])
        done += sorted(st.exported)
        deleted += st.absent
    log.info("resync: %d customers replaced from mysql, %d deleted from cassandra", len(done), len(deleted))
    _stats().incr("billing_nightly.resynced_customers", len(done) + len(deleted))
    return {"resynced": sorted(done), "deleted": sorted(deleted), "rejected": []}
