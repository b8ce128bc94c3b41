"""Traces: the requests to schedule (MODEL.md section 9).

A trace is a pandas DataFrame with columns ``request_id`` (unique int or str),
``input_tokens`` (int >= 1), ``output_tokens`` (int >= 1) and ``arrival_s``
(float >= 0, 0 when absent).  Everything that enters the package goes through
:func:`validate_trace`, so the rest of the code can trust its input.
"""

from __future__ import annotations

import functools

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from workbench._paths import MAX_TRACE_BYTES, data_dir, exact_floats, input_file
from workbench.errors import TraceError

TRACE_COLUMNS = ("request_id", "input_tokens", "output_tokens", "arrival_s")
REQUIRED_COLUMNS = TRACE_COLUMNS[:3]
#: Lengths above this are refused: no model has a context this long, and the
#: float arithmetic of the cost model would lose whole tokens.
MAX_TOKENS = 10_000_000
#: Arrival times above this (about 31 years) are refused: there float64 resolves only ~1e-7 s, and
#: beyond it (e.g. Unix timestamps in ns) iteration lengths would vanish below the clock's resolution.
MAX_ARRIVAL_S = 1e9

#: Named traces: name -> (file under data/traces, column used as the prompt length).
NAMED_TRACES = {
    "gsm8k-test": ("gsm8k-test.csv", "input_tokens"),
    "gsm8k-test-8shot": ("gsm8k-test.csv", "input_tokens_8shot"),
    "gsm8k-train": ("gsm8k-train.csv", "input_tokens"),
    "gsm8k-train-8shot": ("gsm8k-train.csv", "input_tokens_8shot"),
}


def list_traces() -> list[str]:
    """Names that :func:`load_trace` resolves without a path."""
    return list(NAMED_TRACES)


#: CSV columns read as text, never as numbers.
_LABEL_COLUMNS = ("request_id", "prefix_id", "prefix_hashes")
_PLAIN_INT = r"0|-?[1-9][0-9]{0,17}"


def ids_from_text(ids: pd.Series) -> pd.Series:
    """Ids as written: integers when every id is written as a plain integer (``7``, not ``007`` or
    ``1e3``), else the text itself.  Either way ``str(id)`` gives back what the file holds."""
    if len(ids) and ids.notna().all() and ids.astype(str).str.fullmatch(_PLAIN_INT).all():
        return ids.astype(np.int64)
    return ids


#: Compressed files pandas opens by their suffix; the format is the suffix before it (trace.jsonl.gz).
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip")


