"""vLLM 0.19's KV and scheduling semantics as engine options, each against a small case computed by hand.

Tail-first freeing (the eviction order), blocks cached at schedule time and generated blocks hashed, the
full-prompt admission gate (``scheduler_reserve_full_isl``), async scheduling, ``long_prefill_token_threshold``
and a token budget equal to the batch size.  All on in the ``vllm`` policy; off in every other one.
"""

from __future__ import annotations

import pytest

from conftest import make_trace
from workbench.costmodel.linear import LinearCostModel
from workbench.engine import build_engine, simulate
from workbench.engine.kv import PagedKV
from workbench.schedule.validator import validate

#: Every iteration takes exactly 1 s, whatever it holds: times are iteration counts.
ONE_SECOND = LinearCostModel(a_p=1.0, b_p=0.0, a_d=1.0, b_d=0.0, c_d=0.0, name="one-second")
#: Everything off, so each test switches on only the semantics it is about.
PLAIN = {"cache_at_schedule": False, "full_prompt_admission": False, "async_scheduling": False}


def _times(s, column: str) -> list[float]:
    return s.requests.sort_values("request_id")[column].tolist()


def test_the_ten_block_example_keeps_the_prefix_vllm_keeps():
    """10 blocks.  A holds 4 cached prompt blocks and 4 output blocks, and finishes; B then takes 6 private
    blocks: the 2 never used and 4 from the free queue's head.  vLLM frees A tail first, so the head is A's
    output and A's prompt prefix survives (4 of 4); queued prefix first, it would be evicted (0 of 4)."""
    kv = PagedKV(capacity_tokens=160, block_size=16, caching=True)
    prefix = [("p", "sys", b) for b in range(4)]
    kv.admit(0, prefix, 0, 4)
    kv.register(0, prefix, 4)
    kv.grow(0, 4)
    kv.release(0, 8)
    kv.admit(1, [], 0, 6)
    assert kv.lookup(prefix) == 4
    assert kv.free_blocks == 4


def test_tail_first_freeing_in_the_engine_lets_a_later_request_hit_the_prefix():
    """The same case through the engine (one slot, 10 blocks): A (64-token prefix + 16 own, 48 out) then
    B (96 private tokens) evict; C, with A's prefix, finds its 4 blocks."""
    trace = make_trace([(80, 49, 0.0), (96, 1, 0.0), (80, 2, 0.0)]).assign(
        prefix_id=["sys", None, "sys"], prefix_tokens=[64, 0, 64])
    s = simulate(trace, 1, 1, "vllm", ONE_SECOND, kv_capacity_tokens=160, **PLAIN)
    assert validate(s, trace).ok
    assert _times(s, "cached_tokens") == [0, 0, 64]


def test_blocks_are_cached_when_scheduled_so_a_burst_shares_its_prefix():
    """Two requests at once sharing a 1,024-token prefix, one iteration: cached as scheduled, the second hits
    all 1,024 tokens (vLLM); cached at the iteration's end, it hits none."""
    trace = make_trace([(1124, 4, 0.0), (1124, 4, 0.0)]).assign(prefix_id="sys", prefix_tokens=1024)
    at_schedule = simulate(trace, 1, 4, "vllm", ONE_SECOND, kv_capacity_tokens=8192,
                           **{**PLAIN, "cache_at_schedule": True})
    at_end = simulate(trace, 1, 4, "vllm", ONE_SECOND, kv_capacity_tokens=8192, **PLAIN)
    assert _times(at_schedule, "cached_tokens") == [0, 1024]
    assert _times(at_end, "cached_tokens") == [0, 0]
    assert validate(at_schedule, trace).ok
    assert at_schedule.timeline["prefill_tokens"].iloc[0] == "1124 100"


def test_generated_blocks_are_hashed_when_vllm_caches_them():
    """64 prompt tokens and 33 generated: 96 tokens held at the last decode, 6 full blocks.  With vLLM's
    semantics all 6 stay cached after the request ends; without, only the 4 prompt blocks."""
    trace = make_trace([(64, 33, 0.0)]).assign(prefix_id="sys", prefix_tokens=64)
    for on, cached in ((True, 6), (False, 4)):
        engine = build_engine(trace, 1, 4, "vllm", ONE_SECOND, kv_capacity_tokens=1024,
                              **{**PLAIN, "cache_at_schedule": on})
        engine.run()
        assert engine._replicas[0].paged.cached_blocks == cached


