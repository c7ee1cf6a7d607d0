"""The daily renewal crawl: who is billed on day D, for how much, after credits.

Rules (pure pandas functions, unit-tested without services):
  - billed on D: a subscription that is `active`, started before D, not cancelled (status `cancelled`, or a
    `cancelled_at` before the end of D: cancelled mid-period means no renewal), whose customer's billing
    anchor falls on D. The anchor is `billing_day` of the month, or the month's last day when the month is
    shorter (billing_day 31 bills on Apr 30, Feb 28, Feb 29 in leap years).
  - price: the subscription's plan in the customer's country (plan catalogue per country and currency).
  - credits first: the customer's balance in the plan currency (sum of balance_transactions created before
    D 00:00 UTC, so a backfill of D gives the same answer later) pays first; amount due never below zero,
    credit used reported. Several due subscriptions of one customer use the credit in subscription order.
  - tax is not modelled here (plans carry no tax rate; the order processor computes it on the invoice).
  - on hold (subscription or customer `on_hold`, not cancelled) are listed separately for retry, whatever
    the anchor; so are due subscriptions without a price in the customer's country (never dropped silently).
  - skipped: a live subscription the rules cannot bill on any day (billing_day missing or outside 1..31,
    unknown status, no start date) is listed every day with its rule and reason, so a data defect is seen
    instead of a customer silently never billed.

Sources: the store that serves the country. Cut-over countries are read from the night's Cassandra snapshot
(parallel token-range scans, the Netflix "snapshot + MapReduce" replacement of the all-row iterator; a
customer's partition lies within one token range, so each split is computed on its own, then merged);
legacy countries from MySQL by keyset chunks of customers with the read-only role.

Output (atomic per date and country, byte-for-byte reproducible for the same data):
  nightly/renewals/date=D/country=CC/part-0.parquet, summary.json, then _SUCCESS last
  nightly/renewals_on_hold/date=D/country=CC/part-0.parquet
  nightly/renewals_skipped/date=D/country=CC/part-0.parquet
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import pandas as pd
import pyarrow as pa

from billing_migration.config import Config, normalize_country
from billing_migration.nightly import snapshot
from billing_migration.nightly.snapshot import Routing
from billing_migration.stores import connections, s3io, schema

log = logging.getLogger(__name__)

MONEY = pa.decimal128(38, schema.DECIMAL_SCALE)
RENEWAL_SCHEMA = pa.schema([
    ("date", pa.date32()), ("country", pa.string()), ("customer_id", pa.int64()),
    ("subscription_id", pa.int64()), ("plan_id", pa.int64()), ("billing_day", pa.int64()),
    ("currency", pa.string()), ("price", MONEY), ("credit_balance", MONEY), ("credit_used", MONEY),
    ("amount_due", MONEY),
])
HELD_SCHEMA = pa.schema([
    ("date", pa.date32()), ("country", pa.string()), ("customer_id", pa.int64()),
    ("subscription_id", pa.int64()), ("plan_id", pa.int64()), ("billing_day", pa.int64()),
    ("currency", pa.string()), ("price", MONEY), ("reason", pa.string()),
])
SKIPPED_SCHEMA = pa.schema([
    ("date", pa.date32()), ("country", pa.string()), ("customer_id", pa.int64()),
    ("subscription_id", pa.int64()), ("plan_id", pa.int64()), ("billing_day", pa.int64()),
    ("rule", pa.string()), ("reason", pa.string()),
])
ZSTD_LEVEL = 3  # pinned: the output's bytes must not change with the library's default level
NEEDED = ("customers", "subscriptions", "balance_transactions")
ZERO = Decimal(0)


class RenewalError(RuntimeError):
    """The crawl cannot produce a faithful list (missing snapshot, missing catalogue...)."""


# ------------------------------------------------------------------------------------------- rules
def anchor_day(year: int, month: int, billing_day: int) -> int:
    """Day of the month a billing_day bills on: the billing day, or the month's last day if shorter."""
    return min(billing_day, calendar.monthrange(year, month)[1])


