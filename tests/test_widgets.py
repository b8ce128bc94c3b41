"""The widgets, headless: controls changed programmatically, figures checked through their data.

No test relies on a timer except the one that checks the debouncer itself;
the explorer is refreshed with its synchronous ``refresh()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

pytest.importorskip("ipywidgets")

from workbench import cli
from workbench.errors import ConfigError
from workbench.engine.core import simulate
from workbench.workload.trace import load_trace, synthetic_trace
from workbench.viz.widgets import (
    Debouncer,
    FunctionPanel,
    ScheduleExplorer,
    SolverControls,
    TracePicker,
    metrics_table,
    run_schedule,
    timeline_steps,
    uses_mu,
    uses_solver,
)

BAD_CSV = b"request_id,input_tokens,output_tokens\n1,10,5\n2,abc,3\n"


@pytest.fixture
def explorer() -> ScheduleExplorer:
    return ScheduleExplorer("gsm8k-test", clients=3, batch_size=4, policy="paper-baseline", sample=40, seed=1,
                            debounce_s=0)


def client_rows(fig) -> set[str]:
    return {y for trace in fig.data for y in trace.y}


def test_explorer_updates_the_same_figure_in_place(explorer):
    fig, bars = explorer.figure, explorer.figure.data[1]
    assert isinstance(fig, go.FigureWidget)
    assert client_rows(fig) == {"client 0", "client 1", "client 2"}
    old_x = np.array(bars.x, dtype=float)

    explorer.clients.value = 5          # observers fire; no running loop, so the update is synchronous
    assert explorer.refresh()
    assert explorer.figure is fig and fig.data[1] is bars
    assert client_rows(fig) == {f"client {j}" for j in range(5)}
    assert not np.array_equal(np.array(bars.x, dtype=float), old_x)
    assert explorer.schedule.metrics["clients"] == 5
    assert "5 clients" in explorer.table.value
    assert "up to date" in explorer.status.value

    explorer.policy.value = "hybrid"
    explorer.refresh()
    assert explorer.figure is fig
    assert fig.layout.title.text.startswith("hybrid")
    assert "gap_closed" in explorer.table.value and "paper-baseline" in explorer.table.value


def test_explorer_run_is_the_headless_function(explorer):
    p = explorer.params()
    direct = simulate(p["trace"], p["clients"], p["batch_size"], p["policy"], p["cost_model"])
    assert explorer.run().makespan_s == pytest.approx(direct.makespan_s)
    assert explorer.schedule.makespan_s == pytest.approx(direct.makespan_s)


def test_run_schedule_passes_only_the_parameters_a_policy_uses():
    trace = synthetic_trace(30, seed=2, output_mean_tokens=12)
    base = run_schedule(trace, 2, 4, "paper-baseline", mu=3.0, time_limit=1.0, rel_gap=0.01)
    assert "mu" not in base.metrics["params"] and "time_limit" not in base.metrics["params"]
    online = run_schedule(trace, 2, 4, "online", mu=3.0)
    assert online.metrics["params"]["mu"] == 3.0
    assert uses_mu("hybrid") and uses_solver("hybrid") and not uses_mu("static") and not uses_solver("online")


def test_mu_and_solver_controls_follow_the_policy(explorer):
    assert explorer.mu.disabled and explorer.solver.time_limit.disabled
    explorer.policy.value = "hybrid"
    assert not explorer.mu.disabled and not explorer.solver.time_limit.disabled
    explorer.mu.value = 0.01
    explorer.refresh()
    assert explorer.schedule.metrics["params"]["mu"] == pytest.approx(0.01)


def cli_error(tmp_path: Path, name: str, content: bytes) -> str:
    """The one line ``workbench simulate --trace NAME`` prints for a bad file, after 'error: '."""
    (tmp_path / name).write_bytes(content)
    err = io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stderr(err):
            status = cli.main(["simulate", "--trace", name, "--out", "out"])
    finally:
        os.chdir(cwd)
    assert status == 2 and not (tmp_path / "out").exists()
    return err.getvalue().strip().split("error: ", 1)[1]


@pytest.mark.parametrize("name, content", [
    ("bad.csv", BAD_CSV),
    ("no-output.csv", b"request_id,input_tokens\n1,10\n"),
    ("empty.csv", b""),
])
def test_bad_upload_shows_the_cli_error_and_keeps_the_result(explorer, tmp_path, name, content):
    expected = cli_error(tmp_path, name, content)
    before_trace, before = explorer.picker.trace, explorer.schedule
    x_before = list(explorer.figure.data[1].x)

    assert explorer.picker.load_file(name, content) is False
    assert explorer.picker.last_error == expected
    assert "error:" in explorer.picker.error.value
    assert explorer.picker.error.value.count("Fix:") == 1
    assert explorer.picker.trace is before_trace
    assert explorer.schedule is before
    assert list(explorer.figure.data[1].x) == x_before


def test_good_upload_replaces_the_trace_and_clears_the_error(explorer):
    explorer.picker.load_file("bad.csv", BAD_CSV)
    good = synthetic_trace(25, seed=5, output_mean_tokens=10).to_csv(index=False).encode()
    assert explorer.picker.load_file("mine.csv", good)
    assert explorer.picker.error.value == ""
    assert explorer.picker.source.value == "upload"
    explorer.refresh()
    assert len(explorer.schedule.requests) == 25
    assert "uploaded mine.csv" in explorer.table.value


def test_trace_picker_sources():
    picker = TracePicker("gsm8k-test", sample=30, seed=0)
    assert len(picker.trace) == 30
    seen = []
    picker.on_change(lambda p: seen.append(len(p.trace)))
    picker.source.value = "synthetic"
    picker.n_requests.value = 17
    assert seen[-1] == 17 and "synthetic" in picker.label
    picker.source.value = "upload"          # nothing uploaded yet: the trace stays
    assert len(picker.trace) == 17
    picker.source.value = "shipped"
    picker.sample.value = 0
    assert len(picker.trace) == len(load_trace("gsm8k-test"))


def test_error_during_a_run_keeps_the_previous_result(explorer, monkeypatch):
    before = explorer.schedule
    y_before = list(explorer.figure.data[0].y)

    def broken(**_):
        raise ConfigError("the solver ran away.", field="time_limit", fix="try again.")

    monkeypatch.setattr("workbench.viz.widgets.run_schedule", broken)
    assert explorer.refresh() is False
    assert "field &#x27;time_limit&#x27;: the solver ran away." in explorer.error.value
    assert explorer.schedule is before and list(explorer.figure.data[0].y) == y_before


def test_timeline_player_clips_and_restores(explorer):
    player, fig = explorer.player, explorer.figure
    full = [np.array(t.x, dtype=float) for t in fig.data]
    steps = timeline_steps(explorer.schedule)
    assert steps[0] == 0.0 and steps[-1] == pytest.approx(explorer.schedule.makespan_s)
    assert player.slider.max == len(steps) - 1 == player.slider.value

    k = len(steps) // 2
    player.slider.value = k
    t = steps[k]
    for trace in fig.data:
        if trace.x is None or len(trace.x) == 0:
            continue  # a kind this schedule does not have (mixed iterations come from chunked prefill)
        x = np.asarray(trace.x, dtype=float)
        end = np.asarray(trace.base, dtype=float) + x
        assert np.all((x == 0) | (end <= t + 1e-9))  # bars after t have zero width
        assert np.any(x == 0) and np.any(x > 0)
    assert any(s.name == "cursor" and s.x0 == pytest.approx(t) for s in fig.layout.shapes)
    finished = int((explorer.schedule.requests["finish_s"] <= t + 1e-12).sum())
    assert f"{finished:,} of" in player.label.value

    player.slider.value = len(steps) - 1
    for trace, x in zip(fig.data, full):
        assert np.allclose(np.asarray(trace.x, dtype=float), x)
    assert not any(s.name == "cursor" for s in fig.layout.shapes)

    player.slider.value = 0     # a new schedule moves the cursor back to the end
    explorer.clients.value = 2
    explorer.refresh()
    assert player.slider.value == player.slider.max


def test_timeline_steps_are_thinned_on_large_instances():
    s = simulate("gsm8k-test", 8, 16, "paper-baseline", "llama-65b")
    steps = timeline_steps(s, max_steps=100)
    assert len(steps) == 101 and np.all(np.diff(steps) > 0)


def test_debouncer_runs_once_after_a_burst():
    calls = []

    async def burst():
        d = Debouncer(lambda: calls.append(1), 0.05)
        for _ in range(10):
            d.trigger()
        assert d.pending and not calls
        await asyncio.sleep(0.3)
        assert not d.pending

    asyncio.run(burst())
    assert calls == [1]
    Debouncer(lambda: calls.append(2), 0.05).trigger()   # no running loop: at once
    assert calls == [1, 2]


def test_solver_controls_give_solver_keywords():
    controls = SolverControls(time_limit=3.0, rel_gap=1e-2)
    assert controls.value == pytest.approx({"time_limit": 3.0, "rel_gap": 1e-2})


def test_function_panel_tables_figures_and_errors():
    import ipywidgets as w

    n = w.IntSlider(value=3, min=1, max=10)
    panel = FunctionPanel(lambda n: pd.DataFrame({"square": [n * n]}), {"n": n}, debounce_s=0)
    assert "<td>9</td>" in panel.output.value
    n.value = 4
    assert "<td>16</td>" in panel.output.value

    def figure(k):
        if k < 0:
            raise ConfigError("k is negative.", field="k")
        return go.Figure(go.Scatter(x=[0, 1], y=[0, k]))

    k = w.IntSlider(value=1, min=-2, max=5)
    panel = FunctionPanel(figure, {"k": k}, debounce_s=0)
    fig = panel.figure
    k.value = 3
    assert panel.figure is fig and list(fig.data[0].y) == [0, 3]
    k.value = -1
    assert "k is negative" in panel.error.value and list(fig.data[0].y) == [0, 3]


def test_metrics_table_gap_closed():
    trace = synthetic_trace(40, seed=3, output_mean_tokens=16)
    base = run_schedule(trace, 2, 4, "paper-baseline")
    table = metrics_table(run_schedule(trace, 2, 4, "static"), base)
    assert list(table.index) == ["static", "paper-baseline"]
    assert table.loc["paper-baseline", "gap_closed"] == 0.0


# -- the dashboard command, without a browser -------------------------------------------------
def test_dashboard_command_is_registered_and_its_notebook_ships():
    from workbench.cli.dashboard import dashboard_notebook, voila_command

    args = cli.build_parser().parse_args(["dashboard", "--port", "8123", "--no-browser"])
    assert args.port == 8123 and args.no_browser
    nb = json.loads(dashboard_notebook().read_text(encoding="utf-8"))
    assert any("dashboard(" in "".join(c["source"]) for c in nb["cells"])
    command = voila_command(dashboard_notebook(), 8123)
    assert "--Voila.ip=127.0.0.1" in command and "--no-browser" in command and "--port=8123" in command


def test_dashboard_refuses_a_busy_or_invalid_port(capsys):
    pytest.importorskip("voila")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert cli.main(["dashboard", "--port", str(port), "--no-browser"]) == 2
    assert "already in use" in capsys.readouterr().err
    assert cli.main(["dashboard", "--port", "70000", "--no-browser"]) == 2
    assert "out of range" in capsys.readouterr().err


@pytest.mark.parametrize("filename, shown", [("..", "upload.csv"), ("x\x00.csv", "x.csv"),
                                             ("../../elsewhere/ok.csv", "ok.csv"), ("C:\\data\\t.csv", "t.csv")])
def test_upload_file_names_are_only_shown_never_trusted(filename, shown):
    picker = TracePicker("gsm8k-test", sample=10)
    good = b"request_id,input_tokens,output_tokens\n0,5,5\n1,6,6\n"
    assert picker.load_file(filename, good)
    assert picker.label == f"uploaded {shown}" and len(picker.trace) == 2
    assert picker.load_file("a" * 300 + ".csv", good)
    assert len(picker.label) < 140


def test_dashboard_culls_idle_kernels_preheats_one_and_uses_a_template_without_cdn():
    from workbench.cli.dashboard import CULL_IDLE_S, TEMPLATE, dashboard_notebook, template_root, voila_command, \
        voila_env

    command = voila_command(dashboard_notebook(), 8123, cull_idle_s=30, cull_interval_s=5, pool_size=1)
    assert "--MappingKernelManager.cull_idle_timeout=30" in command
    assert "--MappingKernelManager.cull_interval=5" in command
    # the kept-ready kernel is replaced only after its page has drawn (preheating beside it slowed the page)
    from workbench.cli.dashboard import FILL_DELAY_S

    assert f"--VoilaKernelManager.fill_delay={FILL_DELAY_S:g}" in command and FILL_DELAY_S >= 3
    assert not any("fill_delay" in a for a in voila_command(dashboard_notebook(), 8123, pool_size=0))
    assert "--MappingKernelManager.cull_connected=False" in command  # an open page keeps its kernel
    assert "--preheat_kernel=True" in command and "--pool_size=1" in command
    assert not any("preheat" in c for c in voila_command(dashboard_notebook(), 8123, pool_size=0))
    assert f"--template={TEMPLATE}" in command and CULL_IDLE_S >= 60  # longer than a pool kernel takes to start
    folder = template_root() / "voila" / "templates" / TEMPLATE
    assert json.loads((folder / "conf.json").read_text())["base_template"] == "lab"
    text = (folder / "index.html.j2").read_text()
    assert "replace(" in text and "fontawesome" in text  # the CDN links it removes
    assert str(template_root()) in voila_env()["JUPYTER_PATH"].split(os.pathsep)
    # the page imports Plotly's bundle at its load event: the template includes the fragment written beside it
    from workbench.cli.dashboard import EARLY_IMPORT_TEMPLATE, plotly_bundle_root

    assert f'include "{EARLY_IMPORT_TEMPLATE}"' in text
    root, path, basic = plotly_bundle_root()
    fragment = (root / "voila" / "templates" / TEMPLATE / EARLY_IMPORT_TEMPLATE).read_text()
    # the bundle the Gantt chart draws with: the basic build where it fits the installed Plotly
    assert '"load"' in fragment and (basic or path) in fragment and str(root) in voila_env()["JUPYTER_PATH"]


@pytest.mark.parametrize("argv, needle", [(["--cull-idle", "0"], "--cull-idle"),
                                          (["--cull-interval", "0.5"], "--cull-interval"),
                                          (["--pool-size", "-1"], "--pool-size")])
def test_dashboard_refuses_bad_kernel_options(argv, needle, capsys):
    pytest.importorskip("voila")
    assert cli.main(["dashboard", "--no-browser", *argv]) == 2
    assert needle in capsys.readouterr().err


def test_explorer_chart_follows_its_container():
    from workbench.viz.widgets import responsive

    fig = responsive(go.FigureWidget(go.Figure(layout={"width": 1370})))
    assert fig.layout.autosize is True and fig.layout.width is None
    assert fig._config["responsive"] is True


def test_dashboard_page_skips_extensions_it_does_not_use():
    from workbench.cli.dashboard import EXTENSION_DENYLIST, dashboard_notebook, voila_command

    command = voila_command(dashboard_notebook(), 8123)
    assert "jupyterlab-plotly" in EXTENSION_DENYLIST  # the chart is a FigureWidget (anywidget), not a mime output
    for name in EXTENSION_DENYLIST:
        assert f"--VoilaConfiguration.extension_denylist={name}" in command
    assert not any("anywidget" in c or "jupyter-widgets" in c for c in command)


def test_a_control_change_keeps_the_chart_autosized():
    """Issue 28: after a control change the chart stayed 1,370 px wide at 800 px.  Plotly.js fixes ``width`` when
    a relayout sets ``height`` without naming width; every such message must say width null, autosize true."""
    from workbench.viz.widgets import responsive

    fig = responsive(go.FigureWidget(go.Figure(go.Bar(x=[1], y=["client 0"]), layout={"height": 300})))
    sent = []
    fig.observe(lambda change: sent.append(change["new"]) if change["new"] else None,
                names=["_py2js_update", "_py2js_relayout"])
    with fig.batch_update():  # what update_gantt does when the client count changes
        fig.data[0].x = [2]
        fig.layout.height = 500
    fig.layout.height = 600  # a lone relayout
    layouts = [m.get("relayout_data") or m.get("layout_data") for m in sent]
    assert len(layouts) == 2, sent
    for layout in layouts:
        assert "height" in layout and layout["width"] is None and layout["autosize"] is True, layout
    fig.layout.title.text = "no height"  # a relayout that leaves the size alone is sent as it is
    assert "width" not in (sent[-1].get("relayout_data") or sent[-1].get("layout_data"))


def test_the_dashboard_template_can_render_the_servers_error_page():
    """Issue 28: Voila's log showed TemplateNotFound: '500.html' where the error page should have been."""
    from workbench.cli.dashboard import KERNEL_MANAGER, TEMPLATE, template_root, voila_command, dashboard_notebook

    page = template_root() / "voila" / "templates" / TEMPLATE / "500.html"
    assert '{% extends "error.html" %}' in page.read_text()
    assert f"--VoilaConfiguration.multi_kernel_manager_class={KERNEL_MANAGER}" in voila_command(dashboard_notebook(),
                                                                                                8123)


