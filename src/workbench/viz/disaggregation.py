"""The pool-sizing figure: goodput per GPU against the split of a fleet into prefill and decode GPUs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

SPLIT_CAPTION = ("Goodput per GPU (DistServe: the highest request rate per GPU at which the goal share of requests "
                 "meets both the TTFT and the TPOT target) for each split of the fleet into prefill and decode GPUs. "
                 "Filled markers were simulated; open ones were pruned and are drawn at their bound (no schedule "
                 "does better). Dashed lines: colocated fleets of the same GPUs.")


def split_figure(splits: pd.DataFrame, *, colocated: pd.Series | None = None, best: int | None = None,
                 title: str = "Goodput against the prefill/decode split") -> go.Figure:
    """``splits``: a split search's table (``prefill_gpus``, ``decode_gpus``, ``goodput_rps_per_gpu``,
    ``goodput_bound_rps_per_gpu``, ``simulated_goodput``); ``colocated``: goodput per GPU by policy name;
    ``best``: the index of the best split (starred)."""
    fig = go.Figure()
    labels = [f"{p}P + {d}D GPUs" for p, d in zip(splits["prefill_gpus"], splits["decode_gpus"])]
    x = splits["prefill_gpus"].to_numpy()
    sim = splits["simulated_goodput"].to_numpy(bool)
    fig.add_trace(go.Scatter(x=x, y=splits["goodput_bound_rps_per_gpu"], mode="lines", name="bound",
                             line=dict(color="#999", dash="dot", shape="hvh"), text=labels,
                             hovertemplate="%{text}<br>bound %{y:.3f} req/s/GPU<extra></extra>"))
    fig.add_trace(go.Scatter(x=x[sim], y=splits["goodput_rps_per_gpu"].to_numpy()[sim], mode="lines+markers",
                             name="disaggregated (simulated)", text=np.array(labels)[sim],
                             marker=dict(color="#2E86AB", size=9), line=dict(color="#2E86AB"),
                             hovertemplate="%{text}<br>goodput %{y:.3f} req/s/GPU<extra></extra>"))
    if (~sim).any():
        fig.add_trace(go.Scatter(x=x[~sim], y=splits["goodput_bound_rps_per_gpu"].to_numpy()[~sim], mode="markers",
                                 name="pruned (at its bound)", text=np.array(labels)[~sim],
                                 marker=dict(color="#999", size=8, symbol="circle-open"),
                                 hovertemplate="%{text}<br>bound %{y:.3f} req/s/GPU<extra></extra>"))
    if best is not None and best in splits.index:
        row = splits.loc[best]
        fig.add_trace(go.Scatter(x=[row["prefill_gpus"]], y=[row["goodput_rps_per_gpu"]], mode="markers",
                                 name="best split", marker=dict(symbol="star", size=16, color="#F2A541",
                                                                line=dict(color="black", width=1))))
    palette = ("#E4572E", "#6A994E", "#7B2CBF", "#F2A541")
    for k, (policy, value) in enumerate((colocated if colocated is not None else pd.Series(dtype=float)).items()):
        fig.add_hline(y=float(value), line=dict(color=palette[k % len(palette)], dash="dash", width=1),
                      annotation_text=f"colocated {policy}", annotation_position="top left")
    fig.update_layout(title=title, template="plotly_white", xaxis_title="prefill GPUs (the rest decode)",
                      yaxis_title="goodput (requests/s per GPU)", margin=dict(l=70, r=40, t=70, b=50))
    fig.update_xaxes(tickvals=list(x))
    fig.layout.meta = {"caption": SPLIT_CAPTION}
    return fig
