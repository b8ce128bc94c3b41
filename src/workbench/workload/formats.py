"""Trace files in the formats people download, read as they are (MODEL.md section 9).

:func:`import_frame` turns a table read from a file into the workbench's
layout (``request_id``, ``input_tokens``, ``output_tokens``, ``arrival_s``),
plus the columns a format carries beyond it (prefix sharing, measured times).
The format is detected from the columns or named:

=========  ===================================================  ======================================
format     columns read                                         arrivals
=========  ===================================================  ======================================
workbench  request_id, input_tokens, output_tokens              ``arrival_s`` as given (0 when absent)
azure      TIMESTAMP, ContextTokens, GeneratedTokens            date-times, seconds from the first
vidur      [arrived_at,] num_prefill_tokens, num_decode_tokens  seconds, from the first (0 without)
vllm       request_id, input_toks, output_toks, queued_ts       ``queued_ts - min(queued_ts)``
mooncake   timestamp (ms), input_length, output_length          milliseconds, from the first
token-ids  input_toks, output_toks, input_tok_ids               ``arrival_time_ns``, from the first
=========  ===================================================  ======================================

``token-ids`` is a workload with its prompts' token ids (LLMServingSim's
``workloads/*.jsonl``): the ids become ``prefix_hashes`` over blocks of 16
tokens, each hash chained to the previous block's as vLLM's prefix cache keys
them (:func:`block_hash_chain`), so the trace says exactly which prompts share
which prefixes.

Arrivals are measured from the *earliest* timestamp, so the first request
arrives at 0 whatever the file's row order; rows keep the file's order.

Prefix columns (the contract with the engine's prefix cache; MODEL.md
section 7) are optional in every format and validated here:

* ``prefix_id`` (text) + ``prefix_tokens`` (int, 0 <= prefix_tokens <=
  input_tokens): rows that share a ``prefix_id`` share their first
  ``prefix_tokens`` prompt tokens and must agree on ``prefix_tokens``; an
  empty ``prefix_id`` means no shared prefix;
* ``prefix_hashes`` (space-separated block hash ids of the prompt, in order)
  + ``prefix_block_tokens`` (tokens per block): block ``k`` holds prompt
  tokens ``[k B, min((k+1) B, input_tokens))``; two prompts share their
  first ``k`` blocks when their first ``k`` hashes agree.  Mooncake's
  ``hash_ids`` map to these with ``B = 512``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from workbench.errors import TraceError

BASE_COLUMNS = ("request_id", "input_tokens", "output_tokens", "arrival_s")
PREFIX_ID_COLUMNS = ("prefix_id", "prefix_tokens")
PREFIX_HASH_COLUMNS = ("prefix_hashes", "prefix_block_tokens")
PREFIX_COLUMNS = PREFIX_ID_COLUMNS + PREFIX_HASH_COLUMNS
#: Mooncake's traces hash prompts in blocks of 512 tokens (kvcache-ai/Mooncake, FAST'25 trace README).
MOONCAKE_BLOCK_TOKENS = 512
#: vLLM hashes a prompt in blocks of its KV block size: 16 tokens unless the run says otherwise.
VLLM_HASH_BLOCK_TOKENS = 16
#: The measured per-request times of a vLLM run, kept as written (engine monotonic clock, seconds).
VLLM_TIMESTAMPS = ("arrival_time", "queued_ts", "scheduled_ts", "first_token_ts", "last_token_ts")
#: What the vLLM importer derives from them (seconds), for the fidelity report.
MEASURED_COLUMNS = ("measured_ttft_s", "measured_tpot_s", "measured_e2e_s")


@dataclass(frozen=True)
class TraceFormat:
    """A trace format: the columns that identify it and the function that converts it."""

    name: str
    required: tuple[str, ...]
    description: str
    convert: Callable[[pd.DataFrame, str], pd.DataFrame]
    #: columns of the converted table beyond BASE_COLUMNS and PREFIX_COLUMNS that loading keeps
    keeps: tuple[str, ...] = ()


def _row_ids(frame: pd.DataFrame) -> np.ndarray:
    return np.arange(len(frame), dtype=np.int64)


def _numbers(frame: pd.DataFrame, column: str, source: str, fix: str) -> np.ndarray:
    raw = frame[column]
    if pd.api.types.is_datetime64_any_dtype(raw):
        # pandas' JSON reader turns columns named like '*_time' into date-times; back to epoch seconds
        stamps = raw.dt.tz_localize(None) if getattr(raw.dt, "tz", None) is not None else raw
        return _epoch_ns(stamps) / 1e9
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise TraceError(f"{source}: {raw.iloc[row]!r} is not a finite number.", field=column, row=row, fix=fix)
    return values


def _epoch_ns(stamps: pd.Series) -> np.ndarray:
    # pandas 3 stores date-times at the resolution the text needs (s, ms, us): int64 is only ns after as_unit
    return stamps.dt.as_unit("ns").astype("int64").to_numpy()


def _seconds_from_first(values: np.ndarray) -> np.ndarray:
    return values - values.min()


def _convert_workbench(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    return frame


def _convert_azure(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    text = frame["TIMESTAMP"].astype(str).str.strip()
    # ISO 8601 date-times with up to 9 fractional digits parse exactly to nanoseconds (Azure writes 7).
    stamps = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
    bad = stamps.isna().to_numpy() | frame["TIMESTAMP"].isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise TraceError(f"{source}: {frame['TIMESTAMP'].iloc[row]!r} is not a date-time.", field="TIMESTAMP",
                         row=row, fix="write TIMESTAMP as 'YYYY-MM-DD HH:MM:SS.fffffff', as the Azure traces do.")
    ns = _epoch_ns(stamps)
    arrivals = (ns - ns.min()).astype(np.int64)
    out = pd.DataFrame({"request_id": _row_ids(frame), "input_tokens": frame["ContextTokens"].to_numpy(),
                        "output_tokens": frame["GeneratedTokens"].to_numpy(),
                        # whole seconds and the nanosecond rest apart, so no digit of the text is lost
                        "arrival_s": (arrivals // 1_000_000_000) + (arrivals % 1_000_000_000) / 1e9})
    return _with_extras(out, frame, ("TIMESTAMP", "ContextTokens", "GeneratedTokens"))


def _convert_vidur(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    # Vidur's length-only traces (no arrived_at) leave arrivals to a generator: here they all arrive at 0
    arrived = (_numbers(frame, "arrived_at", source, "give arrived_at in seconds.") if "arrived_at" in frame.columns
               else np.zeros(len(frame)))
    ids = frame["request_id"].to_numpy() if "request_id" in frame.columns else _row_ids(frame)
    out = pd.DataFrame({"request_id": ids, "input_tokens": frame["num_prefill_tokens"].to_numpy(),
                        "output_tokens": frame["num_decode_tokens"].to_numpy(),
                        "arrival_s": _seconds_from_first(arrived)})
    return _with_extras(out, frame, ("request_id", "arrived_at", "num_prefill_tokens", "num_decode_tokens"))


def _convert_vllm(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    fix = "give the engine's monotonic-clock times in seconds, as vLLM's request metrics write them."
    queued = _numbers(frame, "queued_ts", source, fix)
    ids = frame["request_id"].astype(str).to_numpy() if "request_id" in frame.columns else _row_ids(frame)
    out = pd.DataFrame({"request_id": ids, "input_tokens": frame["input_toks"].to_numpy(),
                        "output_tokens": frame["output_toks"].to_numpy(),
                        "arrival_s": _seconds_from_first(queued)})
    present = [c for c in VLLM_TIMESTAMPS if c in frame.columns]
    for column in present:
        out[column] = _numbers(frame, column, source, fix)
    if {"first_token_ts", "last_token_ts"} <= set(present):
        first, last = out["first_token_ts"].to_numpy(), out["last_token_ts"].to_numpy()
        early = first < queued
        if early.any():
            row = int(np.flatnonzero(early)[0])
            raise TraceError(f"{source}: the first token ({first[row]:.6f}) comes before the request was queued "
                             f"({queued[row]:.6f}).", field="first_token_ts", row=row,
                             fix="give queued_ts and first_token_ts on the same (engine) clock.")
        backwards = last < first
        if backwards.any():
            row = int(np.flatnonzero(backwards)[0])
            raise TraceError(f"{source}: the last token ({last[row]:.6f}) comes before the first "
                             f"({first[row]:.6f}).", field="last_token_ts", row=row,
                             fix="give last_token_ts >= first_token_ts on the same clock, or drop the request.")
        outputs = pd.to_numeric(frame["output_toks"], errors="coerce").to_numpy(dtype=float)
        out["measured_ttft_s"] = first - queued
        with np.errstate(divide="ignore", invalid="ignore"):
            out["measured_tpot_s"] = np.where(outputs > 1, (last - first) / (outputs - 1), np.nan)
        out["measured_e2e_s"] = last - queued
    return _with_extras(out, frame, ("request_id", "input_toks", "output_toks", *VLLM_TIMESTAMPS))


def _convert_mooncake(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    stamps_ms = _numbers(frame, "timestamp", source, "give timestamp in milliseconds, as Mooncake's traces do.")
    out = pd.DataFrame({"request_id": _row_ids(frame), "input_tokens": frame["input_length"].to_numpy(),
                        "output_tokens": frame["output_length"].to_numpy(),
                        "arrival_s": _seconds_from_first(stamps_ms) / 1e3})
    if "hash_ids" in frame.columns:
        hashes = []
        for row, value in enumerate(frame["hash_ids"]):
            if isinstance(value, (list, tuple, np.ndarray)):
                hashes.append(" ".join(str(v) for v in value))
            elif value is None or (isinstance(value, float) and np.isnan(value)):
                hashes.append("")
            else:
                raise TraceError(f"{source}: {value!r} is not a list of block hashes.", field="hash_ids", row=row,
                                 fix="give hash_ids as a JSON list of integers, as Mooncake's traces do.")
        out["prefix_hashes"] = hashes
        out["prefix_block_tokens"] = MOONCAKE_BLOCK_TOKENS
    return _with_extras(out, frame, ("timestamp", "input_length", "output_length", "hash_ids"))


def block_hash_chain(token_ids, block_tokens: int = VLLM_HASH_BLOCK_TOKENS) -> list[str]:
    """The chained hashes of the *full* blocks of ``token_ids``, as vLLM's prefix cache keys them: block k's
    hash covers its own tokens and block k-1's hash, so two prompts share block k's hash exactly when they
    share their first (k+1) x ``block_tokens`` tokens.  A partial last block has no hash (vLLM caches full
    blocks only).  64-bit BLAKE2b digests as hex text (a collision among a million blocks: about 1e-8)."""
    ids = np.asarray(token_ids, dtype=np.int64)
    parent = b""
    out = []
    for k in range(len(ids) // block_tokens):
        parent = hashlib.blake2b(parent + ids[k * block_tokens:(k + 1) * block_tokens].tobytes(),
                                 digest_size=8).digest()
        out.append(parent.hex())
    return out


def _convert_token_ids(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    ids = frame["request_id"].astype(str).to_numpy() if "request_id" in frame.columns else _row_ids(frame)
    arrival = (_seconds_from_first(_numbers(frame, "arrival_time_ns", source, "give arrival times in ns.")) / 1e9
               if "arrival_time_ns" in frame.columns else np.zeros(len(frame)))
    inputs = pd.to_numeric(frame["input_toks"], errors="coerce").to_numpy(dtype=float)
    hashes = []
    for row, tokens in enumerate(frame["input_tok_ids"]):
        if not isinstance(tokens, (list, tuple, np.ndarray)) or not all(
                isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in tokens):
            raise TraceError(f"{source}: input_tok_ids is not a list of token ids.", field="input_tok_ids", row=row,
                             fix="give each prompt's token ids as a JSON list of integers.")
        # Never more blocks than the prompt the row states (the ids may carry a template the count does not).
        n = min(len(tokens), int(inputs[row])) if np.isfinite(inputs[row]) else len(tokens)
        hashes.append(" ".join(block_hash_chain(tokens[:n])))
    out = pd.DataFrame({"request_id": ids, "input_tokens": frame["input_toks"].to_numpy(),
                        "output_tokens": frame["output_toks"].to_numpy(), "arrival_s": arrival,
                        "prefix_hashes": hashes, "prefix_block_tokens": VLLM_HASH_BLOCK_TOKENS})
    return _with_extras(out, frame, ("request_id", "input_toks", "output_toks", "arrival_time_ns",
                                     "input_tok_ids", "output_tok_ids"))


def _with_extras(out: pd.DataFrame, frame: pd.DataFrame, consumed: tuple[str, ...]) -> pd.DataFrame:
    """Carry the source's prefix columns over (a converted trace may name them too)."""
    for column in PREFIX_COLUMNS:
        if column in frame.columns and column not in consumed and column not in out.columns:
            out[column] = frame[column].to_numpy()
    return out


