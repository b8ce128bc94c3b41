"""The one engine: iteration formers (exclusive, mixed) and KV managers (reserve, paged) as choices of one loop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_trace

from workbench.costmodel.linear import LinearCostModel
from workbench.engine import EngineConfig, simulate
from workbench.errors import ConfigError
from workbench.policies import POLICIES
from workbench.schedule.validator import validate
from workbench.workload.trace import synthetic_trace

CM = LinearCostModel(a_p=0.01, b_p=1e-4, a_d=0.01, b_d=1e-4, c_d=1e-6, name="test")
TRACE = synthetic_trace(120, seed=4, output_mean_tokens=30)
EXCLUSIVE = [p for p in sorted(POLICIES) if POLICIES[p].engine.get("iteration", "exclusive") == "exclusive"]
FAST = [p for p in sorted(POLICIES) if POLICIES[p].dispatch != "offline" or p == "hybrid"]


def _opts(policy: str, kv: str, iteration: str) -> dict:
    return {"kv": kv, "iteration": iteration, "method": "lpt"} if POLICIES[policy].dispatch == "offline" else \
        {"kv": kv, "iteration": iteration}


@pytest.mark.parametrize("policy", FAST)
@pytest.mark.parametrize("iteration", ["exclusive", "mixed"])
@pytest.mark.parametrize("kv", ["reserve", "paged"])
def test_every_policy_in_every_mode_gives_a_valid_schedule(policy, iteration, kv, tmp_path):
    """Tight paged KV (preemptions) and generous reserved KV; the files validate as the object does."""
    longest = int((TRACE["input_tokens"] + TRACE["output_tokens"]).max())
    cap = longest + 64 if kv == "paged" else 4 * longest
    s = simulate(TRACE, 3, 8, policy, CM, kv_capacity_tokens=cap, **_opts(policy, kv, iteration))
    report = validate(s, TRACE)
    assert report.ok, str(report)
    s.write(tmp_path / "s")
    assert validate(tmp_path / "s", TRACE).ok
    assert s.makespan_s >= s.metrics["lower_bound_s"]
    if kv == "paged":
        assert s.metrics["kv_mode"] == "paged" and s.metrics["block_size"] == 16


@pytest.mark.parametrize("policy", ["paper-baseline", "hybrid", "online", "static"])
def test_paged_kv_that_never_runs_out_is_the_reserved_schedule_bit_for_bit(policy):
    a = simulate("gsm8k-test", 8, 16, policy, "llama-65b")
    b = simulate("gsm8k-test", 8, 16, policy, "llama-65b", kv="paged", kv_capacity_tokens=10**9)
    assert b.metrics["preemptions"] == 0
    assert float(a.makespan_s).hex() == float(b.makespan_s).hex()
    pd.testing.assert_series_equal(a.requests["finish_s"], b.requests["finish_s"])


def test_a_preempted_request_is_recomputed_over_its_prompt_and_generated_tokens():
    """Two requests on one client of 6 blocks of 4 tokens: the newer one is preempted when the older grows.

    r0: 8 prompt tokens, 12 output; r1: 8 + 12.  Both prefill together (4 blocks), then each decode adds a
    token; at 12 tokens each (6 blocks) the next decode needs a 7th: r1, admitted last, is preempted
    with 5 tokens generated (1 from its prefill, 4 decodes), and later prefilled over 8 + 5 = 13 tokens.
    """
    trace = make_trace([(8, 12), (8, 12)])
    s = simulate(trace, 1, 2, "continuous", CM, kv="paged", block_size=4, kv_capacity_tokens=24)
    assert validate(s, trace).ok
    tl = s.timeline
    pre = tl[tl["kind"] == "preempt"]
    assert pre["request_ids"].tolist() == ["1"]
    assert (pre["start_s"] == pre["end_s"]).all() and (pre["iteration"] == -1).all()
    assert pre["tokens"].tolist() == [8 + 5 - 1]  # its KV: the prompt and every generated token but the last
    prefills = tl[tl["kind"] == "prefill"]
    assert prefills["request_ids"].tolist() == ["0 1", "1"]
    assert prefills["tokens"].tolist() == [16, 8 + 5]
    # The recompute waits for free blocks: 4 for 13 tokens, with r0's 3 of 6 held until it finishes.
    assert prefills["start_s"].iloc[1] == s.requests["finish_s"].iloc[0]
    rq = s.requests.set_index("request_id")
    assert rq.loc[1, "preemptions"] == 1 and rq.loc[1, "recomputed_tokens"] == 13
    assert rq.loc[0, "preemptions"] == 0 and s.metrics["preemptions"] == 1
    decodes = tl[tl["kind"] == "decode"]["request_ids"].str.split().explode().value_counts()
    # Each yields 12 tokens: r0 1 at its prefill + 11 decodes; r1 1 + 4 decodes, 1 at its recompute + 6.
    assert decodes.loc["0"] == 11 and decodes.loc["1"] == 10


def test_a_request_preempted_before_its_first_token_counts_its_recomputed_chunks():
    """Issue 27 item 13: r1's 40-token prompt is chunked 9 tokens at a time beside r0's decodes on 12 blocks
    of 4; r0's growth preempts r1 ten times mid-prefill, before its first token.  Every admission after the
    first recomputes: 27 + 27 + 18 + 18 + 5 x 9 chunk tokens, then the whole 40-token prompt = 175 (it was 0)."""
    trace = make_trace([(8, 30, 0.0), (40, 4, 0.001)])
    s = simulate(trace, 1, 2, "continuous", CM, kv="paged", block_size=4, kv_capacity_tokens=48,
                 iteration="mixed", token_budget=10)
    rq = s.requests.set_index("request_id")
    assert rq.loc[1, "preemptions"] == 10 and rq.loc[1, "recomputed_tokens"] == 175
    assert rq.loc[0, "recomputed_tokens"] == 0
    report = validate(s, trace)
    assert report.ok, str(report)


def test_mixed_paged_preempts_and_every_request_still_yields_its_tokens():
    trace = synthetic_trace(60, seed=9, output_mean_tokens=40)
    longest = int((trace["input_tokens"] + trace["output_tokens"]).max())
    s = simulate(trace, 1, 16, "vllm", CM, kv_capacity_tokens=longest + 32)
    assert s.metrics["preemptions"] > 0
    report = validate(s, trace)
    assert report.ok, str(report)


def test_the_validator_catches_a_schedule_over_its_kv_blocks():
    trace = make_trace([(8, 12), (8, 12)])
    s = simulate(trace, 1, 2, "continuous", CM, kv="paged", block_size=4, kv_capacity_tokens=24)
    s.metrics["kv_capacity_tokens"] = [20]  # the same schedule, claimed on a smaller cache
    report = validate(s, trace)
    assert "kv-blocks" in report.rules_violated()


def test_the_validator_catches_a_recompute_that_skips_the_generated_tokens():
    trace = make_trace([(8, 12), (8, 12)])
    s = simulate(trace, 1, 2, "continuous", CM, kv="paged", block_size=4, kv_capacity_tokens=24)
    tl = s.timeline.copy()
    k = tl.index[(tl["kind"] == "prefill") & (tl["request_ids"] == "1")][-1]
    tl.loc[k, "prefill_tokens"] = "8"
    tl.loc[k, "tokens"] = 8
    s.timeline = tl
    assert "recompute" in validate(s, trace).rules_violated()


def test_prefix_caching_skips_cached_blocks_and_reports_the_hit_rate():
    trace = synthetic_trace(200, seed=3, output_mean_tokens=20)
    trace = trace.assign(input_tokens=trace["input_tokens"] + 256, prefix_id=[f"sys{i % 2}" for i in range(200)],
                         prefix_tokens=256)
    on = simulate(trace, 2, 16, "vllm", CM, kv_capacity_tokens=200_000)
    off = simulate(trace, 2, 16, "vllm", CM, kv_capacity_tokens=200_000, prefix_caching=False)
    assert validate(on, trace).ok and validate(off, trace).ok
    assert on.metrics["prefix_cache_hit_rate"] > 0.2
    assert on.requests["cached_tokens"].sum() > 0
    assert on.makespan_s < off.makespan_s
    assert on.makespan_s >= on.metrics["lower_bound_s"]


def test_without_prefix_columns_nothing_is_shared():
    s = simulate(TRACE, 2, 8, "vllm", CM, kv_capacity_tokens=10**6)
    assert s.requests["cached_tokens"].sum() == 0 and s.metrics["preemptions"] == 0


def test_the_vllm_policy_is_vllm_v1s_defaults():
    engine = POLICIES["vllm"].engine
    assert engine == {"iteration": "mixed", "token_budget": 2048, "max_partial_prefills": 1, "kv": "paged",
                      "block_size": 16, "prefix_caching": True, "cache_at_schedule": True,
                      "full_prompt_admission": True, "async_scheduling": True}
    s = simulate(TRACE, 2, 8, "vllm", CM, kv_capacity_tokens=10**6)
    chunks = s.timeline["prefill_tokens"].astype(str).str.split()
    partial = s.timeline.assign(n=chunks.str.len())
    assert (partial["n_requests"] + chunks.apply(lambda xs: sum(map(int, xs)))).max() <= 2048


def test_max_partial_prefills_bounds_the_prompts_part_way_through():
    trace = make_trace([(300, 4)] * 6)
    s = simulate(trace, 1, 8, "chunked-prefill", CM, token_budget=200, max_partial_prefills=1)
    assert validate(s, trace).ok
    # With one partial prefill at a time, no iteration starts a second prompt while one is unfinished.
    done: dict[str, int] = {}
    for ids, toks in zip(s.timeline["prefill_ids"], s.timeline["prefill_tokens"]):
        pieces = list(zip(str(ids).split(), map(int, str(toks).split())))
        for rid, t in pieces:
            done[rid] = done.get(rid, 0) + t
        assert sum(1 for rid, _ in pieces if done[rid] < 300) <= 1


@pytest.mark.parametrize("options, field", [
    ({"kv": "paged", "block_size": 0, "kv_capacity_tokens": 1000}, "block_size"),
    ({"kv": "paged", "kv_capacity_tokens": 8}, "kv_capacity_tokens"),
    ({"kv": "paged", "kv_capacity_tokens": 40}, "kv_capacity_tokens"),
    ({"iteration": "mixed", "token_budget": 7}, "token_budget"),
    ({"async_scheduling": True}, "async_scheduling"),
    ({"iteration": "mixed", "cache_at_schedule": True}, "cache_at_schedule"),
    ({"iteration": "mixed", "long_prefill_token_threshold": -1}, "long_prefill_token_threshold"),
    ({"token_budget": 512}, "token_budget"),
    ({"block_size": 16}, "block_size"),
    ({"prefix_caching": True}, "prefix_caching"),
    ({"kv": "fancy"}, "kv"),
    ({"iteration": "interleaved"}, "iteration"),
    ({"iteration": "mixed", "max_partial_prefills": 0}, "max_partial_prefills"),
])
def test_bad_engine_options_are_refused_naming_the_field(options, field):
    with pytest.raises(ConfigError) as info:
        simulate(make_trace([(30, 20), (10, 5)]), 1, 8, "continuous", CM, **options)
    assert info.value.field == field, str(info.value)


def test_a_request_that_can_never_fit_the_cache_is_named():
    with pytest.raises(ConfigError, match="'1'") as info:
        simulate(make_trace([(10, 5), (100, 50)]), 1, 8, "vllm", CM, kv_capacity_tokens=64)
    assert info.value.row == 1


def test_paged_kv_takes_the_presets_capacity_when_none_is_given():
    s = simulate(TRACE, 2, 8, "vllm", "llama-65b")
    from workbench.costmodel.linear import load_preset

    assert s.metrics["kv_capacity_tokens"] == [load_preset("llama-65b").kv_capacity_tokens] * 2


def test_engine_config_describes_itself():
    c = EngineConfig.from_options({"iteration": "mixed", "kv": "paged"}, 16)
    assert c.describe() == {"iteration": "mixed", "kv": "paged", "token_budget": 512, "max_partial_prefills": None,
                            "block_size": 16, "prefix_caching": False}
    assert EngineConfig.from_options({}, 16).classic


def test_front_end_overhead_delays_every_request_and_adds_to_its_latency():
    base = CM
    slow = LinearCostModel(**CM.coefficients(), name="slow", frontend_overhead_s=0.05)
    trace = make_trace([(20, 5, 1.0)])
    a = simulate(trace, 1, 4, "continuous", base)
    b = simulate(trace, 1, 4, "continuous", slow)
    assert b.requests["first_token_s"].iloc[0] == pytest.approx(a.requests["first_token_s"].iloc[0] + 0.05)
    assert np.isclose(b.requests["arrival_s"].iloc[0], 1.0)


# -- the prefix-caching bound: a block is skipped only after its first computation (issue 27 item 15) --

def test_a_prefix_no_other_request_shares_is_not_taken_as_cached_by_the_bound():
    """One request of 4,000 tokens with a 3,968-token prefix_id: nobody computed it before, so the bound is
    the uncached one (it skipped the prefix: 0.230 s under a 0.516 s makespan, gap 124%)."""
    trace = make_trace([(4000, 10)]).assign(prefix_id=["sys"], prefix_tokens=3968)
    on = simulate(trace, 1, 4, "vllm", "llama2-70b-h100-tp4")
    off = simulate(trace, 1, 4, "vllm", "llama2-70b-h100-tp4", prefix_caching=False)
    assert on.metrics["lower_bound_s"] == off.metrics["lower_bound_s"] <= on.makespan_s
    assert on.metrics["gap"] < 0.07


def test_private_hash_chains_are_paid_in_full_by_the_bound():
    """Mooncake-like: 200 prompts of 1k..8k tokens in 512-token hash blocks, only the first block shared.
    The bound skipped every hashed block (5.71 s under 33.69 s, gap 490%); each is computed at least once."""
    rng = np.random.default_rng(3)
    l = rng.integers(1000, 8000, 200)
    chains = [" ".join(["sys"] + [f"r{i}b{b}" for b in range(1, -(-int(l[i]) // 512))]) for i in range(200)]
    trace = synthetic_trace(200, seed=3, output_mean_tokens=20).assign(input_tokens=l, prefix_hashes=chains,
                                                                         prefix_block_tokens=512)
    s = simulate(trace, 2, 8, "vllm", "llama2-70b-h100-tp4", kv_capacity_tokens=200_000)
    assert s.requests["cached_tokens"].sum() > 0
    assert 0 < s.metrics["gap"] < 0.10


def test_prefix_bound_prompts_pay_each_shared_block_once():
    from workbench.engine.assemble import prefix_bound_prompts

    # r0 and r1 share blocks A, B (4 tokens each); r2 holds C alone; r3's whole prompt is the shared block A.
    keys = [["A", "B"], ["A", "B"], ["C"], ["A"]]
    l, o = np.array([10, 9, 6, 4]), np.array([1, 5, 1, 1])
    alone, total = prefix_bound_prompts(l, o, keys, 4)
    assert alone.tolist() == [2, 1, 6, 1]  # less every block another request holds; one token at least
    # A and B charged to r1 (the most output tokens), A at 3: r3 (nothing left of its own) may compute it.
    assert total.tolist() == [2, 1 + 3 + 4, 6, 1]
    assert (total <= l).all() and total.sum() >= alone.sum()
