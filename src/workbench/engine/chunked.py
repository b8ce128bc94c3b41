"""Chunked-prefill mixed batching (Sarathi-Serve, vLLM V1): a second simulator, the same schedule schema.

Every iteration of a client carries **all** its running decodes (one token
each) and fills the rest of a **token budget** ``tau`` with prefill chunks:
first the requests whose prompts are part-way through, then new requests
from the queue (admitted in queue order while a batch slot is free and, with
a KV cache, their ``l_i + o_i`` tokens fit; head-of-line).  A request's first
token comes out at the end of the iteration that processes the last chunk of
its prompt; it decodes from the next iteration on.  Decodes never wait for a
prefill ("stall-free batching"), which is the point of the method.

Cost of an iteration (the extension of MODEL.md section 2, same coefficients)::

    t_mixed = a_m + b_d n_d + c_d (C_d + Q) + b_p P,    a_m = max(a_p, a_d) if P > 0 else a_d

``n_d`` decodes reading ``C_d`` context tokens, ``P`` prefill tokens in
chunks, and ``Q`` the tokens of earlier chunks of the same prompts, which the
chunks' attention reads back from the KV cache (``c_d`` per token, as a
decode does).  With no chunk it is the decode model exactly; a chunk that is
a whole prompt (``Q = 0``) with no decodes costs ``t_prefill`` when
``a_p >= a_d`` (the shipped presets have ``a_p = a_d``).

An iteration with prefill chunks is a timeline row of kind ``mixed``:
``n_requests``, ``tokens`` and ``request_ids`` describe its decodes as for a
``decode`` row, and two optional columns, ``prefill_ids`` and
``prefill_tokens`` (space-separated, aligned), list the chunks.  Files
without these columns are read as before; the validator checks the rows
(see docs/beyond.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from heapq import heappop, heappush
from typing import Any

import numpy as np
import pandas as pd

from workbench._checks import (
    batch_size_option,
    cost_models,
    kv_capacities,
    positive_int,
)
from workbench.costmodel.linear import LinearCostModel
from workbench.errors import ConfigError
from workbench.policies.registry import DISPATCHERS, HOLD, ORDERS
from workbench.schedule.bounds import chunked_lower_bound
from workbench.schedule.metrics import batch_sizes_array
from workbench.schedule.schema import Schedule, build_metrics
from workbench.workload.trace import load_trace

DEFAULT_TOKEN_BUDGET = 512


@dataclass(frozen=True)
class ChunkedPolicy:
    """A chunked-prefill policy: dispatcher, queue order and token budget per iteration."""

    name: str
    dispatch: str
    order: str
    token_budget: int = DEFAULT_TOKEN_BUDGET
    description: str = ""

    def describe(self) -> dict[str, Any]:
        return {"policy": self.name, "dispatch": self.dispatch, "order": self.order, "rule": "chunked-prefill",
                "token_budget": self.token_budget}


CHUNKED_POLICIES: dict[str, ChunkedPolicy] = {
    "chunked-prefill": ChunkedPolicy(
        "chunked-prefill", "round-robin", "fifo",
        description="Sarathi-Serve / vLLM V1 mixed batching: every decode plus prefill chunks up to a token "
                    "budget per iteration; round-robin dispatch, FIFO queues"),
    "chunked-least-work": ChunkedPolicy(
        "chunked-least-work", "least-work", "fifo",
        description="chunked-prefill mixed batching with least-outstanding-work dispatch"),
}


def mixed_iteration_time(cost_model: LinearCostModel, n_decode, decode_context_tokens, prefill_tokens,
                         prefill_prior_tokens=0):
    """``t_mixed`` of the module docstring (vectorised)."""
    cm = cost_model
    P = np.asarray(prefill_tokens, dtype=float)
    fixed = np.where(P > 0, max(cm.a_p, cm.a_d), cm.a_d)
    out = (fixed + cm.b_d * np.asarray(n_decode, dtype=float)
           + cm.c_d * (np.asarray(decode_context_tokens, dtype=float) + np.asarray(prefill_prior_tokens, dtype=float))
           + cm.b_p * P)
    return float(out) if np.ndim(out) == 0 else out


class _Client:
    """One client of the chunked simulator; exposes what dispatchers read (as :class:`workbench.engine.core.ClientState`)."""

    __slots__ = (
        "batch_size",
        "busy",
        "clock_s",
        "ctx_sum",
        "decode_count",
        "ids_cache",
        "index",
        "kv_capacity_tokens",
        "kv_reserved_tokens",
        "outstanding_s",
        "prefilling",
        "running",
        "speed",
        "waiting",
    )

    def __init__(self, index: int, batch_size: int, kv: int | None, speed: float) -> None:
        self.index, self.batch_size, self.kv_capacity_tokens, self.speed = index, batch_size, kv, speed
        self.waiting: list[int] = []  # heap of queue ranks
        self.prefilling: list[list[int]] = []  # [request, prompt tokens done], in admission order
        self.running: list[tuple[int, int]] = []  # heap of (decode count at which it finishes, request)
        self.decode_count = 0
        self.ctx_sum = 0
        self.kv_reserved_tokens = 0
        self.outstanding_s = 0.0
        self.busy = False
        self.clock_s = 0.0
        self.ids_cache: str | None = ""

    @property
    def n_running(self) -> int:
        return len(self.running) + len(self.prefilling)

    @property
    def n_waiting(self) -> int:
        return len(self.waiting)

    @property
    def free_slots(self) -> int:
        return self.batch_size - self.n_running


def simulate_chunked(trace: pd.DataFrame | str, clients: int = 8, batch_size: int | list[int] = 16,
                     policy: str | ChunkedPolicy = "chunked-prefill", cost_model: str | LinearCostModel = "llama-65b",
                     *, token_budget: int | None = None, dispatch: str | None = None, order: str | None = None,
                     kv_capacity_tokens: int | list[int] | str | None = None, **params: Any) -> Schedule:
    """Simulate chunked-prefill mixed batching; return a :class:`Schedule` (one row per iteration).

    ``token_budget`` (tokens per iteration, decodes included) and the
    dispatcher and queue order override the policy's.  ``token_budget`` must
    exceed the batch size, so every iteration has room for a prefill token.
    Other keyword arguments go to the dispatcher (e.g. ``horizon_s`` for
    ``rolling``).
    """
    trace = load_trace(trace)
    n_clients = positive_int(clients, "clients")
    B = batch_sizes_array(batch_size_option(batch_size), n_clients)
    models = cost_models(cost_model, n_clients)
    if any(type(m) is not LinearCostModel for m in models) or any(m != models[0] for m in models):
        raise ConfigError("the chunked-prefill simulator takes one linear cost model for all clients.",
                          field="cost_model", fix="give one preset or LinearCostModel.")
    cm = models[0]
    kv = kv_capacities(kv_capacity_tokens, [cm] * n_clients, n_clients)
    if isinstance(policy, str):
        if policy not in CHUNKED_POLICIES:
            raise ConfigError(f"unknown chunked-prefill policy '{policy}'.", field="policy",
                              fix=f"use one of {', '.join(CHUNKED_POLICIES)}.")
        policy = CHUNKED_POLICIES[policy]
    tau = int(token_budget if token_budget is not None else policy.token_budget)
    if tau != (token_budget if token_budget is not None else policy.token_budget) or tau <= int(B.max()):
        raise ConfigError(f"token_budget {tau} must be a whole number above the batch size {int(B.max())}.",
                          field="token_budget", fix="give e.g. 512 tokens per iteration.")
    dispatch = dispatch or policy.dispatch
    order = order or policy.order
    if dispatch not in DISPATCHERS or dispatch == "offline":
        raise ConfigError(f"dispatch '{dispatch}' is not available to the chunked simulator.", field="dispatch",
                          fix="use round-robin, least-work or rolling.")
    if order not in ORDERS:
        raise ConfigError(f"unknown order '{order}'.", field="order", fix=f"use one of {', '.join(ORDERS)}.")

    l = trace["input_tokens"].to_numpy(np.int64)
    o = trace["output_tokens"].to_numpy(np.int64)
    arrival = trace["arrival_s"].to_numpy(float)
    n = len(trace)
    for j, cap in enumerate(kv):
        too_big = np.flatnonzero(l + o > cap) if cap is not None else []
        if len(too_big):
            raise ConfigError(f"request {trace['request_id'].iloc[too_big[0]]!r} needs {int(l[too_big[0]] + o[too_big[0]])} "
                              f"KV tokens (input + output) but client {j} holds {cap}.", field="kv_capacity_tokens",
                              row=int(too_big[0]), fix="raise kv_capacity_tokens or drop requests longer than the cache.")
    w_list = cm.request_weight_s(l, o, int(B.max())).tolist()
    dispatcher = DISPATCHERS[dispatch](trace=trace, clients=n_clients, batch_size=B, cost_model=cm, params=params)
    next_epoch = getattr(dispatcher, "next_epoch_s", None)
    by_rank = np.lexsort((np.arange(n), ORDERS[order](l.astype(float), o.astype(float), arrival)))
    rank = np.empty(n, dtype=np.int64)
    rank[by_rank] = np.arange(n)
    rank_list, by_rank_list = rank.tolist(), by_rank.tolist()
    l_list, o_list = l.tolist(), o.tolist()
    ids = trace["request_id"].astype(str).tolist()
    state = [_Client(j, int(B[j]), None if kv[j] is None else int(kv[j]), 1.0) for j in range(n_clients)]

    a_m, a_d, b_d, b_p, c_d = max(cm.a_p, cm.a_d), cm.a_d, cm.b_d, cm.b_p, cm.c_d
    nan = float("nan")
    client_of, prefill_start, first_token, finish = [-1] * n, [nan] * n, [nan] * n, [nan] * n
    rows: dict[str, list] = {k: [] for k in ("client", "iteration", "kind", "start_s", "end_s", "n_requests",
                                             "tokens", "request_ids", "prefill_ids", "prefill_tokens")}
    iteration = [0] * n_clients
    events: list[tuple[float, int, int]] = []
    seq = 0

    def enqueue(i: int, j: int, t: float) -> None:
        nonlocal seq
        if not 0 <= j < n_clients:
            raise ConfigError(f"dispatcher sent request row {i} to client {j}.", field="dispatch",
                              fix=f"a dispatcher must return 0..{n_clients - 1}.")
        c = state[j]
        client_of[i] = j
        heappush(c.waiting, rank_list[i])
        c.outstanding_s += w_list[i]
        if not c.busy:
            c.busy = True
            seq += 1
            heappush(events, (max(c.clock_s, t), seq, j))

    def run_iteration(c: _Client, now: float) -> None:
        """Form and time the next iteration of ``c`` at ``now``, finish it, and schedule the next one."""
        nonlocal seq
        c.clock_s = now
        n_d = len(c.running)
        budget = tau - n_d
        chunks: list[tuple[int, int, int]] = []  # (request, chunk tokens, prompt tokens done before)
        for entry in c.prefilling:
            if budget <= 0:
                break
            i, done = entry
            take = min(l_list[i] - done, budget)
            chunks.append((i, take, done))
            budget -= take
        while budget > 0 and c.waiting and c.n_running < c.batch_size:
            i = by_rank_list[c.waiting[0]]
            need = l_list[i] + o_list[i]
            if c.kv_capacity_tokens is not None and c.kv_reserved_tokens + need > c.kv_capacity_tokens:
                break  # head-of-line: keep the queue order
            heappop(c.waiting)
            c.kv_reserved_tokens += need
            c.prefilling.append([i, 0])
            prefill_start[i] = now
            take = min(l_list[i], budget)
            chunks.append((i, take, 0))
            budget -= take
        if n_d == 0 and not chunks:
            c.busy = False
            return
        P = sum(ch[1] for ch in chunks)
        Q = sum(ch[2] for ch in chunks)
        ctx = c.ctx_sum
        if chunks:
            end = now + (a_m + b_d * n_d + c_d * (ctx + Q) + b_p * P)
        else:
            end = now + (a_d + b_d * n_d + c_d * ctx)
        if c.ids_cache is None:
            c.ids_cache = " ".join(sorted((ids[i] for _, i in c.running), key=_id_key))
        r = rows
        r["client"].append(c.index)
        r["iteration"].append(iteration[c.index])
        iteration[c.index] += 1
        r["kind"].append("mixed" if chunks else "decode")
        r["start_s"].append(now)
        r["end_s"].append(end)
        r["n_requests"].append(n_d)
        r["tokens"].append(ctx)
        r["request_ids"].append(c.ids_cache)
        r["prefill_ids"].append(" ".join(ids[ch[0]] for ch in chunks))
        r["prefill_tokens"].append(" ".join(str(ch[1]) for ch in chunks))
        # The iteration's effects, at its end.
        if n_d:
            c.decode_count += 1
            c.ctx_sum += n_d
            d = c.decode_count
            while c.running and c.running[0][0] <= d:
                i = heappop(c.running)[1]
                finish[i] = end
                c.ctx_sum -= l_list[i] + o_list[i]
                c.kv_reserved_tokens -= l_list[i] + o_list[i]
                c.outstanding_s -= w_list[i]
                c.ids_cache = None
        if chunks:
            still = []
            for entry in c.prefilling:
                i = entry[0]
                for ch in chunks:
                    if ch[0] == i:
                        entry[1] += ch[1]
                        break
                if entry[1] < l_list[i]:
                    still.append(entry)
                    continue
                first_token[i] = end
                if o_list[i] == 1:
                    finish[i] = end
                    c.kv_reserved_tokens -= l_list[i] + o_list[i]
                    c.outstanding_s -= w_list[i]
                else:
                    heappush(c.running, (c.decode_count + o_list[i] - 1, i))
                    c.ctx_sum += l_list[i] + 1
                    c.ids_cache = None
            c.prefilling = still
        seq += 1
        heappush(events, (end, seq, c.index))

    arrival_order = np.argsort(arrival, kind="stable").tolist()
    arrival_list = arrival.tolist()
    ptr, now, inf = 0, 0.0, math.inf
    while True:
        t_arr = arrival_list[arrival_order[ptr]] if ptr < n else inf
        t_ev = events[0][0] if events else inf
        t_ep = next_epoch(now, state) if next_epoch is not None else inf
        if t_arr == inf and t_ev == inf and t_ep == inf:
            break
        now = min(t_arr, t_ev, t_ep)
        if t_arr <= t_ev and t_arr <= t_ep:  # arrivals first at equal times
            i = arrival_order[ptr]
            ptr += 1
            j = int(dispatcher.assign(i, t_arr, state))
            if j == HOLD and next_epoch is not None:
                continue
            enqueue(i, j, t_arr)
        elif t_ep <= t_ev:
            for i, j in dispatcher.release(t_ep, state):
                enqueue(i, j, t_ep)
        else:
            t, _, j = heappop(events)
            run_iteration(state[j], t)

    unserved = np.flatnonzero(np.isnan(np.array(finish)))
    if len(unserved):
        raise RuntimeError(f"request row {int(unserved[0])} was never served (a bug in the chunked simulator).")
    timeline = pd.DataFrame(rows)
    requests = pd.DataFrame({
        "request_id": trace["request_id"].to_numpy(), "client": np.array(client_of, dtype=np.int64),
        "input_tokens": l, "output_tokens": o, "arrival_s": arrival, "prefill_start_s": np.array(prefill_start),
        "first_token_s": np.array(first_token), "finish_s": np.array(finish),
    })
    bound = chunked_lower_bound(trace, n_clients, B, cm, token_budget=tau, kv_capacity_tokens=kv)
    extra: dict[str, Any] = {"token_budget": tau, "lower_bound_model": "chunked-prefill"}
    if any(v is not None for v in kv):
        extra["kv_capacity_tokens"] = [None if v is None else int(v) for v in kv]
    params_out = {**policy.describe(), "dispatch": dispatch, "order": order, "token_budget": tau, **params}
    metrics = build_metrics(timeline, clients=n_clients, batch_size=B, cost_model=cm, policy=policy.name,
                            params=params_out, lower_bound_s=bound.value_s, lower_bound_binding=bound.binding,
                            extra=extra)
    return Schedule(timeline=timeline, requests=requests, metrics=metrics)


def _id_key(text: str):
    """Ids in numeric order when they are integers (as the simulator lists them), else as text."""
    return (0, int(text), "") if text.lstrip("-").isdigit() else (1, 0, text)


def prefill_chunks(timeline: pd.DataFrame) -> pd.DataFrame:
    """The chunks of a timeline's mixed rows, one row each: client, iteration, request_id, tokens."""
    if "prefill_ids" not in timeline.columns:
        return pd.DataFrame(columns=["client", "iteration", "request_id", "tokens"])
    mixed = timeline[timeline["kind"] == "mixed"]
    ids = mixed["prefill_ids"].astype(str).str.split()
    toks = mixed["prefill_tokens"].astype(str).str.split()
    out = mixed[["client", "iteration"]].assign(request_id=ids, tokens=toks).explode(["request_id", "tokens"])
    out = out.dropna(subset=["request_id"])
    return out.assign(tokens=out["tokens"].astype(np.int64)).reset_index(drop=True)


