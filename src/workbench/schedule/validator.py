"""Check a schedule from its exported files alone (MODEL.md section 9).

The validator trusts nothing the simulator knows: it reads ``timeline.csv``,
``requests.csv`` and ``metrics.json`` (or ``timeline.parquet`` and ``requests.parquet``;
or a :class:`~workbench.schedule.schema.Schedule` holding the same tables), optionally the
trace, and checks every rule:

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

Streaming.  Files are checked in bounded memory: requests and metrics are read whole, the
timeline in chunks (pandas' chunked reader for CSV, row group by row group for Parquet) gathered into
groups of whole clients of about :data:`GROUP_ROWS` rows; each group is checked by
:func:`_check_group` with the requests requests.csv puts on its clients, then dropped.  Only
``metrics`` (and ``trace``) look at all clients at once, from sums kept across groups
(:class:`_Totals`).  A rule over rows is added as a function in :data:`GROUP_RULES`.

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
from workbench.errors import ScheduleFileError, UnreadableFileError, WorkbenchError
from workbench.schedule.bounds import closed_form_lower_bound
from workbench.schedule.metrics import batch_sizes_array
from workbench.schedule.schema import (
    REQUEST_COLUMNS,
    TIMELINE_COLUMNS,
    ParquetFileError,
    Schedule,
    iter_timeline_file,
    read_metrics,
    read_requests,
    schedule_format,
)
from workbench.workload.trace import load_trace

RULES = ("schema", "iterations", "no-overlap", "ids", "prefill-once", "same-client", "decode-count",
         "decode-all", "batch-capacity", "kv-capacity", "tokens", "duration", "request-times", "metrics", "trace",
         # paged KV and measured cost models, checked by a replay (workbench.schedule.replay)
         "paged-rows", "recompute", "paged-tokens", "kv-blocks",
         # replicas that came and went during the run
         "replica-life",
         # pooled fleets: prefill and decode replicas, KV transfers (workbench.schedule.pools)
         "pools", "transfer", "transfer-memory")
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
    out = []
    for r in records:
        kind = r.get("kind", "linear") if isinstance(r, dict) else "linear"
        if kind != "linear":
            from workbench.costmodel.linear import PRESET_LOADERS

            if kind not in PRESET_LOADERS:
                raise ValueError(f"cost_model is of unknown kind {kind!r}")
            out.append(PRESET_LOADERS[kind](r, "metrics.cost_model"))
        else:
            out.append(LinearCostModel(**{k: r[k] for k in COEFFICIENTS}))
    return out


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


def validate(source: Schedule | str | Path, trace: pd.DataFrame | str | Path | None = None, *,
             group_rows: int | None = None) -> ValidationReport:
    """Check a schedule (a folder of exported files, or a :class:`Schedule`) against every rule.

    A folder is read as a stream: ``requests`` and ``metrics.json`` whole, the timeline in chunks
    gathered into groups of whole clients of about ``group_rows`` rows (:data:`GROUP_ROWS`), each
    checked and dropped before the next, so memory stays bounded however long the timeline is
    (the rows of one client are never split).  A :class:`Schedule` is checked as one group.
    """
    with np.errstate(all="ignore"):  # corrupted files may hold inf or 1e308: compare them, do not warn
        return _validate(source, trace, group_rows or GROUP_ROWS)


#: Timeline rows checked at a time when validating files (whole clients: a larger client is a group alone).
GROUP_ROWS = 1 << 16
#: Timeline rows read from a file at a time.
READ_ROWS = 1 << 16
_NUMBER_COLUMNS = {"client": np.int64, "iteration": np.int64, "n_requests": np.int64, "tokens": np.int64,
                   "start_s": float, "end_s": float}


def _checked(report: ValidationReport, *rules: str) -> None:
    for rule in rules:
        if rule not in report.checked:
            report.checked.append(rule)


@dataclass
class _Totals:
    """What the ``metrics`` rule needs from the timeline, summed group by group."""

    rows: int = 0
    makespan_s: float = 0.0
    slot_time_s: float = 0.0
    busy_time_s: float = 0.0
    mixed: bool = False
    spans: bool = False  # whether to keep per-client spans (only schedules whose replicas came and went)
    #: Per client, the first row's start and the last row's end (for the replica-life rule).
    first_start_s: dict = field(default_factory=dict)
    last_end_s: dict = field(default_factory=dict)

    def add(self, tl: pd.DataFrame, B: np.ndarray) -> None:
        # The sums of workbench.schedule.metrics.schedule_metrics, kept open across groups.
        if not len(tl):
            return
        start, end = tl["start_s"].to_numpy(float), tl["end_s"].to_numpy(float)
        duration = end - start
        decode = tl["kind"].isin(("decode", "mixed")).to_numpy()
        client = tl["client"].to_numpy(np.int64)
        n = tl["n_requests"].to_numpy(float)
        self.rows += len(tl)
        self.makespan_s = max(self.makespan_s, float(end.max()))
        self.slot_time_s += float(np.sum((n[decode] / B[client[decode]]) * duration[decode]))
        self.busy_time_s += float(duration.sum())
        self.mixed = self.mixed or bool((tl["kind"] == "mixed").any())
        if not self.spans:
            return
        spans = pd.DataFrame({"client": client, "start": start, "end": end}).groupby("client")
        for j, lo, hi in zip(spans["start"].min().index, spans["start"].min(), spans["end"].max()):
            self.first_start_s[int(j)] = min(lo, self.first_start_s.get(int(j), np.inf))
            self.last_end_s[int(j)] = max(hi, self.last_end_s.get(int(j), -np.inf))

    def metrics(self, clients: int) -> dict[str, float]:
        denom = clients * self.makespan_s
        return {"makespan_s": self.makespan_s,
                "slot_utilization": self.slot_time_s / denom if denom > 0 else 0.0,
                "busy_utilization": self.busy_time_s / denom if denom > 0 else 0.0}


def _int_ids(series: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """``(counts, values)`` of space-separated integer ids, split and parsed by Arrow's compute kernels.

    None when any id is not written as a plain integer (``0`` or ``[1-9][0-9]{0,17}``) or the ids are
    separated by anything but single spaces: those go the general way (:meth:`_Ids.lookup`).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        arr = pa.array(series, type=pa.string()) if series.dtype.kind == "O" else pa.array(series)
    except (pa.ArrowException, TypeError, ValueError):
        return None
    if not pa.types.is_string(arr.type) or arr.null_count:
        return None
    length = pc.utf8_length(arr).to_numpy(zero_copy_only=False)
    nonempty = length > 0
    lists = pc.split_pattern(arr.filter(pa.array(nonempty)), " ")
    counts = np.zeros(len(arr), dtype=np.int64)
    counts[nonempty] = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    tokens = pc.list_flatten(lists)
    if len(tokens) == 0:
        return counts, np.zeros(0, dtype=np.int64)
    size = pc.utf8_length(tokens)
    # An empty token (two spaces, a leading or trailing one), a non-digit, a leading zero or more
    # than 18 digits: the text would not be str(int) of its value.
    if (not pc.all(pc.ascii_is_decimal(tokens)).as_py() or pc.max(size).as_py() > 18
            or pc.any(pc.and_(pc.starts_with(tokens, "0"), pc.greater(size, 1))).as_py()):
        return None
    return counts, pc.cast(tokens, pa.int64()).to_numpy(zero_copy_only=False)


