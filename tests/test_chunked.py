"""Chunked-prefill mixed batching: cost extension, golden schedule, validator rules for mixed rows, bounds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_trace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.schedule.bounds import closed_form_lower_bound
from workbench.engine.chunked import (
    CHUNKED_POLICIES,
    chunked_lower_bound,
    mixed_iteration_time,
    prefill_chunks,
    simulate_chunked,
)
from workbench.costmodel.linear import LinearCostModel
from workbench.errors import ConfigError
from workbench.schedule.metrics import schedule_metrics
from workbench.schedule.schema import Schedule
from workbench.engine.core import simulate
from workbench.workload.trace import synthetic_trace
from workbench.schedule.validator import validate

UNIT = LinearCostModel(a_p=1.0, b_p=0.5, a_d=1.0, b_d=0.0, c_d=0.0, name="unit")
SMALL = LinearCostModel(a_p=0.015, b_p=1e-4, a_d=0.012, b_d=1e-4, c_d=2e-7, name="small")
TRACE = synthetic_trace(40, seed=3, input_mean_tokens=80, output_mean_tokens=20, max_tokens=200, rate_per_s=30)


def _copy(s: Schedule) -> Schedule:
    return Schedule(timeline=s.timeline.copy(), requests=s.requests.copy(), metrics=json.loads(json.dumps(s.metrics)))


@pytest.fixture
def sched() -> Schedule:
    return _copy(simulate_chunked(TRACE, 2, 4, token_budget=48, cost_model=SMALL))


def test_cost_extension_reduces_to_the_two_stage_model():
    assert mixed_iteration_time(SMALL, 7, 900, 0) == pytest.approx(SMALL.decode_time(7, 900))
    big_ap = SMALL.with_coefficients(a_p=0.02)
    assert mixed_iteration_time(big_ap, 0, 0, 300) == pytest.approx(big_ap.prefill_time(300))
    # a decode batch of 3 with 100 context tokens plus a 50-token chunk whose prompt has 20 tokens done:
    expected = max(SMALL.a_p, SMALL.a_d) + SMALL.b_d * 3 + SMALL.c_d * (100 + 20) + SMALL.b_p * 50
    assert mixed_iteration_time(SMALL, 3, 100, 50, 20) == pytest.approx(expected)


def test_golden_schedule_by_hand():
    # Budget 4 tokens, B = 2. Request 0: 5-token prompt, 3 outputs; request 1: 2-token prompt, 2 outputs.
    # it0 mixed: chunks 0:4 ............................ 1 + 0.5*4 = 3   [0, 3]
    # it1 mixed: chunk 0:1 (prompt done), chunk 1:2 (done)  1 + 0.5*3 = 2.5 [3, 5.5]  first tokens of 0 and 1
    # it2 decode 0, 1 (1 finishes)                        1             [5.5, 6.5]
    # it3 decode 0 (finishes)                             1             [6.5, 7.5]
    s = simulate_chunked(make_trace([(5, 3), (2, 2)]), 1, 2, token_budget=4, cost_model=UNIT)
    tl = s.timeline
    assert tl["kind"].tolist() == ["mixed", "mixed", "decode", "decode"]
    np.testing.assert_allclose(tl["end_s"], [3.0, 5.5, 6.5, 7.5])
    assert tl["prefill_ids"].tolist()[:2] == ["0", "0 1"] and tl["prefill_tokens"].tolist()[:2] == ["4", "1 2"]
    np.testing.assert_allclose(s.requests["first_token_s"], [5.5, 5.5])
    np.testing.assert_allclose(s.requests["finish_s"], [7.5, 6.5])
    assert validate(s).ok
    chunks = prefill_chunks(tl)
    assert chunks["tokens"].tolist() == [4, 1, 2]


def test_section3_bound_does_not_hold_for_mixed_batching_but_the_chunked_bound_does():
    # a_p = a_d, free tokens: section 3 charges a second prefill stage that mixed batching never pays.
    free = LinearCostModel(a_p=1.0, b_p=0.0, a_d=1.0, b_d=0.0, c_d=0.0, name="free")
    trace = make_trace([(1, 5), (1, 2), (1, 2)])
    s = simulate_chunked(trace, 1, 2, token_budget=8, cost_model=free)
    assert s.makespan_s == 5.0
    assert closed_form_lower_bound(trace, 1, 2, free).value_s == pytest.approx(5.0, rel=1e-9)
    # MODEL.md section 3 on one client: LB_1 = V + a_p ceil(3/2) + a_d max(ceil(6/2), 4) = 0 + 2 + 4 = 6 > 5.
    lb_section3 = 0 + free.a_p * 2 + free.a_d * max(3, 4)
    assert lb_section3 == 6.0 > s.makespan_s
    assert s.metrics["lower_bound_s"] == chunked_lower_bound(trace, 1, 2, free, token_budget=8).value_s <= 5.0
    assert validate(s).ok


@pytest.mark.parametrize("policy", list(CHUNKED_POLICIES))
@pytest.mark.parametrize("budget,kv", [(9, None), (48, 600), (4096, None)])
def test_every_chunked_schedule_is_valid(policy, budget, kv, tmp_path):
    s = simulate_chunked(TRACE, 2, 4, policy, SMALL, token_budget=budget, kv_capacity_tokens=kv)
    assert validate(s, trace=TRACE).ok, str(validate(s))
    s.write(tmp_path / "s")
    report = validate(tmp_path / "s", trace=TRACE)
    assert report.ok and (kv is None or "kv-capacity" in report.checked), str(report)
    assert s.makespan_s >= s.metrics["lower_bound_s"]


def test_rolling_dispatch_works_in_the_chunked_simulator():
    s = simulate_chunked(TRACE, 2, 4, cost_model=SMALL, dispatch="rolling", horizon_s=0.1)
    assert validate(s).ok


def test_old_files_without_the_new_columns_still_validate(tmp_path):
    s = simulate(TRACE, 2, 4, "continuous", SMALL)
    s.write(tmp_path / "s")
    header = (tmp_path / "s" / "timeline.csv").read_text().splitlines()[0]
    assert "prefill_ids" not in header and validate(tmp_path / "s").ok


def test_slot_utilization_counts_decodes_of_mixed_rows(sched):
    tl = sched.timeline
    dec = tl["kind"].isin(["decode", "mixed"])
    expected = float((tl["n_requests"][dec] / 4 * (tl["end_s"] - tl["start_s"])[dec]).sum()) / (2 * tl["end_s"].max())
    assert schedule_metrics(tl, 2, 4)["slot_utilization"] == pytest.approx(expected)
    assert (tl["kind"] == "mixed").any() and tl.loc[tl["kind"] == "mixed", "n_requests"].sum() > 0


# -- the validator on corrupted mixed rows -------------------------------------------------------------------
def _mixed_row_with(tl, predicate):
    for r in tl.index[tl["kind"] == "mixed"]:
        if predicate(tl.loc[r]):
            return r
    raise AssertionError("no such mixed row")


def _rules(s):
    return validate(s).rules_violated()


def test_validator_needs_the_chunk_columns_for_mixed_rows(sched):
    sched.timeline = sched.timeline.drop(columns=["prefill_tokens"])
    assert _rules(sched) == ["schema"]


def test_validator_checks_chunk_lengths(sched):
    tl = sched.timeline
    r = _mixed_row_with(tl, lambda row: len(row["prefill_ids"].split()) == 1)
    tl.loc[r, "prefill_tokens"] = str(int(tl.loc[r, "prefill_tokens"]) - 1)
    assert {"prefill-once", "duration"} <= set(_rules(sched))


def test_validator_checks_chunk_ids(sched):
    tl = sched.timeline
    r = _mixed_row_with(tl, lambda row: len(row["prefill_ids"].split()) >= 1)
    tl.loc[r, "prefill_tokens"] = tl.loc[r, "prefill_tokens"] + " 5"
    assert "ids" in _rules(sched)


def test_validator_checks_the_token_budget(sched):
    sched.metrics["token_budget"] = 10
    assert "tokens" in _rules(sched)


def test_validator_checks_mixed_durations(sched):
    tl = sched.timeline
    r = _mixed_row_with(tl, lambda row: row["n_requests"] > 0)
    tl.loc[r:, ["start_s", "end_s"]] += 0  # unchanged rows keep passing
    tl.loc[r, "end_s"] += 1e-3
    assert "duration" in _rules(sched)


def test_validator_checks_decodes_come_after_the_last_chunk(sched):
    tl = sched.timeline
    r = _mixed_row_with(tl, lambda row: row["n_requests"] > 0)
    rid = tl.loc[r, "prefill_ids"].split()[-1]
    tl.loc[r, "request_ids"] = tl.loc[r, "request_ids"] + " " + rid
    tl.loc[r, "n_requests"] += 1
    assert "decode-count" in _rules(sched)


def test_validator_checks_first_token_times(sched):
    sched.requests.loc[3, "first_token_s"] += 0.5
    assert _rules(sched) == ["request-times"]


def test_validator_checks_the_chunked_bound(sched):
    sched.metrics["lower_bound_s"] = 1e-6
    sched.metrics["gap"] = sched.metrics["makespan_s"] / 1e-6 - 1
    assert _rules(sched) == ["metrics"]


def test_refuses_a_budget_below_the_batch_size_and_takes_one_equal_to_it():
    """vLLM allows max_num_batched_tokens == max_num_seqs: a full batch of decodes admits nobody, and a prompt
    part-way holds a slot no decode takes, so every iteration makes progress."""
    with pytest.raises(ConfigError, match="token_budget"):
        simulate_chunked(TRACE, 2, 16, token_budget=15, cost_model=SMALL)
    s = simulate_chunked(TRACE, 2, 16, token_budget=16, cost_model=SMALL)
    assert validate(s, TRACE).ok
    assert (s.timeline["tokens"] >= 0).all()



def test_the_offline_stage_dispatches_mixed_iterations_too():
    """One engine: the hybrid's offline assignment works with chunked prefill (it was refused by the old simulator)."""
    s = simulate_chunked(TRACE, 2, 4, cost_model=SMALL, dispatch="offline", method="lpt")
    assert validate(s, TRACE).ok


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), clients=st.integers(1, 3), batch=st.integers(1, 6),
       budget=st.integers(7, 200), rate=st.sampled_from([None, 5.0, 50.0]))
def test_chunked_makespan_is_at_least_its_bound(seed, clients, batch, budget, rate):
    trace = synthetic_trace(20, seed=seed, input_mean_tokens=50, output_mean_tokens=15, max_tokens=150,
                            rate_per_s=rate)
    s = simulate_chunked(trace, clients, batch, token_budget=max(budget, batch + 1), cost_model=SMALL)
    assert s.makespan_s >= s.metrics["lower_bound_s"] * (1 - 1e-12)
    assert validate(s).ok
