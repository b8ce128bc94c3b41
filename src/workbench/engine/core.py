"""The simulation engine: one event loop that serves a trace on a cluster of clients under a policy.

Its parts, after SimPy and Vidur: an **event clock** (a heap of ``(time,
sequence, client, version)``; the sequence makes ties deterministic, the
version cancels an event a client has superseded), the **clients**
(:class:`~workbench.engine.client.ClientState`: queue, running batch, KV use,
clock), the **dispatcher**, queue order and iteration rule of the policy
(:mod:`workbench.policies`), the **iteration former** and the **KV manager**
(:mod:`workbench.engine.kv`), with the cost model injected.  How an
iteration is formed and how KV memory is held are choices of one loop
(:class:`EngineConfig`), never a second simulator:

* ``iteration="exclusive"`` (the paper's setting, MODEL.md section 1): an
  iteration is a prefill stage or a decode stage; the iteration rule chooses.
* ``iteration="mixed"`` (vLLM V1, Sarathi-Serve): every iteration carries all
  running decodes plus prompt chunks up to ``token_budget`` tokens, with at
  most ``max_partial_prefills`` prompts part-way through.
* ``kv="reserve"``: ``l_i + o_i`` tokens held from admission to the last token.
* ``kv="paged"``: blocks of ``block_size`` tokens allocated as contexts grow;
  when a running request needs a block and none is free, the most recently
  admitted running request is preempted and later recomputed (its prompt plus
  the tokens it had generated are prefilled again).  ``prefix_caching`` skips
  the prefill of cached prompt blocks.

Speed comes from one observation.  Between two batch changes on a client (a
prefill, a completion) its decode iterations run the same requests, and each
one reads ``n`` more context tokens than the one before, so with the linear
cost model a run of ``k`` decodes takes, in closed form,

    k (a_d + b_d n) + c_d (k S + n k (k-1) / 2)

where ``S`` is the context read by the first.  The loop advances over the run
in one step and its events are batch changes, not iterations.  The exported
timeline still has one row per iteration, rebuilt exactly from the same
formula (:func:`workbench.schedule.schema.expand_runs`), so start and end times agree bit for
bit with the clock the engine kept.  A run is cut short when a request arrives at
a client with free slots (so that the iteration rule can react at the next
boundary) and, with paged KV, where the running requests' next block would not fit.
Mixed iterations are stepped one at a time.
"""

from __future__ import annotations

import heapq
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
from workbench.engine.client import ClientState
from workbench.engine.kv import PagedKV
from workbench.errors import ConfigError
from workbench.policies.registry import (
    DISPATCHERS,
    HOLD,
    ORDERS,
    RULES,
    Policy,
    resolve_policy,
)
from workbench.schedule.bounds import best_lower_bound, chunked_lower_bound
from workbench.schedule.members import RunMembers
from workbench.schedule.metrics import batch_sizes_array
from workbench.schedule.schema import Schedule, build_metrics, cost_model_record
from workbench.workload.trace import load_trace

_PREFILL, _DECODE, _MIXED, _PREEMPT = 0, 1, 2, 3
_KIND_NAMES = np.array(["prefill", "decode", "mixed", "preempt"], dtype=object)
#: From this many requests (about 2 s of simulation) a progress bar is shown unless progress=False.
PROGRESS_MIN_REQUESTS = 200_000
ITERATION_MODES = ("exclusive", "mixed")
KV_MODES = ("reserve", "paged")
DEFAULT_TOKEN_BUDGET = 512
DEFAULT_BLOCK_SIZE = 16
#: The engine options a policy or a caller may set (MODEL.md section 11).
ENGINE_OPTIONS = ("iteration", "token_budget", "max_partial_prefills", "kv", "block_size", "prefix_caching")


@dataclass(frozen=True)
class EngineConfig:
    """How the engine forms iterations and holds KV memory (see the module docstring)."""

    iteration: str = "exclusive"
    token_budget: int | None = None
    max_partial_prefills: int | None = None
    kv: str = "reserve"
    block_size: int = DEFAULT_BLOCK_SIZE
    prefix_caching: bool = False

    @classmethod
    def from_options(cls, options: dict[str, Any], batch_size_max: int) -> EngineConfig:
        unknown = set(options) - set(ENGINE_OPTIONS)
        if unknown:
            raise ConfigError(f"unknown engine option {sorted(unknown)[0]!r}.", field=sorted(unknown)[0],
                              fix=f"use {', '.join(ENGINE_OPTIONS)}.")
        iteration = options.get("iteration") or "exclusive"
        if iteration not in ITERATION_MODES:
            raise ConfigError(f"iteration mode {iteration!r} is not known.", field="iteration",
                              fix=f"use {' or '.join(ITERATION_MODES)}.")
        kv = options.get("kv") or "reserve"
        if kv not in KV_MODES:
            raise ConfigError(f"KV mode {kv!r} is not known.", field="kv", fix=f"use {' or '.join(KV_MODES)}.")
        budget = options.get("token_budget")
        partial = options.get("max_partial_prefills")
        if iteration == "exclusive":
            for name, value in (("token_budget", budget), ("max_partial_prefills", partial)):
                if value is not None:
                    raise ConfigError(f"{name} is set but iterations are exclusive (a prefill or a decode stage), "
                                      "which have no token budget.", field=name,
                                      fix="drop it, or use iteration='mixed' (a chunked-prefill policy).")
        else:
            budget = DEFAULT_TOKEN_BUDGET if budget is None else budget
            if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget <= batch_size_max:
                raise ConfigError(f"token_budget {budget!r} must be a whole number above the batch size "
                                  f"{batch_size_max}, so every iteration has room for a prompt token.",
                                  field="token_budget", fix="give e.g. 512 tokens per iteration (vLLM: 2048).")
            if partial is not None and (isinstance(partial, bool) or not isinstance(partial, (int, np.integer))
                                        or partial < 1):
                raise ConfigError(f"max_partial_prefills {partial!r} must be a whole number >= 1.",
                                  field="max_partial_prefills", fix="give 1 (vLLM's default) or more.")
        block = options.get("block_size")
        if kv == "reserve" and block is not None:
            raise ConfigError("block_size is set but KV memory is reserved per request, not paged.",
                              field="block_size", fix="drop it, or use kv='paged'.")
        block = DEFAULT_BLOCK_SIZE if block is None else block
        if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
            raise ConfigError(f"block_size {block!r} must be a whole number of tokens >= 1.", field="block_size",
                              fix="give e.g. 16 (vLLM's default).")
        caching = options.get("prefix_caching", False)
        if not isinstance(caching, (bool, np.bool_)):
            raise ConfigError(f"prefix_caching {caching!r} must be true or false.", field="prefix_caching",
                              fix="give true or false.")
        if caching and kv != "paged":
            raise ConfigError("prefix caching needs paged KV memory (cached blocks are KV blocks).",
                              field="prefix_caching", fix="use kv='paged', or drop prefix_caching.")
        return cls(iteration, None if budget is None else int(budget), None if partial is None else int(partial),
                   kv, int(block), bool(caching))

    @property
    def classic(self) -> bool:
        """The paper's engine exactly: exclusive iterations, KV reserved at admission."""
        return self.iteration == "exclusive" and self.kv == "reserve"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"iteration": self.iteration, "kv": self.kv}
        if self.iteration == "mixed":
            out["token_budget"] = self.token_budget
            out["max_partial_prefills"] = self.max_partial_prefills
        if self.kv == "paged":
            out["block_size"] = self.block_size
            out["prefix_caching"] = self.prefix_caching
        return out


