"""Online arrivals: traces at a target rate, the cluster's capacity, latency SLOs, load sweeps.

* :func:`resample_arrivals` - a real trace (e.g. ``gsm8k-train`` lengths) with
  seeded renewal arrivals at a target rate (Poisson, or burstier).
* :func:`cluster_capacity` - the requests per second a cluster can sustain,
  so that "80% of capacity" means one number (see its docstring).
* :func:`slo_attainment` - the share of requests meeting TTFT and TPOT targets.
* the hybrid method on a rolling horizon (dispatcher ``rolling``, policy
  ``hybrid-rolling``) lives with the other policies, in
  :mod:`workbench.policies.rolling`.
* :func:`load_sweep` - every policy at several loads: p50/p90/p99 latencies
  and SLO attainment, one tidy table; :func:`load_sweep_figure` plots it.

Metrics observe: nothing here writes files or plots as a side effect.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from workbench.errors import ConfigError
from workbench.policies.registry import POLICIES

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from workbench.schedule.schema import Schedule

#: Default latency targets (seconds): see :func:`slo_attainment` and docs/beyond.md.
DEFAULT_TTFT_SLO_S = 1.0
DEFAULT_TPOT_SLO_S = 0.05
#: Policies a load sweep compares unless told otherwise.
DEFAULT_SWEEP_POLICIES = ("paper-baseline", "least-work", "online", "hybrid", "hybrid-rolling", "chunked-prefill")


# -- traces at a target rate -------------------------------------------------------------------------------
def renewal_arrivals(n_requests: int, rate_per_s: float, *, seed: int | np.random.Generator = 0,
                     burstiness: float = 1.0) -> np.ndarray:
    """Arrival times of a renewal process at mean ``rate_per_s``, the first at 0.

    Gaps are gamma-distributed with shape ``1 / burstiness`` and mean
    ``1 / rate_per_s``: ``burstiness = 1`` is a Poisson process, larger is
    burstier (squared coefficient of variation of the gaps = ``burstiness``).
    """
    if not (rate_per_s > 0 and math.isfinite(rate_per_s)):
        raise ConfigError(f"rate_per_s is {rate_per_s!r}.", field="rate_per_s", fix="give a rate > 0 requests/s.")
    if not (burstiness > 0 and math.isfinite(burstiness)):
        raise ConfigError(f"burstiness is {burstiness!r}.", field="burstiness",
                          fix="give burstiness > 0 (1 = Poisson, > 1 = burstier).")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    shape = 1.0 / burstiness
    gaps = rng.gamma(shape, 1.0 / (rate_per_s * shape), int(n_requests))
    return np.cumsum(gaps) - gaps[0]


def resample_arrivals(trace: pd.DataFrame | str, rate_per_s: float, *, n_requests: int | None = None,
                      seed: int = 0, burstiness: float = 1.0) -> pd.DataFrame:
    """``trace``'s requests (its real lengths) arriving at ``rate_per_s``, seeded.

    ``n_requests`` requests are drawn without replacement (all of them by
    default) in a seeded random order, so arrival order does not follow the
    file's order; ``arrival_s`` comes from :func:`renewal_arrivals`.  Ids and
    lengths are the trace's own.
    """
    from workbench.workload.trace import load_trace

    trace = load_trace(trace)
    rng = np.random.default_rng(seed)
    n = len(trace) if n_requests is None else int(n_requests)
    if not 1 <= n <= len(trace):
        raise ConfigError(f"n_requests is {n_requests!r} but the trace has {len(trace)} requests.",
                          field="n_requests", fix=f"give 1..{len(trace)}.")
    rows = rng.permutation(len(trace))[:n]
    out = trace.iloc[rows].reset_index(drop=True).copy()
    out["arrival_s"] = renewal_arrivals(n, rate_per_s, seed=rng, burstiness=burstiness)
    return out


# -- capacity -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Capacity:
    """The cluster's capacity in requests per second, and how it was obtained.

    ``rate_per_s = n / T_fluid`` where ``T_fluid`` is the throughput part of
    the makespan lower bound of the trace served as one batch job (every
    request at t = 0): ``sum_i w_i / |J|``, or the ``kv_aggregate`` term when
    a KV cache binds.  ``saturated_rps`` holds, per policy asked for, the
    throughput it actually reaches on that batch job (``n / makespan``).
    """

    rate_per_s: float
    fluid_makespan_s: float
    binding: str
    n_requests: int
    mean_weight_s: float
    saturated_rps: dict[str, float] = field(default_factory=dict)

    def rate_at(self, load: float) -> float:
        """Arrival rate (requests/s) at ``load`` times capacity."""
        return float(load) * self.rate_per_s


def cluster_capacity(trace: pd.DataFrame | str, clients: int = 8, batch_size=16, cost_model="llama-65b", *,
                     kv_capacity_tokens=None, policies: Iterable[str] = ()) -> Capacity:
    """The most requests per second ``clients`` clients can sustain on ``trace``'s length mix.

    Every request costs its client at least ``w_i = v_i + a_p/B + a_d (o_i-1)/B``
    (MODEL.md section 3: its own work plus its share of full prefill and decode
    batches), so no policy serves a long stream faster than ``|J| / mean(w_i)``
    requests per second: beyond it queues grow without bound.  This *fluid
    capacity* depends on the trace's lengths, the cluster and the cost model
    only, never on a policy, so a load of 0.8 is the same arrival rate for
    every policy.  With a KV capacity the ``kv_aggregate`` bound replaces the
    sum when larger.  ``policies`` also measures each one's saturated
    throughput (all requests at t = 0).
    """
    from workbench.costmodel.linear import load_preset
    from workbench.schedule.bounds import closed_form_lower_bound
    from workbench.workload.trace import load_trace

    trace = load_trace(trace).assign(arrival_s=0.0)
    cm = load_preset(cost_model)
    bound = closed_form_lower_bound(trace, int(clients), batch_size, cm, release_aware=False,
                                    kv_capacity_tokens=kv_capacity_tokens)
    throughput_terms = {k: v for k, v in bound.terms.items() if k in ("average_work", "kv_aggregate")}
    binding = max(throughput_terms, key=throughput_terms.get)
    fluid = throughput_terms[binding]
    n = len(trace)
    saturated = {}
    for name in policies:
        s = run_policy(trace, name, clients=clients, batch_size=batch_size, cost_model=cm,
                       kv_capacity_tokens=kv_capacity_tokens)
        saturated[name] = n / s.makespan_s
    return Capacity(rate_per_s=n / fluid, fluid_makespan_s=fluid, binding=binding, n_requests=n,
                    mean_weight_s=fluid * int(clients) / n, saturated_rps=saturated)


# -- SLOs -----------------------------------------------------------------------------------------------------
def slo_attainment(requests: pd.DataFrame, *, ttft_slo_s: float = DEFAULT_TTFT_SLO_S,
                   tpot_slo_s: float = DEFAULT_TPOT_SLO_S) -> dict[str, float]:
    """Shares of requests meeting the time-to-first-token target, the time-per-output-token target, and both.

    TTFT is ``first_token_s - arrival_s``; TPOT is the mean time between a
    request's output tokens after the first (0 for one-token outputs), as in
    :func:`workbench.schedule.metrics.request_latencies`.
    """
    from workbench.schedule.metrics import request_latencies

    lat = request_latencies(requests)
    ttft_ok = (lat["ttft_s"] <= ttft_slo_s).to_numpy()
    tpot_ok = (lat["tpot_s"] <= tpot_slo_s).to_numpy()
    return {"ttft_attainment": float(ttft_ok.mean()), "tpot_attainment": float(tpot_ok.mean()),
            "slo_attainment": float((ttft_ok & tpot_ok).mean())}


def latency_row(schedule: Schedule, *, ttft_slo_s: float = DEFAULT_TTFT_SLO_S,
                tpot_slo_s: float = DEFAULT_TPOT_SLO_S) -> dict[str, float]:
    """One flat row: p50/p90/p99 (and mean) of queueing, TTFT, TPOT and e2e latency, SLO attainment."""
    from workbench.schedule.metrics import latency_summary

    summary = latency_summary(schedule.requests)
    row: dict[str, float] = {}
    for metric, values in summary.iterrows():
        for col, value in values.items():
            row[f"{metric}_{col}"] = float(value)
    row.update(slo_attainment(schedule.requests, ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s))
    row["makespan_s"] = schedule.makespan_s
    row["slot_utilization"] = float(schedule.metrics["slot_utilization"])
    return row


# -- running any policy, and the load sweep ------------------------------------------------------------------
def policy_names() -> list[str]:
    """Every policy a load sweep can run: every registered one (one engine serves them all)."""
    return list(POLICIES)


def run_policy(trace: pd.DataFrame | str, policy: str, *, clients: int = 8, batch_size=16,
               cost_model="llama-65b", kv_capacity_tokens=None, **params: Any) -> Schedule:
    """Simulate ``policy`` and return its schedule."""
    from workbench.engine.core import simulate
    from workbench.schedule.estimate import check_work
    from workbench.workload.trace import load_trace

    if policy not in POLICIES:
        raise ConfigError(f"unknown policy '{policy}'.", field="policy", fix=f"use one of {', '.join(policy_names())}.")
    trace = load_trace(trace)
    check_work(trace, clients, batch_size, export=False,
               stepped=(params.get("iteration") or POLICIES[policy].engine.get("iteration")) == "mixed")
    return simulate(trace, clients, batch_size, policy, cost_model, kv_capacity_tokens=kv_capacity_tokens, **params)


def load_sweep(trace: pd.DataFrame | str = "gsm8k-train", *, clients: int = 8, batch_size=16,
               cost_model="llama-65b", loads: Sequence[float] = (0.5, 0.7, 0.8, 0.9),
               policies: Sequence[str] = DEFAULT_SWEEP_POLICIES, n_requests: int | None = None, seed: int = 0,
               burstiness: float = 1.0, kv_capacity_tokens=None, ttft_slo_s: float = DEFAULT_TTFT_SLO_S,
               tpot_slo_s: float = DEFAULT_TPOT_SLO_S, capacity: Capacity | None = None,
               schedules: dict | None = None) -> pd.DataFrame:
    """Every policy at every load: one row per (load, policy) with latency quantiles and SLO attainment.

    Load ``x`` means arrivals at ``x`` times :func:`cluster_capacity`; the
    same seeded arrival trace (same requests, same times) is given to every
    policy at a load.  Pass a dict as ``schedules`` to keep each schedule,
    keyed by ``(load, policy)``.
    """
    from workbench.costmodel.linear import load_preset
    from workbench.workload.trace import load_trace

    base = load_trace(trace)
    cm = load_preset(cost_model)
    unknown = [p for p in policies if p not in policy_names()]
    if unknown:
        raise ConfigError(f"unknown policy '{unknown[0]}'.", field="policies",
                          fix=f"use names from {', '.join(policy_names())}.")
    bad = [x for x in loads if not (x > 0 and math.isfinite(x))]
    if bad or not len(loads):
        raise ConfigError(f"loads {list(loads)!r} must be numbers > 0.", field="loads",
                          fix="give fractions of capacity, e.g. 0.5,0.7,0.8,0.9.")
    if n_requests is not None:
        base = base.iloc[np.sort(np.random.default_rng(seed).permutation(len(base))[:int(n_requests)])]
        base = base.reset_index(drop=True)
    capacity = capacity or cluster_capacity(base, clients, batch_size, cm, kv_capacity_tokens=kv_capacity_tokens)
    from workbench.workload.trace import MAX_ARRIVAL_S

    for load in loads:
        # Mean span of the resampled arrivals; a burst can stretch it, so half the limit is the line.
        span_s = len(base) / capacity.rate_at(load)
        if not span_s <= MAX_ARRIVAL_S / 2:
            raise ConfigError(f"load {load:g} spreads {len(base):,} requests over about {span_s:.3g} s "
                              f"({capacity.rate_at(load):.3g} requests/s), beyond the {MAX_ARRIVAL_S:.0e} s a "
                              "trace may span.", field="loads",
                              fix="give loads as fractions of capacity, e.g. 0.5,0.7,0.8,0.9.")
    rows = []
    for load in loads:
        rate = capacity.rate_at(load)
        arriving = resample_arrivals(base, rate, seed=seed, burstiness=burstiness)
        for name in policies:
            s = run_policy(arriving, name, clients=clients, batch_size=batch_size, cost_model=cm,
                           kv_capacity_tokens=kv_capacity_tokens)
            if schedules is not None:
                schedules[(float(load), name)] = s
            rows.append({"load": float(load), "rate_per_s": rate, "policy": name,
                         **latency_row(s, ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s)})
    table = pd.DataFrame(rows)
    table.attrs.update(capacity_rps=capacity.rate_per_s, ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s,
                       n_requests=len(base), clients=clients, batch_size=batch_size, cost_model=cm.name)
    return table


def winners(table: pd.DataFrame, metric: str = "ttft_s_p99", *, larger_is_better: bool = False) -> pd.DataFrame:
    """Per load, the policy with the best ``metric`` and the runner-up's margin."""
    rows = []
    for load, part in table.groupby("load", sort=True):
        ranked = part.sort_values(metric, ascending=not larger_is_better)
        best, second = ranked.iloc[0], ranked.iloc[1] if len(ranked) > 1 else None
        rows.append({"load": load, "winner": best["policy"], metric: best[metric],
                     "runner_up": None if second is None else second["policy"],
                     f"runner_up_{metric}": np.nan if second is None else second[metric]})
    return pd.DataFrame(rows).set_index("load")


