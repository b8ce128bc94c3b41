"""A fast, deterministic discrete-event simulator of LLM serving clients.

Architecture (after SimPy and Vidur): one loop owns the clock and a heap of
``(time, sequence, client, version)`` events; clients are entities holding
their queue and running batch; policies come from registries
(:mod:`workbench.policies.registry`) and the cost model is injected.

Speed comes from one observation.  Between two batch changes on a client (a
prefill, a completion) its decode iterations run the same requests, and each
one reads ``n`` more context tokens than the one before, so with the linear
cost model a run of ``k`` decodes takes, in closed form,

    k (a_d + b_d n) + c_d (k S + n k (k-1) / 2)

where ``S`` is the context read by the first.  The loop advances over the run
in one step and its events are batch changes, not iterations.  The exported
timeline still has one row per iteration, rebuilt exactly from the same
formula (:func:`workbench.schedule.schema.expand_runs`), so start and end times agree bit for bit with the
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

from workbench._checks import (
    batch_size_option,
    cost_models,
    kv_capacities,
    positive_int,
)
from workbench.costmodel.linear import LinearCostModel
from workbench.engine.client import ClientState
from workbench.errors import ConfigError
from workbench.policies.registry import (
    DISPATCHERS,
    HOLD,
    ORDERS,
    RULES,
    Policy,
    resolve_policy,
)
from workbench.schedule.bounds import best_lower_bound
from workbench.schedule.metrics import batch_sizes_array
from workbench.schedule.schema import Schedule, build_metrics
from workbench.workload.trace import load_trace

_PREFILL, _DECODE = 0, 1
#: From this many requests (about 2 s of simulation) a progress bar is shown unless progress=False.
PROGRESS_MIN_REQUESTS = 200_000


def _cum_decode_s(r: int, base: float, c_d: float, S: int, n: int) -> float:
    """Time of the first ``r`` decodes of a run (see the module docstring)."""
    return r * base + c_d * (r * S + n * (r * (r - 1) // 2))


def simulate(trace: pd.DataFrame | str, clients: int = 8, batch_size: int | list[int] = 16,
             policy: str | Policy = "paper-baseline", cost_model: str | LinearCostModel | list = "llama-65b", *,
             dispatch: str | None = None, order: str | None = None, rule: str | None = None,
             kv_capacity_tokens: int | list[int] | None = None, lower_bound_s: float | None = None,
             assignment: np.ndarray | None = None, predictor=None, progress: bool | None = None,
             **params: Any) -> Schedule:
    """Simulate ``trace`` on ``clients`` clients under ``policy``; return the schedule.

    ``cost_model`` is a preset name, a :class:`LinearCostModel`, or one per
    client.  ``batch_size`` and ``kv_capacity_tokens`` may be per client.
    ``assignment`` (request row -> client) fixes the dispatch, as an offline
    stage does.  ``predictor`` (a :mod:`workbench.workload.predict` object or name such
    as ``"noisy:0.2"``; default: exact) gives the output lengths every
    scheduling decision sees: dispatch weights, the offline assignment, queue
    order and the iteration rule's look-ahead; the simulator runs the true
    ones.  Other keyword arguments are the policy's parameters (for example
    ``mu`` for the Lagrangian rule, ``steal=True`` for work stealing: a client
    with free slots and an empty queue takes waiting requests from the most
    loaded client).  ``progress`` shows a tqdm bar (default: from
    :data:`PROGRESS_MIN_REQUESTS` requests on).
    """
    raw_trace = trace
    trace = load_trace(trace)
    n_clients = positive_int(clients, "clients")
    B = batch_sizes_array(batch_size_option(batch_size), n_clients)
    if np.any(B < 1):
        raise ConfigError(f"batch size {int(B.min())} is below 1.", field="batch_size",
                          fix="use a batch size of at least 1.")
    models = cost_models(cost_model, n_clients)
    kv = kv_capacities(kv_capacity_tokens, models, n_clients)
    if assignment is not None:
        policy_obj = resolve_policy(policy, order=order, rule=rule, **params)
    else:
        policy_obj = resolve_policy(policy, dispatch=dispatch, order=order, rule=rule, **params)

    l = trace["input_tokens"].to_numpy(np.int64)
    o = trace["output_tokens"].to_numpy(np.int64)
    arrival = trace["arrival_s"].to_numpy(float)
    n = len(trace)
    _check_kv(kv, l, o, trace)
    # What the schedulers see: predicted output lengths (the true ones unless a predictor is given).
    predictor = _predictor(predictor)
    seen_trace, o_seen = trace, o
    if predictor is not None:
        o_seen = predictor.predict(raw_trace if isinstance(raw_trace, pd.DataFrame) else trace)
        seen_trace = trace.assign(output_tokens=o_seen)
    steal = bool(policy_obj.params.get("steal", False))

    reference = models[0]
    weights = reference.request_weight_s(l, o_seen, int(B.max()))
    speed = np.array([reference.decode_time(1, 1) / m.decode_time(1, 1) for m in models])
    state = [ClientState(j, int(B[j]), models[j], None if kv[j] is None else int(kv[j]), float(speed[j]))
             for j in range(n_clients)]

    if assignment is not None:
        from workbench.policies.builtin import Assigned
        assignment = np.asarray(assignment)
        if (assignment.shape != (n,) or not np.issubdtype(assignment.dtype, np.integer)
                or assignment.min() < 0 or assignment.max() >= n_clients):
            raise ConfigError(f"assignment must give each of the {n} requests a client in 0..{n_clients - 1}.",
                              field="assignment", fix="pass one client index per trace row.")
        dispatcher = Assigned(assignment)
        policy_obj = Policy(policy_obj.name, "assigned", policy_obj.order, policy_obj.rule, policy_obj.params,
                            policy_obj.description)
    else:
        dispatcher = DISPATCHERS[policy_obj.dispatch](trace=seen_trace, clients=n_clients, batch_size=B,
                                                     cost_model=reference if _same_models(models) else models,
                                                     params=policy_obj.params)
    iteration_rule = RULES[policy_obj.rule](**policy_obj.params)
    # Queue order as one integer rank per request (ties broken by trace row), so the waiting
    # heaps compare plain ints: several times faster than tuples whose keys often tie.
    by_rank = np.lexsort((np.arange(n), ORDERS[policy_obj.order](l.astype(float), o_seen.astype(float), arrival)))
    rank = np.empty(n, dtype=np.int64)
    rank[by_rank] = np.arange(n)
    rank_list, by_rank_list = rank.tolist(), by_rank.tolist()

    l_list, o_list, w_list = l.tolist(), o.tolist(), weights.tolist()
    seen_list = o_seen.tolist()
    predicted_finish = [0] * n
    for c in state:
        c.predicted_finish = predicted_finish
    client_of = [-1] * n
    nan = float("nan")
    prefill_start = [nan] * n
    first_token = [nan] * n
    finish = [nan] * n
    # Each request's prefill segment and the segment at whose end it finished: enough to list the
    # members of any segment later (see _segment_ids), so none are stored per segment.
    pre_seg = [-1] * n
    last_seg = [-1] * n
    # Segments (a prefill, or a run of decodes between two batch changes), one flat list per field.
    seg_client: list[int] = []
    seg_kind: list[int] = []
    seg_start: list[float] = []
    seg_end: list[float] = []
    seg_k: list[int] = []
    seg_n: list[int] = []
    seg_tok: list[int] = []

    stolen = [0]
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
        if steal and not c.waiting and c.n_running < c.batch_size:
            steal_for(c)
        if c.waiting and c.n_running < c.batch_size:
            c.admissible = admissible = _admissible(c, l_list, o_list, by_rank_list)
            if admissible > 0:
                m = int(iteration_rule.admit(c))
                if m <= 0 and c.n_running == 0:
                    m = admissible  # an empty client always refills, or it would idle forever
                elif m > admissible:
                    m = admissible
        index = len(seg_start)
        if m > 0:
            waiting, running = c.waiting, c.running
            members = [by_rank_list[heappop(waiting)] for _ in range(m)]
            tokens = 0
            done_at_prefill = []
            count = c.decode_count - 1
            for i in members:
                li, oi = l_list[i], o_list[i]
                tokens += li
                prefill_start[i] = now
                pre_seg[i] = index
                if oi > 1:
                    heappush(running, (count + oi, i))
                    predicted_finish[i] = count + seen_list[i]
                    c.ctx_sum += li + 1
                else:
                    done_at_prefill.append(i)
                c.kv_reserved_tokens += li + oi
            c.n_running = len(running)
            end = now + (c.a_p + c.b_p * tokens if c.linear else float(c.cost_model.prefill_time(tokens)))
            kind, k, nr = _PREFILL, 1, m
            c._just_prefilled = (members, done_at_prefill)
        elif c.n_running > 0:
            nr, tokens = c.n_running, c.ctx_sum
            if c.linear:
                k = c.running[0][0] - c.decode_count
                end = now + (k * (c.a_d + c.b_d * nr) + c.c_d * (k * tokens + nr * (k * (k - 1) // 2)))
            else:
                k = 1
                end = now + float(c.cost_model.decode_time(nr, tokens))
            kind = _DECODE
        else:
            c.pending = False
            return
        seg_client.append(c.index)
        seg_kind.append(kind)
        seg_start.append(now)
        seg_end.append(end)
        seg_k.append(k)
        seg_n.append(nr)
        seg_tok.append(tokens)
        c.current = index
        c.version += 1
        c.pending = True
        seq += 1
        heappush(events, (end, seq, c.index, c.version))

    def steal_for(c: ClientState) -> None:
        """Work stealing: ``c`` has free slots and an empty queue; take waiting requests from the busiest client.

        The victim is the client with waiting requests and the most predicted
        outstanding work per unit speed (ties: lowest index).  ``c`` takes the
        requests the victim would start next (its queue head), one at a time,
        up to its free slots and only while the victim stays at least as loaded
        as ``c`` after the move, so work never moves from a lighter client to
        a heavier one and no request bounces back.  A request is only taken if
        it fits ``c``'s KV cache.
        """
        victim, load_v = None, -1.0
        for v in state:
            if v.waiting and v is not c:
                load = v.outstanding_s / v.speed
                if load > load_v:
                    victim, load_v = v, load
        if victim is None:
            return
        load_c = c.outstanding_s / c.speed
        cap = c.kv_capacity_tokens
        vw = victim.waiting
        for _ in range(c.batch_size - c.n_running):
            if not vw:
                break
            i = by_rank_list[vw[0]]
            w = w_list[i]
            if load_v - w / victim.speed < load_c + w / c.speed:
                break
            if cap is not None and l_list[i] + o_list[i] > cap:
                break
            heappush(c.waiting, heappop(vw))
            client_of[i] = c.index
            victim.outstanding_s -= w
            c.outstanding_s += w
            load_v -= w / victim.speed
            load_c += w / c.speed
            stolen[0] += 1

    def wake_idle(now: float) -> None:
        """Give the first idle client (no iteration pending) a boundary at ``now``, where it may steal."""
        nonlocal seq
        for v in state:
            if not v.pending:
                v.pending = True
                v.version += 1
                seq += 1
                heappush(events, (max(v.clock_s, now), seq, v.index, v.version))
                return

    def finish_current(c: ClientState) -> None:
        index = c.current
        if index is None:
            return
        end = seg_end[index]
        if seg_kind[index] == _PREFILL:
            members, done = c._just_prefilled
            for i in members:
                first_token[i] = end
            for i in done:
                finish[i] = end
                finished[0] += 1
                last_seg[i] = index
                c.kv_reserved_tokens -= l_list[i] + o_list[i]
                c.outstanding_s -= w_list[i]
            c._just_prefilled = ((), ())
        else:
            k, nr = seg_k[index], seg_n[index]
            c.decode_count += k
            c.ctx_sum += nr * k
            d = c.decode_count
            running = c.running
            while running and running[0][0] <= d:
                i = heappop(running)[1]
                finish[i] = end
                finished[0] += 1
                last_seg[i] = index
                done = l_list[i] + o_list[i]
                c.ctx_sum -= done
                c.kv_reserved_tokens -= done
                c.outstanding_s -= w_list[i]
            c.n_running = len(running)

    def cut_run_at(c: ClientState, t: float) -> None:
        """End the decode run in progress at the first iteration boundary at or after ``t``."""
        nonlocal seq
        index = c.current
        if index is None or seg_kind[index] != _DECODE or seg_k[index] <= 1 or not c.linear:
            return
        t0, k, nr, S = seg_start[index], seg_k[index], seg_n[index], seg_tok[index]
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
        seg_k[index] = r
        seg_end[index] = t0 + _cum_decode_s(r, base, c.c_d, S, nr)
        c.version += 1
        seq += 1
        heappush(events, (seg_end[index], seq, c.index, c.version))

    # Deferred dispatch: a dispatcher with ``next_epoch_s(now, clients)`` and ``release(now, clients)`` may
    # answer HOLD and send held requests at decision epochs.  At equal times: arrivals, epochs, boundaries.
    next_epoch = getattr(dispatcher, "next_epoch_s", None)
    now = 0.0

    def enqueue(i: int, j: int, t: float) -> None:
        """Queue request ``i`` at client ``j`` at time ``t`` (an arrival, or a release of a held request)."""
        nonlocal seq
        if not 0 <= j < n_clients:
            raise ConfigError(f"dispatcher sent request row {i} to client {j}.", field="dispatch",
                              fix=f"a dispatcher must return 0..{n_clients - 1}.")
        c = state[j]
        client_of[i] = j
        heappush(c.waiting, rank_list[i])
        c.outstanding_s += w_list[i]
        if not c.pending:
            c.pending = True
            c.version += 1
            seq += 1
            heappush(events, (max(c.clock_s, t), seq, j, c.version))
        else:
            if c.n_running < c.batch_size:
                cut_run_at(c, t)
            if steal:
                wake_idle(t)  # the request queues at a busy client: an idle client may steal it

    def release_held(t: float) -> None:
        for i, j in dispatcher.release(t, state):
            enqueue(i, j, t)

    finished = [0]
    bar = None
    if progress or (progress is None and n >= PROGRESS_MIN_REQUESTS):
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="simulating", unit="request", leave=False, mininterval=0.5)
    loops = 0
    while True:
        loops += 1
        if bar is not None and not loops & 16383:
            bar.n = finished[0]
            bar.refresh()
        t_arr = arrival_list[arrival_order[ptr]] if ptr < n else inf
        t_ev = events[0][0] if events else inf
        t_ep = next_epoch(now, state) if next_epoch is not None else inf
        if t_arr == inf and t_ev == inf and t_ep == inf:
            break
        now = min(t_arr, t_ev, t_ep)
        if t_ep < t_arr and t_ep <= t_ev:
            release_held(t_ep)
            continue
        if t_arr <= t_ev:
            # Arrivals first at equal times, so a boundary sees every request that has arrived.
            i = arrival_order[ptr]
            ptr += 1
            j = int(dispatcher.assign(i, t_arr, state))
            if j == HOLD and next_epoch is not None:
                continue
            enqueue(i, j, t_arr)
        else:
            t, _, j, version = heappop(events)
            c = state[j]
            if version != c.version:
                continue
            finish_current(c)
            start_next(c, t)

    if bar is not None:
        bar.n = finished[0]
        bar.close()
    segments = {
        "client": np.array(seg_client, dtype=np.int64), "kind": np.array(seg_kind, dtype=np.int8),
        "start_s": np.array(seg_start, dtype=float), "end_s": np.array(seg_end, dtype=float),
        "k": np.array(seg_k, dtype=np.int64), "n": np.array(seg_n, dtype=np.int64),
        "tokens": np.array(seg_tok, dtype=np.int64),
    }
    members = {"pre_seg": np.array(pre_seg, dtype=np.int64), "last_seg": np.array(last_seg, dtype=np.int64)}
    per_request = {"client": np.array(client_of, dtype=np.int64), "prefill_start_s": np.array(prefill_start),
                   "first_token_s": np.array(first_token), "finish_s": np.array(finish)}
    unserved = np.flatnonzero(np.isnan(per_request["finish_s"]))
    if len(unserved):
        raise _unserved_error(unserved, per_request["client"], kv, l, o, trace)
    described = policy_obj.describe()
    if predictor is not None:
        described["predictor"] = predictor.name
    schedule = _assemble(trace, segments, members, per_request, models, B, n_clients, policy_obj.name,
                         described, lower_bound_s, kv)
    if steal:
        schedule.metrics["stolen_requests"] = stolen[0]
    if predictor is not None:
        schedule.requests["predicted_output_tokens"] = o_seen
    return schedule


def _admissible(c: ClientState, l_list: list[int], o_list: list[int], by_rank: list[int]) -> int:
    """How many waiting requests, in queue order, fit the free slots and the KV cache."""
    free = c.batch_size - c.n_running
    if c.kv_capacity_tokens is None:
        return min(free, len(c.waiting))
    room = c.kv_capacity_tokens - c.kv_reserved_tokens
    count = 0
    for r in heapq.nsmallest(min(free, len(c.waiting)), c.waiting):
        i = by_rank[r]
        need = l_list[i] + o_list[i]
        if need > room:
            break  # head-of-line: keep the queue order
        room -= need
        count += 1
    return count


def _segment_ids(ids: list[str], seg_client: np.ndarray, seg_kind: np.ndarray, pre_seg: np.ndarray,
                 last_seg: np.ndarray) -> np.ndarray:
    """The space-separated request ids of every segment, in trace order.

    A prefill segment serves the requests prefilled in it; a decode segment
    serves every request of its client prefilled in an earlier segment and
    finished in this one or a later one (a running request decodes in every
    decode iteration).  Built only when someone asks for the ids.
    """
    n_seg = len(seg_client)
    out = np.empty(n_seg, dtype=object)
    by_pre = np.argsort(pre_seg, kind="stable")
    pre_sorted = pre_seg[by_pre]
    bounds = np.searchsorted(pre_sorted, np.arange(n_seg + 1))
    by_last = np.argsort(last_seg, kind="stable")
    last_sorted = last_seg[by_last]
    last_bounds = np.searchsorted(last_sorted, np.arange(n_seg + 1))
    active: list[set[int]] = [set() for _ in range(int(seg_client.max()) + 1 if n_seg else 0)]
    pick = ids.__getitem__
    by_pre_list, by_last_list = by_pre.tolist(), by_last.tolist()
    for s in range(n_seg):
        new = by_pre_list[bounds[s]:bounds[s + 1]]
        if seg_kind[s] == _PREFILL:
            out[s] = " ".join(map(pick, new))
        else:
            out[s] = " ".join(map(pick, sorted(active[seg_client[s]])))
        done = set(by_last_list[last_bounds[s]:last_bounds[s + 1]])
        running = active[seg_client[s]]
        running.update(i for i in new if i not in done)
        running.difference_update(done)
    return out


def _assemble(trace, segments, members, per_request, models, B, n_clients, policy_name, params, lower_bound_s,
              kv) -> Schedule:
    seg_client, seg_kind, seg_k = segments["client"], segments["kind"], segments["k"]
    seg_n, seg_tok = segments["n"], segments["tokens"]
    # Segments were appended in event order, which is time order on each client.
    order = np.argsort(seg_client, kind="stable")
    k_sorted = seg_k[order]
    client_sorted = seg_client[order]
    ends = np.cumsum(k_sorted)
    client_first = np.searchsorted(client_sorted, client_sorted, side="left")
    first_iter = np.empty(len(seg_k), dtype=np.int64)
    first_iter[order] = ends - k_sorted - np.where(client_first > 0, ends[client_first - 1], 0)
    decode = seg_kind == _DECODE
    runs = pd.DataFrame({
        "client": seg_client, "kind": np.where(decode, "decode", "prefill"),
        "start_s": segments["start_s"], "end_s": segments["end_s"], "n_requests": seg_n,
        "tokens": seg_tok * seg_k + seg_n * (seg_k * (seg_k - 1) // 2) * decode,
        "first_tokens": seg_tok, "iterations": seg_k, "first_iteration": first_iter,
        "last_iteration": first_iter + seg_k - 1,
    })
    ids = trace["request_id"].astype(str).tolist()
    pre_seg, last_seg = members["pre_seg"], members["last_seg"]

    def request_ids() -> np.ndarray:
        return _segment_ids(ids, seg_client, seg_kind, pre_seg, last_seg)[order]

    runs = runs.iloc[order].reset_index(drop=True)
    requests = pd.DataFrame({
        "request_id": trace["request_id"].to_numpy(), "client": per_request["client"],
        "input_tokens": trace["input_tokens"].to_numpy(), "output_tokens": trace["output_tokens"].to_numpy(),
        "arrival_s": trace["arrival_s"].to_numpy(float), "prefill_start_s": per_request["prefill_start_s"],
        "first_token_s": per_request["first_token_s"], "finish_s": per_request["finish_s"],
    })
    bound_model = models[0]
    same = _same_models(models)
    if lower_bound_s is None:
        bound = (best_lower_bound(trace, n_clients, B, bound_model, kv_capacity_tokens=kv) if same
                 else _fleet_bound(trace, n_clients, B, models))
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
    return Schedule(requests=requests, metrics=metrics, runs=runs, run_ids=request_ids)


def _predictor(spec):
    """A predictor object from ``simulate``'s ``predictor`` argument (imported when used)."""
    if spec is None:
        return None
    from workbench.workload.predict import make_predictor

    return make_predictor(spec)


def _fleet_bound(trace, n_clients, B, models):
    """Per-client cost models: the mixed-fleet bound of :mod:`workbench.schedule.fleet` (linear models only)."""
    if not all(isinstance(m, LinearCostModel) for m in models):
        return None
    from workbench.schedule.fleet import fleet_lower_bound

    return fleet_lower_bound(trace, n_clients, B, models)


def _same_models(models) -> bool:
    return all(m == models[0] for m in models)


def _unserved_error(unserved, client_of, kv, l, o, trace) -> Exception:
    """Why requests were never served: a KV cache too small on the client they were dispatched to."""
    for i in unserved.tolist():
        j = int(client_of[i])
        cap = kv[j] if j >= 0 else None
        if cap is not None and l[i] + o[i] > cap:
            return ConfigError(f"request {trace['request_id'].iloc[i]!r} needs {int(l[i] + o[i])} KV tokens "
                               f"(input + output) but client {j}, where it was dispatched, holds {cap}.",
                               field="kv_capacity_tokens", row=i,
                               fix="give every client a KV capacity that holds the longest request, "
                                   "or dispatch such requests to a larger client.")
    return RuntimeError(f"request row {int(unserved[0])} was never served (a bug in the policy or the simulator).")


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
