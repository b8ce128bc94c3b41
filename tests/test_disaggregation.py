"""Sizing the pools (studies/disaggregation.py): the split of N GPUs with the highest DistServe goodput.

* the pruned search finds the same best split and goodput as the grid (every unpruned pair simulated);
* the attainment bound is safe: every simulated pair, pruned ones included, reaches at most its bound;
* a split's goodput is the highest rate of the ladder whose attainment reaches the goal;
* bad input is refused naming the field; the figure draws simulated splits and the colocated lines.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.errors import ConfigError
from workbench.studies.disaggregation import (colocated_goodput, goodput_of, run_split, split_bounds,
                                              split_search)
from workbench.workload.trace import load_trace, synthetic_trace

TRACE = synthetic_trace(200, seed=5, input_mean_tokens=900, output_mean_tokens=80, rate_per_s=12.0)
PRESET = "llama2-70b-h100-tp2"
SLO = dict(ttft_slo_s=1.0, tpot_slo_s=0.08, goal=0.9, rates_per_gpu=(0.5, 1.0, 2.0, 4.0, 8.0))
RUN = dict(preset=PRESET, batch_size=32)
CONV = Path(__file__).resolve().parents[2] / "shared" / "data" / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"


@pytest.fixture(scope="module")
def searches():
    return {st: split_search(TRACE, 8, strategy=st, **RUN, **SLO) for st in ("pruned", "grid")}


def test_pruned_search_finds_the_grids_best_split(searches):
    pruned, grid = searches["pruned"], searches["grid"]
    assert grid.best is not None and pruned.best == grid.best
    assert pruned.splits.loc[pruned.best, "goodput_rps_per_gpu"] == grid.splits.loc[grid.best, "goodput_rps_per_gpu"]
    assert pruned.pairs["simulated"].sum() <= grid.pairs["simulated"].sum()
    # A split the pruned search did not measure is bounded by no more than the best it found.
    best = pruned.splits.loc[pruned.best, "goodput_rps_per_gpu"]
    unmeasured = pruned.splits[~pruned.splits["simulated_goodput"]]
    assert (unmeasured["goodput_bound_rps_per_gpu"] <= best).all()


def test_goodput_is_the_highest_passing_rate(searches):
    grid = searches["grid"]
    for p, row in grid.splits.iterrows():
        pairs = grid.pairs[(grid.pairs["prefill_replicas"] == p) & grid.pairs["simulated"]]
        passing = pairs[pairs["slo_attainment"] >= SLO["goal"]]["rate_rps_per_gpu"]
        assert row["goodput_rps_per_gpu"] == (passing.max() if len(passing) else 0.0)
        assert row["simulated_goodput"]  # the grid measures every split


def test_the_bound_caps_every_simulated_pair_pruned_ones_included(searches):
    grid = searches["grid"]
    sim = grid.pairs[grid.pairs["simulated"]]
    assert (sim["slo_attainment"] <= sim["bound"] + 1e-12).all()
    pruned = grid.pairs[grid.pairs["pruned"]]
    assert len(pruned), "the case should let the bound prune a pair"
    for _, row in pruned.head(3).iterrows():
        got = run_split(TRACE, row["prefill_replicas"], row["decode_replicas"], row["factor"], policy="vllm",
                        link="nvlink", ttft_slo_s=SLO["ttft_slo_s"], tpot_slo_s=SLO["tpot_slo_s"], gpus=8, **RUN)
        assert got["slo_attainment"] <= row["bound"] + 1e-12 < SLO["goal"]


def test_colocated_goodput_descends_to_the_same_answer_as_the_full_ladder():
    kw = dict(policies=("paper-baseline",), **RUN, **SLO)
    short = goodput_of(colocated_goodput(TRACE, 4, **kw))
    full = goodput_of(colocated_goodput(TRACE, 4, full=True, **kw))
    assert short.equals(full)


@pytest.mark.parametrize("kwargs, field", [({"gpus": 7}, "gpus"), ({"gpus": 2}, "gpus"),
                                           ({"gpus": 8, "strategy": "best"}, "strategy"),
                                           ({"gpus": 8, "goal": 1.5}, "goal"),
                                           ({"gpus": 8, "policy": "nope"}, "policy")])
def test_bad_input_names_the_field(kwargs, field):
    with pytest.raises(ConfigError) as e:
        split_search(TRACE.head(20), **{**RUN, **SLO, **kwargs})
    assert e.value.field == field


def test_split_figure_draws_splits_bound_and_colocated(searches):
    from workbench.viz.disaggregation import SPLIT_CAPTION, split_figure

    r = searches["pruned"]
    fig = split_figure(r.splits, colocated={"paper-baseline": 0.5}, best=r.best)
    names = {t.name for t in fig.data}
    assert {"bound", "disaggregated (simulated)", "best split"} <= names
    assert fig.layout.meta["caption"] == SPLIT_CAPTION
    assert len(fig.layout.shapes) == 1


@pytest.mark.skipif(not CONV.is_file(), reason="the Azure conversation trace (../shared/data) is absent")
def test_conversation_trace_splits_four_gpus():
    trace = load_trace(CONV)
    trace = trace[trace["arrival_s"] < 60].reset_index(drop=True)
    bounds = split_bounds(trace, 4, preset=PRESET, batch_size=128, ttft_slo_s=1.0, tpot_slo_s=0.1, goal=0.9,
                          rates_per_gpu=(0.5,))
    assert list(bounds["prefill_gpus"]) == [2] and list(bounds["decode_gpus"]) == [2]
    r = split_search(trace, 4, rates_per_gpu=(0.5,), ttft_slo_s=1.0, tpot_slo_s=0.1)
    assert r.splits["simulated_goodput"].all()
