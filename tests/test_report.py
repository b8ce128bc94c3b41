"""The HTML report (workbench.viz.report): counts as integers, wide tables in their own scroll box."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

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


@pytest.mark.browser
@pytest.mark.slow
def test_report_page_fits_1400_px_and_the_wide_table_scrolls_in_its_box(tmp_path):
    """In Chromium at 1,400 px: the page never scrolls sideways, the headline table shows its last column,
    and the 100-row, 20-column case table scrolls inside its own box."""
    import importlib.util
    from pathlib import Path

    if not Path("/usr/bin/chromium").exists() or importlib.util.find_spec("playwright") is None:
        pytest.skip("needs /usr/bin/chromium and playwright (scripts/install-browser.sh, the dev extra)")
    from playwright.sync_api import sync_playwright

    from workbench.studies import experiments as E
    from workbench.viz.report import write_report
    from workbench.workload.trace import load_trace, sample_trace

    trace_path = tmp_path / "t.csv"
    sample_trace(load_trace("gsm8k-test"), 120, seed=4).to_csv(trace_path, index=False)
    head = E.headline(E.Scenario(name="t", trace=str(trace_path), clients=3, batch_size=8,
                                 lower_bound_method="closed"))["table"]
    cases = pd.DataFrame(np.random.default_rng(0).random((100, 20)) * 1e3,
                         columns=[f"a_rather_long_column_name_{k}" for k in range(20)])
    path = write_report(tmp_path / "report.html", "t", [("Headline", head), ("Cases", cases)])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(path.as_uri())
        sizes = page.evaluate("""() => {
            const [headline, cases] = document.querySelectorAll('table');
            return {page: document.documentElement.scrollWidth,
                    headline_right: headline.getBoundingClientRect().right,
                    headline_box: headline.parentElement.clientWidth, headline_width: headline.scrollWidth,
                    cases_box: cases.parentElement.clientWidth, cases_width: cases.scrollWidth};
        }""")
        # Issue 28: headers broke mid-word ("makespa n_s"); each word of a header must sit on one line.
        broken = page.evaluate("""() => {
            const out = [];
            for (const th of document.querySelectorAll('th')) {
                const text = th.firstChild;
                if (!text || text.nodeType !== 3) continue;
                let at = 0;
                for (const word of text.data.split(' ')) {
                    const range = document.createRange();
                    range.setStart(text, at); range.setEnd(text, at + word.length);
                    if (word && range.getClientRects().length > 1) out.push(word);
                    at += word.length + 1;
                }
            }
            return out;
        }""")
        first_cells = page.evaluate("""() => [...document.querySelectorAll('table')].map(
            t => [t.querySelector('tr').firstElementChild.textContent, t.querySelectorAll('tr')[1].firstElementChild.textContent])""")
        browser.close()
    print(sizes)
    assert sizes["page"] <= 1400
    assert sizes["headline_right"] <= 1400 and sizes["headline_width"] <= sizes["headline_box"]
    assert sizes["cases_width"] > sizes["cases_box"]  # wider than its box: it scrolls there, not the page
    assert broken == []
    assert first_cells[1][0] == "a rather long column name 0" and first_cells[1][1] != "0"  # no stray row number
    assert "makespan (s)" in path.read_text() and "makespan_s" not in path.read_text()
