import plotly.graph_objects as go

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
    assert len(fig.data) == 8  # four kinds per panel (prefill, decode, mixed, preempt)
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
    labels = _panel_labels(fig)
    # one "makespan" and one "lower bound" label per panel, each on its own panel's time axis
    assert sorted(labels) == sorted([("lower bound", "x"), ("makespan", "x"), ("lower bound", "x2"),
                                     ("makespan", "x2")])
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