def valid_billing_day(billing_day: pd.Series) -> pd.Series:
    """Vectorised: a billing day that bills on some day of every month (1..31, not missing)."""
    return pd.to_numeric(billing_day, errors="coerce").between(1, 31).fillna(False).astype(bool)


def bills_on(billing_day: pd.Series, day: dt.date) -> pd.Series:
    """Vectorised: whose anchor falls on `day` (invalid billing days never match: see `skipped`)."""
    last = calendar.monthrange(day.year, day.month)[1]
    bd = pd.to_numeric(billing_day, errors="coerce")
    return (valid_billing_day(billing_day) & (bd.clip(upper=last) == day.day)).fillna(False).astype(bool)


def skipped(s: pd.DataFrame, live: pd.Series) -> pd.DataFrame:
    """Live subscriptions (not cancelled, not on hold) that no day's rule can bill, with rule and reason."""
    bd = pd.to_numeric(s["billing_day"], errors="coerce")
    text = bd.astype("Int64").astype(str)
    rules = [
        ("unknown_status", ~s["status"].isin(schema.SUBSCRIPTION_STATUSES),
         "subscription status " + s["status"].astype(str) + " unknown: never billed"),
        ("invalid_billing_day", ~valid_billing_day(s["billing_day"]),
         ("billing_day " + text + " outside 1..31: never billed").where(bd.notna(),
                                                                         "billing_day missing: never billed")),
        ("missing_started_at", pd.to_datetime(s["started_at"], utc=True).isna(),
         pd.Series("subscription has no started_at: never billed", index=s.index)),
    ]
    out, taken = [], pd.Series(False, index=s.index)
    for rule, mask, reason in rules:  # first rule wins: one line per subscription
        hit = live & mask & ~taken
        taken |= hit
        out.append(s[hit].assign(rule=rule, reason=reason[hit]))
    return pd.concat(out) if out else s.iloc[0:0]


def _day_bounds(day: dt.date) -> tuple[pd.Timestamp, pd.Timestamp]:
    start = pd.Timestamp(day, tz="UTC")
    return start, start + pd.Timedelta(days=1)


def credit_balances(balance: pd.DataFrame, day: dt.date) -> pd.DataFrame:
    """Balance per (customer_id, currency) from transactions created before D 00:00 UTC (exact Decimals)."""
    if balance.empty:
        return pd.DataFrame({"customer_id": pd.Series([], dtype="int64"), "currency": pd.Series([], dtype=object),
                             "credit_balance": pd.Series([], dtype=object)})
    start, _ = _day_bounds(day)
    b = balance[pd.to_datetime(balance["created_at"], utc=True) < start]
    sums: dict[tuple[int, Any], Decimal] = {}
    for cid, cur, amount in zip(b["customer_id"], b["currency"], b["amount"], strict=True):
        if amount is None or (isinstance(amount, float) and pd.isna(amount)):
            continue
        k = (int(cid), cur)
        sums[k] = sums.get(k, ZERO) + Decimal(amount)
    return pd.DataFrame({"customer_id": pd.Series([k[0] for k in sums], dtype="int64"),
                         "currency": pd.Series([k[1] for k in sums], dtype=object),
                         "credit_balance": pd.Series(list(sums.values()), dtype=object)})