def test_the_full_prompt_gate_admits_only_what_fits_whole():
    """20 blocks, budget 256.  A: 160 prompt tokens (10 blocks), 20 out.  B: 200 (13 blocks).  B's first
    chunk (96 tokens, 6 blocks) fits beside A, its whole prompt does not: admitted on its first chunk B is
    preempted at the next iteration (24 blocks > 20); behind the gate it waits until A has finished."""
    trace = make_trace([(160, 20, 0.0), (200, 2, 0.0)])
    options = dict(kv_capacity_tokens=320, token_budget=256, prefix_caching=False)
    first_chunk = simulate(trace, 1, 4, "vllm", ONE_SECOND, **options, **PLAIN)
    gated = simulate(trace, 1, 4, "vllm", ONE_SECOND, **options, **{**PLAIN, "full_prompt_admission": True})
    assert first_chunk.metrics["preemptions"] >= 1
    assert gated.metrics["preemptions"] == 0
    finish_a = _times(gated, "finish_s")[0]
    assert _times(gated, "prefill_start_s")[1] == pytest.approx(finish_a)
    assert validate(gated, trace).ok and validate(first_chunk, trace).ok


def test_async_scheduling_admits_a_new_request_one_iteration_later():
    """1 s iterations.  A (at 0) prefills in [0, 1].  B queues at 0.5, while [1, 2] is being scheduled in
    vLLM's async engine, so it joins [2, 3]: first token at 3, not 2."""
    trace = make_trace([(16, 5, 0.0), (16, 2, 0.5)])
    sync = simulate(trace, 1, 4, "vllm", ONE_SECOND, kv_capacity_tokens=1024, **PLAIN)
    lazy = simulate(trace, 1, 4, "vllm", ONE_SECOND, kv_capacity_tokens=1024,
                    **{**PLAIN, "async_scheduling": True})
    assert _times(sync, "first_token_s") == [1.0, 2.0]
    assert _times(lazy, "first_token_s") == [1.0, 3.0]
    assert validate(lazy, trace).ok


def test_async_scheduling_frees_a_finished_requests_slot_one_iteration_later():
    """Two slots, all at 0.  A (2 tokens out) and C (10) fill them; A ends at 2.  Its slot is usable from the
    iteration after next: B prefills in [3, 4] (first token 4), not [2, 3].  When nothing else would run, the
    outputs are in before vLLM schedules again: with C gone too, B would start at once."""
    trace = make_trace([(16, 2, 0.0), (16, 10, 0.0), (16, 3, 0.0)])
    sync = simulate(trace, 1, 2, "vllm", ONE_SECOND, kv_capacity_tokens=1024, **PLAIN)
    lazy = simulate(trace, 1, 2, "vllm", ONE_SECOND, kv_capacity_tokens=1024,
                    **{**PLAIN, "async_scheduling": True})
    assert _times(sync, "first_token_s")[2] == 3.0
    assert _times(lazy, "first_token_s")[2] == 4.0
    alone = make_trace([(16, 2, 0.0), (16, 3, 0.0)])
    one_slot = simulate(alone, 1, 1, "vllm", ONE_SECOND, kv_capacity_tokens=1024,
                        **{**PLAIN, "async_scheduling": True})
    assert _times(one_slot, "first_token_s") == [1.0, 3.0]  # A ends at 2; B prefills in [2, 3]
    assert validate(lazy, trace).ok


def test_long_prefill_token_threshold_caps_each_prompts_chunk_and_lets_several_be_part_way():
    """Threshold 256, budget 2048: a 1,000-token prompt takes 256 + 256 + 256 + 232 (four iterations); two
    such prompts are both part-way in the first (V1 reads no max_num_partial_prefills)."""
    one = simulate(make_trace([(1000, 2, 0.0)]), 1, 4, "vllm", ONE_SECOND, kv_capacity_tokens=4096,
                   long_prefill_token_threshold=256, **PLAIN)
    assert one.timeline["prefill_tokens"].tolist()[:4] == ["256", "256", "256", "232"]
    two = simulate(make_trace([(1000, 2, 0.0), (1000, 2, 0.0)]), 1, 4, "vllm", ONE_SECOND,
                   kv_capacity_tokens=4096, long_prefill_token_threshold=256, max_partial_prefills=4, **PLAIN)
    assert two.timeline["prefill_tokens"].iloc[0] == "256 256"
    assert validate(two).ok


