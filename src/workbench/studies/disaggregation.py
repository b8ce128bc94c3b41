"""Sizing the pools: the split of N GPUs into prefill and decode GPUs that maximises goodput, pruned by a bound.

**Goodput** (DistServe, OSDI 2024): the highest request rate per GPU at which at least ``goal`` (90% in the
paper) of the requests meet both a TTFT and a TPOT target.  Here the rates are a ladder of multiples of the
trace's own rate (:func:`workbench.studies.capacity.scaled`: arrival times divided by the factor), so a
configuration's goodput is ``max {factor x rate / GPUs : attainment at that factor >= goal}`` (0 when no
factor of the ladder passes).

**The bound.** Before anything runs, :func:`split_bounds` caps the attainment of every (split, factor) by
the disaggregated bound's two pool terms (``workbench.schedule.bounds.disaggregated_lower_bound``) cast as
an attainment bound, window by window, as :func:`workbench.schedule.capacity.slo_bound` does for a
colocated fleet:

* *prefill pool*: a request meets its TTFT only if its prefill (``a_p/B + b_p l`` of prefill-replica time,
  first token on the prefill replica) is done by ``a_i + TTFT``; the requests of a window of arrivals that
  meet it fit their prefill work in ``P x (window + TTFT)`` replica-seconds;
* *decode pool*: a request meeting both ends by ``a_i + TTFT + (o_i - 1) TPOT``; its decode work (``b_d d +
  c_d (d l + d(d+1)/2) + a_d d/B``, ``d = o - 1``) is done by the decode pool after it arrives, so those of a
  window fit in ``D x (window + max span)``;
* *alone*: its TTFT is at least ``a_p + b_p l`` and its TPOT at least ``(transfer + decodes alone) / (o - 1)``.

The bound is the least of the three (each caps the share meeting both).  A (split, factor) whose bound is
below ``goal`` cannot pass and is never simulated; a split whose best passing rate, by the bound, is below
the best goodput found so far cannot reach it and is not simulated (``strategy="pruned"``).  Both
prunings are safe: a pruned pair's attainment is below the goal whatever the schedule, and a pruned split's
goodput is at most its bound.  Within a split the ladder is simulated from its highest unpruned factor
down, stopping at the first that passes: that is the highest passing factor of the ladder, no monotonicity
assumed.  ``strategy="grid"`` simulates every unpruned pair (the whole curve); both give the same best split
(the test checks).  docs/disaggregation.md derives the bound and reports the study.
"""

from __future__ import annotations

import dataclasses
import math
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import ConfigError

STRATEGIES = ("pruned", "grid")
#: The default ladder of request rates per GPU (req/s): the same per-GPU load for every fleet size.
RATES_PER_GPU = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)


def _replicas(gpus: int, preset: str) -> tuple[int, int]:
    from workbench.costmodel.linear import load_preset
    from workbench.engine.pools import gpus_per_replica

    per = gpus_per_replica(load_preset(preset))
    if gpus < 2 * per or gpus % per:
        raise ConfigError(f"{gpus} GPUs do not make two or more replicas of {per} GPUs ({preset}).", field="gpus",
                          fix=f"give a multiple of {per} of at least {2 * per}.")
    return gpus // per, per


def _ladder(rates_per_gpu, *, descending: bool = False) -> list[float]:
    rates = sorted({float(r) for r in rates_per_gpu}, reverse=descending)
    if not rates or not all(r > 0 for r in rates):
        raise ConfigError(f"rates per GPU {rates_per_gpu!r} are not all positive.", field="rates_per_gpu",
                          fix="give e.g. (0.5, 1.0, 2.0).")
    return rates


def base_rate_rps(trace: pd.DataFrame) -> float:
    """The trace's own arrival rate: requests over the span of their arrivals (s)."""
    a = trace["arrival_s"].to_numpy(float)
    span = float(a.max() - a.min()) if len(a) > 1 else 0.0
    return len(a) / span if span > 0 else math.inf


