"""A fast, deterministic discrete-event simulator of LLM serving clients.

Architecture (after SimPy and Vidur): one loop owns the clock and a heap of
``(time, sequence, client, version)`` events; clients are entities holding
their queue and running batch; policies come from registries
(:mod:`workbench.policies`) and the cost model is injected.

Speed comes from one observation.  Between two batch changes on a client (a
prefill, a completion) its decode iterations run the same requests, and each
one reads ``n`` more context tokens than the one before, so with the linear
cost model a run of ``k`` decodes takes, in closed form,

    k (a_d + b_d n) + c_d (k S + n k (k-1) / 2)

where ``S`` is the context read by the first.  The loop advances over the run
in one step and its events are batch changes, not iterations.  The exported
timeline still has one row per iteration, rebuilt exactly from the same
formula (:func:`workbench.schedule.expand_runs`), so start and end times agree bit for bit with the
clock the simulator kept.  A run is cut short only when a request arrives at
a client with free slots, so that the iteration rule can react at the next
boundary.
"""

from __future__ import annotations

import heapq
import math
from heapq import heappop, heappush
from typing import Any

import numpy as np
import pandas as pd

from workbench.bounds import best_lower_bound
from workbench.costmodel import LinearCostModel, load_preset
from workbench.errors import ConfigError
from workbench.metrics import batch_sizes_array
from workbench.policies import DISPATCHERS, ORDERS, RULES, Policy, resolve_policy
from workbench.schedule import Schedule, build_metrics
from workbench.trace import load_trace

_PREFILL, _DECODE = 0, 1


class ClientState:
    """One client (model replica): its queue, running batch and clock.

    Iteration rules read ``batch_size``, ``n_running``, ``n_waiting``,
    ``free_slots``, ``admissible``, ``cost_model`` and
    :meth:`remaining_decodes`.
    """

    __slots__ = ("index", "batch_size", "cost_model", "kv_capacity_tokens", "speed", "waiting", "running",
                 "n_running", "ctx_sum", "decode_count", "clock_s", "outstanding_s", "kv_reserved_tokens",
                 "current", "version", "pending", "admissible", "_just_prefilled", "linear",
                 "a_p", "b_p", "a_d", "b_d", "c_d")

    def __init__(self, index: int, batch_size: int, cost_model: LinearCostModel,
                 kv_capacity_tokens: int | None, speed: float) -> None:
        self.index = index
        self.batch_size = batch_size
        self.cost_model = cost_model
        self.kv_capacity_tokens = kv_capacity_tokens
        self.speed = speed
        self.waiting: list[tuple[Any, int, int]] = []  # heap of (order key, sequence, request)
        self.running: list[tuple[int, int]] = []  # heap of (decode count at which it finishes, request)
        self.n_running = 0
        self.ctx_sum = 0  # context tokens the next decode reads
        self.decode_count = 0
        self.clock_s = 0.0
        self.outstanding_s = 0.0
        self.kv_reserved_tokens = 0
        self.current: list | None = None  # the segment in progress
        self.version = 0
        self.pending = False
        self.admissible = 0
        self._just_prefilled: list[int] = []
        # Cached coefficients: the closed-form runs need them at every batch change.
        self.linear = type(cost_model) is LinearCostModel
        self.a_p, self.b_p, self.a_d, self.b_d, self.c_d = (
            (cost_model.a_p, cost_model.b_p, cost_model.a_d, cost_model.b_d, cost_model.c_d)
            if self.linear else (0.0,) * 5)

    @property
    def n_waiting(self) -> int:
        return len(self.waiting)

    @property
    def free_slots(self) -> int:
        return self.batch_size - self.n_running

    def remaining_decodes(self) -> list[int]:
        """Decode iterations each running request still needs, smallest first."""
        d = self.decode_count
        return sorted(f - d for f, _ in self.running)

    def iterations_to_next_completion(self) -> int:
        return self.running[0][0] - self.decode_count if self.running else 0


