"""From the recorder's segments to a ``Schedule``: the run table, the timeline, the requests and the metrics.

Two assemblers, one schema (MODEL.md section 9).  The paper's engine keeps runs of decodes
in closed form and lists their members lazily (:func:`assemble`); outside it every segment
carries its members and prompt pieces, and the per-iteration timeline is expanded here
(:func:`assemble_general`).  The lower bound is the instance's, for the engine's options.
"""

from __future__ import annotations

from collections import Counter
from functools import cmp_to_key, partial

import numpy as np
import pandas as pd

from workbench.costmodel.linear import LinearCostModel
from workbench.engine.config import EngineConfig
from workbench.engine.recorder import DECODE, KIND_NAMES, PREEMPT
from workbench.errors import ConfigError
from workbench.schedule.bounds import _round_down, best_lower_bound, chunked_lower_bound
from workbench.schedule.members import RunMembers
from workbench.schedule.schema import Schedule, build_metrics, cost_model_record


def client_order(client: np.ndarray) -> np.ndarray:
    """The stable sort of rows by client: as 16-bit keys where the clients fit (NumPy radix-sorts those, the
    same permutation several times faster than its merge sort of 64-bit keys)."""
    if len(client) and 0 <= client.min() and client.max() < 1 << 15:
        client = client.astype(np.int16)
    return np.argsort(client, kind="stable")


