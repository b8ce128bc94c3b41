"""Check a schedule from its exported files alone (MODEL.md section 9).

The validator trusts nothing the simulator knows: it reads ``timeline.csv``,
``requests.csv`` and ``metrics.json`` (or a :class:`~workbench.schedule.schema.Schedule`
holding the same tables), optionally the trace, and checks every rule:

========================  ==========================================================
rule                      what it checks
========================  ==========================================================
``schema``                the columns and keys the contract names are present and typed
``iterations``            per client, iterations are numbered 0, 1, 2, ... in time order
``no-overlap``            iterations on a client do not overlap and have positive length
``ids``                   every listed id is a request of ``requests.csv``; n_requests
                          equals the number of ids; no id twice in one iteration; a prefill
                          or decode row serves at least one request (a mixed row one id or chunk)
``prefill-once``          each request is prefilled exactly once
``same-client``           all of a request's iterations are on the client requests.csv names
``decode-count``          each request decodes exactly ``o_i - 1`` times, all after its prefill
``decode-all``            a decode (or mixed) iteration advances every request running on its
                          client: each request between its prefill and its last decode is in
                          every decode and mixed row of its client in between (MODEL.md section 1)
``batch-capacity``        requests holding a slot (from prefill to last decode) never exceed ``B_j``
``kv-capacity``           when set: the KV tokens they reserve never exceed ``M_j``
``tokens``                ``tokens`` equals the prompt tokens (prefill) or the context read (decode)
``duration``              each iteration's length equals the cost model's
``request-times``         requests.csv times match the timeline; no prefill before arrival
``metrics``               makespan, utilizations and gap recompute; the lower bound is at least
                          the closed-form bound and at most the makespan
``trace``                 when a trace is given: same ids, lengths and arrival times
========================  ==========================================================

Predicted lengths and work stealing (docs/beyond.md) add, when present: the
optional ``requests.predicted_output_tokens`` (whole numbers >= 1, ``schema``),
``metrics.params.predictor`` (a predictor name, ``schema``) and
``metrics.stolen_requests`` (0..n, ``metrics``); a stolen request is checked by
``same-client`` like any other, on the client requests.csv names.

Chunked prefill (:mod:`workbench.engine.chunked`) adds rows of kind ``mixed`` with two
optional columns, ``prefill_ids`` and ``prefill_tokens`` (the prompt chunks; the
row's ``request_ids`` are its decodes).  Files without them are checked as
before.  With mixed rows the same rules also check: ``ids`` (chunk ids known,
one length per id, lengths >= 1), ``prefill-once`` (a chunked request's chunks
sum to its prompt and it has no prefill row), ``same-client``, ``decode-count``
(decodes after the last chunk), ``batch-capacity`` and ``kv-capacity`` (a slot
is held from the first chunk), ``tokens`` (decodes' context as for ``decode``;
at most ``metrics.token_budget`` tokens per iteration), ``duration`` (the
``t_mixed`` cost of :mod:`workbench.engine.chunked`), ``request-times`` (prefill
starts with the first chunk; the first token ends the last) and ``metrics``
(the bound is checked against :func:`workbench.schedule.bounds.chunked_lower_bound`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.costmodel.linear import COEFFICIENTS, LinearCostModel
from workbench.errors import ScheduleFileError, WorkbenchError
from workbench.schedule.bounds import closed_form_lower_bound
from workbench.schedule.metrics import batch_sizes_array, schedule_metrics
from workbench.schedule.schema import REQUEST_COLUMNS, TIMELINE_COLUMNS, Schedule
from workbench.workload.trace import load_trace

RULES = ("schema", "iterations", "no-overlap", "ids", "prefill-once", "same-client", "decode-count",
         "decode-all", "batch-capacity", "kv-capacity", "tokens", "duration", "request-times", "metrics", "trace")
METRIC_KEYS = ("makespan_s", "lower_bound_s", "gap", "slot_utilization", "busy_utilization", "clients",
               "batch_size", "cost_model", "policy", "params", "version")
#: Relative tolerance on times: CSV round-trips floats exactly, so this only absorbs summation order.
REL_TOL = 1e-9
ABS_TOL_S = 1e-9
#: Iteration lengths are differences of two times; they may be off by this many ulps of the times.
TIME_ULPS = 16
MAX_EXAMPLES = 3
#: More clients than this in metrics.json is refused as a schema error (the checks allocate per client).
MAX_CLIENTS = 1_000_000


@dataclass(frozen=True)
class Violation:
    rule: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.message}"


@dataclass
class ValidationReport:
    """The outcome of :func:`validate`: ``ok`` and the violations found, by rule."""

    violations: list[Violation] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def rules_violated(self) -> list[str]:
        return sorted({v.rule for v in self.violations}, key=RULES.index)

    def add(self, rule: str, message: str) -> None:
        self.violations.append(Violation(rule, message))

    def __str__(self) -> str:
        if self.ok:
            return f"valid: {len(self.checked)} rules checked ({', '.join(self.checked)})"
        return "invalid:\n" + "\n".join(f"  {v}" for v in self.violations)

    def raise_if_invalid(self) -> None:
        if not self.ok:
            raise WorkbenchError(f"the schedule breaks {len(self.violations)} rule(s): "
                                 + "; ".join(str(v) for v in self.violations[:5]))


def _close(a, b) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    return np.abs(a - b) <= ABS_TOL_S + REL_TOL * np.maximum(np.abs(a), np.abs(b))


def _examples(labels) -> str:
    labels = list(labels)
    text = ", ".join(str(x) for x in labels[:MAX_EXAMPLES])
    return text + (f" (and {len(labels) - MAX_EXAMPLES} more)" if len(labels) > MAX_EXAMPLES else "")


def _cost_models(metrics: dict, clients: int) -> list[LinearCostModel]:
    record = metrics["cost_model"]
    records = record if isinstance(record, list) else [record] * clients
    if len(records) != clients:
        raise ValueError(f"cost_model lists {len(records)} models for {clients} clients")
    return [LinearCostModel(**{k: r[k] for k in COEFFICIENTS}) for r in records]


def _prefill_chunks(tl: pd.DataFrame, index_of: dict, report: ValidationReport,
                    client: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The prompt chunks of the mixed rows as aligned arrays (row, request index, tokens); ``ids`` checks."""
    empty = np.zeros(0, dtype=np.int64)
    if "prefill_ids" not in tl.columns or not (tl["kind"] == "mixed").any():
        return empty, empty, empty
    mixed = np.flatnonzero((tl["kind"] == "mixed").to_numpy())
    ids = tl["prefill_ids"].iloc[mixed].astype(str).str.split()
    toks = tl["prefill_tokens"].iloc[mixed].astype(str).str.split()
    n_ids, n_toks = ids.str.len().to_numpy(), toks.str.len().to_numpy()
    where = [f"client {client[r]} iteration {tl['iteration'].iloc[r]}" for r in mixed]
    bad = np.flatnonzero(n_ids != n_toks)
    if len(bad):
        report.add("ids", "prefill_ids and prefill_tokens list different numbers of chunks: "
                   + _examples(where[k] for k in bad))
        return empty, empty, empty
    rows = np.repeat(mixed, n_ids)
    flat = [x for xs in ids for x in xs]
    req = np.fromiter((index_of.get(x, -1) for x in flat), dtype=np.int64, count=len(flat))
    try:
        length = np.array([int(x) for xs in toks for x in xs], dtype=np.int64)
    except (ValueError, OverflowError):
        report.add("ids", "prefill_tokens must be whole numbers")
        return empty, empty, empty
    keep = req >= 0
    if not keep.all():
        report.add("ids", f"prefill ids not in requests.csv: {_examples(sorted({flat[k] for k in np.flatnonzero(~keep)}))}")
    if (length < 1).any():
        report.add("ids", "prefill chunks must hold at least one token: "
                   + _examples(sorted({flat[k] for k in np.flatnonzero(length < 1)})))
    if pd.DataFrame({"row": rows[keep], "req": req[keep]}).duplicated().any():
        report.add("ids", "a request has two prefill chunks in one iteration")
    return rows[keep], req[keep], length[keep]


