"""Plotly figures: per-client prefill/decode Gantt charts above all.

The Gantt chart draws the compact timeline (runs of identical decode
iterations merged), so it grows with the number of batch changes, not the
number of iterations, and stays responsive on full GSM8K.  Decode bars are
shaded by how full the batch is, which makes empty slots visible.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.schedule.metrics import batch_sizes_array
from workbench.schedule.schema import Schedule

#: decode bars fade with the share of the batch in use; "mixed" is a chunked-prefill iteration.
COLORS = {"prefill": "#E4572E", "decode": "#2E86AB", "mixed": "#F2A541", "preempt": "#111111"}
#: "preempt" rows (paged KV) are moments: drawn as thin black ticks where requests were preempted.
KINDS = ("prefill", "decode", "mixed", "preempt")
#: A replica's life beside its iterations (schedules whose fleet changed, MODEL.md 11.4/11.5): held while it
#: loads its weights (added -> ready), and draining (told to stop taking requests -> gone).
LIFE_KINDS = ("loading", "draining")
LIFE_COLORS = {"loading": "#9A9A9A", "draining": "#C9B2D9"}
#: The width of a preemption tick, as a share of the makespan (a moment has no width of its own).
PREEMPT_TICK_SHARE = 0.003
MAX_IDS_IN_HOVER = 12


#: What a reader needs to read a Gantt chart; reports print it under every one.
GANTT_CAPTION = ("Each row is a client (a model replica); time runs left to right. Red bars are prefill "
                 "iterations, blue bars decode iterations (runs of identical iterations merged); a decode bar is "
                 "paler the emptier its batch (full colour: all B slots in use; palest: one request). Orange bars, where present, are mixed chunked-prefill iterations, shaded the same "
                 "way. Thin black ticks, where present, are preemptions (paged KV: the requests freed to make room, "
                 "recomputed later). Grey bars, where present, are replicas loading their weights (held, not yet serving), lilac bars replicas draining (finishing what they hold, taking nothing new). The dotted black line is the makespan (the last request's end), the dashed green line the "
                 "lower bound no schedule can beat; the gap between them is what is left to gain. Hover a bar for "
                 "its iterations, requests and tokens.")


def _short_ids(ids: str) -> str:
    parts = ids.split()
    if len(parts) <= MAX_IDS_IN_HOVER:
        return ids
    return " ".join(parts[:MAX_IDS_IN_HOVER]) + f" ... (+{len(parts) - MAX_IDS_IN_HOVER})"


def gantt_data(schedule: Schedule) -> dict[str, dict[str, np.ndarray]]:
    """Per kind, the arrays a Gantt bar trace needs (used to build and to update in place)."""
    runs = schedule.compact()
    B = batch_sizes_array(schedule.metrics["batch_size"], schedule.clients)
    out = {}
    for kind in KINDS:
        part = runs[runs["kind"] == kind]
        n = part["n_requests"].to_numpy()
        fill = n / B[part["client"].to_numpy()]
        duration = (part["end_s"] - part["start_s"]).to_numpy()
        base = part["start_s"].to_numpy()
        if kind == "preempt":  # a moment: a tick centred on it, wide enough to see
            tick = PREEMPT_TICK_SHARE * float(schedule.metrics.get("makespan_s") or 1.0)
            duration = np.full(len(part), tick)
            base = base - tick / 2
            fill = np.ones(len(part))
        iters = np.where(part["iterations"] > 1,
                         part["first_iteration"].astype(str) + "-" + part["last_iteration"].astype(str),
                         part["first_iteration"].astype(str))
        custom = np.column_stack([
            iters, part["iterations"].to_numpy(), n, part["tokens"].to_numpy(), duration,
            np.round(fill * 100).astype(int), [_short_ids(s) for s in part["request_ids"]],
        ]) if len(part) else np.empty((0, 7))
        out[kind] = {
            "y": ("client " + part["client"].astype(str)).to_numpy(),
            "base": base, "x": duration, "customdata": custom,
            "opacity": (0.35 + 0.65 * fill) if kind not in ("prefill", "preempt") else np.ones(len(part)),
        }
    out.update(_life_data(schedule))
    return out


def _life_data(schedule: Schedule) -> dict[str, dict[str, np.ndarray]]:
    """Loading and draining spans of each replica, from ``metrics.replicas`` and ``metrics.autoscaling``."""
    m = schedule.metrics
    end = float(m.get("makespan_s") or 0.0)
    drained = {d["replica"]: d["drain_s"] for d in (m.get("autoscaling") or {}).get("drains", [])}
    spans: dict[str, list] = {k: [] for k in LIFE_KINDS}
    for life in m.get("replicas") or []:
        left = end if life["left_s"] is None else float(life["left_s"])
        ready = min(float(life["ready_s"]), left)
        spans["loading"].append((life["replica"], float(life["added_s"]), ready))
        if life["replica"] in drained:
            spans["draining"].append((life["replica"], min(max(float(drained[life["replica"]]), ready), left), left))
    out = {}
    for kind, rows in spans.items():
        rows = [r for r in rows if r[2] > r[1]]
        j = np.array([r[0] for r in rows], dtype=np.int64)
        base = np.array([r[1] for r in rows], dtype=float)
        x = np.array([r[2] - r[1] for r in rows], dtype=float)
        custom = np.column_stack([np.full(len(rows), kind), np.zeros(len(rows), int), np.zeros(len(rows), int),
                                  np.zeros(len(rows), int), x, np.zeros(len(rows), int), np.full(len(rows), "")]) \
            if rows else np.empty((0, 7))
        out[kind] = {"y": np.array([f"client {v}" for v in j], dtype=object), "base": base, "x": x,
                     "customdata": custom, "opacity": np.full(len(rows), 0.8)}
    return out


HOVER = ("<b>%{fullData.name}</b> on %{y}<br>iteration %{customdata[0]} (%{customdata[1]} merged)<br>"
         "start %{base:.4f} s, length %{customdata[4]:.4f} s<br>requests %{customdata[2]} "
         "(%{customdata[5]}%% of the batch)<br>tokens %{customdata[3]}<br>ids: %{customdata[6]}<extra></extra>")


LIFE_HOVER = "<b>%{fullData.name}</b> on %{y}<br>from %{base:.2f} s for %{x:.2f} s<extra></extra>"


def _bar(kind: str, data: dict, showlegend: bool = True) -> go.Bar:
    life = kind in LIFE_KINDS
    return go.Bar(name=kind, orientation="h", y=data["y"], x=data["x"], base=data["base"],
                  customdata=data["customdata"], hovertemplate=LIFE_HOVER if life else HOVER, legendgroup=kind,
                  showlegend=showlegend, marker=dict(color=(LIFE_COLORS if life else COLORS)[kind],
                                                     opacity=data["opacity"], line=dict(width=0)))


def _kinds(schedule: Schedule) -> tuple[str, ...]:
    """The bar kinds a chart draws: replica lives only where the fleet changed (a fixed fleet's chart is as before)."""
    return KINDS + LIFE_KINDS if schedule.metrics.get("replicas") else KINDS


def _client_order(clients: int) -> list[str]:
    return [f"client {j}" for j in range(clients)]


def gantt(schedule: Schedule, *, title: str | None = None, height: int | None = None) -> go.Figure:
    """A per-client Gantt chart of prefill and decode iterations."""
    data = gantt_data(schedule)
    fig = go.Figure([_bar(kind, data[kind], showlegend=len(data[kind]["x"]) > 0) for kind in _kinds(schedule)])
    m = schedule.metrics
    fig.update_layout(
        title=title or (f"{m.get('policy', 'schedule')}: makespan {m['makespan_s']:.2f} s, "
                        f"slot utilization {m['slot_utilization']:.1%}"),
        barmode="overlay", bargap=0.25, xaxis_title="time (s)", template="plotly_white",
        height=height or max(260, 90 + 28 * schedule.clients),
        # Outside the plot on the right: clear of the title and the marker labels at any height.
        legend=dict(x=1.01, y=1.0, xanchor="left", yanchor="top"),
        margin=dict(l=80, r=110, t=80, b=50),
    )
    fig.update_yaxes(categoryorder="array", categoryarray=_client_order(schedule.clients)[::-1])
    fig.layout.shapes = _marker_shapes(m["makespan_s"], m.get("lower_bound_s"))
    fig.layout.annotations = _marker_labels(m["makespan_s"], m.get("lower_bound_s"))
    fig.layout.meta = {"caption": GANTT_CAPTION}  # reports print it under the chart
    if isinstance(m.get("roles"), list):
        _pool_layout(fig, schedule)
    return fig


#: The order pools are drawn in, top to bottom, and the colour of a KV transfer's line.
POOL_ORDER = ("prefill", "mixed", "decode")
TRANSFER_COLOR = "#7B2CBF"


def _pool_layout(fig: go.Figure, schedule: Schedule, request_id=None) -> None:
    """A pooled fleet (MODEL.md section 11.11): GPUs grouped by pool, each tick naming its pool, and each KV
    transfer drawn as a line from its prefill replica at its start to its decode replica at its end
    (only ``request_id``'s, when given)."""
    roles = schedule.metrics["roles"]
    order = [j for pool in POOL_ORDER for j in range(len(roles)) if roles[j] == pool]
    labels = [f"client {j}" for j in order]
    fig.update_yaxes(categoryorder="array", categoryarray=labels[::-1], tickvals=labels,
                     ticktext=[f"{roles[j]} · {j}" for j in order])
    transfers = schedule.transfers
    if transfers is None or not len(transfers):
        return
    if request_id is not None:
        transfers = transfers[transfers["request_id"].astype(str) == str(request_id)]
    n = len(transfers)
    x = np.full(3 * n, None, dtype=object)
    y = np.full(3 * n, None, dtype=object)
    x[0::3], x[1::3] = transfers["start_s"].to_numpy(float), transfers["end_s"].to_numpy(float)
    y[0::3] = ("client " + transfers["from_client"].astype(str)).to_numpy()
    y[1::3] = ("client " + transfers["to_client"].astype(str)).to_numpy()
    text = np.full(3 * n, "", dtype=object)
    text[0::3] = text[1::3] = [f"request {r}: {t} tokens, {b / 1e6:.1f} MB, {(e - s) * 1e3:.3f} ms"
                               for r, t, b, s, e in zip(transfers["request_id"], transfers["tokens"],
                                                        transfers["bytes"], transfers["start_s"], transfers["end_s"])]
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name="KV transfer", text=text,
                             hovertemplate="%{text}<extra>KV transfer</extra>",
                             line=dict(color=TRANSFER_COLOR, width=1), marker=dict(size=4, color=TRANSFER_COLOR)))


