"""The run members of the paper's engine (workbench.schedule.members): the ids every run lists.

The paper-mode engine keeps two run positions per request and lists ``request_ids`` only when they are
written; the general engine path (paged KV) builds each run's ids in its loop.  With KV that never runs
out the two paths serve the same schedule, so their ids are an independent check of each other.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.costmodel.linear import load_preset
from workbench.engine.core import simulate
from workbench.schedule.members import RunMembers
from workbench.workload.trace import load_trace

CM = load_preset("llama-65b")


def _trace(seed: int, ids: str) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 90
    frame = pd.DataFrame({"request_id": np.arange(n), "input_tokens": rng.integers(5, 300, n),
                          "output_tokens": rng.integers(1, 60, n),
                          "arrival_s": np.round(np.sort(rng.uniform(0, 8, n)), 3)})
    if ids == "shuffled":
        frame["request_id"] = rng.permutation(n) * 7 + 3
    elif ids == "text":
        frame["request_id"] = [f"req-{k:03d}" for k in rng.permutation(n)]
    return load_trace(frame)


@pytest.mark.parametrize("policy", ["paper-baseline", "hybrid", "continuous", "static", "least-work", "online"])
@pytest.mark.parametrize("ids", ["ordered", "shuffled", "text"])
def test_listed_ids_are_the_general_engines(policy, ids):
    trace = _trace(5, ids)
    paper = simulate(trace, 3, 6, policy, CM)
    general = simulate(trace, 3, 6, policy, CM, kv="paged", kv_capacity_tokens=10**9)
    assert general.metrics["preemptions"] == 0
    a, b = paper.timeline, general.timeline
    assert len(a) == len(b) and (a["kind"].to_numpy() == b["kind"].to_numpy()).all()
    rows = {str(r): k for k, r in enumerate(trace["request_id"])}
    for x, y in zip(a["request_ids"], b["request_ids"]):
        listed = x.split()
        assert sorted(listed) == sorted(y.split())
        # The paper's engine lists ids in trace order.
        assert [rows[i] for i in listed] == sorted(rows[i] for i in listed)


def test_any_slice_lists_what_the_whole_lists():
    schedule = simulate(_trace(11, "shuffled"), 4, 5, "hybrid", CM)
    members = schedule._run_ids
    assert isinstance(members, RunMembers)
    whole = members.text()
    rng = np.random.default_rng(0)
    for lo, hi in [(0, 1), (len(whole) - 1, len(whole)), (0, len(whole)), (5, 5), (7, 3)] + [
            tuple(sorted(rng.integers(0, len(whole) + 1, 2))) for _ in range(40)]:
        assert members.text(lo, hi).tolist() == whole[lo:hi].tolist()


def test_every_request_is_listed_in_its_prefill_and_each_decode_until_it_finishes():
    trace = _trace(3, "ordered")
    schedule = simulate(trace, 2, 4, "paper-baseline", CM)
    tl = schedule.timeline
    decodes = {rid: 0 for rid in trace["request_id"].astype(str)}
    prefills = dict.fromkeys(decodes, 0)
    for kind, ids in zip(tl["kind"], tl["request_ids"]):
        for rid in ids.split():
            (prefills if kind == "prefill" else decodes)[rid] += 1
    o = dict(zip(trace["request_id"].astype(str), trace["output_tokens"]))
    assert all(prefills[r] == 1 for r in prefills)
    assert all(decodes[r] == o[r] - 1 for r in decodes)  # the first token comes from the prefill


def test_inconsistent_members_are_refused():
    with pytest.raises(ValueError, match="one entry per request"):
        RunMembers(["a", "b"], np.array([0]), np.array([1]), np.array([False, True]))
    with pytest.raises(ValueError, match="finishes before"):
        RunMembers(["a"], np.array([2]), np.array([1]), np.array([False, True, True]))


def test_a_schedule_of_no_decodes_lists_its_prefills():
    trace = load_trace(pd.DataFrame({"request_id": ["x", "y", "z"], "input_tokens": [3, 4, 5],
                                     "output_tokens": [1, 1, 1], "arrival_s": 0.0}))
    schedule = simulate(trace, 1, 2, "continuous", CM)
    assert schedule.timeline["request_ids"].tolist() == ["x y", "z"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_writing_lists_the_ids_chunk_by_chunk_and_the_same_either_way(tmp_path, fmt, monkeypatch):
    from workbench.schedule import schema

    trace = _trace(8, "shuffled")
    lazy = simulate(trace, 3, 5, "hybrid", CM)
    monkeypatch.setattr(schema._timeline_parts, "__defaults__", (50,))  # many chunks
    lazy.write(tmp_path / "lazy", format=fmt)
    assert "request_ids" not in lazy.runs_without_ids().columns  # never held whole for writing
    held = simulate(trace, 3, 5, "hybrid", CM)
    held.runs  # the whole column listed first
    held.write(tmp_path / "held", format=fmt)
    for name in (f"timeline.{fmt}", f"requests.{fmt}"):
        if fmt == "csv":
            assert (tmp_path / "lazy" / name).read_bytes() == (tmp_path / "held" / name).read_bytes()
        else:
            a, b = pd.read_parquet(tmp_path / "lazy" / name), pd.read_parquet(tmp_path / "held" / name)
            pd.testing.assert_frame_equal(a, b)
