"""The one solver wrapper every model of :mod:`workbench.offline` goes through.

HiGHS is driven through Pyomo's ``highs`` interface (``pyomo.contrib.solver``).
What a caller gets back is a :class:`SolveResult`: the termination status, the
incumbent (best solution found), the *proven* bound (HiGHS's dual bound, valid
whether or not the solve finished) and the gap between them.  A solve stopped
by its time limit with a solution in hand is a result, not an error; an
infeasible model, a solve with no solution, or a missing solver is a
:class:`~workbench.errors.SolverError` with a fix.

Warm starts: Pyomo's ``highs`` interface has no warm-start option, so we load
the model into HiGHS ourselves (``set_instance``), hand the start to HiGHS's
``setSolution`` and then solve with every automatic update switched off.  An
update that touched the HiGHS model would invalidate the start (HiGHS drops a
stored solution whenever the model changes), which is why it is switched off;
nothing changes between ``set_instance`` and the solve, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from workbench.errors import SolverError

SOLVER_NAME = "highs"
#: Text HiGHS logs when it accepts a user solution as its first incumbent.
_START_ACCEPTED = ("MIP start solution is feasible", "Solution has num max")


@dataclass(frozen=True)
class SolveResult:
    """What one solve produced.  ``bound`` is proven; ``incumbent`` is a solution's value."""

    status: str  # "optimal", "time_limit", "gap_limit", "interrupted", "stopped"
    termination: str
    incumbent: float | None
    bound: float | None  # proven: see solve()
    solver_bound: float | None  # as HiGHS reported it
    gap: float
    time_s: float
    has_solution: bool
    warm_start: str = "none"  # "none", "accepted", "rejected"
    log: str = field(default="", repr=False)

    @property
    def optimal(self) -> bool:
        return self.status == "optimal"


def _new_solver():
    """A fresh Pyomo ``highs`` solver object (a function, so tests can replace it)."""
    from pyomo.contrib.solver.solvers.highs import Highs

    return Highs()


def solver_available() -> bool:
    """True when HiGHS can be used through Pyomo."""
    try:
        return bool(_new_solver().available())
    except ImportError:
        return False


def _missing_solver_error() -> SolverError:
    return SolverError("the HiGHS solver is not available to Pyomo.", field="solver",
                       fix="install it with `pip install highspy` (or use a heuristic method: lpt, kk, ls).")


