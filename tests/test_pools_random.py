"""Random pooled fleets (issue 26): every schedule the engine writes validates and its pooled bound holds.

Each case draws a trace (arrivals, prompts, outputs, sometimes shared prefixes), a fleet (prefill/decode counts
or roles with mixed replicas), a policy, the KV mode and capacity, the link, the routers per stage, B and the
overlap option from its seed, so a failure names the seed that reproduces it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.engine import simulate
from workbench.engine.pools import STAGE_ROUTERS, Pools
from workbench.schedule.validator import validate


def _case(seed: int) -> tuple[pd.DataFrame, dict]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    trace = pd.DataFrame({"request_id": range(n), "input_tokens": rng.integers(50, 400, n),
                          "output_tokens": rng.integers(1, 80, n), "arrival_s": np.sort(rng.uniform(0, 2, n))})
    kv = str(rng.choice(["reserve", "paged"]))
    if kv == "paged" and rng.random() < 0.5:
        trace["prefix_id"] = rng.choice(["a", "b", ""], n)
        trace["prefix_tokens"] = np.where(trace["prefix_id"] == "", 0, 48)
    prefill, decode = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    fields = dict(link=str(rng.choice(["nvlink", "pcie", "rdma", "infinite"])), overlap=bool(rng.random() < 0.7),
                  prefill_router=str(rng.choice(STAGE_ROUTERS)), decode_router=str(rng.choice(STAGE_ROUTERS)))
    if rng.random() < 0.3:
        roles = ["prefill"] * prefill + ["decode"] * decode + ["mixed"] * int(rng.integers(1, 3))
        pools = Pools(roles=roles, **fields)
    else:
        pools = Pools(prefill=prefill, decode=decode, **fields)
    policy = str(rng.choice(["paper-baseline", "hybrid", "vllm"]))
    options = dict(policy=policy, kv=kv, kv_capacity_tokens=int(rng.integers(900, 3000)),
                   batch_size=int(rng.choice([2, 4, 16])), pools=pools, prefix_caching="prefix_id" in trace)
    if policy == "vllm":
        options["iteration"] = "exclusive"  # pools run exclusive iterations
    return trace, options


@pytest.mark.parametrize("seed", range(12))
def test_random_pooled_fleets_validate_and_keep_their_bound(seed):
    trace, options = _case(seed)
    schedule = simulate(trace, **options)
    report = validate(schedule)
    assert report.ok, (seed, str(report))
    bound = schedule.metrics["lower_bound_s"]
    assert bound <= schedule.makespan_s * (1 + 1e-9), (seed, bound, schedule.makespan_s)
