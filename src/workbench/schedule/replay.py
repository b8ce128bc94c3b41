"""Validation of schedules with paged KV memory: the rules checked by replaying each client's rows in order.

A paged schedule (``metrics.kv_mode == "paged"``, MODEL.md section 11) may
preempt a running request (a ``preempt`` row: a moment, ``start_s ==
end_s``, ``iteration = -1``), which later prefills again over its prompt
plus the tokens it had generated, and with prefix caching a prompt may skip
cached blocks.  So a request can prefill more than once and its rows are not
a single prefill followed by decodes: the vectorised rules of
:mod:`workbench.schedule.validator` do not apply, and the same contract is
checked by a replay, one state machine per request:

``waiting -> prefilling -> decoding -> finished``, back to ``waiting`` at a
preemption.  Replayed, a schedule must satisfy:

* ``paged-rows``: preempt rows are moments that list only running requests;
  every decode and mixed row lists exactly the client's decoding requests
  (each advances); prefill rows and chunks take only waiting or prefilling ones;
* ``recompute``: each admission prefills exactly the prompt plus the tokens
  generated before it (``l_i + g``), less a cached part that is smaller than
  it (and whole blocks, or none without prefix caching).  Paged schedules list
  every prompt piece a prefill or mixed row computes in ``prefill_ids``,
  ``prefill_tokens`` and ``prefill_prior`` (the tokens of that prompt already
  in the KV cache before the piece: the cached part at admission, then what
  earlier chunks computed);
* ``paged-tokens``: every request yields exactly ``output_tokens`` tokens (one
  per completed prompt, one per decode); decode context tokens are ``l_i + g``
  summed over the row; prefill rows hold the tokens they compute;
* ``recompute`` also, given the trace: a cached part is blocks computed
  earlier on that client that the trace's prefix columns let the request
  share (:func:`shared_block_keys`), or its own blocks from before a preemption;
* ``kv-blocks``: at every row the blocks the admitted requests reference (a
  shared cached block once, however many reference it and whether or not the
  request that computed it still runs) never exceed the capacity; without the
  trace, a floor (the uncached blocks, or the largest request);
* plus batch capacity, durations under the linear cost model and the
  per-request times, as for every schedule.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from workbench.costmodel.linear import takes_longest_context

#: The rules this module checks (the validator lists them with its own).
PAGED_RULES = ("paged-rows", "recompute", "paged-tokens", "kv-blocks")


def shared_block_keys(trace: pd.DataFrame | None, ids: list[str], block: int) -> list[list] | None:
    """Per request of ``ids``, the keys of its prompt blocks that lie wholly inside a prefix it may share.

    Derived from the trace's prefix columns (MODEL.md section 7), independently of the engine: with
    ``prefix_id`` + ``prefix_tokens`` the first ``prefix_tokens // block`` blocks; with ``prefix_hashes``
    a block is keyed by the hash of the hash block that holds its *last* token (the hash stands for the
    whole prompt up to its block's end), so a block straddling into an unshared hash block is not shared.
    None when there is no trace or it holds other requests: then what a cache may hold is not known.
    """
    if trace is None:
        return None
    row_of = {rid: k for k, rid in enumerate(trace["request_id"].astype(str))}
    if len(row_of) != len(ids) or any(rid not in row_of for rid in ids):
        return None
    rows = [row_of[rid] for rid in ids]
    inputs = trace["input_tokens"].to_numpy(np.int64)
    if "prefix_id" in trace.columns:
        pid, ptok = trace["prefix_id"].astype(str).tolist(), trace["prefix_tokens"].to_numpy(np.int64)
        return [[("p", pid[r], b) for b in range(int(ptok[r]) // block)] if pid[r] else [] for r in rows]
    if "prefix_hashes" in trace.columns:
        hashes, per = trace["prefix_hashes"].astype(str).tolist(), trace["prefix_block_tokens"].to_numpy(np.int64)
        keys = []
        for r in rows:
            chain, hb = hashes[r].split(), int(per[r])
            covered = min(len(chain) * hb, int(inputs[r]))  # the last hash block may be partial
            keys.append([("h", chain[((b + 1) * block - 1) // hb], b) for b in range(covered // block)])
        return keys
    return [[] for _ in rows]


class _PrefixCache:
    """One client's cache as far as the trace tells: which blocks were computed, which are referenced.

    A block is keyed by :func:`shared_block_keys` inside a shared prefix, else privately ``("own", i, b)``
    (so a recompute can hit its own earlier blocks).  ``shared`` None: the trace is not known, and the
    cached parts cannot be checked.
    """

    def __init__(self, shared: list[list] | None) -> None:
        self.shared = shared
        self.present: set = set()  # keys of blocks computed on this client (a later admission may hit them)
        self.refs: dict = {}  # shared key -> admitted requests referencing it
        self.referenced: dict[int, int] = {}  # request -> how many of its leading shared keys it references
        self.registered: dict[int, int] = {}  # request -> its leading blocks added to present, this admission

    def key(self, i: int, b: int):
        own = self.shared[i]
        return own[b] if b < len(own) else ("own", i, b)

    def missing_hit(self, i: int, hit_blocks: int) -> int | None:
        """The first of request i's ``hit_blocks`` leading blocks that was never computed here, if any."""
        if self.shared is None:
            return None
        return next((b for b in range(hit_blocks) if self.key(i, b) not in self.present), None)

    def computed(self, i: int, full_blocks: int) -> None:
        """Request i's first ``full_blocks`` blocks are in the cache (computed, or hit)."""
        if self.shared is None:
            return
        for b in range(self.registered.get(i, 0), full_blocks):
            self.present.add(self.key(i, b))
        self.registered[i] = max(full_blocks, self.registered.get(i, 0))

    def hold(self, i: int, blocks: int) -> int:
        """Request i references its first ``blocks`` blocks; returns how many of them are private."""
        own = self.shared[i]
        now, before = min(len(own), blocks), self.referenced.get(i, 0)
        for key in own[before:now]:
            self.refs[key] = self.refs.get(key, 0) + 1
        for key in own[now:before]:
            left = self.refs.pop(key) - 1
            if left:
                self.refs[key] = left
        self.referenced[i] = now
        return blocks - now

    def release(self, i: int) -> None:
        """Request i is preempted or finished: it references nothing (its blocks stay computed)."""
        if self.shared is not None:
            self.hold(i, 0)
        self.registered[i] = 0

    def blocks_in_use(self, blocks: dict[int, int], uncached: dict[int, int]) -> int:
        """Blocks the admitted requests reference, a shared one once (``blocks``: request -> its blocks).

        Without the trace the sharing is not known; then a floor: the requests' uncached blocks, or the
        largest single request, whichever is more.
        """
        if self.shared is None:
            return max(sum(uncached.values()), max(blocks.values(), default=0))
        return sum(self.hold(i, b) for i, b in blocks.items()) + len(self.refs)


def validate_paged(tl: pd.DataFrame, rq: pd.DataFrame, metrics: dict, models: list, B: np.ndarray, clients: int,
                   report, *, close, examples, abs_tol_s: float, trace: pd.DataFrame | None = None) -> None:
    """Replay a schedule's rows client by client and add every violation to ``report``.

    Paged schedules (``metrics.kv_mode = "paged"``) and schedules of a cost model that is not linear (whose
    durations depend on each row's contexts) are checked this way; with reserved KV the capacity rule is the
    tokens reserved (``l_i + o_i`` from admission to the last token), and prefill rows compute whole prompts.
    With ``trace``, cached parts are checked against the prefixes its prefix columns share.
    """
    paged = metrics.get("kv_mode") == "paged"
    block = metrics.get("block_size", 1 if not paged else None)
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        report.add("schema", f"metrics.block_size is {block!r}; a paged schedule states its block size (tokens)")
        return
    caching = metrics.get("prefix_caching", False)
    if not isinstance(caching, bool):
        report.add("schema", f"metrics.prefix_caching is {caching!r}, not true or false")
        return
    # vLLM caches a block when it is scheduled: a later piece of the same row may hit an earlier one's blocks.
    at_schedule = metrics.get("cache_at_schedule") is True
    # Replicas in lockstep (an expert-parallel data-parallel group) wait for the slowest: a row may last longer
    # than its own iteration, never shorter.
    lockstep = metrics.get("dp_lockstep") is True

    def wrong_duration(got: float, expected: float) -> bool:
        return (got < expected and not close(got, expected)) if lockstep else not close(got, expected)

    caps = metrics.get("kv_capacity_tokens")
    caps = caps if isinstance(caps, list) else [caps] * clients
    if len(caps) != clients or any(isinstance(c, bool) or not isinstance(c, (int, float)) for c in caps
                                   if c is not None) or (paged and any(c is None for c in caps)):
        report.add("schema", f"metrics.kv_capacity_tokens is {metrics.get('kv_capacity_tokens')!r}; a paged "
                   "schedule states one capacity per client")
        return
    if paged and not {"prefill_ids", "prefill_tokens", "prefill_prior"} <= set(tl.columns):
        report.add("schema", "a paged schedule lists its prompt pieces in prefill_ids, prefill_tokens and "
                   "prefill_prior")
        return
    wanted = ("preemptions", "recomputed_tokens") + (("cached_tokens",) if caching else ())
    lacking = [c for c in wanted if c not in rq.columns] if paged else []
    if lacking:
        report.add("schema", f"a paged schedule's requests table holds {', '.join(wanted)}; it lacks "
                   f"{', '.join(lacking)} (MODEL.md section 9)")
        return
    for column in ("prefill_ids", "prefill_tokens", "prefill_prior"):
        if column not in tl.columns:
            tl = tl.assign(**{column: ""})
    budget = metrics.get("token_budget")
    cap_blocks = [math.inf if c is None else int(c) // block for c in caps]
    ids = rq["request_id"].astype(str).tolist()
    # Without prefix caching nothing is shared: every block private (and no cached part is allowed anyway).
    shared = shared_block_keys(trace, ids, block) if caching else [[] for _ in ids]
    index_of = {rid: k for k, rid in enumerate(ids)}
    l = rq["input_tokens"].to_numpy(np.int64).tolist()
    o = rq["output_tokens"].to_numpy(np.int64).tolist()
    req_client = rq["client"].to_numpy(np.int64).tolist()
    n = len(ids)
    for rule in ("iterations", "no-overlap", "ids", "same-client", "batch-capacity", "duration", "request-times",
                 *PAGED_RULES):
        if rule not in report.checked:
            report.checked.append(rule)
    state = ["waiting"] * n
    generated = [0] * n
    computed = [0] * n  # prompt tokens in the KV cache in the admission in progress (cached part included)
    need = [0] * n
    cached = [0] * n  # the cached part of the admission in progress
    cached_total = [0] * n
    recomputed_total = [0] * n  # tokens computed by admissions after a preemption (MODEL.md section 11)
    preempted = [0] * n  # preempt rows that list the request
    prefill_start = [math.nan] * n
    first_token = [math.nan] * n
    finish = [math.nan] * n
    bad: dict[str, list] = {r: [] for r in ("iterations", "no-overlap", "ids", "same-client", "batch-capacity",
                                            "duration", *PAGED_RULES)}
    tl = tl.assign(_order=np.arange(len(tl)), _pre=(tl["kind"] != "preempt").astype(int))
    for j in range(clients):
        # Rows in time order; a preempt row sits at the boundary before the iteration that starts then.
        rows = tl[tl["client"] == j].sort_values(["start_s", "_pre", "_order"], kind="stable")
        expected_iter = 0
        last_end = -math.inf
        decoding: set[int] = set()
        cache = _PrefixCache(shared)
        prefilling: set[int] = set()
        cost = models[j]
        linear = all(hasattr(cost, k) for k in ("a_p", "b_p", "a_d", "b_d", "c_d"))
        for row in rows.itertuples(index=False):
            where = f"client {j} iteration {row.iteration}"
            kind = row.kind
            members = [index_of.get(x, -1) for x in str(row.request_ids).split()] \
                if isinstance(row.request_ids, str) else []
            if any(i < 0 for i in members) or len(members) != row.n_requests or len(set(members)) != len(members):
                bad["ids"].append(where)
                continue
            bad["same-client"] += [ids[i] for i in members if req_client[i] != j]
            if kind == "preempt":
                if row.iteration != -1 or not close(row.start_s, row.end_s):
                    bad["paged-rows"].append(f"{where}: a preempt row is a moment with iteration -1")
                freed = 0
                for i in members:
                    if state[i] == "decoding":
                        freed += l[i] + generated[i] - 1
                        decoding.discard(i)
                    elif state[i] == "prefilling":
                        freed += computed[i] - cached[i]
                        prefilling.discard(i)
                    else:
                        bad["paged-rows"].append(f"{where}: preempts {ids[i]}, which is {state[i]}")
                        continue
                    state[i] = "waiting"
                    preempted[i] += 1
                    computed[i] = cached[i] = 0
                    cache.release(i)
                continue
            if row.iteration != expected_iter:
                bad["iterations"].append(where)
            expected_iter = row.iteration + 1
            if not row.end_s > row.start_s or (row.start_s < last_end and not close(row.start_s, last_end)):
                bad["no-overlap"].append(where)
            last_end = row.end_s
            pids = str(row.prefill_ids).split() if isinstance(row.prefill_ids, str) else []
            ptok = str(row.prefill_tokens).split() if isinstance(row.prefill_tokens, str) else []
            pprior = str(row.prefill_prior).split() if isinstance(row.prefill_prior, str) else []
            if not paged:
                # Reserved KV: prefill rows compute whole prompts, a chunk reads what earlier chunks computed.
                if kind == "prefill" and not pids:
                    pids = [ids[i] for i in members]
                    ptok = [str(l[i] + generated[i]) for i in members]
                if not pprior:
                    pprior = [str(computed[index_of[rid]] if index_of.get(rid, -1) >= 0
                                  and state[index_of[rid]] == "prefilling" else 0) for rid in pids]
            if not len(pids) == len(ptok) == len(pprior) or not all(x.isdigit() for x in ptok + pprior):
                bad["ids"].append(f"{where}: prefill_ids, prefill_tokens and prefill_prior do not align")
                continue
            pieces = [(index_of.get(rid, -1), int(t), int(q)) for rid, t, q in zip(pids, ptok, pprior)]
            if any(i < 0 or t < 1 for i, t, _ in pieces):
                bad["ids"].append(f"{where}: a prompt piece of an unknown request or of no token")
                continue
            if kind == "prefill":
                if sorted(i for i, _, _ in pieces) != sorted(members):
                    bad["paged-rows"].append(f"{where}: a prefill row's pieces are its requests")
                if sum(t for _, t, _ in pieces) != row.tokens:
                    bad["paged-tokens"].append(f"{where}: tokens {row.tokens} != the pieces' sum")
            elif kind in ("decode", "mixed"):
                if (kind == "decode") != (not pieces):
                    bad["paged-rows"].append(f"{where}: a decode row has no pieces, a mixed row has some")
                if set(members) != decoding:
                    missing = sorted(ids[i] for i in decoding - set(members))[:3]
                    extra = sorted(ids[i] for i in set(members) - decoding)[:3]
                    bad["paged-rows"].append(f"{where}: every decoding request decodes (missing {missing}, "
                                             f"not decoding {extra})")
                context = sum(l[i] + generated[i] for i in members)
                if context != row.tokens:
                    bad["paged-tokens"].append(f"{where}: context tokens {row.tokens} != {context}")
            else:
                bad["paged-rows"].append(f"{where}: kind {kind!r}")
                continue
            P = Q = 0
            for i, t, q in pieces:
                if state[i] == "waiting":
                    need[i] = l[i] + generated[i]
                    if not (0 <= q < need[i]) or (q % block) or (q and not caching):
                        bad["recompute"].append(f"{where}: {ids[i]} is admitted with {q} cached tokens of "
                                                f"{need[i]} (whole blocks below its need, none without caching)")
                    missing = cache.missing_hit(i, q // block) if q else None
                    if missing is not None:
                        bad["recompute"].append(f"{where}: {ids[i]} is admitted with {q} cached tokens, but its "
                                                f"block {missing} (tokens {missing * block}..{(missing + 1) * block})"
                                                f" is not in the cache: no earlier request on client {j} computed "
                                                "it, and the trace shares no such prefix")
                    state[i], computed[i], cached[i] = "prefilling", q, q
                    cached_total[i] += q
                    prefilling.add(i)
                    if math.isnan(prefill_start[i]):
                        prefill_start[i] = row.start_s
                elif state[i] != "prefilling" or q != computed[i]:
                    bad["recompute"].append(f"{where}: a piece of {ids[i]} ({state[i]}) after {q} tokens, "
                                            f"not {computed[i]}")
                    continue
                computed[i] += t
                if at_schedule:
                    cache.computed(i, computed[i] // block)
                if preempted[i]:
                    recomputed_total[i] += t
                P += t
                Q += q
                if computed[i] > need[i]:
                    bad["recompute"].append(f"{where}: {ids[i]} computes {computed[i]} prompt tokens of {need[i]}")
            if kind == "prefill" and any(computed[i] != need[i] for i, _, _ in pieces):
                bad["recompute"].append(f"{where}: a prefill row computes whole prompts (plus generated tokens)")
            # During the row: the decoding requests each write one more token, the pieces have computed theirs.
            if len(decoding) + len(prefilling) > B[j]:
                bad["batch-capacity"].append(where)
            # Blocks held: every block an admitted request references, a shared cached one once however many
            # reference it and however long ago the request that computed it finished.
            writes = 0 if kind == "prefill" else 1  # a prefill stage writes no decode token
            if paged:
                kv = {i: l[i] + generated[i] - 1 + writes for i in decoding} | {i: computed[i] for i in prefilling}
                held = cache.blocks_in_use({i: -(-t // block) for i, t in kv.items()},
                                           {i: -(-(t - cached[i]) // block) for i, t in kv.items()})
            else:  # reserved: l + o tokens per admitted request
                held = sum(l[i] + o[i] for i in decoding) + sum(l[i] + o[i] for i in prefilling)
            if held > cap_blocks[j]:
                bad["kv-blocks"].append(f"{where}: {held} blocks > {cap_blocks[j]}")
            for i in (list(decoding) if kind != "prefill" else ()):  # a prefill stage advances no decode
                generated[i] += 1
                cache.computed(i, (l[i] + generated[i] - 1) // block)
                if generated[i] >= o[i]:
                    state[i], finish[i] = "finished", row.end_s
                    decoding.discard(i)
                    cache.release(i)
            for i, _, _ in pieces:
                cache.computed(i, computed[i] // block)
                if state[i] == "prefilling" and computed[i] == need[i]:
                    prefilling.discard(i)
                    generated[i] += 1  # a completed prompt yields a token
                    if math.isnan(first_token[i]):
                        first_token[i] = row.end_s
                    if generated[i] >= o[i]:
                        state[i], finish[i] = "finished", row.end_s
                        cache.release(i)
                    else:
                        state[i] = "decoding"
                        decoding.add(i)
            if not linear and hasattr(cost, "iteration_time"):
                # A measured (non-linear) model: the engine's own call, with the pieces and the longest context.
                if kind == "prefill":  # an exclusive prefill stage is priced on its tokens, as the engine does
                    expected = float(cost.prefill_time(row.tokens))
                else:
                    longest = max((l[i] + generated[i] - 1 for i in members), default=0)
                    extra = {"decode_max_context_tokens": longest} if takes_longest_context(cost) else {}
                    if lockstep and getattr(cost, "experts", None) is not None:
                        # its expert layers computed at least its own tokens (the group's: more, and longer)
                        extra["gathered_tokens"] = row.n_requests + P
                    expected = float(cost.iteration_time(row.n_requests, row.tokens, [t for _, t, _ in pieces],
                                                         [q for _, _, q in pieces], **extra))
                if wrong_duration(row.end_s - row.start_s, expected):
                    bad["duration"].append(f"{where} ({row.end_s - row.start_s:.9g} s != {expected:.9g} s)")
            if linear:
                if kind == "prefill":
                    expected = cost.a_p + cost.b_p * row.tokens
                elif pieces:
                    expected = (max(cost.a_p, cost.a_d) + cost.b_d * row.n_requests + cost.c_d * (row.tokens + Q)
                                + cost.b_p * P)
                else:
                    expected = cost.a_d + cost.b_d * row.n_requests + cost.c_d * row.tokens
                if wrong_duration(row.end_s - row.start_s, expected):
                    bad["duration"].append(f"{where} ({row.end_s - row.start_s:.9g} s != {expected:.9g} s)")
            if kind != "prefill" and isinstance(budget, int) and not isinstance(budget, bool) \
                    and row.n_requests + P > budget:
                bad["paged-tokens"].append(f"{where}: {row.n_requests + P} tokens > token_budget {budget}")
    for i in range(n):
        if state[i] != "finished":
            bad["paged-tokens"].append(f"{ids[i]} ends {state[i]} with {generated[i]} of {o[i]} tokens")
    if "preemptions" in rq.columns:
        wrong = np.flatnonzero(rq["preemptions"].to_numpy(np.int64) != np.array(preempted, dtype=np.int64))
        if len(wrong):
            bad["paged-rows"].append(f"requests.preemptions disagrees with the preempt rows for "
                                     f"{examples(np.array(ids)[wrong])}")
    if "recomputed_tokens" in rq.columns:
        wrong = np.flatnonzero(rq["recomputed_tokens"].to_numpy(np.int64)
                               != np.array(recomputed_total, dtype=np.int64))
        if len(wrong):
            bad["recompute"].append(f"requests.recomputed_tokens disagrees with the pieces computed after a "
                                    f"preemption for {examples(np.array(ids)[wrong])}")
    if "cached_tokens" in rq.columns:
        wrong = np.flatnonzero(rq["cached_tokens"].to_numpy(np.int64) != np.array(cached_total, dtype=np.int64))
        if len(wrong):
            bad["recompute"].append(f"requests.cached_tokens disagrees with the pieces for "
                                    f"{examples(np.array(ids)[wrong])}")
    for rule, items in bad.items():
        if items:
            report.add(rule, examples(items))
    checks = {"prefill_start_s": prefill_start, "first_token_s": first_token, "finish_s": finish}
    for column, value in checks.items():
        wrong = np.flatnonzero(~close(rq[column].to_numpy(float), np.array(value, dtype=float)))
        if len(wrong):
            report.add("request-times", f"{column} disagrees with the timeline for {examples(np.array(ids)[wrong])}")
    early = np.flatnonzero(rq["prefill_start_s"].to_numpy(float) < rq["arrival_s"].to_numpy(float) - abs_tol_s)
    if len(early):
        report.add("request-times", "prefilled before arrival: " + examples(np.array(ids)[early]))