def pool_gantt(schedule: Schedule, request_id=None, *, title: str | None = None) -> go.Figure:
    """:func:`gantt` of a pooled fleet with only ``request_id``'s transfer drawn (one request's journey: its
    prefill on the prefill pool, the copy of its KV cache, its decodes on the decode pool)."""
    fig = gantt(schedule, title=title)
    fig.data = [t for t in fig.data if t.name != "KV transfer"]
    _pool_layout(fig, schedule, request_id)
    return fig


def _marker_shapes(makespan_s: float, lower_bound_s: float | None, yref: str = "paper") -> list[dict]:
    """Vertical lines at the makespan (dotted) and the lower bound (dashed)."""
    shapes = [dict(type="line", x0=makespan_s, x1=makespan_s, y0=0, y1=1, xref="x", yref=yref,
                   line=dict(color="black", dash="dot", width=1))]
    if lower_bound_s is not None and np.isfinite(lower_bound_s):
        shapes.append(dict(type="line", x0=lower_bound_s, x1=lower_bound_s, y0=0, y1=1, xref="x", yref=yref,
                           line=dict(color="#6A994E", dash="dash", width=1)))
    return shapes


def _marker_labels(makespan_s: float, lower_bound_s: float | None) -> list[dict]:
    labels = [dict(x=makespan_s, y=1.0, xref="x", yref="paper", text="makespan", showarrow=False,
                   yanchor="bottom", xanchor="left", font=dict(size=10))]
    if lower_bound_s is not None and np.isfinite(lower_bound_s):
        labels.append(dict(x=lower_bound_s, y=1.0, xref="x", yref="paper", text="lower bound", showarrow=False,
                           yanchor="bottom", xanchor="right", font=dict(size=10, color="#6A994E")))
    return labels


