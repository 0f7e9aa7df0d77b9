"""Scenario files: parsing, rates over time, and clear validation errors."""

from __future__ import annotations

import pytest

from controlloop.config import ConfigError
from controlloop.demo.loadscript import builtin_names, load_scenario, parse_scenario

GOOD = """
name: t
system: large
servers: [Premium-llama_7b]
load:
  "*": {phases: [{duration: 100, rate: x1}, {duration: 100, rate: x3, shape: ramp},
                 {duration: 100, rate: 50}]}
  "Premium-*": {phases: [{duration: 10, rate: 7}]}
"""


def test_rates_step_ramp_and_patterns() -> None:
    sc = parse_scenario(GOOD, where="t.yaml")
    prof = sc.profile("Bronze-x")
    assert prof.rate_at(50, 10) == 10
    assert prof.rate_at(150, 10) == pytest.approx(20)  # half way from x1 to x3
    assert prof.rate_at(250, 10) == 50
    assert prof.rate_at(10_000, 10) == 50  # the last rate holds
    assert prof.change_times() == [100, 200]
    assert sc.profile("Premium-llama_7b").rate_at(0, 10) == 7


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("load: {'*': {phases: [{duration: 10, rate: abc}]}}",
         "bad.yaml: load.*.phases[0].rate: must be a rate in req/min >= 0 or 'xF'"),
        ("load: {'*': {phases: [{duration: -1, rate: 3}]}}",
         "bad.yaml: load.*.phases[0].duration: must be a number > 0 (got -1)"),
        ("load: {'*': {phases: [{duration: 1, rate: 3, shape: sine}]}}",
         "bad.yaml: load.*.phases[0].shape: must be 'step' or 'ramp' (got 'sine')"),
        ("cycles: 0", "bad.yaml: cycles: must be an integer >= 1 (got 0)"),
        ("intervall: 3", "bad.yaml: intervall: unknown field"),
        ("servers: 3", "bad.yaml: servers: must be 'all' or a non-empty list"),
        ("termination: drain", "bad.yaml: termination: must be one of default, example"),
        ("termination: {drainSeconds: -3}",
         "bad.yaml: termination.drainSeconds: must be a number >= 0 (got -3)"),
        ("termination: {grace: 3}", "bad.yaml: termination.grace: unknown field"),
    ],
)
def test_invalid_scenarios_name_file_field_and_value(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_scenario(text, where="bad.yaml")
    assert any(p.startswith(expected) for p in err.value.problems), err.value.problems


def test_builtin_scenarios_parse() -> None:
    names = builtin_names()
    assert {"ramp", "unlimited", "unlimited-load-change", "limited", "limited-load-change"} <= set(
        names
    )
    for name in names:
        assert load_scenario(name).name == name


def test_unknown_scenario_lists_builtins() -> None:
    with pytest.raises(ConfigError, match="built-in: .*ramp"):
        load_scenario("no-such-scenario")


def test_termination_presets_and_overrides() -> None:
    assert parse_scenario("name: t", where="t.yaml").termination == {
        "preStopSeconds": 600.0, "drainSeconds": 0.0, "gracePeriodSeconds": 630.0,
    }  # the example vLLM Deployments' settings
    assert parse_scenario("termination: default", where="t.yaml").termination == {
        "preStopSeconds": 0.0, "drainSeconds": 0.0, "gracePeriodSeconds": 30.0,
    }
    sc = parse_scenario("termination: {gracePeriodSeconds: 45}", where="t.yaml")
    assert sc.termination["gracePeriodSeconds"] == 45 and sc.termination["preStopSeconds"] == 600
