"""A run whose replicas never interact, split over forked processes (``workers``; engine.shards), gives the one
process's schedule byte for byte, refuses where the replicas interact, and survives a shard that fails."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import workbench
import workbench.engine.shards as shards
from workbench.engine import build_engine
from workbench.errors import ConfigError
from workbench.workload.trace import synthetic_trace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import pin_engine  # noqa: E402

pytestmark = pytest.mark.skipif(not shards.can_fork(), reason="shards fork the engine: not on this platform")

PINNED = json.loads((ROOT / "tests" / "golden" / "engine.json").read_text())


def batch_trace(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"request_id": np.arange(n), "input_tokens": rng.integers(20, 601, n),
                         "output_tokens": rng.integers(2, 401, n)})


def same_files(a, b) -> bool:
    return pin_engine.digest(a) == pin_engine.digest(b)


def test_every_pinned_case_whose_replicas_never_interact_is_the_same_in_shards():
    sharded: list[str] = []
    got = pin_engine.pins(workers=3, sharded=sharded)
    assert len(sharded) >= 90  # every policy with round-robin or offline dispatch, in every mode
    assert {name: got[name] for name in sharded} == {name: PINNED[name] for name in sharded}


@pytest.mark.parametrize("policy, options", [
    ("vllm", {}),
    ("vllm", {"kv_capacity_tokens": 20_000, "async_scheduling": True}),  # preemptions, async scheduling
    ("chunked-prefill", {"token_budget": 512}),
    ("hybrid", {}),  # the offline stage's assignment
    ("paper-baseline", {}),
])
def test_a_large_enough_run_in_shards_writes_the_same_files(policy, options):
    trace = batch_trace()
    one = workbench.simulate(trace, 6, 16, policy, "llama-65b", workers=1, **options)
    for workers in (2, 4):
        assert same_files(workbench.simulate(trace, 6, 16, policy, "llama-65b", workers=workers, **options), one)


def test_online_arrivals_with_ties_across_shards():
    # Equal prompts arriving together: boundaries at equal times on many replicas, ordered by what pushed them.
    trace = synthetic_trace(400, seed=5, input_mean_tokens=80, output_mean_tokens=60, rate_per_s=30.0)
    trace = trace.assign(arrival_s=np.floor(trace["arrival_s"].to_numpy() * 2) / 2, input_tokens=64)
    one = workbench.simulate(trace, 8, 8, "vllm", "llama-65b", workers=1)
    assert same_files(workbench.simulate(trace, 8, 8, "vllm", "llama-65b", workers=3), one)


def test_mixed_iterations_without_a_run_of_decodes_keep_the_order_they_were_formed_in():
    # Two output tokens each: no run of decodes, so the timeline lists rows as one loop formed them.
    trace = batch_trace(300).assign(output_tokens=2)
    one = build_engine(trace, 4, 8, "chunked-prefill", "llama-65b", workers=1)
    one.run()
    assert not one.recorder.run_ends and one.recorder.marks is not None
    two = build_engine(trace, 4, 8, "chunked-prefill", "llama-65b", workers=2)
    two.run()
    assert two.recorder.start == one.recorder.start and two.recorder.client == one.recorder.client
    assert same_files(two.schedule(), one.schedule())


def test_big_runs_split_by_default_and_small_ones_do_not(monkeypatch):
    trace = batch_trace(200)
    assert build_engine(trace, 4, 8, "vllm", "llama-65b")._shards is None  # under SHARD_MIN_REQUESTS
    monkeypatch.setattr(shards, "SHARD_MIN_REQUESTS", 100)
    monkeypatch.setattr(shards, "cores_available", lambda: 2)
    plan = build_engine(trace, 4, 8, "vllm", "llama-65b")._shards
    assert plan is not None and [j for g in plan.groups for j in g] == [0, 1, 2, 3] and len(plan.groups) == 2
    monkeypatch.setattr(shards, "cores_available", lambda: 1)
    assert build_engine(trace, 4, 8, "vllm", "llama-65b")._shards is None
    assert build_engine(trace, 4, 8, "least-work", "llama-65b", workers=None)._shards is None  # reads the state


@pytest.mark.parametrize("kwargs, words", [
    ({"policy": "least-work"}, "router reads the replicas' state"),
    ({"policy": "hybrid", "steal": True}, "work stealing"),
    ({"policy": "vllm", "dp_lockstep": True}, "lock-step"),
    ({"policy": "vllm", "workers": 5}, "more than the run's 4 replicas"),
    ({"policy": "vllm", "workers": 0}, "not a positive integer"),
    ({"policy": "vllm", "workers": 1.5}, "not a positive integer"),
])
def test_workers_is_refused_where_it_cannot_be_honoured(kwargs, words):
    kwargs = {"workers": 2, **kwargs}
    with pytest.raises(ConfigError, match=words) as caught:
        build_engine(batch_trace(50), 4, 8, cost_model="llama-65b", **kwargs)
    assert caught.value.field == "workers"


def test_outside_decisions_and_controllers_refuse_workers():
    with pytest.raises(ConfigError, match="decided outside"):
        build_engine(batch_trace(50), 4, 8, "vllm", "llama-65b", decisions="external", workers=2)
    with pytest.raises(ConfigError, match="controller"):
        workbench.simulate(batch_trace(50), 2, 8, "vllm", "llama-65b", controller="queue-length", workers=2)


def test_a_run_driven_step_by_step_stays_in_one_process_and_agrees():
    trace = batch_trace(300)
    one = workbench.simulate(trace, 4, 8, "vllm", "llama-65b", workers=1)
    engine = build_engine(trace, 4, 8, "vllm", "llama-65b", workers=2)
    engine.run(until_s=1.0)
    assert engine._shards is None  # what ran so far ran here: the rest does too
    assert same_files(engine.schedule(), one)


def test_a_shard_whose_process_dies_is_run_here_with_a_warning(monkeypatch):
    trace = batch_trace(300)
    one = workbench.simulate(trace, 4, 8, "vllm", "llama-65b", workers=1)
    parent, run_part = os.getpid(), shards.ShardedRun._run_part

    def dying(self, s):
        if os.getpid() != parent:
            os._exit(3)
        return run_part(self, s)

    monkeypatch.setattr(shards.ShardedRun, "_run_part", dying)
    with pytest.warns(RuntimeWarning, match="shard 2 of 2 ended without a result"):
        got = workbench.simulate(trace, 4, 8, "vllm", "llama-65b", workers=2)
    assert same_files(got, one)


def test_an_error_in_a_shard_is_raised_here(monkeypatch):
    parent, run_part = os.getpid(), shards.ShardedRun._run_part

    def failing(self, s):
        if os.getpid() != parent:
            raise ValueError("the shard's own error")
        return run_part(self, s)

    monkeypatch.setattr(shards.ShardedRun, "_run_part", failing)
    with pytest.raises(ValueError, match="the shard's own error"):
        workbench.simulate(batch_trace(300), 4, 8, "vllm", "llama-65b", workers=2)


def test_groups_are_consecutive_cover_every_replica_and_favour_this_process():
    for n, k in [(64, 2), (5, 2), (4, 4), (7, 3)]:
        groups = shards.balanced_groups(np.ones(n), k)
        assert [j for g in groups for j in g] == list(range(n)) and len(groups) == k and all(groups)
    first, second = shards.balanced_groups(np.ones(64), 2)
    assert len(first) > len(second)  # a forked process pays for the pages it copies
    assert shards.balanced_groups(np.array([0.0, 0.0, 0.0, 10.0]), 2) == [[0, 1, 2], [3]]


def test_the_command_line_honours_workers_and_refuses_it_where_replicas_interact(tmp_path, capsys):
    from workbench.cli import main

    common = ["simulate", "--trace", "gsm8k-test", "--clients", "4", "--batch-size", "8", "--policy"]
    assert main([*common, "vllm", "--workers", "2", "--out", str(tmp_path / "two")]) == 0
    assert main([*common, "vllm", "--workers", "1", "--out", str(tmp_path / "one")]) == 0
    for name in ("timeline.csv", "requests.csv", "metrics.json"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    capsys.readouterr()
    assert main([*common, "least-work", "--workers", "2", "--out", str(tmp_path / "no")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "workers" in err[0] and "router reads the replicas' state" in err[0]
    assert not (tmp_path / "no").exists()
