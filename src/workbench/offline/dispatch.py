"""The offline stage as a dispatcher: the bin-packing assignment, fixed before the run."""

from __future__ import annotations

from workbench.policies.builtin import Assigned
from workbench.policies.registry import (
    DISPATCH_DOCS,
    DISPATCHERS,
    Dispatcher,
    Param,
    declare_params,
)

#: ``workbench.offline.binpacking.METHODS``, written out so that declaring the parameters loads no Pyomo
#: (tests/test_params.py checks that the two agree).
OFFLINE_METHODS = ("auto", "lpt", "kk", "ls", "mip", "mip-cold")


def offline_dispatcher(*, trace, clients, batch_size, cost_model, params, kv_capacity_tokens=None,
                       weights_s=None) -> Dispatcher:
    """Bin-pack the whole trace onto the clients (:func:`workbench.offline.assign`); dispatch by that table.

    With ``kv_capacity_tokens`` (one per client) no request goes to a client whose cache cannot hold it.
    ``weights_s`` (one per request) packs those weights instead, onto identical clients, by LPT and the
    local search (a pool of a disaggregated fleet packs each request's work at its stage; MODEL.md 11.11).
    """
    if weights_s is not None:
        import numpy as np

        from workbench.offline import heuristics as H

        W = np.repeat(np.asarray(weights_s, dtype=float)[:, None], clients, axis=1)
        best = H.lpt(W)
        if clients > 1 and len(W) > 1:
            best = H.local_search(W, best, time_limit=params.get("time_limit", 2.0) / 4)
        return Assigned(best)
    from workbench.offline.binpacking import (
        assign,  # Pyomo loads only when an offline policy runs
    )

    method = params.get("method", "auto")
    result = assign(trace, clients=clients, batch_size=batch_size, cost_model=cost_model, method=method,
                    time_limit=params.get("time_limit", 2.0), rel_gap=params.get("rel_gap", 5e-4),
                    kv_capacity_tokens=kv_capacity_tokens)
    return Assigned(result.assignment)


DISPATCHERS["offline"] = offline_dispatcher
DISPATCH_DOCS["offline"] = "the offline bin-packing assignment (minimizing-makespan), fixed before the run"
declare_params("dispatch", "offline",
               method=Param("str", "the bin-packing method", choices=OFFLINE_METHODS),
               time_limit=Param("float", "seconds the bin packing may take", minimum=1e-3),
               rel_gap=Param("float", "the proven relative gap at which the bin packing stops", minimum=0.0))