class _Ids:
    """The request ids of requests.csv, and the ids listed in timeline rows mapped onto them.

    Integer ids (the usual case) are looked up with numpy (sorted ids, ``searchsorted``); any other
    ids through a dictionary.  Indices returned are local to the current group of clients.
    """

    def __init__(self, rq: pd.DataFrame) -> None:
        self.text = rq["request_id"].astype(str).to_numpy()
        raw = rq["request_id"].to_numpy()
        self.numeric = raw.dtype.kind in "iu"
        if self.numeric:
            self.by_value = np.argsort(raw, kind="stable")
            self.sorted_values = raw[self.by_value].astype(np.int64)
            # Unique ids from 0 to n - 1 (the usual numbering): an id is its own sorted position.
            self.dense = bool(len(raw) and self.sorted_values[0] == 0 and self.sorted_values[-1] == len(raw) - 1)
        self._index_of: dict | None = None
        self.local_of = np.full(len(rq), -1, dtype=np.int64)
        self.mine = np.zeros(0, dtype=np.int64)

    def index_of(self) -> dict:
        if self._index_of is None:
            self._index_of = {rid: k for k, rid in enumerate(self.text)}
        return self._index_of

    def start_group(self, mine: np.ndarray) -> None:
        self.local_of[self.mine] = -1
        self.mine = mine
        self.local_of[mine] = np.arange(len(mine))

    def local_index(self) -> dict:
        """Id text -> local index, for the (few) prefill chunks of mixed rows."""
        return {self.text[g]: k for k, g in enumerate(self.mine.tolist())}

    def _global(self, series: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        parsed = _int_ids(series) if self.numeric else None
        if parsed is not None:
            counts, values = parsed
            pos = values.copy() if self.dense else np.searchsorted(self.sorted_values, values)
            pos[pos < 0] = len(self.sorted_values)
            pos_clipped = np.minimum(pos, max(len(self.sorted_values) - 1, 0))
            found = (pos < len(self.sorted_values)) & (self.sorted_values[pos_clipped] == values)
            glob = np.where(found, self.by_value[pos_clipped], -1)
            unknown = [str(v) for v in np.unique(values[~found])[:MAX_EXAMPLES + 1]]
            return counts, glob, np.array(unknown, dtype=object)
        lists = series.astype(str).str.split()
        counts = lists.str.len().to_numpy()
        flat = np.fromiter((x for ids in lists for x in ids), dtype=object, count=int(counts.sum()))
        index_of = self.index_of()
        glob = np.fromiter((index_of.get(x, -1) for x in flat), dtype=np.int64, count=len(flat))
        return counts, glob, np.array(sorted(set(flat[glob < 0])), dtype=object)

    def lookup(self, series: pd.Series, report: ValidationReport):
        """``(counts, row, req, foreign)``: ids per row, and each known id of this group as (row, local index).

        Unknown ids are reported under ``ids``; ``foreign`` lists ids of requests that requests.csv
        puts on a client outside this group (for ``same-client``).
        """
        counts, glob, unknown = self._global(series)
        row = np.repeat(np.arange(len(series)), counts)
        if len(unknown):
            report.add("ids", f"ids not in requests.csv: {_examples(unknown)}")
        local = np.where(glob >= 0, self.local_of[np.maximum(glob, 0)], -1)
        outside = (glob >= 0) & (local < 0)
        foreign = sorted(set(self.text[glob[outside]].tolist())) if outside.any() else []
        keep = local >= 0
        return counts, row[keep], local[keep], foreign


def _timeline_header(source, fmt: str | None) -> list[str]:
    if isinstance(source, pd.DataFrame):
        return list(source.columns)
    if fmt == "csv":
        try:
            return list(pd.read_csv(Path(source) / "timeline.csv", nrows=0).columns)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise ScheduleFileError(f"cannot read the schedule in '{source}': {exc}.") from None
    import pyarrow.parquet as pq

    from workbench.schedule.schema import PARQUET_TIMELINE_TYPES, _parquet_schema

    return list(_parquet_schema(Path(source) / "timeline.parquet", TIMELINE_COLUMNS, PARQUET_TIMELINE_TYPES).names
                if pq else [])


def _client_groups(rows_per_client: np.ndarray, group_rows: int) -> list[tuple[int, int]]:
    """Contiguous client ranges ``[lo, hi)`` of about ``group_rows`` rows each (one client at least)."""
    groups, lo, acc = [], 0, 0
    for j, count in enumerate(rows_per_client.tolist()):
        if acc and acc + count > group_rows:
            groups.append((lo, j))
            lo, acc = j, 0
        acc += count
    groups.append((lo, len(rows_per_client)))
    return groups


def _file_groups(folder: Path, fmt: str, clients: int, group_rows: int, report: ValidationReport):
    """The timeline of a folder as ``(lo, hi, rows of clients lo..hi-1)``, read twice as a stream.

    The first pass counts the rows of each client (the ``client`` column alone); the second gathers
    each group's rows and hands the group on as soon as all of them have been read.  A timeline
    written by workbench is sorted by client, so one group is held at a time; an unsorted one is
    still checked right, holding more.
    """
    counts = np.zeros(clients, dtype=np.int64)
    for chunk in iter_timeline_file(folder, fmt, rows=READ_ROWS * 4, columns=["client"]):
        try:
            client = pd.to_numeric(chunk["client"], errors="raise").to_numpy()
            if client.dtype.kind == "f" and not np.all(client == np.round(client)):
                raise ValueError("client numbers must be whole numbers")
            client = client.astype(np.int64)
        except (ValueError, TypeError, OverflowError) as exc:
            report.add("schema", f"cannot read the tables as numbers: {exc}")
            return
        if len(client) and (client.min() < 0 or client.max() >= clients):
            report.add("schema", f"client numbers must be 0..{clients - 1}")
            return
        counts += np.bincount(client, minlength=clients)
    groups = _client_groups(counts, group_rows)
    bounds = np.array([hi for _, hi in groups])
    expected = [int(counts[lo:hi].sum()) for lo, hi in groups]
    held: list[list[pd.DataFrame]] = [[] for _ in groups]
    have = [0] * len(groups)
    for g, (lo, hi) in enumerate(groups):
        if expected[g] == 0:
            yield lo, hi, None
    for chunk in iter_timeline_file(folder, fmt, rows=READ_ROWS):
        client = pd.to_numeric(chunk["client"], errors="coerce").to_numpy()
        which = np.searchsorted(bounds, client, side="right")
        for g in np.unique(which).tolist():
            part = chunk[which == g]
            held[g].append(part)
            have[g] += len(part)
            if have[g] == expected[g]:
                lo, hi = groups[g]
                frames, held[g] = held[g], []
                yield lo, hi, pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)


