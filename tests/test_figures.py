import plotly.graph_objects as go
import pandas as pd

from workbench.viz.figures import comparison_table, gantt, gantt_compare, update_gantt
from workbench.schedule.schema import compact_timeline
from workbench.engine.core import simulate
from workbench.workload.trace import synthetic_trace


def test_gantt_has_one_bar_per_run_and_client_rows(small_cost):
    trace = synthetic_trace(80, seed=4, output_mean_tokens=20)
    s = simulate(trace, 3, 4, "continuous", small_cost)
    fig = gantt(s)
    names = [t.name for t in fig.data]
    assert names == ["prefill", "decode", "mixed", "preempt"]
    assert [t.showlegend for t in fig.data] == [True, True, False, False]  # no mixed iterations here
    n_bars = sum(len(t.x) for t in fig.data)
    runs = s.compact()
    assert n_bars == len(runs) < len(s.timeline)
    assert set(fig.data[1].y) == {"client 0", "client 1", "client 2"}
    assert fig.to_dict()["layout"]["barmode"] == "overlay"
    # the compact form the simulator kept equals the one derived from the timeline alone
    derived = compact_timeline(s.timeline)
    assert derived[["client", "kind", "iterations", "n_requests", "tokens"]].equals(
        runs[["client", "kind", "iterations", "n_requests", "tokens"]])


def test_update_gantt_in_place(small_cost):
    trace = synthetic_trace(50, seed=4)
    fig = go.FigureWidget(gantt(simulate(trace, 2, 4, "static", small_cost)))
    before = id(fig.data[0])
    update_gantt(fig, simulate(trace, 5, 4, "continuous", small_cost))
    assert id(fig.data[0]) == before
    assert set(fig.data[1].y) == {f"client {j}" for j in range(5)}
    assert "continuous" in fig.layout.title.text


def test_compare_and_table(small_cost):
    trace = synthetic_trace(50, seed=4)
    ss = {p: simulate(trace, 2, 4, p, small_cost) for p in ("static", "continuous")}
    fig = gantt_compare(ss)
    assert len(fig.data) == 10  # four kinds per panel (prefill, decode, mixed, preempt), and the two lines' legend
    assert [t.name for t in fig.data[-2:]] == ["makespan", "lower bound"]
    # Issue 28: the lines' labels sat over client 0's bar and ran into the panel titles: named in the legend now.
    assert not [a for a in fig.layout.annotations if a.text in ("makespan", "lower bound")]
    table = comparison_table(ss, base="static")
    assert table.loc["static", "gap_closed"] == 0.0


def test_chunked_prefill_schedules_draw_mixed_bars(small_cost):
    from workbench.engine.chunked import simulate_chunked

    trace = synthetic_trace(40, seed=2, output_mean_tokens=12)
    fig = gantt(simulate_chunked(trace, 2, 4, cost_model=small_cost))
    mixed = fig.data[2]
    assert mixed.name == "mixed" and len(mixed.x) > 0 and mixed.showlegend


def _panel_labels(fig) -> list[tuple[str, str]]:
    return [(a.text, a.xref) for a in fig.layout.annotations if a.text in ("makespan", "lower bound")]


def test_compare_labels_the_makespan_and_bound_lines_of_every_panel(small_cost):
    trace = synthetic_trace(50, seed=4)
    ss = {p: simulate(trace, 2, 4, p, small_cost) for p in ("static", "continuous")}
    fig = gantt_compare(ss)
    # one makespan line (dotted) and one lower-bound line (dashed) per panel, each on its own panel's time
    # axis, named once in the legend (labels on the chart sat over client 0's bar and the panels' titles)
    lines = sorted((shape.line.dash, shape.xref) for shape in fig.layout.shapes)
    assert lines == [("dash", "x"), ("dash", "x2"), ("dot", "x"), ("dot", "x2")]
    assert {t.name: t.line.dash for t in fig.data if t.type == "scatter"} == {"makespan": "dot", "lower bound": "dash"}
    single = gantt(ss["static"])
    assert sorted(t for t, _ in _panel_labels(single)) == ["lower bound", "makespan"]


def test_gantt_charts_carry_a_caption_that_reports_print(small_cost, tmp_path):
    from workbench.viz.figures import GANTT_CAPTION
    from workbench.viz.report import write_report

    trace = synthetic_trace(30, seed=4)
    s = simulate(trace, 2, 4, "continuous", small_cost)
    for fig in (gantt(s), gantt_compare({"a": s, "b": s})):
        assert fig.layout.meta["caption"] == GANTT_CAPTION
    for words in ("prefill", "decode", "paler", "dotted", "makespan", "dashed", "lower bound"):
        assert words in GANTT_CAPTION
    html = write_report(tmp_path / "r.html", "t", [("Gantt", gantt(s))]).read_text()
    assert "class='caption'" in html and "dotted black line is the makespan" in html


def test_preemptions_are_drawn_as_ticks():
    import workbench

    s = workbench.simulate("gsm8k-test", 8, 16, "vllm", "llama-65b", kv_capacity_tokens=3000)
    fig = gantt(s)
    ticks = next(t for t in fig.data if t.name == "preempt")
    pre = s.timeline[s.timeline["kind"] == "preempt"]
    assert len(ticks.x) == len(pre) == s.metrics["preemptions"] > 0
    import numpy as np

    centres = np.sort(np.asarray(ticks.base, dtype=float) + np.asarray(ticks.x, dtype=float) / 2)
    np.testing.assert_allclose(centres, np.sort(pre["start_s"].to_numpy()), rtol=1e-12)  # centred on each moment


def test_load_sweep_figures_read_in_words_units_and_keep_coinciding_curves_visible():
    """Issue 28: raw names as titles (ttft_s_p99), log ticks all labelled "5", SLO curves that coincide (two
    policies at 100%) drawn one over the other unseen, attainment as a fraction on an unlabelled axis."""
    from workbench.studies.loadsweep import load_sweep_figure

    table = pd.DataFrame({"load": [0.5, 0.9, 0.5, 0.9], "policy": ["a", "a", "b", "b"],
                          "ttft_s_p99": [0.05, 50.0, 0.5, 5.0], "slo_attainment": [1.0, 1.0, 1.0, 1.0]})
    ttft = load_sweep_figure(table, "ttft_s_p99")
    assert ttft.layout.yaxis.title.text == "TTFT p99 (s)" and "ttft_s_p99" not in ttft.layout.title.text
    assert {"0.05", "0.5", "5", "50"} <= set(ttft.layout.yaxis.ticktext)
    slo = load_sweep_figure(table, "slo_attainment", log_y=False)
    assert slo.layout.yaxis.tickformat.endswith("%") and slo.layout.yaxis.title.text == "SLO attainment (%)"
    styles = {(t.marker.symbol, t.line.dash) for t in slo.data}
    assert len(styles) == len(slo.data) == 2  # the same points, told apart by marker and dash
