"""The declarative config and the run params are refused with a clear message when wrong."""

from __future__ import annotations

import pytest
from billing_migration.config import ConfigError, load_config, normalize_country, parse

BASE = {
    "connections": {k: k for k in ("mysql_export", "mysql_gate", "mysql_admin", "cassandra", "s3")},
    "countries": {"US": {}, "BR": {"chunk_customers": 100}},
}


def test_shipped_config_is_valid():
    cfg = load_config()
    assert "US" in cfg.countries
    assert cfg.countries["US"].chunk_customers > 0


def test_country_overrides_inherit_defaults():
    cfg = parse({**BASE, "defaults": {"compare_rounds": 5}})
    assert cfg.countries["BR"].chunk_customers == 100
    assert cfg.countries["BR"].compare_rounds == 5
    assert cfg.countries["US"].compare_rounds == 5


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"countries": {"XX": {}}}, "not an ISO 3166-1"),
        ({"countries": {"us": {}}}, "write 'us' as 'US'"),
        ({"countries": {"US": {"chunk_customers": 0}}}, "chunk_customers must be an integer"),
        ({"countries": {"US": {"chunk_size": 10}}}, "unknown setting"),
        ({"countries": {}}, "at least one country"),
        ({"connections": {"s3": "x"}}, "connections: missing"),
    ],
)
def test_bad_config_is_refused(patch, message):
    with pytest.raises(ConfigError, match=message):
        parse({**BASE, **patch})


def test_namespace_isolates_database_and_keyspace():
    cfg = parse(BASE, namespace="t42")
    assert cfg.mysql_database == "billing_t42"
    assert cfg.cassandra_keyspace == "billing_t42"
    assert cfg.s3_prefix == "ns=t42/"
    with pytest.raises(ConfigError):
        parse(BASE, namespace="Bad-Name")


@pytest.mark.parametrize("code", ["", "USA", "U1", None, 12, "ZZ"])
def test_bad_country_codes(code):
    with pytest.raises(ConfigError):
        normalize_country(code)


def test_country_codes_are_normalised():
    assert normalize_country(" us ") == "US"
