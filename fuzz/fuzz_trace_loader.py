"""Fuzz the trace loader: ``load_trace`` on generated files, ``validate_trace`` on generated tables.

Run:  python fuzz/fuzz_trace_loader.py --minutes 5 [--seed N] [--verbose]

Inputs are CSV text built from hostile cells (huge, negative, fractional, NaN,
infinite, text, quotes, separators, unicode, empty), odd headers (missing,
duplicated, padded, extra columns), ragged rows, other separators and line
ends, other encodings (UTF-16, Latin-1, a BOM, random bytes), JSONL records,
(truncated) Parquet files, and pandas DataFrames with mixed Python objects.

Contract: every input is either refused with a ``TraceError`` (a
``WorkbenchError``) or accepted as a trace that meets MODEL.md section 9:
exactly the columns request_id, input_tokens, output_tokens, arrival_s; at
least one row; unique ids (also as text, as the exported files write them),
text ids without whitespace; integer lengths in [1, MAX_TOKENS]; finite
arrival times >= 0.  One accepted trace in four is also simulated, exported,
read back and validated against itself: the validator must accept it.
"""

from __future__ import annotations

import io
import itertools
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Invariant, main  # noqa: E402

from workbench.costmodel.linear import LinearCostModel  # noqa: E402
from workbench.errors import WorkbenchError  # noqa: E402
from workbench.workload.trace import MAX_TOKENS, TRACE_COLUMNS, load_trace, validate_trace  # noqa: E402

COLUMNS = list(TRACE_COLUMNS)
ODD_COLUMNS = ["foo", " request_id ", "Request_ID", "", "input_tokens_8shot", "arrival", "0", "request_id;x"]
SPECIAL = ["", " ", "nan", "NaN", "inf", "-inf", "Infinity", "1e3", "1e400", "1.0", "1.5", "0", "-0", "+1", "01",
           "0x10", "1_000", "true", "True", "None", "null", "NA", "#N/A", " 7 ", "7 ", '"8"', "\u0663", "\uff11\uff12",
           str(MAX_TOKENS), str(MAX_TOKENS + 1), "9" * 30, "a b", "\u00e9", "\t", "'", '"', ",", "\\", "-1", "2.0e0"]
CELL = st.one_of(
    st.integers(1, 5000).map(str),
    st.integers(-5, 5).map(str),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(SPECIAL),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=5),
)
HEADER = st.one_of(
    st.just(COLUMNS[:3]), st.just(COLUMNS),
    st.permutations(COLUMNS),
    st.lists(st.sampled_from(COLUMNS + ODD_COLUMNS), min_size=0, max_size=6),
    st.lists(st.sampled_from(COLUMNS), min_size=2, max_size=4).map(lambda c: c + ["input_tokens"]),
)


