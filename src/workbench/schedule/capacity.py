"""Capacity figures of a schedule, and the bounds that tell a fleet cannot meet a service-level objective.

* :func:`slo_metrics` - SLO attainment (TTFT, TPOT, both), goodput and GPU-hours of one schedule;
* :func:`replica_count_series` - how many replicas were loading, serving and draining over time;
* :func:`slo_bound` - from the trace and a replica's linear cost model alone, before anything runs: the
  largest SLO attainment any schedule of ``replicas`` replicas of batch ``B`` could reach (docs/capacity.md
  derives it).  A configuration whose bound is below the target cannot meet it, and need not be simulated.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from workbench.schedule.metrics import request_latencies

#: Default targets (s), the load study's (workbench.studies.loadsweep).
DEFAULT_TTFT_SLO_S = 1.0
DEFAULT_TPOT_SLO_S = 0.05


def slo_metrics(schedule, *, ttft_slo_s: float = DEFAULT_TTFT_SLO_S, tpot_slo_s: float = DEFAULT_TPOT_SLO_S,
                gpus_per_replica: int | None = None) -> dict[str, float]:
    """Attainment, p99 latencies, goodput (requests meeting both targets per second of the run) and GPU-hours.

    GPU-hours are the replica-seconds held (``metrics.replica_seconds``, or clients x makespan for a fixed
    fleet) times the GPUs per replica (``metrics.autoscaling.gpus_per_replica``, else ``gpus_per_replica``,
    else 1), over 3600.
    """
    lat = request_latencies(schedule.requests)
    ttft_ok = (lat["ttft_s"] <= ttft_slo_s).to_numpy()
    tpot_ok = (lat["tpot_s"] <= tpot_slo_s).to_numpy()
    both = ttft_ok & tpot_ok
    m = schedule.metrics
    makespan = float(schedule.makespan_s)
    held_s = float(m.get("replica_seconds", m["clients"] * makespan))
    gpus = (m.get("autoscaling") or {}).get("gpus_per_replica") or gpus_per_replica or 1
    out_tokens = schedule.requests["output_tokens"].to_numpy()
    return {"ttft_attainment": float(ttft_ok.mean()), "tpot_attainment": float(tpot_ok.mean()),
            "slo_attainment": float(both.mean()), "ttft_s_p99": float(lat["ttft_s"].quantile(0.99)),
            "tpot_s_p99": float(lat["tpot_s"].quantile(0.99)),
            "goodput_rps": float(both.sum() / makespan) if makespan > 0 else 0.0,
            "goodput_tokens_per_s": float(out_tokens[both].sum() / makespan) if makespan > 0 else 0.0,
            "replica_hours": held_s / 3600.0, "gpu_hours": held_s * int(gpus) / 3600.0}


def replica_count_series(schedule) -> "tuple[np.ndarray, dict[str, np.ndarray]]":
    """Times and, per state (``loading``, ``serving``, ``draining``), how many replicas were in it from each
    time on: a step function read from ``metrics.replicas`` and ``metrics.autoscaling.drains``."""
    m = schedule.metrics
    end = float(schedule.makespan_s)
    lives = m.get("replicas") or [{"replica": j, "added_s": 0.0, "ready_s": 0.0, "left_s": None}
                                  for j in range(int(m["clients"]))]
    drained = {d["replica"]: d["drain_s"] for d in (m.get("autoscaling") or {}).get("drains", [])}
    spans = []  # (state, start, end)
    for life in lives:
        left = end if life["left_s"] is None else float(life["left_s"])
        ready = min(float(life["ready_s"]), left)
        drain = min(max(float(drained.get(life["replica"], left)), ready), left)
        spans += [("loading", float(life["added_s"]), ready), ("serving", ready, drain), ("draining", drain, left)]
    times = np.unique([t for _, a, b in spans for t in (a, b)] + [0.0, end])
    counts = {k: np.zeros(len(times), dtype=np.int64) for k in ("loading", "serving", "draining")}
    for state, a, b in spans:
        if b > a:
            counts[state][(times >= a) & (times < b)] += 1
    return times, counts



def request_minimums(trace: pd.DataFrame, model, *, iteration: str = "exclusive",
                     token_budget: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per request, the least TTFT and the least mean TPOT any schedule gives it, whatever the fleet (s).

    TTFT >= ``a_p + b_p l`` (exclusive: one prefill stage holds the whole prompt) or, mixed, at least
    ``ceil(l / tau)`` iterations of at least ``max(a_p, a_d)`` plus ``b_p l``.  Each of the ``o - 1``
    decode steps is an iteration holding this request, so it takes at least ``a_d + b_d + c_d x`` its
    context; the mean context over them is ``l + o/2``, so TPOT >= ``a_d + b_d + c_d (l + o/2)``.
    """
    l = trace["input_tokens"].to_numpy(float)
    o = trace["output_tokens"].to_numpy(float)
    if iteration == "mixed":
        tau = float(token_budget or 2048)
        ttft = np.ceil(l / tau) * max(model.a_p, model.a_d) + model.b_p * l
    else:
        ttft = model.a_p + model.b_p * l
    tpot = np.where(o > 1, model.a_d + model.b_d + model.c_d * (l + o / 2.0), 0.0)
    return ttft, tpot


