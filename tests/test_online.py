"""The Lagrangian iteration rule and the online / hybrid policies (workbench.policies.lagrangian)."""

from __future__ import annotations

import heapq
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import workbench.policies.lagrangian  # noqa: F401  (registers the rule and the policies)
from conftest import make_trace
from workbench.errors import ConfigError
from workbench.policies.lagrangian import LOOKAHEADS, LagrangianRule, continuous_threshold_mu, price_of_empty_slot
from workbench.policies.registry import POLICIES, RULES, resolve_policy
from workbench.engine.core import simulate
from workbench.workload.trace import load_trace, sample_trace, synthetic_trace
from workbench.schedule.validator import validate

NEW_POLICIES = ("online", "hybrid")


def lpt_assignment(trace: pd.DataFrame, clients: int, batch_size: int, cost_model) -> np.ndarray:
    """Longest-processing-time-first on the section-3 weights (test fallback for the offline stage)."""
    w = cost_model.request_weight_s(trace["input_tokens"].to_numpy(), trace["output_tokens"].to_numpy(), batch_size)
    loads = [(0.0, j) for j in range(clients)]
    out = np.zeros(len(trace), dtype=np.int64)
    for i in np.argsort(-w, kind="stable"):
        load, j = heapq.heappop(loads)
        out[i] = j
        heapq.heappush(loads, (load + w[i], j))
    return out


def offline_available() -> bool:
    try:
        import workbench.offline  # noqa: F401
    except ImportError:
        return False
    return True


def run(trace, clients, batch, policy, cost_model, **kw):
    """Simulate; ``hybrid`` falls back to an LPT assignment while the offline stage is missing."""
    if resolve_policy(policy).dispatch == "offline" and not offline_available():
        kw["assignment"] = lpt_assignment(trace, clients, batch, cost_model)
    return simulate(trace, clients, batch, policy, cost_model, **kw)


TRACES = {
    "synthetic": lambda: synthetic_trace(120, seed=3),
    "gsm8k-sample": lambda: sample_trace(load_trace("gsm8k-test"), 200, seed=1),
    "arrivals": lambda: synthetic_trace(150, seed=5, rate_per_s=40.0),
}


# -- registration ---------------------------------------------------------------------
def test_registered():
    assert "lagrangian" in RULES
    for name in NEW_POLICIES:
        assert POLICIES[name].rule == "lagrangian"
        assert POLICIES[name].order == "longest-output"
    assert POLICIES["online"].dispatch == "round-robin"
    assert POLICIES["hybrid"].dispatch == "offline"


# -- the limits of mu ---------------------------------------------------------------------
@pytest.mark.parametrize("lookahead", list(LOOKAHEADS))
@pytest.mark.parametrize("trace_name", list(TRACES))
def test_mu_zero_is_static_exactly(lookahead, trace_name, small_cost):
    trace = TRACES[trace_name]()
    ours = simulate(trace, 3, 8, "online", small_cost, mu=0.0, lookahead=lookahead)
    static = simulate(trace, 3, 8, "static", small_cost, order="longest-output")
    pd.testing.assert_frame_equal(ours.timeline, static.timeline)
    pd.testing.assert_frame_equal(ours.requests, static.requests)


@pytest.mark.parametrize("lookahead", list(LOOKAHEADS))
@pytest.mark.parametrize("trace_name", list(TRACES))
def test_mu_inf_is_continuous_exactly(lookahead, trace_name, small_cost):
    trace = TRACES[trace_name]()
    ours = simulate(trace, 3, 8, "online", small_cost, mu=float("inf"), lookahead=lookahead)
    continuous = simulate(trace, 3, 8, "continuous", small_cost, order="longest-output")
    pd.testing.assert_frame_equal(ours.timeline, continuous.timeline)
    pd.testing.assert_frame_equal(ours.requests, continuous.requests)


@pytest.mark.parametrize("trace_name", list(TRACES))
def test_finite_mu_limits_of_next_completion(trace_name, small_cost):
    """The limits are reached at finite mu: above a_p B / a_d continuous, below a_p / (a_d max o) static."""
    trace = TRACES[trace_name]()
    B = 8
    high = continuous_threshold_mu(small_cost, B)
    ours = simulate(trace, 3, B, "online", small_cost, mu=high, lookahead="next-completion")
    continuous = simulate(trace, 3, B, "continuous", small_cost, order="longest-output")
    pd.testing.assert_frame_equal(ours.timeline, continuous.timeline)
    low = 0.5 * small_cost.a_p / (small_cost.a_d * int(trace["output_tokens"].max()))
    ours = simulate(trace, 3, B, "online", small_cost, mu=low, lookahead="next-completion")
    static = simulate(trace, 3, B, "static", small_cost, order="longest-output")
    pd.testing.assert_frame_equal(ours.timeline, static.timeline)