_MISSING = object()


def _check_empty_rows(tl, counts, ch_row, is_mixed_kind, client, report) -> None:
    """A prefill or decode row serves at least one request; a mixed row at least one decode or chunk."""
    chunks = np.bincount(ch_row, minlength=len(tl))
    empty = np.flatnonzero((counts < 1) & (~is_mixed_kind | (chunks < 1)))
    if len(empty):
        report.add("ids", "an iteration must serve at least one request; empty rows: "
                   + _examples(f"client {client[r]} iteration {tl['iteration'].iloc[r]} ({tl['kind'].iloc[r]})"
                               for r in empty))


def _check_token_budget(budget, tokens, is_mixed_kind, tl, client, report) -> None:
    """Mixed rows carry at most ``metrics.token_budget`` tokens.  Without a usable budget the rule could
    not be checked, so a file with mixed rows must record one (a whole number >= 1): missing or
    mistyped is a schema violation, never a skipped check."""
    if budget is _MISSING or isinstance(budget, bool) or not isinstance(budget, (int, float)) \
            or not np.isfinite(budget) or budget != int(budget) or budget < 1:
        shown = "missing" if budget is _MISSING else f"{budget!r}"
        report.add("schema", f"metrics.token_budget is {shown}; a schedule with mixed rows records its token "
                   "budget as a whole number >= 1 so the tokens rule can check it")
        return
    over = np.flatnonzero(is_mixed_kind & (tokens > budget))
    if len(over):
        report.add("tokens", f"an iteration processes more than token_budget = {budget} tokens: "
                   + _examples(f"client {client[r]} iteration {tl['iteration'].iloc[r]}" for r in over))