def _cum_decode_s(r: int, base: float, c_d: float, S: int, n: int) -> float:
    """Time of the first ``r`` decodes of a run (see the module docstring)."""
    return r * base + c_d * (r * S + n * (r * (r - 1) // 2))


def _prefix_keys(trace: pd.DataFrame, block_size: int):
    """Per request, the keys of the full blocks of its shared prompt prefix (see :mod:`workbench.engine.kv`)."""
    n = len(trace)
    keys: list[list] = [[] for _ in range(n)]
    if "prefix_id" in trace.columns and "prefix_tokens" in trace.columns:
        pid = trace["prefix_id"].tolist()
        ptok = trace["prefix_tokens"].tolist()
        for i in range(n):
            if pid[i] is None or (isinstance(pid[i], float) and math.isnan(pid[i])):
                continue
            keys[i] = [("p", str(pid[i]), b) for b in range(int(ptok[i]) // block_size)]
    elif "prefix_hashes" in trace.columns:
        hashes = trace["prefix_hashes"].tolist()
        per = (trace["prefix_block_tokens"].tolist() if "prefix_block_tokens" in trace.columns else [512] * n)
        for i in range(n):
            text = hashes[i]
            if not isinstance(text, str) or not text.strip():
                continue
            chain = text.split()
            hb = int(per[i])
            # Engine block b covers tokens [b*bs, (b+1)*bs): shared while inside a hashed block of the chain.
            n_blocks = (len(chain) * hb) // block_size
            keys[i] = [("h", chain[(b * block_size) // hb], (b * block_size) % hb) for b in range(n_blocks)]
    return keys


def simulate(trace: pd.DataFrame | str, clients: int = 8, batch_size: int | list[int] = 16,
             policy: str | Policy = "paper-baseline", cost_model: str | LinearCostModel | list = "llama-65b", *,
             dispatch: str | None = None, order: str | None = None, rule: str | None = None,
             kv_capacity_tokens: int | list[int] | None = None, lower_bound_s: float | None = None,
             assignment: np.ndarray | None = None, predictor=None, progress: bool | None = None,
             iteration: str | None = None, token_budget: int | None = None,
             max_partial_prefills: int | None = None, kv: str | None = None, block_size: int | None = None,
             prefix_caching: bool | None = None, **params: Any) -> Schedule:
    """Simulate ``trace`` on ``clients`` clients under ``policy``; return the schedule.

    ``cost_model`` is a preset name, a cost model, or one per client.
    ``batch_size`` and ``kv_capacity_tokens`` may be per client.
    ``assignment`` (request row -> client) fixes the dispatch, as an offline
    stage does.  ``predictor`` (a :mod:`workbench.workload.predict` object or
    name such as ``"noisy:0.2"``; default: exact) gives the output lengths every
    scheduling decision sees: dispatch weights, the offline assignment, queue
    order and the iteration rule's look-ahead; the engine runs the true ones.
    ``iteration``, ``token_budget``, ``max_partial_prefills``, ``kv``,
    ``block_size`` and ``prefix_caching`` override the policy's engine
    options (:class:`EngineConfig`).  Other keyword arguments are the policy's
    parameters (for example ``mu`` for the Lagrangian rule, ``steal=True`` for
    work stealing: a client with free slots and an empty queue takes waiting
    requests from the most loaded client).  ``progress`` shows a tqdm bar
    (default: from :data:`PROGRESS_MIN_REQUESTS` requests on).
    """
    raw_trace = trace
    trace = load_trace(trace)
    n_clients = positive_int(clients, "clients")
    B = batch_sizes_array(batch_size_option(batch_size), n_clients)
    if np.any(B < 1):
        raise ConfigError(f"batch size {int(B.min())} is below 1.", field="batch_size",
                          fix="use a batch size of at least 1.")
    models = cost_models(cost_model, n_clients)
    kv_caps = kv_capacities(kv_capacity_tokens, models, n_clients)
    if assignment is not None:
        policy_obj = resolve_policy(policy, order=order, rule=rule, **params)
    else:
        policy_obj = resolve_policy(policy, dispatch=dispatch, order=order, rule=rule, **params)
    explicit = {name: value for name, value in (
        ("iteration", iteration), ("token_budget", token_budget), ("max_partial_prefills", max_partial_prefills),
        ("kv", kv), ("block_size", block_size), ("prefix_caching", prefix_caching)) if value is not None}
    options = {**policy_obj.engine, **explicit}
    # A policy's defaults for a mode the caller switched off do not apply (vllm with kv="reserve" keeps no
    # block size); the caller's own options are always checked.
    if options.get("kv", "reserve") == "reserve":
        for name in ("block_size", "prefix_caching"):
            if name not in explicit:
                options.pop(name, None)
    if options.get("iteration", "exclusive") == "exclusive":
        for name in ("token_budget", "max_partial_prefills"):
            if name not in explicit:
                options.pop(name, None)
    config = EngineConfig.from_options(options, int(B.max()))
    linear_models = all(type(m) is LinearCostModel for m in models)
    # The work, estimated before anything runs: refused with the figure if it cannot finish in memory.
    from workbench.schedule.estimate import check_work

    check_work(trace, n_clients, B, export=False, stepped=config.iteration == "mixed" or not linear_models,
               cost_models=models)

    l = trace["input_tokens"].to_numpy(np.int64)
    o = trace["output_tokens"].to_numpy(np.int64)
    arrival = trace["arrival_s"].to_numpy(float)
    n = len(trace)
    overhead = [float(getattr(m, "frontend_overhead_s", 0.0)) for m in models]
    if any(overhead):
        if len(set(overhead)) > 1:
            raise ConfigError("the clients' cost models give different front-end overheads.",
                              field="frontend_overhead_s", fix="give every client the same frontend_overhead_s.")
        engine_arrival = arrival + overhead[0]  # the front end delays every request before the engine sees it
    else:
        engine_arrival = arrival
    if config.kv == "paged":
        if kv_capacity_tokens is None and all(getattr(m, "kv_capacity_tokens", None) for m in models):
            kv_caps = [int(m.kv_capacity_tokens) for m in models]  # the preset's: GPU memory less weights
        caps = list(kv_caps)
        if any(c is None for c in caps):
            raise ConfigError("paged KV memory needs a capacity on every client.", field="kv_capacity_tokens",
                              fix="give --kv-capacity-tokens (or 'preset' for the preset's value).")
        for j, cap in enumerate(caps):
            if cap < config.block_size:
                raise ConfigError(f"client {j} holds {cap} KV tokens, less than one block of {config.block_size}.",
                                  field="kv_capacity_tokens", fix="give a capacity of at least one block.")
        _check_kv_paged(caps, config.block_size, l, o, trace)
    else:
        _check_kv(kv_caps, l, o, trace)
    # What the schedulers see: predicted output lengths (the true ones unless a predictor is given).
    predictor = _predictor(predictor)
    seen_trace, o_seen = trace, o
    if predictor is not None:
        o_seen = predictor.predict(raw_trace if isinstance(raw_trace, pd.DataFrame) else trace)
        seen_trace = trace.assign(output_tokens=o_seen)
    steal = bool(policy_obj.params.get("steal", False))
    mixed = config.iteration == "mixed"
    paged = config.kv == "paged"
    classic = config.classic and linear_models  # a measured model is stepped and recorded row by row
    if mixed and not linear_models and not all(hasattr(m, "iteration_time") for m in models):
        raise ConfigError("mixed iterations need a cost model with iteration_time().", field="cost_model",
                          fix="use a linear or profiled preset.")

    reference = models[0]
    bound_ref = reference if type(reference) is LinearCostModel else getattr(reference, "bound_model", lambda: None)()
    weight_model = reference if type(reference) is LinearCostModel else (bound_ref or reference)
    weights = weight_model.request_weight_s(l, o_seen, int(B.max()))
    speed = np.array([reference.decode_time(1, 1) / m.decode_time(1, 1) for m in models])
    state = [ClientState(j, int(B[j]), models[j], None if kv_caps[j] is None else int(kv_caps[j]), float(speed[j]))
             for j in range(n_clients)]
    if paged:
        for c in state:
            c.paged = PagedKV(int(c.kv_capacity_tokens), config.block_size, config.prefix_caching)

    if assignment is not None:
        from workbench.policies.builtin import Assigned
        assignment = np.asarray(assignment)
        if (assignment.shape != (n,) or not np.issubdtype(assignment.dtype, np.integer)
                or assignment.min() < 0 or assignment.max() >= n_clients):
            raise ConfigError(f"assignment must give each of the {n} requests a client in 0..{n_clients - 1}.",
                              field="assignment", fix="pass one client index per trace row.")
        dispatcher = Assigned(assignment)
        policy_obj = Policy(policy_obj.name, "assigned", policy_obj.order, policy_obj.rule, policy_obj.params,
                            policy_obj.description, policy_obj.engine)
    else:
        dispatcher = DISPATCHERS[policy_obj.dispatch](trace=seen_trace, clients=n_clients, batch_size=B,
                                                     cost_model=weight_model if _same_models(models) else models,
                                                     params=policy_obj.params,
                                                     kv_capacity_tokens=kv_caps)
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
    # members of any segment later (see schedule.members.RunMembers), so none are stored per segment.
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
    # Outside the paper's engine a request may leave and rejoin a batch (preemption) or prefill in chunks, so
    # every segment records its members (and a mixed one its chunks) as it is formed.
    seg_ids: list[str] = []
    seg_pids: list[str] = []
    seg_ptok: list[str] = []
    seg_pprior: list[str] = []  # per prompt piece: its tokens already in the KV cache (paged schedules)
    # Ids as text, listed by the loop outside the paper's engine (the paper's runs list theirs when written).
    ids_text = trace["request_id"].astype(str).tolist() if not classic else []

    # Per request, outside the paper's engine: tokens generated so far (for a request not decoding now),
    # the decode count it is referenced to while decoding (generated = decode_count - gen_base), prompt
    # tokens computed in the prefill in progress, the order of admission, preemptions and cache hits.
    generated = [0] * n
    gen_base = [0] * n
    admit_seq = [0] * n
    preemptions = [0] * n
    cached = [0] * n
    recomputed = [0] * n
    admissions = [0]
    preempt_count = [0]
    preempted_rank: dict[int, int] = {}  # negative queue rank -> request (a preempted request goes to the front)
    block_keys = _prefix_keys(trace, config.block_size) if config.prefix_caching else None
    bs = config.block_size
    tau = config.token_budget or 0
    max_partial = config.max_partial_prefills

    stolen = [0]
    inf = math.inf
    by_arrival = np.argsort(engine_arrival, kind="stable")
    arrival_order = by_arrival.tolist()
    arrival_list = engine_arrival[by_arrival].tolist()  # in arrival order, ended by a sentinel
    arrival_list.append(inf)
    events: list[tuple[float, int, int, int]] = []
    seq = 0
    ptr = 0

    def pop_waiting(c: ClientState) -> int:
        r = heappop(c.waiting)
        return by_rank_list[r] if r >= 0 else preempted_rank.pop(r)

    def peek_waiting(c: ClientState) -> int:
        r = c.waiting[0]
        return by_rank_list[r] if r >= 0 else preempted_rank[r]

    # -- the KV manager (paged) ------------------------------------------------------------------------
    def keys_for(i: int, tokens: int) -> list:
        """Keys of the full blocks of request i's first ``tokens`` tokens: its shared prefix, then its own."""
        shared = block_keys[i]
        full = tokens // bs
        if full <= len(shared):
            return shared[:full]
        return shared + [(i, b) for b in range(len(shared), full)]

    def paged_admissible(c: ClientState, free_slots: int) -> int:
        """How many waiting requests, in queue order, fit the free slots and the free blocks (head-of-line)."""
        kvm = c.paged
        free = kvm.free_blocks
        count = 0
        for r in heapq.nsmallest(min(free_slots, len(c.waiting)), c.waiting):
            i = by_rank_list[r] if r >= 0 else preempted_rank[r]
            need = l_list[i] + generated[i]
            hit = 0
            if block_keys is not None:
                keys = keys_for(i, need)
                hit = min(kvm.lookup(keys), (need - 1) // bs)
                blocks = kvm.blocks(need) - hit + kvm.new_blocks_for_hits(keys, hit)
            else:
                blocks = kvm.blocks(need)
            if blocks > free:
                break
            free -= blocks
            count += 1
        return count

    def paged_admit(c: ClientState, i: int, tokens: int) -> int:
        """Admit request i to c's blocks for the first ``tokens`` tokens it will compute; return cached tokens."""
        kvm = c.paged
        need = l_list[i] + generated[i]
        hit = 0
        keys: list = []
        if block_keys is not None:
            keys = keys_for(i, need)
            hit = min(kvm.lookup(keys), (need - 1) // bs)
            kvm.queried_tokens += need
            kvm.hits_tokens += hit * bs
        kvm.admit(i, keys, hit, kvm.blocks(max(hit * bs + tokens, 1)) if mixed else kvm.blocks(need))
        return hit * bs

    def kv_tokens_decoding(c: ClientState, i: int) -> int:
        """KV tokens held by a decoding request: its prompt and every generated token but the last."""
        return l_list[i] + (c.decode_count - gen_base[i]) - 1

    def preempt(c: ClientState, victims_of: list, now: float) -> None:
        """Recompute preemption of the most recently admitted running request(s) in ``victims_of``: free the
        blocks, send each back to the front of the client's queue, record a ``preempt`` row."""
        nonlocal seq
        ids_out = []
        freed = 0
        for i in victims_of:
            kvm = c.paged
            if i in c.prefilling_index:
                entry = c.prefilling_index.pop(i)
                c.prefilling.remove(entry)
                done = entry[1]
                tokens = done  # computed prompt tokens (of the prompt plus generated tokens being recomputed)
            else:
                g = c.decode_count - gen_base[i]
                generated[i] = g
                tokens = l_list[i] + g - 1
                c.running.remove((o_list[i] + gen_base[i], i))
                heapq.heapify(c.running)
                c.ctx_sum -= l_list[i] + g
            if block_keys is not None:
                kvm.register(i, keys_for(i, tokens), tokens // bs)
            kvm.release(i, kvm.blocks(tokens))
            freed += tokens
            preemptions[i] += 1
            preempt_count[0] += 1
            rk = -preempt_count[0]  # later preemptions go in front of earlier ones, as vLLM prepends
            preempted_rank[rk] = i
            heappush(c.waiting, rk)
            ids_out.append(ids_text[i])
        c.n_running = len(c.running) + len(c.prefilling)
        c.ids_cache = None
        seg_client.append(c.index)
        seg_kind.append(_PREEMPT)
        seg_start.append(now)
        seg_end.append(now)
        seg_k.append(1)
        seg_n.append(len(victims_of))
        seg_tok.append(freed)
        seg_ids.append(" ".join(ids_out))
        seg_pids.append("")
        seg_ptok.append("")
        seg_pprior.append("")

    def newest_running(c: ClientState) -> int:
        """The running request admitted last (vLLM preempts from the tail of its running list)."""
        best, best_seq = -1, -1
        for _, i in c.running:
            if admit_seq[i] > best_seq:
                best, best_seq = i, admit_seq[i]
        for entry in c.prefilling:
            if admit_seq[entry[0]] > best_seq:
                best, best_seq = entry[0], admit_seq[entry[0]]
        return best

    def decode_blocks_needed(c: ClientState, j: int) -> int:
        """New blocks the running decodes need for ``j`` more decode iterations."""
        kvm = c.paged
        d = c.decode_count
        need = 0
        for _, i in c.running:
            s = l_list[i] + (d - gen_base[i]) - 1
            need += kvm.blocks(s + j) - kvm.blocks(s)
        return need

    def running_ids(c: ClientState) -> str:
        if c.ids_cache is None:
            c.ids_cache = " ".join(sorted((ids_text[i] for _, i in c.running), key=_id_key))
        return c.ids_cache

    def record(c: ClientState, kind: int, now: float, end: float, k: int, nr: int, tokens: int,
               ids: str = "", pids: str = "", ptok: str = "", pprior: str = "") -> None:
        nonlocal seq
        index = len(seg_start)
        seg_client.append(c.index)
        seg_kind.append(kind)
        seg_start.append(now)
        seg_end.append(end)
        seg_k.append(k)
        seg_n.append(nr)
        seg_tok.append(tokens)
        if not classic:
            seg_ids.append(ids)
            seg_pids.append(pids)
            seg_ptok.append(ptok)
            seg_pprior.append(pprior)
        c.current = index
        c.version += 1
        c.pending = True
        seq += 1
        heappush(events, (end, seq, c.index, c.version))

    # -- the iteration formers ---------------------------------------------------------------------------
    def start_next(c: ClientState, now: float) -> None:
        """The exclusive former: a prefill stage (the rule admits) or a run of decode stages."""
        nonlocal seq
        c.clock_s = now
        c.current = None
        m = 0
        if steal and not c.waiting and c.n_running < c.batch_size:
            steal_for(c)
        if c.waiting and c.n_running < c.batch_size:
            c.admissible = admissible = (_admissible(c, l_list, o_list, by_rank_list) if not paged
                                         else paged_admissible(c, c.batch_size - c.n_running))
            if admissible > 0:
                m = int(iteration_rule.admit(c))
                if m <= 0 and c.n_running == 0:
                    m = admissible  # an empty client always refills, or it would idle forever
                elif m > admissible:
                    m = admissible
        index = len(seg_start)
        if m > 0:
            waiting, running = c.waiting, c.running
            if classic:
                members = [by_rank_list[heappop(waiting)] for _ in range(m)]
            else:
                members = [pop_waiting(c) for _ in range(m)]
            tokens = 0
            done_at_prefill = []
            pieces: list[tuple[int, int]] = []  # (computed tokens, cached tokens) per member
            count = c.decode_count - 1
            for i in (members if classic else ()):  # the paper's engine, the hot path
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
            for i in (() if classic else members):
                li, oi = l_list[i], o_list[i]
                g = generated[i]
                need = li + g  # a preempted request recomputes its prompt and the tokens it had generated
                hit = paged_admit(c, i, need) if paged else 0
                if not paged:
                    c.kv_reserved_tokens += li + oi
                cached[i] += hit
                if g:
                    recomputed[i] += need - hit
                tokens += need - hit
                pieces.append((need - hit, hit))
                if prefill_start[i] != prefill_start[i]:
                    prefill_start[i] = now
                admissions[0] += 1
                admit_seq[i] = admissions[0]
                if g + 1 < oi:
                    gen_base[i] = c.decode_count - (g + 1)
                    heappush(running, (oi + gen_base[i], i))
                    predicted_finish[i] = count + max(seen_list[i] - g, 1)
                    c.ctx_sum += li + g + 1
                else:
                    done_at_prefill.append(i)
            c.n_running = len(running)
            end = now + (c.a_p + c.b_p * tokens if c.linear else float(c.cost_model.prefill_time(tokens)))
            c._just_prefilled = (members, done_at_prefill)
            c.ids_cache = None
            if classic:  # the hot path: record() inlined
                seg_client.append(c.index)
                seg_kind.append(_PREFILL)
                seg_start.append(now)
                seg_end.append(end)
                seg_k.append(1)
                seg_n.append(m)
                seg_tok.append(tokens)
                c.current = index
                c.version += 1
                c.pending = True
                seq += 1
                heappush(events, (end, seq, c.index, c.version))
            else:
                record(c, _PREFILL, now, end, 1, m, tokens,
                       " ".join(sorted((ids_text[i] for i in members), key=_id_key)),
                       " ".join(ids_text[i] for i in members), " ".join(str(p[0]) for p in pieces),
                       " ".join(str(p[1]) for p in pieces))
            return
        if c.n_running > 0:
            nr, tokens = c.n_running, c.ctx_sum
            if c.linear:
                k = c.running[0][0] - c.decode_count
                if paged:
                    k = fit_run(c, k, now)
                    nr, tokens = c.n_running, c.ctx_sum
                    if nr == 0:
                        start_next(c, now)
                        return
                end = now + (k * (c.a_d + c.b_d * nr) + c.c_d * (k * tokens + nr * (k * (k - 1) // 2)))
            else:
                k = 1
                if paged:
                    fit_run(c, 1, now)
                    nr, tokens = c.n_running, c.ctx_sum
                    if nr == 0:
                        start_next(c, now)
                        return
                if c.skew_aware:
                    d = c.decode_count
                    longest = max(l_list[i] + d - gen_base[i] for _, i in c.running) if not classic else 0
                    end = now + float(c.cost_model.iteration_time(nr, tokens, [], [],
                                                                  decode_max_context_tokens=longest))
                else:
                    end = now + float(c.cost_model.decode_time(nr, tokens))
            if classic:  # the hot path: record() inlined
                seg_client.append(c.index)
                seg_kind.append(_DECODE)
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
            else:
                record(c, _DECODE, now, end, k, nr, tokens, running_ids(c))
            return
        c.pending = False

    def fit_run(c: ClientState, k: int, now: float) -> int:
        """Paged KV: the longest run of at most k decodes whose blocks fit, preempting first if none fits."""
        kvm = c.paged
        while c.running and decode_blocks_needed(c, 1) > kvm.free_blocks:
            preempt(c, [newest_running(c)], now)
        if not c.running:
            return 0
        if decode_blocks_needed(c, k) <= kvm.free_blocks:
            return k
        lo, hi = 1, k  # need(lo) fits, need(hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if decode_blocks_needed(c, mid) <= kvm.free_blocks:
                lo = mid
            else:
                hi = mid
        return lo

    def start_mixed(c: ClientState, now: float) -> None:
        """The mixed former: every running decode plus prompt chunks up to the token budget (one iteration)."""
        c.clock_s = now
        c.current = None
        if steal and not c.waiting and c.n_running < c.batch_size:
            steal_for(c)
        kvm = c.paged
        preempted_now = False
        if paged:
            # Blocks for this iteration's decode tokens and the chunks of prompts part-way through; preempt the
            # newest running requests until they fit (vLLM then admits nobody new in this step).
            while c.running or c.prefilling:
                need = decode_blocks_needed(c, 1)
                budget = tau - len(c.running)
                for entry in c.prefilling:
                    if budget <= 0:
                        break
                    i, done = entry
                    take = min(l_list[i] + generated[i] - done, budget)
                    need += kvm.blocks(done + take) - kvm.blocks(done)
                    budget -= take
                if need <= kvm.free_blocks:
                    break
                preempt(c, [newest_running(c)], now)
                preempted_now = True
        if paged:
            kvm.grow(-1, decode_blocks_needed(c, 1))  # this iteration's decode tokens, before anyone is admitted
        n_d = len(c.running)
        budget = tau - n_d
        chunks: list[tuple[int, int, int]] = []  # (request, chunk tokens, prompt tokens done before)
        for entry in c.prefilling:
            if budget <= 0:
                break
            i, done = entry
            take = min(l_list[i] + generated[i] - done, budget)
            chunks.append((i, take, done))
            budget -= take
            if paged:
                kvm.grow(i, kvm.blocks(done + take) - kvm.blocks(done))
        if budget > 0 and c.waiting and c.n_running < c.batch_size and not preempted_now:
            # Paged: blocks are checked request by request below, for the cached part and the first chunk
            # only (vLLM allocates a prompt's blocks chunk by chunk).
            c.admissible = admissible = (_admissible(c, l_list, o_list, by_rank_list) if not paged
                                         else min(c.batch_size - c.n_running, len(c.waiting)))
            m = int(iteration_rule.admit(c)) if admissible > 0 else 0
            if m <= 0 and admissible > 0 and c.n_running == 0:
                m = admissible
            m = min(m, admissible)
            partial = sum(1 for ch in chunks if ch[2] + ch[1] < l_list[ch[0]] + generated[ch[0]])
            while budget > 0 and m > 0 and c.waiting:
                i = peek_waiting(c)
                need_tokens = l_list[i] + generated[i]
                if max_partial is not None and partial >= max_partial:
                    break
                if not paged:
                    want = l_list[i] + o_list[i]
                    if c.kv_capacity_tokens is not None and c.kv_reserved_tokens + want > c.kv_capacity_tokens:
                        break  # head-of-line: keep the queue order
                m -= 1
                hit = 0
                if paged:
                    hit_tokens = _hit_tokens(c, i, need_tokens)
                    first = min(need_tokens - hit_tokens, budget)
                    hit_blocks = hit_tokens // bs
                    keys = keys_for(i, need_tokens) if block_keys is not None else []
                    blocks = (kvm.blocks(hit_tokens + first) - hit_blocks
                              + (kvm.new_blocks_for_hits(keys, hit_blocks) if hit_blocks else 0))
                    if blocks > kvm.free_blocks:
                        break  # head-of-line: keep the queue order
                    pop_waiting(c)
                    hit = paged_admit(c, i, first)
                    cached[i] += hit
                else:
                    pop_waiting(c)
                    c.kv_reserved_tokens += l_list[i] + o_list[i]
                entry = [i, hit]
                c.prefilling.append(entry)
                c.prefilling_index[i] = entry
                admissions[0] += 1
                admit_seq[i] = admissions[0]
                if prefill_start[i] != prefill_start[i]:
                    prefill_start[i] = now
                take = min(need_tokens - hit, budget)
                chunks.append((i, take, hit))
                budget -= take
                if hit + take < need_tokens:
                    partial += 1
                c.n_running = len(c.running) + len(c.prefilling)
        if n_d == 0 and not chunks:
            c.pending = False
            return
        ctx = c.ctx_sum
        if c.linear:
            if chunks:
                P = sum(ch[1] for ch in chunks)
                Q = sum(ch[2] for ch in chunks)
                end = now + (c.a_m + c.b_d * n_d + c.c_d * (ctx + Q) + c.b_p * P)
            else:
                end = now + (c.a_d + c.b_d * n_d + c.c_d * ctx)
        else:
            # A measured attention kernel is slower for skewed contexts than for their mean: the cost model
            # may correct for it from the longest context.
            d = c.decode_count
            longest = max((l_list[i] + d - gen_base[i] for _, i in c.running), default=0)
            end = now + float(c.cost_model.iteration_time(n_d, ctx, [ch[1] for ch in chunks],
                                                          [ch[2] for ch in chunks],
                                                          **({"decode_max_context_tokens": longest}
                                                             if c.skew_aware else {})))
        c._just_prefilled = chunks
        record(c, _MIXED if chunks else _DECODE, now, end, 1, n_d, ctx, running_ids(c),
               " ".join(ids_text[ch[0]] for ch in chunks), " ".join(str(ch[1]) for ch in chunks),
               " ".join(str(ch[2]) for ch in chunks))

    def _hit_tokens(c: ClientState, i: int, need: int) -> int:
        if block_keys is None:
            return 0
        return min(c.paged.lookup(keys_for(i, need)), (need - 1) // bs) * bs

    def finish_mixed(c: ClientState) -> None:
        index = c.current
        if index is None:
            return
        end = seg_end[index]
        kvm = c.paged
        n_d = seg_n[index]
        if n_d:
            c.decode_count += 1
            c.ctx_sum += n_d
            d = c.decode_count
            running = c.running
            while running and running[0][0] <= d:
                i = heappop(running)[1]
                finish[i] = end
                finished[0] += 1
                c.ctx_sum -= l_list[i] + o_list[i]
                if paged:
                    kvm.release(i, kvm.blocks(l_list[i] + o_list[i] - 1))
                else:
                    c.kv_reserved_tokens -= l_list[i] + o_list[i]
                c.outstanding_s -= w_list[i]
                c.ids_cache = None
        chunks = c._just_prefilled
        if chunks:
            for i, take, _ in chunks:
                entry = c.prefilling_index[i]
                entry[1] += take
                need = l_list[i] + generated[i]
                if paged and block_keys is not None:
                    kvm.register(i, keys_for(i, entry[1]), entry[1] // bs)
                if generated[i] and take:
                    recomputed[i] += take
                if entry[1] < need:
                    continue
                del c.prefilling_index[i]
                c.prefilling.remove(entry)
                g = generated[i] + 1  # the prompt's last chunk yields a token
                if first_token[i] != first_token[i]:
                    first_token[i] = end
                if g >= o_list[i]:
                    finish[i] = end
                    finished[0] += 1
                    if paged:
                        kvm.release(i, kvm.blocks(need))
                    else:
                        c.kv_reserved_tokens -= l_list[i] + o_list[i]
                    c.outstanding_s -= w_list[i]
                else:
                    gen_base[i] = c.decode_count - g
                    heappush(c.running, (o_list[i] + gen_base[i], i))
                    predicted_finish[i] = c.decode_count - 1 + max(seen_list[i] - generated[i], 1)
                    c.ctx_sum += l_list[i] + g
                    c.ids_cache = None
            c._just_prefilled = ()
        c.n_running = len(c.running) + len(c.prefilling)

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
            r = vw[0]
            i = by_rank_list[r] if r >= 0 else preempted_rank[r]
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
            if classic:
                for i in members:
                    first_token[i] = end
            else:
                for i in members:
                    if first_token[i] != first_token[i]:  # a recompute keeps the first token's time
                        first_token[i] = end
            for i in done:
                finish[i] = end
                finished[0] += 1
                last_seg[i] = index
                if paged:
                    c.paged.release(i, c.paged.blocks(l_list[i] + generated[i]))
                else:
                    c.kv_reserved_tokens -= l_list[i] + o_list[i]
                c.outstanding_s -= w_list[i]
            if paged and block_keys is not None:
                for i in members:
                    if i not in done:
                        need = l_list[i] + generated[i]
                        c.paged.register(i, keys_for(i, need), need // bs)
            c._just_prefilled = ((), ())
        else:
            k, nr = seg_k[index], seg_n[index]
            if paged:
                c.paged.grow(-1, decode_blocks_needed(c, k))
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
                if paged:
                    c.paged.release(i, c.paged.blocks(done - 1))
                else:
                    c.kv_reserved_tokens -= done
                c.outstanding_s -= w_list[i]
                c.ids_cache = None
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
    form = start_mixed if mixed else start_next
    complete = finish_mixed if mixed else finish_current

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
            if c.n_running < c.batch_size and not mixed:
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
    assign = dispatcher.assign
    while True:
        if bar is not None:
            loops += 1
            if not loops & 16383:
                bar.n = finished[0]
                bar.refresh()
        t_arr = arrival_list[ptr]
        t_ev = events[0][0] if events else inf
        t_ep = next_epoch(now, state) if next_epoch is not None else inf
        if t_arr == inf and t_ev == inf and t_ep == inf:
            break
        now = min(t_arr, t_ev, t_ep)
        if t_ep < t_arr and t_ep <= t_ev:
            release_held(t_ep)
            continue
        if t_arr <= t_ev:
            # Arrivals first at equal times, so a boundary sees every request that has arrived.  Without
            # decision epochs every arrival of this instant is taken now: what they push is at t_arr or
            # later, so the loop would take them next anyway.
            while True:
                i = arrival_order[ptr]
                ptr += 1
                j = int(assign(i, t_arr, state))
                if j == HOLD and next_epoch is not None:
                    break
                enqueue(i, j, t_arr)
                if next_epoch is not None or arrival_list[ptr] != t_arr:
                    break
        else:
            t, _, j, version = heappop(events)
            c = state[j]
            if version != c.version:
                continue
            complete(c)
            form(c, t)

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
    # The loop's lists are arrays now: free them before the tables are assembled (at a million
    # requests they hold about 0.4 GB of Python objects).
    for spent in (seg_client, seg_kind, seg_start, seg_end, seg_k, seg_n, seg_tok, pre_seg, last_seg, client_of,
                  prefill_start, first_token, finish, l_list, o_list, w_list, seen_list, rank_list, by_rank_list,
                  arrival_list, arrival_order, predicted_finish):
        spent.clear()
    unserved = np.flatnonzero(np.isnan(per_request["finish_s"]))
    if len(unserved):
        raise _unserved_error(unserved, per_request["client"], kv_caps, l, o, trace)
    described = policy_obj.describe()
    if predictor is not None:
        described["predictor"] = predictor.name
    if not classic or policy_obj.engine:
        described.update(config.describe())
    if classic:
        schedule = _assemble(trace, segments, members, per_request, models, B, n_clients, policy_obj.name,
                             described, lower_bound_s, kv_caps)
    else:
        extra = {"preemptions": int(sum(preemptions)), "iteration_mode": config.iteration, "kv_mode": config.kv}
        if mixed:
            extra["token_budget"] = tau
        if paged:
            extra["block_size"] = bs
            extra["prefix_caching"] = config.prefix_caching
            if config.prefix_caching:
                queried = sum(c.paged.queried_tokens for c in state)
                hits = sum(c.paged.hits_tokens for c in state)
                extra["prefix_cache_hit_rate"] = hits / queried if queried else 0.0
        schedule = _assemble_general(trace, segments, (seg_ids, seg_pids, seg_ptok, seg_pprior), per_request, models, B,
                                     n_clients, policy_obj.name, described, lower_bound_s, kv_caps, config, extra,
                                     {"preemptions": preemptions, "cached_tokens": cached,
                                      "recomputed_tokens": recomputed}, block_keys)
    if steal:
        schedule.metrics["stolen_requests"] = stolen[0]
    if predictor is not None:
        schedule.requests["predicted_output_tokens"] = o_seen
    return schedule


def _check_kv_paged(caps, block_size, l, o, trace) -> None:
    """A request whose every KV block (``l + o - 1`` tokens at its last decode) cannot fit is never served."""
    largest_blocks = max(int(c) // block_size for c in caps)
    need = -(-(l + o - 1) // block_size)
    too_big = need > largest_blocks
    if too_big.any():
        row = int(np.flatnonzero(too_big)[0])
        raise ConfigError(f"request '{trace['request_id'].iloc[row]}' needs {int(need[row])} KV blocks of "
                          f"{block_size} tokens ({int(l[row] + o[row] - 1)} tokens at its last decode) but the "
                          f"largest client holds {largest_blocks} blocks.", field="kv_capacity_tokens", row=row,
                          fix="raise the KV capacity or drop requests longer than the cache.")


def _assemble_general(trace, segments, texts, per_request, models, B, n_clients, policy_name, params, lower_bound_s,
                      kv, config: EngineConfig, extra, request_extra, block_keys) -> Schedule:
    """The schedule of a run outside the paper's engine: members recorded per segment, mixed and preempt rows."""
    from workbench.schedule.schema import expand_runs

    seg_client, seg_kind, seg_k = segments["client"], segments["kind"], segments["k"]
    order = np.argsort(seg_client, kind="stable")
    counted = np.where(seg_kind == _PREEMPT, 0, seg_k)  # a preemption is a moment, not an iteration
    k_sorted = counted[order]
    client_sorted = seg_client[order]
    ends = np.cumsum(k_sorted)
    client_first = np.searchsorted(client_sorted, client_sorted, side="left")
    first_iter = np.empty(len(seg_k), dtype=np.int64)
    first_iter[order] = ends - k_sorted - np.where(client_first > 0, ends[client_first - 1], 0)
    decode = seg_kind == _DECODE
    seg_n, seg_tok = segments["n"], segments["tokens"]
    ids, pids, ptok, pprior = (np.array(t, dtype=object) for t in texts)
    runs = pd.DataFrame({
        "client": seg_client, "kind": np.where(decode, "decode", "prefill"),
        "start_s": segments["start_s"], "end_s": segments["end_s"], "n_requests": seg_n,
        "tokens": seg_tok * seg_k + seg_n * (seg_k * (seg_k - 1) // 2) * decode,
        "first_tokens": seg_tok, "iterations": seg_k, "first_iteration": first_iter,
        "last_iteration": first_iter + seg_k - 1, "request_ids": ids,
    })
    if config.iteration == "mixed":
        # Mixed iterations are single rows in the order they were formed (time order across clients), as the
        # chunked-prefill timeline has always been written.
        order = np.arange(len(seg_k))
    runs = runs.iloc[order].reset_index(drop=True)
    kinds = _KIND_NAMES[seg_kind[order]]
    bound_model = models[0] if type(models[0]) is LinearCostModel else getattr(models[0], "bound_model", lambda: None)()
    record_model = models[0]
    expand_metrics = {"clients": n_clients, "cost_model": _coefficients_record(models)}
    timeline = expand_runs(runs, expand_metrics)
    reps = runs["iterations"].to_numpy(np.int64)
    row_kind = np.repeat(kinds, reps)
    timeline["kind"] = row_kind
    timeline.loc[row_kind == "preempt", "iteration"] = -1
    if config.iteration == "mixed" or config.kv == "paged":
        # Prompt pieces: the chunks of mixed rows and, with paged KV, the prompts of prefill rows (whose
        # recomputation and cached part the validator checks through prefill_prior).
        timeline["prefill_ids"] = np.repeat(pids[order], reps)
        timeline["prefill_tokens"] = np.repeat(ptok[order], reps)
        if config.kv == "paged":
            timeline["prefill_prior"] = np.repeat(pprior[order], reps)
    requests = pd.DataFrame({
        "request_id": trace["request_id"].to_numpy(), "client": per_request["client"],
        "input_tokens": trace["input_tokens"].to_numpy(), "output_tokens": trace["output_tokens"].to_numpy(),
        "arrival_s": trace["arrival_s"].to_numpy(float), "prefill_start_s": per_request["prefill_start_s"],
        "first_token_s": per_request["first_token_s"], "finish_s": per_request["finish_s"],
    })
    if config.kv == "paged":
        requests["preemptions"] = np.array(request_extra["preemptions"], dtype=np.int64)
        requests["recomputed_tokens"] = np.array(request_extra["recomputed_tokens"], dtype=np.int64)
    if config.prefix_caching:
        requests["cached_tokens"] = np.array(request_extra["cached_tokens"], dtype=np.int64)
    binding = "given"
    if lower_bound_s is None:
        lower_bound_s, binding = _general_bound(trace, n_clients, B, models, bound_model, kv, config, block_keys)
    if any(v is not None for v in kv):
        extra["kv_capacity_tokens"] = [None if v is None else int(v) for v in kv]
    if bound_model is not None and config.iteration == "mixed":
        extra["lower_bound_model"] = "chunked-prefill"
    metrics = build_metrics(timeline, clients=n_clients, batch_size=B, cost_model=record_model, policy=policy_name,
                            params=params, lower_bound_s=lower_bound_s, lower_bound_binding=binding, extra=extra)
    if not _same_models(models):
        metrics["cost_model"] = [cost_model_record(m) for m in models]
    return Schedule(timeline=timeline, requests=requests, metrics=metrics)


def _coefficients_record(models) -> list[dict]:
    """Per client, the linear coefficients the timeline's decode runs were computed with (zeros if not linear:
    such runs are single iterations, whose recorded times are kept)."""
    out = []
    for m in models:
        if type(m) is LinearCostModel:
            out.append(m.coefficients())
        else:
            out.append({"a_p": 0.0, "b_p": 0.0, "a_d": 0.0, "b_d": 0.0, "c_d": 0.0})
    return out


def _general_bound(trace, n_clients, B, models, bound_model, kv, config: EngineConfig, block_keys):
    """The makespan lower bound valid for this engine configuration, and which term binds.

    Paged KV frees memory earlier than reservation, so the KV-aware terms (which assume ``l_i + o_i`` held
    throughout) are dropped; recompute only adds work.  With prefix caching a prompt may skip up to its
    cached prefix, so the bound is taken on prompts shortened by every token that could be cached.
    """
    if bound_model is None or not _same_models(models):
        return float("nan"), "none: the cost model states no linear lower model"
    bound_trace = trace
    if block_keys is not None:
        skip = np.array([len(k) * config.block_size for k in block_keys], dtype=np.int64)
        l = trace["input_tokens"].to_numpy(np.int64)
        bound_trace = trace.assign(input_tokens=np.maximum(l - np.minimum(skip, l - 1), 1))
    caps = kv if config.kv == "reserve" else None
    if config.iteration == "mixed":
        bound = chunked_lower_bound(bound_trace, n_clients, B, bound_model, token_budget=config.token_budget,
                                    kv_capacity_tokens=caps)
    else:
        bound = best_lower_bound(bound_trace, n_clients, B, bound_model, kv_capacity_tokens=caps
                                 if caps is not None else [None] * n_clients)
    return (bound.value_s, bound.binding) if bound is not None else (float("nan"), None)


def _id_key(text: str):
    """Ids in numeric order when they are integers (as the engine lists them), else as text."""
    return (0, int(text), "") if text.lstrip("-").isdigit() else (1, 0, text)


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
    # Who is in each run: the sorted position of each request's admitting run and of its last run.
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    run_members = RunMembers(trace["request_id"].astype(str), position[members["pre_seg"]],
                             position[members["last_seg"]], decode[order])
    runs = runs.iloc[order].reset_index(drop=True)
    requests = pd.DataFrame({
        "request_id": trace["request_id"].to_numpy(), "client": per_request["client"],
        "input_tokens": trace["input_tokens"].to_numpy(), "output_tokens": trace["output_tokens"].to_numpy(),
        "arrival_s": trace["arrival_s"].to_numpy(float), "prefill_start_s": per_request["prefill_start_s"],
        "first_token_s": per_request["first_token_s"], "finish_s": per_request["finish_s"],
    })
    bound_model = models[0] if type(models[0]) is LinearCostModel else getattr(models[0], "bound_model", lambda: None)()
    same = _same_models(models)
    if lower_bound_s is None:
        if bound_model is None:
            bound = None  # a measured model that states no linear model below it: no bound is claimed
        else:
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
    metrics = build_metrics(runs, clients=n_clients, batch_size=B, cost_model=models[0], policy=policy_name,
                            params=params, lower_bound_s=lower_bound_s, lower_bound_binding=binding, extra=extra)
    if not same:
        metrics["cost_model"] = [m.coefficients() | {"name": m.name} for m in models]
    return Schedule(requests=requests, metrics=metrics, runs=runs, run_ids=run_members)


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
