"""The learned rule against continuous batching, the Lagrangian rule and the hybrid, on traces it was not trained on.

    python benchmarks/bench_learn.py [--seeds 5] [--requests 1000] [--goodput-model PATH] [--out DIR]

Every policy runs on the same instances: 8 clients, B = 16, ``llama-65b``, held-out traces
(gsm8k-test whole; seeded subsets of gsm8k-train; subsets of the Azure 2023 conversation trace
when ``../shared/data/azure-llm-2023`` is present; synthetic log-normal traces with long outputs
and with long prompts).  Settings: **batch** (every request at t = 0: makespan and its gap to the
instance's lower bound) and **online** (seeded Poisson arrivals at 70/90/100% of the fluid
capacity, :func:`workbench.studies.loadsweep.cluster_capacity`: p99 TTFT and goodput, the share of
requests with TTFT <= 1 s and TPOT <= 50 ms).  Policies (dispatch / queue order / rule):

* ``continuous``  round-robin / FIFO / continuous batching;
* ``online``      round-robin / longest output / the Lagrangian rule (the online stage alone);
* ``hybrid``      offline bin packing / longest output / the Lagrangian rule;
* ``learned``     offline bin packing / longest output / the learned rule (the shipped makespan model);
* ``online-learned``  round-robin / longest output / the learned rule (the rule alone against ``online``);
* ``vllm`` and ``hybrid-rolling`` (online only); ``learned-goodput``: round-robin / longest output / the
  learned rule with the shipped goodput model (``--goodput-model``), in both settings.

Each row of ``--out DIR/learn.csv`` is one (setting, trace, load, seed, policy); the printed tables
are mean and standard deviation over the seeds, and the learned rule's paired difference from
the Lagrangian one (same instance).  Nothing is tuned here: the models are what they are.
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

# This checkout's package, whether or not it is installed (`python benchmarks/...` from the repository root).
_sys.path.insert(0, str(_Path(__file__).resolve().parents[1] / "src"))

import argparse
import time

ROOT = _Path(__file__).resolve().parents[1]
AZURE = ROOT.parent / "shared" / "data" / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
GOODPUT_MODEL = ROOT / "data" / "models" / "learned-gsm8k-goodput.npz"
LOADS = (0.7, 0.9, 1.0)
CLIENTS, BATCH, COST = 8, 16, "llama-65b"
#: Subset seeds start here (the training of the shipped model drew gsm8k-train subsets from seeds < 10,000).
SEED_BASE = 50_000


def policies(goodput_model: str | None, online: bool) -> dict[str, dict]:
    out = {"continuous": {"policy": "continuous"}, "online": {"policy": "online"}, "hybrid": {"policy": "hybrid"},
           "learned": {"policy": "hybrid", "rule": "learned"},
           "online-learned": {"policy": "online", "rule": "learned"}}
    if online:
        out.update({"vllm": {"policy": "vllm"}, "hybrid-rolling": {"policy": "hybrid-rolling"}})
    if goodput_model:
        out["learned-goodput"] = {"policy": "online", "rule": "learned", "model": goodput_model}
    return out


def traces(seeds: int, requests: int):
    """(name, seed, trace) of every held-out instance."""
    import numpy as np

    from workbench.workload.trace import load_trace, synthetic_trace

    yield "gsm8k-test", 0, load_trace("gsm8k-test")
    train = load_trace("gsm8k-train")
    azure = load_trace(str(AZURE)) if AZURE.is_file() else None  # the format is told by its columns
    for k in range(seeds):
        seed = SEED_BASE + k
        rng = np.random.default_rng(seed)
        yield "gsm8k-train", seed, train.iloc[np.sort(rng.choice(len(train), requests, replace=False))]
        if azure is not None:
            yield "azure-conv", seed, azure.iloc[np.sort(rng.choice(len(azure), requests, replace=False))]
        yield "synthetic-long-output", seed, synthetic_trace(requests, seed=seed, input_mean_tokens=80,
                                                             output_mean_tokens=400)
        yield "synthetic-long-prompt", seed, synthetic_trace(requests, seed=seed, input_mean_tokens=1000,
                                                             output_mean_tokens=60)


def run_all(seeds: int, requests: int, goodput_model: str | None):
    import pandas as pd

    from workbench.engine.core import simulate
    from workbench.studies.loadsweep import cluster_capacity, latency_row, resample_arrivals

    rows = []
    for name, seed, trace in traces(seeds, requests):
        trace = trace.reset_index(drop=True).assign(arrival_s=0.0)
        for label, kw in policies(goodput_model, online=False).items():
            s = simulate(trace, CLIENTS, BATCH, kw["policy"], COST, progress=False,
                         **{k: v for k, v in kw.items() if k != "policy"})
            rows.append({"setting": "batch", "trace": name, "load": float("nan"), "seed": seed, "policy": label,
                         "makespan_s": s.makespan_s, "lower_bound_s": s.metrics["lower_bound_s"],
                         "gap": s.metrics["gap"]})
        if name == "gsm8k-test":
            continue  # the paper's batch job; its online form is gsm8k-train's
        capacity = cluster_capacity(trace, CLIENTS, BATCH, COST).rate_per_s
        for load in LOADS:
            online_trace = resample_arrivals(trace, load * capacity, seed=seed)
            for label, kw in policies(goodput_model, online=True).items():
                s = simulate(online_trace, CLIENTS, BATCH, kw["policy"], COST, progress=False,
                             **{k: v for k, v in kw.items() if k != "policy"})
                row = latency_row(s)
                rows.append({"setting": "online", "trace": name, "load": load, "seed": seed, "policy": label,
                             "makespan_s": s.makespan_s, "lower_bound_s": s.metrics["lower_bound_s"],
                             "gap": s.metrics["gap"], "ttft_p99_s": row["ttft_s_p99"],
                             "goodput": row["slo_attainment"]})
    return pd.DataFrame(rows)


def summaries(table):
    import pandas as pd

    batch = table[table["setting"] == "batch"]
    batch_summary = batch.groupby(["trace", "policy"])[["makespan_s", "gap"]].agg(["mean", "std"])
    paired = batch.pivot_table(index=["trace", "seed"], columns="policy", values="makespan_s")
    diff = pd.DataFrame({"learned vs hybrid": paired["learned"] / paired["hybrid"] - 1,
                         "online-learned vs online": paired["online-learned"] / paired["online"] - 1})
    diff_summary = diff.groupby("trace").agg(["mean", "std", "min", "max"])
    online = table[table["setting"] == "online"]
    online_summary = online.groupby(["trace", "load", "policy"])[["ttft_p99_s", "goodput"]].agg(["mean", "std"])
    return batch_summary, diff_summary, online_summary


def figure(table):
    """Batch: each policy's gap to the bound per trace (mean, with the seeds' spread as error bars)."""
    import plotly.graph_objects as go

    batch = table[table["setting"] == "batch"]
    g = batch.groupby(["policy", "trace"])["gap"].agg(["mean", "std"]).reset_index()
    fig = go.Figure()
    for policy, part in g.groupby("policy", sort=False):
        fig.add_bar(name=policy, x=part["trace"], y=part["mean"], error_y={"type": "data", "array": part["std"]})
    fig.update_layout(barmode="group", title="Batch: gap to the lower bound on held-out traces (8 clients, B = 16)",
                      yaxis_tickformat=".1%", template="plotly_white")
    return fig


def main(argv=None) -> int:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="subsets per trace")
    parser.add_argument("--requests", type=int, default=1000, help="requests per subset")
    parser.add_argument("--goodput-model", default=str(GOODPUT_MODEL),
                        help="a model.npz trained with --objective goodput (default: the shipped one; 'none' to skip)")
    parser.add_argument("--out", default=None, help="folder for learn.csv and learn.html")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    goodput_model = None if args.goodput_model == "none" else args.goodput_model
    table = run_all(args.seeds, args.requests, goodput_model)
    print(f"{len(table)} runs in {time.perf_counter() - started:.0f} s "
          f"(Azure conversation trace {'used' if AZURE.is_file() else 'absent: skipped'})")
    batch, diff, online = summaries(table)
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.float_format", "{:.4f}".format):
        print("\nbatch (all requests at t = 0): makespan and gap to the lower bound, mean and std over seeds")
        print(batch.to_string())
        print("\nthe learned rule's makespan against the Lagrangian rule's on the same instance (paired)")
        print(diff.to_string())
        print("\nonline: p99 TTFT (s) and goodput (TTFT <= 1 s and TPOT <= 50 ms), mean and std over seeds")
        print(online.to_string())
    if args.out:
        out = _Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "learn.csv", index=False)
        figure(table).write_html(out / "learn.html", include_plotlyjs="cdn")
        print(f"wrote {out}/learn.csv and {out}/learn.html")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