@st.composite
def csv_file(draw) -> tuple[str, bytes]:
    header = draw(HEADER)
    width = len(header)
    rows = draw(st.lists(st.lists(CELL, min_size=max(0, width - 1), max_size=width + 1), max_size=8))
    if draw(st.booleans()):  # mostly well-formed numbers, so that deeper checks are reached
        rows = [[str(draw(st.integers(0, 40))) if c == "request_id" else str(draw(st.integers(1, 300)))
                 if c in ("input_tokens", "output_tokens") else cell
                 for c, cell in itertools.zip_longest(header, row, fillvalue="")] for row in rows]
    sep = draw(st.sampled_from([",", ",", ",", ";", "\t"]))
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = eol.join(sep.join(r) for r in [header, *rows]) + draw(st.sampled_from([eol, "", eol * 3]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252"]))
    data = text.encode(encoding, errors="replace")
    if draw(st.integers(0, 9)) == 0:
        data = draw(st.binary(max_size=40)) + data[: draw(st.integers(0, len(data)))]
    suffix = draw(st.sampled_from([".csv", ".csv", ".csv", ".txt", "", ".CSV", ".tsv"]))
    return suffix, data


@st.composite
def near_valid_csv(draw) -> tuple[str, bytes]:
    """The canonical header and valid rows, with a few hostile cells: reaches the deeper checks."""
    header = draw(st.sampled_from([COLUMNS[:3], COLUMNS]))
    n = draw(st.integers(1, 30))
    ids = draw(st.one_of(st.just([str(i) for i in range(n)]),
                         st.lists(st.integers(-(2**63), 2**63).map(str) | st.text(max_size=4) | st.sampled_from(SPECIAL),
                                  min_size=n, max_size=n)))
    rows = [[ids[i], str(draw(st.integers(1, 5000))), str(draw(st.integers(1, 500)))]
            + ([repr(draw(st.floats(0, 1e6)))] if len(header) == 4 else []) for i in range(n)]
    for _ in range(draw(st.integers(0, 2))):
        r, c = draw(st.integers(0, n - 1)), draw(st.integers(0, len(header) - 1))
        rows[r][c] = draw(CELL)
    text = "\n".join(",".join(r) for r in [header, *rows]) + "\n"
    return ".csv", text.encode("utf-8")


JSON_VALUE = st.recursive(st.none() | st.booleans() | st.integers(-(2**66), 2**66) | st.floats() | st.text(max_size=4),
                          lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
                          max_leaves=4)


@st.composite
def jsonl_file(draw) -> tuple[str, bytes]:
    keys = st.sampled_from(COLUMNS + ODD_COLUMNS)
    records = draw(st.lists(st.one_of(
        st.fixed_dictionaries({"request_id": st.integers(0, 20) | st.text(max_size=3),
                               "input_tokens": st.integers(-2, 500) | JSON_VALUE,
                               "output_tokens": st.integers(-2, 500) | JSON_VALUE},
                              optional={"arrival_s": st.floats() | JSON_VALUE}),
        st.dictionaries(keys, JSON_VALUE, max_size=5),
        JSON_VALUE,
    ), max_size=6))
    lines = []
    for r in records:
        try:
            lines.append(json.dumps(r, allow_nan=True))
        except (TypeError, ValueError):
            lines.append("{")
    text = "\n".join(lines)
    if draw(st.integers(0, 5)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    suffix = draw(st.sampled_from([".jsonl", ".ndjson", ".json"]))
    if suffix == ".json" and draw(st.booleans()):
        text = json.dumps(records, allow_nan=True, default=str)
    return suffix, text.encode("utf-8")


OBJECTS = st.one_of(
    st.integers(-3, 400), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=4), st.none(), st.booleans(),
    st.sampled_from([np.nan, pd.NA, pd.NaT, np.inf, -np.inf, 1 + 2j, b"7", [1], (1, 2), {"a": 1}, np.int8(5),
                     np.uint64(2**64 - 1), np.float32(3.0), pd.Timestamp(0), pd.Timedelta(1), np.datetime64(1, "s")]),
)
DTYPES = [None, "int64", "float64", "object", "string", "Int64", "Float64", "category", "uint8", "bool", "complex128"]


@st.composite
def dataframe(draw) -> tuple[str, pd.DataFrame]:
    n = draw(st.integers(0, 6))
    cols = draw(st.one_of(st.just(COLUMNS), st.just(COLUMNS[:3]), st.lists(st.sampled_from(COLUMNS + ODD_COLUMNS),
                                                                          max_size=5)))
    data = {}
    for c in dict.fromkeys(cols):
        values = draw(st.lists(st.integers(1, 300) | OBJECTS, min_size=n, max_size=n))
        series = pd.Series(values, dtype=object)
        dtype = draw(st.sampled_from(DTYPES))
        if dtype is not None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # building the input is not under test
                    series = series.astype(dtype)
            except (TypeError, ValueError, OverflowError):
                pass
        data[c] = series
    frame = pd.DataFrame(data)
    if draw(st.integers(0, 9)) == 0 and len(frame.columns):
        frame = pd.concat([frame, frame.iloc[:, :1]], axis=1)  # a repeated column name
    return "frame", frame


@st.composite
def parquet_file(draw) -> tuple[str, bytes]:
    _, frame = draw(dataframe())
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame.to_parquet(buf)
    except Exception:  # noqa: BLE001 - mixed objects pyarrow cannot store: use a plain table
        buf = io.BytesIO()
        pd.DataFrame({"request_id": [1], "input_tokens": [draw(st.integers(-1, 3))], "output_tokens": [1]}).to_parquet(buf)
    data = buf.getvalue()
    if draw(st.integers(0, 3)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return ".parquet", data


INPUT = st.one_of(csv_file(), csv_file(), near_valid_csv(), near_valid_csv(), jsonl_file(), dataframe(), parquet_file())

_TMP = Path(tempfile.mkdtemp(prefix="fuzz-trace-"))
_COUNTER = itertools.count()
_COST = LinearCostModel(a_p=0.015, b_p=1e-4, a_d=0.015, b_d=1e-4, c_d=2e-7, name="fuzz")


def check_contract(trace: pd.DataFrame) -> None:
    """Raise Invariant unless ``trace`` meets the data contract of MODEL.md section 9."""
    # The four of the contract first; extra columns are kept after them (issue 12), each once and none
    # a mangled copy of a contract column (pandas' "input_tokens.1" for a column named twice).
    extra = list(trace.columns)[len(COLUMNS):]
    if list(trace.columns)[:len(COLUMNS)] != COLUMNS or len(set(trace.columns)) != len(trace.columns) or any(
            str(c).split(".")[0] in COLUMNS for c in extra):
        raise Invariant(f"columns {list(trace.columns)}")
    if len(trace) == 0:
        raise Invariant("an empty trace was accepted")
    ids = trace["request_id"]
    as_text = ids.astype(str)
    if not as_text.is_unique:
        raise Invariant(f"ids are not unique as text: {as_text.tolist()}")
    if as_text.str.contains(r"\s|^$", regex=True).any():
        raise Invariant(f"an id is empty or holds whitespace: {as_text.tolist()}")
    for c in ("input_tokens", "output_tokens"):
        v = trace[c]
        if v.dtype != np.int64:
            raise Invariant(f"{c} has dtype {v.dtype}")
        if not ((v >= 1) & (v <= MAX_TOKENS)).all():
            raise Invariant(f"{c} out of range: {v.tolist()}")
    a = trace["arrival_s"]
    if a.dtype != np.float64 or not (np.isfinite(a) & (a >= 0)).all():
        raise Invariant(f"arrival_s invalid: {a.dtype} {a.tolist()}")


def round_trip(trace: pd.DataFrame) -> None:
    """Simulate, export, read back and validate against the trace: a valid trace gives a valid schedule."""
    from workbench.engine.core import simulate
    from workbench.schedule.validator import validate

    small = trace.assign(input_tokens=trace["input_tokens"].clip(upper=2000),
                         output_tokens=trace["output_tokens"].clip(upper=50))
    schedule = simulate(small, 2, 3, "continuous", _COST)
    folder = _TMP / f"s{next(_COUNTER)}"
    schedule.write(folder)
    report = validate(folder, trace=small)
    if not report.ok:
        raise Invariant(f"the exported schedule of an accepted trace is invalid: {report}")


def target(example) -> bool:
    suffix, payload = example
    k = next(_COUNTER)
    try:
        if suffix == "frame":
            trace = validate_trace(payload)
        else:
            path = _TMP / f"t{k}{suffix}"
            path.write_bytes(payload)
            try:
                trace = load_trace(path)
            finally:
                path.unlink(missing_ok=True)
    except WorkbenchError:
        return False
    check_contract(trace)
    if k % 4 == 0 and len(trace) <= 40:
        round_trip(trace)
    return True


def describe(example) -> str:
    suffix, payload = example
    if suffix == "frame":
        return f"DataFrame dtypes={dict(payload.dtypes.astype(str))} data={payload.to_dict('list')!r}"
    return f"{suffix or '(no suffix)'} file, bytes={payload[:400]!r}"


if __name__ == "__main__":
    sys.exit(main("trace loader", INPUT, target, describe))
