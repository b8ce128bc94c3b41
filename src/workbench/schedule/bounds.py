"""Closed-form lower bounds on the makespan (MODEL.md section 3).

Every schedule on client ``j`` costs ``sum v_i + a_p N_prefill + a_d N_decode``
with ``N_prefill >= ceil(|S|/B)`` and ``N_decode >= max(ceil(D/B), max(o_i-1))``.
Relaxing the ceilings gives additive weights ``w_i``, so the total work spread
evenly over the clients bounds any makespan, and so does the longest request
served alone.  Every bound here is a pure function of the instance (trace, clients, batch sizes,
cost model, KV capacity, mode); the solver's bin-packing bound lives in ``workbench.offline``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from workbench.costmodel.linear import LinearCostModel
from workbench.schedule.metrics import batch_sizes_array


@dataclass(frozen=True)
class LowerBound:
    """A lower bound with every term that was computed and the one that binds."""

    value_s: float
    terms: dict[str, float]
    binding: str
    details: dict = field(default_factory=dict, compare=False)

    def table(self) -> pd.DataFrame:
        rows = [{"term": name, "value_s": value, "binds": name == self.binding} for name, value in self.terms.items()]
        return pd.DataFrame(rows).set_index("term")


TERM_DOCS = {
    "single_request": "the longest request served alone: max_i t_alone(i)",
    "average_work": "total relaxed work spread evenly: sum_i w_i / |J|",
    "aggregate_ceiling": "(V + a_p ceil(n/B) + a_d ceil(D/B)) / |J|: summing LB_j over clients",
    "pair": "two of the |J|+1 requests longest alone share a client: the smallest LB_j over such pairs",
    "release_plus_alone": "no request finishes before its arrival plus its time alone: max_i (a_i + t_alone(i))",
    "kv_aggregate": "KV cache binds: (V + a_p N_p + a_d N_d) / |J| with N_p >= max(ceil(n/B_eff), ceil(sum s_i/M)), "
                    "N_d >= max(ceil(D/B_eff), ceil(sum s_i (o_i-1)/M)), s_i = l_i + o_i",
}


def kv_iteration_counts(input_tokens, output_tokens, batch_size: int, kv_capacity_tokens: int) -> dict[str, int]:
    """Fewest prefill and decode iterations any schedule needs when a KV cache of ``M`` tokens binds.

    Admission reserves ``s_i = l_i + o_i`` KV tokens from a request's prefill
    to its last decode (the simulator's policy, checked by the validator's
    ``kv-capacity`` rule).  Proof sketch, on one client with capacity ``M``
    and batch size ``B`` (every step holds for each client and sums over them):

    1. The requests holding KV at any iteration have ``sum s_i <= M``, so
       there are at most ``B_eff = min(B, k*)`` of them, where ``k*`` is the
       largest ``k`` whose ``k`` smallest ``s_i`` (of the whole trace) sum to
       at most ``M`` (a client's subset has no smaller ``s_i``).
    2. A decode iteration serves only holding requests: at most ``B_eff`` of
       them, whose ``s_i`` sum to at most ``M``.  Request ``i`` is served in
       ``o_i - 1`` decode iterations, so summing over decode iterations,
       ``D <= B_eff N_d`` and ``sum_i s_i (o_i - 1) <= M N_d``.
    3. The requests of one prefill all hold KV right after it, so likewise
       ``n <= B_eff N_p`` and ``sum_i s_i <= M N_p``.
    4. Over clients, ``sum_j ceil(x_j) >= ceil(sum_j x_j)``, and taking the
       largest ``B`` and ``M`` is the most favourable split.

    Returns ``b_eff``, ``prefills`` (``N_p`` bound) and ``decodes`` (``N_d`` bound).
    """
    l = np.asarray(input_tokens, dtype=np.int64)
    o = np.asarray(output_tokens, dtype=np.int64)
    s = l + o
    M = int(kv_capacity_tokens)
    fits = int(np.searchsorted(np.cumsum(np.sort(s)), M, side="right"))
    b_eff = max(1, min(int(batch_size), fits))
    D = int((o - 1).sum())
    return {"b_eff": b_eff,
            "prefills": max(-(-len(s) // b_eff), -(-int(s.sum()) // M)),
            "decodes": max(-(-D // b_eff), -(-int((s * (o - 1)).sum()) // M))}


#: The reported bound is its computed value lowered by this relative margin (MODEL.md section 3): the
#: simulator's clock and the bound's sums round differently, and a makespan may not fall one ulp below
#: the bound of its own instance.  1e-9 is far above float64's accumulated error on any trace the
#: loader accepts and far below any printed figure.
BOUND_REL_MARGIN = 1e-9


def _round_down(value_s: float) -> float:
    return float(value_s) * (1.0 - BOUND_REL_MARGIN) if value_s > 0 else float(value_s)


def pair_term(l: np.ndarray, o: np.ndarray, clients: int, batch_size: int, cost_model: LinearCostModel) -> float | None:
    """Among the ``|J| + 1`` requests longest alone two share a client: the smallest LB_j over such pairs.

    ``None`` when there are no more requests than clients (no pair must share).
    """
    n, m = len(l), int(clients)
    if n <= m or m + 1 > PAIR_MAX_CLIENTS:
        return None
    l = np.asarray(l, dtype=float)
    o = np.asarray(o, dtype=float)
    top = np.argsort(-cost_model.alone_time_s(l, o), kind="stable")[: m + 1]
    v = cost_model.request_work_s(l[top], o[top])
    ot = o[top]
    x, y = np.triu_indices(len(top), k=1)
    B = int(batch_size)
    d = (ot[x] - 1) + (ot[y] - 1)
    cost = (v[x] + v[y] + cost_model.a_p * math.ceil(2 / B)
            + cost_model.a_d * np.maximum(np.ceil(d / B), np.maximum(ot[x], ot[y]) - 1))
    return float(cost.min())


#: Above this many clients the ``pair`` term (``|J|^2 / 2`` pairs) is left out; the bound stays valid.
PAIR_MAX_CLIENTS = 2_000


def closed_form_lower_bound(trace: pd.DataFrame, clients: int, batch_size, cost_model: LinearCostModel,
                            release_aware: bool = True, kv_capacity_tokens=None) -> LowerBound:
    """The lower bound of an instance: the largest closed-form term, a pure function of the instance.

    Terms (MODEL.md section 3): ``single_request`` (the longest request
    served alone), ``average_work`` (``sum w_i / |J|``), ``aggregate_ceiling``
    (``(V + a_p ceil(n/B) + a_d ceil(D/B)) / |J|``), ``pair`` (two of the
    ``|J| + 1`` longest requests share a client), ``release_plus_alone``
    when requests arrive over time and, with ``kv_capacity_tokens`` (one
    ``M`` or one per client; ``None`` entries mean unlimited) on every
    client, ``kv_aggregate`` (:func:`kv_iteration_counts`).  With
    per-client batch sizes the terms use the largest ``B`` (the most
    favourable client), which keeps them valid.  The value is rounded down
    by :data:`BOUND_REL_MARGIN`.  Nothing here depends on what ran before
    in the process or on a solver's time limit: every command reports this
    value for the instance (the solver's bin-packing bound is a separate
    figure of ``workbench bound``).
    """
    B = batch_sizes_array(batch_size, clients)
    Bmax = int(B.max())
    m = int(clients)
    l = trace["input_tokens"].to_numpy(float)
    o = trace["output_tokens"].to_numpy(float)
    alone = cost_model.alone_time_s(l, o)
    weights = cost_model.request_weight_s(l, o, Bmax)
    work = math.fsum(cost_model.request_work_s(l, o).tolist())
    n, D = len(l), int((o - 1).sum())
    terms = {
        "single_request": float(alone.max()),
        "average_work": math.fsum(weights.tolist()) / m,
        "aggregate_ceiling": (work + cost_model.a_p * -(-n // Bmax) + cost_model.a_d * -(-D // Bmax)) / m,
    }
    pair = pair_term(l, o, m, Bmax, cost_model)
    if pair is not None:
        terms["pair"] = pair
    if release_aware and "arrival_s" in trace and float(trace["arrival_s"].max()) > 0:
        terms["release_plus_alone"] = float((trace["arrival_s"].to_numpy(float) + alone).max())
    caps = [kv_capacity_tokens] if np.ndim(kv_capacity_tokens) == 0 else list(kv_capacity_tokens)
    if kv_capacity_tokens is not None and len(caps) and all(c is not None for c in caps):
        counts = kv_iteration_counts(l, o, Bmax, max(int(c) for c in caps))
        terms["kv_aggregate"] = (work + cost_model.a_p * counts["prefills"]
                                 + cost_model.a_d * counts["decodes"]) / m
    binding = max(terms, key=terms.get)
    return LowerBound(value_s=_round_down(terms[binding]), terms=terms, binding=binding)


def refuse_recording(record: bool) -> None:
    """``record=True`` asked for the process-wide bound cache that no longer exists (MODEL.md section 3).

    ``record=False`` (not recording) is what every call now does, so old calls that pass it run.
    """
    if record:
        from workbench.errors import ConfigError

        raise ConfigError("bounds are no longer recorded for later schedules: the bound of an instance is a pure "
                          "function of it (MODEL.md section 3).", field="record",
                          fix="drop record=True; read the solver's figure from the result instead.")


#: The engine's name for the instance bound (it imports this one); the same pure function.
best_lower_bound = closed_form_lower_bound
instance_lower_bound = closed_form_lower_bound


def chunked_lower_bound(trace: pd.DataFrame, clients: int, batch_size, cost_model: LinearCostModel, *,
                        token_budget: float = math.inf, kv_capacity_tokens=None) -> LowerBound:
    """A makespan lower bound valid for chunked-prefill schedules.

    MODEL.md section 3's bound charges ``a_p`` per prefill stage, which mixed
    batching does not pay, so it is not valid here.  Summing ``t_mixed`` over
    a client's iterations gives at least ``V + a_d N + (a_m - a_d) N_mixed``
    (``V`` as in section 3; the chunks' read-back ``c_d Q`` only adds), where
    ``N`` iterations each carry at most ``B_eff`` decodes and at most ``tau``
    tokens, so ``N >= max(ceil(D / B_eff), ceil((D + L) / tau))``, and with
    a KV cache ``N >= ceil(sum s_i (o_i - 1) / M)``; the mixed ones carry at
    most ``tau`` prompt tokens, ``N_mixed >= ceil(L / tau)``.  Summed over
    clients (``sum ceil >= ceil sum``) and divided by ``|J|``: the term
    ``chunked_aggregate``.  A request alone still takes at least
    ``t_alone(i)`` (its prompt costs ``a_m + b_p l_i`` or more), so
    ``single_request`` and ``release_plus_alone`` carry over.
    """
    B = batch_sizes_array(batch_size, clients)
    base = closed_form_lower_bound(trace, clients, B, cost_model)
    terms = {k: v for k, v in base.terms.items() if k in ("single_request", "release_plus_alone")}
    l = trace["input_tokens"].to_numpy(np.int64)
    o = trace["output_tokens"].to_numpy(np.int64)
    D, L = int((o - 1).sum()), int(l.sum())
    b_eff = int(B.max())
    n_iter = -(-D // b_eff)
    caps = [kv_capacity_tokens] if np.ndim(kv_capacity_tokens) == 0 else list(kv_capacity_tokens)
    if kv_capacity_tokens is not None and len(caps) and all(c is not None for c in caps):
        counts = kv_iteration_counts(l, o, b_eff, max(int(c) for c in caps))
        n_iter = max(n_iter, counts["decodes"])
    n_mixed = 0
    if math.isfinite(token_budget):
        n_iter = max(n_iter, -(-(D + L) // int(token_budget)))
        n_mixed = -(-L // int(token_budget))
    V = float(cost_model.request_work_s(l, o).sum())
    a_m = max(cost_model.a_p, cost_model.a_d)
    terms["chunked_aggregate"] = (V + cost_model.a_d * n_iter + (a_m - cost_model.a_d) * n_mixed) / int(clients)
    binding = max(terms, key=terms.get)
    return LowerBound(value_s=_round_down(terms[binding]), terms=terms, binding=binding)


DISAGG_TERM_DOCS = {
    "chain": "a request alone: max_i (a_i + its prefill + its transfer + its o_i - 1 decodes alone)",
    "prefill_pool": "the prefill pool's work spread over it: (sum b_p l_i + a_p ceil(n/B)) / |P|, "
                    "plus the shortest tail a last prefill still needs (its transfer and decodes, 0 if o_i = 1)",
    "decode_pool": "the earliest a transfer can end, plus the decode pool's work spread over it: "
                   "(sum_i v^d_i + a_d ceil(D/B)) / |D|",
    "average_work": "with mixed replicas too: sum_i w_i / |J| (every token's work is done somewhere)",
}


def disaggregated_lower_bound(trace: pd.DataFrame, roles: list[str], batch_size, cost_model: LinearCostModel,
                              transfer_s: np.ndarray, prompt_tokens: np.ndarray | None = None) -> LowerBound:
    """A lower bound on the makespan of a fleet split into prefill and decode pools (MODEL.md section 11.11).

    ``transfer_s``: per request, the least its KV transfer can take (its link time; the latency alone
    where a prefix cache may make the copy shorter).  ``prompt_tokens``: the prompt tokens a prefill must
    compute (default ``l_i``; less with prefix caching).  Assumptions: the linear cost model (a measured one
    through its linear lower model), every replica of a pool as fast as ``cost_model``, ``B`` the largest
    batch size of the pool.  Each term holds for every schedule the engine can make:

    * ``chain``: a request's prefill, transfer and decodes happen one after another;
    * ``prefill_pool``: the prefill stages of all requests are done by the prefill pool (at most ``B``
      prompts per stage), so its busiest replica works at least the average; after the last prefill ends
      its request still needs its transfer and decodes;
    * ``decode_pool``: no decode runs before the first transfer ends, and every decode iteration of every
      request (at most ``B`` per iteration) is done by the decode pool;
    * with ``mixed`` replicas in the fleet only ``chain`` (with no transfer) and the average work over all
      replicas are claimed.
    """
    l = trace["input_tokens"].to_numpy(np.int64).astype(float)
    o = trace["output_tokens"].to_numpy(np.int64).astype(float)
    a = trace["arrival_s"].to_numpy(float) if "arrival_s" in trace.columns else np.zeros(len(l))
    computed = l if prompt_tokens is None else np.asarray(prompt_tokens, dtype=float)
    m = cost_model
    B = batch_sizes_array(batch_size, len(roles))
    d = o - 1.0
    decode_work = m.b_d * d + m.c_d * (d * l + d * (d + 1.0) / 2.0)
    prefill_alone = m.a_p + m.b_p * computed
    decode_alone = m.a_d * d + decode_work
    moved = np.where(o > 1, transfer_s, 0.0)
    terms: dict[str, float] = {}
    if "mixed" in roles:
        terms["chain"] = float(np.max(a + prefill_alone + decode_alone))
        w = m.request_weight_s(computed, o, int(B.max()))
        terms["average_work"] = float(np.sum(w) / len(roles))
    else:
        P = [j for j, r in enumerate(roles) if r == "prefill"]
        D = [j for j, r in enumerate(roles) if r == "decode"]
        n, Bp, Bd = len(l), int(B[P].max()), int(B[D].max())
        terms["chain"] = float(np.max(a + prefill_alone + moved + decode_alone))
        tail = np.where(o > 1, moved + decode_alone, 0.0)
        prefill_pool = (m.b_p * computed.sum() + m.a_p * math.ceil(n / Bp)) / len(P)
        terms["prefill_pool"] = float(max(prefill_pool, float(np.max(a + prefill_alone))) + tail.min())
        many = o > 1
        if many.any():
            first_end = float(np.min((a + prefill_alone + moved)[many]))
            D_total = float(d.sum())
            terms["decode_pool"] = first_end + float((decode_work.sum() + m.a_d * math.ceil(D_total / Bd)) / len(D))
    binding = max(terms, key=terms.get)
    value = terms[binding] * (1.0 - BOUND_REL_MARGIN)
    return LowerBound(value_s=value, terms=terms, binding=binding)