def log_axis_ticks(values) -> dict:
    """Ticks for a log axis over ``values``: 1, 2 and 5 of each decade, each labelled in full (0.05, 0.5, 50),
    where Plotly's own labels the in-between ticks with their first digit only ("5" for all three)."""
    finite = np.asarray([v for v in np.ravel(values) if np.isfinite(v) and v > 0], dtype=float)
    if not len(finite):
        return {}
    lo, hi = np.floor(np.log10(finite.min())), np.ceil(np.log10(finite.max()))
    ticks = [m * 10.0 ** e for e in np.arange(lo, hi + 1) for m in (1, 2, 5)]
    ticks = [t for t in ticks if finite.min() / 2.5 <= t <= finite.max() * 2.5]
    return {"tickvals": ticks, "ticktext": [f"{t:.6g}" for t in ticks]}


def wrap_title(text: str, width: int = 24) -> str:
    """``text`` broken into lines of about ``width`` characters at spaces (``<br>``), so that the titles of
    panels side by side do not run into each other on a narrow page."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "<br>".join([*lines, line])


def update_gantt(fig: go.Figure, schedule: Schedule) -> None:
    """Replace a :func:`gantt` figure's data in place (for a ``FigureWidget``: no flicker)."""
    data = gantt_data(schedule)
    m = schedule.metrics
    with fig.batch_update():
        for trace in fig.data:
            d = data[trace.name]
            trace.y, trace.x, trace.base, trace.customdata = d["y"], d["x"], d["base"], d["customdata"]
            trace.showlegend = len(d["x"]) > 0
            trace.marker.opacity = d["opacity"]
        fig.layout.title.text = (f"{m.get('policy', 'schedule')}: makespan {m['makespan_s']:.2f} s, "
                                 f"slot utilization {m['slot_utilization']:.1%}")
        fig.layout.height = max(260, 90 + 28 * schedule.clients)
        fig.layout.yaxis.categoryarray = _client_order(schedule.clients)[::-1]
        fig.layout.shapes = _marker_shapes(m["makespan_s"], m.get("lower_bound_s"))
        fig.layout.annotations = _marker_labels(m["makespan_s"], m.get("lower_bound_s"))