def request_work_s(trace: pd.DataFrame, model, batch_size: int, *, prefill_only: bool = False) -> np.ndarray:
    """Per request, the least replica time it costs at batch ``B`` (MODEL.md section 3's ``w_i``): its
    prompt tokens, its share of a full batch's fixed costs, and its own decode terms (``prefill_only``:
    the part before its first token)."""
    l = trace["input_tokens"].to_numpy(float)
    o = trace["output_tokens"].to_numpy(float)
    B = float(batch_size)
    if prefill_only:
        return model.b_p * l + model.a_p / B
    steps = np.maximum(o - 1.0, 0.0)
    context = steps * l + steps * (steps + 1.0) / 2.0  # the contexts its decode steps read
    return model.b_p * l + model.a_p / B + steps * (model.a_d / B + model.b_d) + model.c_d * context


def slo_bound(trace: pd.DataFrame, model, replicas: int, batch_size: int, *, ttft_slo_s: float,
              tpot_slo_s: float, iteration: str = "exclusive", token_budget: int | None = None,
              windows: int = 6) -> dict[str, float]:
    """Upper bounds on the SLO attainment of any schedule of ``replicas`` replicas (docs/capacity.md).

    ``alone``: the share of requests whose own minimums (:func:`request_minimums`) meet both targets.
    ``throughput``: a request that meets both targets ends by ``a_i + T_i`` with ``T_i = ttft + (o_i - 1)
    tpot``; the requests arriving in ``[t0, t1]`` that meet them all end by ``t1 + max T_i``, and their work
    (:func:`request_work_s`, each at least that much replica time) fits in ``replicas x (t1 - t0 + max T)``.
    So, windows over the arrivals, at most the requests whose smallest works fit can meet the targets; the
    others miss.  The bound is the least of the two (``bound``).  With no TPOT target (``inf``) a request
    meeting its TTFT need only have its prompt done by ``a_i + ttft``: the work is its prefill part and the
    span the TTFT target.  With no TTFT target a request may start arbitrarily late: no throughput bound.
    """
    ttft_min, tpot_min = request_minimums(trace, model, iteration=iteration, token_budget=token_budget)
    ok_alone = (ttft_min <= ttft_slo_s) & (tpot_min <= tpot_slo_s)
    n = len(trace)
    alone = float(ok_alone.mean()) if n else 1.0
    a = trace["arrival_s"].to_numpy(float)
    o = trace["output_tokens"].to_numpy(float)
    if not math.isfinite(ttft_slo_s):
        return {"alone": alone, "throughput": 1.0, "bound": alone}
    prefill_only = not math.isfinite(tpot_slo_s)
    span_s = ttft_slo_s + (np.zeros(len(o)) if prefill_only else np.maximum(o - 1.0, 0.0) * tpot_slo_s)
    work = request_work_s(trace, model, batch_size, prefill_only=prefill_only)
    order = np.argsort(a, kind="stable")
    a, span_s, work, ok_alone = a[order], span_s[order], work[order], ok_alone[order]
    misses = 0
    # Windows: the whole trace, its halves, quarters, ... (2^k pieces by arrival count); each piece's misses
    # are its own requests, so the misses of disjoint pieces add.
    best_misses = 0
    for k in range(windows):
        pieces = np.array_split(np.arange(n), 2 ** k)
        misses = sum(_window_misses(a[p], span_s[p], work[p], ok_alone[p], replicas) for p in pieces if len(p))
        best_misses = max(best_misses, misses)
    throughput = 1.0 - best_misses / n if n else 1.0
    return {"alone": alone, "throughput": throughput, "bound": min(alone, throughput)}


def _window_misses(a, span_s, work, ok, replicas: int) -> int:
    """The fewest requests of one window that must miss: keep the smallest works (of those that could meet
    the targets alone) while they fit in the replica time the window leaves them."""
    candidates = np.flatnonzero(ok)
    if not len(candidates):
        return int(len(a))
    # Whatever subset meets the targets ends by t1 + max span of the subset <= t1 + max span of all.
    room = replicas * (float(a.max() - a.min()) + float(span_s[candidates].max()))
    kept = int(np.searchsorted(np.cumsum(np.sort(work[candidates])), room, side="right"))
    return int(len(a) - kept)


def min_replicas_bound(trace: pd.DataFrame, model, batch_size: int, *, ttft_slo_s: float, tpot_slo_s: float,
                       attainment: float, iteration: str = "exclusive", token_budget: int | None = None,
                       max_replicas: int = 4096) -> float:
    """The fewest replicas whose :func:`slo_bound` reaches ``attainment`` (inf when none up to the cap):
    the bound is monotone in the replica count, so a bisection finds it."""
    def reaches(c: int) -> bool:
        return slo_bound(trace, model, c, batch_size, ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s,
                         iteration=iteration, token_budget=token_budget)["bound"] >= attainment

    if not reaches(max_replicas):
        return math.inf
    lo, hi = 1, max_replicas
    while lo < hi:
        mid = (lo + hi) // 2
        if reaches(mid):
            hi = mid
        else:
            lo = mid + 1
    return float(lo)
