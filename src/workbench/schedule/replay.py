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
* ``kv-blocks``: at every row the blocks the admitted requests hold (their
  computed, uncached tokens in blocks of ``block_size``) never exceed the capacity;
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


def validate_paged(tl: pd.DataFrame, rq: pd.DataFrame, metrics: dict, models: list, B: np.ndarray, clients: int,
                   report, *, close, examples, abs_tol_s: float) -> None:
    """Replay a schedule's rows client by client and add every violation to ``report``.

    Paged schedules (``metrics.kv_mode = "paged"``) and schedules of a cost model that is not linear (whose
    durations depend on each row's contexts) are checked this way; with reserved KV the capacity rule is the
    tokens reserved (``l_i + o_i`` from admission to the last token), and prefill rows compute whole prompts.
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
    for column in ("prefill_ids", "prefill_tokens", "prefill_prior"):
        if column not in tl.columns:
            tl = tl.assign(**{column: ""})
    budget = metrics.get("token_budget")
    cap_blocks = [math.inf if c is None else int(c) // block for c in caps]
    ids = rq["request_id"].astype(str).tolist()
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
                    computed[i] = cached[i] = 0
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
                P += t
                Q += q
                if computed[i] > need[i]:
                    bad["recompute"].append(f"{where}: {ids[i]} computes {computed[i]} prompt tokens of {need[i]}")
            if kind == "prefill" and any(computed[i] != need[i] for i, _, _ in pieces):
                bad["recompute"].append(f"{where}: a prefill row computes whole prompts (plus generated tokens)")
            # During the row: the decoding requests each write one more token, the pieces have computed theirs.
            if len(decoding) + len(prefilling) > B[j]:
                bad["batch-capacity"].append(where)
            # Blocks held: every admitted request's KV tokens less its cached part (shared cached blocks may
            # count once for several requests, so this is a floor on the blocks in use: it never over-counts).
            writes = 0 if kind == "prefill" else 1  # a prefill stage writes no decode token
            if paged:
                held = sum(-(-(l[i] + generated[i] - 1 + writes - cached[i]) // block) for i in decoding)
                held += sum(-(-(computed[i] - cached[i]) // block) for i in prefilling)
            else:  # reserved: l + o tokens per admitted request
                held = sum(l[i] + o[i] for i in decoding) + sum(l[i] + o[i] for i in prefilling)
            if held > cap_blocks[j]:
                bad["kv-blocks"].append(f"{where}: {held} blocks > {cap_blocks[j]}")
            for i in (list(decoding) if kind != "prefill" else ()):  # a prefill stage advances no decode
                generated[i] += 1
                if generated[i] >= o[i]:
                    state[i], finish[i] = "finished", row.end_s
                    decoding.discard(i)
            for i, _, _ in pieces:
                if state[i] == "prefilling" and computed[i] == need[i]:
                    prefilling.discard(i)
                    generated[i] += 1  # a completed prompt yields a token
                    if math.isnan(first_token[i]):
                        first_token[i] = row.end_s
                    if generated[i] >= o[i]:
                        state[i], finish[i] = "finished", row.end_s
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
                    expected = float(cost.iteration_time(row.n_requests, row.tokens, [t for _, t, _ in pieces],
                                                         [q for _, _, q in pieces], **extra))
                if not close(row.end_s - row.start_s, expected):
                    bad["duration"].append(f"{where} ({row.end_s - row.start_s:.9g} s != {expected:.9g} s)")
            if linear:
                if kind == "prefill":
                    expected = cost.a_p + cost.b_p * row.tokens
                elif pieces:
                    expected = (max(cost.a_p, cost.a_d) + cost.b_d * row.n_requests + cost.c_d * (row.tokens + Q)
                                + cost.b_p * P)
                else:
                    expected = cost.a_d + cost.b_d * row.n_requests + cost.c_d * row.tokens
                if not close(row.end_s - row.start_s, expected):
                    bad["duration"].append(f"{where} ({row.end_s - row.start_s:.9g} s != {expected:.9g} s)")
            if kind != "prefill" and isinstance(budget, int) and not isinstance(budget, bool) \
                    and row.n_requests + P > budget:
                bad["paged-tokens"].append(f"{where}: {row.n_requests + P} tokens > token_budget {budget}")
    for i in range(n):
        if state[i] != "finished":
            bad["paged-tokens"].append(f"{ids[i]} ends {state[i]} with {generated[i]} of {o[i]} tokens")
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