def gantt_compare(schedules: Mapping[str, Schedule], *, title: str = "Per-client timelines") -> go.Figure:
    """Gantt charts of several schedules stacked on a shared time axis."""
    names = list(schedules)
    heights = [max(1, s.clients) for s in schedules.values()]
    fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        row_heights=heights,
                        subplot_titles=[f"{n}: makespan {s.makespan_s:.2f} s, slot utilization "
                                        f"{s.metrics['slot_utilization']:.1%}" for n, s in schedules.items()])
    for r, (name, schedule) in enumerate(schedules.items(), start=1):
        data = gantt_data(schedule)
        for kind in _kinds(schedule):
            fig.add_trace(_bar(kind, data[kind], showlegend=r == 1 and len(data[kind]["x"]) > 0), row=r, col=1)
        fig.update_yaxes(categoryorder="array", categoryarray=_client_order(schedule.clients)[::-1], row=r, col=1)
        for shape in _marker_shapes(schedule.makespan_s, schedule.metrics.get("lower_bound_s")):
            fig.add_vline(x=shape["x0"], line=shape["line"], row=r, col=1)
    # The two lines are named in the legend: labels on a stacked chart ran into the panels' titles.
    for name, line in (("makespan", dict(color="black", dash="dot", width=1)),
                       ("lower bound", dict(color="#6A994E", dash="dash", width=1))):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=line, name=name, hoverinfo="skip"))
    fig.update_layout(title=title, barmode="overlay", template="plotly_white", bargap=0.25,
                      height=120 + 26 * sum(heights) + 40 * len(names), margin=dict(l=80, r=110, t=80, b=50),
                      legend=dict(x=1.01, y=1.0, xanchor="left", yanchor="top"))
    fig.update_xaxes(title_text="time (s)", row=len(names), col=1)
    fig.layout.meta = {"caption": GANTT_CAPTION}
    return fig


