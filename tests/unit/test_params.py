"""Run params are validated before any write: wrong types, ranges, country or reset target are refused."""

from __future__ import annotations

import pytest
from billing_migration.config import ConfigError, parse
from billing_migration.country.pipeline import RESET_CHOICES, validate_params

CFG = parse({
    "connections": {k: k for k in ("mysql_export", "mysql_gate", "mysql_admin", "cassandra", "s3")},
    "countries": {"US": {"chunk_customers": 2000}, "BR": {}},
})


def test_defaults_come_from_the_country_config():
    p = validate_params(CFG, "US", {"country": "US"})
    assert p.chunk_customers == 2000
    assert p.reset == "none" and p.dry_run is False


def test_values_given_are_used():
    p = validate_params(CFG, "US", {"country": "US", "chunk_customers": 500, "parallelism": 2,
                                    "error_budget": 7, "reset": "invoices", "dry_run": True})
    assert (p.chunk_customers, p.parallelism, p.error_budget, p.reset, p.dry_run) == (500, 2, 7, "invoices", True)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"country": "BR"}, "this DAG migrates US"),
        ({"country": "XX"}, "not an ISO"),
        ({"country": "US", "chunk_customers": 5}, "chunk_customers must be in"),
        ({"country": "US", "chunk_customers": "many"}, "must be an integer"),
        ({"country": "US", "parallelism": 0}, "parallelism must be in"),
        ({"country": "US", "error_budget": -1}, "error_budget must be in"),
        ({"country": "US", "compare_rounds": 99}, "compare_rounds must be in"),
        ({"country": "US", "reset": "everything"}, "reset must be one of"),
        ({"country": "US", "dry_run": "yes"}, "dry_run must be true or false"),
        ({"country": "US", "parallelism": True}, "must be an integer"),
    ],
)
def test_bad_params_are_refused(params, message):
    with pytest.raises(ConfigError, match=message):
        validate_params(CFG, "US", params)


def test_reset_choices_cover_every_entity_table():
    assert {"none", "country", "invoices", "payments", "subscriptions"} <= set(RESET_CHOICES)
