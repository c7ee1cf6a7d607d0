"""Masking of personal data for anything a person reads (reports, logs, mismatch files)."""

from __future__ import annotations

from typing import Any

PII_FIELDS = frozenset({"email", "full_name", "payment_token", "reference"})


def mask_email(value: str | None) -> str | None:
    if value is None:
        return None
    local, at, domain = value.partition("@")
    if not at:
        return mask_text(value)
    return f"{local[:1]}***@{domain}"


def mask_text(value: str | None, keep: int = 4) -> str | None:
    """Keep only the last `keep` characters: enough to tell two values apart, not to use them."""
    if value is None:
        return None
    return "***" + value[-keep:] if len(value) > keep else "***"


def mask_field(name: str, value: Any) -> Any:
    """Mask `value` if the field holds personal data; other fields pass unchanged."""
    if name not in PII_FIELDS or value is None:
        return value
    if name == "email":
        return mask_email(str(value))
    if name == "full_name":
        return mask_text(str(value), keep=1)
    return mask_text(str(value))
