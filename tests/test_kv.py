"""KV-cache capacity: the admission policy, the preset, the validator rule and the KV lower-bound term.

The admission policy, stated and tested here: a request is admitted (prefilled)
only when its whole context fits, i.e. the client reserves ``l_i + o_i`` KV
tokens at admission and frees them at the request's last token; waiting
requests are admitted in queue order and the queue's head blocks the ones
behind it (head-of-line); nothing is ever preempted, so no request is
prefilled twice.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_trace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.schedule.bounds import closed_form_lower_bound, kv_iteration_counts
from workbench.costmodel.linear import LinearCostModel, load_preset
from workbench.errors import ConfigError
from workbench.engine.core import simulate
from workbench.workload.trace import synthetic_trace
from workbench.schedule.validator import validate

SMALL = LinearCostModel(a_p=0.015, b_p=1e-4, a_d=0.015, b_d=1e-4, c_d=2e-7, name="small")


def _peak_reserved(schedule) -> np.ndarray:
    """Per client, the most KV tokens reserved at once, recounted from the requests table."""
    rq = schedule.requests
    peaks = np.zeros(schedule.clients)
    for j, part in rq.groupby("client"):
        times = np.unique(part["prefill_start_s"])
        held = [((part["prefill_start_s"] <= t) & (part["finish_s"] > t)) for t in times]
        peaks[j] = max(float((part["input_tokens"] + part["output_tokens"])[h].sum()) for h in held)
    return peaks


def test_admission_reserves_the_whole_context_and_never_exceeds_the_capacity():
    trace = synthetic_trace(80, seed=2, input_mean_tokens=60, output_mean_tokens=80)
    M = 900
    s = simulate(trace, 2, 16, "continuous", SMALL, kv_capacity_tokens=M)
    report = validate(s, trace=trace)
    assert report.ok and "kv-capacity" in report.checked
    assert (_peak_reserved(s) <= M).all()
    assert s.metrics["kv_capacity_tokens"] == [M, M]


def test_head_of_line_blocking_keeps_queue_order():
    # Request 0 runs (needs 60 of 100); request 1 (needs 60) does not fit and blocks request 2 (needs 20),
    # which would fit: in queue order nothing overtakes the head.
    trace = make_trace([(10, 50), (10, 50), (10, 10)])
    s = simulate(trace, 1, 4, "continuous", SMALL, kv_capacity_tokens=100)
    start = s.requests["prefill_start_s"].to_numpy()
    assert start[1] > 0 and start[2] >= start[1]
    assert start[1] == s.requests["finish_s"].iloc[0]  # admitted as soon as request 0 frees its 60 tokens
    assert validate(s).ok


def test_no_preemption_every_request_prefilled_once():
    trace = synthetic_trace(60, seed=4, input_mean_tokens=40, output_mean_tokens=60)
    s = simulate(trace, 1, 8, "hybrid", SMALL, kv_capacity_tokens=500)
    tl = s.timeline
    prefilled = tl[tl["kind"] == "prefill"]["request_ids"].str.split().explode()
    assert prefilled.value_counts().max() == 1 and len(prefilled) == len(trace)


def test_a_request_larger_than_the_cache_is_refused():
    with pytest.raises(ConfigError, match="KV tokens"):
        simulate(make_trace([(10, 10), (300, 10)]), 1, 4, "continuous", SMALL, kv_capacity_tokens=100)


def test_preset_capacity_is_derived_and_does_not_bind_on_gsm8k():
    model = load_preset("llama-65b")
    assert model.kv_capacity_tokens == 179_632  # docs/cost-model.md: 58.86 GB / 327,680 B per token
    trace = synthetic_trace(300, seed=1, input_mean_tokens=67, output_mean_tokens=130)
    free = simulate(trace, 2, 16, "paper-baseline")
    held = simulate(trace, 2, 16, "paper-baseline", kv_capacity_tokens="preset")
    assert held.makespan_s == free.makespan_s
    # The KV term keeps the ceilings, so it may name itself, but it adds nothing that matters.
    assert held.metrics["lower_bound_s"] == pytest.approx(free.metrics["lower_bound_s"], rel=1e-3)


def test_validator_flags_a_schedule_that_overfills_the_cache():
    trace = synthetic_trace(40, seed=3, input_mean_tokens=50, output_mean_tokens=50)
    s = simulate(trace, 1, 8, "continuous", SMALL)
    s.metrics["kv_capacity_tokens"] = 150
    assert "kv-capacity" in validate(s).rules_violated()


# -- the KV term of the lower bound ---------------------------------------------------------------------------
def test_kv_iteration_counts_by_hand():
    # s = l + o = 10, 20, 30, 40; M = 45: the two smallest (30) fit, three (60) do not -> B_eff = 2.
    counts = kv_iteration_counts([5, 10, 15, 20], [5, 10, 15, 20], batch_size=16, kv_capacity_tokens=45)
    assert counts["b_eff"] == 2
    D = 4 + 9 + 14 + 19
    K = 10 * 4 + 20 * 9 + 30 * 14 + 40 * 19
    assert counts["decodes"] == max(-(-D // 2), -(-K // 45))
    assert counts["prefills"] == max(2, -(-100 // 45))


def test_kv_term_binds_when_the_cache_is_tight_and_not_otherwise():
    trace = synthetic_trace(200, seed=1, input_mean_tokens=60, output_mean_tokens=120)
    loose = closed_form_lower_bound(trace, 2, 16, SMALL, kv_capacity_tokens=10**7)
    tight = closed_form_lower_bound(trace, 2, 16, SMALL, kv_capacity_tokens=1500)
    plain = closed_form_lower_bound(trace, 2, 16, SMALL)
    assert loose.value_s == pytest.approx(plain.value_s, rel=1e-3)
    assert tight.binding == "kv_aggregate" and tight.value_s > 1.5 * plain.value_s
    # Unlimited clients (None) give no KV term.
    assert "kv_aggregate" not in closed_form_lower_bound(trace, 2, 16, SMALL, kv_capacity_tokens=[1500, None]).terms


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), clients=st.integers(1, 3), batch=st.integers(1, 8),
       slack=st.floats(1.0, 4.0), policy=st.sampled_from(["static", "continuous", "online", "least-work"]))
def test_makespan_is_at_least_the_kv_bound(seed, clients, batch, slack, policy):
    """On random instances whose KV cache binds, every policy's makespan is >= the reported (KV) bound."""
    trace = synthetic_trace(25, seed=seed, input_mean_tokens=30, output_mean_tokens=40, max_tokens=120)
    need = (trace["input_tokens"] + trace["output_tokens"]).to_numpy()
    M = int(need.max() * slack)  # from one request to a few at a time
    s = simulate(trace, clients, batch, policy, SMALL, kv_capacity_tokens=M)
    bound = closed_form_lower_bound(trace, clients, batch, SMALL, kv_capacity_tokens=M)
    assert s.metrics["lower_bound_s"] >= bound.value_s * (1 - 1e-12)
    assert s.makespan_s >= bound.value_s * (1 - 1e-9)
    assert validate(s).ok
