"""Issue 28: figures that draw one trace per value of a number list their traces (and so their legend) in
numeric order, and draw each line left to right, whatever order the data came in ("a legend unsorted
(64, 16, 32, 8)": the case study's per-case bars, coloured by batch size, took the order of first appearance
of the cases sorted by gain)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _cases() -> pd.DataFrame:
    # gains sorted ascending meet the batch sizes as 64, 16, 32, 8: first appearance is not numeric order,
    # and string order ("16" < "32" < "64" < "8") is not either
    batch = [64, 16, 32, 8, 64, 8, 16, 32]
    gain = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08]
    order = [5, 2, 7, 0, 3, 6, 1, 4]  # and the rows themselves given shuffled
    return pd.DataFrame({"case": [f"c{i}" for i in order], "source": "synthetic", "clients": 4,
                         "batch_size": [batch[i] for i in order], "n_requests": 100,
                         "gap_closed": 0.5, "utilization_gain": [gain[i] for i in order]})


def test_case_study_legend_is_in_numeric_order_of_batch_size():
    from workbench.studies.experiments import case_figures

    per_case, _ = case_figures(_cases())
    names = [t.name for t in per_case.data]
    assert names == ["8", "16", "32", "64"], names
    # every case is still drawn, at its rank by gain
    assert sorted(x for t in per_case.data for x in t.x) == list(range(8))


def test_uncertainty_lines_run_in_order_of_the_spread():
    from workbench.studies.uncertainty import uncertainty_figure

    table = pd.DataFrame({"policy": ["hybrid", "paper-baseline"] * 3, "spread": [0.4, 0.4, 0.0, 0.0, 0.2, 0.2],
                          "makespan_mean_s": [3.0, 4.0, 1.0, 2.0, 2.0, 3.0], "makespan_sd_s": 0.1,
                          "gap_closed_mean": 0.5})
    fig = uncertainty_figure(table)
    assert [t.name for t in fig.data] == ["hybrid", "paper-baseline"]
    for trace in fig.data:
        assert list(trace.x) == [0.0, 0.2, 0.4]
    assert list(fig.data[0].y) == [1.0, 2.0, 3.0]


def test_load_sweep_lines_run_in_order_of_the_load():
    from workbench.studies.loadsweep import load_sweep_figure

    table = pd.DataFrame({"policy": ["a", "a", "a"], "load": [0.9, 0.3, 0.6], "ttft_s_p99": [3.0, 1.0, 2.0]})
    fig = load_sweep_figure(table)
    assert list(fig.data[0].x) == [0.3, 0.6, 0.9] and list(fig.data[0].y) == [1.0, 2.0, 3.0]
    assert np.all(np.diff(np.asarray(fig.data[0].x)) > 0)