def test_mu_limits_on_the_paper_scenario():
    cost = "llama-65b"
    trace = load_trace("gsm8k-test")
    for mu, reference in ((0.0, "static"), (math.inf, "continuous")):
        ours = simulate(trace, 8, 16, "online", cost, mu=mu)
        ref = simulate(trace, 8, 16, reference, cost, order="longest-output")
        pd.testing.assert_frame_equal(ours.timeline, ref.timeline)


# -- the rule itself -------------------------------------------------------------------------
class FakeClient:
    """The part of ClientState the rule reads."""

    def __init__(self, cost_model, batch_size, finishes, waiting, decode_count=0):
        self.cost_model = cost_model
        self.batch_size = batch_size
        self.running = [(f, i) for i, f in enumerate(finishes)]
        heapq.heapify(self.running)
        self.n_running = len(finishes)
        self.n_waiting = waiting
        self.decode_count = decode_count
        self.admissible = min(batch_size - self.n_running, waiting)

    def iterations_to_next_completion(self):
        return self.running[0][0] - self.decode_count if self.running else 0

    # exact predictions: the predicted finish counts are the true ones
    predicted_iterations_to_next_completion = iterations_to_next_completion

    def predicted_finish_counts(self):
        return sorted(f for f, _ in self.running)


def test_next_completion_threshold(unit_cost):
    # lambda = a_d / B = 1/4; a_p = 1: prefill iff f * k >= 4.
    B = 4
    assert price_of_empty_slot(unit_cost, B) == 0.25
    rule = LagrangianRule(mu=1.0, lookahead="next-completion")
    assert rule.admit(FakeClient(unit_cost, B, [3, 10, 10], waiting=5)) == 0  # f=1, k=3
    assert rule.admit(FakeClient(unit_cost, B, [4, 10, 10], waiting=5)) == 1  # f=1, k=4
    assert rule.admit(FakeClient(unit_cost, B, [2, 10], waiting=5)) == 2  # f=2, k=2
    assert rule.admit(FakeClient(unit_cost, B, [], waiting=5)) == 4  # empty batch refills
    assert LagrangianRule(mu=2.0, lookahead="next-completion").admit(FakeClient(unit_cost, B, [2, 9, 9], 5)) == 1


def test_tail_prefills_when_everything_fits(unit_cost):
    client = FakeClient(unit_cost, 4, [1, 10, 10], waiting=1)  # f=1, k=1: the sketch would wait
    assert LagrangianRule(lookahead="next-completion").admit(client) == 0
    assert LagrangianRule(lookahead="tail").admit(client) == 1
    assert LagrangianRule(lookahead="amortised").admit(client) == 1


def test_amortised_by_hand(unit_cost):
    # B=4, lambda=1/4, a_p=1, f=1: now costs 1 per request.  Waiting 2 iterations for a second
    # slot costs (1 + 2/4) / 2 = 0.75 per request: wait.  Waiting 8 costs (1 + 2)/2 = 1.5: prefill.
    rule = LagrangianRule(mu=1.0, lookahead="amortised", horizon=1)
    assert rule.admit(FakeClient(unit_cost, 4, [2, 20, 20], waiting=9)) == 0
    assert rule.admit(FakeClient(unit_cost, 4, [8, 20, 20], waiting=9)) == 1
    # With a longer horizon a later, larger prefill can win: completions at 8, 9, 9 free 3 more slots:
    # (1 + (8 + 2*1)/4) / 4 = 0.875 < 1.
    rule = LagrangianRule(mu=1.0, lookahead="amortised", horizon=2)
    assert rule.admit(FakeClient(unit_cost, 4, [8, 9, 9], waiting=9)) == 0


@pytest.mark.parametrize("bad", [dict(mu=-1), dict(mu="x"), dict(mu=float("nan")), dict(lookahead="nope"),
                                 dict(horizon=0), dict(horizon=1.5)])
def test_bad_parameters(bad, small_cost):
    with pytest.raises(ConfigError):
        LagrangianRule(**bad)
    with pytest.raises(ConfigError):
        simulate(synthetic_trace(10, seed=0), 2, 4, "online", small_cost, **bad)


