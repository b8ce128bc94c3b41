"""One figure, one value and one unit in every command and report (issue 28).

For one instance (gsm8k-test, 8 clients, B = 16, llama-65b) every command that states the lower bound, the
gap or a utilization is run, its printed figures and its reports' tables are parsed, and they are compared:
one lower bound, shares always in percent (``_pct`` columns, ``%`` in sentences), differences of shares in
percentage points.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pandas as pd
import pytest

from workbench._units import display_name, display_units, readable
from workbench.cli import main

INSTANCE = ["--trace", "gsm8k-test", "--clients", "8", "--batch-size", "16", "--cost-model", "llama-65b"]


class _Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def html_rows(path) -> list[dict[str, str]]:
    """Each body row of each table in ``path``, keyed by its table's first header row."""
    parser = _Tables()
    parser.feed(path.read_text(encoding="utf-8"))
    rows = []
    for table in parser.tables:
        header = table[0]
        rows += [dict(zip(["index", *header[1:]], r)) for r in table[1:] if len(r) == len(header)]
    return rows


def printed_rows(text: str, columns_line: str) -> dict[str, dict[str, float]]:
    """A printed pandas table: {index: {column: value}}, from the line that holds ``columns_line``'s names."""
    lines = text.splitlines()
    start = next(k for k, line in enumerate(lines) if columns_line in line)
    names = lines[start].split()
    table = {}
    for line in lines[start + 1:]:
        cells = line.split()
        try:
            table[cells[0]] = {n: float(v.replace(",", "")) for n, v in zip(names, cells[-len(names):], strict=True)}
        except (ValueError, IndexError):  # the index name's line, a row with blanks, or the text after the table
            if table and len(cells) > len(names):
                break
    return table


def _share_columns_left(columns) -> list[str]:
    """Columns that hold a share or a difference of shares but carry no unit (a report's headers are in words,
    ``gap (%)``: a header with a unit in brackets carries one)."""
    return [c for c in columns if "(" not in c and display_name(c.replace(" ", "_")) is not None]


def test_report_headers_are_words_with_their_unit():
    assert readable("ttft_s_p99") == "TTFT p99 (s)"
    assert readable("makespan_s") == "makespan (s)"
    assert readable("slot_utilization_pct") == "slot utilization (%)"
    assert readable("utilization_gain_mean_pp") == "utilization gain mean (points)"
    assert readable("e2e_s_mean") == "e2e mean (s)"
    assert readable("kv_capacity_tokens") == "KV capacity (tokens)"
    assert readable("policy") == "policy" and readable(0) == "0" and readable("lower bound") == "lower bound"


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    """Run every command on the instance once; what each printed and wrote."""
    tmp = tmp_path_factory.mktemp("units")
    out = {}

    def run(name, argv):
        import contextlib
        import io

        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            assert main(argv) == 0, argv
        out[name] = buffer.getvalue()

    run("bound", ["bound", *INSTANCE, "--method", "closed"])
    run("offline", ["offline", *INSTANCE, "--out", str(tmp / "offline")])
    run("simulate", ["simulate", *INSTANCE, "--policy", "hybrid", "--report", "--out", str(tmp / "hybrid")])
    run("compare", ["compare", *INSTANCE, "--policies", "paper-baseline,hybrid", "--out", str(tmp / "compare")])
    run("report", ["report", str(tmp / "compare" / "paper-baseline"), str(tmp / "compare" / "hybrid"),
                   "--out", str(tmp / "report.html")])
    run("reproduce", ["reproduce", "--cases", "0", "--workers", "0", "--out", str(tmp / "reproduce")])
    return tmp, out


