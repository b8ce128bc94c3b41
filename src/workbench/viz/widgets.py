"""Interactive controls for notebooks and the dashboard (ipywidgets + Plotly ``FigureWidget``).

Every widget here is a thin wrapper around a function that runs without
widgets, so whatever a user sees in a control can be reproduced in one line
of Python (STYLE.md: "a widget is a three-line wrapper"):

* :func:`run_schedule` - the headless function behind :class:`ScheduleExplorer`
  (trace, clients, batch size, policy, ``mu``, cost model, solver limits ->
  :class:`~workbench.schedule.schema.Schedule`);
* :func:`metrics_table` - the table under the Gantt chart.

The widgets:

* :class:`TracePicker` - a shipped trace (optionally a seeded sample of it), a
  seeded synthetic trace, or the user's own file through an upload.  A
  malformed upload shows the same one-line error as the command line and
  keeps the previous trace.
* :class:`SolverControls` - MIP time limit and relative gap.
* :class:`TimelinePlayer` - a time cursor (``Play`` + slider) that clips the
  Gantt chart at time ``t`` so the timeline unfolds event by event.
* :class:`ScheduleExplorer` - all of the above, a Gantt ``FigureWidget`` and a
  metrics table, updated *in place* (one figure for the widget's lifetime,
  :func:`workbench.viz.figures.update_gantt` inside ``batch_update``), with a
  busy indicator and a debounce so dragging a slider re-simulates once, when
  the slider stops.
* :class:`FunctionPanel` - any function of control values whose result (a
  table, a figure, text) is shown in place; used by the teaching notebooks.

Tests and scripts call :meth:`ScheduleExplorer.refresh` to update
synchronously; the debounce only applies to changes made in a browser.
"""

from __future__ import annotations

import asyncio
import functools
import html
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

try:
    import ipywidgets as widgets
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("workbench.viz.widgets needs ipywidgets: pip install 'llm-sched-workbench[notebooks]'") from exc
import plotly.graph_objects as go

from workbench.costmodel.linear import list_presets
from workbench.errors import ConfigError, WorkbenchError
from workbench.viz.figures import gantt, gantt_data, update_gantt
from workbench.schedule.metrics import gap_closed
from workbench.policies.registry import POLICIES, list_policies
from workbench.schedule.schema import Schedule
from workbench.workload.trace import list_traces, load_trace, sample_trace, synthetic_trace

try:  # the online stage registers the "online" and "hybrid" policies the controls offer
    import workbench.policies.lagrangian  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover - only while the module is absent
    if exc.name != "workbench.policies.lagrangian":
        raise

__all__ = [
    "Debouncer",
    "FunctionPanel",
    "ScheduleExplorer",
    "SolverControls",
    "TimelinePlayer",
    "TracePicker",
    "dashboard",
    "metrics_table",
    "run_schedule",
    "uses_mu",
    "uses_solver",
]

#: The baseline every explored schedule is compared with in the metrics table.
BASELINE = "paper-baseline"
#: Seconds a control must stay still before the explorer re-simulates.
DEBOUNCE_S = 0.15
#: Most steps the time cursor offers (events are merged beyond this).
MAX_PLAYER_STEPS = 300


# -- the headless functions --------------------------------------------------------------
def uses_mu(policy: str) -> bool:
    """True when ``policy`` takes the Lagrangian price multiplier ``mu``."""
    p = POLICIES.get(policy)
    return p is not None and ("mu" in p.params or p.rule not in ("static", "continuous"))


def uses_solver(policy: str) -> bool:
    """True when ``policy`` runs the offline bin-packing stage (so a time limit and gap apply)."""
    p = POLICIES.get(policy)
    return p is not None and p.dispatch == "offline"


def run_schedule(trace: pd.DataFrame | str = "gsm8k-test", clients: int = 8, batch_size: int = 16,
                 policy: str = BASELINE, cost_model: str = "llama-65b", *, mu: float | None = None,
                 time_limit: float | None = None, rel_gap: float | None = None) -> Schedule:
    """Simulate one instance: the function every :class:`ScheduleExplorer` control feeds.

    ``mu`` is passed only to policies that use it, ``time_limit`` and
    ``rel_gap`` only to policies with an offline stage, so the recorded
    parameters of a baseline stay clean.
    """
    from workbench.engine.core import simulate

    params: dict[str, Any] = {}
    if mu is not None and uses_mu(policy):
        params["mu"] = float(mu)
    if uses_solver(policy):
        if time_limit is not None:
            params["time_limit"] = float(time_limit)
        if rel_gap is not None:
            params["rel_gap"] = float(rel_gap)
    return simulate(trace, int(clients), int(batch_size), policy, cost_model, **params)


