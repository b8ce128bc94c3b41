"""The typed schema of policy parameters (workbench.policies.registry.PARAMS, check_params)."""

from __future__ import annotations

import math

import pytest

from workbench.errors import ConfigError
from workbench.policies.registry import (
    PARAMS,
    PART_PARAMS,
    POLICIES,
    coerce_param,
    policy_parts,
    resolve_policy,
)


@pytest.mark.parametrize("text,value", [("yes", True), ("no", False), ("true", True), ("false", False),
                                        ("1", True), ("0", False), ("On", True), ("OFF", False), (True, True),
                                        (0, False)])
def test_booleans(text, value):
    assert coerce_param("steal", text) is value


@pytest.mark.parametrize("bad", ["maybe", "", 2, 0.5, None, [True]])
def test_booleans_refused(bad):
    with pytest.raises(ConfigError, match="is not a boolean"):
        coerce_param("steal", bad)


def test_numbers_and_names():
    assert coerce_param("mu", "2.5") == 2.5 and coerce_param("mu", "inf") == math.inf
    assert coerce_param("horizon", "4") == 4 and coerce_param("horizon", 4.0) == 4
    for key, bad in [("mu", "fast"), ("mu", True), ("mu", "nan"), ("horizon", "2.5"), ("horizon", 2.5),
                     ("lookahead", "far"), ("lookahead", 3)]:
        with pytest.raises(ConfigError, match=f"field '{key}'"):
            coerce_param(key, bad)
    with pytest.raises(ConfigError, match="below 0"):
        coerce_param("mu", -1)


@pytest.mark.parametrize("name", list(POLICIES))
def test_every_policy_default_fits_its_schema(name):
    policy = POLICIES[name]
    known = {k for part in policy_parts(policy) for k in PART_PARAMS.get(part, ())}
    assert set(policy.params) <= known, name
    assert resolve_policy(name).params == {k: coerce_param(k, v) for k, v in policy.params.items()}


def test_every_declared_parameter_has_a_type_and_a_meaning():
    for key, spec in PARAMS.items():
        assert spec.kind in {"bool", "int", "float", "str", "object"} and spec.doc, key


def test_offline_methods_agree_with_the_bin_packing():
    from workbench.offline.binpacking import METHODS
    from workbench.offline.dispatch import OFFLINE_METHODS

    assert tuple(METHODS) == OFFLINE_METHODS


def test_a_rule_registered_without_declared_parameters_takes_what_it_is_given():
    """A notebook's own rule (no declare_params) gets its keyword arguments; declared rules still refuse."""
    import workbench
    from workbench.errors import ConfigError
    from workbench.policies.builtin import ContinuousRule
    from workbench.policies.registry import RULES

    seen = {}

    def factory(**params):
        seen.update(params)
        return ContinuousRule()

    RULES["test-open-rule"] = factory
    try:
        workbench.simulate("gsm8k-test", 2, 8, "continuous", "llama-65b", rule="test-open-rule", mu=2.0, colour="blue")
        assert seen == {"mu": 2.0, "colour": "blue"}
    finally:
        del RULES["test-open-rule"]
    import pytest

    with pytest.raises(ConfigError, match="colour"):
        workbench.simulate("gsm8k-test", 2, 8, "continuous", "llama-65b", colour="blue")


def test_replacing_a_policys_rule_drops_the_old_rules_defaults_but_checks_what_is_passed():
    from workbench.errors import ConfigError
    from workbench.policies.registry import resolve_policy

    p = resolve_policy("hybrid", rule="continuous")
    assert p.rule == "continuous" and "mu" not in p.params and "lookahead" not in p.params
    assert resolve_policy("hybrid").params["mu"] == 1.0  # untouched without the override
    import pytest

    with pytest.raises(ConfigError, match="mu"):
        resolve_policy("hybrid", rule="continuous", mu=2.0)  # asked for explicitly: refused