def _validate(source, trace, group_rows: int) -> ValidationReport:
    report = ValidationReport()
    if isinstance(source, Schedule):
        tl_all, rq, metrics = source.timeline.copy(), source.requests.copy(), dict(source.metrics)
        # Round-trip exactly as the files would hold them, so both paths check the same thing.
        if "request_ids" in tl_all.columns:
            tl_all["request_ids"] = tl_all["request_ids"].astype(str)
        fmt, header = None, list(tl_all.columns)
    else:
        folder = Path(source)
        fmt = schedule_format(folder)
        metrics = read_metrics(folder)
        rq = read_requests(folder, fmt)
        header = _timeline_header(folder, fmt)
    if trace is not None:
        trace = load_trace(trace)

    # -- schema ------------------------------------------------------------------------
    _checked(report, "schema")
    missing = [c for c in TIMELINE_COLUMNS if c not in header]
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
        for col in ("client", "input_tokens", "output_tokens"):
            rq[col] = pd.to_numeric(rq[col], errors="raise").astype(np.int64)
        for col in ("arrival_s", "prefill_start_s", "first_token_s", "finish_s"):
            rq[col] = pd.to_numeric(rq[col], errors="raise").astype(float)
    except (ValueError, TypeError, KeyError, OverflowError, WorkbenchError) as exc:
        report.add("schema", f"cannot read the tables as numbers: {exc}")
        return report
    if ((rq["client"] < 0) | (rq["client"] >= clients)).any():
        report.add("schema", f"client numbers must be 0..{clients - 1}")
        return report
    rq_ids = rq["request_id"].astype(str).to_numpy()
    if len(pd.unique(rq_ids)) != len(rq_ids):
        report.add("schema", "requests.csv repeats a request_id")
        return report
    if len(rq_ids) == 0:
        report.add("schema", "requests.csv lists no request (a trace has at least one)")
        return report

    from workbench.schedule.pools import is_pooled

    if is_pooled(metrics):  # prefill and decode pools: a replay of its own (workbench.schedule.pools)
        return _validate_pooled(source, tl_all if fmt is None else None, rq, metrics, models, B, clients, fmt,
                                header, trace, report)

    # -- paged KV, or a measured cost model: a replay of the whole timeline -----------------------------
    if metrics.get("kv_mode") == "paged" or any(type(m) is not LinearCostModel for m in models):
        # Requests may be preempted and recomputed, or each row is priced on its contexts: the rules are
        # checked by replaying each client's rows in order (workbench.schedule.replay), on the whole timeline.
        if fmt is not None:
            tl_all = pd.concat(list(iter_timeline_file(folder, fmt)), ignore_index=True) \
                if header else pd.DataFrame(columns=TIMELINE_COLUMNS)
        try:
            for col in ("client", "iteration", "n_requests", "tokens"):
                tl_all[col] = pd.to_numeric(tl_all[col], errors="raise").astype(np.int64)
            for col in ("start_s", "end_s"):
                tl_all[col] = pd.to_numeric(tl_all[col], errors="raise").astype(float)
        except (ValueError, TypeError, OverflowError) as exc:
            report.add("schema", f"cannot read the timeline as numbers: {exc}")
            return report
        if ((tl_all["client"] < 0) | (tl_all["client"] >= clients)).any():
            report.add("schema", f"client numbers must be 0..{clients - 1}")
            return report
        if metrics.get("kv_mode") != "paged" and (tl_all["kind"] == "preempt").any():
            report.add("schema", "preempt rows appear only in schedules with metrics.kv_mode = paged")
            return report
        from workbench.schedule.replay import validate_paged

        validate_paged(tl_all, rq, metrics, models, B, clients, report, close=_close, examples=_examples,
                       abs_tol_s=ABS_TOL_S, trace=trace)
        totals = _Totals(spans="replicas" in metrics)
        totals.add(tl_all, B)
        _check_metrics(rq, rq_ids, metrics, clients, B, models, totals, trace, report)
        return report

    # -- the timeline, group by group of clients ---------------------------------------------------
    ids = _Ids(rq)
    rq_client = rq["client"].to_numpy()
    by_client = np.argsort(rq_client, kind="stable")
    client_bounds = np.searchsorted(rq_client[by_client], np.arange(clients + 1))
    totals = _Totals(spans="replicas" in metrics)
    groups = (iter([(0, clients, tl_all)]) if fmt is None
              else _file_groups(folder, fmt, clients, group_rows, report))
    for lo, hi, tl in groups:
        mine = np.sort(by_client[client_bounds[lo]:client_bounds[hi]])
        if tl is None:
            tl = pd.DataFrame({c: pd.Series(dtype=object) for c in header})
        if not _group_schema(tl, clients, report):
            return report
        ids.start_group(mine)
        rq_g = rq.iloc[mine].reset_index(drop=True) if fmt is not None else rq
        ok = _check_group(tl, rq_g, ids, metrics, clients, B, models, report)
        totals.add(tl, B)
        if not ok:
            return report
    if any(v.rule == "schema" for v in report.violations):
        return report  # the timeline could not be read (e.g. client numbers out of range): stop here
    _check_metrics(rq, rq_ids, metrics, clients, B, models, totals, trace, report)
    return report


