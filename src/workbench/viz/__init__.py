"""Figures and reports: Plotly Gantt charts (updatable in place), comparison tables, self-contained HTML reports.

The ipywidgets controls are in :mod:`workbench.viz.widgets` (the
``notebooks`` extra), imported on their own so that the rest needs no widget library.
"""

from workbench.viz.figures import (  # noqa: F401
    COLORS,
    KINDS,
    MAX_IDS_IN_HOVER,
    gantt_data,
    HOVER,
    gantt,
    update_gantt,
    gantt_compare,
    comparison_table,
)
from workbench.viz.report import (  # noqa: F401
    STYLE,
    render,
    report_html,
    write_report,
)

__all__ = ['COLORS', 'HOVER', 'KINDS', 'MAX_IDS_IN_HOVER', 'STYLE', 'comparison_table', 'gantt', 'gantt_compare', 'gantt_data', 'render', 'report_html', 'update_gantt', 'write_report']
