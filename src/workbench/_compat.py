"""The module paths of the flat layout (before 0.2), kept importable: ``workbench.sim`` is ``workbench.engine.core``.

Code written against the first releases (``from workbench.sim import
simulate``, ``from workbench.trace import load_trace``) keeps working: each
old name is an alias of the module that now holds the same objects, not a
copy, so ``workbench.sim.simulate is workbench.engine.core.simulate``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

#: old module -> the module that holds its contents now.
MOVED = {
    "workbench.trace": "workbench.workload.trace",
    "workbench.gsm8k": "workbench.workload.gsm8k",
    "workbench.predict": "workbench.workload.predict",
    "workbench.roofline": "workbench.costmodel.roofline",
    "workbench.calibrate": "workbench.costmodel.calibrate",
    "workbench.metrics": "workbench.schedule.metrics",
    "workbench.bounds": "workbench.schedule.bounds",
    "workbench.fleet": "workbench.schedule.fleet",
    "workbench.validate": "workbench.schedule.validator",
    "workbench.online": "workbench.policies.lagrangian",
    "workbench.arrivals": "workbench.studies.loadsweep",
    "workbench.sim": "workbench.engine.core",
    "workbench.chunked": "workbench.engine.chunked",
    "workbench.figures": "workbench.viz.figures",
    "workbench.report": "workbench.viz.report",
    "workbench.widgets": "workbench.viz.widgets",
    "workbench.experiments": "workbench.studies.experiments",
    "workbench.uncertainty": "workbench.studies.uncertainty",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module) -> None:
        pass


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
