"""The work estimate (workbench.schedule.estimate): its floors hold for every schedule, its limits refuse."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.costmodel.linear import LinearCostModel
from workbench.engine.chunked import simulate_chunked
from workbench.engine.core import simulate
from workbench.errors import ConfigError
from workbench.schedule.estimate import (
    MAX_TIMELINE_ROWS,
    check_clock_resolution,
    check_rows,
    check_work,
    estimate_work,
)
from workbench.workload.trace import synthetic_trace

SMALL = LinearCostModel(a_p=0.015, b_p=1e-4, a_d=0.015, b_d=1e-4, c_d=2e-7, name="small")


@pytest.mark.parametrize("seed", range(6))
def test_floors_and_ceilings_hold_on_every_policy(seed):
    rng = np.random.default_rng(seed)
    trace = synthetic_trace(int(rng.integers(5, 60)), seed=seed, output_mean_tokens=float(rng.integers(2, 40)),
                            rate_per_s=None if seed % 2 else 20.0)
    clients, batch = int(rng.integers(1, 5)), [int(b) for b in rng.integers(1, 9, 1)][0]
    est = estimate_work(trace, clients, batch)
    for policy in ("static", "continuous", "paper-baseline", "hybrid", "online", "least-work"):
        rows = len(simulate(trace, clients, batch, policy, SMALL).timeline)
        assert est.min_iterations <= rows <= est.max_iterations, policy
    if batch > 1:
        rows = len(simulate_chunked(trace, clients, batch, token_budget=batch + 16, cost_model=SMALL).timeline)
        assert est.min_mixed_iterations <= rows <= est.max_mixed_iterations


def test_the_floor_is_reached_by_one_long_request():
    trace = pd.DataFrame({"request_id": [0], "input_tokens": [5], "output_tokens": [1000]})
    assert estimate_work(trace, 1, 1).min_iterations == len(simulate(trace, 1, 1, "static", SMALL).timeline) == 1000


def test_refusals_name_the_figure():
    trace = pd.DataFrame({"request_id": range(4), "input_tokens": 5, "output_tokens": 10_000_000})
    with pytest.raises(ConfigError, match="at least 40,000,000 iterations"):
        check_work(trace, 4, 1)
    assert check_work(trace, 4, 1, export=False).min_iterations == 40_000_000  # the runs are cheap
    with pytest.raises(ConfigError, match="chunked-prefill simulator would step at least 39,999,996"):
        check_work(trace, 4, 1, export=False, stepped=True)
    check_rows(MAX_TIMELINE_ROWS)
    with pytest.raises(ConfigError, match="10,000,001 rows"):
        check_rows(MAX_TIMELINE_ROWS + 1)
    with pytest.raises(ConfigError, match="clients"):
        check_work(trace, 10**7, 1)


def test_clock_resolution():
    late = pd.DataFrame({"request_id": [0], "input_tokens": [1], "output_tokens": [2], "arrival_s": [1e9]})
    check_clock_resolution(late, SMALL)  # 15 ms iterations resolve at 1e9 s
    tiny = LinearCostModel(a_p=0.0, b_p=1e-8, a_d=0.01, b_d=0.0, c_d=0.0, name="tiny")
    with pytest.raises(ConfigError, match=r"the shortest iteration \(1e-08 s\) is below the clock's resolution"):
        check_clock_resolution(late, tiny)
    check_clock_resolution(late.assign(arrival_s=0.0), tiny)  # near 0 the same model resolves
