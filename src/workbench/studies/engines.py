"""The paper's question on today's engine: the hybrid method against vLLM V1's scheduler, measured.

Two settings, each one table (see docs/engine.md for the numbers and why):

* :func:`batch_comparison` - the paper's batch job (every request at t = 0):
  the paper's policies on its exclusive engine and on paged KV, the hybrid in
  mixed iterations, and ``vllm``; makespan and utilization (the paper's
  objective) beside the latencies a serving user watches.
* :func:`online_comparison` - online arrivals at fractions of the cluster's
  capacity (:func:`workbench.studies.loadsweep.load_sweep`): tail latencies
  and SLO attainment.

Both run on paged KV at a stated capacity (the preset's, or tighter), so
preemptions appear where memory binds.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

#: (label, policy, engine options) of the batch comparison.
BATCH_SETTINGS: tuple[tuple[str, str, dict], ...] = (
    ("paper-baseline (exclusive, reserved KV)", "paper-baseline", {}),
    ("hybrid (exclusive, reserved KV)", "hybrid", {}),
    ("hybrid (exclusive, paged KV)", "hybrid", {"kv": "paged"}),
    ("hybrid (mixed 2048, paged KV)", "hybrid", {"kv": "paged", "iteration": "mixed", "token_budget": 2048}),
    ("vllm (mixed 2048, paged KV)", "vllm", {}),
)


def batch_comparison(trace="gsm8k-test", *, clients: int = 8, batch_size: int = 16, cost_model="llama-65b",
                     kv_capacity_tokens: int | None = None,
                     settings: Sequence[tuple[str, str, dict]] = BATCH_SETTINGS) -> pd.DataFrame:
    """Every setting on one batch job: makespan, utilizations, TTFT/e2e means and p99, preemptions."""
    from workbench.costmodel.linear import load_preset
    from workbench.engine.core import simulate
    from workbench.schedule.metrics import request_latencies

    cm = load_preset(cost_model) if isinstance(cost_model, str) else cost_model
    kv = kv_capacity_tokens if kv_capacity_tokens is not None else cm.kv_capacity_tokens
    rows = []
    for label, policy, options in settings:
        # The same memory for every setting: reserved KV holds l + o per request from admission, paged KV
        # grows block by block and preempts when full.
        s = simulate(trace, clients, batch_size, policy, cm, kv_capacity_tokens=kv, **options)
        lat = request_latencies(s.requests)
        rows.append({"setting": label, "makespan_s": s.makespan_s, "lower_bound_s": s.metrics["lower_bound_s"],
                     "slot_utilization": s.metrics["slot_utilization"],
                     "busy_utilization": s.metrics["busy_utilization"],
                     "ttft_s_mean": float(lat["ttft_s"].mean()), "ttft_s_p99": float(lat["ttft_s"].quantile(0.99)),
                     "tpot_s_mean": float(lat["tpot_s"].mean()), "e2e_s_mean": float(lat["e2e_s"].mean()),
                     "preemptions": int(s.metrics.get("preemptions", 0))})
    table = pd.DataFrame(rows).set_index("setting")
    table.attrs.update(trace=str(trace), clients=clients, batch_size=batch_size, cost_model=cm.name,
                       kv_capacity_tokens=kv)
    return table


def online_comparison(trace="gsm8k-train", *, clients: int = 8, batch_size: int = 16, cost_model="llama-65b",
                      loads: Sequence[float] = (0.5, 0.8, 0.9, 1.0), n_requests: int | None = 2000, seed: int = 0,
                      policies: Sequence[str] = ("paper-baseline", "hybrid-rolling", "vllm"),
                      kv_capacity_tokens: int | None = None) -> pd.DataFrame:
    """The policies under seeded renewal arrivals at each load: latency quantiles and SLO attainment."""
    from workbench.costmodel.linear import load_preset
    from workbench.studies.loadsweep import load_sweep

    cm = load_preset(cost_model) if isinstance(cost_model, str) else cost_model
    table = load_sweep(trace, clients=clients, batch_size=batch_size, cost_model=cm, loads=loads, policies=policies,
                       n_requests=n_requests, seed=seed, kv_capacity_tokens=kv_capacity_tokens)
    keep = ["load", "policy", "ttft_s_p50", "ttft_s_p99", "tpot_s_p50", "tpot_s_p99", "e2e_s_p50", "e2e_s_p99",
            "slo_attainment", "makespan_s"]
    return table[[c for c in keep if c in table.columns]]