def _transfer_s(trace: pd.DataFrame, model, link, *, prefix_caching: bool) -> np.ndarray:
    from workbench.engine.pools import gpus_per_replica, kv_bytes_per_token, link_model

    link = link_model(link)
    l = trace["input_tokens"].to_numpy(float)
    per_token = kv_bytes_per_token(model) or 0.0
    if prefix_caching:  # a cache hit may shorten the copy to nothing but the link's latency
        return np.full(len(l), float(link.latency_s))
    return np.array([link.transfer_s(x * per_token, gpus_per_replica(model)) for x in l], dtype=float)


def pool_slo_bound(trace: pd.DataFrame, model, prefill: int, decode: int, batch_size: int, *, ttft_slo_s: float,
                   tpot_slo_s: float, transfer_s: np.ndarray) -> dict[str, float]:
    """Upper bounds on the share of requests meeting both targets on ``prefill`` + ``decode`` replicas
    (module docstring): ``alone``, ``prefill_pool``, ``decode_pool`` and their least, ``bound``."""
    from workbench.schedule.capacity import request_minimums, slo_bound

    ttft_min, _ = request_minimums(trace, model)
    l = trace["input_tokens"].to_numpy(float)
    o = trace["output_tokens"].to_numpy(float)
    d = np.maximum(o - 1.0, 0.0)
    decodes_alone = d * (model.a_d + model.b_d) + model.c_d * (d * l + d * (d + 1.0) / 2.0)
    tpot_min = np.where(o > 1, (transfer_s + decodes_alone) / np.maximum(d, 1.0), 0.0)
    alone = float(((ttft_min <= ttft_slo_s) & (tpot_min <= tpot_slo_s)).mean()) if len(l) else 1.0
    # The prefill pool: slo_bound with no TPOT target bounds the share whose prefill is done in time.
    pre = slo_bound(trace, model, prefill, batch_size, ttft_slo_s=ttft_slo_s, tpot_slo_s=math.inf)["throughput"]
    # The decode pool: the same windows with the prefill terms zeroed leave each request its decode work.
    # (a plain record: a LinearCostModel refuses a prefill of no cost, and slo_bound reads only these five)
    decode_only = SimpleNamespace(a_p=0.0, b_p=0.0, a_d=model.a_d, b_d=model.b_d, c_d=model.c_d)
    dec = slo_bound(trace, decode_only, decode, batch_size, ttft_slo_s=ttft_slo_s,
                    tpot_slo_s=tpot_slo_s)["throughput"]
    return {"alone": alone, "prefill_pool": pre, "decode_pool": dec, "bound": min(alone, pre, dec)}


def split_bounds(trace: pd.DataFrame, gpus: int, *, preset: str, batch_size: int, ttft_slo_s: float,
                 tpot_slo_s: float, goal: float, rates_per_gpu=RATES_PER_GPU, link="nvlink",
                 prefix_caching: bool = False) -> pd.DataFrame:
    """One row per (split, rate factor): its rate per GPU, its attainment bound's terms, and ``pruned``."""
    from workbench.studies.capacity import scaled
    from workbench.studies.plan import _bound_model

    replicas, per = _replicas(gpus, preset)
    model = _bound_model(preset)
    moved = _transfer_s(trace, model, link, prefix_caching=prefix_caching)
    rate = base_rate_rps(trace)
    rows = []
    for per_gpu in _ladder(rates_per_gpu):
        factor = per_gpu * gpus / rate
        t = scaled(trace, factor)
        for p in range(1, replicas):
            b = pool_slo_bound(t, model, p, replicas - p, batch_size, ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s,
                               transfer_s=moved)
            rows.append({"prefill_replicas": p, "decode_replicas": replicas - p, "prefill_gpus": p * per,
                         "decode_gpus": (replicas - p) * per, "factor": factor,
                         "rate_rps_per_gpu": per_gpu, **b, "pruned": b["bound"] < goal})
    return pd.DataFrame(rows)


