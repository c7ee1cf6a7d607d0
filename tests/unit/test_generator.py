"""The in-memory generator: deterministic, domain-consistent, every dirty kind present, TSV round-trips."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from billing_migration.devtools import generator as g
from billing_migration.stores import schema

AS_OF = date(2026, 11, 1)
A_DAY = (AS_OF - date(1970, 1, 1)).days


@pytest.fixture(scope="module")
def clean() -> g.Generated:
    return g.generate(1500, seed=7, as_of=AS_OF)


@pytest.fixture(scope="module")
def dirty() -> g.Generated:
    return g.generate(1500, seed=7, dirty_rate=0.01, as_of=AS_OF)


def _minor(cur: pd.Series) -> np.ndarray:
    return cur.map(schema.CURRENCY_MINOR_UNITS).to_numpy(dtype=np.int64)


def test_same_seed_same_frames_and_different_seed_differs(clean):
    again = g.generate(1500, seed=7, as_of=AS_OF)
    other = g.generate(1500, seed=8, as_of=AS_OF)
    for name, df in clean.tables.items():
        pd.testing.assert_frame_equal(df, again.tables[name])
    assert not clean.tables["invoices"].equals(other.tables["invoices"])
    assert not clean.tables["customers"].equals(other.tables["customers"])


def test_dirty_generation_is_deterministic(dirty):
    again = g.generate(1500, seed=7, dirty_rate=0.01, as_of=AS_OF)
    pd.testing.assert_frame_equal(dirty.dirty, again.dirty)
    pd.testing.assert_frame_equal(dirty.tables["payments"], again.tables["payments"])


def test_ids_dense_and_increasing_across_chunks(monkeypatch):
    monkeypatch.setattr(g, "CHUNK_CUSTOMERS", 300)
    res = g.generate(1000, seed=1, first_customer_id=501, as_of=AS_OF)
    assert res.tables["customers"]["customer_id"].tolist() == list(range(501, 1501))
    for name in ("subscriptions", "plan_changes", "invoices", "payments", "balance_transactions"):
        key = schema.TABLES_BY_NAME[name].key
        ids = res.tables[name][key].to_numpy()
        assert (ids == np.arange(1, len(ids) + 1)).all(), name


def test_country_mix_and_plans(clean):
    cust = clean.tables["customers"]
    share = cust["country"].value_counts(normalize=True)
    assert share.index[0] == "US" and share.iloc[0] > 0.15  # skewed: a few large, many small
    assert cust["country"].nunique() >= 10
    plans = g.plan_catalogue()
    assert len(plans) == 3 * len(g.PRICING)
    assert (plans.groupby("country")["screens"].apply(sorted).map(tuple) == (1, 2, 4)).all()
    assert set(plans["currency"]) <= set(schema.CURRENCY_MINOR_UNITS)
    jp = g.generate(200, seed=3, countries={"JP": 1.0}, as_of=AS_OF)
    assert set(jp.tables["invoices"]["currency"]) == {"JPY"}
    assert (jp.tables["invoices"]["amount"] % g.E4 == 0).all()  # 0 minor units
    with pytest.raises(ValueError, match="ISO 3166"):
        g.generate(10, countries={"ZZ": 1.0})


def test_billing_day_and_history_window(clean):
    cust = clean.tables["customers"]
    assert cust["billing_day"].between(1, 31).all()
    assert {29, 30, 31} <= set(cust["billing_day"])
    signup_days = cust["signup_at"] // g.DAY_MS
    assert ((A_DAY - signup_days).between(1, 1095)).all()
    days = cust["signup_at"].to_numpy().astype("datetime64[ms]").astype("datetime64[D]")
    dom = (days - days.astype("datetime64[M]").astype("datetime64[D]")).astype(int) + 1
    assert (dom == cust["billing_day"].to_numpy()).all()


def test_invoice_periods_contiguous_and_amounts_in_minor_units(clean):
    inv = clean.tables["invoices"].sort_values(["subscription_id", "period_start"])
    nxt = inv.groupby("subscription_id")["period_start"].shift(-1)
    has_next = nxt.notna()
    assert (inv.loc[has_next, "period_end"] + 1 == nxt[has_next]).all()
    assert (inv["period_end"] >= inv["period_start"] + 27).all()
    assert (inv["period_start"] < A_DAY).all()
    step = 10 ** (4 - _minor(inv["currency"]))
    assert (inv["amount"] % step == 0).all() and (inv["tax"] % step == 0).all()
    assert (inv["amount"] > 0).all()
    pay = clean.tables["payments"]
    assert (pay["amount"] % (10 ** (4 - _minor(pay["currency"]))) == 0).all()
    assert (pay["amount"] > 0).all()
    assert pay["invoice_id"].isin(inv["invoice_id"]).all()
    # EU VAT is modelled, US has none
    eu = inv[inv["currency"] == "EUR"]
    assert (eu["tax"] > 0).all()
    us = inv.merge(clean.tables["customers"][["customer_id", "country"]], on="customer_id")
    assert (us.loc[us["country"] == "US", "tax"] == 0).all()


def test_subscription_lifecycle_consistent(clean):
    subs = clean.tables["subscriptions"]
    inv = clean.tables["invoices"]
    cust = clean.tables["customers"].set_index("customer_id")
    assert set(subs["status"]) == {"active", "on_hold", "cancelled"}
    last = inv.groupby("subscription_id").agg(last_end=("period_end", "max"), last_created=("created_at", "max"),
                                              last_status=("status", "last"))
    s = subs.set_index("subscription_id").join(last)
    live = s["status"] != "cancelled"
    assert (s.loc[live, "next_billing_date"] == s.loc[live, "last_end"] + 1).all()
    assert (s.loc[live, "next_billing_date"] >= A_DAY).all()
    canc = s[~live]
    assert (canc["next_billing_date"] == g.NULL_INT).all()
    assert (canc["cancelled_at"] > canc["last_created"]).all()  # no invoice after cancellation
    assert (canc["cancelled_at"] < A_DAY * g.DAY_MS).all()
    assert (s.loc[live, "cancelled_at"] == g.NULL_INT).all()
    assert (s.loc[s["status"] == "on_hold", "last_status"] == "declined").all()
    assert (cust.loc[subs["customer_id"], "status"].to_numpy() == subs["status"].to_numpy()).all()
    assert (cust["status"] == "never_subscribed").sum() == len(cust) - len(subs)
    # plan changes are reflected in the subscription's plan
    pc = clean.tables["plan_changes"].merge(subs, on="subscription_id")
    assert len(pc) > 0 and (pc["to_plan_id"] == pc["plan_id"]).all()
    assert (pc["from_plan_id"] != pc["to_plan_id"]).all()
    # updated_at on every row, never before the row's own event
    for name, ts in (("invoices", "created_at"), ("payments", "processed_at"), ("customers", "signup_at")):
        df = clean.tables[name]
        assert (df["updated_at"] >= df[ts]).all(), name


def test_payments_declines_refunds_chargebacks(clean):
    pay = clean.tables["payments"]
    inv = clean.tables["invoices"].set_index("invoice_id")
    assert set(pay["status"]) == set(schema.PAYMENT_STATUSES)
    assert set(pay["method"]) == set(schema.PAYMENT_METHODS)
    assert pay["payment_token"].str.fullmatch(r"(tok|pp|gc|dd)_\*\*\*\*\d{4}").all()
    assert set(inv["status"]) == {"paid", "declined", "refunded", "charged_back"}
    for inv_status, pay_status in (("refunded", "refunded"), ("charged_back", "charged_back")):
        ids = inv.index[inv["status"] == inv_status]
        assert set(pay.loc[pay["invoice_id"].isin(ids) & (pay["status"] == pay_status), "invoice_id"]) == set(ids)
    declined = inv.index[inv["status"] == "declined"]
    assert not pay[pay["invoice_id"].isin(declined)]["status"].eq("succeeded").any()
    assert (pay["processed_at"] < A_DAY * g.DAY_MS).all()


def test_balances_never_negative_in_clean_data(clean):
    bal = clean.tables["balance_transactions"].sort_values(["customer_id", "created_at", "txn_id"])
    assert set(bal["kind"]) == set(schema.BALANCE_KINDS)
    running = bal.groupby("customer_id")["amount"].cumsum()
    assert (running >= 0).all()
    credits = bal[bal["kind"] == "invoice_credit"]
    assert (credits["amount"] < 0).all()
    assert credits["invoice_id"].isin(clean.tables["invoices"]["invoice_id"]).all()
    # an invoice's credit plus its successful payment covers its total exactly
    inv = clean.tables["invoices"].set_index("invoice_id")
    paid = clean.tables["payments"].query("status == 'succeeded'").groupby("invoice_id")["amount"].sum()
    credit = -credits.groupby("invoice_id")["amount"].sum()
    covered = paid.add(credit, fill_value=0)
    ok = inv.loc[covered.index]
    ok = ok[ok["status"] == "paid"]
    assert (covered[ok.index] == ok["amount"] + ok["tax"]).all()


def test_every_dirty_kind_present_and_really_dirty(dirty, clean):
    kinds = dirty.dirty["kind"].value_counts()
    assert set(kinds.index) == set(g.DIRTY_KINDS)
    assert (kinds > 0).all()
    assert clean.dirty.empty
    inv, pay, cust = dirty.tables["invoices"], dirty.tables["payments"], dirty.tables["customers"]

    def rows(kind: str, table: str, key: str, df: pd.DataFrame) -> pd.DataFrame:
        keys = dirty.dirty.query("kind == @kind and table_name == @table")["row_key"]
        return df[df[key].isin(keys)]

    assert not rows("orphan_payment", "payments", "payment_id", pay)["invoice_id"].isin(inv["invoice_id"]).any()
    assert rows("null_required", "invoices", "invoice_id", inv)["currency"].isna().all()
    assert (rows("negative_amount", "payments", "payment_id", pay)["amount"] < 0).all()
    op = rows("over_precise_amount", "invoices", "invoice_id", inv)
    assert len(op) and (op["amount"] % (10 ** (4 - _minor(op["currency"]))) != 0).all()
    assert (rows("unknown_currency", "invoices", "invoice_id", inv)["currency"] == "XXQ").all()
    assert (rows("zero_date", "payments", "payment_id", pay)["processed_at"] == g.ZERO_TS).all()
    ml = rows("max_length_string", "customers", "customer_id", cust)
    assert ((ml["full_name"].str.len() == 255) | (ml["email"].str.len() == 254)).all()
    assert (ml["full_name"].str.len() == 255).any() and (ml["email"].str.len() == 254).any()
    nb = rows("non_bmp_unicode", "customers", "customer_id", cust)
    assert nb["full_name"].map(lambda s: any(ord(c) > 0xFFFF for c in s)).all()
    dup = rows("duplicate_natural_key", "invoices", "invoice_id", inv)
    natural = inv.groupby(["subscription_id", "period_start"]).size()
    assert (natural.loc[list(zip(dup["subscription_id"], dup["period_start"], strict=True))] >= 2).all()
    # labels point at real rows and are unique
    assert not dirty.dirty.duplicated(["kind", "table_name", "row_key"]).any()


def test_dirty_rate_scales_and_small_runs_still_get_each_kind():
    small = g.generate(120, seed=5, dirty_rate=0.001, as_of=AS_OF)
    assert set(small.dirty["kind"]) == set(g.DIRTY_KINDS)
    big = g.generate(1500, seed=5, dirty_rate=0.05, as_of=AS_OF)
    n_inv = (big.tables["invoices"]["invoice_id"] < 10**9).sum()
    neg = big.dirty.query("kind == 'negative_amount' and table_name == 'invoices'")
    assert abs(len(neg) - 0.05 * n_inv) <= 0.01 * n_inv
    with pytest.raises(ValueError):
        g.generate(10, dirty_rate=0.9)


def test_tsv_escaping_round_trips():
    values = np.array(["plain", "tab\there", "new\nline", "back\\slash", "cr\rx", "nul\0x", "emoji 😀𝄞",
                       None, "\\N", ""], dtype=object)
    fields = g.escape_text(values)
    assert all("\t" not in f and "\n" not in f for f in fields)
    assert fields[7] == r"\N" and fields[8] != r"\N"
    assert [g.unescape_field(f) for f in fields] == list(values)


def test_tsv_formats_numbers_dates_nulls_and_zero_dates():
    t = schema.TABLES_BY_NAME["balance_transactions"]
    df = pd.DataFrame({
        "txn_id": [1, 2], "customer_id": [10, 11], "kind": ["promo_credit", "invoice_credit"],
        "amount": [99_900, -123_456], "currency": ["USD", None], "invoice_id": [g.NULL_INT, 5],
        "reference": ["a\tb", None], "created_at": [1_700_000_000_123, g.ZERO_TS],
        "updated_at": [0, 1_700_000_000_001],
    })
    lines = g.to_tsv(df, t).decode().splitlines()
    assert lines[0].split("\t") == ["1", "10", "promo_credit", "9.9900", "USD", r"\N", "a\\tb",
                                    "2023-11-14 22:13:20.123", "1970-01-01 00:00:00.000"]
    assert lines[1].split("\t")[3:8] == ["-12.3456", r"\N", "5", r"\N", "0000-00-00 00:00:00.000"]
    d = g._fmt_column(np.array([0, A_DAY, g.NULL_INT]), "date")
    assert d == ["1970-01-01", "2026-11-01", r"\N"]


@pytest.mark.parametrize("dirty_rate", [0.0, 0.3])
def test_tiny_runs_and_many_seeds_do_not_break(dirty_rate):
    for s in range(60):
        res = g.generate(1 + s % 6, seed=s, dirty_rate=dirty_rate, as_of=AS_OF)
        assert len(res.tables["customers"]) == 1 + s % 6
        subs, inv = res.tables["subscriptions"], res.tables["invoices"]
        assert set(inv["subscription_id"]) == set(subs["subscription_id"])  # every subscription billed
        if dirty_rate == 0:
            assert (inv["period_start"] < A_DAY).all() and res.dirty.empty
