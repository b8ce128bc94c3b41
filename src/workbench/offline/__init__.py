"""The offline stage and the exact yardstick: Pyomo models solved by HiGHS.

* :func:`solve` - the one solver wrapper (status, incumbent, proven bound, gap, time).
* :func:`assign` - minimizing-makespan bin packing (MODEL.md section 5): heuristics
  (:mod:`~workbench.offline.heuristics`), and :func:`build_mmbp_model` warm-started.
* :func:`lower_bound` - the makespan lower bound of MODEL.md section 3, term by term.
* :func:`solve_exact` - the exact MIP of MODEL.md section 4 for small instances
  (:func:`build_exact_model`), exported as a schedule and replayable in the simulator.

Model builders never solve; every value reported as a bound is proven.
"""

from workbench.offline import heuristics
from workbench.offline.binpacking import (METHODS, Assignment, MMBPData, assign, build_mmbp_model,
                                          extract_assignment, mmbp_data)
from workbench.offline.exact import (ExactData, ExactResult, build_exact_model, exact_size, replay_exact,
                                     solve_exact)
from workbench.offline.heuristics import kk, local_search, lpt, mmbp_lower_bound
from workbench.offline.lowerbound import (BoundData, bound_data, bound_table, build_bound_model,
                                          lower_bound)
from workbench.offline.solver import SolveResult, solve, solver_available

__all__ = [
    "METHODS", "Assignment", "BoundData", "ExactData", "ExactResult", "MMBPData", "SolveResult", "assign",
    "bound_data", "bound_table", "build_bound_model", "build_exact_model", "build_mmbp_model", "exact_size",
    "extract_assignment", "heuristics", "kk", "local_search", "lower_bound", "lpt", "mmbp_data",
    "mmbp_lower_bound", "replay_exact", "solve", "solve_exact", "solver_available",
]
