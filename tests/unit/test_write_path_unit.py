"""Pure parts of the write path: the write model, queue names, queue settings, masked errors, the report line."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime
from decimal import Decimal

import pytest
from billing_migration.config import ConfigError, load_config, parse


def test_writes_are_validated_before_anything_is_written():
    from billing_migration.app.writes import Write, WriteError

    ok = dict(country="IE", entity="invoices", key=5, customer_id=2, op="update", seq=1, idempotency_key="k-1")
    for bad, match in (({"entity": "plans"}, "entity must be one of"), ({"op": "upsert"}, "op must be one of"),
                       ({"values": {"nope": 1}}, "cannot set"), ({"values": {"customer_id": 3}}, "cannot set"),
                       ({"values": {"amount": "x"}}, "amount must be a decimal"), ({"seq": 0}, "seq must be"),
                       ({"idempotency_key": "a b"}, "idempotency_key"), ({"country": "XX"}, "not an ISO"),
                       ({"op": "insert", "values": {"amount": 1}}, "is required"), ({}, "needs at least one"),
                       ({"op": "delete", "values": {"amount": 1}}, "carries no values"),
                       ({"entity": "customers"}, "key == customer_id"),
                       ({"values": {"amount": None}}, "cannot be null")):
        with pytest.raises((WriteError, ValueError), match=match):
            Write(**{**ok, **bad})


def test_a_write_survives_the_queue_unchanged():
    from billing_migration.app.writes import Write

    w = Write("ie", "invoices", 5, 2, "update", 7, "k-7", {"amount": "12.50", "updated_at": "2031-01-01T00:00:00.123",
                                                            "period_end": "2030-02-01"})
    assert w.country == "IE" and w.values == {"amount": Decimal("12.50"), "period_end": date(2030, 2, 1),
                                              "updated_at": datetime(2031, 1, 1, 0, 0, 0, 123000)}
    body = w.body()
    assert body["values"]["amount"] == "12.50" and Write.from_body(body) == w
    assert w.group == "customer-2" and "12.50" not in w.describe()
    with pytest.raises(ValueError, match="version-1"):
        Write.from_body({"v": 2})


def test_queue_names_per_purpose_country_and_namespace():
    from billing_migration.stores import queues

    cfg = load_config()
    ns = dataclasses.replace(cfg, namespace="t12_3")
    assert queues.name(dataclasses.replace(cfg, namespace=""), "writes", "nz") == "billing-writes-nz.fifo"
    assert queues.name(ns, "reverse", "NZ", dead_letter=True) == "billing-reverse-nz-t12-3-dlq.fifo"
    with pytest.raises(ValueError, match="purpose"):
        queues.name(cfg, "other", "NZ")


def test_queue_settings_are_validated():
    raw = {"connections": {k: k for k in ("mysql_export", "mysql_gate", "mysql_admin", "cassandra", "s3")},
           "countries": {"NZ": {}}}
    assert parse(raw).queues.max_receive_count == 3
    assert parse({**raw, "queues": {"max_receive_count": 5}}).queues.max_receive_count == 5
    for bad, match in (({"max_receive_count": 0}, r"in \[1, 1000\]"), ({"nope": 1}, "unknown setting"),
                       ({"retry_delay_s": "1"}, "integer")):
        with pytest.raises(ConfigError, match=match):
            parse({**raw, "queues": bad})
    assert load_config().connections["sqs"] == "billing_sqs"


def test_dead_letter_errors_are_masked_and_reported():
    from billing_migration.app.replay import _error_text
    from billing_migration.country.report import _queued_line

    text = _error_text(RuntimeError("Duplicate entry 'ann@example.com' for key 'email'"))
    assert "ann" not in text and text.startswith("RuntimeError: Duplicate entry '***'")
    line = _queued_line({"queued_writes": {"received": 5, "applied": 4, "duplicates": 0, "dead_lettered": 1,
                                           "seconds": 1.5, "errors": ["invoices/9 (customer 2, seq 3, update)"]}})
    assert line.startswith("queued writes: 5 received, 4 replayed") and "invoices/9" in line