def _validate_pooled(source, tl_all, rq, metrics, models, B, clients, fmt, header, trace,
                     report: ValidationReport) -> ValidationReport:
    """A pooled fleet's schedule (MODEL.md section 9, "Pools and KV transfers"), from its files or object."""
    from workbench.schedule.pools import validate_pooled
    from workbench.schedule.schema import read_transfers

    if fmt is not None:
        folder = Path(source)
        tl_all = pd.concat(list(iter_timeline_file(folder, fmt)), ignore_index=True) \
            if header else pd.DataFrame(columns=TIMELINE_COLUMNS)
        transfers = read_transfers(folder, fmt)
    else:
        transfers = source.transfers
    try:
        for col in ("client", "iteration", "n_requests", "tokens"):
            tl_all[col] = pd.to_numeric(tl_all[col], errors="raise").astype(np.int64)
        for col in ("start_s", "end_s"):
            tl_all[col] = pd.to_numeric(tl_all[col], errors="raise").astype(float)
        rq["prefill_client"] = pd.to_numeric(rq.get("prefill_client", rq["client"]), errors="raise").astype(np.int64)
        if transfers is not None:
            for col in ("from_client", "to_client", "tokens"):
                transfers[col] = pd.to_numeric(transfers[col], errors="raise").astype(np.int64)
    except (ValueError, TypeError, OverflowError, KeyError) as exc:
        report.add("schema", f"cannot read the timeline or transfers as numbers: {exc}")
        return report
    for frame, cols in ((tl_all, ("client",)), (rq, ("prefill_client",)),
                        (transfers if transfers is not None else pd.DataFrame(), ("from_client", "to_client"))):
        for col in cols:
            if col in frame.columns and ((frame[col] < 0) | (frame[col] >= clients)).any():
                report.add("schema", f"{col} numbers must be 0..{clients - 1}")
                return report
    got = validate_pooled(tl_all, rq, transfers, metrics, models, B, clients, report, close=_close,
                          examples=_examples, abs_tol_s=ABS_TOL_S, checked=_checked)
    _check_predictions_and_stealing(rq, metrics, report)
    report.summary = {"clients": clients, "iterations": int((tl_all["kind"] != "preempt").sum()),
                      "requests": len(rq), **got}
    if trace is not None:
        _checked(report, "trace")
        rq_ids = rq["request_id"].astype(str).to_numpy()
        t_ids = trace["request_id"].astype(str).to_numpy()
        if set(t_ids) != set(rq_ids) or len(t_ids) != len(rq_ids):
            report.add("trace", "requests.csv and the trace hold different request ids")
    return report


