"""Heterogeneous clients (a mixed fleet): per-client batch size, cost model and KV capacity (workbench.schedule.fleet)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_trace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.schedule.bounds import closed_form_lower_bound
from workbench.costmodel.linear import LinearCostModel, load_preset
from workbench.errors import ConfigError
from workbench.schedule.fleet import (
    Fleet,
    fleet_lower_bound,
    fleet_weights,
    fractional_work_bound,
)
from workbench.offline import assign, lower_bound, mmbp_data
from workbench.engine.core import simulate
from workbench.workload.trace import load_trace, synthetic_trace
from workbench.schedule.validator import validate

FLEET = "llama2-70b-a100-tp8:2x16,llama2-70b-h100-tp4:2x32"
TRACE = synthetic_trace(200, seed=5, input_mean_tokens=80, output_mean_tokens=150)
POLICIES = ("paper-baseline", "least-work", "online", "offline", "hybrid", "hybrid-steal")


def test_fleet_parse_and_kwargs():
    f = Fleet.parse(FLEET)
    assert f.clients == 4 and f.batch_size == [16, 16, 32, 32]
    kw = f.simulate_kwargs()
    assert [m.name for m in kw["cost_model"]] == ["llama2-70b-a100-tp8"] * 2 + ["llama2-70b-h100-tp4"] * 2
    assert kw["kv_capacity_tokens"][0] == load_preset("llama2-70b-a100-tp8").kv_capacity_tokens
    assert len(f.table()) == 2
    with pytest.raises(ConfigError):
        Fleet.parse("llama2-70b-a100-tp8:x")


@pytest.mark.parametrize("policy", POLICIES)
def test_mixed_fleet_schedules_are_valid_and_bounded(policy):
    f = Fleet.parse(FLEET)
    s = simulate(TRACE, policy=policy, **f.simulate_kwargs())
    report = validate(s, TRACE)
    assert report.ok, report
    lb = s.metrics["lower_bound_s"]
    assert np.isfinite(lb) and 0 < lb <= s.makespan_s
    assert isinstance(s.metrics["cost_model"], list)


def test_offline_stage_prices_each_client_with_its_own_model():
    f = Fleet.parse(FLEET)
    W = mmbp_data(TRACE, f.clients, f.batch_size, f.cost_model).weights_s
    assert not np.allclose(W[:, 0], W[:, 2])  # an A100 and an H100 client price requests differently
    ours = assign(TRACE, f.clients, f.batch_size, f.cost_model, method="lpt")
    assert ours.makespan_s == pytest.approx(np.bincount(ours.assignment, W[np.arange(len(W)), ours.assignment]).max())
    assert ours.lower_bound_s <= ours.makespan_s
    # the simulator hands the offline dispatcher every client's model, not client 0's
    s = simulate(TRACE, policy="offline", method="lpt", **f.simulate_kwargs(kv=False))
    assert np.array_equal(s.requests["client"].to_numpy(), ours.assignment)


def test_one_kind_of_client_gives_the_classic_average_work():
    cm = load_preset("llama-65b")
    W = fleet_weights(TRACE, [16] * 3, cm, 3)
    value, y = fractional_work_bound(W)
    assert value == pytest.approx(closed_form_lower_bound(TRACE, 3, 16, cm).terms["average_work"], rel=1e-12)
    assert np.allclose(y, 1 / 3)


def test_uniform_machines_total_work_over_total_speed():
    w = np.array([3.0, 1.0, 2.0, 5.0, 4.0])
    speeds = np.array([1.0, 2.0, 4.0])
    W = w[:, None] / speeds[None, :]
    value, _ = fractional_work_bound(W)
    assert value == pytest.approx(w.sum() / speeds.sum(), rel=1e-9)


def _lp_optimum(W: np.ndarray) -> float:
    """min T s.t. sum_j x_ij = 1, sum_i W_ij x_ij <= T, x >= 0, by HiGHS (the value the dual search approaches)."""
    import highspy

    n, m = W.shape
    h = highspy.Highs()
    h.silent()
    inf = highspy.kHighsInf
    for _ in range(n * m):
        h.addVar(0, inf)
    t = h.getNumCol()
    h.addVar(0, inf)
    h.changeColCost(t, 1.0)
    for i in range(n):
        h.addRow(1, 1, m, np.arange(i * m, (i + 1) * m, dtype=np.int32), np.ones(m))
    for j in range(m):
        idx = np.array([i * m + j for i in range(n)] + [t], dtype=np.int32)
        h.addRow(-inf, 0, n + 1, idx, np.concatenate([W[:, j], [-1.0]]))
    h.run()
    return float(h.getInfo().objective_function_value)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 25), st.integers(2, 4), st.integers(0, 10_000))
def test_dual_search_is_below_and_close_to_the_lp(n, m, seed):
    rng = np.random.default_rng(seed)
    kinds = rng.uniform(0.5, 3.0, size=(n, 2))
    W = kinds[:, rng.integers(0, 2, size=m)] * rng.uniform(0.8, 1.2, size=(1, m))
    value, y = fractional_work_bound(W)
    lp = _lp_optimum(W)
    assert value <= lp * (1 + 1e-7) + 1e-9  # a dual point: never above the LP optimum
    assert y.min() >= 0 and y.sum() == pytest.approx(1.0)
    assert value == pytest.approx(float(np.min(y * W, axis=1).sum()), rel=1e-9)


models = st.builds(LinearCostModel, a_p=st.floats(0.005, 0.05), b_p=st.floats(0, 2e-4), a_d=st.floats(0.005, 0.05),
                   b_d=st.floats(0, 2e-4), c_d=st.floats(0, 1e-6), name=st.text("abc", min_size=1, max_size=3))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(1, 300), st.integers(1, 120), st.floats(0, 2)), min_size=1, max_size=30),
       st.lists(st.tuples(models, st.integers(1, 8)), min_size=2, max_size=4),
       st.sampled_from(["paper-baseline", "least-work", "online", "hybrid-steal", "static"]))
def test_makespan_never_below_the_fleet_bound(rows, clients, policy):
    trace = make_trace(rows)
    cms = [c for c, _ in clients]
    B = [b for _, b in clients]
    bound = fleet_lower_bound(trace, len(cms), B, cms)
    kw = {"method": "lpt"} if policy == "hybrid-steal" else {}
    s = simulate(trace, len(cms), B, policy, cms, **kw)
    assert s.makespan_s >= bound.value_s * (1 - 1e-9)
    for name, term in bound.terms.items():
        assert s.makespan_s >= term * (1 - 1e-9), name
    assert validate(s, trace).ok


def test_offline_lower_bound_takes_a_fleet():
    f = Fleet.parse(FLEET)
    lb = lower_bound(TRACE, f.clients, f.cost_model, batch_size=f.batch_size, method="closed")
    assert lb.value_s == pytest.approx(fleet_lower_bound(TRACE, f.clients, f.batch_size, f.cost_model).value_s)
    assert set(lb.terms) >= {"single_request", "fractional_work"}


def test_paper_trace_on_a_mixed_fleet():
    trace = load_trace("gsm8k-test")
    f = Fleet.parse("llama2-70b-a100-tp8:4x32,llama2-70b-h100-tp4:4x32")
    base = simulate(trace, policy="paper-baseline", **f.simulate_kwargs())
    hyb = simulate(trace, policy="hybrid", method="ls", **f.simulate_kwargs())
    assert hyb.makespan_s < base.makespan_s
    assert validate(hyb, trace).ok


def test_one_model_for_the_whole_fleet_is_not_a_bound():
    """Why mixed fleets need their own bound: pricing every request on client 0's model can exceed the makespan."""
    slow = LinearCostModel(a_p=0.2, b_p=1e-3, a_d=0.2, b_d=1e-3, c_d=1e-6, name="slow")
    fast = LinearCostModel(a_p=0.01, b_p=5e-5, a_d=0.01, b_d=5e-5, c_d=5e-8, name="fast")
    trace = synthetic_trace(60, seed=2)
    s = simulate(trace, 3, 8, "least-work", [slow, fast, fast])
    assert closed_form_lower_bound(trace, 3, 8, slow).value_s > s.makespan_s  # not a bound for this fleet
    assert fleet_lower_bound(trace, 3, 8, [slow, fast, fast]).value_s <= s.makespan_s
    assert s.metrics["lower_bound_s"] <= s.makespan_s and validate(s, trace).ok


