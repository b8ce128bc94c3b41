"""The simulator: hand-computed golden schedules, invariants on every policy, determinism."""

import filecmp

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_trace
from workbench.costmodel.linear import LinearCostModel
from workbench.errors import ConfigError
from workbench.policies.registry import list_policies
from workbench.engine.core import simulate
from workbench.workload.trace import synthetic_trace
from workbench.schedule.validator import validate

import importlib.util

from workbench.policies.registry import POLICIES

# The offline stage needs workbench.offline; policies whose dispatcher module is absent are skipped.
FAST_POLICIES = [pytest.param(p, marks=pytest.mark.skipif(
    POLICIES[p].dispatch == "offline" and importlib.util.find_spec("workbench.offline") is None,
    reason="workbench.offline not installed")) for p in list_policies()]


def rows(schedule, client=0):
    tl = schedule.timeline[schedule.timeline["client"] == client]
    return [(r.kind, round(r.start_s, 9), round(r.end_s, 9), r.n_requests, r.tokens, r.request_ids)
            for r in tl.itertuples()]


def test_golden_two_requests_one_client():
    # a_p=1, b_p=0.1, a_d=0.5, b_d=0.01, c_d=0.001; r0: l=10, o=3; r1: l=20, o=2; B=2.
    # prefill both: 1 + 0.1*30 = 4.0                                   -> [0, 4]
    # decode 1: n=2, ctx=(10+1)+(20+1)=32: 0.5 + 0.02 + 0.032 = 0.552  -> [4, 4.552], r1 done
    # decode 2: n=1, ctx=10+2=12:        0.5 + 0.01 + 0.012 = 0.522  -> [4.552, 5.074], r0 done
    cm = LinearCostModel(a_p=1, b_p=0.1, a_d=0.5, b_d=0.01, c_d=0.001)
    s = simulate(make_trace([(10, 3), (20, 2)]), 1, 2, "continuous", cm)
    assert rows(s) == [("prefill", 0.0, 4.0, 2, 30, "0 1"), ("decode", 4.0, 4.552, 2, 32, "0 1"),
                       ("decode", 4.552, 5.074, 1, 12, "0")]
    assert s.makespan_s == pytest.approx(5.074)
    assert s.requests["finish_s"].round(9).tolist() == [5.074, 4.552]
    assert s.requests["first_token_s"].tolist() == [4.0, 4.0]


def test_golden_static_versus_continuous(unit_cost):
    # unit cost: prefill = 1 + 0.5*tokens, decode = 1. B=2. r0 (4, 4), r1 (2, 2), r2 (6, 2).
    # continuous: P{r0,r1} [0,4]; D [4,5] r1 done; P{r2} 1+3=4 [5,9]; D [9,10] r2 done; D [10,11] r0 done -> 11
    # static:     P{r0,r1} [0,4]; D [4,5],[5,6],[6,7] (r0 needs 3); P{r2} [7,11]; D [11,12] -> 12
    trace = make_trace([(4, 4), (2, 2), (6, 2)])
    cont = simulate(trace, 1, 2, "continuous", unit_cost)
    stat = simulate(trace, 1, 2, "static", unit_cost)
    assert [(k, a, b) for k, a, b, *_ in rows(cont)] == [
        ("prefill", 0, 4), ("decode", 4, 5), ("prefill", 5, 9), ("decode", 9, 10), ("decode", 10, 11)]
    assert [(k, a, b) for k, a, b, *_ in rows(stat)] == [
        ("prefill", 0, 4), ("decode", 4, 5), ("decode", 5, 6), ("decode", 6, 7), ("prefill", 7, 11), ("decode", 11, 12)]
    assert (cont.makespan_s, stat.makespan_s) == (11, 12)
    # slot utilization of continuous: decode slot-time = 2*1 + 2*1 + 1*1 = 5 half-slots -> (1+1+0.5)/11
    assert cont.metrics["slot_utilization"] == pytest.approx(2.5 / 11)
    assert cont.metrics["busy_utilization"] == pytest.approx(1.0)


def test_golden_dispatch(unit_cost):
    # r0 (1, 10), r1 (1, 1), r2 (1, 1); 2 clients, B=4.
    # round-robin: r0, r2 -> client 0; r1 -> client 1.
    # least-work: w = 0.5 + 0.25 + 9/4 = 3.0 for r0, 0.75 for the others: r0 -> 0, r1 -> 1, r2 -> 1.
    trace = make_trace([(1, 10), (1, 1), (1, 1)])
    rr = simulate(trace, 2, 4, "paper-baseline", unit_cost)
    lw = simulate(trace, 2, 4, "least-work", unit_cost)
    assert rr.requests["client"].tolist() == [0, 1, 0]
    assert lw.requests["client"].tolist() == [0, 1, 1]
    # round-robin, client 0: P{r0,r2} 1 + 0.5*2 = 2 -> [0,2], then 9 decodes of 1 s -> 11
    # least-work, client 0: P{r0} 1 + 0.5 = 1.5, then 9 decodes -> 10.5
    assert (rr.makespan_s, lw.makespan_s) == (11.0, 10.5)