def _group_schema(tl: pd.DataFrame, clients: int, report: ValidationReport) -> bool:
    """The ``schema`` rule on one group of timeline rows (in place: numbers become numbers)."""
    try:
        for col, dtype in _NUMBER_COLUMNS.items():
            tl[col] = pd.to_numeric(tl[col], errors="raise").astype(dtype)
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        report.add("schema", f"cannot read the tables as numbers: {exc}")
        return False
    bad_kind = ~tl["kind"].isin(["prefill", "decode", "mixed"])
    if bad_kind.any():
        report.add("schema", "kind must be prefill or decode (or mixed, for chunked prefill); rows "
                   f"{_examples(np.flatnonzero(bad_kind.to_numpy()))}")
        return False
    if (tl["kind"] == "mixed").any() and not {"prefill_ids", "prefill_tokens"} <= set(tl.columns):
        report.add("schema", "mixed rows need the columns prefill_ids and prefill_tokens")
        return False
    if ((tl["client"] < 0) | (tl["client"] >= clients)).any():
        report.add("schema", f"client numbers must be 0..{clients - 1}")
        return False
    return True


def _check_group(tl: pd.DataFrame, rq: pd.DataFrame, ids: _Ids, metrics: dict, clients: int, B: np.ndarray,
                 models: list, report: ValidationReport) -> bool:
    """Every rule that reads timeline rows, on the rows of a group of clients and their requests.

    ``rq`` holds the requests requests.csv puts on these clients (all of them, for a Schedule
    checked as one group).  False when the group stops the check (a schema error).
    """
    violations_before = len(report.violations)
    rq_ids = rq["request_id"].astype(str).to_numpy()
    tl = tl.sort_values(["client", "iteration"], kind="stable").reset_index(drop=True)
    client = tl["client"].to_numpy()
    start = tl["start_s"].to_numpy()
    end = tl["end_s"].to_numpy()
    is_prefill = (tl["kind"] == "prefill").to_numpy()
    is_mixed_kind = (tl["kind"] == "mixed").to_numpy()  # again, in the sorted order
    n_req = tl["n_requests"].to_numpy()

    # -- iterations and overlap ---------------------------------------------------------
    _checked(report, "iterations", "no-overlap")
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
    _checked(report, "ids")
    counts, row, req, foreign = ids.lookup(tl["request_ids"], report)
    bad = np.flatnonzero(counts != n_req)
    if len(bad):
        report.add("ids", "n_requests differs from the number of request_ids: "
                   + _examples(f"client {client[r]} iteration {tl['iteration'].iloc[r]}" for r in bad))
    if foreign:
        report.add("same-client", f"requests appear on a client other than requests.csv's: {_examples(foreign)}")
    # Entries come in row order; sorted by request (stably) they are in iteration order per request,
    # and a request listed twice in one row shows as two equal neighbours.
    by_req = np.argsort(req, kind="stable")
    req_sorted, row_sorted = req[by_req], row[by_req]
    dup = np.flatnonzero((req_sorted[1:] == req_sorted[:-1]) & (row_sorted[1:] == row_sorted[:-1])) + 1
    if len(dup):
        report.add("ids", "a request is listed twice in one iteration: "
                   + _examples(f"{rq_ids[req_sorted[d]]} in client {client[row_sorted[d]]} iteration "
                               f"{tl['iteration'].iloc[row_sorted[d]]}" for d in dup))

    # Prefill chunks of mixed rows (none in files without mixed rows): entries (row, request, length, prior).
    ch_row, ch_req, ch_len = _prefill_chunks(tl, ids.local_index(), report, client)
    _check_empty_rows(tl, counts, ch_row, is_mixed_kind, client, report)
    ch_iter = tl["iteration"].to_numpy()[ch_row]

    l = rq["input_tokens"].to_numpy()
    o = rq["output_tokens"].to_numpy()
    n = len(rq)
    entry_prefill = is_prefill[row]
    entry_client = client[row]
    entry_iter = tl["iteration"].to_numpy()[row]

    # -- prefill once, same client, decode count -----------------------------------------
    _checked(report, "prefill-once", "same-client", "decode-count")
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
    structural_ok = len(report.violations) == violations_before
    _checked(report, "decode-all")
    if structural_ok:
        _check_decode_all(tl, client, counts, is_prefill, rq["client"].to_numpy(), o, req, row, entry_prefill,
                          ch_req, ch_row, rq_ids, report)

    # -- batch and KV capacity -------------------------------------------------------------
    _checked(report, "batch-capacity")
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
        _checked(report, "kv-capacity")
        caps = metrics["kv_capacity_tokens"]
        caps = caps if isinstance(caps, list) else [caps] * clients
        try:
            cap = np.array([np.inf if c is None else float(c) for c in caps])
            if len(cap) != clients or isinstance(metrics["kv_capacity_tokens"], (bool, dict)):
                raise ValueError
        except (ValueError, TypeError):
            report.add("schema", f"metrics.kv_capacity_tokens is {metrics['kv_capacity_tokens']!r}, "
                       f"not one capacity or one per client")
            return False
        reserved = holding((l + o).astype(float))
        over = np.flatnonzero(reserved > cap[client])
        if len(over):
            report.add("kv-capacity", "reserved KV tokens exceed the capacity: "
                       + _examples(f"client {client[r]} iteration {tl['iteration'].iloc[r]}" for r in over))

    # -- tokens and durations ----------------------------------------------------------------
    _checked(report, "tokens", "duration")
    if structural_ok:
        order = by_req  # by request, then iteration (see ids)
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
    _checked(report, "request-times")
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

    group = Group(tl=tl, rq=rq, rq_ids=rq_ids, metrics=metrics, clients=clients, B=B, models=models,
                  client=client, start=start, end=end, is_prefill=is_prefill, is_mixed=is_mixed_kind,
                  n_requests=n_req, counts=counts, row=row, req=req, ch_row=ch_row, ch_req=ch_req, ch_len=ch_len,
                  structural_ok=structural_ok and len(report.violations) == violations_before)
    for rule in GROUP_RULES:
        rule(group, report)
    return True