def load_sweep_figure(table: pd.DataFrame, metric: str = "ttft_s_p99", *, title: str | None = None,
                      log_y: bool = True) -> go.Figure:
    """One line per policy: ``metric`` against the load (fraction of capacity).

    Each policy has its own marker and dash, so policies whose curves coincide (two at 100% SLO attainment)
    stay visible on top of one another; the axis titles read as words with their unit."""
    import plotly.graph_objects as go

    from workbench._units import display_name, readable
    from workbench.viz.figures import log_axis_ticks

    symbols = ("circle", "square", "diamond", "triangle-up", "x", "cross", "star", "hexagon")
    dashes = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
    label = readable(metric)
    share = not log_y and (display_name(metric) or "").endswith("_pct")  # in percent, as in every table
    value = ".2%" if share else ".4g"
    fig = go.Figure()
    for k, (name, part) in enumerate(table.groupby("policy", sort=False)):
        part = part.sort_values("load")
        fig.add_trace(go.Scatter(x=part["load"], y=part[metric], mode="lines+markers", name=str(name),
                                 marker=dict(symbol=symbols[k % len(symbols)], size=8 + 2 * (k % 3)),
                                 line=dict(dash=dashes[k % len(dashes)]),
                                 hovertemplate=f"{name}<br>load %{{x:.2f}}<br>{label} %{{y:{value}}}<extra></extra>"))
    cap = table.attrs.get("capacity_rps")
    fig.update_layout(
        title=title or f"{label} against load" + (f" (capacity {cap:.1f} requests/s)" if cap else ""),
        xaxis_title="load (fraction of the cluster's capacity)", yaxis_title=label, template="plotly_white",
        hovermode="x unified", legend={"orientation": "h", "y": -0.2}, margin={"l": 70, "r": 20, "t": 60, "b": 90})
    if log_y:
        fig.update_yaxes(type="log", **log_axis_ticks(table[metric].to_numpy(dtype=float)))
    elif share:
        fig.update_yaxes(tickformat=".1%", title_text=f"{label} (%)")
    return fig