def first_iterations(seg_client: np.ndarray, iterations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The segments in client order, and each one's first iteration number on its client.

    Segments were appended in event order, which is time order on each client, so a stable sort
    by client keeps each client's own order; the numbers are running sums of ``iterations``.
    """
    order = client_order(seg_client)
    k_sorted = iterations[order]
    client_sorted = seg_client[order]
    ends = np.cumsum(k_sorted)
    client_first = np.searchsorted(client_sorted, client_sorted, side="left")
    first_iter = np.empty(len(iterations), dtype=np.int64)
    first_iter[order] = ends - k_sorted - np.where(client_first > 0, ends[client_first - 1], 0)
    return order, first_iter


def assemble_general(trace, segments, texts, per_request, models, B, n_clients, policy_name, params, lower_bound_s,
                      kv, config: EngineConfig, extra, request_extra, block_keys, *, id_by_rank=None,
                      member_flat=None) -> Schedule:
    """The schedule of a run outside the paper's engine: members recorded per segment, mixed and preempt rows."""
    from workbench.schedule.schema import expand_runs

    # Text once per segment, as the Arrow strings the frames hold, then taken per row (no Python string per row).
    stepped = config.iteration == "mixed" and bool(segments.get("run_ends"))
    if stepped:  # every row one iteration, in its final order: the frames below need no reordering
        segments, text_rows = stepped_segments(segments)
        ids = None  # listed when the timeline is first read (stepped_texts): the metrics need no text
    else:
        ids, pids, ptok, pprior = text_arrays(texts, id_by_rank, member_flat)
    seg_client, seg_kind, seg_k = segments["client"], segments["kind"], segments["k"]
    # A preemption is a moment, not an iteration.
    order, first_iter = first_iterations(seg_client, np.where(seg_kind == PREEMPT, 0, seg_k))
    seg_n, seg_tok = segments["n"], segments["tokens"]
    bound_model = models[0] if type(models[0]) is LinearCostModel else getattr(models[0], "bound_model", lambda: None)()
    record_model = models[0]
    if stepped:
        # Every row one iteration already, in its final order (stepped_rows): the timeline's frame at once, from
        # fresh arrays (no consolidating copy), without the frame of runs that expand_runs would take.
        order, row_kind = np.arange(len(seg_k)), seg_kind
        timeline = pd.DataFrame({"client": seg_client, "iteration": first_iter,
                                 "kind": kind_text(seg_kind, KIND_NAMES), "start_s": segments["start_s"],
                                 "end_s": segments["end_s"], "n_requests": seg_n, "tokens": seg_tok}, copy=False)
    else:
        runs, order = segment_runs(segments, ids, order, first_iter, config)
        timeline = expand_runs(runs, {"clients": n_clients, "cost_model": coefficients_record(models)})
        reps = runs["iterations"].to_numpy(np.int64)
        row_kind = np.repeat(seg_kind[order], reps)
        timeline["kind"] = kind_text(row_kind, KIND_NAMES)
    timeline.loc[row_kind == PREEMPT, "iteration"] = -1
    if not stepped and (config.iteration == "mixed" or config.kv == "paged"):  # stepped: see stepped_texts
        # Prompt pieces: the chunks of mixed rows and, with paged KV, the prompts of prefill rows (whose
        # recomputation and cached part the validator checks through prefill_prior).
        rows = None if config.iteration == "mixed" else np.repeat(order, reps)
        add_pieces(timeline, [t if rows is None else t.take(rows) for t in (pids, ptok, pprior)], config.kv == "paged")
    requests = general_requests(trace, per_request, request_extra, config)
    binding = "given"
    if lower_bound_s is None:
        lower_bound_s, binding = general_bound(trace, n_clients, B, models, bound_model, kv, config, block_keys)
    if any(v is not None for v in kv):
        extra["kv_capacity_tokens"] = [None if v is None else int(v) for v in kv]
    if bound_model is not None and config.iteration == "mixed":
        extra["lower_bound_model"] = "chunked-prefill"
    metrics = build_metrics(timeline, clients=n_clients, batch_size=B, cost_model=record_model, policy=policy_name,
                            params=params, lower_bound_s=lower_bound_s, lower_bound_binding=binding, extra=extra)
    if not same_models(models):
        metrics["cost_model"] = [cost_model_record(m) for m in models]
    if stepped:
        return Schedule(requests=requests, metrics=metrics,
                        expand_timeline=partial(stepped_texts, timeline, texts, id_by_rank, text_rows,
                                                config.kv == "paged", member_flat))
    return Schedule(timeline=timeline, requests=requests, metrics=metrics)


def segment_runs(segments: dict, ids, order: np.ndarray, first_iter: np.ndarray, config: EngineConfig):
    """The segments as a frame of runs for expand_runs (a decode run's tokens summed over its iterations), in
    the timeline's order, and that order (mixed iterations: as formed, time order across clients)."""
    seg_client, seg_kind, seg_k = segments["client"], segments["kind"], segments["k"]
    decode = seg_kind == DECODE
    seg_n, seg_tok = segments["n"], segments["tokens"]
    runs = pd.DataFrame({
        "client": seg_client, "kind": kind_text(decode.astype(np.int8), ("prefill", "decode")),
        "start_s": segments["start_s"], "end_s": segments["end_s"], "n_requests": seg_n,
        "tokens": seg_tok * seg_k + seg_n * (seg_k * (seg_k - 1) // 2) * decode,
        "first_tokens": seg_tok, "iterations": seg_k, "first_iteration": first_iter,
        "last_iteration": first_iter + seg_k - 1, **({} if ids is None else {"request_ids": ids}),
    })
    if config.iteration == "mixed":
        # Mixed iterations are single rows in the order they were formed (time order across clients), as the
        # chunked-prefill timeline has always been written.
        return runs, np.arange(len(seg_k))
    return runs.iloc[order].reset_index(drop=True), order


def kind_text(codes: np.ndarray, names) -> pd.api.extensions.ExtensionArray:
    """``names[codes]`` as the Arrow strings a frame holds, taken by Arrow (pandas would convert a NumPy array
    of Python strings one element at a time)."""
    import pyarrow as pa

    return pd.array(pa.array(list(names), pa.large_string()).take(pa.array(codes)), dtype="str")


def general_requests(trace, per_request, request_extra, config: EngineConfig) -> pd.DataFrame:
    """The requests table of a run outside the paper's engine, with its KV columns where they apply."""
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
    return requests


def stepped_segments(segments: dict) -> tuple[dict, np.ndarray]:
    """Mixed iterations with runs of decodes: one row per iteration in stepped order, and the segment whose
    texts each row repeats."""
    rows, text_rows, order = stepped_rows(segments)
    return {name: column[order] for name, column in rows.items()}, text_rows[order]


def stepped_texts(timeline: pd.DataFrame, texts, id_by_rank, text_rows: np.ndarray, paged: bool,
                  flat=None) -> pd.DataFrame:
    """The stepped timeline's text columns (members, prompt pieces), listed when the timeline is first read:
    the run's metrics need none of them, and at a million requests they are most of the schedule's time."""
    ids, *pieces = (t.take(text_rows) for t in text_arrays(texts, id_by_rank, flat))
    timeline["request_ids"] = ids
    add_pieces(timeline, pieces, paged)
    return timeline


def add_pieces(timeline: pd.DataFrame, pieces, paged: bool) -> None:
    """The prompt-piece columns (ids, tokens, and with paged KV the tokens already cached) after the others."""
    pids, ptok, pprior = pieces
    timeline["prefill_ids"] = pids
    timeline["prefill_tokens"] = ptok
    if paged:
        timeline["prefill_prior"] = pprior


def text_arrays(texts, id_by_rank: list[str] | None, flat=None) -> tuple:
    """The segments' texts as the Arrow-backed strings the frames hold; members recorded as id ranks are
    joined here (see Recorder.id_by_rank)."""
    ids, *pieces = texts
    return (member_text(ids, id_by_rank, flat), *(pd.array(t, dtype="str") for t in pieces))


#: Segments whose members are joined at once (bounds the ranks held as one array).
MEMBER_CHUNK = 1 << 16


def member_text(ids: list, id_by_rank: list[str] | None, flat=None):
    """Each segment's ``request_ids``: text as recorded, or the ids of its ranks joined by spaces, where the
    integer ``offset << 32 | count`` names ``count`` ranks at ``offset`` of ``flat`` (Recorder.member_flat).
    Arrow joins them: no Python string per segment."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if id_by_rank is None:
        return pd.array(ids, dtype="str")
    names = pa.array(id_by_rank, pa.large_string())
    ranks = np.frombuffer(flat, dtype=np.int64) if flat is not None and len(flat) else np.empty(0, np.int64)
    parts = []
    for lo in range(0, len(ids), MEMBER_CHUNK):
        part = ids[lo:lo + MEMBER_CHUNK]
        ranked = np.fromiter((type(x) is int for x in part), bool, len(part))
        ref = np.fromiter((x if type(x) is int else 0 for x in part), np.int64, len(part))
        at, lengths = ref >> 32, ref & 0xFFFFFFFF
        offsets = np.zeros(len(part) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        where = np.repeat(at - offsets[:-1], lengths) + np.arange(int(offsets[-1]))  # each list's ranks in flat
        joined = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(offsets), names.take(pa.array(ranks[where]))),
                                pa.scalar(" ", pa.large_string()))
        if not ranked.all():
            joined = pc.if_else(ranked, joined, pa.array([x if type(x) is str else "" for x in part],
                                                         pa.large_string()))
        parts.append(joined)
    if not parts:
        return pd.array([], dtype="str")
    return pd.array(pa.chunked_array(parts, pa.large_string()).combine_chunks(), dtype="str")


def stepped_rows(segments: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    """Mixed iterations: each run of decodes as its single iterations, and every row in the order a loop that
    stepped each iteration would have formed it (MODEL.md 11.11).  Returns the rows, the segment of each (whose
    texts it repeats) and that order."""
    run_ends, k = segments["run_ends"], segments["k"]
    seg = np.repeat(np.arange(len(k)), k)
    r = np.arange(len(seg), dtype=np.int64) - np.repeat(np.cumsum(k) - k, k)
    out = {name: segments[name][seg] for name in ("client", "kind", "n")}
    out["k"] = np.ones(len(seg), dtype=np.int64)
    out["tokens"] = segments["tokens"][seg] + out["n"] * r
    start, end = segments["start_s"][seg], segments["end_s"][seg]
    runs = np.array(sorted(run_ends), dtype=np.int64)
    run_k = k[runs]
    first = (np.cumsum(k) - k)[runs]
    rows = np.repeat(first, run_k) + (np.arange(int(run_k.sum())) - np.repeat(np.cumsum(run_k) - run_k, run_k))
    # Each run's ends: ``count`` doubles at ``offset`` of run_flat (Recorder.run_ends), gathered in run order.
    ref = np.fromiter((run_ends[i] for i in runs.tolist()), np.int64, len(runs))
    ends = np.frombuffer(segments["run_flat"], dtype=float)[np.repeat((ref >> 32) - (np.cumsum(run_k) - run_k), run_k)
                                                            + np.arange(len(rows))] if len(rows) else np.empty(0)
    starts = np.empty_like(ends)
    starts[1:] = ends[:-1]
    starts[np.cumsum(run_k) - run_k] = segments["start_s"][runs]
    end[rows], start[rows] = ends, starts
    out["start_s"], out["end_s"] = start, end
    runs_rows = RunRows(segments, seg, r)
    return out, seg, stepped_order(out, runs_rows, runs_rows.previous)


class RunRows:
    """Per row of the stepped timeline, what pushed its boundary (its segment's mark; a run's later iterations:
    the one before it) and the replica's iteration before it, looked up from the segments as ties need them:
    a million rows have a few thousand ties."""

    def __init__(self, segments: dict, seg: np.ndarray, r: np.ndarray) -> None:
        self.marks, self.k = segments["marks"], segments["k"]
        self.client, self.kind = segments["client"], segments["kind"]
        self.seg, self.r = seg, r
        self.first_row = np.cumsum(self.k) - self.k
        self._previous_segment: np.ndarray | None = None

    def __getitem__(self, row: int):
        return -1 if self.r[row] > 0 else self.marks[self.seg[row]]

    def previous(self, row: int) -> int:
        """previous_iteration(...)[row], from the segments: the run's iteration before it, or the last row of the
        replica's last segment before it that is not a preemption (-1: none)."""
        if self.r[row] > 0:
            return row - 1
        if self._previous_segment is None:
            self._previous_segment = previous_iteration(self.client, self.kind)
        p = int(self._previous_segment[self.seg[row]])
        return int(self.first_row[p] + self.k[p] - 1) if p >= 0 else -1


def stepped_order(rows: dict, marks, previous) -> np.ndarray:
    """Rows in time order; at equal times across replicas, in the order a stepping loop takes their boundaries:
    by what pushed each boundary (its clock sequence), recursively through the iterations that pushed them.
    ``marks[row]``: what pushed the row's boundary; ``previous(row)``: the replica's iteration before it (see
    previous_iteration; :class:`RunRows` gives both)."""
    start, client = rows["start_s"], rows["client"]
    order = np.argsort(start, kind="stable")  # each replica's rows are already in its own order
    s, cl = start[order], client[order]
    cross = np.flatnonzero((s[1:] == s[:-1]) & (cl[1:] != cl[:-1]))
    if not len(cross):
        return order

    def pusher(row: int) -> tuple:
        m = marks[row]
        if isinstance(m, tuple):
            return m[0], m[1], m[2], -1
        p = previous(row)
        return (start[p] if p >= 0 else -np.inf), 1, 0, p

    def compare(a: int, b: int) -> int:
        while True:
            ka, kb = pusher(a), pusher(b)
            if ka[:3] != kb[:3] or ka[3] < 0 or kb[3] < 0 or ka[3] == kb[3]:
                return -1 if ka < kb else (1 if ka > kb else 0)
            a, b = ka[3], kb[3]

    lo_done = -1
    for x in cross.tolist():  # each tie reordered in place (the order array stays NumPy: a million rows)
        if x < lo_done:
            continue
        lo, hi = x, x + 1
        while lo > 0 and s[lo - 1] == s[x]:
            lo -= 1
        while hi + 1 < len(s) and s[hi + 1] == s[x]:
            hi += 1
        groups: dict[int, list[int]] = {}
        for row in order[lo:hi + 1].tolist():
            groups.setdefault(int(client[row]), []).append(row)
        ranked = sorted(groups.values(), key=cmp_to_key(lambda ga, gb: compare(ga[0], gb[0])))
        order[lo:hi + 1] = [row for group in ranked for row in group]
        lo_done = hi + 1
    return order.astype(np.int64, copy=False)


def previous_iteration(client: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """Per row, the replica's last iteration row (not a preemption) before it (-1: none)."""
    by_client = client_order(client)
    c = client[by_client]
    position = np.arange(len(c))
    iteration = np.where(kind[by_client] != PREEMPT, position, -1)
    last = np.maximum.accumulate(np.concatenate([[-1], iteration[:-1]]))
    first_of_client = np.searchsorted(c, c, side="left")
    prev = np.full(len(c), -1, dtype=np.int64)
    ok = last >= first_of_client
    prev[ok] = by_client[last[ok]]
    out = np.empty(len(c), dtype=np.int64)
    out[by_client] = prev
    return out


def coefficients_record(models) -> list[dict]:
    """Per client, the linear coefficients the timeline's decode runs were computed with (zeros if not linear:
    such runs are single iterations, whose recorded times are kept)."""
    out = []
    for m in models:
        if type(m) is LinearCostModel:
            out.append(m.coefficients())
        else:
            out.append({"a_p": 0.0, "b_p": 0.0, "a_d": 0.0, "b_d": 0.0, "c_d": 0.0})
    return out


def general_bound(trace, n_clients, B, models, bound_model, kv, config: EngineConfig, block_keys):
    """The makespan lower bound valid for this engine configuration, and which term binds.

    Paged KV frees memory earlier than reservation, so the KV-aware terms (which assume ``l_i + o_i`` held
    throughout) are dropped; recompute only adds work.  With prefix caching a prompt may skip the blocks
    another request computed before it, and each shared block is computed at least once: see
    :func:`prefix_bound_prompts`.  A mixed fleet takes the fleet bounds of :mod:`workbench.schedule.fleet`.
    """
    bound_models = [bound_model] if same_models(models) else [linear_below(m) for m in models]
    if any(m is None for m in bound_models):
        return float("nan"), "none: the cost model states no linear lower model"
    if block_keys is None:
        return instance_bound(trace, n_clients, B, models, bound_models, kv, config)
    # Prefix caching: per-request terms on prompts less every block another request may have computed,
    # aggregate terms on prompts that also pay each shared block once (prefix_bound_prompts).
    # Only the columns a bound reads: the fleet bound re-reads its trace, whose prefix columns would not fit
    # the shortened prompts (a refusal the property tests found).
    trace = trace[[c for c in ("request_id", "input_tokens", "output_tokens", "arrival_s") if c in trace.columns]]
    alone_l, total_l = prefix_bound_prompts(trace["input_tokens"].to_numpy(np.int64),
                                            trace["output_tokens"].to_numpy(np.int64), block_keys, config.block_size)
    per = instance_bound(trace.assign(input_tokens=alone_l), n_clients, B, models, bound_models, kv, config, True)
    # Nothing shared (no prefix columns): both prompts are the same, and so is their bound.
    agg = (per if np.array_equal(alone_l, total_l) else
           instance_bound(trace.assign(input_tokens=total_l), n_clients, B, models, bound_models, kv, config, True))
    if per is None or agg is None:
        return float("nan"), None
    terms = {k: v for k, v in agg.terms.items() if k not in PER_REQUEST_TERMS}
    terms.update({k: v for k, v in per.terms.items() if k in PER_REQUEST_TERMS})
    binding = max(terms, key=terms.get)
    return _round_down(terms[binding]), binding


#: Bound terms that price single requests (or a pair); the others sum work over all requests.
PER_REQUEST_TERMS = ("single_request", "pair", "release_plus_alone")


def prefix_bound_prompts(l, o, block_keys, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Prompt tokens a bound may charge with prefix caching: (per request, for sums over requests).

    A block is skipped only if some request computed it before, so a key held by one request alone is
    computed by it, and each key held by several is computed at least once (by its first holder in time,
    unknown here).  Per request: ``r_i = l_i - bs * (its keys held by another)``, at least 1 (one token is
    always computed).  Summed: each shared key is also charged once, to its holder with the most output
    tokens (whose decodes read the most: the tightest choice); ``bs - 1`` tokens if a holder has
    ``r_i = 0``, because that holder's one computed token may lie in the key's block.  Never above ``l_i``.
    """
    counts = Counter(k for keys in block_keys for k in keys)
    if not counts or max(counts.values()) < 2:  # no key held twice: nothing skipped, nothing charged once
        alone = np.maximum(np.maximum(l, 0), 1)
        return alone, np.minimum(alone, l)
    shared = np.array([sum(counts[k] > 1 for k in keys) for keys in block_keys], dtype=np.int64)
    rest = np.maximum(l - shared * block_size, 0)
    on_zero = {k for keys, r in zip(block_keys, rest.tolist()) if r == 0 for k in keys}
    extra = np.zeros(len(l), dtype=np.int64)
    charged: set = set()
    for i in np.argsort(-o, kind="stable").tolist():
        for k in block_keys[i]:
            if counts[k] > 1 and k not in charged:
                charged.add(k)
                extra[i] += block_size - (k in on_zero)
    alone = np.maximum(rest, 1)
    return alone, np.minimum(alone + extra, l)


def instance_bound(bound_trace, n_clients, B, models, bound_models, kv, config: EngineConfig, terms: bool = False):
    """The bound of ``bound_trace`` for the engine's options: (value, binding), or the LowerBound if ``terms``."""
    caps = kv if config.kv == "reserve" else None
    if not same_models(models):  # a mixed fleet: the fleet bounds, which hold KV terms of no kind
        from workbench.schedule.fleet import chunked_fleet_lower_bound, fleet_lower_bound

        bound = (chunked_fleet_lower_bound(bound_trace, n_clients, B, bound_models, token_budget=config.token_budget)
                 if config.iteration == "mixed" else fleet_lower_bound(bound_trace, n_clients, B, bound_models))
    elif config.iteration == "mixed":
        bound = chunked_lower_bound(bound_trace, n_clients, B, bound_models[0], token_budget=config.token_budget,
                                    kv_capacity_tokens=caps)
    else:
        bound = best_lower_bound(bound_trace, n_clients, B, bound_models[0], kv_capacity_tokens=caps
                                 if caps is not None else [None] * n_clients)
    if terms:
        return bound
    return (bound.value_s, bound.binding) if bound is not None else (float("nan"), None)


def assemble(trace, segments, members, per_request, models, B, n_clients, policy_name, params, lower_bound_s,
              kv) -> Schedule:
    seg_client, seg_kind, seg_k = segments["client"], segments["kind"], segments["k"]
    seg_n, seg_tok = segments["n"], segments["tokens"]
    order, first_iter = first_iterations(seg_client, seg_k)
    decode = seg_kind == DECODE
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
    same = same_models(models)
    if lower_bound_s is None:
        if bound_model is None:
            bound = None  # a measured model that states no linear model below it: no bound is claimed
        else:
            bound = (best_lower_bound(trace, n_clients, B, bound_model, kv_capacity_tokens=kv) if same
                     else fleet_bound(trace, n_clients, B, models))
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


def fleet_bound(trace, n_clients, B, models):
    """Per-client cost models: the mixed-fleet bound of :mod:`workbench.schedule.fleet` (linear models only)."""
    if not all(isinstance(m, LinearCostModel) for m in models):
        return None
    from workbench.schedule.fleet import fleet_lower_bound

    return fleet_lower_bound(trace, n_clients, B, models)


def linear_below(model):
    """The linear model a bound may price ``model`` with: itself, or the one it states below it (or None)."""
    return model if type(model) is LinearCostModel else getattr(model, "bound_model", lambda: None)()


def same_models(models) -> bool:
    return all(m == models[0] for m in models)


def unserved_error(unserved, client_of, kv, l, o, trace) -> Exception:
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