def test_every_command_prints_the_one_lower_bound(figures):
    tmp, out = figures
    bound_s = float(re.search(r"^lower bound ([\d.]+) s", out["bound"], re.M).group(1))
    seen = {
        "offline": float(re.search(r"; lower bound ([\d.]+) s", out["offline"]).group(1)),
        "simulate": float(re.search(r"lower bound ([\d.]+) s", out["simulate"]).group(1)),
        "compare": printed_rows(out["compare"], "lower_bound_s")["hybrid"]["lower_bound_s"],
        "report": printed_rows(out["report"], "lower_bound_s")["hybrid"]["lower_bound_s"],
        "reproduce": float(re.search(r"^lower bound: ([\d.]+) s", out["reproduce"], re.M).group(1)),
        "metrics.json": json.loads((tmp / "hybrid" / "metrics.json").read_text())["lower_bound_s"],
        "assignment.json": json.loads((tmp / "offline" / "assignment.json").read_text())["lower_bound_s"],
        "results.json": json.loads((tmp / "reproduce" / "results.json").read_text())["lower_bound"]["value_s"],
    }
    for name, value in seen.items():
        assert value == pytest.approx(bound_s, abs=5e-4), (name, value, bound_s)  # printed to 3-6 decimals


def test_every_table_and_sentence_gives_the_gap_and_utilization_in_percent(figures):
    tmp, out = figures
    metrics = json.loads((tmp / "hybrid" / "metrics.json").read_text())
    gap_pct, slot_pct = metrics["gap"] * 100, metrics["slot_utilization"] * 100
    sentence = re.search(r"\(gap ([\d.]+)%\), slot utilization ([\d.]+)%", out["simulate"])
    assert float(sentence.group(1)) == pytest.approx(gap_pct, abs=0.005)
    assert float(sentence.group(2)) == pytest.approx(slot_pct, abs=0.05)
    tables = {
        "compare": printed_rows(out["compare"], "gap_pct")["hybrid"],
        "report": printed_rows(out["report"], "gap_pct")["hybrid"],
        "reproduce headline": printed_rows(out["reproduce"], "gap_pct")["hybrid"],
        "comparison.csv": pd.read_csv(tmp / "compare" / "comparison.csv", index_col=0).loc["hybrid"].to_dict(),
    }
    for where in ("compare", "hybrid"):
        html = [r for r in html_rows(tmp / where / "report.html") if r["index"] == "hybrid" and "gap (%)" in r]
        assert html, where
        tables[f"{where}/report.html"] = {k[:-len(" (%)")].replace(" ", "_") + "_pct": float(v)
                                          for k, v in html[0].items() if k.endswith(" (%)")}
    for name, row in tables.items():
        assert row["gap_pct"] == pytest.approx(gap_pct, rel=1e-3), (name, row)
        assert row["slot_utilization_pct"] == pytest.approx(slot_pct, rel=1e-3), (name, row)
        assert not _share_columns_left(row), (name, row)
    gain = json.loads((tmp / "reproduce" / "results.json").read_text())["headline_summary"]["slot_utilization_gain"]
    assert f"by {gain * 100:+.1f} percentage points" in out["reproduce"]


def test_no_report_table_shows_a_share_without_its_unit(figures):
    tmp, _ = figures
    for page in ("hybrid/report.html", "compare/report.html", "report.html", "reproduce/report.html"):
        parser = _Tables()
        parser.feed((tmp / page).read_text(encoding="utf-8"))
        for table in parser.tables:
            assert not _share_columns_left(table[0]), (page, table[0])


def test_display_units_converts_shares_and_differences_once():
    frame = pd.DataFrame({"makespan_s": [25.0], "gap": [0.0531], "slot_utilization": [0.894],
                          "utilization_gain_mean": [0.164], "utilization_gain_relative": [0.2], "ttft_s_p99": [0.5], "prefills": [299]})
    shown = display_units(frame)
    assert list(shown.columns) == ["makespan_s", "gap_pct", "slot_utilization_pct", "utilization_gain_mean_pp",
                                   "utilization_gain_relative_pct", "ttft_s_p99", "prefills"]
    assert shown["gap_pct"].iloc[0] == pytest.approx(5.31)
    assert shown["utilization_gain_mean_pp"].iloc[0] == pytest.approx(16.4)
    assert display_units(shown).equals(shown)  # already in display units: unchanged
    assert frame["gap"].iloc[0] == 0.0531  # the caller's frame is left as it was