def test_figure_widget_fetches_plotly_as_a_file_only_where_the_dashboard_serves_it(monkeypatch):
    """Issue 28: every dashboard page received Plotly's 5 MB widget bundle as widget state and compiled it
    afresh; where ``workbench dashboard`` serves the bundle, the widget's module is a loader of that file."""
    import plotly.graph_objects as go

    from workbench.cli.dashboard import COMPILE_HINT, voila_env
    from workbench.viz.widgets import PLOTLY_BUNDLE_ENV, figure_widget

    monkeypatch.delenv(PLOTLY_BUNDLE_ENV, raising=False)
    plain = figure_widget(go.Figure())
    assert type(plain).__name__ == "FigureWidget" and len(plain._esm) > 1_000_000  # JupyterLab, nbval: Plotly's own
    env = voila_env()
    served = env["JUPYTER_PATH"].split(os.pathsep)[1]
    path = env[PLOTLY_BUNDLE_ENV]
    file, _, version = path.partition("?v=")
    bundle = Path(served) / file
    assert bundle.is_file() and bundle.stat().st_size > 1_000_000  # the installed Plotly's own bundle
    # V8 compiles it eagerly, off the main thread; the versioned URL may be cached
    assert bundle.read_bytes().startswith(COMPILE_HINT.encode()) and version
    monkeypatch.setenv(PLOTLY_BUNDLE_ENV, path)
    fig = figure_widget(go.Figure(go.Bar(x=[1], y=[2])))
    assert isinstance(fig, go.FigureWidget) and len(fig._esm) < 1_000 and path in fig._esm
    assert fig.data[0].y == (2,)


