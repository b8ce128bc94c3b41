"""Metrics of MODEL.md section 8, computed from the timeline table alone.

Metrics observe; they neither plot nor write.  Everything here can be
recomputed by anyone from ``timeline.csv`` and ``metrics.json``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workbench.errors import ConfigError


def batch_sizes_array(batch_size: int | list[int] | np.ndarray, clients: int) -> np.ndarray:
    """``B_j`` for every client from an int or a per-client list."""
    if np.ndim(batch_size) == 0:
        return np.full(int(clients), int(batch_size), dtype=np.int64)
    arr = np.asarray(batch_size, dtype=np.int64)
    if len(arr) != clients:
        raise ConfigError(f"{len(arr)} batch sizes for {clients} clients.", field="batch_size",
                          fix="give one batch size, or one per client.")
    return arr


def schedule_metrics(timeline: pd.DataFrame, clients: int, batch_size) -> dict[str, float]:
    """Makespan, slot utilization and busy utilization of a per-iteration timeline."""
    B = batch_sizes_array(batch_size, clients)
    if len(timeline) == 0:
        return {"makespan_s": 0.0, "slot_utilization": 0.0, "busy_utilization": 0.0}
    start = timeline["start_s"].to_numpy(float)
    end = timeline["end_s"].to_numpy(float)
    duration = end - start
    makespan = float(end.max())
    decode = timeline["kind"].isin(("decode", "mixed")).to_numpy()  # mixed rows: their decodes hold slots
    client = timeline["client"].to_numpy(np.int64)
    n = timeline["n_requests"].to_numpy(float)
    slot_time = float(np.sum((n[decode] / B[client[decode]]) * duration[decode]))
    denom = clients * makespan
    return {
        "makespan_s": makespan,
        "slot_utilization": slot_time / denom if denom > 0 else 0.0,
        "busy_utilization": float(duration.sum()) / denom if denom > 0 else 0.0,
    }


def gap(makespan_s: float, lower_bound_s: float) -> float:
    """``T / T_LB - 1``: how far a schedule may be from optimal."""
    return makespan_s / lower_bound_s - 1.0 if lower_bound_s > 0 else float("nan")


def gap_closed(base_makespan_s: float, new_makespan_s: float, lower_bound_s: float) -> float:
    """``(T_base - T_new) / (T_base - T_LB)``: the share of the base's gap a new schedule closes."""
    denom = base_makespan_s - lower_bound_s
    return (base_makespan_s - new_makespan_s) / denom if denom > 0 else float("nan")


def request_latencies(requests: pd.DataFrame) -> pd.DataFrame:
    """Per-request queueing delay, time to first token, time per output token and end-to-end latency."""
    out = requests[["request_id", "client"]].copy()
    out["queueing_s"] = requests["prefill_start_s"] - requests["arrival_s"]
    out["ttft_s"] = requests["first_token_s"] - requests["arrival_s"]
    decodes = (requests["output_tokens"] - 1).clip(lower=1)
    out["tpot_s"] = np.where(requests["output_tokens"] > 1,
                             (requests["finish_s"] - requests["first_token_s"]) / decodes, 0.0)
    out["e2e_s"] = requests["finish_s"] - requests["arrival_s"]
    return out


def latency_summary(requests: pd.DataFrame, quantiles=(0.5, 0.9, 0.99)) -> pd.DataFrame:
    """p50/p90/p99 of each latency, one row per latency."""
    lat = request_latencies(requests)[["queueing_s", "ttft_s", "tpot_s", "e2e_s"]]
    table = lat.quantile(list(quantiles)).T
    table.columns = [f"p{round(q * 100):d}" for q in quantiles]
    table["mean"] = lat.mean()
    return table
