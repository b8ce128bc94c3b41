"""The offline stage as a dispatcher: the bin-packing assignment, fixed before the run."""

from __future__ import annotations

from workbench.policies.builtin import Assigned
from workbench.policies.registry import DISPATCH_DOCS, DISPATCHERS, Dispatcher


def offline_dispatcher(*, trace, clients, batch_size, cost_model, params) -> Dispatcher:
    """Bin-pack the whole trace onto the clients (:func:`workbench.offline.assign`); dispatch by that table."""
    from workbench.offline.binpacking import (
        assign,  # Pyomo loads only when an offline policy runs
    )

    method = params.get("method", "auto")
    result = assign(trace, clients=clients, batch_size=batch_size, cost_model=cost_model, method=method,
                    time_limit=params.get("time_limit", 2.0), rel_gap=params.get("rel_gap", 5e-4))
    return Assigned(result.assignment)


DISPATCHERS["offline"] = offline_dispatcher
DISPATCH_DOCS["offline"] = "the offline bin-packing assignment (minimizing-makespan), fixed before the run"