def metrics_table(schedule: Schedule, baseline: Schedule | None = None) -> pd.DataFrame:
    """Headline metrics of ``schedule`` (and of ``baseline``, with the gap closed), one row each."""
    keys = ("makespan_s", "lower_bound_s", "gap", "slot_utilization", "busy_utilization")
    rows = {schedule.policy: {k: schedule.metrics[k] for k in keys}}
    if baseline is not None:
        name = baseline.policy if baseline.policy != schedule.policy else f"{baseline.policy} (baseline)"
        rows[name] = {k: baseline.metrics[k] for k in keys}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "policy"
    if baseline is not None:
        lb = max(schedule.metrics["lower_bound_s"], baseline.metrics["lower_bound_s"])
        table["gap_closed"] = [gap_closed(baseline.makespan_s, t, lb) for t in table["makespan_s"]]
    return table


def _table_html(table: pd.DataFrame, caption: str = "") -> str:
    fmt = {"makespan_s": "{:.3f}", "lower_bound_s": "{:.3f}", "gap": "{:.2%}", "slot_utilization": "{:.1%}",
           "busy_utilization": "{:.1%}", "gap_closed": "{:.1%}"}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [table.index.name or ""] + list(table.columns))
    body = ""
    for idx, row in table.iterrows():
        cells = "".join(f"<td>{_fmt(fmt.get(c), v)}</td>" for c, v in row.items())
        body += f"<tr><th>{html.escape(str(idx))}</th>{cells}</tr>"
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (f"<table class='wb-table' style='border-collapse:collapse;font-size:13px'>{cap}"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            "<style>.wb-table th,.wb-table td{padding:3px 10px;text-align:right;border-bottom:1px solid #ddd}"
            ".wb-table caption{text-align:left;color:#555;padding-bottom:4px}</style>")


def _fmt(pattern: str | None, value: Any) -> str:
    if isinstance(value, float) and not np.isfinite(value):
        return "n/a"
    if pattern is None:
        return html.escape(str(value))
    try:
        return pattern.format(value)
    except (ValueError, TypeError):
        return html.escape(str(value))


def _error_html(exc: BaseException) -> str:
    text = html.escape(str(exc))
    return (f"<div class='wb-error-text' style='color:#a4161a;background:#fdecea;border-left:4px solid #a4161a;"
            f"padding:4px 8px;margin:2px 0'><b>error:</b> {text}<br><i>The previous result is kept.</i></div>")


