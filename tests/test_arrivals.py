"""Online arrivals: resampled traces, capacity, SLO attainment, the rolling-horizon hybrid, the load sweep."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import make_trace

from workbench.studies.loadsweep import (
    DEFAULT_SWEEP_POLICIES,
    cluster_capacity,
    load_sweep,
    load_sweep_figure,
    resample_arrivals,
    slo_attainment,
    winners,
)
from workbench.costmodel.linear import LinearCostModel
from workbench.errors import ConfigError
from workbench.policies.lagrangian import ONLINE_PARAMS
from workbench.policies.rolling import ROLLING_PARAMS, RollingHorizon
from workbench.policies.registry import DISPATCHERS, HOLD, POLICIES
from workbench.engine.core import simulate
from workbench.workload.trace import load_trace, synthetic_trace
from workbench.schedule.validator import validate

SMALL = LinearCostModel(a_p=0.015, b_p=1e-4, a_d=0.015, b_d=1e-4, c_d=2e-7, name="small")


# -- traces at a rate --------------------------------------------------------------------------------------
def test_resample_keeps_real_lengths_and_hits_the_rate():
    base = load_trace("gsm8k-train")
    t = resample_arrivals(base, 40.0, n_requests=3000, seed=7)
    assert len(t) == 3000 and t["request_id"].is_unique
    merged = t.merge(base, on="request_id", suffixes=("", "_base"))
    assert (merged["input_tokens"] == merged["input_tokens_base"]).all()
    assert (merged["output_tokens"] == merged["output_tokens_base"]).all()
    gaps = np.diff(t["arrival_s"].to_numpy())
    assert t["arrival_s"].iloc[0] == 0 and (gaps >= 0).all()
    assert gaps.mean() == pytest.approx(1 / 40, rel=0.06)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.08)  # Poisson: CV 1
    again = resample_arrivals(base, 40.0, n_requests=3000, seed=7)
    pd.testing.assert_frame_equal(t, again)


def test_burstier_arrivals_have_more_variable_gaps():
    base = load_trace("gsm8k-train")
    gaps = np.diff(resample_arrivals(base, 40.0, n_requests=3000, seed=1, burstiness=4.0)["arrival_s"])
    assert gaps.std() / gaps.mean() == pytest.approx(2.0, rel=0.15)


@pytest.mark.parametrize("kw", [{"rate_per_s": 0}, {"rate_per_s": -1.0}, {"rate_per_s": 1.0, "burstiness": 0},
                                {"rate_per_s": 1.0, "n_requests": 10**6}])
def test_resample_refuses_bad_options(kw):
    rate = kw.pop("rate_per_s")
    with pytest.raises(ConfigError):
        resample_arrivals(make_trace([(5, 5)] * 3), rate, **kw)


# -- capacity -------------------------------------------------------------------------------------------------
def test_capacity_is_the_fluid_bound_and_no_policy_beats_it():
    trace = synthetic_trace(400, seed=2, input_mean_tokens=60, output_mean_tokens=120)
    cap = cluster_capacity(trace, 4, 8, SMALL, policies=["paper-baseline", "hybrid"])
    w = SMALL.request_weight_s(trace["input_tokens"], trace["output_tokens"], 8)
    assert cap.rate_per_s == pytest.approx(4 / w.mean())
    assert cap.binding == "average_work" and cap.rate_at(0.8) == pytest.approx(0.8 * cap.rate_per_s)
    for name, rps in cap.saturated_rps.items():
        assert 0.5 * cap.rate_per_s < rps <= cap.rate_per_s, name
    tight = cluster_capacity(trace, 4, 8, SMALL, kv_capacity_tokens=800)
    assert tight.binding == "kv_aggregate" and tight.rate_per_s < cap.rate_per_s


# -- SLO attainment ---------------------------------------------------------------------------------------------
def test_slo_attainment_by_hand():
    rq = pd.DataFrame({"request_id": [0, 1, 2, 3], "client": 0, "input_tokens": 5, "output_tokens": [3, 3, 1, 5],
                       "arrival_s": [0.0, 0.0, 1.0, 1.0], "prefill_start_s": [0.0, 0.5, 1.0, 3.0],
                       "first_token_s": [0.5, 1.5, 1.2, 3.5], "finish_s": [0.7, 2.5, 1.2, 3.9]})
    # TTFT: 0.5, 1.5, 0.2, 2.5; TPOT: 0.1, 0.5, 0, 0.1
    got = slo_attainment(rq, ttft_slo_s=1.0, tpot_slo_s=0.2)
    assert got == {"ttft_attainment": 0.5, "tpot_attainment": 0.75, "slo_attainment": 0.5}


# -- the rolling-horizon hybrid -------------------------------------------------------------------------------
def test_rolling_policy_is_registered_with_the_online_defaults():
    assert "rolling" in DISPATCHERS and "hybrid-rolling" in POLICIES
    policy = POLICIES["hybrid-rolling"]
    assert {k: v for k, v in policy.params.items() if k != "horizon_s"} == ONLINE_PARAMS
    assert ROLLING_PARAMS["horizon_s"] == policy.params["horizon_s"]


@pytest.mark.parametrize("horizon_s,on_idle", [(0.0, False), (0.05, True), (0.05, False), (math.inf, True)])
def test_rolling_horizon_schedules_are_valid(horizon_s, on_idle):
    trace = synthetic_trace(120, seed=3, input_mean_tokens=40, output_mean_tokens=50, rate_per_s=60)
    s = simulate(trace, 3, 4, "hybrid-rolling", SMALL, horizon_s=horizon_s, release_on_idle=on_idle)
    assert validate(s, trace=trace).ok
    assert (s.requests["prefill_start_s"] >= s.requests["arrival_s"]).all()


def test_rolling_holds_until_the_epoch():
    # Both clients busy with long requests; later arrivals wait for the next grid epoch (multiples of 1 s).
    trace = make_trace([(10, 400, 0.0), (10, 400, 0.0), (10, 5, 0.2), (10, 5, 0.3)])
    s = simulate(trace, 2, 4, "hybrid-rolling", SMALL, horizon_s=1.0, release_on_idle=False)
    assert (s.requests["prefill_start_s"].iloc[2:] >= 1.0).all()
    assert validate(s).ok
    # Released at once when a client has room (release_on_idle, the default).
    s = simulate(trace, 2, 4, "hybrid-rolling", SMALL, horizon_s=1.0)
    assert (s.requests["prefill_start_s"].iloc[2:] < 0.5).all()


def test_rolling_packs_heaviest_first_on_top_of_outstanding_work():
    class C:  # the attributes a dispatcher reads
        def __init__(self, load):
            self.outstanding_s, self.speed, self.waiting, self.n_running, self.batch_size = load, 1.0, [1], 4, 4

    d = RollingHorizon([5.0, 3.0, 3.0, 1.0], horizon_s=1.0)
    clients = [C(0.0), C(4.0)]
    assert [d.assign(i, 0.1 * (i + 1), clients) for i in range(4)] == [HOLD] * 4
    assert d.next_epoch_s(0.35, clients) == 1.0
    sent = dict(d.release(1.0, clients))
    # LPT on loads (0, 4): 5 -> client 0 (5); 3 -> client 1 (7); 3 -> client 0 (8); 1 -> client 1 (8).
    assert sent == {0: 0, 1: 1, 2: 0, 3: 1}
    assert d.next_epoch_s(1.0, clients) == math.inf


def test_a_plain_dispatcher_may_not_hold():
    class Holder:
        def assign(self, request, now_s, clients):
            return HOLD

    DISPATCHERS["_holder"] = lambda **_: Holder()
    try:
        with pytest.raises(ConfigError, match="client -1"):
            simulate(make_trace([(5, 5)]), 1, 2, "continuous", SMALL, dispatch="_holder")
    finally:
        del DISPATCHERS["_holder"]


# -- the load sweep ----------------------------------------------------------------------------------------
def test_load_sweep_table_winners_and_figure():
    kept = {}
    table = load_sweep("gsm8k-train", clients=2, batch_size=8, cost_model=SMALL, loads=(0.5, 0.95),
                       policies=("paper-baseline", "hybrid-rolling", "chunked-prefill"), n_requests=300, seed=1,
                       schedules=kept)
    assert len(table) == 6 and set(table["policy"]) == {"paper-baseline", "hybrid-rolling", "chunked-prefill"}
    for col in ("ttft_s_p50", "ttft_s_p99", "tpot_s_p99", "e2e_s_p99", "slo_attainment", "queueing_s_p99"):
        assert col in table.columns and table[col].notna().all()
    assert all(validate(s).ok for s in kept.values())
    base = table[table["policy"] == "paper-baseline"].set_index("load")
    assert base.loc[0.95, "ttft_s_p99"] > base.loc[0.5, "ttft_s_p99"]  # latency grows with load
    best = winners(table, "ttft_s_p99")
    assert list(best.index) == [0.5, 0.95] and set(best["winner"]) <= set(table["policy"])
    fig = load_sweep_figure(table).to_dict()
    assert len(fig["data"]) == 3 and fig["layout"]["yaxis"]["type"] == "log"


def test_load_sweep_refuses_unknown_policies_and_bad_loads():
    with pytest.raises(ConfigError, match="unknown policy"):
        load_sweep(make_trace([(5, 5)] * 4), clients=1, batch_size=2, cost_model=SMALL, policies=("nope",))
    with pytest.raises(ConfigError, match="loads"):
        load_sweep(make_trace([(5, 5)] * 4), clients=1, batch_size=2, cost_model=SMALL, loads=(0.0,))
    assert set(DEFAULT_SWEEP_POLICIES) <= set(POLICIES) | {"chunked-prefill"}


def test_cli_loadsweep(tmp_path, capsys):
    from workbench.cli import main

    out = tmp_path / "sweep"
    code = main(["loadsweep", "--clients", "2", "--batch-size", "8", "--loads", "0.5,0.9", "--requests", "200",
                 "--policies", "paper-baseline,chunked-prefill", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "capacity:" in text and "lowest p99 TTFT per load" in text
    table = pd.read_csv(out / "loadsweep.csv")
    assert len(table) == 4 and (out / "report.html").read_text().count("plotly") > 0
    assert main(["loadsweep", "--policies", "nope", "--requests", "10"]) == 2
