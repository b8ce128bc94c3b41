"""Bin packing (workbench.offline): heuristic >= optimum >= proven bound; the assign() entry point."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from workbench.costmodel.linear import LinearCostModel
from workbench.errors import ConfigError
from workbench.offline import assign, heuristics as H, mmbp_data, solver_available
from workbench.workload.trace import synthetic_trace

needs_solver = pytest.mark.skipif(not solver_available(), reason="HiGHS (highspy) not installed")


def brute_force_mmbp(W: np.ndarray) -> float:
    """The bin-packing optimum by enumerating every assignment (independent of any solver)."""
    n, m = W.shape
    best = np.inf
    for combo in itertools.product(range(m), repeat=n):
        a = np.array(combo)
        best = min(best, H.loads_s(W, a).max())
    return float(best)


def random_weights(seed: int, identical: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(2, 8)), int(rng.integers(2, 4))
    w = rng.lognormal(0.0, 0.8, n)
    if identical:
        return np.repeat(w[:, None], m, axis=1)
    return w[:, None] * rng.uniform(0.5, 2.0, m)[None, :]


@pytest.mark.parametrize("seed", range(12))
def test_heuristics_above_optimum_above_bound(seed):
    W = random_weights(seed, identical=seed % 3 != 0)
    opt = brute_force_mmbp(W)
    bound, terms = H.mmbp_lower_bound(W)
    assert bound <= opt * (1 + 1e-12)
    assert all(t <= opt * (1 + 1e-12) for t in terms.values())
    results = {"lpt": H.lpt(W)}
    if H.identical_columns(W):
        results["kk"] = H.kk(W)
    results["ls"] = H.local_search(W, results["lpt"])
    for name, a in results.items():
        assert a.shape == (W.shape[0],) and a.min() >= 0 and a.max() < W.shape[1], name
        assert H.loads_s(W, a).max() >= opt * (1 - 1e-12), name
    assert H.loads_s(W, results["ls"]).max() <= H.loads_s(W, results["lpt"]).max() + 1e-12


@needs_solver
@pytest.mark.solver
@pytest.mark.parametrize("seed", range(6))
def test_mip_reaches_the_brute_force_optimum(seed):
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(3, 8)), int(rng.integers(2, 4))
    trace = synthetic_trace(n, seed=seed, output_mean_tokens=40)
    cm = LinearCostModel(a_p=0.03, b_p=1e-4, a_d=0.012, b_d=1e-4, c_d=1e-7)
    B = [int(b) for b in rng.integers(1, 5, m)] if seed % 2 else 4
    W = mmbp_data(trace, m, B, cm).weights_s
    opt = brute_force_mmbp(W)
    for method in ("mip", "mip-cold"):
        result = assign(trace, m, B, cm, method=method, time_limit=20, rel_gap=0.0)
        assert result.makespan_s == pytest.approx(opt, rel=1e-7), method
        assert result.lower_bound_s <= opt * (1 + 1e-9), method
    heuristic = assign(trace, m, B, cm, method="lpt")
    assert heuristic.makespan_s >= opt * (1 - 1e-12) >= heuristic.lower_bound_s * (1 - 1e-12)


def test_local_search_improves_a_bad_start_and_is_deterministic():
    W = random_weights(5)
    start = np.zeros(W.shape[0], dtype=np.int64)  # everything on client 0
    a1 = H.local_search(W, start)
    a2 = H.local_search(W, start)
    assert np.array_equal(a1, a2)
    assert H.loads_s(W, a1).max() < H.loads_s(W, start).max()


def test_kk_needs_identical_clients():
    trace = synthetic_trace(20, seed=1)
    with pytest.raises(ConfigError, match="identical"):
        assign(trace, 2, [4, 8], LinearCostModel(a_p=0.03, b_p=1e-4, a_d=0.012, b_d=1e-4, c_d=1e-7), method="kk")


def test_bad_options_are_config_errors(small_cost):
    trace = synthetic_trace(10, seed=0)
    with pytest.raises(ConfigError, match="method"):
        assign(trace, 2, 4, small_cost, method="greedy")
    with pytest.raises(ConfigError, match="time_limit"):
        assign(trace, 2, 4, small_cost, time_limit=0)
    with pytest.raises(ConfigError, match="clients"):
        assign(trace, 0, 4, small_cost)
    with pytest.raises(ConfigError, match="batch"):
        assign(trace, 2, [4, 4, 4], small_cost)


def test_auto_on_gsm8k_test_is_within_target():
    cm = LinearCostModel(a_p=0.015, b_p=1.06e-4, a_d=0.015, b_d=1.06e-4, c_d=2e-7)
    result = assign("gsm8k-test", 8, 16, cm)  # benchmarks/bench_offline.py times it
    assert result.gap <= 5e-4
    assert np.bincount(result.assignment, minlength=8).sum() == 1319
    assert result.lower_bound_s <= result.makespan_s
    assert result.loads_s.max() == pytest.approx(result.makespan_s)


def test_heterogeneous_clients_use_their_own_weights(small_cost):
    trace = synthetic_trace(40, seed=3)
    W = mmbp_data(trace, 3, [2, 8, 32], small_cost).weights_s
    assert not H.identical_columns(W)
    assert np.all(W[:, 0] >= W[:, 2])  # a larger batch spreads the fixed costs thinner
    result = assign(trace, 3, [2, 8, 32], small_cost, method="ls")
    assert result.makespan_s == pytest.approx(H.loads_s(W, result.assignment).max())
    assert result.makespan_s >= result.lower_bound_s


def test_identical_clients_share_one_weight_column():
    """W for identical clients is a read-only view of one column: nothing grows with the client count."""
    from workbench.offline import mmbp_data
    from workbench.workload.trace import synthetic_trace

    data = mmbp_data(synthetic_trace(50, seed=1), 1024, 16, "llama-65b")
    assert data.weights_s.shape == (50, 1024) and data.weights_s.strides[1] == 0
    assert not data.weights_s.flags.writeable


def test_unlike_clients_beyond_the_weight_limit_are_refused(monkeypatch):
    from workbench.costmodel.linear import load_preset
    from workbench.errors import ConfigError
    from workbench.offline import assign, binpacking
    from workbench.workload.trace import synthetic_trace

    monkeypatch.setattr(binpacking, "MAX_WEIGHT_CELLS", 100)
    fleet = [load_preset("llama2-70b-a100-tp8"), load_preset("llama2-70b-h100-tp4")]
    with pytest.raises(ConfigError, match="weight matrix"):
        assign(synthetic_trace(60, seed=1), 2, 16, fleet, method="lpt")
    assert assign(synthetic_trace(60, seed=1), 2, 16, "llama-65b", method="lpt").status  # identical: no matrix


def test_auto_skips_kk_beyond_its_size(monkeypatch):
    from workbench.offline import assign, binpacking
    from workbench.workload.trace import synthetic_trace

    monkeypatch.setattr(binpacking, "AUTO_KK_MAX_CELLS", 10)
    result = assign(synthetic_trace(40, seed=2), 4, 16, "llama-65b", method="auto")
    assert "kk_skipped" in result.details and result.details["heuristic"].startswith("lpt")
