"""The ``workbench`` console script's entry point, outside the package on purpose.

Importing :mod:`workbench` takes about half a second (pandas, Plotly, Pyomo).  A Ctrl-C in that
time arrived while the console script was still importing ``workbench.cli`` and printed a traceback of
35 lines.  This module imports nothing heavy itself, so the import of the package happens inside
:func:`main`, where an interrupt is one line and status 130, as it is while a command runs.
"""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from workbench.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("workbench: interrupted\n")
        return 130
    return cli_main()