FORMATS: dict[str, TraceFormat] = {f.name: f for f in (
    TraceFormat("workbench", ("request_id", "input_tokens", "output_tokens"),
                "the workbench's own layout (MODEL.md section 9)", _convert_workbench),
    TraceFormat("azure", ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
                "Azure LLM inference traces (Azure/AzurePublicDataset, Splitwise)", _convert_azure),
    TraceFormat("vidur", ("num_prefill_tokens", "num_decode_tokens"),
                "Vidur / Splitwise processed traces (microsoft/vidur)", _convert_vidur),
    TraceFormat("vllm", ("input_toks", "output_toks", "queued_ts"),
                "vLLM benchmark / LLMServingSim requests.jsonl of a served run", _convert_vllm,
                keeps=VLLM_TIMESTAMPS + MEASURED_COLUMNS),
    TraceFormat("mooncake", ("timestamp", "input_length", "output_length"),
                "Mooncake JSONL traces (kvcache-ai/Mooncake)", _convert_mooncake),
    TraceFormat("token-ids", ("input_toks", "output_toks", "input_tok_ids"),
                "a workload with its prompts' token ids (LLMServingSim workloads/*.jsonl): prefixes hashed "
                "as vLLM does", _convert_token_ids),
)}
FORMAT_ALIASES = {"splitwise": "vidur", "llmservingsim": "vllm", "native": "workbench"}


