"""Export's typing of raw driver columns (no services): native decimals stay exact or fail loudly."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pytest
from billing_migration.country import export
from billing_migration.stores import schema


def _invoice_columns(amounts: pa.Array) -> dict[str, pa.Array]:
    n = len(amounts)
    text = pa.array(["2026-01-02"] * n)
    return {"invoice_id": pa.array(range(1, n + 1)), "customer_id": pa.array([7] * n),
            "subscription_id": pa.array([9] * n), "period_start": text, "period_end": text,
            "amount": amounts, "tax": amounts, "currency": pa.array(["EUR"] * n), "status": pa.array(["paid"] * n),
            "created_at": pa.array(["2026-01-02 03:04:05.678"] * n),
            "updated_at": pa.array(["2026-01-02 03:04:05.678"] * n)}


def test_native_decimal128_from_connectorx_is_cast_exactly():
    raw = pa.array([Decimal("18.4900000000"), Decimal("-0.0001000000"), Decimal("9999999999.9999000000"), None],
                   type=pa.decimal128(38, 10))
    batch = export.to_arrow(schema.INVOICES, _invoice_columns(raw))
    assert batch.schema.field("amount").type == pa.decimal128(schema.DECIMAL_PRECISION, schema.DECIMAL_SCALE)
    assert batch.column("amount").to_pylist() == [Decimal("18.4900"), Decimal("-0.0001"),
                                                  Decimal("9999999999.9999"), None]


def test_native_decimal_that_would_lose_a_digit_is_refused_not_rounded():
    raw = pa.array([Decimal("1.2345600000")], type=pa.decimal128(38, 10))
    with pytest.raises(pa.ArrowInvalid):
        export.to_arrow(schema.INVOICES, _invoice_columns(raw))


def test_text_decimals_from_mysqlclient_give_the_same_values():
    native = pa.array([Decimal("18.4900000000"), None], type=pa.decimal128(38, 10))
    text = pa.array(["18.4900", None])
    a = export.to_arrow(schema.INVOICES, _invoice_columns(native))
    b = export.to_arrow(schema.INVOICES, _invoice_columns(text))
    assert a.equals(b)


def test_only_the_connectorx_query_selects_decimals_natively():
    native = export._chunk_query(schema.INVOICES, None, native_decimals=True)
    text = export._chunk_query(schema.INVOICES, None)
    assert "CAST(t.`amount` AS CHAR)" in text and "CAST(t.`amount` AS CHAR)" not in native
    assert "t.`amount`" in native
    assert "CAST(t.`created_at` AS CHAR)" in native  # dates stay text on both paths: zero dates survive


def test_dates_parse_by_one_strict_cast_and_fall_back_only_for_invalid_batches():
    ok = pa.array(["2026-01-02 03:04:05.678", None, "2024-02-29 23:59:59.000"])
    value, bad = export._parse_datetime(ok, "timestamp")
    assert value.type == pa.timestamp("ms", tz="UTC") and not any(bad.to_pylist())
    assert value[0].as_py().isoformat() == "2026-01-02T03:04:05.678000+00:00" and value[1].as_py() is None
    mixed = pa.array(["2026-01-02 03:04:05.678", "0000-00-00 00:00:00.000", "2024-02-30 00:00:00.000", None])
    value, bad = export._parse_datetime(mixed, "timestamp")
    assert bad.to_pylist() == [False, True, True, False]
    assert value[0].as_py().isoformat() == "2026-01-02T03:04:05.678000+00:00" and value[1].as_py() is None
    days, bad = export._parse_datetime(pa.array(["2026-01-02", "2026-02-30", None]), "date")
    assert bad.to_pylist() == [False, True, False] and str(days[0].as_py()) == "2026-01-02"