@dataclass
class Group:
    """One group of timeline rows (whole clients, sorted by client and iteration) as a rule sees it.

    Rows are indexed 0..len(tl)-1; requests 0..len(rq)-1 are the requests requests.csv puts on these
    clients.  An *entry* is one listed id: ``row[e]`` lists request ``req[e]`` (ids of other groups or
    unknown ones already reported and left out); entries are in row order.  ``ch_*`` are the prompt
    chunks of mixed rows the same way.  ``structural_ok``: no rule broken so far in this group.
    """

    tl: pd.DataFrame
    rq: pd.DataFrame
    rq_ids: np.ndarray
    metrics: dict
    clients: int
    B: np.ndarray
    models: list
    client: np.ndarray
    start: np.ndarray
    end: np.ndarray
    is_prefill: np.ndarray
    is_mixed: np.ndarray
    n_requests: np.ndarray
    counts: np.ndarray
    row: np.ndarray
    req: np.ndarray
    ch_row: np.ndarray
    ch_req: np.ndarray
    ch_len: np.ndarray
    structural_ok: bool

    def where(self, r: int) -> str:
        return f"client {self.client[r]} iteration {self.tl['iteration'].iloc[r]}"


#: More rules over a group of rows: ``rule(group: Group, report: ValidationReport) -> None``, run in
#: this order on every group after the built-in ones (add the rule's name to :data:`RULES` and call
#: ``_checked(report, name)`` in it).  A rule sees whole clients, so any per-client or per-request
#: check fits; a rule that needs all clients at once belongs in :func:`_check_metrics`.
GROUP_RULES: list = []


