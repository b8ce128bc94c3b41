"""A pytest plugin: each notebook that passes under nbval goes into the documentation site's cache.

nbval executes every notebook in the test suite, and the site shows every notebook executed.
Rather than execute each one twice, a notebook under ``notebooks/`` whose code cells all pass
is stored, with the outputs nbval saw, in the site's execution cache (``site_kernels.CACHE``,
keyed by jupyter-cache on the code cells), where the site build finds it; the site's test
runs last for that reason (``tests/conftest.py`` registers this plugin and orders the tests).
The kernels nbval starts for those notebooks get the site's IPython profile, so their Plotly
figures are drawn as the site needs; nothing else about the run changes, and nbval compares
no stored output.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("workbench_site_kernels", Path(__file__).with_name("site_kernels.py"))
site_kernels = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(site_kernels)

NOTEBOOKS = site_kernels.ROOT / "notebooks"


def available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("jupyter_cache", "nbval", "nbformat"))


class NbvalCache:
    def __init__(self) -> None:
        from nbval.plugin import IPyNbCell

        self.cell_type = IPyNbCell
        self.outputs: dict[Path, dict[int, list | None]] = {}

    def _ours(self, item) -> bool:
        return isinstance(item, self.cell_type) and NOTEBOOKS in Path(item.path).parents

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_setup(self, item):
        """The first cell's setup starts the notebook's kernel: it inherits the site's profile."""
        if not self._ours(item):
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
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        if not self._ours(item) or call.when != "call":
            return
        path = Path(item.path)
        cells = self.outputs.setdefault(path, {})
        passed = outcome.get_result().passed and item.test_outputs is not None
        cells[item.cell_num] = item.test_outputs if passed else None  # a failed cell: this run is not cached
        code_cells = sum(c.cell_type == "code" for c in item.parent.nb.cells)
        if len(cells) == code_cells and all(out is not None for out in cells.values()):
            self._store(path, item.parent.nb, cells)

    @staticmethod
    def _store(path: Path, source, outputs: dict[int, list]) -> None:
        import nbformat

        nb = nbformat.from_dict(source)
        code = [c for c in nb.cells if c.cell_type == "code"]
        for count, (cell, key) in enumerate(zip(code, sorted(outputs)), start=1):
            cell.outputs = [nbformat.from_dict(o) for o in outputs[key]]
            cell.execution_count = count
            for out in cell.outputs:
                if out.get("output_type") == "execute_result":
                    out["execution_count"] = count
        site_kernels.cache_executed(path, nb)
