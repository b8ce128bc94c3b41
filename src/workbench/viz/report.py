"""Self-contained HTML reports: tables, Plotly figures and text in one file.

The report embeds plotly.js once, so it opens offline, and is written
atomically (a temporary file moved into place).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from workbench._paths import write_atomically
from workbench._units import readable
from workbench._version import __version__
from workbench.errors import ConfigError

STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2rem auto; max-width: 1200px;
       color: #222; line-height: 1.45; padding: 0 1rem; }
.table-wrap { max-width: 100%; overflow-x: auto; }
.table-wrap.wide { max-height: 36rem; overflow-y: auto; border: 1px solid #ddd; }
th { overflow-wrap: normal; word-break: normal; hyphens: none; min-width: 3.5rem; vertical-align: bottom; }
tbody th, td { white-space: nowrap; }
table.prose td { white-space: normal; text-align: left; min-width: 12rem; }
.caption { color: #555; font-size: 0.9rem; margin-top: 0; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
.note { color: #555; font-size: 0.9rem; } pre { background: #f7f7f7; padding: 0.6rem; overflow-x: auto; }
"""

Item = str | pd.DataFrame | go.Figure


#: Tables with more columns than this scroll inside their own box (the page itself never widens).
WIDE_TABLE_COLUMNS = 12


def _fmt(value):
    if value is pd.NA or (isinstance(value, float) and value != value):
        return ""  # NaN: no value for this row (e.g. the lower bound has no utilization)
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return f"{int(value):,}"  # a count: 11,521, never 11,521.0
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.1f}"
    return value


def _table_html(table: pd.DataFrame) -> str:
    """A table as a reader reads it: headers in words with their unit (``TTFT p99 (s)``, never ``ttft_s_p99``),
    and no row numbers where the index is only a row count."""
    plain_index = isinstance(table.index, pd.RangeIndex) and table.index.name is None
    shown = table.map(_fmt)
    shown.columns = [readable(c) for c in table.columns]
    if not plain_index:
        shown.index = shown.index.set_names([None if n is None else readable(n) for n in table.index.names])
        if shown.index.nlevels == 1 and all(isinstance(v, str) for v in shown.index):  # quantity names: words
            shown.index = [readable(v) for v in shown.index]
    # Cells keep to one line (a policy never breaks at its hyphen), except in a table of sentences.
    prose = any(isinstance(v, str) and len(v) > 40 for v in shown.to_numpy().ravel())
    return shown.to_html(border=0, escape=True, index=not plain_index, classes="prose" if prose else None)


def render(item: Item, *, plotlyjs: bool) -> str:
    if isinstance(item, go.Figure):
        meta = item.layout.meta
        caption = meta.get("caption") if isinstance(meta, dict) else None
        # responsive: the chart follows the page's width, never wider than its column
        out = item.to_html(full_html=False, include_plotlyjs=plotlyjs,
                           config={"displaylogo": False, "responsive": True})
        return out + (f"<p class='caption'>{html.escape(caption)}</p>" if caption else "")
    if isinstance(item, pd.DataFrame):
        from workbench._units import display_units

        item = display_units(item)  # shares in percent, differences of shares in points, as on the command line
        wide = " wide" if item.shape[1] > WIDE_TABLE_COLUMNS or len(item) > 40 else ""
        return f"<div class='table-wrap{wide}'>" + _table_html(item) + "</div>"
    text = str(item)
    return text if text.lstrip().startswith("<") else f"<p>{html.escape(text)}</p>"


def report_html(title: str, sections: Iterable[tuple[str, Item | list[Item]]], *, subtitle: str = "") -> str:
    """The HTML text of a report: ``sections`` are (heading, item or list of items)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    if subtitle:
        parts.append(f"<p class='note'>{html.escape(subtitle)}</p>")
    plotlyjs_done = False
    for heading, items in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        for item in items if isinstance(items, list) else [items]:
            needs_js = isinstance(item, go.Figure) and not plotlyjs_done
            parts.append(render(item, plotlyjs=needs_js))
            plotlyjs_done = plotlyjs_done or needs_js
    parts.append(f"<p class='note'>Generated by workbench {__version__}.</p></body></html>")
    return "\n".join(parts)


def write_report(path: str | Path, title: str, sections: Iterable[tuple[str, Item | list[Item]]], *,
                 subtitle: str = "") -> Path:
    """Write the report to ``path`` atomically (through a temporary file beside it, renamed once complete)."""
    path = Path(path)
    text = report_html(title, sections, subtitle=subtitle)
    try:
        return write_atomically(path, text.encode("utf-8"))
    except OSError as exc:  # a folder that cannot be made or written, a full disk: one line, nothing left behind
        raise ConfigError(f"cannot write '{path}': {exc.strerror}.", field="out", fix="choose a writable folder.") from None