def test_a_token_budget_equal_to_the_batch_size_serves_every_request():
    trace = make_trace([(40, 6, 0.0), (30, 4, 0.0), (20, 8, 0.1), (50, 3, 0.2)])
    s = simulate(trace, 1, 4, "vllm", ONE_SECOND, kv_capacity_tokens=1024, token_budget=4)
    assert validate(s, trace).ok
    assert s.requests["finish_s"].notna().all()


def test_the_vllm_dp_dispatcher_joins_the_lowest_four_waiting_plus_running():
    """Two replicas.  A (long) at 0 goes to 0 (a tie: the lowest index), B (short) to 1.  At 5 B is done: C
    finds 0 running one (score 1) and 1 empty (0), so 1; D, at the same instant, finds C waiting at 1
    (score 4) against 1, so 0.  Round robin would send them 0, 1, 0, 1."""
    trace = make_trace([(16, 50, 0.0), (16, 2, 0.0), (16, 2, 5.0), (16, 2, 5.0)])
    dp = simulate(trace, 2, 4, "vllm", ONE_SECOND, kv_capacity_tokens=1024, dispatch="vllm-dp", **PLAIN)
    rr = simulate(trace, 2, 4, "vllm", ONE_SECOND, kv_capacity_tokens=1024, **PLAIN)
    assert _times(dp, "client") == [0, 1, 1, 0]
    assert _times(rr, "client") == [0, 1, 0, 1]
    assert validate(dp, trace).ok


#: 1 s per iteration plus 10 ms per prompt token: a long chunk makes a long iteration.
CHUNKY = LinearCostModel(a_p=1.0, b_p=0.01, a_d=1.0, b_d=0.0, c_d=0.0, name="chunky")


def test_replicas_in_lockstep_end_each_iteration_with_the_slowest():
    """A (100 prompt tokens: 2 s) on replica 0 and B (16: 1.16 s) on replica 1, both at 0: in lockstep B's
    prefill ends with A's at 2, its two decodes at 3 and 4; alone it would end at 3.16."""
    trace = make_trace([(100, 3, 0.0), (16, 3, 0.0)])
    alone = simulate(trace, 2, 4, "vllm", CHUNKY, kv_capacity_tokens=1024, **PLAIN)
    together = simulate(trace, 2, 4, "vllm", CHUNKY, kv_capacity_tokens=1024, dp_lockstep=True, **PLAIN)
    assert _times(alone, "first_token_s") == pytest.approx([2.0, 1.16])
    assert _times(alone, "finish_s") == pytest.approx([4.0, 3.16])
    assert _times(together, "first_token_s") == pytest.approx([2.0, 2.0])
    assert _times(together, "finish_s") == pytest.approx([4.0, 4.0])
    assert together.metrics["dp_lockstep"] is True
    assert validate(together, trace).ok


def test_an_idle_replica_in_lockstep_joins_at_the_groups_next_boundary():
    """A on replica 0 prefills in [0, 2].  B reaches idle replica 1 at 0.5; it joins the group's next step,
    [2, 3.16] (its prefill of 1.16 s is the slowest there, so A's decode waits for it too)."""
    trace = make_trace([(100, 4, 0.0), (16, 2, 0.5)])
    together = simulate(trace, 2, 4, "vllm", CHUNKY, kv_capacity_tokens=1024, dp_lockstep=True, **PLAIN)
    assert _times(together, "prefill_start_s") == pytest.approx([0.0, 2.0])
    assert _times(together, "first_token_s") == pytest.approx([2.0, 3.16])
    assert _times(together, "finish_s") == pytest.approx([5.16, 4.16])
    assert validate(together, trace).ok