def _check_decode_all(tl, client, counts, is_prefill, req_client, o, req, row, entry_prefill, ch_req, ch_row,
                      rq_ids, report) -> None:
    """Every decode and mixed row of a client lists every request running there (MODEL.md section 1).

    Request ``i`` runs from the row after its prefill (or its last chunk) to the row of its last
    decode; rows are sorted by client and iteration, so that is one range of rows of its client.
    """
    n = len(o)
    done_row = np.full(n, -1, dtype=np.int64)  # the row where its prompt was processed
    done_row[req[entry_prefill]] = row[entry_prefill]
    np.maximum.at(done_row, ch_req, ch_row)
    last_row = np.full(n, -1, dtype=np.int64)
    np.maximum.at(last_row, req, row)
    runs = (done_row >= 0) & (last_row > done_row) & (o > 1)
    delta = np.zeros(len(tl) + 1, dtype=np.int64)
    np.add.at(delta, done_row[runs] + 1, 1)
    np.add.at(delta, last_row[runs] + 1, -1)
    running = np.cumsum(delta)[:-1]
    missing = np.flatnonzero(~is_prefill & (counts < running))
    if len(missing):
        r = int(missing[0])
        listed = set(tl["request_ids"].iloc[r].split())
        left_out = [rq_ids[i] for i in np.flatnonzero(runs & (done_row < r) & (last_row >= r))
                    if rq_ids[i] not in listed]
        report.add("decode-all", "a decode iteration must advance every running request of its client; "
                   + _examples(f"client {client[m]} iteration {tl['iteration'].iloc[m]} "
                               f"({counts[m]} of {running[m]} running)" for m in missing)
                   + f"; first left out: {_examples(left_out)}")


def validate(source: Schedule | str | Path, trace: pd.DataFrame | str | Path | None = None) -> ValidationReport:
    """Check a schedule (a folder of exported files, or a :class:`Schedule`) against every rule."""
    with np.errstate(all="ignore"):  # corrupted files may hold inf or 1e308: compare them, do not warn
        return _validate(source, trace)


