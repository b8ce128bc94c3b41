"""The HTML report (workbench.viz.report): counts as integers, wide tables in their own scroll box."""

from __future__ import annotations

import numpy as np
import pandas as pd

from workbench.viz.report import WIDE_TABLE_COLUMNS, report_html


def test_counts_print_as_integers_and_missing_values_blank():
    table = pd.DataFrame({"makespan_s": [29.79, 24.46], "decode_iterations": pd.array([11521, None], dtype="Int64"),
                          "prefills": [np.int64(1132), np.int64(7)]}, index=["paper-baseline", "lower bound"])
    html = report_html("t", [("s", table)])
    assert "11,521" in html and "1,132" in html
    assert "11,521.0" not in html and "1132.0" not in html and "&lt;NA&gt;" not in html


def test_wide_tables_scroll_inside_their_own_box():
    narrow = pd.DataFrame(np.ones((3, 4)))
    wide = pd.DataFrame(np.ones((100, WIDE_TABLE_COLUMNS + 8)))
    html = report_html("t", [("narrow", narrow), ("wide", wide)])
    assert html.count("<div class='table-wrap'>") == 1
    assert html.count("<div class='table-wrap wide'>") == 1
    assert ".table-wrap { max-width: 100%; overflow-x: auto; }" in html