def _check_metrics(rq: pd.DataFrame, rq_ids: np.ndarray, metrics: dict, clients: int, B: np.ndarray, models: list,
                   totals: _Totals, trace: pd.DataFrame | None, report: ValidationReport) -> None:
    """``metrics`` (from the sums over all groups), predictions and stealing, and ``trace``."""
    n = len(rq)
    _checked(report, "metrics")
    recomputed = totals.metrics(clients)
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
        # A measured model is bounded through its linear lower model; with prefix caching a prompt may skip
        # its cached part, so the closed form of full prompts does not bind the schedule's bound.
        bound_models = [m if type(m) is LinearCostModel else getattr(m, "bound_model", lambda: None)()
                        for m in models]
        if all(m == models[0] for m in models) and bound_models[0] is not None \
                and not metrics.get("prefix_caching"):
            trace_view = rq.rename(columns={})[["input_tokens", "output_tokens", "arrival_s"]]
            closed = closed_form_lower_bound(trace_view, clients, B, bound_models[0])
            if totals.mixed:  # mixed batching pays no a_p per prefill stage: its own bound
                from workbench.schedule.bounds import chunked_lower_bound

                closed = chunked_lower_bound(trace_view, clients, B, bound_models[0])
            if lb < closed.value_s * (1 - REL_TOL) - ABS_TOL_S:
                report.add("metrics", f"lower_bound_s {lb} is below the closed-form bound {closed.value_s}")
    _check_predictions_and_stealing(rq, metrics, report)
    if "replicas" in metrics:
        _check_replica_lives(metrics, clients, recomputed["makespan_s"], totals, report)
    report.summary = {"clients": clients, "iterations": totals.rows, "requests": n, **recomputed}

    # -- trace ---------------------------------------------------------------------------------------
    if trace is not None:
        _checked(report, "trace")
        t_ids = trace["request_id"].astype(str).to_numpy()
        if set(t_ids) != set(rq_ids) or len(t_ids) != len(rq_ids):
            report.add("trace", "requests.csv and the trace hold different request ids")
        else:
            aligned = trace.set_index(trace["request_id"].astype(str)).loc[rq_ids]
            for column in ("input_tokens", "output_tokens", "arrival_s"):
                bad = np.flatnonzero(~_close(aligned[column].to_numpy(float), rq[column].to_numpy(float)))
                if len(bad):
                    report.add("trace", f"{column} differs from the trace for {_examples(rq_ids[bad])}")


