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
        ({"countries": {"US": {"chunk_customers": 50}}}, r"chunk_customers must be an integer in \[100, "),
        ({"countries": {"US": {"max_parallel_chunks": 100}}}, r"max_parallel_chunks must be an integer in \[1, 64\]"),
        ({"defaults": {"error_budget": True}}, "error_budget must be an integer"),
        ({"countries": {"US": {"mode": "fast"}}}, r"mode must be one of \['online', 'offline'\]"),
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


def test_yaml_limits_and_param_limits_are_one_source():
    """Every value the YAML accepts is a valid Param default, and every Param range is the model's range."""
    from billing_migration.config import RunParams, StageSettings, param_specs

    specs = param_specs("US", load_config().country("US"))
    for name, info in StageSettings.model_fields.items():
        spec = specs["parallelism" if name == "max_parallel_chunks" else name]
        lo = next((m.ge for m in info.metadata if hasattr(m, "ge")), None)
        hi = next((m.le for m in info.metadata if hasattr(m, "le")), None)
        assert (spec.get("minimum"), spec.get("maximum")) == (lo, hi), name
        assert spec["title"] and spec["description"], name
    assert set(specs) == {"parallelism" if n == "max_parallel_chunks" else n for n in RunParams.model_fields}
    # the extremes the YAML accepts make valid Params (a DAG that parses)
    top = parse({**BASE, "countries": {"US": {"chunk_customers": 1_000_000, "max_parallel_chunks": 64}}})
    top_specs = param_specs("US", top.country("US"))
    assert top_specs["parallelism"]["default"] == top_specs["parallelism"]["maximum"] == 64
    assert "freezes production billing writes for us" in specs["country"]["description"].lower()
    assert "[100, 1000000]" in specs["chunk_customers"]["description"]


def test_online_mode_settings_have_their_defaults():
    s = load_config().country("US")
    assert (s.mode, s.freeze_budget_s, s.catchup_max_customers, s.catchup_max_rounds) == ("online", 30, 200, 10)