def _cum_decode_s(r: int, base: float, c_d: float, S: int, n: int) -> float:
    """Time of the first ``r`` decodes of a run (see the module docstring)."""
    return r * base + c_d * (r * S + n * (r * (r - 1) // 2))


def simulate(trace: pd.DataFrame | str, clients: int = 8, batch_size: int | list[int] = 16,
             policy: str | Policy = "paper-baseline", cost_model: str | LinearCostModel | list = "llama-65b", *,
             dispatch: str | None = None, order: str | None = None, rule: str | None = None,
             kv_capacity_tokens: int | list[int] | None = None, lower_bound_s: float | None = None,
             assignment: np.ndarray | None = None, **params: Any) -> Schedule:
    """Simulate ``trace`` on ``clients`` clients under ``policy``; return the schedule.

    ``cost_model`` is a preset name, a :class:`LinearCostModel`, or one per
    client.  ``batch_size`` and ``kv_capacity_tokens`` may be per client.
    ``assignment`` (request row -> client) fixes the dispatch, as an offline
    stage does.  Other keyword arguments are the policy's parameters (for
    example ``mu`` for the Lagrangian rule).
    """
    trace = load_trace(trace)
    n_clients = _positive_int(clients, "clients")
    B = batch_sizes_array(_check_batch(batch_size), n_clients)
    if np.any(B < 1):
        raise ConfigError(f"batch size {int(B.min())} is below 1.", field="batch_size",
                          fix="use a batch size of at least 1.")
    models = _cost_models(cost_model, n_clients)
    kv = _kv_capacities(kv_capacity_tokens, models, n_clients)
    if assignment is not None:
        policy_obj = resolve_policy(policy, order=order, rule=rule, **params)
    else:
        policy_obj = resolve_policy(policy, dispatch=dispatch, order=order, rule=rule, **params)

    l = trace["input_tokens"].to_numpy(np.int64)
    o = trace["output_tokens"].to_numpy(np.int64)
    arrival = trace["arrival_s"].to_numpy(float)
    n = len(trace)
    _check_kv(kv, l, o, trace)

    reference = models[0]
    weights = reference.request_weight_s(l, o, int(B.max()))
    speed = np.array([reference.decode_time(1, 1) / m.decode_time(1, 1) for m in models])
    state = [ClientState(j, int(B[j]), models[j], None if kv[j] is None else int(kv[j]), float(speed[j]))
             for j in range(n_clients)]

    if assignment is not None:
        from workbench.policies import Assigned
        assignment = np.asarray(assignment)
        if assignment.shape != (n,) or assignment.min() < 0 or assignment.max() >= n_clients:
            raise ConfigError(f"assignment must give each of the {n} requests a client in 0..{n_clients - 1}.",
                              field="assignment", fix="pass one client index per trace row.")
        dispatcher = Assigned(assignment)
        policy_obj = Policy(policy_obj.name, "assigned", policy_obj.order, policy_obj.rule, policy_obj.params,
                            policy_obj.description)
    else:
        dispatcher = DISPATCHERS[policy_obj.dispatch](trace=trace, clients=n_clients, batch_size=B,
                                                     cost_model=reference, params=policy_obj.params)
    iteration_rule = RULES[policy_obj.rule](**policy_obj.params)
    keys = ORDERS[policy_obj.order](l.astype(float), o.astype(float), arrival).tolist()

    l_list, o_list, w_list = l.tolist(), o.tolist(), weights.tolist()
    client_of = np.full(n, -1, dtype=np.int64)
    nan = float("nan")
    prefill_start = [nan] * n
    first_token = [nan] * n
    finish = [nan] * n
    segments: list[list] = []  # [client, kind, start_s, end_s, k, n, tokens0, members]

    arrival_order = np.argsort(arrival, kind="stable").tolist()
    arrival_list = arrival.tolist()
    events: list[tuple[float, int, int, int]] = []
    seq = 0
    ptr = 0
    inf = math.inf

    def start_next(c: ClientState, now: float) -> None:
        nonlocal seq
        c.clock_s = now
        c.current = None
        m = 0
        if c.waiting and c.n_running < c.batch_size:
            c.admissible = admissible = _admissible(c, l_list, o_list)
            if admissible > 0:
                m = int(iteration_rule.admit(c))
                if m <= 0 and c.n_running == 0:
                    m = admissible  # an empty client always refills, or it would idle forever
                elif m > admissible:
                    m = admissible
        if m > 0:
            waiting, running = c.waiting, c.running
            members = [heappop(waiting)[2] for _ in range(m)]
            tokens = 0
            done_at_prefill = []
            count = c.decode_count - 1
            for i in members:
                li, oi = l_list[i], o_list[i]
                tokens += li
                prefill_start[i] = now
                if oi > 1:
                    heappush(running, (count + oi, i))
                    c.ctx_sum += li + 1
                else:
                    done_at_prefill.append(i)
                c.kv_reserved_tokens += li + oi
            c.n_running = len(running)
            end = now + (c.a_p + c.b_p * tokens if c.linear else float(c.cost_model.prefill_time(tokens)))
            c.current = seg = [c.index, _PREFILL, now, end, 1, m, tokens, members]
            c._just_prefilled = done_at_prefill
        elif c.n_running > 0:
            nr, S = c.n_running, c.ctx_sum
            if c.linear:
                k = c.running[0][0] - c.decode_count
                c_d = c.c_d
                end = now + (k * (c.a_d + c.b_d * nr) + c_d * (k * S + nr * (k * (k - 1) // 2)))
            else:
                k = 1
                end = now + float(c.cost_model.decode_time(nr, S))
            c.current = seg = [c.index, _DECODE, now, end, k, nr, S, [i for _, i in c.running]]
        else:
            c.pending = False
            return
        segments.append(seg)
        c.version += 1
        c.pending = True
        seq += 1
        heappush(events, (end, seq, c.index, c.version))

    def finish_current(c: ClientState) -> None:
        seg = c.current
        if seg is None:
            return
        end = seg[3]
        if seg[1] == _PREFILL:
            for i in seg[7]:
                first_token[i] = end
            for i in c._just_prefilled:
                finish[i] = end
                c.kv_reserved_tokens -= l_list[i] + o_list[i]
                c.outstanding_s -= w_list[i]
            c._just_prefilled = []
        else:
            k, nr = seg[4], seg[5]
            c.decode_count += k
            c.ctx_sum += nr * k
            d = c.decode_count
            running = c.running
            while running and running[0][0] <= d:
                i = heappop(running)[1]
                finish[i] = end
                done = l_list[i] + o_list[i]
                c.ctx_sum -= done
                c.kv_reserved_tokens -= done
                c.outstanding_s -= w_list[i]
            c.n_running = len(running)

    def cut_run_at(c: ClientState, t: float) -> None:
        """End the decode run in progress at the first iteration boundary at or after ``t``."""
        nonlocal seq
        seg = c.current
        if seg is None or seg[1] != _DECODE or seg[4] <= 1 or not c.linear:
            return
        t0, k, nr, S = seg[2], seg[4], seg[5], seg[6]
        base = c.a_d + c.b_d * nr
        # Solve cum(r) = t - t0 for r, then step to the first boundary at or after t.
        target = t - t0
        qa, qb = c.c_d * nr / 2.0, base + c.c_d * (S - nr / 2.0)
        r = target / qb if qa == 0 else (-qb + math.sqrt(qb * qb + 4 * qa * target)) / (2 * qa)
        r = max(1, min(k, int(math.ceil(r))))
        while r > 1 and t0 + _cum_decode_s(r - 1, base, c.c_d, S, nr) >= t:
            r -= 1
        while r < k and t0 + _cum_decode_s(r, base, c.c_d, S, nr) < t:
            r += 1
        if r >= k:
            return
        seg[4] = r
        seg[3] = t0 + _cum_decode_s(r, base, c.c_d, S, nr)
        c.version += 1
        seq += 1
        heapq.heappush(events, (seg[3], seq, c.index, c.version))

    while True:
        t_arr = arrival_list[arrival_order[ptr]] if ptr < n else inf
        t_ev = events[0][0] if events else inf
        if t_arr == inf and t_ev == inf:
            break
        if t_arr <= t_ev:
            # Arrivals first at equal times, so a boundary sees every request that has arrived.
            i = arrival_order[ptr]
            ptr += 1
            j = int(dispatcher.assign(i, t_arr, state))
            if not 0 <= j < n_clients:
                raise ConfigError(f"dispatcher sent request row {i} to client {j}.", field="dispatch",
                                  fix=f"a dispatcher must return 0..{n_clients - 1}.")
            c = state[j]
            client_of[i] = j
            heapq.heappush(c.waiting, (keys[i], i, i))
            c.outstanding_s += w_list[i]
            if not c.pending:
                c.pending = True
                c.version += 1
                seq += 1
                heapq.heappush(events, (max(c.clock_s, t_arr), seq, j, c.version))
            elif c.n_running < c.batch_size:
                cut_run_at(c, t_arr)
        else:
            t, _, j, version = heapq.heappop(events)
            c = state[j]
            if version != c.version:
                continue
            finish_current(c)
            start_next(c, t)

    schedule_params = policy_obj.describe()
    return _assemble(trace, segments, models, B, n_clients, policy_obj.name, schedule_params, client_of,
                     prefill_start, first_token, finish, lower_bound_s, kv)


def _admissible(c: ClientState, l_list: list[int], o_list: list[int]) -> int:
    """How many waiting requests, in queue order, fit the free slots and the KV cache."""
    free = c.batch_size - c.n_running
    if c.kv_capacity_tokens is None:
        return min(free, len(c.waiting))
    room = c.kv_capacity_tokens - c.kv_reserved_tokens
    count = 0
    for _, _, i in heapq.nsmallest(min(free, len(c.waiting)), c.waiting):
        need = l_list[i] + o_list[i]
        if need > room:
            break  # head-of-line: keep the queue order
        room -= need
        count += 1
    return count


def _assemble(trace, segments, models, B, n_clients, policy_name, params, client_of, prefill_start,
              first_token, finish, lower_bound_s, kv) -> Schedule:
    seg_client = np.fromiter((s[0] for s in segments), dtype=np.int64, count=len(segments))
    seg_kind = np.fromiter((s[1] for s in segments), dtype=np.int8, count=len(segments))
    seg_start = np.fromiter((s[2] for s in segments), dtype=float, count=len(segments))
    seg_end = np.fromiter((s[3] for s in segments), dtype=float, count=len(segments))
    seg_k = np.fromiter((s[4] for s in segments), dtype=np.int64, count=len(segments))
    seg_n = np.fromiter((s[5] for s in segments), dtype=np.int64, count=len(segments))
    seg_tok = np.fromiter((s[6] for s in segments), dtype=np.int64, count=len(segments))
    ids = trace["request_id"].astype(str).tolist()
    pick = ids.__getitem__
    # Decode members are listed in trace order, so equal request sets give equal strings.
    seg_ids = np.array([" ".join(map(pick, sorted(s[7]) if s[1] == _DECODE else s[7])) for s in segments],
                       dtype=object)
    # Segments were appended in event order, which is time order on each client.
    order = np.argsort(seg_client, kind="stable")
    k_sorted = seg_k[order]
    client_sorted = seg_client[order]
    ends = np.cumsum(k_sorted)
    client_first = np.searchsorted(client_sorted, client_sorted, side="left")
    first_iter = np.empty(len(segments), dtype=np.int64)
    first_iter[order] = ends - k_sorted - np.where(client_first > 0, ends[client_first - 1], 0)
    decode = seg_kind == _DECODE
    runs = pd.DataFrame({
        "client": seg_client, "kind": np.where(decode, "decode", "prefill"),
        "start_s": seg_start, "end_s": seg_end, "n_requests": seg_n,
        "tokens": seg_tok * seg_k + seg_n * (seg_k * (seg_k - 1) // 2) * decode,
        "first_tokens": seg_tok, "iterations": seg_k, "first_iteration": first_iter,
        "last_iteration": first_iter + seg_k - 1, "request_ids": seg_ids,
    }).iloc[order].reset_index(drop=True)

    requests = pd.DataFrame({
        "request_id": trace["request_id"].to_numpy(), "client": client_of,
        "input_tokens": trace["input_tokens"].to_numpy(), "output_tokens": trace["output_tokens"].to_numpy(),
        "arrival_s": trace["arrival_s"].to_numpy(float), "prefill_start_s": np.array(prefill_start, dtype=float),
        "first_token_s": np.array(first_token, dtype=float), "finish_s": np.array(finish, dtype=float),
    })
    bound_model = models[0]
    same = _same_models(models)
    if lower_bound_s is None:
        bound = best_lower_bound(trace, n_clients, B, bound_model) if same else None
        lower_bound_s = bound.value_s if bound is not None else float("nan")
        binding = bound.binding if bound is not None else None
    else:
        binding = "given"
    extra = {}
    if any(v is not None for v in kv):
        extra["kv_capacity_tokens"] = [None if v is None else int(v) for v in kv]
    # The metrics of the runs equal those of the per-iteration timeline (same durations, summed
    # per run), so the timeline need not be expanded to report them.
    metrics = build_metrics(runs, clients=n_clients, batch_size=B, cost_model=bound_model, policy=policy_name,
                            params=params, lower_bound_s=lower_bound_s, lower_bound_binding=binding, extra=extra)
    if not same:
        metrics["cost_model"] = [m.coefficients() | {"name": m.name} for m in models]
    return Schedule(requests=requests, metrics=metrics, runs=runs)


def _same_models(models) -> bool:
    return all(m == models[0] for m in models)


def _positive_int(value: Any, field: str) -> int:
    try:
        as_int = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{value!r} is not a whole number.", field=field, fix=f"give {field} as an integer >= 1.") from None
    if as_int != value or as_int < 1:
        raise ConfigError(f"{value!r} is not a whole number >= 1.", field=field, fix=f"give {field} as an integer >= 1.")
    return as_int


def _check_batch(batch_size):
    if np.ndim(batch_size) == 0:
        return _positive_int(batch_size, "batch_size")
    return [_positive_int(b, "batch_size") for b in batch_size]


def _cost_models(cost_model, n_clients: int) -> list:
    if isinstance(cost_model, (list, tuple)):
        if len(cost_model) != n_clients:
            raise ConfigError(f"{len(cost_model)} cost models for {n_clients} clients.", field="cost_model",
                              fix="give one cost model, or one per client.")
        return [load_preset(m) if isinstance(m, str) else m for m in cost_model]
    model = load_preset(cost_model) if not hasattr(cost_model, "decode_time") else cost_model
    return [model] * n_clients


def _kv_capacities(kv, models, n_clients: int) -> list:
    if kv is None:
        return [None] * n_clients
    if np.ndim(kv) == 0:
        if kv == "preset":
            return [getattr(m, "kv_capacity_tokens", None) for m in models]
        return [_positive_int(kv, "kv_capacity_tokens")] * n_clients
    if len(kv) != n_clients:
        raise ConfigError(f"{len(kv)} KV capacities for {n_clients} clients.", field="kv_capacity_tokens",
                          fix="give one capacity, or one per client.")
    return [None if v is None else _positive_int(v, "kv_capacity_tokens") for v in kv]


def _check_kv(kv, l, o, trace) -> None:
    caps = [v for v in kv if v is not None]
    if len(caps) < len(kv) or not caps:
        return
    need = l + o
    largest = max(caps)
    too_big = need > largest
    if too_big.any():
        row = int(np.flatnonzero(too_big)[0])
        raise ConfigError(f"request {trace['request_id'].iloc[row]!r} needs {int(need[row])} KV tokens "
                          f"(input + output) but the largest client holds {largest}.",
                          field="kv_capacity_tokens", row=row,
                          fix="raise kv_capacity_tokens or drop requests longer than the cache.")