def _format_suffix(path: Path) -> str:
    """The suffix that names the format: ``.jsonl`` for ``trace.jsonl.gz`` (a gzip'd JSONL was read as CSV)."""
    suffixes = [x.lower() for x in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in _COMPRESSION_SUFFIXES:
        return suffixes[-2]
    return suffixes[-1] if suffixes else ""


def _read_file(path: Path) -> pd.DataFrame:
    suffix = _format_suffix(path)
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in {".jsonl", ".ndjson", ".json"}:
            with warnings.catch_warnings():
                # pandas only warns (for now) when JSON records are not all objects of one shape.
                warnings.simplefilter("error")
                # dtype=False: a field is what the JSON holds (true stays a bool, so it can be refused).
                try:
                    # utf-8-sig: a byte-order mark (Windows editors write one) is not a parse error.
                    return pd.read_json(path, lines=suffix != ".json", dtype=False, encoding="utf-8-sig")
                except AttributeError as exc:  # pandas 2 on a line that is not an object (pandas 3 warns)
                    raise ValueError(f"a line is not a JSON object ({exc})") from None
        # Ids are labels: read as text so 007 and 1e3 stay as written (ids_from_text keeps plain
        # integers as integers); prefix ids and hashes stay text (as numbers 007, 7 and 7.0 are one prefix).
        frame = pd.read_csv(path, dtype=dict.fromkeys(_LABEL_COLUMNS, str), **exact_floats())
        header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0].str.strip()
        if header.duplicated().any():
            # pandas would rename the second copy "NAME.1" and one of the two would be used silently.
            twice = str(header[header.duplicated()].iloc[0])
            raise TraceError(f"'{path}' has two columns named '{twice}'.", field=twice, fix="give each column once.")
        if "request_id" in frame.columns:
            frame["request_id"] = ids_from_text(frame["request_id"])
    except TraceError:
        raise
    except pd.errors.EmptyDataError:
        raise TraceError(f"'{path}' is empty.", fix="give a file with a header row and at least one request.") from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"'{path}' is not UTF-8 text ({exc.reason} at byte {exc.start}).",
                         fix="save the file as UTF-8 CSV.") from None
    except (ValueError, TypeError, Warning, pd.errors.ParserError, OSError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TraceError(f"cannot read '{path}' as {suffix.lstrip('.') or 'csv'}: {first}.",
                         fix="give a CSV, Parquet or JSONL file with columns "
                             "request_id, input_tokens, output_tokens[, arrival_s].") from None
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas turns the surplus leading fields of rows longer than the header into an index,
        # which would silently shift every value one column to the right.
        raise TraceError(f"'{path}' has rows with more fields than its header has names "
                         f"({len(frame.columns)}).", fix="give every row exactly one value per column, "
                         "or quote values that contain the separator.")
    return frame


def load_trace(source: str | Path | pd.DataFrame, *, prompt_column: str | None = None,
               format: str | None = None) -> pd.DataFrame:
    """Load and validate a trace from a shipped name, a file path, or a DataFrame.

    ``prompt_column`` picks another column as ``input_tokens`` (for example
    ``input_tokens_8shot``); named traces ending in ``-8shot`` set it.
    ``format`` names the file's format (:mod:`workbench.workload.formats`);
    by default it is detected from the columns.
    """
    from workbench.workload.formats import finish_trace, import_frame

    if isinstance(source, str) and source in NAMED_TRACES and format is None:
        # The shipped traces are read-only data: parse and validate each once per process, hand out copies.
        return _named_trace(source, prompt_column).copy()
    name = "trace"
    if isinstance(source, pd.DataFrame):
        frame = source
    else:
        text = str(source)
        if text in NAMED_TRACES:
            filename, column = NAMED_TRACES[text]
            path = data_dir() / "traces" / filename
            prompt_column = prompt_column or column
            name = text
        else:
            path = Path(text)
            name = str(path)
            try:
                exists = path.exists()
            except OSError:  # a name too long: input_file names it
                exists = True
            if not exists:
                raise TraceError(f"no trace named '{text[:80]}' and no such file.", field="trace",
                                 fix=f"use one of {', '.join(NAMED_TRACES)} or the path of a CSV, "
                                     "Parquet or JSONL file.")
        path = input_file(path, what="trace", field="trace", max_bytes=MAX_TRACE_BYTES, error=TraceError,
                          fix="give the path of a CSV, Parquet or JSONL file.")
        frame = _read_file(path)
    frame, trace_format = import_frame(frame, format=format, source=name)
    if prompt_column and prompt_column != "input_tokens":
        if prompt_column not in frame.columns:
            raise TraceError(f"column '{prompt_column}' is not in {name}.", field=prompt_column,
                             fix=f"use one of the columns {', '.join(map(str, frame.columns))}.")
        frame = frame.drop(columns=["input_tokens"], errors="ignore").rename(columns={prompt_column: "input_tokens"})
    return finish_trace(validate_trace(frame, source=name), frame, trace_format, source=name)


@functools.lru_cache(maxsize=8)
def _named_trace(name: str, prompt_column: str | None) -> pd.DataFrame:
    return load_trace(data_dir() / "traces" / NAMED_TRACES[name][0],
                      prompt_column=prompt_column or NAMED_TRACES[name][1])


def _bad_rows(mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(r) for r in rows[:5])
    return shown + (f" (and {len(rows) - 5} more)" if len(rows) > 5 else "")


def _booleans(raw: pd.Series) -> np.ndarray:
    """Which values are booleans (a bool column, or true/false inside a mixed JSON column)."""
    if pd.api.types.is_bool_dtype(raw):
        return np.ones(len(raw), dtype=bool)
    if raw.dtype == object:
        return np.fromiter((isinstance(v, (bool, np.bool_)) for v in raw), dtype=bool, count=len(raw))
    return np.zeros(len(raw), dtype=bool)


def _refuse_booleans(raw: pd.Series, column: str, fix: str) -> None:
    flags = _booleans(raw)
    if flags.any():
        row = int(np.flatnonzero(flags)[0])
        raise TraceError(f"{str(bool(raw.iloc[row])).lower()} is a boolean, not a number (rows {_bad_rows(flags)}).",
                         field=column, row=row, fix=fix)


def _lengths(frame: pd.DataFrame, column: str, source: str) -> np.ndarray:
    raw = frame[column]
    _refuse_booleans(raw, column, f"give {column} as a whole number of tokens >= 1.")
    numeric = pd.to_numeric(raw, errors="coerce")
    if pd.api.types.is_complex_dtype(numeric):
        raise TraceError("holds complex numbers.", field=column, fix=f"give {column} as a whole number of tokens >= 1.")
    values = numeric.to_numpy(dtype=float, na_value=np.nan)
    nonnumeric = np.isnan(values) & raw.notna().to_numpy()
    if nonnumeric.any():
        row = int(np.flatnonzero(nonnumeric)[0])
        raise TraceError(f"'{raw.iloc[row]}' is not a number (rows {_bad_rows(nonnumeric)}).",
                         field=column, row=row, fix=f"give {column} as a whole number of tokens >= 1.")
    missing = np.isnan(values)
    if missing.any():
        raise TraceError(f"is empty or NaN (rows {_bad_rows(missing)}).", field=column, row=int(np.flatnonzero(missing)[0]),
                         fix=f"give every request a whole number of {column} >= 1.")
    infinite = ~np.isfinite(values)
    if infinite.any():
        raise TraceError(f"is infinite (rows {_bad_rows(infinite)}).", field=column, row=int(np.flatnonzero(infinite)[0]),
                         fix=f"give {column} as a whole number of tokens >= 1.")
    fractional = values != np.round(values)
    if fractional.any():
        row = int(np.flatnonzero(fractional)[0])
        raise TraceError(f"{values[row]!r} is not a whole number (rows {_bad_rows(fractional)}).",
                         field=column, row=row, fix="token counts are integers; round them.")
    small = values < 1
    if small.any():
        row = int(np.flatnonzero(small)[0])
        raise TraceError(f"{int(values[row])} is below 1 (rows {_bad_rows(small)}).", field=column, row=row,
                         fix="every request has at least one prompt token and produces at least one output token.")
    huge = values > MAX_TOKENS
    if huge.any():
        row = int(np.flatnonzero(huge)[0])
        raise TraceError(f"{int(values[row])} exceeds {MAX_TOKENS:,} tokens (rows {_bad_rows(huge)}).",
                         field=column, row=row, fix="check the units: lengths are in tokens.")
    return values.astype(np.int64)


def validate_trace(frame: pd.DataFrame, *, source: str = "trace") -> pd.DataFrame:
    """Check ``frame`` against the data contract; return a clean copy.

    Rows keep their order (round-robin dispatch uses it).  Extra columns
    are kept, after the four of the contract, as they are (a predictor
    such as ``column:NAME`` reads them).  Rows are numbered from 0 in
    error messages, header excluded.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TraceError(f"{source} must be a table, got {type(frame).__name__}.")
    if frame.columns.nlevels > 1:
        raise TraceError(f"{source} has multi-level column names.", fix="give one header row.")
    frame = frame.rename(columns=lambda c: str(c).strip())
    repeated = frame.columns[frame.columns.duplicated()]
    if len(repeated):
        raise TraceError(f"{source} has two columns named '{repeated[0]}'.", field=str(repeated[0]),
                         fix="give each column once.")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise TraceError(f"{source} has no column '{missing[0]}' (columns: {', '.join(map(str, frame.columns)) or 'none'}).",
                         field=missing[0], fix="name the columns request_id, input_tokens, output_tokens[, arrival_s].")
    if len(frame) == 0:
        raise TraceError(f"{source} has no rows.", fix="give at least one request.")
    ids = frame["request_id"]
    if ids.isna().any():
        row = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise TraceError("is empty.", field="request_id", row=row, fix="give every request an id.")
    if pd.api.types.is_float_dtype(ids):
        if (ids != np.round(ids)).any():
            row = int(np.flatnonzero((ids != np.round(ids)).to_numpy())[0])
            raise TraceError(f"{ids.iloc[row]!r} is fractional.", field="request_id", row=row,
                             fix="use integer or text ids.")
        # Beyond 2**53 floats no longer hold every integer (and beyond 2**63 the cast wraps around).
        unsafe = ~(np.abs(ids.to_numpy(dtype=float)) <= 2.0**53)
        if unsafe.any():
            row = int(np.flatnonzero(unsafe)[0])
            raise TraceError(f"{ids.iloc[row]!r} is not an integer a float holds exactly.", field="request_id",
                             row=row, fix="use integer or text ids below 2**53.")
        ids = ids.astype(np.int64)
    elif not pd.api.types.is_integer_dtype(ids):
        ids = ids.astype(str).str.strip()
        spaced = ids.str.contains(r"\s", regex=True).to_numpy() | (ids == "").to_numpy()
        if spaced.any():
            row = int(np.flatnonzero(spaced)[0])
            raise TraceError(f"{ids.iloc[row]!r} is empty or contains whitespace.", field="request_id", row=row,
                             fix="exported timelines list ids separated by spaces; use ids without whitespace.")
    duplicated = ids.duplicated(keep="first").to_numpy()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        first = int(np.flatnonzero((ids == ids.iloc[row]).to_numpy())[0])
        raise TraceError(f"{ids.iloc[row]!r} repeats the id of row {first}.", field="request_id", row=row,
                         fix="give every request a unique id.")
    inputs = _lengths(frame, "input_tokens", source)
    outputs = _lengths(frame, "output_tokens", source)
    if "arrival_s" in frame.columns:
        raw = frame["arrival_s"]
        _refuse_booleans(raw, "arrival_s", "give arrival times in seconds from 0, or drop the column.")
        if pd.api.types.is_timedelta64_dtype(raw):
            # A duration since the start is a time in seconds (whatever unit numpy stores it in).
            raw = raw.dt.total_seconds()
        elif pd.api.types.is_datetime64_any_dtype(raw):
            raise TraceError("holds dates and times, not seconds from the first request.", field="arrival_s",
                             fix="subtract the first arrival and give seconds (or a duration column).")
        numeric = pd.to_numeric(raw, errors="coerce")
        if pd.api.types.is_complex_dtype(numeric):
            numeric = pd.Series(np.nan, index=raw.index)
        arrivals = numeric.to_numpy(dtype=float, na_value=np.nan)
        bad = ~np.isfinite(arrivals) | (arrivals < 0)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise TraceError(f"{raw.iloc[row]!r} is not a finite time >= 0 (rows {_bad_rows(bad)}).",
                             field="arrival_s", row=row, fix="give arrival times in seconds from 0, or drop the column.")
        late = arrivals > MAX_ARRIVAL_S
        if late.any():
            row = int(np.flatnonzero(late)[0])
            raise TraceError(f"{arrivals[row]:.6g} s is later than {MAX_ARRIVAL_S:.0e} s (rows {_bad_rows(late)}).",
                             field="arrival_s", row=row, fix="check the units: arrival times are in seconds from "
                             "the first request (a Unix timestamp needs the first arrival subtracted).")
    else:
        arrivals = np.zeros(len(frame))
    out = pd.DataFrame({"request_id": ids.to_numpy(), "input_tokens": inputs, "output_tokens": outputs,
                        "arrival_s": arrivals.astype(float)})
    for column in frame.columns:
        if column not in TRACE_COLUMNS:
            out[column] = frame[column].to_numpy()
    return out


def trace_digest(trace: pd.DataFrame) -> str:
    """A short, stable fingerprint of a validated trace (for caches and reports)."""
    h = hashlib.sha256()
    h.update("\x1f".join(map(str, trace["request_id"].tolist())).encode())
    for column in TRACE_COLUMNS[1:]:
        h.update(np.ascontiguousarray(trace[column].to_numpy()).tobytes())
    return h.hexdigest()[:16]


# -- synthetic traces ---------------------------------------------------------
def synthetic_trace(n_requests: int, *, seed: int | np.random.Generator = 0,
                    input_mean_tokens: float = 64.0, output_mean_tokens: float = 128.0,
                    sigma: float = 0.6, max_tokens: int = 4096,
                    rate_per_s: float | None = None, burstiness: float = 1.0) -> pd.DataFrame:
    """A seeded synthetic trace with log-normal lengths.

    Lengths are log-normal with the given means and log-space spread
    ``sigma``, rounded and clipped to ``[1, max_tokens]``.  With
    ``rate_per_s`` arrivals follow a renewal process at that mean rate; the
    gaps are gamma-distributed with shape ``1/burstiness`` (1 = Poisson, >1 =
    burstier).  Without it every request arrives at t=0, as in the paper.
    """
    if int(n_requests) < 1:
        raise TraceError(f"n_requests is {n_requests}.", field="n_requests", fix="ask for at least 1 request.")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    def lognormal(mean: float) -> np.ndarray:
        mu = np.log(mean) - sigma**2 / 2
        return np.clip(np.rint(rng.lognormal(mu, sigma, int(n_requests))), 1, max_tokens).astype(np.int64)

    inputs, outputs = lognormal(input_mean_tokens), lognormal(output_mean_tokens)
    if rate_per_s:
        shape = 1.0 / burstiness
        gaps = rng.gamma(shape, 1.0 / (rate_per_s * shape), int(n_requests))
        arrivals = np.cumsum(gaps) - gaps[0]
    else:
        arrivals = np.zeros(int(n_requests))
    return pd.DataFrame({"request_id": np.arange(int(n_requests)), "input_tokens": inputs,
                         "output_tokens": outputs, "arrival_s": arrivals})


def sample_trace(trace: pd.DataFrame, n_requests: int, *, seed: int | np.random.Generator = 0) -> pd.DataFrame:
    """A seeded random subset of ``trace`` (without replacement), in trace order."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    n = min(int(n_requests), len(trace))
    rows = np.sort(rng.choice(len(trace), size=n, replace=False))
    return trace.iloc[rows].reset_index(drop=True)
