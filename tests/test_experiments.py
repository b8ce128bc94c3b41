"""The paper's experiments (workbench.studies.experiments) and ``workbench reproduce``."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

import workbench.policies.lagrangian  # noqa: F401  (registers the rule and the policies)
from workbench.studies import experiments as E
from workbench.workload.trace import load_trace, sample_trace


@pytest.fixture
def tiny_scenario(tmp_path) -> E.Scenario:
    path = tmp_path / "tiny.csv"
    sample_trace(load_trace("gsm8k-test"), 160, seed=4).to_csv(path, index=False)
    return E.Scenario(name="tiny", trace=str(path), clients=3, batch_size=8)


def test_scenario_states_every_default():
    sc = E.SCENARIOS["paper-gsm8k"]
    d = sc.describe()
    assert (d["trace"], d["cost_model"], d["clients"], d["batch_size"]) == ("gsm8k-test", "llama-65b", 8, 16)
    assert "t=0" in d["arrivals"]
    assert d["policies"] == ("paper-baseline", "offline", "online", "hybrid")


def test_headline_on_a_small_scenario(tiny_scenario):
    head = E.headline(tiny_scenario)
    table = head["table"]
    assert list(table.index) == ["paper-baseline", "offline", "online", "hybrid", "lower bound"]
    lb = head["lower_bound"]["value_s"]
    assert (table["makespan_s"] >= lb * (1 - 1e-12)).all()
    assert table.loc["paper-baseline", "gap_closed"] == 0.0
    assert table.loc["hybrid", "makespan_s"] <= table.loc["paper-baseline", "makespan_s"]
    assert table.loc["hybrid", "paper_gap_closed"] == E.PAPER["gap_closed"]
    assert math.isnan(table.loc["online", "paper_makespan_s"])
    from workbench.schedule.validator import validate

    for s in head["schedules"].values():
        assert validate(s, load_trace(tiny_scenario.trace)).ok


def test_mu_sweep_limits(tiny_scenario):
    sweep = E.mu_sweep(tiny_scenario, mus=(0.0, 1.0, math.inf))
    assert set(sweep["lookahead"]) == set(workbench.policies.lagrangian.LOOKAHEADS)
    for _, part in sweep.groupby("lookahead"):
        # mu = 0 and mu = inf do not depend on the look-ahead
        assert part.set_index("mu").loc[0.0, "makespan_s"] == sweep[sweep["mu"] == 0.0]["makespan_s"].iloc[0]
        assert part.set_index("mu").loc[math.inf, "makespan_s"] == sweep[sweep["mu"] == math.inf]["makespan_s"].iloc[0]
    fig = E.mu_sweep_figure(sweep)
    assert fig.to_dict()["layout"]["xaxis"]["type"] == "log"


def test_case_specs_are_seeded_and_in_range():
    study = E.CaseStudy(n_cases=20, seed=7)
    a, b = E.case_specs(study), E.case_specs(study)
    assert a == b
    assert E.case_specs(E.CaseStudy(n_cases=20, seed=8)) != a
    # case i does not depend on how many cases are drawn
    assert E.case_specs(E.CaseStudy(n_cases=5, seed=7)) == a[:5]
    for s in a:
        assert 2 <= s.clients <= 32 and s.batch_size in (8, 16, 32, 64)
        assert s.source in ("gsm8k-train", "gsm8k-test")
        assert len(set(s.rows)) == s.n_requests >= s.clients


def small_specs(n=6):
    specs = [s for s in E.case_specs(E.CaseStudy(n_cases=40, seed=11)) if s.n_requests <= 1500]
    return specs[:n]


def test_cases_in_process_and_hybrid_wins():
    rows, info = E.run_cases(small_specs(), workers=0, progress=False)
    assert info["executor"] == "in-process"
    cases = pd.DataFrame(rows)
    assert (cases["hybrid_makespan_s"] <= cases["baseline_makespan_s"]).all()
    summary = E.summarize_cases(cases)
    assert summary["cases"] == len(cases)
    assert isinstance(summary["worst_case_explanation"], str) and "case" in summary["worst_case_explanation"]
    figs = E.case_figures(cases)
    assert len(figs) == 2 and all(f.to_dict()["data"] for f in figs)


@pytest.mark.slow
def test_results_identical_whatever_the_number_of_workers():
    specs = small_specs(4)
    drop = ["time_s"]
    r0 = pd.DataFrame(E.run_cases(specs, workers=0, progress=False)[0]).drop(columns=drop)
    r1 = pd.DataFrame(E.run_cases(specs, workers=1, progress=False)[0]).drop(columns=drop)
    r2 = pd.DataFrame(E.run_cases(specs, workers=2, progress=False)[0]).drop(columns=drop)
    pd.testing.assert_frame_equal(r0, r1)
    pd.testing.assert_frame_equal(r0, r2)


def test_targets():
    table = pd.DataFrame({"gap_closed": [0.0, 0.8], "slot_utilization": [0.7, 0.85]},
                         index=["paper-baseline", "hybrid"])
    t = E.check_targets(table, {"share_won": 0.97}, 30.0, 5.0)
    assert all(v["met"] for v in t.values())
    t = E.check_targets(table, {"share_won": 0.9}, 70.0, 25.0)
    assert not t["case_study_share_won"]["met"] and not t["case_study_time_s"]["met"]
    assert not t["decision_time_us"]["met"]


def test_decision_time_is_measured():
    trace = sample_trace(load_trace("gsm8k-test"), 300, seed=2)
    out = E.decision_time(trace, 2, 16, "llama-65b", repeats=1)
    assert out["decisions"] > 0 and 0 < out["mean_us"] < 1000
    assert E.RULES["lagrangian"].__name__ == "_lagrangian_factory"  # restored after timing


# -- the command line ---------------------------------------------------------------------
TOP_KEYS = {"version": str, "scenario": dict, "cost_model": dict, "lower_bound": dict, "offline": dict,
            "headline": list, "headline_summary": dict, "paper": dict, "mu_sweep": list, "decision_time": dict,
            "case_study": dict, "targets": dict, "time_s": float}
HEADLINE_KEYS = {"policy": str, "makespan_s": float, "slot_utilization": (float, type(None)),
                 "busy_utilization": (float, type(None)), "gap": float, "gap_closed": float,
                 "paper_makespan_s": (float, type(None))}
CASE_KEYS = {"case": int, "source": str, "clients": int, "batch_size": int, "n_requests": int,
             "baseline_makespan_s": float, "hybrid_makespan_s": float, "baseline_slot_utilization": float,
             "hybrid_slot_utilization": float, "utilization_gain": float, "gap_closed": float, "won": bool}
SUMMARY_KEYS = {"cases": int, "share_won": float, "utilization_gain_mean": float, "utilization_gain_std": float,
                "worst_case": dict, "worst_case_explanation": str}


@pytest.mark.slow
def test_reproduce_json_keys_and_types(tmp_path, capsys):
    from workbench.cli import main

    code = main(["reproduce", "--cases", "3", "--workers", "0", "--json", "--out", str(tmp_path / "out")])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    for key, kind in TOP_KEYS.items():
        assert isinstance(res[key], kind), key
    assert [r["policy"] for r in res["headline"]] == ["paper-baseline", "offline", "online", "hybrid", "lower bound"]
    for row in res["headline"]:
        for key, kind in HEADLINE_KEYS.items():
            assert isinstance(row[key], kind), (row["policy"], key)
    assert len(res["case_study"]["cases"]) == 3
    for row in res["case_study"]["cases"]:
        for key, kind in CASE_KEYS.items():
            assert isinstance(row[key], kind), key
    for key, kind in SUMMARY_KEYS.items():
        assert isinstance(res["case_study"]["summary"][key], kind), key
    for t in res["targets"].values():
        assert set(t) == {"value", "target", "met"} and isinstance(t["met"], bool)
    assert {r["mu"] for r in res["mu_sweep"]} >= {0.0, 1.0, "inf"}
    out = tmp_path / "out"
    assert (out / "results.json").is_file() and (out / "report.html").is_file()
    assert json.loads((out / "results.json").read_text()) == res


def test_format_points_never_prints_a_small_loss_as_zero():
    assert E.format_points(-5.97e-05) == "-0.006"
    assert E.format_points(0.164) == "+16.4"
    assert E.format_points(0.0) == "+0.0"
    assert E.format_points(0.0004) == "+0.040"


def test_headline_counts_are_integers(tiny_scenario):
    table = E.headline(tiny_scenario)["table"]
    assert str(table["prefills"].dtype) == "Int64" and str(table["decode_iterations"].dtype) == "Int64"
    assert table["prefills"].isna().tolist() == [False] * 4 + [True]
    assert ".0000" not in table[["prefills"]].to_string()


def test_mu_sweep_legend_names_both_panels(tiny_scenario):
    sweep = E.mu_sweep(tiny_scenario, mus=(0.0, 0.5, 1.0, math.inf))
    fig = E.mu_sweep_figure(sweep).to_dict()
    style = {t["legendgroup"]: (t["line"]["color"], t["line"].get("dash")) for t in fig["data"]
             if t.get("showlegend", True)}
    right = [t for t in fig["data"] if t["xaxis"] == "x2"]
    assert right and len(set(style.values())) == len(style)
    for t in right:  # every right-panel curve has its legend entry's colour and dash
        assert (t["line"]["color"], t["line"].get("dash")) == style[t["legendgroup"]]
    # Issue 28: "mu = inf" was written on the chart over the curves; the limits are legend entries now.
    assert {"mu = 0 (static)", "mu = inf (continuous)"} <= set(style)
    assert not [a for a in fig["layout"].get("annotations", []) if a["text"].startswith("mu =")]
    # and the log axis labels each tick in full (Plotly's own wrote "5" for 0.05, 0.5 and 50)
    axis = fig["layout"]["xaxis"]
    assert "0.5" in axis["ticktext"] and [float(t) for t in axis["ticktext"]] == pytest.approx(list(axis["tickvals"]))


def test_paper_figure_shows_ours_beside_the_papers(tiny_scenario):
    table = E.headline(tiny_scenario)["table"]
    fig = E.paper_figure(table, {"utilization_gain_mean": 0.15}).to_dict()
    ours = [t for t in fig["data"] if t["name"] == "ours"]
    paper = [t for t in fig["data"] if t["name"].startswith("paper")]
    assert len(ours) == len(paper) == 4
    assert paper[0]["y"] == (E.PAPER["baseline_utilization"], E.PAPER["hybrid_utilization"]) or \
        list(paper[0]["y"]) == [E.PAPER["baseline_utilization"], E.PAPER["hybrid_utilization"]]
    assert list(ours[2]["y"]) == [float(table.loc["hybrid", "gap_closed"])]
    # Issue 28: the utilization gain, a difference of shares, read "16.4%" on an axis of points.
    assert list(ours[3]["y"]) == [pytest.approx(15.0)] and ours[3]["text"][0] == "+15.0"
    assert fig["layout"]["yaxis4"]["title"]["text"] == "percentage points" and "%" not in fig["layout"]["yaxis4"].get(
        "tickformat", "")