def solve(model, *, time_limit: float | None = 10.0, rel_gap: float | None = 1e-4, abs_gap: float = 0.0,
          threads: int | None = None, warm_start=None, require_solution: bool = True, tee: bool = False,
          options: dict[str, Any] | None = None, started_at: float | None = None) -> SolveResult:
    """Solve a Pyomo ``model`` with HiGHS; load its incumbent into the model's variables.

    ``warm_start`` gives values to Pyomo variables (a full or partial MIP
    start), as a ``pyomo.common.collections.ComponentMap`` or an iterable of
    ``(variable, value)`` pairs.  With ``require_solution=False`` a solve that ends without an
    incumbent still returns its proven bound (useful for bounds); otherwise it
    is a :class:`SolverError`.

    ``bound`` is a proven lower bound on the optimum.  When HiGHS stops because
    the gap is within ``rel_gap``/``abs_gap`` it may report the incumbent itself
    as its dual bound (it prunes every node within the tolerance), so the
    proven bound is then ``min(reported, incumbent - tolerance)``; on a time
    limit the reported dual bound is kept as is.  ``abs_gap`` defaults to 0,
    not HiGHS's 1e-6, so that ``rel_gap=0`` means optimal.

    ``time_limit`` is a wall-clock limit on what the caller waits for, counted from
    ``started_at`` (a ``time.perf_counter()`` reading: pass the moment the model build began,
    so the build counts) or else from this call: loading the model into HiGHS is taken off
    what HiGHS is given, and HiGHS's interrupt callbacks stop the search at the deadline
    (HiGHS's own clock starts only when it runs, and it may check its limit late).
    """
    from pyomo.contrib.solver.common.results import TerminationCondition as TC

    try:
        opt = _new_solver()
        available = bool(opt.available())
    except ImportError:
        available = False
    if not available:
        raise _missing_solver_error()
    if time_limit is not None and not (time_limit > 0):
        raise SolverError(f"time_limit is {time_limit!r}.", field="time_limit", fix="give a positive number of seconds.")
    if rel_gap is not None and not (rel_gap >= 0):
        raise SolverError(f"rel_gap is {rel_gap!r}.", field="rel_gap", fix="give a relative gap >= 0, e.g. 1e-4.")
    started = time.perf_counter() if started_at is None else float(started_at)
    config: dict[str, Any] = dict(time_limit=time_limit, rel_gap=rel_gap, abs_gap=abs_gap, threads=threads, tee=tee,
                                  load_solutions=False, raise_exception_on_nonoptimal_result=False,
                                  solver_options=dict(options or {}))
    warm = "none"
    # Load the model into HiGHS ourselves, so that a start and an interrupt callback can be
    # attached to the highspy object before it runs; then solve with automatic updates off.
    try:
        opt.set_instance(model)
    except (ValueError, RuntimeError) as exc:
        raise SolverError(f"HiGHS could not load '{model.name}': {exc}.", field="solver",
                          fix="check the model data; report a bug if the data are valid.") from None
    highs = opt._solver_model  # the highspy.Highs object the interface fills
    if warm_start:
        columns = opt._pyomo_var_to_solver_var_map
        index, values = [], []
        pairs = warm_start.items() if hasattr(warm_start, "items") else warm_start
        for var, val in pairs:
            col = columns.get(id(var))
            if col is not None and val is not None:
                index.append(col)
                values.append(float(val))
        if index:
            import numpy as np

            highs.setSolution(len(index), np.asarray(index, dtype=np.int32), np.asarray(values, dtype=float))
            warm = "given"
    # Every automatic update off: nothing changed since set_instance, and a model
    # change inside HiGHS would drop a start handed to it.
    config["auto_updates"] = dict(check_for_new_or_removed_constraints=False,
                                  check_for_new_or_removed_vars=False,
                                  check_for_new_or_removed_params=False, check_for_new_objective=False,
                                  update_constraints=False, update_vars=False, update_parameters=False,
                                  update_named_expressions=False, update_objective=False)
    deadline = None
    if time_limit is not None:
        deadline = started + time_limit
        # What is left of the user's limit after the build and the load; HiGHS needs a positive limit.
        config["time_limit"] = max(deadline - time.perf_counter(), 1e-3)
    try:
        with _stop_on_interrupt(highs, deadline=deadline):
            results = opt.solve(model, **config)
    except (ValueError, RuntimeError) as exc:
        raise SolverError(f"HiGHS failed: {exc}.", field="solver",
                          fix="check the model data; report a bug if the data are valid.") from None
    elapsed = time.perf_counter() - started
    tc = results.termination_condition
    log = results.solver_log or ""
    if warm == "given":
        warm = "accepted" if any(s in log for s in _START_ACCEPTED) else "rejected"
    if tc in (TC.provenInfeasible, TC.infeasibleOrUnbounded, TC.unbounded):
        raise SolverError(f"the model '{model.name}' is {tc.name} (status after {elapsed:.2f} s).", field="model",
                          fix="check the instance: every request must fit a client's batch capacity.")
    interrupted = _highs_interrupted(opt)
    user_stop = _STOPPED.pop(id(highs), False)
    past_deadline = interrupted and not user_stop and deadline is not None and time.perf_counter() >= deadline
    if tc == TC.error and not interrupted:
        raise SolverError(f"HiGHS stopped with an error on '{model.name}'.", field="solver",
                          fix="rerun with tee=True to see the solver log.")
    incumbent = results.incumbent_objective
    solver_bound = results.objective_bound
    if solver_bound is not None and not math.isfinite(solver_bound):
        solver_bound = None
    bound = solver_bound
    if bound is not None and incumbent is not None and tc == TC.convergenceCriteriaSatisfied:
        tolerance = max(abs_gap or 0.0, (rel_gap or 0.0) * abs(incumbent))
        bound = min(bound, incumbent - tolerance)
    has_solution = incumbent is not None
    if has_solution:
        results.solution_loader.load_vars()
    elif require_solution:
        why = ("its time limit" if tc == TC.maxTimeLimit or past_deadline else "interrupted" if interrupted
               else tc.name)
        raise SolverError(f"HiGHS stopped on '{model.name}' after {elapsed:.2f} s ({why}) without any solution.",
                          field="time_limit", fix="raise time_limit, or give a warm start / use a heuristic method.")
    if tc == TC.convergenceCriteriaSatisfied:
        gap_value = _gap(incumbent, bound)
        status = "optimal" if gap_value <= 1e-9 else "gap_limit"
    elif tc == TC.maxTimeLimit or past_deadline:
        status = "time_limit"  # HiGHS's own limit, or our deadline through the interrupt callback
    elif interrupted:
        status = "interrupted"  # Ctrl-C (or a stop button): the incumbent so far is the result
    else:
        status = "stopped"
    return SolveResult(status=status, termination=tc.name, incumbent=incumbent, bound=bound, solver_bound=solver_bound,
                       gap=_gap(incumbent, bound), time_s=elapsed, has_solution=has_solution, warm_start=warm,
                       log=log)


