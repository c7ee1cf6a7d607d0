"""Deterministic legacy billing data, with labelled dirty data, bulk loaded into MariaDB.

Why: every stage of the migration (export, transform, load, compare) needs a legacy database that looks
like the real one (per-country plans and currencies, monthly renewals, declines and service holds, refunds,
chargebacks, gift cards and promo credits, plan changes, cancellations) and that contains the dirty rows a
twenty-year-old application really leaves behind, each one labelled so tests can count what the pipeline
must reject and what it must carry over intact. Same seed, same data: runs are reproducible and two
databases can be compared by `legacy_checksums`.

How: the data is generated in memory with numpy (no per-row Python loops; customers are processed in
fixed chunks of `CHUNK_CUSTOMERS`, each with its own seeded generator, so memory stays bounded and the
result does not depend on anything but the arguments), written to temporary TSV files and loaded with
`LOAD DATA LOCAL INFILE` with foreign-key and unique checks off.

In-memory frames use exact integer encodings (so they compare exactly and format fast):
timestamps = epoch milliseconds UTC, dates = epoch days, money = units of 1/10000 (the legacy
DECIMAL(14,4) scale), nullable integer columns use `NULL_INT`, a zero date is `ZERO_TS`; text is str/None.

Dirty kinds (labelled in `seed_dirty_rows(kind, table_name, row_key, customer_id)`):

Invalid (the transform must reject them with a reason, never load them silently):
- `orphan_payment`: a payment whose invoice_id does not exist.
- `null_required`: currency NULL on an invoice or payment (the application always wrote one).
- `negative_amount`: invoice or payment amount < 0.
- `over_precise_amount`: more decimals than the currency's minor units (9.9899 USD, 989.9999 JPY).
- `unknown_currency`: currency 'XXQ' on an invoice or payment.
- `zero_date`: '0000-00-00 00:00:00.000' in invoices.created_at or payments.processed_at.
- `duplicate_natural_key`: a second invoice with the same (subscription_id, period_start) as another
  (row_key is the extra invoice).

Valid but tricky (must migrate intact, byte for byte):
- `max_length_string`: customers.full_name of exactly 255 characters or email of exactly 254.
- `non_bmp_unicode`: customers.full_name with emoji / supplementary-plane characters (utf8mb4).

Usage: `seed(cfg, customers, seed=42, countries=None, dirty_rate=0.0, as_of=date(2026, 11, 1),
first_customer_id=1, replace=True) -> SeedResult`, `legacy_checksums(cfg)`, `database_size(cfg)`, or
`python -m billing_migration.devtools.generator --customers 10000 --seed 42 --countries US=0.35,BR=0.2 --dirty-rate 0.01
[--append --first-customer-id N] [--checksums] [--size]` (prints the SeedResult as JSON).

Clean data also carries valid edge cases: NULL full_name (nullable), billing days 29/30/31 (renewal on the
last day of shorter months), accented and CJK names, JPY with 0 minor units.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pandas as pd

from billing_migration.config import Config, ConfigError, load_config, normalize_country
from billing_migration.stores import bootstrap, connections, schema

# ------------------------------------------------------------------------------------------ constants
CHUNK_CUSTOMERS = 50_000  # fixed: part of the determinism contract (chunk i has its own generator)
NULL_INT = int(np.iinfo(np.int64).min)  # NULL in an integer-coded column
ZERO_TS = NULL_INT + 1  # MySQL zero date '0000-00-00 00:00:00.000' in a timestamp column
E4 = 10_000  # money scale in frames
DAY_MS = 86_400_000
ORPHAN_INVOICE_BASE = 10**15  # orphan payments point at invoice_id ORPHAN_INVOICE_BASE + payment_id

DIRTY_KINDS = (
    "orphan_payment", "null_required", "negative_amount", "over_precise_amount", "unknown_currency",
    "zero_date", "max_length_string", "non_bmp_unicode", "duplicate_natural_key",
)
INVALID_KINDS = frozenset(DIRTY_KINDS) - {"max_length_string", "non_bmp_unicode"}
VALID_TRICKY_KINDS = frozenset({"max_length_string", "non_bmp_unicode"})
UNKNOWN_CURRENCY = "XXQ"

DIRTY_DDL = """CREATE TABLE IF NOT EXISTS seed_dirty_rows (
  kind VARCHAR(32) NOT NULL,
  table_name VARCHAR(64) NOT NULL,
  row_key BIGINT UNSIGNED NOT NULL,
  customer_id BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (kind, table_name, row_key),
  KEY ix_seed_dirty_customer (customer_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"""

# country -> (currency, (Basic, Standard, Premium) monthly price, tax rate): local list prices, net of tax.
PRICING: dict[str, tuple[str, tuple[str, str, str], str]] = {
    "US": ("USD", ("11.99", "17.99", "24.99"), "0"),
    "BR": ("BRL", ("20.90", "44.90", "59.90"), "0"),
    "GB": ("GBP", ("5.99", "12.99", "18.99"), "0.20"),
    "DE": ("EUR", ("7.99", "13.99", "19.99"), "0.19"),
    "FR": ("EUR", ("7.99", "13.49", "19.99"), "0.20"),
    "JP": ("JPY", ("890", "1590", "2290"), "0.10"),
    "IN": ("INR", ("199", "499", "649"), "0.18"),
    "MX": ("MXN", ("139", "249", "329"), "0.16"),
    "CA": ("CAD", ("9.99", "18.99", "23.99"), "0"),
    "NL": ("EUR", ("9.99", "13.99", "19.99"), "0.21"),
    "SE": ("SEK", ("99", "149", "199"), "0.25"),
    "NZ": ("NZD", ("12.99", "18.49", "27.99"), "0.15"),
    "CH": ("CHF", ("12.90", "19.90", "25.90"), "0.081"),
    "IE": ("EUR", ("8.99", "14.99", "19.99"), "0.23"),
}
TIERS = (("Basic", 1, "SD"), ("Standard", 2, "HD"), ("Premium", 4, "UHD"))

FIRST = ("James", "Maria", "Wei", "Aarav", "Sofia", "Lucas", "Emma", "Yuki", "Olivia", "Noah", "Mateo", "Ana",
         "João", "Zoë", "Björn", "Siobhán", "Renée", "François", "Łukasz", "Chloé", "Hiroshi", "Priya", "Liam",
         "Mia", "Ava", "Ethan", "Isabella", "Mohammed", "Fatima", "Seán", "翔太", "Ngozi")
FIRST_ASCII = ("james", "maria", "wei", "aarav", "sofia", "lucas", "emma", "yuki", "olivia", "noah", "mateo",
               "ana", "joao", "zoe", "bjorn", "siobhan", "renee", "francois", "lukasz", "chloe", "hiroshi",
               "priya", "liam", "mia", "ava", "ethan", "isabella", "mohammed", "fatima", "sean", "shota",
               "ngozi")
LAST = ("Smith", "Silva", "Müller", "Martin", "Tanaka", "Sharma", "García", "Tremblay", "de Vries",
        "Andersson", "Williams", "O'Brien", "Dubois", "Rossi", "Kowalski", "Nguyễn", "Kim", "Brown", "Jones",
        "Hernández", "Schmidt", "Sato", "Patel", "Murphy", "Johansson", "Wilson", "山田", "Yamamoto",
        "Fernández", "Lüdenscheidt-Øster", "Okafor", "Taylor")
LAST_ASCII = ("smith", "silva", "muller", "martin", "tanaka", "sharma", "garcia", "tremblay", "devries",
              "andersson", "williams", "obrien", "dubois", "rossi", "kowalski", "nguyen", "kim", "brown",
              "jones", "hernandez", "schmidt", "sato", "patel", "murphy", "johansson", "wilson", "yamada",
              "yamamoto", "fernandez", "ludenscheid", "okafor", "taylor")
DOMAINS = ("example.com", "mail.example.net", "example.org", "inbox.example.co.uk", "correo.example.mx")
EMOJI = ("😀", "🎬", "🍿", "🌍", "𝄞", "🦄", "👩\u200d💻", "🇧🇷")

# Behaviour rates (fractions of customers / subscriptions / invoices).
P_NEVER_SUBSCRIBED = 0.02
P_NULL_NAME = 0.005
P_CANCEL_VOLUNTARY = 0.12
P_CANCEL_INVOLUNTARY = 0.03
P_ON_HOLD = 0.25  # of active subscriptions whose last renewal is within the 14-day retry window
P_PLAN_CHANGE = 0.10
P_CREDIT = 0.06
P_DECLINE_RETRY, P_REFUND, P_CHARGEBACK = 0.04, 0.01, 0.003
METHODS = np.array(schema.PAYMENT_METHODS, dtype=object)
METHOD_P = (0.72, 0.15, 0.03, 0.10)
TOKEN_PREFIX = {"card": "tok_****", "paypal": "pp_****", "gift_card": "gc_****", "direct_debit": "dd_****"}


# ------------------------------------------------------------------------------------------ results
@dataclass
class SeedResult:
    customers: int
    seed: int
    counts: dict[str, int]
    dirty: dict[str, int]
    seconds: float
    generate_seconds: float  # generating + formatting TSV (main thread, waits for the loader excluded)
    load_seconds: float  # LOAD DATA statements (loader thread)
    rows: int = 0
    rows_per_s: float = 0.0  # rows / seconds (end to end, including connecting and schema checks)
    data_rows_per_s: float = 0.0  # rows / wall time of generate+load (they overlap)
    database: str = ""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Generated:
    """One chunk (or a whole small run) of generated frames, keyed by table name, plus dirty labels."""

    tables: dict[str, pd.DataFrame]
    dirty: pd.DataFrame
    next_ids: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ catalogue
def countries_for(cfg: Config | None, countries: dict[str, float] | None) -> dict[str, float]:
    """The normalised country mix; default: skewed (Zipf-like) over the configured countries."""
    if countries:
        out: dict[str, float] = {}
        for code, w in countries.items():
            cc = normalize_country(code)
            if cc not in PRICING:
                raise ConfigError(f"no plan catalogue for country {cc!r}; known: {sorted(PRICING)}")
            if not (isinstance(w, int | float) and w > 0 and np.isfinite(w)):
                raise ConfigError(f"country weight for {cc} must be a positive number, got {w!r}")
            out[cc] = float(w)
    else:
        codes = [c for c in (cfg or load_config()).countries if c in PRICING] or list(PRICING)
        out = {c: 1.0 / (i + 1) ** 1.3 for i, c in enumerate(codes)}
    total = sum(out.values())
    return {c: w / total for c, w in out.items()}


def _money_e4(value: str) -> int:
    return int(Decimal(value) * E4)


def plan_catalogue() -> pd.DataFrame:
    """Every country's three plans; plan_id is stable (country position in PRICING * 3 + tier + 1)."""
    rows = []
    for ci, (country, (cur, prices, rate)) in enumerate(PRICING.items()):
        minor = schema.CURRENCY_MINOR_UNITS[cur]
        for ti, (name, screens, quality) in enumerate(TIERS):
            price = Decimal(prices[ti])
            tax = (price * Decimal(rate)).quantize(Decimal(1).scaleb(-minor), rounding=ROUND_HALF_UP)
            rows.append({"plan_id": ci * 3 + ti + 1, "country": country, "currency": cur,
                         "name": f"{name} {quality} ({screens} screen{'s' if screens > 1 else ''})",
                         "price": _money_e4(prices[ti]), "screens": screens, "quality": quality,
                         "tax": int(tax * E4), "updated_at": 1735689600000})  # 2025-01-01 UTC
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ calendar
def _epoch_day(d: date) -> int:
    return (d - date(1970, 1, 1)).days


def _ymd(days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(month index since 1970-01, day of month) of epoch days."""
    dt = days.astype("datetime64[D]")
    months = dt.astype("datetime64[M]")
    dom = (dt - months.astype("datetime64[D]")).astype(np.int64) + 1
    return months.astype(np.int64), dom


def billing_date(month_index: np.ndarray, billing_day: np.ndarray) -> np.ndarray:
    """Epoch day of the renewal in a month: the billing day, or the month's last day if it is shorter."""
    start = month_index.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    nxt = (month_index + 1).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    return start + np.minimum(billing_day, nxt - start) - 1


def _seg_index(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For segments of the given lengths: (segment of each element, position within its segment)."""
    seg = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    return seg, np.arange(int(counts.sum())) - starts[seg]


# ------------------------------------------------------------------------------------------ generation
def generate(customers: int, seed: int = 42, countries: dict[str, float] | None = None,
             dirty_rate: float = 0.0, as_of: date = date(2026, 11, 1), first_customer_id: int = 1,
             start_ids: dict[str, int] | None = None, cfg: Config | None = None) -> Generated:
    """All frames in memory (concatenated chunks): for tests and small runs. `seed` uses the same chunks."""
    parts = list(generate_chunks(customers, seed, countries, dirty_rate, as_of, first_customer_id,
                                 start_ids, cfg))
    tables = {t: pd.concat([p.tables[t] for p in parts], ignore_index=True)
              for t in parts[0].tables}
    dirty = pd.concat([p.dirty for p in parts], ignore_index=True)
    return Generated(tables, dirty, parts[-1].next_ids)


def generate_chunks(customers: int, seed: int = 42, countries: dict[str, float] | None = None,
                    dirty_rate: float = 0.0, as_of: date = date(2026, 11, 1), first_customer_id: int = 1,
                    start_ids: dict[str, int] | None = None, cfg: Config | None = None) -> Iterable[Generated]:
    """Yield one Generated per chunk of CHUNK_CUSTOMERS customers; ids continue densely across chunks."""
    mix = _validate(customers, dirty_rate, first_customer_id, cfg, countries)
    plans = plan_catalogue()
    next_ids = {"subscriptions": 1, "plan_changes": 1, "invoices": 1, "payments": 1,
                "balance_transactions": 1, **(start_ids or {})}
    for ci, lo in enumerate(range(0, customers, CHUNK_CUSTOMERS)):
        n = min(CHUNK_CUSTOMERS, customers - lo)
        rng = np.random.default_rng([seed, ci])
        g = _chunk(rng, n, first_customer_id + lo, mix, plans, dirty_rate, as_of, next_ids,
                   force_each_kind=ci == 0 and customers >= 100)
        next_ids = g.next_ids
        yield g


def _validate(customers: int, dirty_rate: float, first_customer_id: int, cfg: Config | None,
              countries: dict[str, float] | None) -> dict[str, float]:
    """Check every argument before anything is generated or truncated; returns the country mix."""
    if not isinstance(customers, int) or isinstance(customers, bool) or customers < 1:
        raise ValueError(f"customers must be a positive integer, got {customers!r}")
    if not 0.0 <= dirty_rate <= 0.5:
        raise ValueError(f"dirty_rate must be in [0, 0.5], got {dirty_rate!r}")
    if not isinstance(first_customer_id, int) or first_customer_id < 1:
        raise ValueError(f"first_customer_id must be an integer >= 1, got {first_customer_id!r}")
    return countries_for(cfg, countries)


def _pick(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    return rng.random(n) < p


@dataclass(frozen=True)
class _Ctx:
    """What every stage of a chunk needs: its generator, size, the as-of day and the plan prices."""

    rng: np.random.Generator
    n: int
    A: int  # as-of epoch day
    a_ms: int  # as-of epoch ms
    ids: dict[str, int]  # first id of each table in this chunk
    plan_price: np.ndarray
    plan_tax: np.ndarray
    plan_cur: np.ndarray


@dataclass
class _Cust:
    cid: np.ndarray
    cpos: np.ndarray  # position of the customer's country in PRICING (plan_id base)
    country: np.ndarray
    currency: np.ndarray
    signup_at: np.ndarray
    tod: np.ndarray
    m0: np.ndarray
    billing_day: np.ndarray
    full_name: np.ndarray
    email: np.ndarray
    subscribed: np.ndarray
    method: np.ndarray
    token: np.ndarray


@dataclass
class _Subs:
    sc: np.ndarray  # customer index of each subscription
    sub_id: np.ndarray
    s_m0: np.ndarray
    s_bd: np.ndarray
    s_tod: np.ndarray
    status: np.ndarray
    n_inv: np.ndarray
    vol: np.ndarray
    invol: np.ndarray
    hold: np.ndarray
    tier0: np.ndarray
    tier1: np.ndarray
    change: np.ndarray
    change_at_k: np.ndarray
    pbase: np.ndarray
    credit: np.ndarray
    credit_after_k: np.ndarray
    gift: np.ndarray


@dataclass
class _Inv:
    seg: np.ndarray  # subscription index of each invoice
    k: np.ndarray  # period number within its subscription
    inv_id: np.ndarray
    p_start: np.ndarray
    p_end: np.ndarray
    created: np.ndarray
    amount: np.ndarray
    tax: np.ndarray
    cur: np.ndarray
    grant: np.ndarray  # per subscription: credit granted
    applied: np.ndarray
    remainder: np.ndarray
    scen: np.ndarray  # payment scenario: 0 none, 1 paid, 2 decline+retry, 3 refund, 4 chargeback, 5 hold, 6 invol
    n_pay: np.ndarray
    status: np.ndarray


@dataclass
class _Pay:
    pseg: np.ndarray  # invoice index of each payment
    pay_id: np.ndarray
    processed: np.ndarray
    status: np.ndarray
    pc: np.ndarray  # customer index of each payment


@dataclass
class _Book:
    inv_updated: np.ndarray
    cancelled_at: np.ndarray
    next_billing: np.ndarray
    changed_at: np.ndarray
    sub_updated: np.ndarray
    cust_status: np.ndarray
    cust_updated: np.ndarray


def _chunk(rng: np.random.Generator, n: int, first_cid: int, mix: dict[str, float], plans: pd.DataFrame,
           dirty_rate: float, as_of: date, ids: dict[str, int], force_each_kind: bool) -> Generated:
    """One chunk of customers and everything they own. The stages draw from `rng` in a fixed order (the
    determinism contract): customers, subscriptions, invoices, payments, bookkeeping, balance, dirty rows."""
    A = _epoch_day(as_of)
    ctx = _Ctx(rng, n, A, A * DAY_MS, ids, plans["price"].to_numpy(), plans["tax"].to_numpy(),
               plans["currency"].to_numpy(dtype=object))
    c = _gen_customers(ctx, first_cid, mix)
    s = _gen_subscriptions(ctx, c)
    inv = _gen_invoices(ctx, s)
    pay = _gen_payments(ctx, s, inv)
    book = _gen_bookkeeping(ctx, c, s, inv, pay)
    tables = _frames(ctx, c, s, inv, pay, book)
    dirty = _make_dirty(rng, tables, dirty_rate, force_each_kind)
    ns = len(s.sc)
    next_ids = {"subscriptions": ids["subscriptions"] + ns,
                "plan_changes": ids["plan_changes"] + len(tables["plan_changes"]),
                "invoices": ids["invoices"] + len(tables["invoices"]), "payments": ids["payments"] + len(pay.pseg),
                "balance_transactions": ids["balance_transactions"] + len(tables["balance_transactions"])}
    return Generated(tables, dirty, next_ids)


def _gen_customers(ctx: _Ctx, first_cid: int, mix: dict[str, float]) -> _Cust:
    rng, n = ctx.rng, ctx.n
    codes = list(mix)
    country_pos = np.array([list(PRICING).index(c) for c in codes])
    cid = np.arange(first_cid, first_cid + n, dtype=np.int64)
    cix = rng.choice(len(codes), size=n, p=np.array(list(mix.values())))
    cpos = country_pos[cix]
    country = np.array(codes, dtype=object)[cix]
    currency = ctx.plan_cur[cpos * 3]
    signup_day = ctx.A - rng.integers(1, 1096, size=n)
    tod = rng.integers(0, 20 * 3_600_000, size=n)  # renewal batch time of day: 00:00-20:00 UTC
    signup_at = signup_day * DAY_MS + tod
    m0, billing_day = _ymd(signup_day)
    fi, li = rng.integers(0, len(FIRST), size=n), rng.integers(0, len(LAST), size=n)
    full_name = np.strings.add(np.strings.add(np.array(FIRST)[fi], " "), np.array(LAST)[li]).astype(object)
    full_name[_pick(rng, n, P_NULL_NAME)] = None
    local = np.strings.add(np.strings.add(np.array(FIRST_ASCII)[fi], "."), np.array(LAST_ASCII)[li])
    email = np.strings.add(np.strings.add(np.strings.add(local, "."), cid.astype(str)), "@")
    email = np.strings.add(email, np.array(DOMAINS)[rng.integers(0, len(DOMAINS), size=n)]).astype(object)
    subscribed = ~_pick(rng, n, P_NEVER_SUBSCRIBED)
    method = METHODS[rng.choice(4, size=n, p=METHOD_P)]
    last4 = _digits4(rng, n)
    token = np.strings.add(_token_prefix(method), last4).astype(object)
    return _Cust(cid, cpos, country, currency, signup_at, tod, m0, billing_day, full_name, email, subscribed,
                 method, token)


def _gen_subscriptions(ctx: _Ctx, c: _Cust) -> _Subs:
    """Renewals up to as_of, cancellations (voluntary, involuntary after failed retries), holds, plan
    changes and credit grants per subscription."""
    rng, A = ctx.rng, ctx.A
    sc = np.flatnonzero(c.subscribed)
    ns = len(sc)
    s_m0, s_bd, s_tod = c.m0[sc], c.billing_day[sc], c.tod[sc]
    a_month, _ = _ymd(np.array([A]))
    k_all = (a_month[0] - s_m0) + (billing_date(a_month.repeat(ns), s_bd) < A)  # renewals before as_of
    r = rng.random(ns)
    c_pick = (rng.random(ns) * k_all).astype(np.int64)  # period in which a cancellation happens
    status = np.full(ns, "active", dtype=object)
    n_inv = k_all.copy()
    vol = r < P_CANCEL_VOLUNTARY
    n_inv[vol] = c_pick[vol] + 1
    # involuntary: last invoice declined, retries at +3d/+7d fail, cancelled at +14d (must be before as_of)
    k_ok = np.maximum(0, k_all - 1 - (billing_date(s_m0 + k_all - 1, s_bd) + 15 > A).astype(np.int64))
    invol = (r >= P_CANCEL_VOLUNTARY) & (r < P_CANCEL_VOLUNTARY + P_CANCEL_INVOLUNTARY) & \
        (billing_date(s_m0, s_bd) + 15 <= A)
    n_inv[invol] = np.minimum(c_pick[invol], k_ok[invol]) + 1
    status[vol | invol] = "cancelled"
    last_bd = billing_date(s_m0 + n_inv - 1, s_bd)
    hold = (status == "active") & (last_bd + 14 > A) & _pick(rng, ns, P_ON_HOLD)
    status[hold] = "on_hold"
    tier0 = rng.choice(3, size=ns, p=(0.3, 0.45, 0.25))
    change = (n_inv >= 2) & _pick(rng, ns, P_PLAN_CHANGE)
    change_at_k = 1 + (rng.random(ns) * np.maximum(n_inv - 1, 1)).astype(np.int64)  # first period on new plan
    tier1 = np.where(change, (tier0 + rng.integers(1, 3, size=ns)) % 3, tier0)
    pbase = c.cpos[sc] * 3 + 1
    credit = (status != "on_hold") & ~invol & (n_inv >= 2) & _pick(rng, ns, P_CREDIT)
    credit_after_k = (rng.random(ns) * np.maximum(n_inv - 1, 1)).astype(np.int64)  # granted in this period
    gift = credit & _pick(rng, ns, 0.6)
    sub_id = ctx.ids["subscriptions"] + np.arange(ns, dtype=np.int64)
    return _Subs(sc, sub_id, s_m0, s_bd, s_tod, status, n_inv, vol, invol, hold, tier0, tier1, change,
                 change_at_k, pbase, credit, credit_after_k, gift)


def _gen_invoices(ctx: _Ctx, s: _Subs) -> _Inv:
    """One invoice per renewal, priced by the plan of its period, credits spent in order, and the payment
    scenario of each invoice."""
    rng, a_ms = ctx.rng, ctx.a_ms
    seg, k = _seg_index(s.n_inv)
    ni = len(seg)
    inv_id = ctx.ids["invoices"] + np.arange(ni, dtype=np.int64)
    i_bd = s.s_bd[seg]
    p_start = billing_date(s.s_m0[seg] + k, i_bd)
    p_end = billing_date(s.s_m0[seg] + k + 1, i_bd) - 1
    created = p_start * DAY_MS + s.s_tod[seg] + np.where(k == 0, rng.integers(1_000, 60_000, size=ni), 0)
    tier = np.where(s.change[seg] & (k >= s.change_at_k[seg]), s.tier1[seg], s.tier0[seg])
    i_plan = s.pbase[seg] + tier
    amount = ctx.plan_price[i_plan - 1]
    tax = ctx.plan_tax[i_plan - 1]
    total = amount + tax
    i_cur = ctx.plan_cur[i_plan - 1]
    # credits: one grant per credit subscription, spent on the following invoices in order
    std_total = ctx.plan_price[s.pbase] + ctx.plan_tax[s.pbase]  # Standard plan (tier 1) total
    grant = np.where(s.gift, std_total * rng.integers(1, 4, size=len(s.sc)), std_total) * s.credit
    eligible = s.credit[seg] & (k > s.credit_after_k[seg])
    spend = np.where(eligible, total, 0)
    before = pd.Series(spend).groupby(seg).cumsum().to_numpy() - spend
    applied = np.where(eligible, np.clip(grant[seg] - before, 0, total), 0)
    remainder = total - applied
    is_last = k == s.n_inv[seg] - 1
    u = rng.random(ni)
    scen = np.ones(ni, dtype=np.int64)
    scen[(u < P_DECLINE_RETRY) & (created < a_ms - 6 * DAY_MS)] = 2
    scen[(u >= P_DECLINE_RETRY) & (u < P_DECLINE_RETRY + P_REFUND) & (created < a_ms - 11 * DAY_MS)] = 3
    lo = P_DECLINE_RETRY + P_REFUND
    scen[(u >= lo) & (u < lo + P_CHARGEBACK) & (created < a_ms - 61 * DAY_MS)] = 4
    scen[applied > 0] = 1
    scen[is_last & s.hold[seg]] = 5
    scen[is_last & s.invol[seg]] = 6
    scen[remainder == 0] = 0
    n_fail_hold = 1 + (created + 3 * DAY_MS < a_ms) + (created + 7 * DAY_MS < a_ms)
    n_pay = np.select([scen == 0, scen == 1, scen == 5, scen == 6], [0, 1, n_fail_hold, 3], 2)
    status = np.select([scen == 3, scen == 4, scen >= 5], ["refunded", "charged_back", "declined"],
                       "paid").astype(object)
    return _Inv(seg, k, inv_id, p_start, p_end, created, amount, tax, i_cur, grant, applied, remainder, scen,
                n_pay, status)


def _gen_payments(ctx: _Ctx, s: _Subs, inv: _Inv) -> _Pay:
    """The attempts of each invoice's scenario (declines, retries, refunds, chargebacks)."""
    rng = ctx.rng
    pseg, att = _seg_index(inv.n_pay)
    npay = len(pseg)
    pay_id = ctx.ids["payments"] + np.arange(npay, dtype=np.int64)
    ps = inv.scen[pseg]
    jitter = rng.integers(1_000, 120_000, size=npay)
    later = np.select(
        [ps == 2, ps == 3, ps == 4, ps >= 5],
        [rng.integers(1, 6, size=npay), rng.integers(1, 11, size=npay), rng.integers(20, 61, size=npay),
         np.where(att == 1, 3, 7)], 0)
    processed = inv.created[pseg] + np.where(att > 0, later * DAY_MS, 0) + jitter
    status = np.select(
        [ps >= 5, (ps == 2) & (att == 0), (ps == 3) & (att == 1), (ps == 4) & (att == 1)],
        ["failed", "failed", "refunded", "charged_back"], "succeeded").astype(object)
    return _Pay(pseg, pay_id, processed, status, s.sc[inv.seg[pseg]])


def _gen_bookkeeping(ctx: _Ctx, c: _Cust, s: _Subs, inv: _Inv, pay: _Pay) -> _Book:
    """Timestamps that follow from the events: updated_at of every row, cancellation and plan change times."""
    rng, A = ctx.rng, ctx.A
    ns, ni = len(s.sc), len(inv.seg)
    inv_last_ts = pd.Series(pay.processed).groupby(pay.pseg).max().reindex(range(ni)).to_numpy()
    inv_updated = np.where(np.isnan(inv_last_ts), inv.created + 1, np.nan_to_num(inv_last_ts)).astype(np.int64)
    last_created = inv.created[np.cumsum(s.n_inv) - 1]
    limit = np.minimum(billing_date(s.s_m0 + s.n_inv, s.s_bd), A) * DAY_MS
    cancelled_at = np.full(ns, NULL_INT, dtype=np.int64)
    vol_at = last_created + 3_600_000 + (rng.random(ns) * (limit - last_created - 3_600_001)).astype(np.int64)
    cancelled_at[s.vol] = vol_at[s.vol]
    cancelled_at[s.invol] = last_created[s.invol] + 14 * DAY_MS
    next_billing = np.where(s.status == "cancelled", NULL_INT, billing_date(s.s_m0 + s.n_inv, s.s_bd))
    # changed during the period before the first one on the new plan (change_at_k - 1 < n_inv always)
    chg_lo = np.where(s.change, inv.created[np.cumsum(s.n_inv) - s.n_inv + s.change_at_k - 1], 0)
    changed_at = chg_lo + 3_600_000 + (rng.random(ns) * (20 * DAY_MS)).astype(np.int64)
    sub_last_inv_upd = (pd.Series(inv_updated).groupby(inv.seg).max().to_numpy() if ni
                        else np.zeros(0, np.int64))
    sub_updated = np.maximum.reduce([c.signup_at[s.sc], sub_last_inv_upd, np.where(s.change, changed_at, 0),
                                     cancelled_at])
    cust_status = np.full(ctx.n, "never_subscribed", dtype=object)
    cust_status[s.sc] = s.status
    cust_updated = c.signup_at.copy()
    cust_updated[s.sc] = sub_updated
    return _Book(inv_updated, cancelled_at, next_billing, changed_at, sub_updated, cust_status, cust_updated)


def _gen_balance(ctx: _Ctx, c: _Cust, s: _Subs, inv: _Inv) -> pd.DataFrame:
    """Credit grants (gift card or promo) and their spending on invoices, in time order per customer."""
    rng = ctx.rng
    cs = np.flatnonzero(s.credit)
    first_inv = np.cumsum(s.n_inv) - s.n_inv
    g_lo = inv.created[first_inv[cs] + s.credit_after_k[cs]]
    g_hi = inv.created[first_inv[cs] + s.credit_after_k[cs] + 1]
    grant_at = g_lo + 3_600_000 + (rng.random(len(cs)) * (g_hi - g_lo - 7_200_000)).astype(np.int64)
    ai = np.flatnonzero(inv.applied > 0)
    b_sub = np.concatenate([cs, inv.seg[ai]])
    b_at = np.concatenate([grant_at, inv.created[ai] + 1])
    b_amount = np.concatenate([inv.grant[cs], -inv.applied[ai]])
    b_kind = np.concatenate([np.where(s.gift[cs], "gift_card_redemption", "promo_credit").astype(object),
                             np.full(len(ai), "invoice_credit", dtype=object)])
    b_inv = np.concatenate([np.full(len(cs), NULL_INT, dtype=np.int64), inv.inv_id[ai]])
    gc_code = _digits4(rng, len(cs))
    b_ref = np.concatenate([np.where(s.gift[cs], np.strings.add("giftcard:****", gc_code), "promo:WELCOMEBACK")
                            .astype(object), np.full(len(ai), None, dtype=object)])
    order = np.lexsort((b_at, s.sc[b_sub]))
    nb = len(order)
    return pd.DataFrame({
        "txn_id": ctx.ids["balance_transactions"] + np.arange(nb, dtype=np.int64),
        "customer_id": c.cid[s.sc[b_sub]][order], "kind": b_kind[order], "amount": b_amount[order],
        "currency": c.currency[s.sc[b_sub]][order], "invoice_id": b_inv[order], "reference": b_ref[order],
        "created_at": b_at[order], "updated_at": b_at[order],
    })


def _frames(ctx: _Ctx, c: _Cust, s: _Subs, inv: _Inv, pay: _Pay, book: _Book) -> dict[str, pd.DataFrame]:
    """The chunk's six legacy tables as frames (the balance rows are generated here: last in rng order)."""
    balance = _gen_balance(ctx, c, s, inv)
    customers = pd.DataFrame({
        "customer_id": c.cid, "country": c.country, "email": c.email, "full_name": c.full_name,
        "status": book.cust_status, "signup_at": c.signup_at, "billing_day": c.billing_day,
        "updated_at": book.cust_updated,
    })
    subscriptions = pd.DataFrame({
        "subscription_id": s.sub_id, "customer_id": c.cid[s.sc], "plan_id": s.pbase + s.tier1,
        "status": s.status, "started_at": c.signup_at[s.sc], "cancelled_at": book.cancelled_at,
        "next_billing_date": book.next_billing, "updated_at": book.sub_updated,
    })
    ch = np.flatnonzero(s.change)
    plan_changes = pd.DataFrame({
        "change_id": ctx.ids["plan_changes"] + np.arange(len(ch), dtype=np.int64), "customer_id": c.cid[s.sc[ch]],
        "subscription_id": s.sub_id[ch], "from_plan_id": s.pbase[ch] + s.tier0[ch],
        "to_plan_id": s.pbase[ch] + s.tier1[ch], "changed_at": book.changed_at[ch],
        "updated_at": book.changed_at[ch],
    })
    invoices = pd.DataFrame({
        "invoice_id": inv.inv_id, "customer_id": c.cid[s.sc[inv.seg]], "subscription_id": s.sub_id[inv.seg],
        "period_start": inv.p_start, "period_end": inv.p_end, "amount": inv.amount, "tax": inv.tax,
        "currency": inv.cur, "status": inv.status, "created_at": inv.created, "updated_at": book.inv_updated,
    })
    payments = pd.DataFrame({
        "payment_id": pay.pay_id, "customer_id": c.cid[pay.pc], "invoice_id": inv.inv_id[pay.pseg],
        "method": c.method[pay.pc], "payment_token": c.token[pay.pc], "amount": inv.remainder[pay.pseg],
        "currency": inv.cur[pay.pseg], "status": pay.status, "processed_at": pay.processed,
        "updated_at": pay.processed,
    })
    return {"customers": customers, "subscriptions": subscriptions, "plan_changes": plan_changes,
            "invoices": invoices, "payments": payments, "balance_transactions": balance}


def _digits4(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random 4-digit strings ('0042'), e.g. a card's last four digits."""
    v = rng.integers(0, 10_000, size=n)
    return np.strings.zfill(v.astype(str), 4) if n else np.zeros(0, dtype="<U4")


def _token_prefix(method: np.ndarray) -> np.ndarray:
    out = np.empty(len(method), dtype=object)
    for m, prefix in TOKEN_PREFIX.items():
        out[method == m] = prefix
    return out.astype(str)


# ------------------------------------------------------------------------------------------ dirty data
def _take(rng: np.random.Generator, pool: list[np.ndarray], n: int) -> np.ndarray:
    """Take n row indices from the front of a shuffled pool (so kinds never share a row)."""
    got, pool[0] = pool[0][:n], pool[0][n:]
    return got


def _n_for(rate: float, eligible: int, force: bool) -> int:
    n = round(rate * eligible)
    return min(eligible, max(n, 1 if (force and rate > 0) else 0))


_EMPTY_DIRTY = {"kind": object, "table_name": object, "row_key": np.int64, "customer_id": np.int64}


class _Dirtier:
    """Corrupts rows of a chunk's frames in place and labels each one. Every kind takes its rows from the
    front of a shuffled pool per table, so kinds never share a row; the rng order is fixed."""

    def __init__(self, rng: np.random.Generator, t: dict[str, pd.DataFrame], rate: float, force: bool) -> None:
        self.rng, self.t, self.rate, self.force = rng, t, rate, force
        self.labels: list[pd.DataFrame] = []
        self.pools = {name: [rng.permutation(len(t[name]))] for name in ("invoices", "payments", "customers")}

    def label(self, kind: str, table: str, keys: np.ndarray, cust: np.ndarray) -> None:
        self.labels.append(pd.DataFrame({"kind": kind, "table_name": table, "row_key": keys.astype(np.int64),
                                         "customer_id": cust.astype(np.int64)}))

    def take(self, table: str, force: bool | None = None) -> np.ndarray:
        """This kind's rows of `table` (at least one for the first chunk's invoices/customers when forced)."""
        n = _n_for(self.rate, len(self.t[table]), self.force if force is None else force)
        return _take(self.rng, self.pools[table], n)

    def both(self, kind: str, apply_inv, apply_pay) -> None:
        """One invalid kind on invoices and on payments (only invoices are forced)."""
        for table, fn, key, force in (("invoices", apply_inv, "invoice_id", self.force),
                                      ("payments", apply_pay, "payment_id", False)):
            df = self.t[table]
            rows = self.take(table, force)
            if len(rows):
                fn(df, rows)
                self.label(kind, table, df[key].to_numpy()[rows], df["customer_id"].to_numpy()[rows])

    def frame(self) -> pd.DataFrame:
        return pd.concat(self.labels, ignore_index=True) if self.labels else _empty_dirty()


def _empty_dirty() -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series(dtype=v) for k, v in _EMPTY_DIRTY.items()})


def _set_col(col: str, value):
    def fn(df: pd.DataFrame, rows: np.ndarray) -> None:
        df.iloc[rows, df.columns.get_loc(col)] = value
    return fn


def _map_col(col: str, f):
    def fn(df: pd.DataFrame, rows: np.ndarray) -> None:
        j = df.columns.get_loc(col)
        df.iloc[rows, j] = f(df.iloc[rows, j].to_numpy())
    return fn


def _make_dirty(rng: np.random.Generator, t: dict[str, pd.DataFrame], rate: float,
                force: bool) -> pd.DataFrame:
    """Apply every dirty kind at `rate` (see the module docstring); returns the labels."""
    if rate <= 0:
        return _empty_dirty()
    d = _Dirtier(rng, t, rate, force)
    _dirty_invalid(d)
    _dirty_tricky_strings(d)
    _dirty_duplicate_invoices(d)
    return d.frame()


def _dirty_invalid(d: _Dirtier) -> None:
    """Orphan payments, then the invalid kinds shared by invoices and payments."""
    pay = d.t["payments"]
    rows = d.take("payments")
    if len(rows):
        pay.iloc[rows, pay.columns.get_loc("invoice_id")] = ORPHAN_INVOICE_BASE + pay["payment_id"].to_numpy()[rows]
        d.label("orphan_payment", "payments", pay["payment_id"].to_numpy()[rows], pay["customer_id"].to_numpy()[rows])
    d.both("null_required", _set_col("currency", None), _set_col("currency", None))
    d.both("negative_amount", _map_col("amount", lambda a: -np.maximum(a, 100)),
           _map_col("amount", lambda a: -np.maximum(a, 100)))
    d.both("over_precise_amount", _map_col("amount", lambda a: a - 1), _map_col("amount", lambda a: a - 1))
    d.both("unknown_currency", _set_col("currency", UNKNOWN_CURRENCY), _set_col("currency", UNKNOWN_CURRENCY))
    d.both("zero_date", _set_col("created_at", ZERO_TS), _set_col("processed_at", ZERO_TS))


def _dirty_tricky_strings(d: _Dirtier) -> None:
    """Valid but tricky customers: maximum-length names/emails, then emoji (non-BMP) names."""
    cust = d.t["customers"]
    rows = d.take("customers")
    if len(rows):
        ids_ = cust["customer_id"].to_numpy()[rows]
        names = [_max_name(int(c)) for c in ids_]
        emails = [_max_email(int(c)) for c in ids_]
        use_email = np.arange(len(rows)) % 2 == 1
        jn, je = cust.columns.get_loc("full_name"), cust.columns.get_loc("email")
        cust.iloc[rows[~use_email], jn] = np.array(names, dtype=object)[~use_email]
        cust.iloc[rows[use_email], je] = np.array(emails, dtype=object)[use_email]
        d.label("max_length_string", "customers", ids_, ids_)
    rows = d.take("customers")
    if len(rows):
        ids_ = cust["customer_id"].to_numpy()[rows]
        e = np.array(EMOJI)
        fn_ = np.array(FIRST)[ids_ % len(FIRST)]
        ln_ = np.array(LAST)[(ids_ // 7) % len(LAST)]
        nm = np.strings.add(np.strings.add(np.strings.add(np.strings.add(fn_, " "), e[ids_ % len(e)]), " "), ln_)
        nm = np.strings.add(np.strings.add(nm, " "), e[(ids_ // 3) % len(e)])
        cust.iloc[rows, cust.columns.get_loc("full_name")] = nm.astype(object)
        d.label("non_bmp_unicode", "customers", ids_, ids_)


def _dirty_duplicate_invoices(d: _Dirtier) -> None:
    """Duplicate natural key: a second invoice for the same (subscription_id, period_start)."""
    inv = d.t["invoices"]
    rows = d.take("invoices")
    if len(rows):
        dup = inv.iloc[np.sort(rows)].copy()
        dup["invoice_id"] = int(inv["invoice_id"].max()) + 1 + np.arange(len(dup), dtype=np.int64)
        created = dup["created_at"].to_numpy()
        dup["created_at"] = np.where(created == ZERO_TS, ZERO_TS, created + 1_000)
        d.t["invoices"] = pd.concat([inv, dup], ignore_index=True)
        d.label("duplicate_natural_key", "invoices", dup["invoice_id"].to_numpy(), dup["customer_id"].to_numpy())


def _max_name(cid: int) -> str:
    """A full_name of exactly 255 characters (the column's limit), unique per customer."""
    base = f"Maximiliana Wolfeschlegelsteinhausenbergerdorff-Ñúñez {cid} "
    return (base + "von Habsburg-Lothringen " * 12)[:255]


def _max_email(cid: int) -> str:
    """An email of exactly 254 characters (RFC 5321 path limit): 64-char local part, long domain."""
    local = f"max.length.{cid}.".ljust(64, "x")[:64]
    domain_len = 254 - 65
    labels = []
    while sum(len(x) + 1 for x in labels) < domain_len - 12:
        labels.append("sub" + "d" * 40)
    domain = ".".join(labels)
    domain = (domain + "." + "e" * 200)[: domain_len - len(".example.com")] + ".example.com"
    return f"{local}@{domain}"


# ------------------------------------------------------------------------------------------ TSV
_ESC = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})
_UNESC = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r", "0": "\0", "b": "\b", "Z": "\x1a"}


def escape_text(values: np.ndarray) -> list[str]:
    """Text column -> LOAD DATA fields (ESCAPED BY '\\\\'): NULL -> \\N, specials backslash-escaped.

    Escapes each distinct value once (factorize), so low-cardinality columns cost one lookup per row.
    """
    codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    escaped = np.array([str(u).translate(_ESC) for u in uniques] + [r"\N"], dtype=object)
    return escaped[codes].tolist()  # code -1 (NULL) picks the trailing \N


def unescape_field(field_: str) -> str | None:
    """Inverse of escape_text for one field, as MySQL reads it (used by tests)."""
    if field_ == r"\N":
        return None
    out, i = [], 0
    while i < len(field_):
        ch = field_[i]
        if ch == "\\" and i + 1 < len(field_):
            out.append(_UNESC.get(field_[i + 1], field_[i + 1]))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _fmt_column(values: np.ndarray, kind: str) -> list[str]:
    if kind == "text":
        return escape_text(values)
    v = np.asarray(values).astype(np.int64)
    null = v == NULL_INT
    if kind in ("bigint", "int", "tinyint"):
        out = np.array(list(map(str, v.tolist())), dtype=object)
    elif kind == "decimal":
        a = np.abs(v)
        out = np.strings.add(np.strings.add(np.where(v < 0, "-", ""), (a // E4).astype(str)), ".")
        out = np.strings.add(out, np.strings.zfill((a % E4).astype(str), 4)).astype(object)
    elif kind == "timestamp":
        zero = v == ZERO_TS
        out = np.strings.replace(np.datetime_as_string(np.where(null | zero, 0, v).astype("datetime64[ms]"),
                                                       unit="ms"), "T", " ").astype(object)
        out[zero] = "0000-00-00 00:00:00.000"
    elif kind == "date":
        out = np.datetime_as_string(np.where(null, 0, v).astype("datetime64[D]"), unit="D").astype(object)
    else:  # pragma: no cover - schema.KINDS is closed
        raise ValueError(kind)
    out[null] = r"\N"
    return out.tolist()


def to_tsv(df: pd.DataFrame, table: schema.Table) -> bytes:
    """Frame -> TSV bytes in the table's column order, for LOAD DATA (utf8mb4, \\N = NULL)."""
    cols = [_fmt_column(df[c.name].to_numpy(), c.kind) for c in table.columns]
    if not len(df):
        return b""
    return ("\n".join(map("\t".join, zip(*cols, strict=True))) + "\n").encode("utf-8")


# ------------------------------------------------------------------------------------------ loading
BILLING_TABLES = tuple(t.name for t in schema.TABLES)
ID_COLUMNS = {t.name: t.key for t in schema.TABLES}


def _session_for_bulk(cur) -> None:
    # No strict mode, no NO_ZERO_DATE: the legacy app wrote zero dates; FK/unique checks off for speed.
    cur.execute("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION', FOREIGN_KEY_CHECKS = 0, UNIQUE_CHECKS = 0")


LOAD_PIECE_ROWS = 400_000  # rows per LOAD DATA statement / transaction (bounds temp files and undo)


def write_tsv(table_name: str, df: pd.DataFrame, tmpdir: str | None = None) -> str | None:
    """Format a frame into a temp TSV file; returns its path (None for an empty frame)."""
    table = schema.TABLES_BY_NAME[table_name] if table_name != "seed_dirty_rows" else _DIRTY_TABLE
    data = to_tsv(df, table)
    if not data:
        return None
    fd, path = tempfile.mkstemp(prefix="bm_seed_", suffix=f".{table_name}.tsv", dir=tmpdir)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


def load_file(conn, table_name: str, path: str, replace_rows: bool = False) -> int:
    """LOAD DATA LOCAL INFILE one TSV (then delete it); returns rows loaded. Any warning is an error."""
    table = schema.TABLES_BY_NAME[table_name] if table_name != "seed_dirty_rows" else _DIRTY_TABLE
    cols = ", ".join(f"`{c.name}`" for c in table.columns)
    try:
        with conn.cursor() as cur:
            _session_for_bulk(cur)
            cur.execute(
                f"LOAD DATA LOCAL INFILE %s {'REPLACE' if replace_rows else ''} INTO TABLE `{table_name}` "
                "CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' "
                f"LINES TERMINATED BY '\\n' ({cols})", (path,))
            loaded = cur.rowcount
            cur.execute("SHOW WARNINGS LIMIT 5")
            warnings = cur.fetchall()
        if warnings:
            conn.rollback()
            raise RuntimeError(f"LOAD DATA into {table_name} raised warnings: {warnings}")
        conn.commit()
        return int(loaded)
    finally:
        os.unlink(path)


def load_frame(conn, table_name: str, df: pd.DataFrame, replace_rows: bool = False,
               tmpdir: str | None = None) -> int:
    """Bulk load one frame (write TSV, LOAD DATA, delete); returns rows loaded."""
    path = write_tsv(table_name, df, tmpdir)
    return load_file(conn, table_name, path, replace_rows) if path else 0


_DIRTY_TABLE = schema.Table("seed_dirty_rows", "row_key", (
    schema.Column("kind", "VARCHAR(32)", "text", False),
    schema.Column("table_name", "VARCHAR(64)", "text", False),
    schema.Column("row_key", "BIGINT UNSIGNED", "bigint", False),
    schema.Column("customer_id", "BIGINT UNSIGNED", "bigint", False),
), entity=None)


def ensure_database(cfg: Config) -> None:
    """Create this namespace's database (if missing), the legacy schema and seed_dirty_rows."""
    bootstrap.ensure_legacy_database(cfg)
    with connections.mysql_conn("mysql_admin", cfg) as conn:
        with conn.cursor() as cur:
            cur.execute(DIRTY_DDL)
        conn.commit()


def seed(cfg: Config | None, customers: int, seed: int = 42, countries: dict[str, float] | None = None,
         dirty_rate: float = 0.0, as_of: date = date(2026, 11, 1), first_customer_id: int = 1,
         replace: bool = True) -> SeedResult:
    """Fill the legacy database deterministically. replace=True empties the billing tables (not routing)."""
    cfg = cfg or load_config()
    t0 = time.monotonic()
    mix = _validate(customers, dirty_rate, first_customer_id, cfg, countries)  # before touching anything
    ensure_database(cfg)
    with connections.mysql_conn("mysql_admin", cfg) as conn:
        start_ids = _prepare_tables(conn, mix, replace, first_customer_id)
        loader = _PipelinedLoader(conn)
        loader.counts["plans"] = load_frame(conn, "plans", plan_catalogue(), replace_rows=True)
        t_data = time.monotonic()
        loader.run(generate_chunks(customers, seed, countries, dirty_rate, as_of, first_customer_id,
                                   start_ids, cfg))
        data_s = time.monotonic() - t_data
    seconds = time.monotonic() - t0
    counts = loader.counts
    rows = sum(counts.values())
    return SeedResult(customers=customers, seed=seed, counts=counts, dirty=loader.dirty, seconds=round(seconds, 3),
                      generate_seconds=round(data_s - loader.wait_s, 3), load_seconds=round(loader.load_s, 3),
                      rows=rows, rows_per_s=round(rows / seconds, 1) if seconds else 0.0,
                      data_rows_per_s=round(rows / data_s, 1) if data_s else 0.0,
                      database=cfg.mysql_database)


def _prepare_tables(conn, mix: dict[str, float], replace: bool, first_customer_id: int) -> dict[str, int] | None:
    """Empty the billing tables (replace) or find the next free ids (append); routing rows for the mix.
    Returns the first id of each table for an append, None for a replace."""
    with conn.cursor() as cur:
        _session_for_bulk(cur)
        start_ids = None
        if replace:
            for name in (*reversed(BILLING_TABLES), "seed_dirty_rows"):
                cur.execute(f"TRUNCATE TABLE `{name}`")
        else:
            cur.execute("SELECT COALESCE(MAX(customer_id), 0) FROM customers")
            max_cid = int(cur.fetchone()[0])
            if first_customer_id <= max_cid:
                raise ValueError(f"first_customer_id {first_customer_id} collides with existing customers "
                                 f"(max customer_id {max_cid}); pass a larger one or replace=True")
            start_ids = {}
            for name in ("subscriptions", "plan_changes", "invoices", "payments", "balance_transactions"):
                cur.execute(f"SELECT COALESCE(MAX(`{ID_COLUMNS[name]}`), 0) FROM `{name}`")
                start_ids[name] = int(cur.fetchone()[0]) + 1
        for cc in mix:
            cur.execute("INSERT IGNORE INTO country_routing (country) VALUES (%s)", (cc,))
    conn.commit()
    return start_ids


class _PipelinedLoader:
    """This thread generates and formats the next piece while one loader thread keeps the server busy with
    LOAD DATA (MySQLdb releases the GIL while the server works); at most ~2 formatted pieces wait on disk."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.counts: dict[str, int] = dict.fromkeys(BILLING_TABLES, 0)
        self.dirty: dict[str, int] = dict.fromkeys(DIRTY_KINDS, 0)
        self.load_s = self.wait_s = 0.0
        self.pending: deque[tuple[str, str, Future[tuple[int, float]]]] = deque()

    def _timed_load(self, name: str, path: str) -> tuple[int, float]:
        t = time.monotonic()
        return load_file(self.conn, name, path), time.monotonic() - t

    def _drain(self, keep: int) -> None:
        tw = time.monotonic()
        while len(self.pending) > keep:
            name, _, fut = self.pending.popleft()
            n, dt = fut.result()
            self.load_s += dt
            if name != "seed_dirty_rows":
                self.counts[name] += n
        self.wait_s += time.monotonic() - tw

    def run(self, chunks: Iterable[Generated]) -> None:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bm-seed-load") as pool:
            try:
                for g in chunks:
                    frames = [*((name, g.tables[name]) for name in BILLING_TABLES[1:]), ("seed_dirty_rows", g.dirty)]
                    for kind, n in g.dirty["kind"].value_counts().items():
                        self.dirty[str(kind)] += int(n)
                    for name, df in frames:
                        for lo in range(0, len(df), LOAD_PIECE_ROWS):
                            path = write_tsv(name, df.iloc[lo:lo + LOAD_PIECE_ROWS])
                            if path:
                                self.pending.append((name, path, pool.submit(self._timed_load, name, path)))
                                self._drain(keep=2)
                    self._drain(keep=2)
                self._drain(keep=0)
            except BaseException:
                for _, path, fut in self.pending:
                    if fut.cancel() and os.path.exists(path):
                        os.unlink(path)  # never started: its temp file is ours to remove
                raise


# ------------------------------------------------------------------------------------------ checks
def legacy_checksums(cfg: Config | None = None, tables: Iterable[str] = (*BILLING_TABLES, "seed_dirty_rows")
                     ) -> dict[str, str]:
    """Deterministic content checksum per table: row count + sum and xor of per-row MD5 slices.

    Each row's hash covers every column (NULL distinct from '', zero dates as written), and the row
    includes its primary key, so the multiset hash identifies the table's content regardless of
    physical order.
    """
    cfg = cfg or load_config()
    out: dict[str, str] = {}
    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as cur:
        for name in tables:
            table = schema.TABLES_BY_NAME.get(name) or _DIRTY_TABLE
            parts = ", ".join(f"IFNULL(CAST(`{c.name}` AS CHAR), '\\\\N')" for c in table.columns)
            cur.execute(
                "SELECT COUNT(*), COALESCE(SUM(CAST(CONV(LEFT(h, 15), 16, 10) AS UNSIGNED)), 0), "
                "COALESCE(BIT_XOR(CAST(CONV(SUBSTRING(h, 16, 16), 16, 10) AS UNSIGNED)), 0) "
                f"FROM (SELECT MD5(CONCAT_WS(CHAR(31), {parts})) AS h FROM `{name}`) x")
            n, s, x = cur.fetchone()
            out[name] = f"{int(n)}:{int(s):x}:{int(x):016x}"
    return out


def database_size(cfg: Config | None = None, analyze: bool = True) -> dict[str, int]:
    """Bytes of data + indexes per table of this namespace's database (information_schema).

    analyze=True refreshes InnoDB's persistent statistics first: right after a bulk load they lag.
    """
    cfg = cfg or load_config()
    with connections.mysql_conn("mysql_admin", cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                    "AND engine = 'InnoDB'", (cfg.mysql_database,))
        names = [str(r[0]) for r in cur.fetchall()]
        if analyze and names:
            cur.execute("ANALYZE TABLE " + ", ".join(f"`{n}`" for n in names))
            cur.fetchall()
        cur.execute("SELECT table_name, data_length + index_length FROM information_schema.tables "
                    "WHERE table_schema = %s", (cfg.mysql_database,))
        return {str(r[0]): int(r[1]) for r in cur.fetchall()}


# ------------------------------------------------------------------------------------------ CLI
def _parse_countries(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    out: dict[str, float] = {}
    for part in text.split(","):
        code, sep, weight = part.partition("=")
        if not sep:
            raise ConfigError(f"--countries expects CC=weight pairs, got {part!r}")
        try:
            out[code.strip()] = float(weight)
        except ValueError:
            raise ConfigError(f"--countries: weight of {code!r} is not a number: {weight!r}") from None
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m billing_migration.devtools.generator",
                                description=__doc__.split("\n")[0])
    p.add_argument("--customers", type=int, required=True)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--countries", help="mix as CC=weight,... (default: skewed over migration.yaml countries)")
    p.add_argument("--dirty-rate", type=float, default=0.0)
    p.add_argument("--as-of", type=date.fromisoformat, default=date(2026, 11, 1))
    p.add_argument("--first-customer-id", type=int, default=1)
    p.add_argument("--append", action="store_true", help="keep existing rows (default: replace)")
    p.add_argument("--checksums", action="store_true", help="also print legacy_checksums")
    p.add_argument("--size", action="store_true", help="also print the database size (bytes)")
    a = p.parse_args(argv)
    try:
        res = seed(None, a.customers, a.seed, _parse_countries(a.countries), a.dirty_rate, a.as_of,
                   a.first_customer_id, replace=not a.append)
    except (ConfigError, ValueError) as exc:
        p.error(str(exc))
    out = res.as_dict()
    if a.checksums:
        out["checksums"] = legacy_checksums()
    if a.size:
        sizes = database_size()
        out["db_bytes"] = sum(sizes.values())
        out["db_bytes_by_table"] = sizes
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
