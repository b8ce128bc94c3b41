"""The replay of paged schedules (workbench.schedule.replay) against the prefix cache the trace allows.

The validator re-derives from the trace's prefix columns which prompt blocks can be shared, so a cached
part must be blocks already computed on that client, and it counts every block the admitted requests
reference (a shared cached block once) against the capacity, even after the request that computed it
has finished.
"""

from __future__ import annotations

import pytest
from conftest import make_trace

from workbench.costmodel.linear import LinearCostModel
from workbench.engine import simulate
from workbench.schedule.validator import validate

CM = LinearCostModel(a_p=0.01, b_p=1e-4, a_d=0.01, b_d=1e-4, c_d=1e-6, name="test")


def _shared(rows, prefix_tokens: int):
    """``rows`` of (input, output, arrival) all sharing their first ``prefix_tokens`` under one prefix_id."""
    return make_trace(rows).assign(prefix_id="sys", prefix_tokens=prefix_tokens)


def _hit_schedule(prefix_tokens: int, block_size: int, input_tokens: int = 1000):
    """r1 arrives after r0 finished and hits r0's cached prefix blocks."""
    trace = _shared([(input_tokens, 2, 0.0), (input_tokens, 2, 5.0)], prefix_tokens)
    s = simulate(trace, 1, 4, "continuous", CM, kv="paged", block_size=block_size, prefix_caching=True,
                 kv_capacity_tokens=100_000)
    return trace, s


def test_cached_tokens_are_re_derived_from_the_trace():
    trace, s = _hit_schedule(512, 16)
    assert s.requests["cached_tokens"].tolist() == [0, 512] and validate(s, trace).ok
    # The same schedule against the trace without its prefix columns: nothing could be cached.
    bare = trace.drop(columns=["prefix_id", "prefix_tokens"])
    report = validate(s, bare)
    assert "recompute" in report.rules_violated(), str(report)
    assert "not in the cache" in str(report)


def test_a_hit_past_the_shared_hashed_prefix_is_refused():
    # 600 tokens shared under a prefix_id: six blocks of 100 hit.  The same requests as hash chains that
    # share only their first 512-token block can share five blocks of 100 (the sixth straddles 512).
    trace, s = _hit_schedule(600, 100)
    assert s.requests["cached_tokens"].tolist() == [0, 600] and validate(s, trace).ok
    hashed = trace.drop(columns=["prefix_id", "prefix_tokens"]).assign(
        prefix_hashes=["1 2", "1 3"], prefix_block_tokens=512)
    report = validate(s, hashed)
    assert "recompute" in report.rules_violated(), str(report)


def test_a_cached_prefix_counts_against_capacity_after_its_first_holder_finishes():
    # r0 computes the 64-token prefix (4 blocks of 16) and finishes long before r1 arrives; r1
    # hits those 4 blocks and grows to 104 + 9 tokens: 8 blocks in use, 4 of them the cached prefix.
    trace = _shared([(68, 2, 0.0), (104, 10, 5.0)], 64)
    s = simulate(trace, 1, 4, "continuous", CM, kv="paged", block_size=16, prefix_caching=True,
                 kv_capacity_tokens=100_000)
    assert s.requests["cached_tokens"].tolist() == [0, 64]
    s.metrics["kv_capacity_tokens"] = [8 * 16]
    assert validate(s, trace).ok, str(validate(s, trace))
    s.metrics["kv_capacity_tokens"] = [7 * 16]
    report = validate(s, trace)
    assert "kv-blocks" in report.rules_violated(), str(report)


def test_shared_blocks_held_by_two_requests_count_once():
    # r1 arrives while r0 decodes and hits its 4 prefix blocks; at r0's last decode r0 holds 105 tokens
    # (7 blocks) and r1 102 (7 blocks, 4 of them r0's): 10 distinct blocks, not 14.
    trace = _shared([(96, 10, 0.0), (96, 10, 0.05)], 64)
    s = simulate(trace, 1, 4, "continuous", CM, kv="paged", block_size=16, prefix_caching=True,
                 kv_capacity_tokens=100_000)
    assert s.requests["cached_tokens"].tolist() == [0, 64]
    s.metrics["kv_capacity_tokens"] = [10 * 16]
    assert validate(s, trace).ok, str(validate(s, trace))
    s.metrics["kv_capacity_tokens"] = [9 * 16]
    assert "kv-blocks" in validate(s, trace).rules_violated()


# -- the engine shares only what the trace shares (issue 27 item 3, engine side: workbench.engine.kv.prefix_block_keys) --

def test_engine_shares_only_blocks_wholly_inside_the_shared_hash_block():
    trace = make_trace([(1000, 2, 0.0), (1000, 2, 5.0)]).assign(prefix_hashes=["1 2", "1 3"],
                                                                 prefix_block_tokens=512)
    s = simulate(trace, 1, 4, "continuous", CM, kv="paged", block_size=100, prefix_caching=True,
                 kv_capacity_tokens=100_000)
    assert validate(s, trace).ok
    assert s.requests["cached_tokens"].tolist() == [0, 500]  # not 600: block 5 (500..600) straddles 512


def test_engine_never_shares_a_recomputed_requests_generated_tokens():
    # r1 (36 prompt tokens, hash block a0 of 64) is preempted and recomputed over 36 + 5 tokens: its block
    # 4 (tokens 32..40) holds 4 generated tokens, private to it.  r2 (42 tokens, a0) may hit 4 blocks only.
    trace = make_trace([(36, 20, 0.0), (36, 20, 0.001), (42, 2, 10.0)]).assign(
        prefix_hashes=["zz", "a0", "a0"], prefix_block_tokens=64)
    s = simulate(trace, 1, 4, "continuous", CM, kv="paged", block_size=8, prefix_caching=True,
                 kv_capacity_tokens=80)
    assert s.requests["preemptions"].tolist()[1] == 1
    assert validate(s, trace).ok
    assert s.requests["cached_tokens"].tolist()[2] == 32


def _preempting_schedule():
    trace = make_trace([(8, 12), (8, 12)])
    return trace, simulate(trace, 1, 2, "continuous", CM, kv="paged", block_size=4, kv_capacity_tokens=24)


@pytest.mark.parametrize("column", ["preemptions", "recomputed_tokens"])
def test_a_paged_schedule_without_its_request_columns_is_refused(column):
    trace, s = _preempting_schedule()
    s.requests = s.requests.drop(columns=[column])
    report = validate(s, trace)
    assert "schema" in report.rules_violated() and column in str(report), str(report)


def test_preemption_counts_are_checked_against_the_preempt_rows():
    trace, s = _preempting_schedule()
    assert s.requests["preemptions"].tolist() == [0, 1] and validate(s, trace).ok
    s.requests["preemptions"] = [0, 0]
    assert "paged-rows" in validate(s, trace).rules_violated()


def test_recomputed_tokens_are_checked_against_the_pieces_after_a_preemption():
    # Issue 27 item 13: r1 recomputes 8 + 5 tokens after its preemption; a count of 0 is refused.
    trace, s = _preempting_schedule()
    assert s.requests["recomputed_tokens"].tolist() == [0, 13] and validate(s, trace).ok
    s.requests["recomputed_tokens"] = [0, 0]
    report = validate(s, trace)
    assert "recompute" in report.rules_violated() and "recomputed_tokens" in str(report), str(report)