class _UnhandledStatusFilter(logging.Filter):
    """Pyomo logs HiGHS's interrupt status as unhandled; we handle it (see solve)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "kInterrupt" not in record.getMessage()


@contextlib.contextmanager
def _stop_on_interrupt(highs, deadline: float | None = None):
    """During the solve, Ctrl-C (SIGINT) asks HiGHS to stop at its next check and keep its incumbent.

    Python's default handler would raise KeyboardInterrupt inside HiGHS's callback, which
    HiGHS reports as a solve error with the incumbent lost.  Instead the handler only sets a
    flag, and HiGHS's interrupt callbacks (MIP, simplex, IPM) see it and stop cleanly.  Only
    the main thread can own signal handlers; elsewhere (a widget's worker thread) the solve
    is stopped with :func:`request_stop`.
    """
    state = {"stop": False}
    _ACTIVE.append(state)

    def check(event) -> None:
        if state["stop"]:
            _STOPPED[id(highs)] = True  # a user's stop, not the deadline
            event.interrupt()
        elif deadline is not None and time.perf_counter() >= deadline:
            event.interrupt()

    events = [getattr(highs, name, None) for name in ("cbMipInterrupt", "cbSimplexInterrupt", "cbIpmInterrupt")]
    events = [e for e in events if e is not None]
    for e in events:
        e.subscribe(check)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda signum, frame: state.update(stop=True))
    log_filter = _UnhandledStatusFilter()
    logging.getLogger("pyomo.contrib.solver.solvers.highs").addFilter(log_filter)
    try:
        yield state
    finally:
        logging.getLogger("pyomo.contrib.solver.solvers.highs").removeFilter(log_filter)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        for e in events:
            e.unsubscribe(check)
        _ACTIVE.remove(state)


#: The solves in progress in this process (for request_stop).
_ACTIVE: list[dict] = []
#: HiGHS objects a user's stop (Ctrl-C, request_stop) interrupted, as opposed to the deadline.
_STOPPED: dict[int, bool] = {}


def request_stop() -> int:
    """Ask every solve in progress to stop and return its incumbent (a widget's stop button).

    Returns how many solves were asked.
    """
    for state in _ACTIVE:
        state["stop"] = True
    return len(_ACTIVE)


def _highs_interrupted(opt) -> bool:
    """Whether HiGHS itself says the solve was interrupted (Ctrl-C): Pyomo reports that as an error."""
    highs = getattr(opt, "_solver_model", None)
    if highs is None:
        return False
    try:
        import highspy

        return highs.getModelStatus() == highspy.HighsModelStatus.kInterrupt
    except (ImportError, AttributeError, RuntimeError):
        return False


def _gap(incumbent: float | None, bound: float | None) -> float:
    """Relative gap ``(incumbent - bound) / |incumbent|`` of a minimisation; inf when unknown."""
    if incumbent is None or bound is None:
        return math.inf
    if incumbent == 0:
        return 0.0 if bound >= 0 else math.inf
    return max(0.0, (incumbent - bound) / abs(incumbent))