def _validate(source, trace) -> ValidationReport:
    report = ValidationReport()
    if isinstance(source, Schedule):
        tl, rq, metrics = source.timeline.copy(), source.requests.copy(), dict(source.metrics)
        # Round-trip exactly as the files would hold them, so both paths check the same thing.
        if "request_ids" in tl.columns:
            tl["request_ids"] = tl["request_ids"].astype(str)
    else:
        schedule = Schedule.read(source)
        tl, rq, metrics = schedule.timeline, schedule.requests, schedule.metrics
    if trace is not None and not isinstance(trace, pd.DataFrame):
        trace = load_trace(trace)
    elif trace is not None:
        trace = load_trace(trace)

    # -- schema ------------------------------------------------------------------------
    report.checked.append("schema")
    missing = [c for c in TIMELINE_COLUMNS if c not in tl.columns]
    missing += [f"requests.{c}" for c in REQUEST_COLUMNS if c not in rq.columns]
    missing += [f"metrics.{k}" for k in METRIC_KEYS if k not in metrics]
    if missing:
        report.add("schema", f"missing {_examples(missing)}")
        return report
    try:
        clients = int(metrics["clients"])
        if isinstance(metrics["clients"], bool) or clients != metrics["clients"] or not 1 <= clients <= MAX_CLIENTS:
            raise ValueError(f"metrics.clients is {metrics['clients']!r}, not a whole number in 1..{MAX_CLIENTS:,}")
        B = batch_sizes_array(metrics["batch_size"], clients)
        if (B < 1).any():
            raise ValueError(f"metrics.batch_size is {metrics['batch_size']!r}; batch sizes are >= 1")
        models = _cost_models(metrics, clients)
        for key in ("makespan_s", "lower_bound_s", "gap", "slot_utilization", "busy_utilization"):
            if isinstance(metrics[key], bool) or not isinstance(metrics[key], (int, float, str)):
                raise TypeError(f"metrics.{key} is {metrics[key]!r}, not a number")
            float(metrics[key])
        for col in ("client", "iteration", "n_requests", "tokens"):
            tl[col] = pd.to_numeric(tl[col], errors="raise").astype(np.int64)
        for col in ("start_s", "end_s"):
            tl[col] = pd.to_numeric(tl[col], errors="raise").astype(float)
        for col in ("client", "input_tokens", "output_tokens"):
            rq[col] = pd.to_numeric(rq[col], errors="raise").astype(np.int64)
        for col in ("arrival_s", "prefill_start_s", "first_token_s", "finish_s"):
            rq[col] = pd.to_numeric(rq[col], errors="raise").astype(float)
    except (ValueError, TypeError, KeyError, OverflowError, WorkbenchError) as exc:
        report.add("schema", f"cannot read the tables as numbers: {exc}")
        return report
    bad_kind = ~tl["kind"].isin(["prefill", "decode", "mixed"])
    if bad_kind.any():
        report.add("schema", "kind must be prefill or decode (or mixed, for chunked prefill); rows "
                   f"{_examples(np.flatnonzero(bad_kind.to_numpy()))}")
        return report
    is_mixed_kind = (tl["kind"] == "mixed").to_numpy()
    if is_mixed_kind.any() and not {"prefill_ids", "prefill_tokens"} <= set(tl.columns):
        report.add("schema", "mixed rows need the columns prefill_ids and prefill_tokens")
        return report
    bad_client = (tl["client"] < 0) | (tl["client"] >= clients)
    if bad_client.any() or ((rq["client"] < 0) | (rq["client"] >= clients)).any():
        report.add("schema", f"client numbers must be 0..{clients - 1}")
        return report
    rq_ids = rq["request_id"].astype(str).to_numpy()
    if len(set(rq_ids)) != len(rq_ids):
        report.add("schema", "requests.csv repeats a request_id")
        return report
    if len(rq_ids) == 0:
        report.add("schema", "requests.csv lists no request (a trace has at least one)")
        return report

    tl = tl.sort_values(["client", "iteration"], kind="stable").reset_index(drop=True)
    client = tl["client"].to_numpy()
    start = tl["start_s"].to_numpy()
    end = tl["end_s"].to_numpy()
    is_prefill = (tl["kind"] == "prefill").to_numpy()
    is_mixed_kind = (tl["kind"] == "mixed").to_numpy()  # again, in the sorted order
    n_req = tl["n_requests"].to_numpy()

    # -- iterations and overlap ---------------------------------------------------------
    report.checked += ["iterations", "no-overlap"]
    expected_iter = tl.groupby("client").cumcount().to_numpy()
    bad = np.flatnonzero(tl["iteration"].to_numpy() != expected_iter)
    if len(bad):
        report.add("iterations", "iterations must be numbered 0, 1, 2, ... per client; first break at client "
                   f"{client[bad[0]]} iteration {tl['iteration'].iloc[bad[0]]}")
    nonpositive = np.flatnonzero(~(end > start) | (start < -ABS_TOL_S))
    if len(nonpositive):
        report.add("no-overlap", "iterations must have start_s >= 0 and end_s > start_s; rows "
                   + _examples(f"client {client[r]} iteration {tl['iteration'].iloc[r]}" for r in nonpositive))
    same_client = client[1:] == client[:-1]
    overlap = np.flatnonzero(same_client & (start[1:] < end[:-1]) & ~_close(start[1:], end[:-1]))
    if len(overlap):
        report.add("no-overlap", "an iteration starts before the previous one on its client ends: "
                   + _examples(f"client {client[r + 1]} iteration {tl['iteration'].iloc[r + 1]}" for r in overlap))

    # -- ids -----------------------------------------------------------------------------
    report.checked.append("ids")
    lists = tl["request_ids"].astype(str).str.split()
    counts = lists.str.len().to_numpy()
    bad = np.flatnonzero(counts != n_req)
    if len(bad):
        report.add("ids", "n_requests differs from the number of request_ids: "
                   + _examples(f"client {client[r]} iteration {tl['iteration'].iloc[r]}" for r in bad))
    flat = np.fromiter((x for ids in lists for x in ids), dtype=object, count=int(counts.sum()))
    row = np.repeat(np.arange(len(tl)), counts)
    index_of = {rid: k for k, rid in enumerate(rq_ids)}
    req = np.fromiter((index_of.get(x, -1) for x in flat), dtype=np.int64, count=len(flat))
    unknown = req < 0
    if unknown.any():
        report.add("ids", f"ids not in requests.csv: {_examples(sorted(set(flat[unknown])))}")
        row, req = row[~unknown], req[~unknown]
    dup = pd.DataFrame({"row": row, "req": req}).duplicated().to_numpy()
    if dup.any():
        report.add("ids", "a request is listed twice in one iteration: "
                   + _examples(f"{rq_ids[req[d]]} in client {client[row[d]]} iteration {tl['iteration'].iloc[row[d]]}"
                               for d in np.flatnonzero(dup)))

    # Prefill chunks of mixed rows (none in files without mixed rows): entries (row, request, length, prior).
    ch_row, ch_req, ch_len = _prefill_chunks(tl, index_of, report, client)
    _check_empty_rows(tl, counts, ch_row, is_mixed_kind, client, report)
    ch_iter = tl["iteration"].to_numpy()[ch_row]

    l = rq["input_tokens"].to_numpy()
    o = rq["output_tokens"].to_numpy()
    n = len(rq)
    entry_prefill = is_prefill[row]
    entry_client = client[row]
    entry_iter = tl["iteration"].to_numpy()[row]

    # -- prefill once, same client, decode count -----------------------------------------
    report.checked += ["prefill-once", "same-client", "decode-count"]
    n_prefill = np.bincount(req[entry_prefill], minlength=n)
    n_decode = np.bincount(req[~entry_prefill], minlength=n)
    chunked = np.bincount(ch_req, minlength=n) > 0
    chunk_sum = np.bincount(ch_req, weights=ch_len, minlength=n).astype(np.int64)
    bad = np.flatnonzero((n_prefill != 1) & ~chunked)
    if len(bad):
        report.add("prefill-once", "each request is prefilled exactly once; not so for "
                   + _examples(f"{rq_ids[i]} ({n_prefill[i]} prefills)" for i in bad))
    bad = np.flatnonzero(chunked & ((n_prefill != 0) | (chunk_sum != l)))
    if len(bad):
        report.add("prefill-once", "a chunked request's prefill chunks sum to its input_tokens and it has no "
                   "prefill row; not so for "
                   + _examples(f"{rq_ids[i]} ({chunk_sum[i]} chunk tokens of {l[i]}, {n_prefill[i]} prefills)"
                               for i in bad))
    wrong = np.flatnonzero(entry_client != rq["client"].to_numpy()[req])
    wrong_chunk = np.flatnonzero(client[ch_row] != rq["client"].to_numpy()[ch_req])
    if len(wrong_chunk):
        report.add("same-client", "prefill chunks on a client other than requests.csv's: "
                   + _examples(sorted({rq_ids[ch_req[e]] for e in wrong_chunk})))
    if len(wrong):
        report.add("same-client", "requests appear on a client other than requests.csv's: "
                   + _examples(sorted({rq_ids[req[e]] for e in wrong})))
    bad = np.flatnonzero(n_decode != o - 1)
    if len(bad):
        report.add("decode-count", "each request decodes output_tokens - 1 times; not so for "
                   + _examples(f"{rq_ids[i]} ({n_decode[i]} decodes, expected {o[i] - 1})" for i in bad))
    prefill_iter = np.full(n, -1, dtype=np.int64)
    prefill_iter[req[entry_prefill]] = entry_iter[entry_prefill]
    np.maximum.at(prefill_iter, ch_req, ch_iter)  # a chunked request's prefill ends with its last chunk
    last_iter = np.full(n, -1, dtype=np.int64)
    np.maximum.at(last_iter, req, entry_iter)
    np.maximum.at(last_iter, ch_req, ch_iter)
    early = np.flatnonzero(~entry_prefill & (entry_iter <= prefill_iter[req]))
    if len(early):
        report.add("decode-count", "a decode comes before its request's prefill: "
                   + _examples(sorted({rq_ids[req[e]] for e in early})))
    structural_ok = report.ok
    report.checked.append("decode-all")
    if structural_ok:
        _check_decode_all(tl, client, counts, is_prefill, rq["client"].to_numpy(), o, req, row, entry_prefill,
                          ch_req, ch_row, rq_ids, report)

    # -- batch and KV capacity -------------------------------------------------------------
    report.checked.append("batch-capacity")
    iters_per_client = np.bincount(client, minlength=clients)
    offset = np.concatenate([[0], np.cumsum(iters_per_client)])
    req_client = rq["client"].to_numpy()
    # A request holds its slot from the row of its prefill to the row of its last iteration (rows are
    # sorted by client and iteration); requests seen on another client are left to same-client.
    prefill_row = np.full(n, -1, dtype=np.int64)
    prefill_row[req[entry_prefill]] = row[entry_prefill]
    first_chunk_row = np.full(n, len(tl), dtype=np.int64)
    np.minimum.at(first_chunk_row, ch_req, ch_row)
    last_chunk_row = np.full(n, -1, dtype=np.int64)
    np.maximum.at(last_chunk_row, ch_req, ch_row)
    prefill_row = np.where(chunked, first_chunk_row, prefill_row)
    last_row = np.full(n, -1, dtype=np.int64)
    np.maximum.at(last_row, req, row)
    np.maximum.at(last_row, ch_req, ch_row)
    elsewhere = np.zeros(n, dtype=bool)
    elsewhere[req[wrong]] = True
    elsewhere[ch_req[wrong_chunk]] = True
    scheduled = ((n_prefill == 1) | chunked) & (last_row >= 0) & ~elsewhere

    def holding(amount: np.ndarray) -> np.ndarray:
        delta = np.zeros(len(tl) + 1)
        first = prefill_row[scheduled]
        last = last_row[scheduled]
        np.add.at(delta, first, amount[scheduled])
        np.add.at(delta, last + 1, -amount[scheduled])
        return np.cumsum(delta)[:-1]

    held = holding(np.ones(n))
    over = np.flatnonzero(held > B[client])
    if len(over):
        report.add("batch-capacity", "more requests hold a slot than the batch size allows: "
                   + _examples(f"client {client[r]} iteration {tl['iteration'].iloc[r]} ({int(held[r])} > {B[client[r]]})"
                               for r in over))
    if metrics.get("kv_capacity_tokens") is not None:
        report.checked.append("kv-capacity")
        caps = metrics["kv_capacity_tokens"]
        caps = caps if isinstance(caps, list) else [caps] * clients
        try:
            cap = np.array([np.inf if c is None else float(c) for c in caps])
            if len(cap) != clients or isinstance(metrics["kv_capacity_tokens"], (bool, dict)):
                raise ValueError
        except (ValueError, TypeError):
            report.add("schema", f"metrics.kv_capacity_tokens is {metrics['kv_capacity_tokens']!r}, "
                       f"not one capacity or one per client")
            return report
        reserved = holding((l + o).astype(float))
        over = np.flatnonzero(reserved > cap[client])
        if len(over):
            report.add("kv-capacity", "reserved KV tokens exceed the capacity: "
                       + _examples(f"client {client[r]} iteration {tl['iteration'].iloc[r]}" for r in over))

    # -- tokens and durations ----------------------------------------------------------------
    report.checked += ["tokens", "duration"]
    if structural_ok:
        order = np.lexsort((entry_iter, req))
        dec_sorted = ~entry_prefill[order]
        req_sorted = req[order]
        # d = how many decodes of this request up to and including this one
        d = np.zeros(len(order), dtype=np.int64)
        csum = np.cumsum(dec_sorted)
        first_pos = np.searchsorted(req_sorted, req_sorted, side="left")
        before = np.where(first_pos > 0, csum[first_pos - 1], 0)
        d[order] = csum - before
        contribution = np.where(entry_prefill, l[req], l[req] + d)
        expected_tokens = np.bincount(row, weights=contribution, minlength=len(tl)).astype(np.int64)
        bad = np.flatnonzero(expected_tokens != tl["tokens"].to_numpy())
        if len(bad):
            report.add("tokens", "tokens must be the prompt tokens (prefill) or the context read (decode): "
                       + _examples(f"client {client[r]} iteration {tl['iteration'].iloc[r]} "
                                   f"({tl['tokens'].iloc[r]} != {expected_tokens[r]})" for r in bad))
    a_p = np.array([m.a_p for m in models])[client]
    b_p = np.array([m.b_p for m in models])[client]
    a_d = np.array([m.a_d for m in models])[client]
    b_d = np.array([m.b_d for m in models])[client]
    c_d = np.array([m.c_d for m in models])[client]
    tokens = tl["tokens"].to_numpy(float)
    expected = np.where(is_prefill, a_p + b_p * tokens, a_d + b_d * n_req + c_d * tokens)
    if len(ch_row):
        # t_mixed = max(a_p, a_d) + b_d n + c_d (context + Q) + b_p P, Q = earlier chunks of the same prompts.
        by = np.lexsort((ch_iter, ch_req))
        csum = np.cumsum(ch_len[by])
        first = np.searchsorted(ch_req[by], ch_req[by], side="left")
        prior = np.empty(len(by), dtype=np.int64)
        prior[by] = csum - ch_len[by] - np.where(first > 0, csum[first - 1], 0)
        P = np.bincount(ch_row, weights=ch_len, minlength=len(tl))
        Q = np.bincount(ch_row, weights=prior, minlength=len(tl))
        mixed_s = np.where(P > 0, np.maximum(a_p, a_d), a_d) + b_d * n_req + c_d * (tokens + Q) + b_p * P
        expected = np.where(is_mixed_kind, mixed_s, expected)
        _check_token_budget(metrics.get("token_budget", _MISSING), n_req + P, is_mixed_kind, tl, client, report)
    # end - start cannot be more exact than the times it subtracts: allow a few units in the last place
    # of the larger time (at t = 1e7 s one ulp is 1.9e-9 s, more than REL_TOL of a 15 ms iteration).
    ulps = TIME_ULPS * np.finfo(float).eps * np.maximum(np.abs(start), np.abs(end))
    bad = np.flatnonzero(~_close(end - start, expected) & ~(np.abs(end - start - expected) <= ulps))
    if len(bad):
        report.add("duration", "iteration lengths differ from the cost model's: "
                   + _examples(f"client {client[r]} iteration {tl['iteration'].iloc[r]} "
                               f"({end[r] - start[r]:.9g} s != {expected[r]:.9g} s)" for r in bad))

    # -- per-request times ------------------------------------------------------------------------
    report.checked.append("request-times")
    if structural_ok:
        pre_rows = np.full(n, 0, dtype=np.int64)
        pre_rows[req[entry_prefill]] = row[entry_prefill]
        last_rows = offset[req_client] + last_iter
        checks = {
            "prefill_start_s": start[np.where(chunked, first_chunk_row, pre_rows)],
            "first_token_s": end[np.where(chunked, last_chunk_row, pre_rows)],
            "finish_s": end[last_rows],
        }
        for column, value in checks.items():
            bad = np.flatnonzero(~_close(rq[column].to_numpy(), value))
            if len(bad):
                report.add("request-times", f"{column} disagrees with the timeline for "
                           + _examples(rq_ids[bad]))
        early = np.flatnonzero((rq["prefill_start_s"].to_numpy() < rq["arrival_s"].to_numpy())
                               & ~_close(rq["prefill_start_s"].to_numpy(), rq["arrival_s"].to_numpy()))
        if len(early):
            report.add("request-times", "prefilled before arrival: " + _examples(rq_ids[early]))

    # -- metrics -------------------------------------------------------------------------------------
    report.checked.append("metrics")
    recomputed = schedule_metrics(tl, clients, B)
    for key, value in recomputed.items():
        if not _close(metrics[key], value):
            report.add("metrics", f"{key} is {metrics[key]!r} but recomputes to {value!r}")
    lb = float(metrics["lower_bound_s"])
    if np.isfinite(lb):
        expected_gap = recomputed["makespan_s"] / lb - 1.0 if lb > 0 else float("nan")
        if not _close(metrics["gap"], expected_gap):
            report.add("metrics", f"gap is {metrics['gap']!r} but recomputes to {expected_gap!r}")
        if lb > recomputed["makespan_s"] * (1 + REL_TOL) + ABS_TOL_S:
            report.add("metrics", f"lower_bound_s {lb} exceeds the makespan {recomputed['makespan_s']}")
        if all(m == models[0] for m in models):
            trace_view = rq.rename(columns={})[["input_tokens", "output_tokens", "arrival_s"]]
            closed = closed_form_lower_bound(trace_view, clients, B, models[0])
            if is_mixed_kind.any():  # mixed batching pays no a_p per prefill stage: its own bound
                from workbench.schedule.bounds import chunked_lower_bound

                closed = chunked_lower_bound(trace_view, clients, B, models[0])
            if lb < closed.value_s * (1 - REL_TOL) - ABS_TOL_S:
                report.add("metrics", f"lower_bound_s {lb} is below the closed-form bound {closed.value_s}")
    _check_predictions_and_stealing(rq, metrics, report)
    report.summary = {"clients": clients, "iterations": len(tl), "requests": n, **recomputed}

    # -- trace ---------------------------------------------------------------------------------------
    if trace is not None:
        report.checked.append("trace")
        t_ids = trace["request_id"].astype(str).to_numpy()
        if set(t_ids) != set(rq_ids) or len(t_ids) != len(rq_ids):
            report.add("trace", "requests.csv and the trace hold different request ids")
        else:
            aligned = trace.set_index(trace["request_id"].astype(str)).loc[rq_ids]
            for column in ("input_tokens", "output_tokens", "arrival_s"):
                bad = np.flatnonzero(~_close(aligned[column].to_numpy(float), rq[column].to_numpy(float)))
                if len(bad):
                    report.add("trace", f"{column} differs from the trace for {_examples(rq_ids[bad])}")
    return report


