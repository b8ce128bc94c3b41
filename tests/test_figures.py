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
    assert names == ["prefill", "decode", "mixed"]
    assert [t.showlegend for t in fig.data] == [True, True, False]  # no mixed iterations here
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
    assert len(fig.data) == 6
    table = comparison_table(ss, base="static")
    assert table.loc["static", "gap_closed"] == 0.0


def test_chunked_prefill_schedules_draw_mixed_bars(small_cost):
    from workbench.engine.chunked import simulate_chunked

    trace = synthetic_trace(40, seed=2, output_mean_tokens=12)
    fig = gantt(simulate_chunked(trace, 2, 4, cost_model=small_cost))
    mixed = fig.data[2]
    assert mixed.name == "mixed" and len(mixed.x) > 0 and mixed.showlegend