def _attainment(schedule, ttft_slo_s: float, tpot_slo_s: float, gpus: int) -> dict[str, float]:
    from workbench.schedule.metrics import serving_metrics

    m = serving_metrics(schedule, ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s, gpus=gpus)
    return {k: m[k] for k in ("slo_attainment", "ttft_p99_s", "tpot_p99_s", "transfer_s_mean")}


def run_split(trace: pd.DataFrame, prefill: int, decode: int, factor: float, *, preset: str, batch_size: int,
              policy: str, link, ttft_slo_s: float, tpot_slo_s: float, gpus: int,
              options: dict | None = None) -> dict[str, Any]:
    """Simulate ``prefill`` + ``decode`` replicas on ``trace`` at ``factor`` times its rate."""
    from workbench.engine.core import simulate
    from workbench.engine.pools import Pools
    from workbench.studies.capacity import scaled

    started = time.perf_counter()
    opts = {"progress": False, **_exclusive(policy), **(options or {})}
    pools = Pools(prefill=int(prefill), decode=int(decode), link=link, **opts.pop("pools", {}))
    s = simulate(scaled(trace, factor), batch_size=batch_size, policy=policy, cost_model=preset, pools=pools, **opts)
    return {**_attainment(s, ttft_slo_s, tpot_slo_s, gpus), "makespan_s": s.makespan_s,
            "lower_bound_s": float(s.metrics["lower_bound_s"]), "sim_s": time.perf_counter() - started}


def _exclusive(policy: str) -> dict:
    """Pools run exclusive iterations: a policy whose iterations are mixed (vllm) runs its exclusive form."""
    from workbench.policies.registry import POLICIES

    if policy not in POLICIES:
        raise ConfigError(f"unknown policy '{policy}'.", field="policy", fix=f"use one of {', '.join(POLICIES)}.")
    return {"iteration": "exclusive"} if POLICIES[policy].engine.get("iteration") == "mixed" else {}


@dataclasses.dataclass
class SplitResult:
    pairs: pd.DataFrame   # one row per (split, factor): bound, pruned, simulated, attainment, latencies
    splits: pd.DataFrame  # one row per split: goodput (simulated) or its bound, and why it was not simulated
    best: int | None      # prefill replicas of the split with the highest goodput (None: no split passes)
    settings: dict
    info: dict

    def summary(self) -> dict[str, Any]:
        s = self.splits
        best = None if self.best is None else s.loc[self.best, ["prefill_gpus", "decode_gpus",
                                                                "goodput_rps_per_gpu"]].to_dict()
        return {"splits": len(s), "pairs": len(self.pairs), "pruned_by_bound": int(self.pairs["pruned"].sum()),
                "simulated": int(self.pairs["simulated"].sum()), "best": best, **self.info}