def test_golden_arrival_cuts_a_decode_run(unit_cost):
    # r0 (2, 5) at t=0, r1 (2, 2) at t=2.5; B=2, continuous.
    # P{r0} = 1 + 0.5*2 -> [0,2]; r0 then needs 4 decodes, a run planned as [2,6].
    # r1 arrives at 2.5 while a slot is free, so the run stops at the next boundary, t=3 (one decode).
    # P{r1} [3,5]; D{r0,r1} [5,6] (r1 done); D{r0} [6,7], [7,8] -> r0's 4 decodes, makespan 8.
    trace = make_trace([(2, 5, 0.0), (2, 2, 2.5)])
    s = simulate(trace, 1, 2, "continuous", unit_cost)
    assert [(k, a, b) for k, a, b, *_ in rows(s)] == [
        ("prefill", 0, 2), ("decode", 2, 3), ("prefill", 3, 5), ("decode", 5, 6), ("decode", 6, 7), ("decode", 7, 8)]
    assert s.requests["prefill_start_s"].tolist() == [0, 3]
    assert validate(s, trace=trace).ok


@pytest.mark.parametrize("policy", FAST_POLICIES)
def test_every_policy_passes_the_validator(policy, small_cost, tmp_path):
    trace = synthetic_trace(150, seed=7, input_mean_tokens=40, output_mean_tokens=30)
    # Paged KV (the vllm policy) needs a capacity: one that never runs out here.
    kv = 10**6 if POLICIES[policy].engine.get("kv") == "paged" else None
    s = simulate(trace, 3, 8, policy, small_cost, kv_capacity_tokens=kv)
    report = validate(s, trace=trace)
    assert report.ok, str(report)
    s.write(tmp_path / "s")
    assert validate(tmp_path / "s", trace=trace).ok
    assert s.makespan_s >= s.metrics["lower_bound_s"]


@pytest.mark.parametrize("policy", FAST_POLICIES)
def test_every_policy_with_arrivals_heterogeneous_batches_and_kv(policy, small_cost):
    trace = synthetic_trace(120, seed=11, rate_per_s=40, burstiness=2, output_mean_tokens=40)
    s = simulate(trace, 3, [4, 8, 16], policy, small_cost, kv_capacity_tokens=2500)
    report = validate(s, trace=trace)
    assert report.ok, str(report)
    paged = POLICIES[policy].engine.get("kv") == "paged"
    assert ("kv-blocks" if paged else "kv-capacity") in report.checked
    assert (s.requests["prefill_start_s"] >= s.requests["arrival_s"]).all()


def test_same_inputs_same_files_bit_for_bit(tmp_path, small_cost):
    trace = synthetic_trace(300, seed=5, rate_per_s=30)
    for k in range(2):
        simulate(trace, 4, 8, "least-work", small_cost).write(tmp_path / f"run{k}")
    for name in ("timeline.csv", "requests.csv", "metrics.json"):
        assert filecmp.cmp(tmp_path / "run0" / name, tmp_path / "run1" / name, shallow=False)


class Unlinear:
    """A cost model that is not a LinearCostModel: the simulator must step iteration by iteration."""

    def __init__(self, model):
        self.model = model

    def prefill_time(self, tokens):
        return self.model.prefill_time(tokens)

    def decode_time(self, n, ctx):
        return self.model.decode_time(n, ctx)

    def __getattr__(self, name):
        return getattr(self.model, name)


def test_closed_form_runs_equal_stepping(small_cost):
    trace = synthetic_trace(200, seed=9, output_mean_tokens=50)
    fast = simulate(trace, 2, 8, "continuous", small_cost)
    slow = simulate(trace, 2, 8, "continuous", Unlinear(small_cost))
    cols = ["client", "iteration", "kind", "n_requests", "tokens", "request_ids"]
    pd.testing.assert_frame_equal(fast.timeline[cols], slow.timeline[cols])
    np.testing.assert_allclose(fast.timeline["end_s"], slow.timeline["end_s"], rtol=1e-12)


def test_bad_options(small_cost):
    trace = make_trace([(3, 3), (4, 40)])
    with pytest.raises(ConfigError, match="batch_size"):
        simulate(trace, 1, 0, "continuous", small_cost)
    with pytest.raises(ConfigError, match="clients"):
        simulate(trace, 0, 4, "continuous", small_cost)
    with pytest.raises(ConfigError, match="unknown policy"):
        simulate(trace, 1, 4, "fastest", small_cost)
    with pytest.raises(ConfigError) as info:
        simulate(trace, 1, 4, "continuous", small_cost, kv_capacity_tokens=10)
    assert info.value.row == 1 and "44" in str(info.value)
    with pytest.raises(ConfigError, match="preset"):
        simulate(trace, 1, 4, "continuous", "no-such-preset")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 40), clients=st.integers(1, 5), batch=st.integers(1, 9), seed=st.integers(0, 10**6),
       policy=st.sampled_from(["static", "continuous", "least-work"]), arrivals=st.booleans())
def test_random_instances_are_valid_and_above_the_bound(n, clients, batch, seed, policy, arrivals):
    rng = np.random.default_rng(seed)
    cm = LinearCostModel(a_p=rng.uniform(0, 0.05), b_p=rng.uniform(1e-5, 1e-3), a_d=rng.uniform(1e-3, 0.05),
                         b_d=rng.uniform(0, 1e-3), c_d=rng.uniform(0, 1e-5))
    trace = synthetic_trace(n, seed=rng, output_mean_tokens=12, input_mean_tokens=20,
                            rate_per_s=50.0 if arrivals else None)
    s = simulate(trace, clients, batch, policy, cm)
    report = validate(s, trace=trace)
    assert report.ok, str(report)
    assert s.makespan_s >= s.metrics["lower_bound_s"] * (1 - 1e-12)
    assert int(s.timeline.loc[s.timeline["kind"] == "decode", "n_requests"].sum()) == int((trace["output_tokens"] - 1).sum())
