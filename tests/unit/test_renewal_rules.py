"""Renewal rules on small hand-made frames: month ends, leap days, holds, credits, cancellations."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pandas as pd
import pytest
from billing_migration.nightly import renewal

D = Decimal


def _ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


def frames(subs: list[dict], customers: list[dict], balance: list[dict] | None = None):
    plans = pd.DataFrame([
        {"plan_id": 1, "country": "US", "currency": "USD", "price": D("9.9900")},
        {"plan_id": 2, "country": "US", "currency": "USD", "price": D("15.4900")},
        {"plan_id": 9, "country": "GB", "currency": "GBP", "price": D("7.0000")},
    ])
    base_sub = {"status": "active", "started_at": _ts("2025-01-01"), "cancelled_at": pd.NaT, "plan_id": 1}
    base_cust = {"country": "US", "status": "active", "billing_day": 1}
    s = pd.DataFrame([base_sub | x for x in subs])
    c = pd.DataFrame([base_cust | x for x in customers])
    b = pd.DataFrame(balance or [], columns=["customer_id", "amount", "currency", "created_at"])
    return c, s, plans, b


@pytest.mark.parametrize(("billing_day", "day", "billed"), [
    (31, dt.date(2026, 4, 30), True),   # April has 30 days
    (30, dt.date(2026, 4, 30), True),
    (31, dt.date(2026, 2, 28), True),   # non-leap February
    (29, dt.date(2026, 2, 28), True),
    (28, dt.date(2026, 2, 28), True),
    (27, dt.date(2026, 2, 28), False),
    (31, dt.date(2028, 2, 28), False),  # leap year: 31 bills on the 29th
    (31, dt.date(2028, 2, 29), True),
    (29, dt.date(2028, 2, 29), True),
    (28, dt.date(2028, 2, 29), False),
    (31, dt.date(2026, 3, 31), True),
    (30, dt.date(2026, 3, 31), False),
    (15, dt.date(2026, 3, 15), True),
    (0, dt.date(2026, 3, 1), False),    # invalid billing days never match
    (32, dt.date(2026, 4, 30), False),
])
def test_anchor_month_ends_and_leap_days(billing_day, day, billed):
    assert bool(renewal.bills_on(pd.Series([billing_day]), day).iloc[0]) is billed
    if 1 <= billing_day <= 31:
        assert (renewal.anchor_day(day.year, day.month, billing_day) == day.day) is billed


def test_only_customers_due_on_the_day_are_billed_with_plan_price():
    c, s, p, b = frames(
        [{"subscription_id": 11, "customer_id": 1}, {"subscription_id": 21, "customer_id": 2, "plan_id": 2}],
        [{"customer_id": 1, "billing_day": 31}, {"customer_id": 2, "billing_day": 12}])
    bill, held, _ = renewal.renewals(c, s, p, b, dt.date(2026, 4, 30), "US")
    assert bill["customer_id"].tolist() == [1]
    assert bill.loc[0, "price"] == D("9.9900") and bill.loc[0, "amount_due"] == D("9.9900")
    assert bill.loc[0, "currency"] == "USD" and bill.loc[0, "credit_used"] == D(0)
    assert held.empty


def test_holds_listed_separately_and_cancelled_excluded():
    c, s, p, b = frames(
        [{"subscription_id": 11, "customer_id": 1, "status": "on_hold"},
         {"subscription_id": 21, "customer_id": 2, "status": "cancelled", "cancelled_at": _ts("2026-02-10")},
         {"subscription_id": 31, "customer_id": 3},
         {"subscription_id": 41, "customer_id": 4}],
        [{"customer_id": 1}, {"customer_id": 2}, {"customer_id": 3, "status": "on_hold"}, {"customer_id": 4}])
    bill, held, _ = renewal.renewals(c, s, p, b, dt.date(2026, 3, 1), "US")
    assert bill["customer_id"].tolist() == [4]
    assert held["customer_id"].tolist() == [1, 3]
    assert set(held["reason"]) == {"on_hold"}


def test_cancelled_mid_period_is_not_renewed_but_future_cancellation_is():
    c, s, p, b = frames(
        [{"subscription_id": 11, "customer_id": 1, "cancelled_at": _ts("2026-02-20 10:00")},  # still 'active'
         {"subscription_id": 21, "customer_id": 2, "cancelled_at": _ts("2026-03-01 18:00")},  # during D
         {"subscription_id": 31, "customer_id": 3, "cancelled_at": _ts("2026-03-15")}],      # scheduled later
        [{"customer_id": 1}, {"customer_id": 2}, {"customer_id": 3}])
    bill, _, _ = renewal.renewals(c, s, p, b, dt.date(2026, 3, 1), "US")
    assert bill["customer_id"].tolist() == [3]


def test_subscription_started_on_the_day_is_not_a_renewal():
    c, s, p, b = frames([{"subscription_id": 11, "customer_id": 1, "started_at": _ts("2026-03-01 08:00")}],
                        [{"customer_id": 1}])
    bill, _, _ = renewal.renewals(c, s, p, b, dt.date(2026, 3, 1), "US")
    assert bill.empty


def test_credits_applied_first_never_below_zero():
    c, s, p, b = frames(
        [{"subscription_id": 11, "customer_id": 1}, {"subscription_id": 21, "customer_id": 2},
         {"subscription_id": 31, "customer_id": 3}],
        [{"customer_id": 1}, {"customer_id": 2}, {"customer_id": 3}],
        [{"customer_id": 1, "amount": D("25.0000"), "currency": "USD", "created_at": _ts("2026-02-01")},
         {"customer_id": 2, "amount": D("5.0000"), "currency": "USD", "created_at": _ts("2026-02-01")},
         {"customer_id": 2, "amount": D("-1.5000"), "currency": "USD", "created_at": _ts("2026-02-03")},
         {"customer_id": 2, "amount": D("3.0000"), "currency": "USD", "created_at": _ts("2026-03-01 01:00")},
         {"customer_id": 3, "amount": D("4.0000"), "currency": "EUR", "created_at": _ts("2026-02-01")}])
    bill, _, _ = renewal.renewals(c, s, p, b, dt.date(2026, 3, 1), "US")
    by = bill.set_index("customer_id")
    # credit larger than the price: nothing due, credit used = price
    assert by.loc[1, "amount_due"] == D(0) and by.loc[1, "credit_used"] == D("9.9900")
    assert by.loc[1, "credit_balance"] == D("25.0000")
    # transactions on D itself are not in the balance (as of D 00:00 UTC)
    assert by.loc[2, "credit_balance"] == D("3.5000") and by.loc[2, "amount_due"] == D("6.4900")
    # a balance in another currency does not pay a USD plan
    assert by.loc[3, "credit_used"] == D(0) and by.loc[3, "amount_due"] == D("9.9900")


def test_negative_balance_is_not_a_charge_and_credit_split_across_subscriptions():
    c, s, p, b = frames(
        [{"subscription_id": 11, "customer_id": 1}, {"subscription_id": 12, "customer_id": 1, "plan_id": 2},
         {"subscription_id": 21, "customer_id": 2}],
        [{"customer_id": 1}, {"customer_id": 2}],
        [{"customer_id": 1, "amount": D("12.0000"), "currency": "USD", "created_at": _ts("2026-01-01")},
         {"customer_id": 2, "amount": D("-3.0000"), "currency": "USD", "created_at": _ts("2026-01-01")}])
    bill, _, _ = renewal.renewals(c, s, p, b, dt.date(2026, 3, 1), "US")
    assert bill["credit_used"].tolist() == [D("9.9900"), D("2.0100"), D(0)]
    assert bill["amount_due"].tolist() == [D(0), D("13.4800"), D("9.9900")]


def test_plan_without_price_in_the_country_is_held_not_dropped():
    c, s, p, b = frames([{"subscription_id": 11, "customer_id": 1, "plan_id": 9}], [{"customer_id": 1}])
    bill, held, _ = renewal.renewals(c, s, p, b, dt.date(2026, 3, 1), "US")
    assert bill.empty
    assert held["reason"].tolist() == ["no_price_for_country"]


def test_impossible_billing_day_is_listed_as_skipped_never_dropped_silently():
    c, s, p, b = frames(
        [{"subscription_id": 11, "customer_id": 1}, {"subscription_id": 21, "customer_id": 2},
         {"subscription_id": 31, "customer_id": 3}, {"subscription_id": 41, "customer_id": 4,
                                                    "status": "cancelled"}],
        [{"customer_id": 1, "billing_day": 45}, {"customer_id": 2, "billing_day": None},
         {"customer_id": 3, "billing_day": 1}, {"customer_id": 4, "billing_day": 45}])
    bill, held, skipped = renewal.renewals(c, s, p, b, dt.date(2026, 3, 1), "US")
    assert bill["customer_id"].tolist() == [3]
    assert held.empty
    assert skipped["customer_id"].tolist() == [1, 2]  # the cancelled one is not due anyway
    assert skipped["reason"].tolist() == ["billing_day 45 outside 1..31: never billed",
                                          "billing_day missing: never billed"]
    assert skipped["rule"].tolist() == ["invalid_billing_day"] * 2
    # listed every day, not only on the day it would have matched
    assert len(renewal.renewals(c, s, p, b, dt.date(2026, 3, 17), "US")[2]) == 2
    summary = renewal.summarize(renewal.to_arrow(bill, renewal.RENEWAL_SCHEMA),
                                renewal.to_arrow(held, renewal.HELD_SCHEMA),
                                renewal.to_arrow(skipped, renewal.SKIPPED_SCHEMA), "mysql")
    assert summary["skipped"] == 2 and summary["skipped_by_rule"] == {"invalid_billing_day": 2}


def test_output_bytes_do_not_depend_on_input_order():
    subs = [{"subscription_id": 10 + i, "customer_id": i} for i in range(1, 6)]
    custs = [{"customer_id": i} for i in range(1, 6)]
    c, s, p, b = frames(subs, custs)
    a, _, _ = renewal.renewals(c, s, p, b, dt.date(2026, 3, 1), "US")
    c2, s2, _, _ = frames(subs[::-1], custs[::-1])
    z, _, _ = renewal.renewals(c2, s2, p, b, dt.date(2026, 3, 1), "US")
    ta, tz = renewal.to_arrow(a, renewal.RENEWAL_SCHEMA), renewal.to_arrow(z, renewal.RENEWAL_SCHEMA)
    assert ta.num_rows == 5
    assert ta.equals(tz)  # same rows in the same order; test_snapshot checks the written bytes
    assert ta.schema.metadata is None