def renewals(customers: pd.DataFrame, subscriptions: pd.DataFrame, plans: pd.DataFrame,
             balance: pd.DataFrame, day: dt.date, country: str
             ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(to_bill, held, skipped) for one country on `day`; inputs use the legacy column names."""
    start, end = _day_bounds(day)
    cust = customers[customers["country"] == country][["customer_id", "billing_day", "status"]]
    s = subscriptions.merge(cust.rename(columns={"status": "customer_status"}), on="customer_id", how="inner")
    s = s.merge(plans[plans["country"] == country][["plan_id", "currency", "price"]], on="plan_id", how="left")
    cancelled_at = pd.to_datetime(s["cancelled_at"], utc=True)
    started_at = pd.to_datetime(s["started_at"], utc=True)
    cancelled = (s["status"] == "cancelled") | (s["customer_status"] == "cancelled") | (cancelled_at < end)
    on_hold = ~cancelled & ((s["status"] == "on_hold") | (s["customer_status"] == "on_hold"))
    due = (~cancelled & ~on_hold & (s["status"] == "active") & (started_at < start)
           & bills_on(s["billing_day"], day))
    unpriced = due & s["price"].isna()
    held = pd.concat([s[on_hold].assign(reason="on_hold"), s[unpriced].assign(reason="no_price_for_country")])
    skip = skipped(s, ~cancelled & ~on_hold).assign(date=day, country=country)
    bill = s[due & ~unpriced].sort_values(["customer_id", "subscription_id"], kind="stable")
    bill = bill.merge(credit_balances(balance, day), on=["customer_id", "currency"], how="left")
    used, owed, bal_col = [], [], []
    remaining: dict[int, Decimal] = {}
    for cid, price, bal in zip(bill["customer_id"], bill["price"], bill["credit_balance"], strict=True):
        bal = ZERO if bal is None or (isinstance(bal, float) and pd.isna(bal)) else Decimal(bal)
        left = remaining.setdefault(int(cid), max(bal, ZERO))
        u = min(left, Decimal(price))
        remaining[int(cid)] = left - u
        used.append(u)
        owed.append(Decimal(price) - u)
        bal_col.append(bal)
    bill = bill.assign(credit_balance=bal_col, credit_used=used, amount_due=owed, date=day, country=country)
    held = held.assign(date=day, country=country)
    return _shape(bill, RENEWAL_SCHEMA), _shape(held, HELD_SCHEMA), _shape(skip, SKIPPED_SCHEMA)


def _shape(df: pd.DataFrame, sch: pa.Schema) -> pd.DataFrame:
    out = df.reindex(columns=sch.names).sort_values(["customer_id", "subscription_id"], kind="stable")
    return out.reset_index(drop=True)


def to_arrow(df: pd.DataFrame, sch: pa.Schema) -> pa.Table:
    """A frame in the fixed output schema, without pandas metadata (so bytes depend on rows only)."""
    arrays = []
    for f in sch:
        values = [None if v is None or (not isinstance(v, Decimal | str | dt.date) and pd.isna(v)) else v
                  for v in df[f.name].tolist()] if len(df) else []
        arrays.append(pa.array(values, type=f.type))
    return pa.Table.from_arrays(arrays, schema=sch)


# ------------------------------------------------------------------------------------------- sources
def _frames(tables: dict[str, pa.Table]) -> dict[str, pd.DataFrame]:
    return {name: t.to_pandas() for name, t in tables.items()}


def mysql_batches(cfg: Config, country: str, chunk_customers: int = 5000) -> Iterable[dict[str, pa.Table]]:
    """The country's customers, subscriptions and balance rows in keyset chunks (read-only, one snapshot)."""
    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        for lo, hi in snapshot.mysql_customer_chunks(cur, country, chunk_customers):
            out = {}
            for name in NEEDED:
                t = schema.TABLES_BY_NAME[name]
                cur.execute(snapshot.mysql_chunk_sql(t), (country, lo, hi))
                rows = [dict(zip(t.column_names, r, strict=True)) for r in cur.fetchall()]
                out[name] = pa.Table.from_pylist(rows, schema=snapshot.arrow_schema(t))
            yield out
        conn.rollback()


def mysql_plans(cfg: Config, country: str) -> pa.Table:
    with connections.mysql_conn("mysql_export", cfg) as conn, conn.cursor() as cur:
        cols = ", ".join(f"p.`{c}`" for c in schema.PLANS.column_names)
        cur.execute(f"SELECT {cols} FROM plans p WHERE p.country = %s ORDER BY p.plan_id", (country,))
        rows = [dict(zip(schema.PLANS.column_names, r, strict=True)) for r in cur.fetchall()]
    return pa.Table.from_pylist(rows, schema=snapshot.arrow_schema(schema.PLANS))


def cassandra_snapshot_batches(cfg: Config, day: dt.date, country: str, client,
                               expected_parts: int | None = None) -> Iterable[dict[str, pa.Table]]:
    """The night's Cassandra snapshot of the country, one token split at a time (bounded memory).

    Refuses an incomplete snapshot (a missing split would silently drop customers from billing)."""
    parts = snapshot.list_parts(cfg, day, "cassandra", country, "customers", client)
    if not parts or (expected_parts is not None and len(parts) != expected_parts):
        raise RenewalError(f"{country} is served by cassandra but the snapshot of {day} has {len(parts)} token-range "
                           f"parts (expected {expected_parts or 'at least 1'}) under "
                           f"{snapshot.snapshot_prefix(cfg, day, 'cassandra', country)}: run the scan tasks first")
    for key in parts:
        part = key.rsplit("/", 1)[1]
        yield {name: s3io.get_parquet(client, cfg.s3_bucket,
                                      snapshot.snapshot_key(cfg, day, "cassandra", country, name,
                                                            int(part[5:-8])))
               .cast(snapshot.arrow_schema(schema.TABLES_BY_NAME[name])) for name in NEEDED}


def crawl(batches: Iterable[dict[str, pa.Table]], plans: pa.Table, day: dt.date,
          country: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Map (rules per batch of whole customers) then reduce (concatenate, sort): (to_bill, held, skipped)."""
    p = plans.to_pandas()
    parts: tuple[list[pd.DataFrame], ...] = ([], [], [])
    for b in batches:
        f = _frames(b)
        for out, frame in zip(parts, renewals(f["customers"], f["subscriptions"], p, f["balance_transactions"],
                                              day, country), strict=True):
            out.append(frame)
    schemas = (RENEWAL_SCHEMA, HELD_SCHEMA, SKIPPED_SCHEMA)
    bill, held, skip = (_shape(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=sch.names),
                               sch) for frames, sch in zip(parts, schemas, strict=True))
    return bill, held, skip


# ------------------------------------------------------------------------------------------- output
def renewal_prefix(cfg: Config, day: dt.date | str, country: str, kind: str = "renewals") -> str:
    return f"{cfg.s3_prefix}nightly/{kind}/date={snapshot._day(day)}/country={country}/"


def _count_by(t: pa.Table, column: str) -> dict[str, int]:
    values = t.column(column).to_pylist()
    return {v: values.count(v) for v in sorted(set(values))}


def summarize(bill: pa.Table, held: pa.Table, skip: pa.Table, source: str) -> dict[str, Any]:
    per: dict[str, dict[str, Any]] = {}
    for row in bill.to_pylist():
        c = per.setdefault(row["currency"], {"count": 0, "price": ZERO, "credit_used": ZERO, "amount_due": ZERO})
        c["count"] += 1
        for k in ("price", "credit_used", "amount_due"):
            c[k] += row[k]
    return {"source": source, "to_bill": bill.num_rows, "held": held.num_rows,
            "held_by_reason": _count_by(held, "reason"),
            "skipped": skip.num_rows, "skipped_by_rule": _count_by(skip, "rule"),
            "per_currency": {cur: {k: str(v) for k, v in vals.items()} for cur, vals in sorted(per.items())}}


def write_output(cfg: Config, day: dt.date, country: str, bill: pd.DataFrame, held: pd.DataFrame,
                 skip: pd.DataFrame, source: str, client, as_of: dict[str, Any] | None = None) -> dict[str, Any]:
    """Replace the date's output atomically: drop _SUCCESS, put every object, put _SUCCESS last."""
    prefix = renewal_prefix(cfg, day, country)
    held_prefix = renewal_prefix(cfg, day, country, "renewals_on_hold")
    skip_prefix = renewal_prefix(cfg, day, country, "renewals_skipped")
    b, h, k = to_arrow(bill, RENEWAL_SCHEMA), to_arrow(held, HELD_SCHEMA), to_arrow(skip, SKIPPED_SCHEMA)
    client.delete_object(Bucket=cfg.s3_bucket, Key=prefix + "_SUCCESS")
    wanted = {prefix + "part-0.parquet", prefix + "summary.json"}
    for stale in set(s3io.list_keys(client, cfg.s3_bucket, prefix)) - wanted:
        client.delete_object(Bucket=cfg.s3_bucket, Key=stale)
    for key, table in ((held_prefix, h), (skip_prefix, k), (prefix, b)):
        s3io.put_parquet(client, cfg.s3_bucket, key + "part-0.parquet", table, compression_level=ZSTD_LEVEL)
    summary = summarize(b, h, k, source) | {"date": day.isoformat(), "country": country, "as_of": as_of or {},
                                            "skipped_list": f"s3://{cfg.s3_bucket}/{skip_prefix}part-0.parquet"}
    s3io.put_json(client, cfg.s3_bucket, prefix + "summary.json", summary)
    client.put_object(Bucket=cfg.s3_bucket, Key=prefix + "_SUCCESS", Body=b"")
    return summary | {"uri": f"s3://{cfg.s3_bucket}/{prefix}part-0.parquet"}


def renew_country(cfg: Config, day: dt.date | str, routing: Routing, chunk_customers: int = 5000,
                  client=None, expected_parts: int | None = None, *, taken_at: str | None = None,
                  reused: bool = False) -> dict[str, Any]:
    """Crawl one country from the store that serves it and write the day's renewal list.

    `taken_at`: when the night's snapshots were taken; `reused`: they are an earlier run's (a backfill of a
    date that has its own snapshots), so the plans come from the snapshot too. The summary's `as_of` says
    what the list was computed from and whether that is the date (snapshot.as_of).
    """
    day = dt.date.fromisoformat(snapshot._day(day))
    country = normalize_country(routing.country)
    client = client or s3io.client(cfg)
    now = dt.datetime.now(dt.UTC)
    if routing.serving_store == "cassandra":
        # one partition, read directly (the scans need not wait for it), or the snapshot's copy when reused
        plans = (snapshot.read_snapshot(cfg, day, "cassandra", country, "plans", client) if reused
                 else snapshot.read_cassandra_plans(cfg, country))
        batches: Iterable[dict[str, pa.Table]] = cassandra_snapshot_batches(cfg, day, country, client,
                                                                                expected_parts)
        source = "cassandra"
        taken = taken_at or now.isoformat()
        as_of = snapshot.as_of(day, taken, f"cassandra snapshot of {day} taken at {taken}")
    else:
        plans = mysql_plans(cfg, country)
        batches = mysql_batches(cfg, country, chunk_customers)
        source = "mysql"
        as_of = snapshot.as_of(day, now, f"live mysql read at {now.isoformat(timespec='seconds')}")
    bill, held, skip = crawl(batches, plans, day, country)
    if plans.num_rows == 0 and len(held):
        raise RenewalError(f"{country}: no plan catalogue in {source}; {len(held)} subscriptions could not be "
                           "priced (nothing written)")
    summary = write_output(cfg, day, country, bill, held, skip, source, client, as_of)
    log.info("renewals %s %s from %s: %d to bill, %d held, %d skipped; %s", country, day, source, len(bill),
             len(held), len(skip), as_of["note"] or as_of["computed_from"])
    if len(skip):
        log.warning("renewals %s %s: %d subscriptions can never be billed (%s); list: %s", country, day,
                    len(skip), summary["skipped_by_rule"], summary["skipped_list"])
    try:
        from airflow.sdk.observability.stats import Stats

        Stats.gauge(f"billing_nightly.renewals.{country}", len(bill))
        Stats.gauge(f"billing_nightly.renewals_held.{country}", len(held))
        Stats.gauge(f"billing_nightly.renewals_skipped.{country}", len(skip))
    except ImportError:  # pragma: no cover
        pass
    return summary
