"""The offline stage and the exact yardstick: Pyomo models solved by HiGHS.

* :func:`solve` - the one solver wrapper (status, incumbent, proven bound, gap, time).
* :func:`assign` - minimizing-makespan bin packing (MODEL.md section 5): heuristics
  (:mod:`~workbench.offline.heuristics`), and :func:`build_mmbp_model` warm-started.
* :func:`lower_bound` - the makespan lower bound of MODEL.md section 3, term by term.
* :func:`solve_exact` - the exact MIP of MODEL.md section 4 for small instances
  (:func:`build_exact_model`), exported as a schedule and replayable in the simulator.

Model builders never solve; every value reported as a bound is proven.
"""

import importlib

# Pyomo takes most of a second to import, and simulating a policy needs none of it: the names load on first use.
_WHERE = {
    "heuristics": None, "kk": "heuristics", "local_search": "heuristics", "lpt": "heuristics",
    "mmbp_lower_bound": "heuristics",
    "METHODS": "binpacking", "Assignment": "binpacking", "MMBPData": "binpacking", "assign": "binpacking",
    "build_mmbp_model": "binpacking", "extract_assignment": "binpacking", "mmbp_data": "binpacking",
    "ExactData": "exact", "ExactResult": "exact", "build_exact_model": "exact", "exact_size": "exact",
    "replay_exact": "exact", "solve_exact": "exact",
    "BoundData": "lowerbound", "bound_data": "lowerbound", "bound_table": "lowerbound",
    "build_bound_model": "lowerbound", "lower_bound": "lowerbound",
    "SolveResult": "solver", "solve": "solver", "solver_available": "solver",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'workbench.offline' has no attribute {name!r}")
    module = _WHERE[name]
    value = importlib.import_module(f"workbench.offline.{module or name}")
    if module is not None:
        value = getattr(value, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