def comparison_table(schedules: Mapping[str, Schedule], *, base: str | None = None) -> pd.DataFrame:
    """One row per schedule: makespan, bound, gap, utilizations (and gap closed against ``base``)."""
    from workbench.schedule.metrics import gap_closed

    rows = []
    for name, s in schedules.items():
        m = s.metrics
        rows.append({"policy": name, "makespan_s": m["makespan_s"], "lower_bound_s": m["lower_bound_s"],
                     "gap": m["gap"], "slot_utilization": m["slot_utilization"],
                     "busy_utilization": m["busy_utilization"]})
    table = pd.DataFrame(rows).set_index("policy")
    if base is not None and base in schedules:
        lb = float(table["lower_bound_s"].max())
        table["gap_closed"] = [gap_closed(table.loc[base, "makespan_s"], t, lb) for t in table["makespan_s"]]
    return table


#: What a reader needs to read the replica-count chart.
REPLICA_COUNT_CAPTION = ("Replicas held over time, stacked: serving (blue), loading their weights (grey: held and paid "
                         "for, not yet serving) and draining (lilac: finishing what they hold). The thin line is the "
                         "arrival rate over the same time (right axis). GPU-hours are the area under the stack times "
                         "the GPUs per replica.")


def replica_count_figure(schedules: Mapping[str, Schedule] | Schedule, *, title: str = "Replicas over time",
                         bin_s: float | None = None) -> go.Figure:
    """How many replicas each run held over time (a step chart per state), with the arrival rate."""
    from workbench.schedule.capacity import replica_count_series

    if isinstance(schedules, Schedule):
        schedules = {schedules.policy: schedules}
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    colors = {"serving": "#2E86AB", **LIFE_COLORS}
    dashes = ("solid", "dash", "dot", "dashdot", "longdash")
    several = len(schedules) > 1
    for k, (name, s) in enumerate(schedules.items()):
        times, counts = replica_count_series(s)
        if several:  # one total line per run, so runs can be told apart
            total = counts["serving"] + counts["loading"] + counts["draining"]
            fig.add_trace(go.Scatter(x=times, y=total, mode="lines", line=dict(shape="hv", dash=dashes[k % 5]),
                                     name=f"{name}: held"), secondary_y=False)
            continue
        for state in ("serving", "loading", "draining"):
            fig.add_trace(go.Scatter(x=times, y=counts[state], mode="lines", stackgroup="replicas",
                                     line=dict(shape="hv", width=0.5, color=colors[state]), name=state),
                          secondary_y=False)
    first = next(iter(schedules.values()))
    arrivals = first.requests["arrival_s"].to_numpy(float)
    end = float(first.makespan_s) or 1.0
    width = bin_s or max(end / 60.0, 1e-9)
    edges = np.arange(0.0, end + width, width)
    rate = np.histogram(arrivals, bins=edges)[0] / width
    fig.add_trace(go.Scatter(x=edges[:-1], y=rate, mode="lines", line=dict(shape="hv", color="#555", width=1),
                             name="arrivals (req/s)"), secondary_y=True)
    fig.update_layout(title=title, template="plotly_white", xaxis_title="time (s)",
                      legend=dict(x=1.08, y=1.0, xanchor="left"), margin=dict(l=70, r=160, t=70, b=50))
    fig.update_yaxes(title_text="replicas", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title_text="arrivals (req/s)", secondary_y=True, rangemode="tozero", showgrid=False)
    fig.layout.meta = {"caption": REPLICA_COUNT_CAPTION}
    return fig


