"""The exact MIP against an independent brute force; export, validation, replay, refusals."""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
import pytest

from conftest import make_trace

from workbench.policies import POLICIES
from workbench.costmodel.linear import LinearCostModel
from workbench.errors import ConfigError
from workbench.offline import exact_size, lower_bound, solve_exact, solver_available
from workbench.offline.exact import PlannedRule, replay_exact
from workbench.policies.registry import list_policies
from workbench.engine.core import simulate
from workbench.schedule.validator import validate

pytestmark = [pytest.mark.solver,
              pytest.mark.skipif(not solver_available(), reason="HiGHS (highspy) not installed")]

# a_p != a_d and every term non-zero, so that ties between schedules are rare
CM = LinearCostModel(a_p=0.03, b_p=1e-4, a_d=0.012, b_d=1e-4, c_d=1e-7, name="test")


def brute_force_makespan(l, o, clients: int, B: int, cm: LinearCostModel) -> float:
    """Optimal makespan by enumerating every assignment and every iteration sequence.

    No Pyomo, none of the MIP's restrictions: at every boundary a client may
    decode (if anything runs) or prefill any non-empty subset of its waiting
    requests that fits the free slots.  A decode iteration decodes every
    running request (MODEL.md section 1).  Each client's time is minimised by
    memoised recursion over (waiting set, running requests with decodes done).
    """
    n = len(l)

    @lru_cache(maxsize=None)
    def best(waiting: frozenset, running: tuple) -> float:
        if not waiting and not running:
            return 0.0
        options = []
        if running:
            ctx = sum(l[i] + d + 1 for i, d in running)  # the d-th decode reads l_i + d tokens
            after = tuple(sorted((i, d + 1) for i, d in running if d + 1 < o[i] - 1))
            options.append(float(cm.decode_time(len(running), ctx)) + best(waiting, after))
        free = B - len(running)
        for size in range(1, min(free, len(waiting)) + 1):
            for subset in itertools.combinations(sorted(waiting), size):
                cost = float(cm.prefill_time(sum(l[i] for i in subset)))
                joined = tuple(sorted(running + tuple((i, 0) for i in subset if o[i] > 1)))
                options.append(cost + best(waiting - frozenset(subset), joined))
        return min(options)

    result = np.inf
    for combo in itertools.product(range(clients), repeat=n):
        times = [best(frozenset(i for i in range(n) if combo[i] == j), ()) for j in range(clients)]
        result = min(result, max(times))
    return float(result)


def tiny_instance(seed: int):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5))
    rows = [(int(rng.integers(1, 60)), int(rng.integers(1, 5))) for _ in range(n)]
    clients = int(rng.integers(1, 3))
    B = int(rng.integers(1, 3))
    return make_trace(rows), clients, B


@pytest.mark.parametrize("seed", range(14))
def test_exact_mip_equals_brute_force(seed):
    trace, clients, B = tiny_instance(seed)
    l = trace["input_tokens"].tolist()
    o = trace["output_tokens"].tolist()
    expected = brute_force_makespan(l, o, clients, B, CM)
    result = solve_exact(trace, clients, B, CM, time_limit=60)
    assert result.optimal
    assert result.makespan_s == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_brute_force_finds_what_continuous_batching_misses():
    # B=1 forces serial service; with B=2 batching the two decodes saves a_d per shared iteration
    serial = brute_force_makespan([10, 10], [3, 3], 1, 1, CM)
    batched = brute_force_makespan([10, 10], [3, 3], 1, 2, CM)
    assert batched < serial


@pytest.mark.parametrize("seed", range(4))
def test_exact_schedule_validates_replays_and_brackets_every_policy(seed):
    rng = np.random.default_rng(100 + seed)
    rows = [(int(rng.integers(20, 200)), int(rng.integers(1, 6))) for _ in range(5)]
    trace = make_trace(rows)
    result = solve_exact(trace, 2, 2, CM, time_limit=60)
    assert result.optimal
    report = validate(result.schedule, trace)
    assert report.ok, report.violations
    replayed = replay_exact(result)
    assert replayed.makespan_s == pytest.approx(result.makespan_s, rel=1e-12)
    assert validate(replayed).ok
    lb = lower_bound(trace, 2, CM, batch_size=2)
    assert lb.value_s <= result.makespan_s * (1 + 1e-9)
    # The exact MIP is of the paper's model (exclusive iterations): it brackets the policies of that model.
    for policy in [p for p in list_policies() if POLICIES[p].engine.get("iteration", "exclusive") == "exclusive"]:
        simulated = simulate(trace, 2, 2, policy, CM, lower_bound_s=0.0)
        assert result.makespan_s <= simulated.makespan_s * (1 + 1e-9), policy


def test_exact_reference_instance_six_requests_under_a_minute():
    rng = np.random.default_rng(2025)
    rows = [(int(rng.integers(20, 200)), int(rng.integers(1, 6))) for _ in range(6)]
    result = solve_exact(make_trace(rows), 2, 2, CM, time_limit=60)
    assert result.optimal  # proven optimal within its 60 s limit
    assert result.schedule.metrics["policy"] == "exact"
    assert result.schedule.metrics["lower_bound_s"] <= result.makespan_s


def test_time_limit_returns_the_incumbent_with_its_gap():
    rng = np.random.default_rng(7)
    rows = [(int(rng.integers(20, 200)), int(rng.integers(2, 9))) for _ in range(9)]
    trace = make_trace(rows)
    result = solve_exact(trace, 2, 3, CM, time_limit=0.5)
    assert result.status in ("time_limit", "optimal")
    assert validate(result.schedule, trace).ok
    if result.status == "time_limit":
        assert result.bound_s is None or result.bound_s <= result.makespan_s


def test_large_instances_are_refused_before_building():
    trace = make_trace([(50, 100)] * 12)
    with pytest.raises(ConfigError, match="hybrid") as info:
        solve_exact(trace, 4, 8, CM)
    assert "binaries" in str(info.value)
    with pytest.raises(ConfigError, match="hybrid"):
        solve_exact(make_trace([(5, 2)] * 40), 2, 2, CM)
    assert exact_size(6, 2, 10)["binaries"] == 6 * 2 + 2 * 10 * (3 * 6 + 2)


def test_arrivals_and_missing_plan_are_refused():
    with pytest.raises(ConfigError, match="arrival_s"):
        solve_exact(make_trace([(5, 2, 0.0), (5, 2, 1.0)]), 1, 2, CM)
    with pytest.raises(ConfigError, match="plan"):
        PlannedRule()
