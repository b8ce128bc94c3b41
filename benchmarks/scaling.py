"""Scaling study: how each cost grows with requests (1k -> 1M) and clients (1 -> 1,024).

    python benchmarks/scaling.py [--out benchmarks/results] [--max-requests 1000000]

For every point it times, on a synthetic GSM8K-like trace (seeded):
the simulator (``paper-baseline``), the per-iteration timeline expansion, the
closed-form lower bound, the offline bin packing (``workbench.offline.assign``,
when installed) and the Gantt figure (compact runs; skipped above 20k
requests, where a browser would not draw it anyway).  It prints the table and
writes ``scaling.csv`` and ``scaling.html`` (log-log figure) to ``--out``.
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

# This checkout's package, whether or not it is installed (`python benchmarks/...` from the repository root).
_sys.path.insert(0, str(_Path(__file__).resolve().parents[1] / "src"))

import argparse
import importlib.util
import time
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.schedule.bounds import closed_form_lower_bound
from workbench.costmodel.linear import load_preset
from workbench.viz.figures import gantt
from workbench.engine.core import simulate
from workbench.workload.trace import synthetic_trace


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def point(n_requests: int, clients: int, cost_model, batch_size: int = 32) -> dict:
    trace = synthetic_trace(n_requests, seed=1, input_mean_tokens=68, output_mean_tokens=130)
    row = {"requests": n_requests, "clients": clients, "batch_size": batch_size}
    schedule, row["simulate_s"] = timed(lambda: simulate(trace, clients, batch_size, "paper-baseline", cost_model))
    _, row["timeline_s"] = timed(lambda: schedule.timeline)
    row["iterations"] = len(schedule.timeline)
    _, row["bound_s"] = timed(lambda: closed_form_lower_bound(trace, clients, batch_size, cost_model))
    if importlib.util.find_spec("workbench.offline") is not None:
        from workbench.errors import ConfigError
        from workbench.offline import assign

        try:
            _, row["bin_packing_s"] = timed(lambda: assign(trace, clients=clients, batch_size=batch_size,
                                                            cost_model=cost_model, method="auto", time_limit=2.0))
        except ConfigError as exc:  # refused before building: the weight matrix would not fit
            row["bin_packing_s"] = float("nan")
            print(f"  bin packing refused: {exc}")
    row["gantt_s"] = timed(lambda: gantt(schedule))[1] if n_requests <= 20_000 else float("nan")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Untracked by default (runs/ is git-ignored): a run changes no file of the checkout; --out benchmarks/results
    # rewrites the tracked scaling.csv and scaling.html when a run is meant to be recorded there.
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "runs" / "benchmarks"))
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    args = parser.parse_args()
    cm = load_preset("llama-65b")
    grid = [(n, 64) for n in (1_000, 10_000, 100_000, 1_000_000) if n <= args.max_requests]
    grid += [(min(100_000, args.max_requests), j) for j in (1, 4, 16, 256, 1024)]
    rows = []
    for n, j in grid:
        rows.append(point(n, j, cm))
        r = rows[-1]
        print(f"{n:>9,d} requests {j:>5d} clients: simulate {r['simulate_s']:7.3f} s, timeline {r['timeline_s']:6.3f} s, "
              f"bound {r['bound_s'] * 1e3:6.1f} ms, bin packing {r.get('bin_packing_s', float('nan')):6.3f} s, "
              f"gantt {r['gantt_s']:6.3f} s", flush=True)
    table = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "scaling.csv", index=False)
    costs = [c for c in ("simulate_s", "timeline_s", "bound_s", "bin_packing_s", "gantt_s") if c in table]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("64 clients, requests grow", "100k requests, clients grow"))
    by_n = table[table["clients"] == 64].sort_values("requests")
    by_j = table[table["requests"] == min(100_000, args.max_requests)].sort_values("clients")
    for k, cost in enumerate(costs):
        color = ["#2E86AB", "#E4572E", "#6A994E", "#9B5DE5", "#F4A259"][k]
        fig.add_trace(go.Scatter(x=by_n["requests"], y=by_n[cost], name=cost, mode="lines+markers",
                                 line=dict(color=color)), row=1, col=1)
        fig.add_trace(go.Scatter(x=by_j["clients"], y=by_j[cost], name=cost, mode="lines+markers", showlegend=False,
                                 line=dict(color=color)), row=1, col=2)
    fig.update_xaxes(type="log", title_text="requests", row=1, col=1)
    fig.update_xaxes(type="log", title_text="clients", row=1, col=2)
    fig.update_yaxes(type="log", title_text="seconds", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_layout(title="How each cost grows", template="plotly_white", height=450)
    fig.write_html(out / "scaling.html", include_plotlyjs=True)
    print(f"wrote {out / 'scaling.csv'} and {out / 'scaling.html'}")


if __name__ == "__main__":
    main()
