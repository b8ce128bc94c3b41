"""Validation of schedules of pooled fleets (prefill and decode replicas, KV transfers; MODEL.md section 9).

A pooled schedule (``metrics.roles`` names a ``prefill`` or ``decode`` replica) breaks the colocated
rule ``same-client`` by design: a request is prefilled on one replica (``requests.prefill_client``),
its KV cache moves over a link (one row of ``transfers.csv``) and it decodes on another
(``requests.client``).  Its rules are checked by a replay, request by request and client by client, from
the files alone:

* ``pools``: prefill rows only on ``prefill`` or ``mixed`` replicas and decode rows only on ``decode`` or
  ``mixed`` ones, except a decode replica's recompute of a request preempted there (paged KV); a request
  prefilled on a ``mixed`` replica stays there;
* ``transfer``: each request prefilled on a ``prefill`` replica with ``o_i > 1`` has exactly one transfer,
  from its prefill client to its decode client, starting at or after its first token, lasting the link's
  time for its tokens (``latency + tokens x kv_bytes_per_token / (bandwidth x efficiency x GPUs)``), its
  tokens at most ``l_i`` (exactly ``l_i`` without prefix caching) and its bytes ``tokens x kv_bytes_per_token``;
  with ``transfer_overlap`` false no decode row of the receiving replica overlaps one of its transfers;
* ``decode-all`` (and decode before the transfer ends): a request decodes on its decode replica only in rows
  starting at or after its transfer's end, and from its first decode to its last every decode row of that
  replica lists it (except while it is preempted);
* ``transfer-memory`` (and ``kv-capacity``): the KV memory each client holds never exceeds its capacity at
  any row start or transfer start, counting a prompt on its prefill replica from its prefill to its
  transfer's end and on its decode replica from its transfer's start (reserved ``l_i`` on the prefill
  replica and ``l_i + o_i`` on the decode one; paged: the blocks of its tokens, less its cached blocks);
* ``batch-capacity``, ``decode-count`` (decodes plus recomputes yield ``o_i - 1`` tokens after the first),
  ``tokens`` and ``duration`` (linear cost models), ``request-times``, ``metrics`` (the makespan,
  utilizations, transfer totals and the pooled bound recompute; the bound is at most the makespan).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

from workbench.costmodel.linear import LinearCostModel
from workbench.schedule.schema import TRANSFER_COLUMNS

POOL_RULES = ("pools", "transfer", "transfer-memory")


def is_pooled(metrics: dict) -> bool:
    roles = metrics.get("roles")
    return isinstance(roles, list) and any(r in ("prefill", "decode") for r in roles)


class _Check:
    """The report, the tolerance and the helpers every rule shares."""

    def __init__(self, report, close, examples, abs_tol_s: float) -> None:
        self.report, self.close, self.examples, self.tol = report, close, examples, abs_tol_s

    def add(self, rule: str, what: str, items) -> None:
        items = list(items)
        if items:
            self.report.add(rule, f"{what}: {self.examples(items)}")


def _link_s(metrics: dict, tokens: np.ndarray) -> np.ndarray:
    link = metrics["link"]
    rate = float(link["bandwidth_bytes_per_s"]) * float(link["efficiency"]) * int(metrics.get("gpus_per_replica", 1))
    moved = np.zeros(len(tokens)) if np.isinf(rate) else tokens * float(metrics["kv_bytes_per_token"]) / rate
    return float(link["latency_s"]) + moved


def validate_pooled(tl: pd.DataFrame, rq: pd.DataFrame, transfers: pd.DataFrame | None, metrics: dict, models: list,
                    B: np.ndarray, clients: int, report, *, close, examples, abs_tol_s: float,
                    checked) -> dict:
    """Every rule of a pooled schedule (see the module docstring); returns the recomputed metrics."""
    ck = _Check(report, close, examples, abs_tol_s)
    checked(report, "schema")
    roles = metrics["roles"]
    if len(roles) != clients or any(r not in ("mixed", "prefill", "decode") for r in roles):
        report.add("schema", f"metrics.roles must give one of mixed, prefill, decode for each of {clients} clients")
        return {}
    for key in ("link", "kv_bytes_per_token"):
        if key not in metrics:
            report.add("schema", f"a pooled schedule records metrics.{key}")
            return {}
    if transfers is None:
        transfers = pd.DataFrame({c: [] for c in TRANSFER_COLUMNS})
    if "prefill_client" not in rq.columns:
        report.add("schema", "a pooled schedule's requests.csv has the column prefill_client")
        return {}
    ids = rq["request_id"].astype(str).tolist()
    index_of = {rid: k for k, rid in enumerate(ids)}
    tl = tl.copy()
    tl["_pos"] = np.arange(len(tl))
    tl = tl.sort_values(["client", "_pos"], kind="stable").reset_index(drop=True)
    rows = _listed(tl, index_of, report)
    if rows is None:
        return {}
    xf = _transfers(transfers, index_of, rq, roles, metrics, ck, checked)
    _rows_rules(tl, rows, rq, roles, xf, metrics, models, B, ck, checked)
    _memory(tl, rows, rq, roles, xf, metrics, ck, checked)
    return _recompute_metrics(tl, rq, transfers, metrics, B, clients, ck, checked)


def _listed(tl: pd.DataFrame, index_of: dict, report) -> list | None:
    """Per row: its kind, its requests (rows of requests.csv) and, for prefill rows, its pieces."""
    out = []
    has_pieces = "prefill_tokens" in tl.columns
    for r in tl.itertuples(index=False):
        text = r.request_ids if isinstance(r.request_ids, str) else ""
        members = []
        for rid in text.split():
            if rid not in index_of:
                report.add("ids", f"client {r.client} lists {rid!r}, which requests.csv does not hold")
                return None
            members.append(index_of[rid])
        if len(members) != int(r.n_requests):
            report.add("ids", f"client {r.client} iteration {r.iteration}: n_requests differs from its ids")
            return None
        pieces = None
        if has_pieces and r.kind == "prefill" and isinstance(r.prefill_tokens, str) and r.prefill_tokens.strip():
            prior = r.prefill_prior if isinstance(getattr(r, "prefill_prior", ""), str) else ""
            piece_ids = [index_of.get(x, -1) for x in str(r.prefill_ids).split()]
            sizes = [int(x) for x in r.prefill_tokens.split()]
            priors = [int(x) for x in prior.split()] if prior.strip() else [0] * len(sizes)
            if sorted(piece_ids) != sorted(members) or len(sizes) != len(piece_ids) or len(priors) != len(sizes):
                report.add("ids", f"client {r.client} iteration {r.iteration}: prefill_ids, prefill_tokens and "
                           "prefill_prior do not list the row's requests once each")
                return None
            pieces = {i: (a, b) for i, a, b in zip(piece_ids, sizes, priors)}
        out.append((r.kind, members, pieces))
    return out


def _transfers(transfers: pd.DataFrame, index_of: dict, rq: pd.DataFrame, roles: list, metrics: dict, ck: _Check,
               checked) -> dict:
    """Rule ``transfer`` on the transfers table; returns request -> (from, to, start, end, tokens)."""
    checked(ck.report, "pools", "transfer")
    n = len(rq)
    l, o = rq["input_tokens"].to_numpy(), rq["output_tokens"].to_numpy()
    client, pclient = rq["client"].to_numpy(), rq["prefill_client"].to_numpy()
    first = rq["first_token_s"].to_numpy(float)
    req = np.array([index_of.get(str(x), -1) for x in transfers["request_id"]], dtype=np.int64)
    ck.add("transfer", "transfers of requests requests.csv does not hold",
           transfers["request_id"].astype(str)[req < 0])
    counts = np.bincount(req[req >= 0], minlength=n)
    role = np.array(roles, dtype=object)
    expected = (role[pclient] == "prefill") & (o > 1)
    ck.add("transfer", "each request prefilled on a prefill replica with o > 1 has one transfer, others none; "
           "not so for", (rq["request_id"].astype(str)[(counts != expected)].tolist()))
    ck.add("pools", "a request prefilled on a mixed replica decodes there",
           rq["request_id"].astype(str)[(role[pclient] == "mixed") & (client != pclient)])
    ck.add("pools", "a transferred request decodes on a decode replica",
           rq["request_id"].astype(str)[expected & (role[client] != "decode")])
    fr, to = transfers["from_client"].to_numpy(np.int64), transfers["to_client"].to_numpy(np.int64)
    start, end = transfers["start_s"].to_numpy(float), transfers["end_s"].to_numpy(float)
    tokens, nbytes = transfers["tokens"].to_numpy(np.int64), transfers["bytes"].to_numpy(float)
    ok = req >= 0
    r = np.where(ok, req, 0)
    label = transfers["request_id"].astype(str).to_numpy()
    ck.add("transfer", "a transfer goes from the request's prefill client to its decode client",
           label[ok & ((fr != pclient[r]) | (to != client[r]))])
    ck.add("transfer", "a transfer starts before the request's first token",
           label[ok & (start < first[r]) & ~ck.close(start, first[r])])
    caching = bool(metrics.get("prefix_caching"))
    ck.add("transfer", "a transfer moves at most the prompt (all of it without prefix caching)",
           label[ok & ((tokens > l[r]) | (tokens < 0) | ((tokens != l[r]) & (not caching)))])
    ck.add("transfer", "a transfer lasts the link's time for its tokens",
           label[~ck.close(end - start, _link_s(metrics, tokens.astype(float)))])
    ck.add("transfer", "a transfer's bytes are its tokens times kv_bytes_per_token",
           label[~ck.close(nbytes, tokens * float(metrics["kv_bytes_per_token"]))])
    return {int(i): (int(fr[k]), int(to[k]), float(start[k]), float(end[k]), int(tokens[k]))
            for k, i in enumerate(req.tolist()) if i >= 0}


def _rows_rules(tl, rows, rq, roles, xf, metrics, models, B, ck: _Check, checked) -> None:
    """The rules over rows, replayed client by client: pools, decode-all (and decode before the transfer ends),
    decode-count, batch-capacity, tokens, duration, request-times, iterations, no-overlap."""
    checked(ck.report, "iterations", "no-overlap", "ids", "prefill-once", "decode-count", "decode-all",
            "batch-capacity", "tokens", "duration", "request-times")
    n = len(rq)
    l, o = rq["input_tokens"].to_numpy(), rq["output_tokens"].to_numpy()
    client, pclient = rq["client"].to_numpy(), rq["prefill_client"].to_numpy()
    ids = rq["request_id"].astype(str).to_numpy()
    generated = np.zeros(n, dtype=np.int64)  # tokens each request has produced
    prefills = np.zeros(n, dtype=np.int64)
    first_start, first_end, last_end = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    start, end = tl["start_s"].to_numpy(float), tl["end_s"].to_numpy(float)
    cl, it, tok = tl["client"].to_numpy(), tl["iteration"].to_numpy(), tl["tokens"].to_numpy()
    linear = all(type(m) is LinearCostModel for m in models)
    overlap = bool(metrics.get("transfer_overlap", True))
    by_to = defaultdict(list)
    for i, (_, to, s, e, _) in xf.items():
        by_to[to].append((e, s, i))
    for j in np.unique(cl).tolist():
        pending = sorted(by_to.get(j, []))  # transfers into j by end
        # Sorted starts and, by end, the latest start still to come: the in-flight count and the overlap test
        # at a row are then two look-ups, not a scan of every transfer into j at every row.
        starts = np.sort([s for _, s, _ in pending])
        first_start_after = np.minimum.accumulate([s for _, s, _ in pending][::-1])[::-1] if pending else starts
        running, preempted, k, expect_iter, prev_end = set(), set(), 0, 0, -np.inf
        for r in np.flatnonzero(cl == j).tolist():
            kind, members, pieces = rows[r]
            where = f"client {j} iteration {it[r]}"
            if kind != "preempt":
                if it[r] != expect_iter:
                    ck.report.add("iterations", f"iterations must be numbered 0, 1, 2, ... per client: {where}")
                expect_iter += 1
                if not end[r] > start[r] or (start[r] < prev_end and not ck.close(start[r], prev_end)):
                    ck.report.add("no-overlap", f"an iteration overlaps the one before or has no length: {where}")
                prev_end = end[r]
            while k < len(pending) and pending[k][0] <= start[r] + ck.tol:  # transfers ended: they run
                running.add(pending[k][2])
                k += 1
            if kind == "preempt":
                for i in members:
                    running.discard(i)
                    preempted.add(i)
                continue
            if kind == "prefill":
                _prefill_row(j, r, members, pieces, roles, pclient, client, l, generated, prefills, preempted,
                             running, o, tok, first_start, first_end, start, end, ck, where)
                if len(members) > B[j]:
                    ck.report.add("batch-capacity", f"a prefill of more than B requests: {where}")
            else:
                if roles[j] == "prefill":
                    ck.report.add("pools", f"a decode row on a prefill replica: {where}")
                listed = set(members)
                early = [ids[i] for i in listed - running if i in xf and i not in preempted]
                if early:
                    ck.report.add("decode-all", f"{where} decodes a request before its transfer ends: "
                                  + ck.examples(early))
                missing = [ids[i] for i in running - listed]
                if missing:
                    ck.report.add("decode-all", f"{where} leaves out running requests: {ck.examples(missing)}")
                # pending[k:] are the transfers not ended by start + tol (s <= e: every ended one had started).
                if not overlap and k < len(pending) and first_start_after[k] < end[r] - ck.tol:
                    ck.report.add("transfer", f"{where} computes while a transfer into it runs (overlap is off)")
                in_flight = int(np.searchsorted(starts, start[r] + ck.tol, side="right")) - k
                if len(listed) + in_flight > B[j]:
                    ck.report.add("batch-capacity", f"{where} holds more than B requests")
                expected_tokens = int(sum(l[i] + generated[i] for i in members))
                if expected_tokens != tok[r]:
                    ck.report.add("tokens", f"{where}: tokens {tok[r]} != the context read {expected_tokens}")
                for i in members:
                    generated[i] += 1
                    if generated[i] >= o[i]:
                        running.discard(i)
            for i in members:
                last_end[i] = end[r]
                if client[i] != j and not (kind == "prefill" and pclient[i] == j):
                    ck.report.add("pools", f"{ids[i]} runs on client {j}, "
                                  f"not its prefill or decode client ({where})")
    _durations(tl, models, linear, ck)
    ck.add("decode-count", "each request yields output_tokens tokens; not so for", ids[generated != o])
    ck.add("prefill-once", "each request is prefilled (recomputes aside) once; not so for", ids[prefills < 1])
    for column, value in (("prefill_start_s", first_start), ("first_token_s", first_end), ("finish_s", last_end)):
        ck.add("request-times", f"{column} disagrees with the timeline for",
               ids[~ck.close(rq[column].to_numpy(float), value)])
    arrival = rq["arrival_s"].to_numpy(float)
    ck.add("request-times", "prefilled before arrival", ids[(first_start < arrival) & ~ck.close(first_start, arrival)])


def _prefill_row(j, r, members, pieces, roles, pclient, client, l, generated, prefills, preempted, running, o, tok,
                 first_start, first_end, start, end, ck: _Check, where) -> None:
    computed = 0
    for i in members:
        recompute = prefills[i] > 0
        if not recompute:
            if pclient[i] != j:
                ck.report.add("pools", f"{where} prefills a request requests.csv prefills elsewhere")
            if roles[j] == "decode":
                ck.report.add("pools", f"{where}: a decode replica prefills only requests preempted there")
            first_start[i], first_end[i] = start[r], end[r]
        elif i not in preempted or client[i] != j:
            ck.report.add("prefill-once", f"{where} prefills a request again without a preemption there")
        preempted.discard(i)
        need = l[i] + (generated[i] if recompute else 0)
        if pieces is not None:
            piece, prior = pieces[i]
            if piece + prior != need or piece < 1:
                ck.report.add("tokens", f"{where}: a prompt piece and its cached part do not make the prompt")
            computed += piece
        else:
            computed += need
        prefills[i] += 1
        generated[i] += 1
        if roles[j] != "prefill" and generated[i] < o[i]:
            running.add(i)
    if computed != tok[r]:
        ck.report.add("tokens", f"{where}: tokens {tok[r]} != the prompt tokens computed {computed}")


def _durations(tl, models, linear: bool, ck: _Check) -> None:
    if not linear:
        return  # a measured model prices each row on its contexts: the colocated replay checks those
    cl = tl["client"].to_numpy()
    row = tl["kind"].to_numpy() != "preempt"
    a_p, b_p, a_d, b_d, c_d = (np.array([getattr(m, k) for m in models])[cl] for k in ("a_p", "b_p", "a_d", "b_d",
                                                                                        "c_d"))
    tokens, nreq = tl["tokens"].to_numpy(float), tl["n_requests"].to_numpy(float)
    expected = np.where(tl["kind"].to_numpy() == "prefill", a_p + b_p * tokens, a_d + b_d * nreq + c_d * tokens)
    span = tl["end_s"].to_numpy(float) - tl["start_s"].to_numpy(float)
    ulps = 16 * np.finfo(float).eps * np.abs(tl["end_s"].to_numpy(float))
    bad = np.flatnonzero(row & ~ck.close(span, expected) & ~(np.abs(span - expected) <= ulps))
    ck.add("duration", "iteration lengths differ from the cost model's",
           (f"client {cl[r]} iteration {tl['iteration'].iloc[r]}" for r in bad))


def _memory(tl, rows, rq, roles, xf, metrics, ck: _Check, checked) -> None:
    """Rules ``transfer-memory`` and ``kv-capacity``: the KV held on each client, swept over time."""
    checked(ck.report, "kv-capacity", "transfer-memory")
    caps = metrics.get("kv_capacity_tokens")
    if caps is None:
        return
    clients = len(roles)
    caps = caps if isinstance(caps, list) else [caps] * clients
    paged = metrics.get("kv_mode") == "paged"
    bs = int(metrics.get("block_size", 1)) if paged else 1
    l, o = rq["input_tokens"].to_numpy(), rq["output_tokens"].to_numpy()
    cached = rq["cached_tokens"].to_numpy() if "cached_tokens" in rq.columns else np.zeros(len(rq), dtype=np.int64)
    pclient, finish = rq["prefill_client"].to_numpy(), rq["finish_s"].to_numpy(float)
    first_start, first_end = rq["prefill_start_s"].to_numpy(float), rq["first_token_s"].to_numpy(float)
    # Intervals (client, from, to, amount): a request's memory where it lies.  Paged: the blocks of its longest
    # context there (a floor less its cached blocks with prefix caching; growth is not charged before it happens,
    # so the check is of the blocks at the end of the interval, taken at its start: exact at transfers).
    spans = []
    for i in range(len(rq)):
        p = int(pclient[i])
        if i in xf:
            _, to, s, e, moved = xf[i]
            spans.append((p, first_start[i], e, _amount(l[i], paged, bs, cached[i]), "prefill side"))
            spans.append((to, s, finish[i], _amount(l[i] + (0 if paged else o[i]), paged, bs, l[i] - moved),
                          "decode side"))
        elif roles[p] == "prefill":
            spans.append((p, first_start[i], first_end[i], _amount(l[i], paged, bs, cached[i]), "prefill side"))
        elif not paged:
            spans.append((p, first_start[i], finish[i], l[i] + o[i], "mixed"))
    by_client = defaultdict(list)
    for sp in spans:
        by_client[sp[0]].append(sp)
    for j, items in by_client.items():
        cap = caps[j]
        if cap is None:
            continue
        cap = int(cap) // bs if paged else int(cap)
        starts = np.array([s for _, s, _, _, _ in items])
        ends = np.array([e for _, _, e, _, _ in items])
        amount = np.array([a for _, _, _, a, _ in items], dtype=float)
        # Held at t: what started by t + tol less what of it ended by then (an interval ends no earlier than it
        # starts), from sorted cumulative sums: n log n where a mask per start was n^2.
        ends = np.maximum(ends, starts)
        by_start, by_end = np.argsort(starts, kind="stable"), np.argsort(ends, kind="stable")
        s_sorted, e_sorted = starts[by_start], ends[by_end]
        s_cum = np.concatenate([[0.0], np.cumsum(amount[by_start])])
        e_cum = np.concatenate([[0.0], np.cumsum(amount[by_end])])
        times = np.unique(starts)
        held_at = (s_cum[np.searchsorted(s_sorted, times + ck.tol, side="right")]
                   - e_cum[np.searchsorted(e_sorted, times + ck.tol, side="right")])
        over = held_at > cap
        for t, held in zip(times[over][:1], held_at[over][:1]):  # the first time over capacity
            moving = any(s <= t + ck.tol and t + ck.tol < e for fr, to, s, e, _ in xf.values() if j in (fr, to))
            ck.report.add("transfer-memory" if moving else "kv-capacity",
                          f"client {j} holds {held:g} {'blocks' if paged else 'KV tokens'} at {t:.9g} s"
                          + (" while a transfer runs" if moving else "") + f", above its capacity {cap}")


def _amount(tokens: int, paged: bool, bs: int, cached_tokens: int) -> float:
    if not paged:
        return float(tokens)
    return float(max(0, -(-int(tokens) // bs) - int(cached_tokens) // bs))


def _recompute_metrics(tl, rq, transfers, metrics, B, clients, ck: _Check, checked) -> dict:
    """Rule ``metrics``: what metrics.json says of the makespan, utilizations and transfers recomputes."""
    from workbench.schedule.metrics import schedule_metrics, transfer_metrics

    checked(ck.report, "metrics")
    rows = tl[tl["kind"] != "preempt"]
    got = {**schedule_metrics(rows, clients, B), **transfer_metrics(transfers)}
    for key, value in got.items():
        if key in metrics and not ck.close(float(metrics[key]), float(value)):
            ck.report.add("metrics", f"{key} is {metrics[key]!r} but recomputes to {value!r}")
    lb = float(metrics["lower_bound_s"])
    if lb > got["makespan_s"] * (1 + 1e-9) + ck.tol:
        ck.report.add("metrics", f"lower_bound_s {lb} exceeds the makespan {got['makespan_s']}")
    return got
