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