def test_an_expert_layer_is_priced_from_the_active_experts_of_the_gathered_tokens(tmp_path):
    """moe.csv at 1 token (8 experts: 10 us) and 2 tokens (8: 12 us, 16: 20 us); 128 experts, top 8.  Two
    tokens on one rank activate 128 (1 - (120/128)^2) = 15.5 experts: 12 + 7.5 / 8 x 8 = 19.5 us.  Spread
    over two ranks, a rank computes 1 token's pairs on 64 (1 - (120/128)^2) = 7.75 experts: 10 us."""
    from types import SimpleNamespace

    from workbench.costmodel.calibrate import moe_layer_s

    path = tmp_path / "moe.csv"
    path.write_text("tokens,activated_experts,time_us\n1,8,10\n2,8,12\n2,16,20\n")
    shape = SimpleNamespace(num_experts=128, num_experts_per_tok=8)
    assert moe_layer_s(path, [2], shape, 1)[0] == pytest.approx(19.5e-6)
    assert moe_layer_s(path, [2], shape, 2)[0] == pytest.approx(10e-6)


def test_max_partial_prefills_binds_with_a_chunk_cap_and_is_refused_where_it_never_could():
    """Issue 27 item 8: --max-partial-prefills changed no schedule (0 of 144 configurations).  Without a
    per-request chunk cap a prompt part-way through takes the rest of the budget, so at most one is part-way
    and a limit above 1 can never bind: refused.  With long_prefill_token_threshold several prompts are
    part-way at once and the limit binds."""
    from workbench.errors import ConfigError
    from workbench.workload.trace import synthetic_trace

    trace = synthetic_trace(40, seed=3, input_mean_tokens=300, output_mean_tokens=30)
    with pytest.raises(ConfigError, match="can never bind without long_prefill_token_threshold"):
        simulate(trace, 2, 8, "chunked-prefill", "llama-65b", token_budget=256, max_partial_prefills=2)
    one = simulate(trace, 2, 8, "chunked-prefill", "llama-65b", token_budget=256, max_partial_prefills=1)
    free = simulate(trace, 2, 8, "chunked-prefill", "llama-65b", token_budget=256)
    assert one.makespan_s == free.makespan_s  # 1 is what the engine does anyway without a cap
    capped = {p: simulate(trace, 2, 8, "chunked-prefill", "llama-65b", token_budget=256,
                          long_prefill_token_threshold=32, max_partial_prefills=p) for p in (1, 2, None)}
    assert len({s.makespan_s for s in capped.values()}) == 3  # each limit gives its own schedule


def test_cli_takes_the_vllm_semantics_options(tmp_path, capsys):
    from workbench.cli import main

    out = tmp_path / "run"
    assert main(["simulate", "--trace", "gsm8k-test", "--clients", "2", "--policy", "chunked-prefill",
                 "--long-prefill-token-threshold", "64", "--max-partial-prefills", "2", "--kv-mode", "paged",
                 "--async-scheduling", "--full-prompt-admission", "--out", str(out)]) == 0
    import json

    engine = json.loads((out / "metrics.json").read_text())["params"]
    assert engine["long_prefill_token_threshold"] == 64 and engine["max_partial_prefills"] == 2
    assert engine["async_scheduling"] is True and engine["full_prompt_admission"] is True
    assert main(["simulate", "--trace", "gsm8k-test", "--policy", "chunked-prefill", "--max-partial-prefills", "2",
                 "--out", str(tmp_path / "no")]) == 2
    assert "can never bind" in capsys.readouterr().err and not (tmp_path / "no").exists()


def test_a_dead_run_taken_in_part_stays_cached_content():
    """A finished request's own blocks enter the free queue as one run of dead cached blocks.  A take that
    evicts part of it leaves the rest counted as cached content (its rest was once queued as anonymous blocks,
    so the pool reported blocks cached after they had been evicted)."""
    kv = PagedKV(capacity_tokens=4 * 16, block_size=16, caching=True)
    kv.held[0] = []
    kv._take(4)
    kv.register_private(0, 0, [], 4)
    kv.release(0, 4, finished=True)
    assert (kv.cached_blocks, kv.free_blocks) == (4, 4)
    kv._take(1)
    assert (kv.cached_blocks, kv.free_blocks) == (3, 3)
    kv._take(3)
    assert (kv.cached_blocks, kv.free_blocks, kv.anon_queued) == (0, 0, 0)
