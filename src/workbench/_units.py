"""One unit per quantity wherever a table is shown: shares in percent, differences of shares in percentage points.

The package computes shares (a gap, a utilization, the gap closed, an SLO attainment) as fractions, as
MODEL.md section 8 defines them, and JSON files keep them so.  Every table a person reads (the command
line's tables, the reports' tables, ``comparison.csv``) goes through :func:`display_units`, so a gap is
``5.31`` under ``gap_pct`` there and ``gap 5.31%`` in a sentence, never ``0.0531`` beside ``5.31%``.
Seconds keep their ``_s`` suffix.
"""

from __future__ import annotations

import re

import pandas as pd

#: A column holding a share (a fraction of 1): shown times 100, named ``..._pct``.
SHARE = re.compile(r"(^|_)(gap|utilization|gap_closed|attainment|share)(_|$)")
#: A column holding a difference of two shares: shown times 100, named ``..._pp`` (percentage points).
DIFFERENCE = re.compile(r"(^|_)gain(_|$)")
#: Suffixes of columns already in a unit of their own (seconds, counts, percent, points).
_HAS_UNIT = ("_s", "_pct", "_pp", "_us", "_ms", "_tokens")


def display_name(column: str) -> str | None:
    """The name ``column`` takes in display units (None: shown as it is)."""
    if not isinstance(column, str) or column.endswith(_HAS_UNIT) or "_s_" in column:
        return None
    if DIFFERENCE.search(column) and "relative" not in column:  # a relative gain is a ratio: percent
        return f"{column}_pp"
    if SHARE.search(column):
        return f"{column}_pct"
    return None


def display_units(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every share column in percent (``_pct``) and every difference of shares in percentage
    points (``_pp``); other columns, the index and ``frame`` itself are left as they are."""
    renames = {c: display_name(c) for c in frame.columns}
    renames = {c: n for c, n in renames.items() if n is not None and pd.api.types.is_numeric_dtype(frame[c])}
    if not renames:
        return frame
    shown = frame.copy()
    for column in renames:
        shown[column] = shown[column] * 100.0
    return shown.rename(columns=renames)


#: Unit suffixes as a reader writes them after a quantity.
_UNIT_WORDS = {"s": "s", "ms": "ms", "us": "us", "pct": "%", "pp": "points", "tokens": "tokens", "rps": "requests/s",
               "gbps": "GB/s", "bytes": "bytes"}
#: Abbreviations written in capitals.
_CAPITALS = {"ttft": "TTFT", "tpot": "TPOT", "slo": "SLO", "kv": "KV", "gpu": "GPU", "tp": "TP", "e2e": "e2e",
             "mip": "MIP", "id": "id", "ids": "ids"}
_STATISTIC = re.compile(r"^(p\d{1,2}(\.\d+)?|mean|median|max|min|sd|std|total|sum)$")


def readable(name) -> str:
    """A column name as a header or an axis title reads it: ``ttft_s_p99`` -> ``TTFT p99 (s)``,
    ``slot_utilization_pct`` -> ``slot utilization (%)``, ``makespan_s`` -> ``makespan (s)``.  A name that is
    not snake_case text (a number, a phrase already) comes back as it is."""
    if not isinstance(name, str) or " " in name or "_" not in name:
        return _CAPITALS.get(name, name) if isinstance(name, str) else str(name)
    words, unit = name.split("_"), None
    for k, word in enumerate(words):
        if word in _UNIT_WORDS and k > 0 and (k == len(words) - 1 or _STATISTIC.match(words[k + 1])):
            unit = _UNIT_WORDS[word]
            words = words[:k] + words[k + 1:]
            break
    text = " ".join(_CAPITALS.get(w, w) for w in words if w)
    return f"{text} ({unit})" if unit else text