# -- debouncing -------------------------------------------------------------------------------
class Debouncer:
    """Run ``fn`` once, ``delay_s`` after the last of a burst of :meth:`trigger` calls.

    Uses the running asyncio loop (the kernel's, in Jupyter and Voila), so the
    call happens on the kernel's own thread.  Without a running loop (a plain
    script, a test) or with ``delay_s == 0`` it calls ``fn`` at once.
    """

    def __init__(self, fn: Callable[[], Any], delay_s: float = DEBOUNCE_S) -> None:
        self.fn = fn
        self.delay_s = float(delay_s)
        self._handle: asyncio.TimerHandle | None = None

    def trigger(self) -> None:
        self.cancel()
        if self.delay_s <= 0:
            self.fn()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.fn()
            return
        self._handle = loop.call_later(self.delay_s, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self.fn()

    @property
    def pending(self) -> bool:
        return self._handle is not None

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


# -- the trace picker ---------------------------------------------------------------------------
class TracePicker(widgets.VBox):
    """Choose a trace: shipped (optionally a seeded sample), synthetic (seeded), or an uploaded file.

    ``trace`` is always the last *valid* trace and ``label`` describes it.
    Callbacks registered with :meth:`on_change` run when it changes.  An
    upload that breaks the data contract shows the error in ``error`` (the
    same text the command line prints) and changes nothing else.
    """

    SOURCES = ("shipped", "synthetic", "upload")

    def __init__(self, trace: str | pd.DataFrame = "gsm8k-test", *, sample: int = 0, seed: int = 0,
                 synthetic_requests: int = 200, output_mean_tokens: float = 128.0) -> None:
        self._callbacks: list[Callable[[TracePicker], Any]] = []
        names = list_traces()
        given_frame = isinstance(trace, pd.DataFrame)
        self.source = widgets.ToggleButtons(options=list(self.SOURCES),
                                            value="upload" if given_frame else "shipped",
                                            description="trace", style={"button_width": "80px"})
        self.name = widgets.Dropdown(options=names, value=trace if trace in names else names[0],
                                     description="name", layout=widgets.Layout(width="240px"))
        self.sample = widgets.BoundedIntText(value=int(sample), min=0, max=1_000_000, step=10,
                                             description="requests", tooltip="0 = the whole trace",
                                             layout=widgets.Layout(width="170px"))
        self.seed = widgets.BoundedIntText(value=int(seed), min=0, max=2**31 - 1, description="seed",
                                           layout=widgets.Layout(width="150px"))
        self.n_requests = widgets.IntSlider(value=int(synthetic_requests), min=4, max=2000, step=1,
                                            description="requests", continuous_update=False)
        self.output_mean = widgets.FloatLogSlider(value=float(output_mean_tokens), base=10, min=0.5, max=3.3,
                                                  step=0.05, description="mean output", continuous_update=False,
                                                  readout_format=".0f", style={"description_width": "initial"})
        self.upload = widgets.FileUpload(accept=".csv,.parquet,.jsonl,.json", multiple=False,
                                         description="upload trace")
        self.upload_note = widgets.HTML("<small>columns: request_id, input_tokens, output_tokens[, arrival_s]</small>")
        self.error = widgets.HTML("")
        self.error.add_class("wb-trace-error")
        self.info = widgets.HTML("")
        # The seed serves both the sample of a shipped trace and the synthetic generator.
        self.shipped_box = widgets.HBox([self.name, self.sample, self.seed])
        self.synthetic_box = widgets.HBox([self.n_requests, self.output_mean, self.seed])
        self.upload_box = widgets.HBox([self.upload, self.upload_note])
        super().__init__([self.source, self.shipped_box, self.synthetic_box, self.upload_box, self.info, self.error])
        self.add_class("wb-trace-picker")

        self.trace: pd.DataFrame
        self.label: str
        if given_frame:
            self.trace, self.label = load_trace(trace), "the given table"
            self._uploaded: tuple[pd.DataFrame, str] | None = (self.trace, self.label)
        else:
            self._uploaded = None
            if trace not in names:
                self.trace, self.label = load_trace(trace), str(trace)
                self._uploaded = (self.trace, self.label)
                self.source.value = "upload"
            else:
                self.trace, self.label = self._build()
        self._show_boxes()
        self._update_info()
        for w in (self.name, self.sample, self.seed, self.n_requests, self.output_mean):
            w.observe(self._on_control, names="value")
        self.source.observe(self._on_source, names="value")
        self.upload.observe(self._on_upload, names="value")

    # the headless part: (source, settings) -> trace
    def _build(self) -> tuple[pd.DataFrame, str]:
        if self.source.value == "shipped":
            trace = load_trace(self.name.value)
            n = int(self.sample.value)
            if 0 < n < len(trace):
                return sample_trace(trace, n, seed=int(self.seed.value)), \
                    f"{self.name.value}, {n} requests sampled with seed {self.seed.value}"
            return trace, self.name.value
        if self.source.value == "synthetic":
            n = int(self.n_requests.value)
            trace = synthetic_trace(n, seed=int(self.seed.value), output_mean_tokens=float(self.output_mean.value))
            return trace, f"synthetic, {n} requests, seed {self.seed.value}"
        if self._uploaded is None:
            raise ConfigError("no file uploaded yet.", field="trace", fix="choose a CSV file with 'upload trace'.")
        return self._uploaded

    def on_change(self, callback: Callable[[TracePicker], Any]) -> None:
        """Call ``callback(picker)`` whenever the trace changes."""
        self._callbacks.append(callback)

    def _set(self, trace: pd.DataFrame, label: str) -> None:
        self.trace, self.label = trace, label
        self.error.value = ""
        self._update_info()
        for cb in self._callbacks:
            cb(self)

    def _rebuild(self) -> None:
        try:
            trace, label = self._build()
        except WorkbenchError as exc:
            self.error.value = _error_html(exc)
            return
        self._set(trace, label)

    def _on_control(self, change) -> None:
        self._rebuild()

    def _on_source(self, change) -> None:
        self._show_boxes()
        if change["new"] == "upload" and self._uploaded is None:
            return  # wait for a file; keep the current trace
        self._rebuild()

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        f = files[0]
        self.load_file(f["name"], bytes(f["content"]))

    def load_file(self, filename: str, content: bytes) -> bool:
        """Load an uploaded file's bytes; on a bad file show the error and keep the current trace.

        The file is read exactly as ``workbench simulate --trace FILENAME``
        reads it (through :func:`workbench.workload.trace.load_trace`, from a
        temporary folder), and the error names ``FILENAME``, not the
        temporary path, so the message matches the command line's.
        Returns True when the trace was accepted.
        """
        shown, stored = _upload_names(filename)
        with tempfile.TemporaryDirectory(prefix="workbench-upload-") as tmp:
            path = Path(tmp) / stored
            path.write_bytes(content)
            try:
                trace = load_trace(path)
            except WorkbenchError as exc:
                for attr in ("message", "fix"):
                    value = getattr(exc, attr, None)
                    if isinstance(value, str):
                        setattr(exc, attr, value.replace(str(path), shown))
                self.error.value = _error_html(exc)
                self.last_error = str(exc)
                return False
        safe = shown
        self._uploaded = (trace, f"uploaded {safe}")
        if self.source.value != "upload":
            self.source.unobserve(self._on_source, names="value")
            self.source.value = "upload"
            self.source.observe(self._on_source, names="value")
            self._show_boxes()
        self._set(trace, f"uploaded {safe}")
        return True

    def _show_boxes(self) -> None:
        src = self.source.value
        for box, name in ((self.shipped_box, "shipped"), (self.synthetic_box, "synthetic"), (self.upload_box, "upload")):
            box.layout.display = "" if src == name else "none"

    def _update_info(self) -> None:
        t = self.trace
        self.info.value = (f"<small>{html.escape(self.label)}: {len(t):,} requests, mean input "
                           f"{t['input_tokens'].mean():.0f} tokens, mean output {t['output_tokens'].mean():.0f} "
                           "tokens</small>")


_UPLOAD_SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson", ".json")


def _upload_names(filename: str) -> tuple[str, str]:
    """(name shown to the user, name the upload is stored under in its temporary folder).

    The browser sends the file's own name, which may hold a path, NUL bytes,
    '..' or more than a file system allows; it is only ever used in messages.
    The stored name is short and safe and keeps the suffix that picks the reader.
    """
    base = str(filename).replace("\x00", "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    shown = base if base not in ("", ".", "..") else "upload.csv"
    if len(shown) > 120:
        shown = shown[:100] + "…" + shown[-16:]
    suffix = Path(base).suffix.lower() if base not in ("", ".", "..") else ""
    stored = "upload" + (suffix if suffix in _UPLOAD_SUFFIXES else ".csv")
    return shown, stored


# -- solver limits ------------------------------------------------------------------------------
class SolverControls(widgets.HBox):
    """Time limit (seconds) and relative MIP gap for every solve a control triggers."""

    def __init__(self, time_limit: float = 2.0, rel_gap: float = 1e-3, *, max_time_limit: float = 60.0) -> None:
        self.time_limit = widgets.FloatLogSlider(value=float(time_limit), base=10, min=-1,
                                                 max=float(np.log10(max_time_limit)), step=0.1,
                                                 description="time limit (s)", readout_format=".1f",
                                                 continuous_update=False, style={"description_width": "initial"})
        self.rel_gap = widgets.FloatLogSlider(value=float(rel_gap), base=10, min=-5, max=-0.5, step=0.25,
                                              description="MIP gap", readout_format=".0e",
                                              continuous_update=False)
        super().__init__([self.time_limit, self.rel_gap])
        self.add_class("wb-solver")

    @property
    def value(self) -> dict[str, float]:
        """``{"time_limit": ..., "rel_gap": ...}``, the keyword arguments the solvers take."""
        return {"time_limit": float(self.time_limit.value), "rel_gap": float(self.rel_gap.value)}

    def observe_values(self, handler: Callable, **kwargs) -> None:
        for w in (self.time_limit, self.rel_gap):
            w.observe(handler, names="value", **kwargs)


# -- time cursor -------------------------------------------------------------------------------
def timeline_steps(schedule: Schedule, max_steps: int = MAX_PLAYER_STEPS) -> np.ndarray:
    """The times the cursor stops at: 0, then every iteration end (thinned to ``max_steps``)."""
    ends = np.unique(np.round(schedule.timeline["end_s"].to_numpy(float), 12))
    if len(ends) > max_steps:
        ends = ends[np.linspace(0, len(ends) - 1, max_steps).round().astype(int)]
    return np.concatenate([[0.0], ends])


#: Set by ``workbench dashboard`` for its kernels: the path, under the server's base URL, where the page can
#: fetch Plotly's widget bundle as a file (see :func:`figure_widget`).
PLOTLY_BUNDLE_ENV = "WORKBENCH_PLOTLY_WIDGET_PATH"
#: Set beside it where the dashboard also serves the basic build of that bundle (:data:`BASIC_BUNDLE`).
PLOTLY_BASIC_BUNDLE_ENV = "WORKBENCH_PLOTLY_BASIC_WIDGET_PATH"
#: Plotly's widget built with plotly.js's basic bundle, a quarter of the full one's size, and its provenance:
#: the plotly version it was built for and the trace types it draws (``scripts/build_plotly_basic.py``).
BASIC_BUNDLE = Path(__file__).parent / "plotly_basic" / "widgetbundle-basic.js"
BASIC_PROVENANCE = BASIC_BUNDLE.with_name("provenance.json")
_SERVED_BUNDLE_CLASSES: dict[str, type] = {}


@functools.lru_cache(maxsize=1)
def basic_traces() -> frozenset[str]:
    import json

    return frozenset(json.loads(BASIC_PROVENANCE.read_text())["traces"])


def figure_widget(figure) -> go.FigureWidget:
    """``go.FigureWidget(figure)``; in the dashboard, one whose browser side is fetched as a file.

    A FigureWidget carries Plotly's 5 MB widget bundle in its state, so every page of the dashboard
    received it over the kernel's socket and compiled it afresh (about 1 s of a first render on 2 cores).
    Where the dashboard serves that bundle as a static file (it sets :data:`PLOTLY_BUNDLE_ENV`), the
    widget's module is a short loader that imports the file (and draws once the widget's element has a
    width): the browser caches the file, and compiles it once per visit at most.  A figure whose traces are
    all of the basic build's types (bars, pies, scatter: the Gantt chart) loads that build instead, where the
    dashboard serves it (:data:`PLOTLY_BASIC_BUNDLE_ENV`).  Anywhere else (JupyterLab, nbval) the widget is
    Plotly's own.
    """
    return served_class(figure)(figure)


def served_bundle(figure) -> str | None:
    """The path of the bundle a widget of ``figure`` loads in the dashboard (None: Plotly's own widget)."""
    import os

    basic = os.environ.get(PLOTLY_BASIC_BUNDLE_ENV)
    if basic and all(trace.type in basic_traces() for trace in getattr(figure, "data", ())):
        return basic
    return os.environ.get(PLOTLY_BUNDLE_ENV)


def served_class(figure) -> type:
    """The FigureWidget class :func:`figure_widget` makes for ``figure`` (one class per bundle it loads)."""
    path = served_bundle(figure)
    if not path:
        return go.FigureWidget
    cls = _SERVED_BUNDLE_CLASSES.get(path)
    if cls is None:
        loader = ('const config = JSON.parse(document.getElementById("jupyter-config-data")?.textContent || "{}");\n'
                  'const base = new URL(config.baseUrl || "/", window.location.href);\n'
                  f'const bundle = await import(new URL({path!r}, base).href);\n'
                  # Plotly sizes a plot from its element when it first draws it; a view rendered before the page
                  # has placed its element (no width yet) is drawn at Plotly's default 700 px and stays so.
                  'const laidOut = (el) => new Promise((resolve) => {\n'
                  '  if (el.isConnected && el.clientWidth > 0) return resolve();\n'
                  '  const watch = new ResizeObserver(() => {\n'
                  '    if (el.isConnected && el.clientWidth > 0) { watch.disconnect(); resolve(); }\n'
                  '  });\n'
                  '  watch.observe(el);\n'
                  '});\n'
                  'export default () => {\n'
                  '  const widget = bundle.default();\n'
                  '  return {initialize: (context) => widget.initialize(context),\n'
                  '          async render(context) { await laidOut(context.el); return widget.render(context); }};\n'
                  '};\n')
        cls = type("ServedFigureWidget", (go.FigureWidget,), {"_esm": loader})
        _SERVED_BUNDLE_CLASSES[path] = cls
    return cls


def responsive(fig: go.FigureWidget) -> go.FigureWidget:
    """The widget's chart follows its container: no fixed width, and Plotly's ``responsive`` config, which
    resizes the plot when the window does (a FigureWidget is otherwise drawn once at its first width)."""
    fig.layout.autosize = True
    fig.layout.width = None
    fig._config = {**(fig._config or {}), "responsive": True, "displaylogo": False}
    _keep_autosize(fig)
    return fig


def _with_autosize(layout: dict | None) -> dict | None:
    """A relayout that sets the height, with ``width: null, autosize: true`` added (unless it sets a width).

    Plotly.js answers a relayout of ``height`` by fixing ``width`` at its current value and dropping
    ``autosize`` (its ``doextra`` in ``_relayout``), unless the same relayout names them: so every control
    change that re-sized the Gantt chart (more or fewer clients) froze it at the width it had then, and at
    800 px the chart stayed 1,370 px wide (issue 28).
    """
    if not layout or "height" not in layout or "width" in layout:
        return layout
    return {**layout, "width": None, "autosize": True}


def _keep_autosize(fig: go.FigureWidget) -> None:
    """Make every relayout and update message ``fig`` sends to the browser keep the chart autosized."""
    if getattr(fig, "_workbench_autosize", False):
        return
    send_relayout, send_update = fig._send_relayout_msg, fig._send_update_msg

    def relayout(layout_data, *args, **kwargs):
        return send_relayout(_with_autosize(layout_data), *args, **kwargs)

    def update(restyle_data, relayout_data, *args, **kwargs):
        return send_update(restyle_data, _with_autosize(relayout_data), *args, **kwargs)

    fig._send_relayout_msg, fig._send_update_msg = relayout, update
    fig._workbench_autosize = True


def clip_gantt(fig: go.Figure, full: Mapping[str, Mapping[str, np.ndarray]], t: float) -> None:
    """Show the Gantt chart as it stood at time ``t``: bars clipped at ``t``, a cursor line at ``t``."""
    with fig.batch_update():
        for trace in fig.data:
            d = full[trace.name]
            base = np.asarray(d["base"], dtype=float)
            end = base + np.asarray(d["x"], dtype=float)
            trace.x = np.clip(np.minimum(end, t) - base, 0.0, None)
        shapes = [s for s in fig.layout.shapes if getattr(s, "name", None) != "cursor"]
        shapes.append({"type": "line", "name": "cursor", "x0": t, "x1": t, "y0": 0, "y1": 1, "xref": "x",
                       "yref": "paper", "line": {"color": "#333", "width": 2}})
        fig.layout.shapes = shapes


class TimelinePlayer(widgets.HBox):
    """A time cursor over a Gantt ``FigureWidget``: press play to watch the schedule unfold.

    Steps are the iteration ends (every one on small instances).  At step
    ``k`` the bars are clipped at that time and a line marks it; the label
    counts finished requests.  :meth:`show` is the headless part.
    """

    def __init__(self, fig: go.FigureWidget, schedule: Schedule, *, interval_ms: int = 100) -> None:
        self.fig = fig
        self.play = widgets.Play(value=0, min=0, max=1, step=1, interval=interval_ms, description="play")
        self.slider = widgets.IntSlider(value=0, min=0, max=1, description="time step", readout=False,
                                        layout=widgets.Layout(width="420px"))
        self.label = widgets.HTML("")
        widgets.jslink((self.play, "value"), (self.slider, "value"))
        super().__init__([self.play, self.slider, self.label])
        self.add_class("wb-player")
        self.slider.observe(self._on_step, names="value")
        self.set_schedule(schedule)

    def set_schedule(self, schedule: Schedule) -> None:
        """Follow a new schedule (the figure has already been updated); the cursor goes to the end."""
        self.schedule = schedule
        self.full = gantt_data(schedule)
        self.steps = timeline_steps(schedule)
        self._finish = np.sort(schedule.requests["finish_s"].to_numpy(float))
        last = len(self.steps) - 1
        self._quiet = True
        try:
            self.play.max = self.slider.max = last
            self.play.value = self.slider.value = last
        finally:
            self._quiet = False
        self._label(last)

    def _on_step(self, change) -> None:
        if not self._quiet:
            self.show(int(change["new"]))

    def show(self, step: int) -> float:
        """Clip the chart at step ``step``; return its time in seconds."""
        step = int(np.clip(step, 0, len(self.steps) - 1))
        t = float(self.steps[step])
        if step == len(self.steps) - 1:
            update_gantt_from(self.fig, self.full)
            self.fig.layout.shapes = [s for s in self.fig.layout.shapes if getattr(s, "name", None) != "cursor"]
        else:
            clip_gantt(self.fig, self.full, t)
        self._label(step)
        return t

    def _label(self, step: int) -> None:
        t = float(self.steps[step])
        done = int(np.searchsorted(self._finish, t + 1e-12, side="right"))
        self.label.value = (f"<span style='font-family:monospace'>t = {t:8.3f} s &nbsp; step {step}/"
                            f"{len(self.steps) - 1} &nbsp; {done:,} of {len(self._finish):,} requests finished</span>")


def update_gantt_from(fig: go.Figure, full: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    """Restore full bar lengths (undo :func:`clip_gantt`)."""
    with fig.batch_update():
        for trace in fig.data:
            trace.x = full[trace.name]["x"]


# -- the explorer --------------------------------------------------------------------------------
class ScheduleExplorer(widgets.VBox):
    """Controls, a live Gantt chart and a metrics table for one instance.

    The controls feed :func:`run_schedule` (see :meth:`params`); the
    figure (``.figure``, a ``FigureWidget``) is created once and updated in
    place.  Changes made in a browser are debounced by ``debounce_s``;
    :meth:`refresh` updates synchronously.  An error (a bad upload, an
    impossible option) is shown in ``.error`` and the previous result stays.
    """

    def __init__(self, trace: str | pd.DataFrame = "gsm8k-test", clients: int = 8, batch_size: int = 16,
                 policy: str = BASELINE, cost_model: str = "llama-65b", *, mu: float = 1.0,
                 time_limit: float = 2.0, rel_gap: float = 1e-3, compare_baseline: bool = True,
                 player: bool = True, debounce_s: float = DEBOUNCE_S, max_clients: int = 32,
                 max_batch_size: int = 256, sample: int = 0, seed: int = 0) -> None:
        self.picker = TracePicker(trace, sample=sample, seed=seed)
        slider = {"continuous_update": True, "layout": widgets.Layout(width="330px")}
        self.clients = widgets.IntSlider(value=int(clients), min=1, max=max(int(max_clients), int(clients)),
                                         description="clients", **slider)
        self.clients.add_class("wb-clients")
        self.batch_size = widgets.IntSlider(value=int(batch_size), min=1,
                                            max=max(int(max_batch_size), int(batch_size)),
                                            description="batch size", **slider)
        self.batch_size.add_class("wb-batch-size")
        policies = list_policies()
        self.policy = widgets.Dropdown(options=policies, value=policy if policy in policies else policies[0],
                                       description="policy", layout=widgets.Layout(width="330px"))
        self.policy.add_class("wb-policy")
        self.mu = widgets.FloatLogSlider(value=float(mu), base=10, min=-2, max=2, step=0.05, description="μ",
                                         readout_format=".2f", **slider)
        self.mu.add_class("wb-mu")
        presets = list_presets(kind="linear")  # the closed-form engine and the bounds read coefficients
        self.cost_model = widgets.Dropdown(options=presets, value=cost_model if cost_model in presets else presets[0],
                                           description="cost model", layout=widgets.Layout(width="330px"))
        self.solver = SolverControls(time_limit, rel_gap)
        self.status = widgets.HTML("")
        self.status.add_class("wb-status")
        self.error = widgets.HTML("")
        self.error.add_class("wb-error")
        self.table = widgets.HTML("")
        self.table.add_class("wb-metrics")
        self.compare_baseline = compare_baseline
        self._baseline_cache: dict[tuple, Schedule] = {}
        self.debouncer = Debouncer(self.refresh, debounce_s)
        self.last_refresh_s = 0.0

        started = time.perf_counter()
        self.schedule = self.run()
        self._baseline = self.baseline()
        self.last_refresh_s = time.perf_counter() - started
        self.figure = responsive(figure_widget(gantt(self.schedule)))
        self.figure.add_class("wb-gantt")
        self.player = TimelinePlayer(self.figure, self.schedule) if player else None
        self._show_table()
        self._sync_enabled()
        self._status_done()

        controls = widgets.HBox([
            widgets.VBox([self.clients, self.batch_size, self.mu]),
            widgets.VBox([self.policy, self.cost_model, self.solver.time_limit, self.solver.rel_gap]),
        ])
        children = [self.picker, controls, widgets.HBox([self.status]), self.error, self.figure]
        if self.player is not None:
            children.append(self.player)
        children.append(self.table)
        super().__init__(children)
        self.add_class("wb-explorer")

        for w in (self.clients, self.batch_size, self.policy, self.mu, self.cost_model):
            w.observe(self._on_change, names="value")
        self.solver.observe_values(self._on_change)
        self.picker.on_change(lambda _: self._on_change(None))

    # -- the headless part --------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The keyword arguments the controls currently give :func:`run_schedule`."""
        return {"trace": self.picker.trace, "clients": int(self.clients.value),
                "batch_size": int(self.batch_size.value), "policy": self.policy.value,
                "cost_model": self.cost_model.value, "mu": float(self.mu.value), **self.solver.value}

    def run(self, **overrides: Any) -> Schedule:
        """``run_schedule(**self.params(), **overrides)``, touching no widget."""
        return run_schedule(**{**self.params(), **overrides})

    def baseline(self) -> Schedule | None:
        """The baseline schedule of the same instance (cached), or None when not compared."""
        if not self.compare_baseline or self.policy.value == BASELINE:
            return None
        p = self.params()
        from workbench.workload.trace import trace_digest

        key = (trace_digest(p["trace"]), p["clients"], p["batch_size"], p["cost_model"])
        if key not in self._baseline_cache:
            if len(self._baseline_cache) > 32:
                self._baseline_cache.clear()
            self._baseline_cache[key] = run_schedule(p["trace"], p["clients"], p["batch_size"], BASELINE,
                                                     p["cost_model"])
        return self._baseline_cache[key]

    # -- updating in place -----------------------------------------------------------
    def refresh(self) -> bool:
        """Re-simulate with the current controls and update the figure and table in place.

        Returns False (and shows the error, keeping the previous result) when
        the run fails with a user error.
        """
        self.debouncer.cancel()
        self._sync_enabled()
        self._status_busy()
        started = time.perf_counter()
        try:
            schedule = self.run()
            self._baseline = self.baseline()
        except WorkbenchError as exc:
            self.error.value = _error_html(exc)
            self._status_done(failed=True)
            return False
        self.schedule = schedule
        update_gantt(self.figure, schedule)
        if self.player is not None:
            self.player.set_schedule(schedule)
        self._show_table()
        self.error.value = ""
        self.last_refresh_s = time.perf_counter() - started
        self._status_done()
        return True

    def _on_change(self, change) -> None:
        self._status_busy()
        self.debouncer.trigger()

    def _show_table(self) -> None:
        m = self.schedule.metrics
        caption = (f"{self.picker.label}: {len(self.schedule.requests):,} requests, {m['clients']} clients, "
                   f"B = {m['batch_size']}, cost model {m['cost_model'].get('name', '?')}")
        self.table.value = _table_html(metrics_table(self.schedule, self._baseline), caption)

    def _sync_enabled(self) -> None:
        self.mu.disabled = not uses_mu(self.policy.value)
        off = not uses_solver(self.policy.value)
        self.solver.time_limit.disabled = self.solver.rel_gap.disabled = off

    def _status_busy(self) -> None:
        self.status.value = ("<span class='wb-busy' style='color:#b5651d'>&#9203; updating…</span>")

    def _status_done(self, failed: bool = False) -> None:
        ms = self.last_refresh_s * 1e3
        if failed:
            self.status.value = "<span class='wb-idle' style='color:#a4161a'>not updated</span>"
        else:
            self.status.value = (f"<span class='wb-idle' style='color:#3a7d44'>&#10003; up to date "
                                 f"<small>({ms:.0f} ms)</small></span>")


# -- a generic panel ----------------------------------------------------------------------------
class FunctionPanel(widgets.VBox):
    """Show ``function(**values of controls)`` and update it when a control changes.

    The result may be a DataFrame (shown as a table), a Plotly figure (shown
    in one ``FigureWidget`` whose traces and layout are replaced in place
    when their count is unchanged) or anything else (shown as text).
    A :class:`~workbench.errors.WorkbenchError` is shown in ``.error`` and
    the previous result stays.  :meth:`refresh` is synchronous.
    """

    def __init__(self, function: Callable[..., Any], controls: Mapping[str, widgets.ValueWidget], *,
                 debounce_s: float = DEBOUNCE_S, fixed: Mapping[str, Any] | None = None) -> None:
        self.function = function
        self.controls = dict(controls)
        self.fixed = dict(fixed or {})
        self.status = widgets.HTML("")
        self.error = widgets.HTML("")
        self.output = widgets.HTML("")
        self.figure: go.FigureWidget | None = None
        self._figure_bundle: str | None = None  # the bundle the figure's widget loads (see served_bundle)
        self.result: Any = None
        self.debouncer = Debouncer(self.refresh, debounce_s)
        self._body = widgets.VBox([self.output])
        super().__init__([widgets.HBox(list(self.controls.values())), self.status, self.error, self._body])
        for w in self.controls.values():
            w.observe(lambda _: self._changed(), names="value")
        self.refresh()

    def values(self) -> dict[str, Any]:
        return {**self.fixed, **{k: w.value for k, w in self.controls.items()}}

    def _changed(self) -> None:
        self.status.value = "<span style='color:#b5651d'>&#9203; updating…</span>"
        self.debouncer.trigger()

    def refresh(self) -> bool:
        self.debouncer.cancel()
        self.status.value = "<span style='color:#b5651d'>&#9203; updating…</span>"
        started = time.perf_counter()
        try:
            result = self.function(**self.values())
        except WorkbenchError as exc:
            self.error.value = _error_html(exc)
            self.status.value = ""
            return False
        self.result = result
        self.error.value = ""
        if isinstance(result, go.Figure):
            # A new widget where the traces changed in number, or in kind beyond what its bundle draws.
            bundle = served_bundle(result)
            if self.figure is None or len(self.figure.data) != len(result.data) or bundle != self._figure_bundle:
                self.figure = responsive(figure_widget(result))
                self._figure_bundle = bundle
                self._body.children = [self.figure]
            else:
                with self.figure.batch_update():
                    for old, new in zip(self.figure.data, result.data):
                        old.update(new.to_plotly_json())
                    self.figure.layout = result.layout
        elif isinstance(result, pd.DataFrame):
            self.output.value = result.to_html(float_format=lambda v: f"{v:,.4g}")
            self._body.children = [self.output]
        else:
            self.output.value = f"<pre>{html.escape(str(result))}</pre>"
            self._body.children = [self.output]
        self.status.value = f"<small style='color:#3a7d44'>updated in {(time.perf_counter() - started) * 1e3:.0f} ms</small>"
        return True


# -- the dashboard ---------------------------------------------------------------------------------
def dashboard(**kwargs: Any) -> widgets.VBox:
    """The web app ``workbench dashboard`` serves: a title, notes and a :class:`ScheduleExplorer`."""
    kwargs.setdefault("policy", "hybrid" if "hybrid" in POLICIES else BASELINE)
    explorer = ScheduleExplorer(**kwargs)
    header = widgets.HTML(
        "<h2 style='margin:4px 0'>LLM inference scheduling workbench</h2>"
        "<p style='margin:0 0 6px 0;color:#444'>Pick a trace, a cluster and a policy; the per-client Gantt chart "
        "(<span style='color:#E4572E'>prefill</span>, <span style='color:#2E86AB'>decode</span>, shaded by how "
        "full the batch is) and the metrics update in place. Dotted line: makespan; dashed: lower bound. "
        "Press play to watch the schedule unfold.</p>")
    box = widgets.VBox([header, explorer])
    box.explorer = explorer  # type: ignore[attr-defined]
    return box
