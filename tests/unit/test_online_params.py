"""Online-mode params are validated with the others, and the freeze budget clock refuses to run over."""

from __future__ import annotations

import time

import pytest
from billing_migration.config import ConfigError, parse
from billing_migration.country.pipeline import validate_params

CFG = parse({
    "connections": {k: k for k in ("mysql_export", "mysql_gate", "mysql_admin", "cassandra", "s3")},
    "countries": {"US": {}},
})


def test_online_is_the_default_mode_with_a_30_s_freeze_budget():
    p = validate_params(CFG, "US", {"country": "US"})
    assert (p.mode, p.freeze_budget_s, p.catchup_max_customers) == ("online", 30, 200)
    assert validate_params(CFG, "US", {"country": "US", "mode": "offline"}).mode == "offline"


@pytest.mark.parametrize(("params", "message"), [
    ({"mode": "fast"}, "mode must be one of"),
    ({"freeze_budget_s": 0}, r"freeze_budget_s must be an integer in \[1, 3600\]"),
    ({"freeze_budget_s": 3601}, r"freeze_budget_s must be an integer in \[1, 3600\]"),
    ({"catchup_max_customers": -1}, r"catchup_max_customers must be an integer in \[0, "),
    ({"catchup_max_rounds": 0}, r"catchup_max_rounds must be an integer in \[1, "),
])
def test_bad_online_params_are_refused(params, message):
    with pytest.raises(ConfigError, match=message):
        validate_params(CFG, "US", {"country": "US", **params})


def test_the_freeze_clock_fails_past_the_budget_with_what_to_change():
    from billing_migration.online.cutover import FreezeBudgetExceeded, _Clock

    clock = _Clock(1)
    clock.check("a quick step")
    clock.t0 -= 1.5
    with pytest.raises(FreezeBudgetExceeded, match=r"after the slow step.*freeze_budget_s.*catchup_max_customers"):
        clock.check("the slow step")
    assert time.monotonic() - clock.t0 > 1