@pytest.mark.parametrize("options", [{"kv": "paged"}, {"iteration": "mixed"},
                                     {"iteration": "mixed", "kv": "paged", "prefix_caching": True}],
                         ids=["paged", "mixed", "mixed-paged-prefix"])
def test_a_mixed_fleet_has_a_bound_with_paged_kv_or_mixed_iterations(options):
    """Issue 27 item 14: every model linear, yet the bound was NaN ("no linear lower model")."""
    f = Fleet.parse(FLEET)
    s = simulate(TRACE, f.clients, f.batch_size, "least-work", f.cost_model, kv_capacity_tokens=f.kv_capacity_tokens,
                 **options)
    lb = s.metrics["lower_bound_s"]
    assert np.isfinite(lb) and 0 < lb <= s.makespan_s
    assert s.metrics["lower_bound_binding"] in ("single_request", "fractional_work", "fractional_tokens", "pair",
                                                "release_plus_alone")
    report = validate(s, TRACE)
    assert report.ok, str(report)


def test_chunked_fleet_bound_pays_no_prefill_overhead_and_holds_on_random_fleets():
    from workbench.schedule.fleet import chunked_fleet_lower_bound

    f = Fleet.parse(FLEET)
    exclusive = fleet_lower_bound(TRACE, f.clients, f.batch_size, f.cost_model)
    chunked = chunked_fleet_lower_bound(TRACE, f.clients, f.batch_size, f.cost_model, token_budget=512)
    assert 0 < chunked.terms["fractional_work"] < exclusive.terms["fractional_work"]  # no a_p / B per request
    assert "fractional_tokens" in chunked.terms and "pair" not in chunked.terms
    s = simulate(TRACE, f.clients, f.batch_size, "vllm", f.cost_model, token_budget=512)
    assert chunked.value_s == s.metrics["lower_bound_s"] <= s.makespan_s


def test_a_mixed_fleet_with_prefix_caching_has_a_bound():
    """Found by the engine-options property test: the fleet bound re-read the shortened prompts with their
    prefix columns and refused them (prefix_tokens exceeds the request's input tokens)."""
    trace = make_trace([(40, 5), (30, 5), (44, 3)]).assign(prefix_id=["a", "a", "a"], prefix_tokens=30)
    models = [LinearCostModel(a_p=0.01, b_p=1e-4, a_d=0.01, b_d=1e-4, c_d=1e-6, name="x"),
              LinearCostModel(a_p=0.02, b_p=2e-4, a_d=0.02, b_d=2e-4, c_d=2e-6, name="y")]
    s = simulate(trace, 2, 2, "least-work", models, kv="paged", block_size=1, prefix_caching=True,
                 kv_capacity_tokens=1000)
    assert 0 < s.metrics["lower_bound_s"] <= s.makespan_s
    assert validate(s, trace).ok
