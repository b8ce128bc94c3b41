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


def transfer_metrics(transfers: pd.DataFrame | None) -> dict[str, float]:
    """Totals of a pooled fleet's KV transfers (MODEL.md section 9): how many, their bytes and seconds."""
    if transfers is None or len(transfers) == 0:
        return {"transfers": 0, "transfer_bytes": 0.0, "transfer_s_total": 0.0, "transfer_s_mean": 0.0}
    span = transfers["end_s"].to_numpy(float) - transfers["start_s"].to_numpy(float)
    return {"transfers": int(len(transfers)), "transfer_bytes": float(transfers["bytes"].to_numpy(float).sum()),
            "transfer_s_total": float(span.sum()), "transfer_s_mean": float(span.mean())}


def serving_metrics(schedule, ttft_slo_s: float | None = None, tpot_slo_s: float | None = None,
                    gpus: int | None = None) -> dict[str, float]:
    """What a serving user watches, from a schedule's requests (and transfers, in a pooled fleet).

    TTFT (first token - arrival) and TPOT ((finish - first token) / (o - 1), requests with o > 1) as mean,
    p50 and p99; with both targets, the share of requests meeting both (``slo_attainment``) and
    **goodput**: those requests per second of the makespan, and per GPU (DistServe, OSDI 2024, counts the
    rate a system serves within both targets per GPU; ``gpus`` defaults to clients x the pooled schedule's
    ``gpus_per_replica``, and to clients for a colocated one, whose metrics do not record it: pass ``gpus``
    to compare the two at the same GPU count).
    Transfer time and bytes come from the transfers table (zero for a colocated fleet).
    """
    lat = request_latencies(schedule.requests)
    o = schedule.requests["output_tokens"].to_numpy()
    tpot = lat["tpot_s"].to_numpy()[o > 1]
    ttft = lat["ttft_s"].to_numpy()
    out: dict[str, float] = {}
    for name, values in (("ttft", ttft), ("tpot", tpot)):
        out[f"{name}_mean_s"] = float(values.mean()) if len(values) else 0.0
        for q in (50, 99):
            out[f"{name}_p{q}_s"] = float(np.quantile(values, q / 100)) if len(values) else 0.0
    transfers = getattr(schedule, "transfers", None)
    out.update(transfer_metrics(transfers))
    if transfers is not None and len(transfers):
        span = transfers["end_s"].to_numpy(float) - transfers["start_s"].to_numpy(float)
        out["transfer_s_p99"] = float(np.quantile(span, 0.99))
    m = schedule.metrics
    if gpus is None:
        gpus = int(m.get("clients", 1)) * int(m.get("gpus_per_replica", 1))
    out["gpus"] = int(gpus)
    if ttft_slo_s is not None and tpot_slo_s is not None:
        met = (lat["ttft_s"].to_numpy() <= ttft_slo_s) & ((o <= 1) | (lat["tpot_s"].to_numpy() <= tpot_slo_s))
        makespan = float(m.get("makespan_s", schedule.requests["finish_s"].max()))
        out["slo_attainment"] = float(met.mean())
        out["goodput_rps"] = float(met.sum() / makespan) if makespan > 0 else 0.0
        out["goodput_rps_per_gpu"] = out["goodput_rps"] / gpus
    return out