def list_formats() -> list[str]:
    return list(FORMATS)


def _columns_text(frame: pd.DataFrame) -> str:
    return ", ".join(map(str, frame.columns)) or "none"


def _formats_text() -> str:
    return "; ".join(f"{f.name} ({', '.join(f.required)})" for f in FORMATS.values())


def detect_format(frame: pd.DataFrame, *, source: str = "trace") -> str:
    """The name of the format whose columns ``frame`` has (the workbench's own layout first)."""
    columns = {str(c).strip() for c in frame.columns}
    hits = [f.name for f in FORMATS.values() if set(f.required) <= columns]
    if not hits:
        # name the closest format's first missing column (the workbench layout wins ties)
        best = max(FORMATS.values(), key=lambda f: len(set(f.required) & columns))
        missing = next(c for c in best.required if c not in columns)
        raise TraceError(f"{source} has no column '{missing}', so its format cannot be told from its columns "
                         f"({_columns_text(frame)}).", field=missing,
                         fix=f"give the columns of one of the trace formats: {_formats_text()}; "
                             "or name the format with --format.")
    return hits[0]


def resolve_format(name: str) -> str:
    key = FORMAT_ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
    if key not in FORMATS:
        raise TraceError(f"unknown trace format '{name}'.", field="format",
                         fix=f"use one of {', '.join(FORMATS)} (or leave it out to detect it from the columns).")
    return key