# -- policies: validity and quality -----------------------------------------------------------
@pytest.mark.parametrize("policy", NEW_POLICIES)
@pytest.mark.parametrize("trace_name", list(TRACES))
def test_new_policies_pass_the_validator(policy, trace_name, small_cost, tmp_path):
    trace = TRACES[trace_name]()
    schedule = run(trace, 4, 8, policy, small_cost)
    report = validate(schedule, trace)
    assert report.ok, str(report)
    schedule.write(tmp_path / policy)
    assert validate(tmp_path / policy, trace).ok
    assert schedule.metrics["params"]["rule"] == "lagrangian"
    assert schedule.makespan_s >= schedule.metrics["lower_bound_s"] * (1 - 1e-12)


@pytest.mark.parametrize("lookahead", list(LOOKAHEADS))
def test_online_with_arrivals_kv_and_heterogeneous_batches(lookahead, small_cost):
    trace = synthetic_trace(80, seed=2, rate_per_s=20.0)
    schedule = simulate(trace, 3, [4, 8, 16], "online", small_cost, kv_capacity_tokens=4000, lookahead=lookahead)
    report = validate(schedule, trace)
    assert report.ok, str(report)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 60), clients=st.integers(1, 4), batch=st.integers(1, 9), seed=st.integers(0, 10_000),
       mu=st.sampled_from([0.0, 0.3, 1.0, 3.0, math.inf]), lookahead=st.sampled_from(list(LOOKAHEADS)),
       arrivals=st.booleans())
def test_random_instances_valid(n, clients, batch, seed, mu, lookahead, arrivals):
    from workbench.costmodel.linear import LinearCostModel

    cost = LinearCostModel(a_p=0.015, b_p=1e-4, a_d=0.015, b_d=1e-4, c_d=2e-7)
    trace = synthetic_trace(n, seed=seed, rate_per_s=50.0 if arrivals else None, output_mean_tokens=20)
    schedule = simulate(trace, clients, batch, "online", cost, mu=mu, lookahead=lookahead)
    report = validate(schedule, trace)
    assert report.ok, str(report)


def test_golden_small_instance(unit_cost):
    # One client, B=2.  Requests (input, output): a=(1,5), b=(1,2), c=(1,2).  longest-output queue: a, b, c.
    # t=0 prefill a,b (1 + 0.5*2 = 2 s).  Decode 1 (2 running).  b done at 3.  f=1, k=3 (a needs 3 more),
    # W=1 <= f: tail/amortised prefill c now; next-completion: lambda=1/2, f*k*lambda = 1.5 >= 1: prefill.
    trace = make_trace([(1, 5), (1, 2), (1, 2)])
    for lookahead in LOOKAHEADS:
        s = simulate(trace, 1, 2, "online", unit_cost, lookahead=lookahead)
        kinds = s.timeline["kind"].tolist()
        assert kinds == ["prefill", "decode", "prefill", "decode", "decode", "decode"], lookahead
        assert s.makespan_s == pytest.approx(2 + 1 + 1.5 + 3)


def seeded_cases():
    rng = np.random.default_rng(20250221)
    source = load_trace("gsm8k-test")
    for _ in range(8):
        clients = int(rng.integers(2, 9))
        batch = int(rng.choice([8, 16, 32]))
        n = int(rng.integers(clients * batch, 4 * clients * batch))
        yield sample_trace(source, n, seed=rng), clients, batch


@pytest.mark.slow
def test_hybrid_never_worse_than_paper_baseline():
    for trace, clients, batch in seeded_cases():
        base = run(trace, clients, batch, "paper-baseline", "llama-65b")
        hybrid = run(trace, clients, batch, "hybrid", "llama-65b")
        assert hybrid.makespan_s <= base.makespan_s, (len(trace), clients, batch)
        assert hybrid.metrics["slot_utilization"] >= base.metrics["slot_utilization"]


def test_hybrid_beats_the_baseline_on_paper_gsm8k():
    trace = load_trace("gsm8k-test")
    base = run(trace, 8, 16, "paper-baseline", "llama-65b")
    hybrid = run(trace, 8, 16, "hybrid", "llama-65b")
    lb = max(base.metrics["lower_bound_s"], hybrid.metrics["lower_bound_s"])
    closed = (base.makespan_s - hybrid.makespan_s) / (base.makespan_s - lb)
    assert closed >= 0.75
    assert hybrid.metrics["slot_utilization"] - base.metrics["slot_utilization"] >= 0.10