def split_search(trace: pd.DataFrame | str, gpus: int, *, preset: str = "llama2-70b-h100-tp2",
                 batch_size: int = 128, policy: str = "vllm", link="nvlink", ttft_slo_s: float = 1.0,
                 tpot_slo_s: float = 0.1, goal: float = 0.9, rates_per_gpu=RATES_PER_GPU, strategy: str = "pruned",
                 options: dict | None = None, progress: bool = False) -> SplitResult:
    """The split of ``gpus`` GPUs into prefill and decode replicas with the highest goodput (module docstring).

    ``options``: more :func:`~workbench.engine.core.simulate` arguments (``pools``: more
    :class:`~workbench.engine.pools.Pools` fields, e.g. routers or ``overlap``).
    """
    from tqdm.auto import tqdm

    from workbench.workload.trace import load_trace

    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy {strategy!r} is not known.", field="strategy", fix=f"use {' or '.join(STRATEGIES)}.")
    if not 0 < goal <= 1:
        raise ConfigError(f"goal {goal!r} is not in (0, 1].", field="goal", fix="give a share such as 0.9.")
    started = time.perf_counter()
    trace = load_trace(trace)
    prefix = bool((options or {}).get("prefix_caching", False))
    pairs = split_bounds(trace, gpus, preset=preset, batch_size=batch_size, ttft_slo_s=ttft_slo_s,
                         tpot_slo_s=tpot_slo_s, goal=goal, rates_per_gpu=rates_per_gpu, link=link, prefix_caching=prefix)
    bound_s = time.perf_counter() - started
    settings = dict(gpus=int(gpus), preset=preset, batch_size=int(batch_size), policy=policy,
                    link=link if isinstance(link, str) else link.name, ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s,
                    goal=goal, rates_per_gpu=_ladder(rates_per_gpu), strategy=strategy,
                    base_rate_rps=base_rate_rps(trace), requests=len(trace))
    run = {k: settings[k] for k in ("preset", "batch_size", "policy", "ttft_slo_s", "tpot_slo_s", "gpus")}
    results: dict[int, dict] = {}
    bar = tqdm(total=int((~pairs["pruned"]).sum()), desc=f"split {gpus} GPUs", leave=False, disable=not progress)

    def simulate_pair(k: int) -> bool:
        row = pairs.loc[k]
        results[k] = run_split(trace, row["prefill_replicas"], row["decode_replicas"], row["factor"], link=link,
                               options=options, **run)
        bar.update(1)
        return results[k]["slo_attainment"] >= goal

    try:
        _search(pairs, simulate_pair, strategy)
    finally:
        bar.close()
    pairs, splits = _tables(pairs, results, goal)
    passing = splits[splits["simulated_goodput"] & (splits["goodput_rps_per_gpu"] > 0)]
    best = None if not len(passing) else int(passing.sort_values(["goodput_rps_per_gpu", "prefill_replicas"],
                                                                  ascending=[False, True]).index[0])
    info = {"bound_s": bound_s, "wall_s": time.perf_counter() - started}
    return SplitResult(pairs, splits, best, settings, info)


def _search(pairs: pd.DataFrame, simulate_pair, strategy: str) -> None:
    """Simulate what the strategy needs: every unpruned pair (grid), or splits in order of their bound on
    goodput, each from its highest unpruned factor down to the first passing, until no bound beats the best."""
    alive = pairs[~pairs["pruned"]]
    if strategy == "grid":
        for k in alive.index:
            simulate_pair(k)
        return
    upper = alive.groupby("prefill_replicas")["rate_rps_per_gpu"].max().sort_values(ascending=False, kind="stable")
    best = 0.0
    for p, cap in upper.items():
        if cap < best:
            break  # every split left is bounded below the best found (ties are simulated: the grid's choice)
        ladder = alive[alive["prefill_replicas"] == p].sort_values("factor", ascending=False)
        for k, row in ladder.iterrows():
            if row["rate_rps_per_gpu"] < best:
                break
            if simulate_pair(k):
                best = float(row["rate_rps_per_gpu"])
                break