def test_the_gantt_chart_loads_the_basic_plotly_build_and_other_figures_the_full_one(monkeypatch):
    """Issue 28: a first render spent about 0.5 s compiling and running the whole of plotly.js (maps, 3-D,
    WebGL) to draw bars and lines; the dashboard serves plotly.js's basic build for figures it can draw."""
    import hashlib

    import plotly
    import plotly.graph_objects as go

    from workbench.cli.dashboard import COMPILE_HINT, voila_env
    from workbench.viz.figures import gantt
    from workbench.viz.widgets import (BASIC_BUNDLE, BASIC_PROVENANCE, PLOTLY_BASIC_BUNDLE_ENV, PLOTLY_BUNDLE_ENV,
                                       FunctionPanel, basic_traces, figure_widget, run_schedule)
    import ipywidgets

    built = json.loads(BASIC_PROVENANCE.read_text())
    data = BASIC_BUNDLE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == built["sha256"] and len(data) == built["bytes"] < 2_000_000
    assert basic_traces() == {"bar", "pie", "scatter"}
    env = voila_env()
    if built["plotly"] != plotly.__version__:  # another Plotly: its own full bundle only
        assert PLOTLY_BASIC_BUNDLE_ENV not in env
        pytest.skip(f"the basic build is for plotly {built['plotly']}, this is {plotly.__version__}")
    full, basic = env[PLOTLY_BUNDLE_ENV], env[PLOTLY_BASIC_BUNDLE_ENV]
    served = Path(env["JUPYTER_PATH"].split(os.pathsep)[1]) / basic.partition("?v=")[0]
    assert served.read_bytes() == COMPILE_HINT.encode() + data
    monkeypatch.setenv(PLOTLY_BUNDLE_ENV, full)
    monkeypatch.setenv(PLOTLY_BASIC_BUNDLE_ENV, basic)
    from workbench.workload.trace import load_trace

    chart = figure_widget(gantt(run_schedule(load_trace("gsm8k-test").iloc[:40], clients=2, batch_size=4)))
    assert {t.type for t in chart.data} <= {"bar", "scatter"} and basic in chart._esm and full not in chart._esm
    heat = figure_widget(go.Figure(go.Heatmap(z=[[1, 2]])))
    assert full in heat._esm and basic not in heat._esm
    # a panel whose figure turns into one the basic build cannot draw gets a new widget, on the full bundle
    kind = {"trace": "bar"}
    panel = FunctionPanel(lambda n: go.Figure(go.Bar(y=[n]) if kind["trace"] == "bar" else go.Heatmap(z=[[n]])),
                          {"n": ipywidgets.IntSlider(value=2, min=1, max=5)}, debounce_s=0)
    first = panel.figure
    assert basic in first._esm
    kind["trace"] = "heatmap"
    panel.refresh()
    assert panel.figure is not first and full in panel.figure._esm
