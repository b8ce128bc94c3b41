"""LLM inference scheduling workbench.

The package is laid out as the data's path (MODEL.md, shipped as ``docs/MODEL.md``, is the contract)::

    workload/    requests in: traces, named GSM8K traces, output-length predictors
    costmodel/   what an iteration costs: the linear model, presets, roofline, calibration
    offline/     the offline stage: bin packing, its lower bound, the exact MIP (Pyomo + HiGHS)
    policies/    dispatchers, queue orders, iteration rules (the Lagrangian rule) behind registries
    engine/      one event loop that serves the requests under a policy
    schedule/    the one schedule schema, its validator, metrics and lower bounds
    learn/       a Gymnasium environment over the engine, and training the learned rule
    viz/         Gantt charts, reports, widgets
    studies/     the paper's experiments, uncertainty and load studies
    cli/         the ``workbench`` command line

Importing the package brings in every registered implementation (each
registers itself where it is defined), so the registries are complete
whatever a user imports first.
"""

from workbench._version import __version__
from workbench import _compat
from workbench.errors import WorkbenchError

# The one place the implementations are brought in (the registries they fill import nothing above them).
from workbench import policies as _policies  # noqa: E402,F401
from workbench.offline import dispatch as _offline_dispatch  # noqa: E402,F401
from workbench.costmodel import load_preset  # noqa: E402
from workbench.engine import simulate  # noqa: E402
from workbench.schedule import Schedule  # noqa: E402
from workbench.workload import load_trace  # noqa: E402

__all__ = ["Schedule", "WorkbenchError", "__version__", "load_preset", "load_trace", "simulate"]

_compat.install()