def import_frame(frame: pd.DataFrame, *, format: str | None = None, source: str = "trace"
                 ) -> tuple[pd.DataFrame, str]:
    """``frame`` in the workbench layout (plus prefix and measured columns), and the format's name."""
    frame = frame.rename(columns=lambda c: str(c).strip())
    name = resolve_format(format) if format is not None else detect_format(frame, source=source)
    spec = FORMATS[name]
    missing = [c for c in spec.required if c not in frame.columns]
    if missing:
        raise TraceError(f"{source} is not in the '{name}' format: it has no column '{missing[0]}' "
                         f"(columns: {_columns_text(frame)}).", field=missing[0],
                         fix=f"give the columns {', '.join(spec.required)}, or another --format "
                             f"({', '.join(FORMATS)}), or leave --format out to detect it.")
    if len(frame) == 0:
        raise TraceError(f"{source} has no rows.", fix="give at least one request.")
    return spec.convert(frame, source), name


def finish_trace(trace: pd.DataFrame, imported: pd.DataFrame, format: str, *, source: str = "trace"
                 ) -> pd.DataFrame:
    """The validated ``trace`` with the prefix columns and the format's measured columns of ``imported``.

    Validation keeps the rows in order, so the columns align row for row.
    """
    keep = [c for c in (*PREFIX_COLUMNS, *FORMATS[format].keeps) if c in imported.columns]
    out = trace.copy()
    for column in keep:
        if column not in out.columns:
            out[column] = imported[column].to_numpy()
    out = validate_prefix_columns(out, source=source)
    out.attrs["format"] = format
    return out