def _tables(pairs: pd.DataFrame, results: dict[int, dict], goal: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    res = pd.DataFrame.from_dict(results, orient="index")
    pairs = pairs.join(res) if len(res) else pairs.assign(slo_attainment=np.nan)
    pairs["simulated"] = pairs["slo_attainment"].notna()
    pairs["passes"] = pairs["simulated"] & (pairs["slo_attainment"] >= goal)
    rows = []
    for p, g in pairs.groupby("prefill_replicas"):
        passed = g[g["passes"]]
        # What the search leaves possible: a pair not pruned and not simulated-and-failed.
        open_ = g[~g["pruned"] & (g["passes"] | ~g["simulated"])]
        best = passed.loc[passed["rate_rps_per_gpu"].idxmax()] if len(passed) else None
        goodput = float(best["rate_rps_per_gpu"]) if best is not None else 0.0
        at_most = float(open_["rate_rps_per_gpu"].max()) if len(open_) else 0.0
        rows.append({"prefill_replicas": p, "decode_replicas": int(g["decode_replicas"].iloc[0]),
                     "prefill_gpus": int(g["prefill_gpus"].iloc[0]), "decode_gpus": int(g["decode_gpus"].iloc[0]),
                     "goodput_rps_per_gpu": goodput, "goodput_bound_rps_per_gpu": at_most,
                     # measured: no rate above the one found is left possible (else the split's goodput is only
                     # known to be at most its bound, itself at most the best found: the search stopped there)
                     "simulated_goodput": goodput >= at_most,
                     "ttft_p99_s": float(best["ttft_p99_s"]) if best is not None else np.nan,
                     "tpot_p99_s": float(best["tpot_p99_s"]) if best is not None else np.nan,
                     "simulations": int(g["simulated"].sum())})
    splits = pd.DataFrame(rows).set_index("prefill_replicas", drop=False)
    splits.index.name = None
    return pairs, splits


def colocated_goodput(trace: pd.DataFrame | str, gpus: int, *, preset: str = "llama2-70b-h100-tp2",
                      batch_size: int = 128, policies=("paper-baseline", "hybrid", "vllm"), ttft_slo_s: float = 1.0,
                      tpot_slo_s: float = 0.1, goal: float = 0.9, rates_per_gpu=RATES_PER_GPU,
                      full: bool = False) -> pd.DataFrame:
    """The same goodput for colocated fleets of ``gpus`` GPUs (every replica ``mixed``), one row per
    (policy, factor) simulated: from the highest factor down to the first passing (``full``: every factor)."""
    from workbench.engine.core import simulate
    from workbench.studies.capacity import scaled
    from workbench.workload.trace import load_trace

    trace = load_trace(trace)
    replicas, _ = _replicas(gpus, preset)
    rate = base_rate_rps(trace)
    rows = []
    for policy in policies:
        for per_gpu in _ladder(rates_per_gpu, descending=not full):
            factor = per_gpu * gpus / rate
            s = simulate(scaled(trace, factor), replicas, batch_size, policy, preset, progress=False)
            rows.append({"policy": policy, "factor": factor, "rate_rps_per_gpu": per_gpu,
                         **_attainment(s, ttft_slo_s, tpot_slo_s, gpus)})
            if not full and rows[-1]["slo_attainment"] >= goal:
                break  # the highest passing factor of the ladder: goodput is known
    table = pd.DataFrame(rows)
    table["passes"] = table["slo_attainment"] >= goal
    return table.sort_values(["policy", "factor"], kind="stable").reset_index(drop=True)


def goodput_of(table: pd.DataFrame) -> pd.DataFrame:
    """Per policy of a :func:`colocated_goodput` table: its goodput (highest passing rate per GPU) and the
    p99 TTFT and TPOT at that rate."""
    rows = []
    for policy, g in table.groupby("policy", sort=False):
        passed = g[g["passes"]]
        best = passed.loc[passed["rate_rps_per_gpu"].idxmax()] if len(passed) else None
        rows.append({"policy": policy, "goodput_rps_per_gpu": 0.0 if best is None else float(best["rate_rps_per_gpu"]),
                     "ttft_p99_s": np.nan if best is None else float(best["ttft_p99_s"]),
                     "tpot_p99_s": np.nan if best is None else float(best["tpot_p99_s"])})
    return pd.DataFrame(rows).set_index("policy")


def study(trace: pd.DataFrame | str, gpu_counts=(4, 8, 16), *, preset: str = "llama2-70b-h100-tp2",
          batch_size: int = 128, policies=("paper-baseline", "hybrid", "vllm"), pool_policy: str = "vllm",
          link="nvlink", ttft_slo_s: float = 1.0, tpot_slo_s: float = 0.1, goal: float = 0.9,
          rates_per_gpu=RATES_PER_GPU, options: dict | None = None, progress: bool = False
          ) -> tuple[pd.DataFrame, dict]:
    """Disaggregated (best split) against the best colocated policy at each GPU count: one row per (GPUs,
    fleet) with goodput per GPU, the p99 TTFT and TPOT at that goodput's rate, and which wins.  Returns the
    table and, per GPU count, the split search and the colocated table (for the figure)."""
    from workbench.workload.trace import load_trace

    trace = load_trace(trace)
    rows, detail = [], {}
    slo = dict(ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s, goal=goal, rates_per_gpu=rates_per_gpu)
    for gpus in gpu_counts:
        colo = colocated_goodput(trace, gpus, preset=preset, batch_size=batch_size, policies=policies, **slo)
        per_policy = goodput_of(colo)
        split = split_search(trace, gpus, preset=preset, batch_size=batch_size, policy=pool_policy, link=link,
                             options=options, progress=progress, **slo)
        detail[gpus] = {"colocated": colo, "split": split}
        name = per_policy["goodput_rps_per_gpu"].idxmax()
        best_colo = per_policy.loc[name]
        label = f"colocated {name}" if best_colo["goodput_rps_per_gpu"] > 0 else "colocated (no policy passes)"
        rows.append({"gpus": gpus, "fleet": label, **best_colo.to_dict()})
        if split.best is None:
            rows.append({"gpus": gpus, "fleet": "disaggregated (no split passes)", "goodput_rps_per_gpu": 0.0,
                         "ttft_p99_s": np.nan, "tpot_p99_s": np.nan})
        else:
            b = split.splits.loc[split.best]
            rows.append({"gpus": gpus, "fleet": f"disaggregated {b['prefill_gpus']}P+{b['decode_gpus']}D",
                         **{k: b[k] for k in ("goodput_rps_per_gpu", "ttft_p99_s", "tpot_p99_s")}})
    table = pd.DataFrame(rows)
    best = table.groupby("gpus")["goodput_rps_per_gpu"].transform("max")
    table["wins"] = (table["goodput_rps_per_gpu"] >= best) & (table["goodput_rps_per_gpu"] > 0)
    table.attrs.update(preset=preset, batch_size=batch_size, link=str(link), pool_policy=pool_policy, **slo)
    return table, detail


def compare_fleets(trace: pd.DataFrame, gpus: int, *, prefill_gpus: int, preset: str = "llama2-70b-h100-tp2",
                   batch_size: int = 128, policies=("paper-baseline", "hybrid", "vllm"), pool_policy: str = "vllm",
                   link="nvlink", ttft_slo_s: float = 1.0, tpot_slo_s: float = 0.1,
                   options: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """``trace`` as it is on ``gpus`` GPUs: each colocated policy, and ``prefill_gpus`` of them as a prefill
    pool (the rest decode).  Returns one row per fleet (:func:`~workbench.schedule.metrics.serving_metrics`
    with both targets) and the schedules by fleet name."""
    from workbench.engine.core import simulate
    from workbench.engine.pools import Pools
    from workbench.schedule.metrics import serving_metrics

    replicas, per = _replicas(gpus, preset)
    if prefill_gpus % per or not 0 < prefill_gpus // per < replicas:
        raise ConfigError(f"{prefill_gpus} prefill GPUs do not leave both pools a replica of {per} GPUs.",
                          field="prefill_gpus", fix=f"give a multiple of {per} below {gpus}.")
    runs = {f"colocated {p}": simulate(trace, replicas, batch_size, p, preset, progress=False) for p in policies}
    p = prefill_gpus // per
    opts = {"progress": False, **_exclusive(pool_policy), **(options or {})}
    pools = Pools(prefill=p, decode=replicas - p, link=link, **opts.pop("pools", {}))
    runs[f"disaggregated {prefill_gpus}P+{gpus - prefill_gpus}D"] = simulate(
        trace, batch_size=batch_size, policy=pool_policy, cost_model=preset, pools=pools, **opts)
    rows = {name: serving_metrics(s, ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s, gpus=gpus)
            for name, s in runs.items()}
    cols = ["ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "slo_attainment", "goodput_rps_per_gpu",
            "transfers", "transfer_s_mean"]
    return pd.DataFrame.from_dict(rows, orient="index")[cols], runs