PARETO_CAPTION = ("Every configuration the plan simulated: cost per hour against SLO attainment (the share of requests "
                  "meeting the targets). Pruned configurations (their bound already misses the target) are drawn at "
                  "their bound, hollow. The Pareto front (no configuration is cheaper and better) is the line; the "
                  "dashed line is the target, the star the chosen configuration, the green line the bound on the "
                  "cheapest possible cost.")


def pareto_figure(table: pd.DataFrame, *, target: float, chosen: int | None = None,
                  cost_bound: float | None = None, title: str = "Cost against SLO attainment") -> go.Figure:
    """The plan's table (``usd_per_hour``, ``attainment``, ``simulated``, ``pareto``, ``label``) as a scatter."""
    fig = go.Figure()
    sim = table[table["simulated"]]
    pruned = table[~table["simulated"]]
    fig.add_trace(go.Scatter(x=sim["usd_per_hour"], y=sim["attainment"], mode="markers", name="simulated",
                             text=sim["label"], marker=dict(color="#2E86AB", size=7),
                             hovertemplate="%{text}<br>%{x:.2f} USD/h<br>attainment %{y:.2%}<extra></extra>"))
    if len(pruned):
        fig.add_trace(go.Scatter(x=pruned["usd_per_hour"], y=pruned["bound"], mode="markers",
                                 name="pruned (at its bound)", text=pruned["label"],
                                 marker=dict(color="#999", size=6, symbol="circle-open"),
                                 hovertemplate="%{text}<br>%{x:.2f} USD/h<br>bound %{y:.2%}<extra></extra>"))
    front = table[table["pareto"]].sort_values("usd_per_hour")
    fig.add_trace(go.Scatter(x=front["usd_per_hour"], y=front["attainment"], mode="lines+markers", name="Pareto front",
                             line=dict(color="#E4572E", shape="hv"), marker=dict(size=8), text=front["label"],
                             hovertemplate="%{text}<br>%{x:.2f} USD/h<br>attainment %{y:.2%}<extra></extra>"))
    if chosen is not None and chosen in table.index:
        row = table.loc[chosen]
        fig.add_trace(go.Scatter(x=[row["usd_per_hour"]], y=[row["attainment"]], mode="markers", name="chosen",
                                 text=[row["label"]], marker=dict(symbol="star", size=16, color="#F2A541",
                                                                  line=dict(color="black", width=1))))
    fig.add_hline(y=target, line=dict(color="black", dash="dash", width=1), annotation_text="target")
    if cost_bound is not None and np.isfinite(cost_bound):
        fig.add_vline(x=cost_bound, line=dict(color="#6A994E", dash="dash", width=1),
                      annotation_text="bound on the cheapest")
    fig.update_layout(title=title, template="plotly_white", xaxis_title="cost (USD per hour)",
                      yaxis_title="SLO attainment", yaxis_tickformat=".0%", margin=dict(l=70, r=40, t=70, b=50))
    fig.layout.meta = {"caption": PARETO_CAPTION}
    return fig