def validate_prefix_columns(trace: pd.DataFrame, *, source: str = "trace") -> pd.DataFrame:
    """Check the prefix columns of a trace against the contract of the module docstring; a clean copy."""
    has_id = [c for c in PREFIX_ID_COLUMNS if c in trace.columns]
    has_hash = [c for c in PREFIX_HASH_COLUMNS if c in trace.columns]
    if not has_id and not has_hash:
        return trace
    if has_id and has_hash:
        raise TraceError(f"{source} has both {has_id[0]} and {has_hash[0]}.", field=has_hash[0],
                         fix="describe shared prefixes one way: prefix_id + prefix_tokens, or prefix_hashes + "
                             "prefix_block_tokens.")
    pair = PREFIX_ID_COLUMNS if has_id else PREFIX_HASH_COLUMNS
    lacking = [c for c in pair if c not in trace.columns]
    if lacking:
        raise TraceError(f"{source} has {pair[0] if lacking[0] == pair[1] else pair[1]} without {lacking[0]}.",
                         field=lacking[0], fix=f"give both {pair[0]} and {pair[1]}, or neither.")
    out = trace.copy()
    inputs = out["input_tokens"].to_numpy()
    if has_id:
        ids = out["prefix_id"].map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v))
                                   else str(v).strip())
        raw = out["prefix_tokens"]
        tokens = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
        tokens = np.where(np.isnan(tokens) & (ids == "").to_numpy() & raw.isna().to_numpy(), 0.0, tokens)
        bad = ~np.isfinite(tokens) | (tokens != np.round(tokens)) | (tokens < 0)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise TraceError(f"{raw.iloc[row]!r} is not a whole number of tokens >= 0.", field="prefix_tokens",
                             row=row, fix="give prefix_tokens as an integer (0 for no shared prefix).")
        long = tokens > inputs
        if long.any():
            row = int(np.flatnonzero(long)[0])
            raise TraceError(f"{int(tokens[row])} exceeds the request's {int(inputs[row])} input tokens.",
                             field="prefix_tokens", row=row, fix="a prefix is part of the prompt: give "
                             "prefix_tokens <= input_tokens.")
        orphan = (ids == "").to_numpy() & (tokens > 0)
        if orphan.any():
            row = int(np.flatnonzero(orphan)[0])
            raise TraceError(f"{int(tokens[row])} prefix tokens but no prefix_id.", field="prefix_id", row=row,
                             fix="name the shared prefix, or give prefix_tokens 0.")
        first_of: dict[str, int] = {}
        for row, (key, count) in enumerate(zip(ids, tokens)):
            if not key:
                continue
            first = first_of.setdefault(key, row)
            if tokens[first] != count:
                raise TraceError(f"prefix '{key}' has {int(count)} tokens here but {int(tokens[first])} in row "
                                 f"{first}.", field="prefix_tokens", row=row,
                                 fix="rows sharing a prefix_id share the same prefix: give them one prefix_tokens.")
        out["prefix_id"] = ids.to_numpy(dtype=object)
        out["prefix_tokens"] = tokens.astype(np.int64)
    else:
        raw = out["prefix_block_tokens"]
        block = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(block) | (block != np.round(block)) | (block < 1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise TraceError(f"{raw.iloc[row]!r} is not a whole number of tokens >= 1.", field="prefix_block_tokens",
                             row=row, fix="give the tokens per hash block (512 for Mooncake traces).")
        def as_text(v) -> str:
            if isinstance(v, (list, tuple, np.ndarray)):  # a JSON list, as Mooncake writes hash_ids
                return " ".join(str(x) for x in v)
            if v is None or (isinstance(v, float) and np.isnan(v)):
                return ""
            return " ".join(str(v).split())

        hashes = out["prefix_hashes"].map(as_text)
        counts = hashes.map(lambda s: len(s.split()) if s else 0).to_numpy()
        # the last block may be partial, so k blocks need more than (k - 1) B tokens
        over = (counts - 1) * block >= inputs
        over &= counts > 0
        if over.any():
            row = int(np.flatnonzero(over)[0])
            raise TraceError(f"{counts[row]} blocks of {int(block[row])} tokens are more than the request's "
                             f"{int(inputs[row])} input tokens need.", field="prefix_hashes", row=row,
                             fix="give one hash per block of the prompt (the last block may be partial).")
        out["prefix_hashes"] = hashes.to_numpy(dtype=object)
        out["prefix_block_tokens"] = block.astype(np.int64)
    return out


# -- describing a trace ---------------------------------------------------------
def prefix_summary(trace: pd.DataFrame) -> dict[str, float | int | str] | None:
    """How much prompt a prefix cache could reuse, in arrival order with an unbounded cache; None without prefix columns."""
    inputs = trace["input_tokens"].to_numpy()
    total = int(inputs.sum())
    order = np.argsort(trace["arrival_s"].to_numpy(), kind="stable")
    reused = np.zeros(len(trace), dtype=np.int64)
    if "prefix_id" in trace.columns:
        seen: set[str] = set()
        ids, tokens = trace["prefix_id"].to_numpy(), trace["prefix_tokens"].to_numpy()
        for i in order:
            if ids[i]:
                if ids[i] in seen:
                    reused[i] = tokens[i]
                seen.add(ids[i])
        groups = trace.loc[trace["prefix_id"] != "", "prefix_id"].value_counts()
        kind, n_groups, sharing = "prefix_id", int(len(groups)), int(groups[groups > 1].sum())
    elif "prefix_hashes" in trace.columns:
        seen_blocks: set[str] = set()
        hashes, block = trace["prefix_hashes"].to_numpy(), trace["prefix_block_tokens"].to_numpy()
        for i in order:
            blocks = hashes[i].split()
            hit = 0
            for h in blocks:
                if h not in seen_blocks:
                    break
                hit += 1
            reused[i] = min(hit * int(block[i]), int(inputs[i]))
            seen_blocks.update(blocks)
        kind = "prefix_hashes"
        n_groups = len(seen_blocks)
        sharing = int((reused > 0).sum())
    else:
        return None
    return {"kind": kind, "distinct": n_groups, "requests_sharing": sharing,
            "reusable_prompt_tokens": int(reused.sum()),
            "reusable_fraction": float(reused.sum() / total) if total else 0.0}


def describe_trace(trace: pd.DataFrame) -> dict[str, object]:
    """Format, size, arrival span and rate, token statistics and prefix sharing of a loaded trace."""
    arrivals = trace["arrival_s"].to_numpy()
    span = float(arrivals.max() - arrivals.min()) if len(arrivals) else 0.0
    tokens = {}
    for column in ("input_tokens", "output_tokens"):
        v = trace[column].to_numpy()
        tokens[column] = {"mean": float(v.mean()), "p50": float(np.percentile(v, 50)),
                          "p90": float(np.percentile(v, 90)), "p99": float(np.percentile(v, 99)),
                          "min": int(v.min()), "max": int(v.max()), "total": int(v.sum())}
    return {"format": trace.attrs.get("format", "workbench"), "requests": int(len(trace)),
            "arrival_span_s": span,
            "rate_per_s": float((len(trace) - 1) / span) if span > 0 else float("nan"),
            "tokens": tokens, "prefix": prefix_summary(trace),
            "extra_columns": [c for c in trace.columns if c not in BASE_COLUMNS]}
