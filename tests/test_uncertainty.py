"""The uncertainty study (workbench.studies.uncertainty) and `workbench reproduce --uncertainty`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.studies.experiments import Scenario
from workbench.workload.trace import load_trace, sample_trace
from workbench.studies.uncertainty import check_target, summarize, uncertainty_study

SMALL = Scenario(name="small", trace=sample_trace(load_trace("gsm8k-test"), 160, seed=1), clients=2,
                 batch_size=8)


def test_study_table_is_tidy_and_reproducible():
    a = uncertainty_study((0.0, 0.5), (0, 1), ("paper-baseline", "hybrid", "hybrid-robust"), scenario=SMALL)
    b = uncertainty_study((0.0, 0.5), (0, 1), ("paper-baseline", "hybrid", "hybrid-robust"), scenario=SMALL)
    assert a["runs"]["makespan_s"].tolist() == b["runs"]["makespan_s"].tolist()
    runs = a["runs"]
    assert len(runs) == 2 * 2 * 3
    assert (runs["makespan_s"] >= a["lower_bound_s"]).all()
    base = runs[runs["policy"] == "paper-baseline"]["makespan_s"]
    assert np.allclose(base, base.iloc[0])  # reads no length: the same at every spread
    exact = runs[(runs["spread"] == 0) & (runs["policy"] == "hybrid")]["makespan_s"]
    assert exact.nunique() == 1  # no error: every seed is the same run
    table = summarize(runs)
    assert set(table.columns) >= {"spread", "policy", "makespan_mean_s", "makespan_sd_s", "gap_closed_mean"}
    assert len(table) == 2 * 3
    fig = a["figure"].to_dict()
    assert len(fig["data"]) == 3
    assert check_target(runs, spread=0.5)["seeds"] == 2


@pytest.mark.slow
def test_reproduce_uncertainty_json(tmp_path, capsys):
    from workbench.cli import main

    code = main(["reproduce", "--cases", "0", "--workers", "0", "--json", "--uncertainty", "--uncertainty-seeds", "1",
                 "--out", str(tmp_path / "out")])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    unc = res["uncertainty"]
    assert unc["target"]["met"] is True  # 20% error: hybrid beats paper-baseline on the paper scenario
    spreads = sorted({row["spread"] for row in unc["table"]})
    assert spreads[0] == 0.0 and spreads[-1] == 1.0
    assert {"headline", "targets", "mu_sweep"} <= set(res)  # the existing keys are still there
    assert (tmp_path / "out" / "uncertainty.csv").is_file() and (tmp_path / "out" / "report.html").is_file()
