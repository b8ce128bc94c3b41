"""Closed-form runs of decode-only iterations in mixed mode (docs/engine.md "Speed"): the same schedule, byte for
byte, as stepping every iteration (``former.runs = False``), on traces built to hit every edge of them: ties
between replicas at equal times (identical requests), arrivals that cut runs, memory that runs out mid-run
(preemptions), prefix caching, async scheduling and the vLLM options off."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import pin_engine  # noqa: E402
from workbench.engine import build_engine
from workbench.schedule.validator import validate


def _digest(schedule) -> str:
    return pin_engine.digest(schedule)  # the bytes the pins hash: timeline, requests and metrics


def _both(trace, clients, batch, policy="vllm", **options):
    out = []
    for runs in (True, False):
        engine = build_engine(trace, clients, batch, policy, "llama2-70b-h100-tp4", **options)
        engine.former.runs = runs and engine.former.runs
        engine.run()
        out.append(engine)
    return out


def _trace(n, seed, same=False, rate=None, prefix=False):
    rng = np.random.default_rng(seed)
    l = np.full(n, 100) if same else rng.integers(50, 300, n)
    o = np.full(n, 60) if same else rng.integers(2, 200, n)
    trace = pd.DataFrame({"request_id": np.arange(n), "input_tokens": l, "output_tokens": o})
    if rate is not None:
        gaps = np.full(n, 1.0 / rate) if same else rng.exponential(1.0 / rate, n)
        trace["arrival_s"] = np.cumsum(gaps)
    if prefix:
        trace = trace.assign(prefix_id=[f"p{i % 3}" for i in range(n)], prefix_tokens=48)
    return trace


CASES = {
    "batch": (_trace(400, 1), 4, 16, {}),
    "identical-batch": (_trace(200, 2, same=True), 4, 8, {}),
    "identical-online": (_trace(200, 3, same=True, rate=40.0), 4, 8, {}),
    "online": (_trace(400, 4, rate=30.0), 4, 16, {}),
    "preempting": (_trace(400, 5), 4, 16, {"kv_capacity_tokens": 2000}),
    "preempting-online": (_trace(400, 6, rate=60.0), 4, 16, {"kv_capacity_tokens": 1600}),
    "prefix": (_trace(300, 7, rate=50.0, prefix=True), 4, 16, {"kv_capacity_tokens": 3000}),
    "plain-vllm": (_trace(300, 8, rate=50.0), 4, 16, {"async_scheduling": False, "cache_at_schedule": False,
                                                         "kv_capacity_tokens": 2400}),
    "identical-preempting": (_trace(120, 9, same=True), 2, 8, {"kv_capacity_tokens": 900}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_runs_give_the_stepped_schedule_byte_for_byte(case):
    trace, clients, batch, options = CASES[case]
    fast, stepped = _both(trace, clients, batch, **options)
    assert sum(k > 1 for k in fast.recorder.k) > 0  # runs were taken
    assert all(k == 1 for k in stepped.recorder.k)
    a, b = fast.schedule(), stepped.schedule()
    assert _digest(a) == _digest(b)
    assert validate(a, trace).ok


def test_runs_in_the_chunked_prefill_policy_with_reserved_kv():
    trace = _trace(300, 10, rate=40.0)
    fast, stepped = _both(trace, 4, 16, "chunked-prefill")
    assert sum(k > 1 for k in fast.recorder.k) > 0
    assert _digest(fast.schedule()) == _digest(stepped.schedule())


def _order(rows, marks):
    from workbench.engine.assemble import previous_iteration, stepped_order

    rows = {key: np.array(value) for key, value in rows.items()}
    m = np.empty(len(marks), dtype=object)
    m[:] = marks
    previous = previous_iteration(rows["client"], rows["kind"])
    return stepped_order(rows, m, lambda row: int(previous[row])).tolist()


def test_equal_times_across_replicas_follow_what_pushed_each_boundary():
    """Client 1's boundary at t = 2 was pushed at t = 0.5, client 0's at t = 1: a stepping loop takes client 1's
    first, whichever order the rows were recorded in."""
    rows = {"start_s": [0.0, 1.0, 2.0, 0.5, 2.0], "client": [0, 0, 0, 1, 1], "kind": [1, 1, 1, 1, 1]}
    marks = [(0.0, 0, 1), -1, -1, (0.5, 0, 2), -1]
    assert _order(rows, marks) == [0, 3, 1, 4, 2]


def test_ties_all_the_way_back_are_broken_by_the_arrivals_that_woke_the_replicas():
    """Two replicas with the same times throughout: the one woken by the earlier push comes first at every
    instant (the recursion walks back to t = 0), even when its rows were recorded second."""
    rows = {"start_s": [0.0, 1.0, 2.0, 0.0, 1.0, 2.0], "client": [1, 1, 1, 0, 0, 0], "kind": [1] * 6}
    marks = [(0.0, 0, 2), -1, -1, (0.0, 0, 1), -1, -1]
    assert _order(rows, marks) == [3, 0, 4, 1, 5, 2]


def test_a_preemption_row_stays_with_its_iteration():
    """A preempt row (kind 3) and the iteration formed at the same boundary move together."""
    rows = {"start_s": [0.0, 1.0, 1.0, 0.0, 1.0], "client": [0, 0, 0, 1, 1], "kind": [1, 3, 1, 1, 1]}
    marks = [(0.0, 0, 2), -1, -1, (0.0, 0, 1), -1]
    assert _order(rows, marks) == [3, 0, 4, 1, 2]


@pytest.mark.parametrize("case", ["identical-batch", "identical-preempting", "preempting-online"])
def test_run_rows_look_up_what_the_row_arrays_hold(case):
    """The stepped timeline's ties read each row's mark and previous iteration from the segments (RunRows), not
    from arrays over every row: both give the same answer for every row, preemptions and runs included."""
    from workbench.engine.assemble import RunRows, previous_iteration

    trace, clients, batch, options = CASES[case]
    engine, _ = _both(trace, clients, batch, **options)
    segments = engine.recorder.arrays()
    segments["run_ends"], segments["marks"] = engine.recorder.run_ends, engine.recorder.marks
    k = segments["k"]
    assert (k > 1).any() and (segments["kind"] == 3).any() == (case != "identical-batch")
    seg = np.repeat(np.arange(len(k)), k)
    r = np.arange(len(seg)) - np.repeat(np.cumsum(k) - k, k)
    looked_up = RunRows(segments, seg, r)
    marks = np.empty(len(k), dtype=object)
    marks[:] = segments["marks"]
    marks = marks[seg]
    marks[r > 0] = -1
    previous = previous_iteration(segments["client"][seg], segments["kind"][seg])
    assert [looked_up[row] for row in range(len(seg))] == list(marks)
    assert [looked_up.previous(row) for row in range(len(seg))] == previous.tolist()


def test_members_recorded_as_ranks_join_as_text():
    """Members recorded as references to id ranks (Recorder.id_by_rank: ``offset << 32 | count`` into the flat
    array of ranks) become the text a Python join gives, a list named twice included; recorded text is kept; an
    empty member list is the empty string."""
    from array import array

    from workbench.engine.assemble import member_text

    names = ["3", "10", "200", "x"]
    flat = array("q", [0, 1, 2, 0, 1, 2, 3])
    ids = [0 << 32 | 2, "10 3", 2 << 32 | 0, 2 << 32 | 1, "", 3 << 32 | 4, 0 << 32 | 2]
    want = ["3 10", "10 3", "", "200", "", "3 10 200 x", "3 10"]
    got = member_text(ids, names, flat)
    assert list(got) == want
    assert got.dtype == pd.array(want, dtype="str").dtype


def test_vllm_timeline_is_listed_on_first_read(tmp_path):
    """The metrics come from the numbers alone; the texts are listed when the timeline is first read (or
    written), and it is then the stepped one (the digest covers the written bytes)."""
    trace, clients, batch, options = CASES["online"]
    fast, stepped = _both(trace, clients, batch, **options)
    lazy = fast.schedule()
    assert lazy._timeline is None  # nothing listed yet
    assert lazy.metrics == stepped.schedule().metrics
    assert _digest(lazy) == _digest(stepped.schedule())
    fast_again = _both(trace, clients, batch, **options)[0].schedule()
    fast_again.write(tmp_path / "lazy", format="parquet")  # written before anything read the timeline
    stepped.schedule().write(tmp_path / "stepped", format="parquet")
    for name in ("timeline.parquet", "requests.parquet"):
        assert (tmp_path / "lazy" / name).read_bytes() == (tmp_path / "stepped" / name).read_bytes()
    assert lazy.timeline["request_ids"].str.len().gt(0).any()
