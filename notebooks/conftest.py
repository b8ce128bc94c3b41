"""While nbval runs these notebooks, keep their executions for the documentation site.

nbval executes every notebook here (``pyproject.toml``); the site (``scripts/docs.sh``)
shows every notebook executed. Rather than execute each one twice, a notebook whose cells
all pass under nbval is stored, with its outputs, in the site's execution cache
(``build/site-work/jupyter-cache``, keyed on the code cells by jupyter-cache), and the site
build reuses it. The kernels nbval starts here draw Plotly figures the way the site needs
(``site/site_kernels.py``); nothing else about the run changes, and nbval checks no stored
output. Does nothing when the docs extra (jupyter-cache) is not installed.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ENABLED = importlib.util.find_spec("jupyter_cache") is not None and importlib.util.find_spec("nbval") is not None

if ENABLED:
    import nbformat
    from nbval.plugin import IPyNbCell

    _spec = importlib.util.spec_from_file_location("site_kernels", HERE.parent / "site" / "site_kernels.py")
    site_kernels = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(site_kernels)

    _passed: dict[Path, dict[int, list]] = {}
    _code_cells: dict[Path, int] = {}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_setup(item):
        """The first cell's setup starts the notebook's kernel: give it the site's IPython profile."""
        if not isinstance(item, IPyNbCell):
            yield
            return
        before = os.environ.get("IPYTHONDIR")
        os.environ["IPYTHONDIR"] = str(site_kernels.kernel_profile())
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("IPYTHONDIR", None)
            else:
                os.environ["IPYTHONDIR"] = before

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(item, call):
        outcome = yield
        if not isinstance(item, IPyNbCell) or call.when != "call":
            return
        path = Path(item.parent.path)
        if outcome.get_result().passed and item.test_outputs is not None:
            _passed.setdefault(path, {})[item.cell_num] = item.test_outputs
        else:
            _passed.setdefault(path, {})[item.cell_num] = None  # a failed cell: never cache this run
        if path not in _code_cells:
            _code_cells[path] = sum(c.cell_type == "code" for c in item.parent.nb.cells)
        cells = _passed[path]
        if len(cells) == _code_cells[path] and all(out is not None for out in cells.values()):
            _store(path, item.parent.nb, cells)

    def _store(path: Path, source, outputs: dict[int, list]) -> None:
        nb = nbformat.from_dict(source)
        code = [c for c in nb.cells if c.cell_type == "code"]
        by_order = [outputs[k] for k in sorted(outputs)]
        for count, (cell, outs) in enumerate(zip(code, by_order), start=1):
            cell.outputs = [nbformat.from_dict(o) for o in outs]
            cell.execution_count = count
            for out in cell.outputs:
                if out.get("output_type") == "execute_result":
                    out["execution_count"] = count
        site_kernels.cache_executed(path, nb)