def _check_predictions_and_stealing(rq: pd.DataFrame, metrics: dict, report: ValidationReport) -> None:
    """Uncertain output lengths and work stealing (docs/beyond.md); files without them pass unchanged.

    ``schema``: the optional ``requests.predicted_output_tokens`` holds whole
    numbers >= 1, and ``metrics.params.predictor`` names a predictor
    (:func:`workbench.workload.predict.make_predictor`).  ``metrics``:
    ``metrics.stolen_requests`` is a whole number in ``0..requests``.  A stolen
    request needs no rule of its own: ``same-client`` already demands that
    requests.csv names the client where every iteration of it ran.
    """
    if "predicted_output_tokens" in rq.columns:
        values = pd.to_numeric(rq["predicted_output_tokens"], errors="coerce").to_numpy(float)
        bad = np.flatnonzero(~(np.isfinite(values) & (values >= 1) & (values == np.round(values))))
        if len(bad):
            report.add("schema", "predicted_output_tokens must be whole numbers >= 1: "
                       + _examples(rq["request_id"].astype(str).to_numpy()[bad]))
    params = metrics.get("params")
    if isinstance(params, dict) and params.get("predictor") is not None:
        from workbench.workload.predict import make_predictor

        try:
            make_predictor(str(params["predictor"]))
        except WorkbenchError:
            report.add("schema", f"params.predictor {params['predictor']!r} names no predictor")
    if "stolen_requests" in metrics:
        value = metrics["stolen_requests"]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= len(rq):
            report.add("metrics", f"stolen_requests is {value!r}, not a whole number in 0..{len(rq)}")


def validate_files(folder: str | Path, trace=None) -> ValidationReport:
    """:func:`validate` on a folder, turning unreadable files into a report instead of an exception."""
    try:
        return validate(Path(folder), trace=trace)
    except ScheduleFileError as exc:
        report = ValidationReport()
        report.add("schema", str(exc))
        return report
    except json.JSONDecodeError as exc:
        report = ValidationReport()
        report.add("schema", f"metrics.json is not valid JSON: {exc}")
        return report
