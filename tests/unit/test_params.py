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
        ({"country": "US", "chunk_customers": 5}, r"chunk_customers must be an integer in \[100, 1000000\]"),
        ({"country": "US", "chunk_customers": "many"}, "must be an integer"),
        ({"country": "US", "parallelism": 0}, r"parallelism must be an integer in \[1, 64\]"),
        ({"country": "US", "error_budget": -1}, "error_budget must be an integer in"),
        ({"country": "US", "compare_rounds": 99}, r"compare_rounds must be an integer in \[1, 20\]"),
        ({"country": "US", "mode": "fast"}, "mode must be one of"),
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


def test_unknown_params_are_refused_naming_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown param\(s\) \['chunk_size'\]; valid params: .*'chunk_customers'"):
        validate_params(CFG, "US", {"country": "US", "chunk_size": 1000})


def test_param_limits_are_the_config_limits():
    """What the YAML accepts, a run accepts; what one refuses, the other refuses (one model)."""
    from billing_migration.config import ConfigError as CE

    with pytest.raises(CE, match="chunk_customers"):
        parse({"connections": CFG.connections, "countries": {"US": {"chunk_customers": 50}}})
    with pytest.raises(ConfigError, match="chunk_customers"):
        validate_params(CFG, "US", {"country": "US", "chunk_customers": 50})
    p = validate_params(CFG, "US", {"country": "US", "parallelism": 64, "freeze_drain_timeout_s": 5})
    assert (p.parallelism, p.freeze_drain_timeout_s) == (64, 5)