def _check_replica_lives(metrics: dict, clients: int, makespan_s: float, totals: _Totals,
                         report: ValidationReport) -> None:
    """Replicas that came and went (MODEL.md section 11.4), rule ``replica-life``.

    ``metrics.replicas`` lists one life per client: ``added_s <= ready_s``, ``left_s`` after ready or
    null (held to the end); every row of a replica lies in ``[ready_s, left_s]``; and
    ``replica_seconds`` is the sum of ``(left_s or makespan) - added_s``.
    """
    _checked(report, "replica-life")
    lives = metrics["replicas"]
    if not isinstance(lives, list) or [r.get("replica") if isinstance(r, dict) else None
                                       for r in lives] != list(range(clients)):
        report.add("replica-life", f"metrics.replicas must list replicas 0..{clients - 1} in order")
        return
    held_s = 0.0
    for life in lives:
        j, added, ready, left = life["replica"], life.get("added_s"), life.get("ready_s"), life.get("left_s")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (added, ready)) \
                or not (left is None or isinstance(left, (int, float))) or not 0 <= added <= ready:
            report.add("replica-life", f"replica {j}: added_s {added!r}, ready_s {ready!r}, left_s {left!r} are "
                                       "not times with added_s <= ready_s")
            continue
        end = makespan_s if left is None else float(left)
        if j in totals.first_start_s and totals.first_start_s[j] < ready - ABS_TOL_S:
            report.add("replica-life", f"replica {j} runs an iteration at {totals.first_start_s[j]} s, before it "
                                       f"is ready at {ready} s")
        if j in totals.last_end_s and totals.last_end_s[j] > end * (1 + REL_TOL) + ABS_TOL_S:
            report.add("replica-life", f"replica {j} runs until {totals.last_end_s[j]} s, after it left at {end} s")
        held_s += max(end, added) - added
    if not _close(metrics.get("replica_seconds", float("nan")), held_s):
        report.add("replica-life", f"replica_seconds is {metrics.get('replica_seconds')!r} but recomputes to "
                                   f"{held_s!r}")


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
    except (ParquetFileError, UnreadableFileError):
        raise  # a truncated Parquet file, or a folder where a file should be: input errors (exit status 2)
    except ScheduleFileError as exc:
        report = ValidationReport()
        report.add("schema", str(exc))
        return report
    except json.JSONDecodeError as exc:
        report = ValidationReport()
        report.add("schema", f"metrics.json is not valid JSON: {exc}")
        return report
