"""The makespan lower bound of MODEL.md section 3, term by term.

Every schedule of request set ``S`` on one client costs at least::

    LB_j(S) = sum_{i in S} v_i + a_p ceil(|S| / B_j) + a_d max(ceil(D_S / B_j), max_{i in S}(o_i - 1))

(``D_S = sum (o_i - 1)``), so the makespan is at least ``min over assignments
max_j LB_j(S_j)``, and at least any request served alone.  :func:`lower_bound`
reports these terms:

``single_request``
    ``max_i t_alone(i)``
``average_work``
    ``sum_i w_i / |J|`` (ceilings relaxed)
``aggregate_ceiling``
    ``(V + a_p ceil(n / B) + a_d ceil(D / B)) / |J|``: summing LB_j over clients,
    ``sum_j ceil(n_j / B) >= ceil(n / B)``
``pair``
    two of the ``|J| + 1`` longest requests share a client: the smallest LB_j over such pairs
``bin_packing``
    the proven dual bound of the bin-packing bound model (:func:`build_bound_model`), ceilings as
    integer variables: a separate figure, never the instance's bound (it depends on the time limit)

Every reported value is proven: closed forms, or HiGHS's dual bound (valid
whether or not the solve finished).  An incumbent is never reported as a bound.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from workbench.costmodel.linear import LinearCostModel, load_preset
from workbench.errors import ConfigError
from workbench.offline.solver import solve
from workbench.schedule.bounds import (
    TERM_DOCS,
    LowerBound,
    closed_form_lower_bound,
)
from workbench.schedule.metrics import batch_sizes_array
from workbench.workload.trace import load_trace

if TYPE_CHECKING:
    import pyomo.environ as pyo

TERM_DOCS = {
    **TERM_DOCS,
    "aggregate_ceiling": "(V + a_p ceil(n/B) + a_d ceil(D/B)) / |J|: the per-client costs summed, ceilings kept",
    "pair": "two of the |J|+1 longest requests share a client: min LB_j over those pairs",
    "bin_packing": "min over assignments of max_j LB_j(S_j), HiGHS's proven dual bound (integer ceilings)",
    "release_plus_alone": "max_i (a_i + t_alone(i)) when requests arrive over time",
}
#: Requests modelled one by one in the bound model before the rest are grouped into classes.
EXACT_PAIRS_LIMIT = 20_000
#: ``auto`` runs the bound model up to this many requests x clients.  Beyond it the model can gain
#: at most a_p + a_d over ``aggregate_ceiling`` (one rounding per client) and HiGHS needs seconds
#: to gain anything, which a widget cannot wait for; ``method='mip'`` still runs it.
AUTO_MODEL_MAX_PAIRS = 2_000


@dataclass(frozen=True)
class BoundData:
    """Data of the bin-packing bound model: request classes and clients.

    A class ``g`` holds ``count[g]`` requests; ``work_s[g]`` and ``decodes[g]``
    are the smallest ``v_i`` and ``o_i - 1`` in the class (rounding requests
    down keeps the bound valid).  ``total_work_s`` and ``total_decodes`` are
    exact, for the aggregate constraints.  With one request per class the
    model is exactly the bound of MODEL.md section 3.
    """

    count: np.ndarray
    work_s: np.ndarray
    decodes: np.ndarray
    batch_size: np.ndarray
    a_p: float
    a_d: float
    total_work_s: float
    total_decodes: int
    n_requests: int
    exact: bool


def bound_data(trace: pd.DataFrame, clients: int, batch_size, cost_model: LinearCostModel, *,
               max_pairs: int = EXACT_PAIRS_LIMIT, groups: int = 64) -> BoundData:
    """Classes for the bound model: one per request when ``requests x clients <= max_pairs``.

    Otherwise the ``2|J|`` longest requests stay single (they carry the
    ``max(o_i - 1)`` term) and the rest are split, by output length, into
    ``groups`` classes of near-equal size.
    """
    B = batch_sizes_array(batch_size, clients)
    l = trace["input_tokens"].to_numpy(float)
    o = trace["output_tokens"].to_numpy(np.int64)
    v = cost_model.request_work_s(l, o)
    n = len(trace)
    order = np.lexsort((v, o))[::-1]  # longest output first, then most work
    if n * clients <= max_pairs:
        cuts = np.arange(n + 1)
        exact = True
    else:
        singles = min(n, 2 * clients)
        rest = np.linspace(singles, n, min(groups, n - singles) + 1).round().astype(int) if n > singles else []
        cuts = np.unique(np.concatenate([np.arange(singles + 1), rest]))
        exact = False
    count, work, dec = [], [], []
    for a, b in zip(cuts[:-1], cuts[1:]):
        rows = order[a:b]
        count.append(len(rows))
        work.append(float(v[rows].min()))
        dec.append(int(o[rows].min()) - 1)
    return BoundData(count=np.array(count), work_s=np.array(work), decodes=np.array(dec, dtype=np.int64),
                     batch_size=B, a_p=cost_model.a_p, a_d=cost_model.a_d, total_work_s=float(v.sum()),
                     total_decodes=int((o - 1).sum()), n_requests=n, exact=exact)


def build_bound_model(data: BoundData, *, bound_s: float | None = None) -> pyo.ConcreteModel:
    """``min over assignments max_j LB_j`` with the ceilings as integer variables (not solved here).

    Any schedule gives a feasible point (counts per class and client; its
    prefill and decode iteration counts), so the optimum, and any dual bound
    on it, is a lower bound on every makespan.
    """
    import pyomo.environ as pyo  # here, not at import: `simulate` never pays its 0.2 s
    G, m = len(data.count), len(data.batch_size)
    model = pyo.ConcreteModel(name="binpacking_bound")
    model.CLASSES = pyo.RangeSet(0, G - 1, doc="request classes g (single requests or groups)")
    model.CLIENTS = pyo.RangeSet(0, m - 1, doc="clients j")
    model.count = pyo.Param(model.CLASSES, initialize=lambda _, g: int(data.count[g]), doc="requests in class g")
    model.work_s = pyo.Param(model.CLASSES, initialize=lambda _, g: float(data.work_s[g]),
                             doc="smallest v_i in class g (s)")
    model.decodes = pyo.Param(model.CLASSES, initialize=lambda _, g: int(data.decodes[g]),
                              doc="smallest o_i - 1 in class g")
    model.batch_size = pyo.Param(model.CLIENTS, initialize=lambda _, j: int(data.batch_size[j]), doc="B_j")

    def count_bounds(mdl, g, j):
        return (0, int(data.count[g]))

    model.y = pyo.Var(model.CLASSES, model.CLIENTS, domain=pyo.NonNegativeIntegers, bounds=count_bounds,
                      doc="requests of class g on client j")
    model.prefills = pyo.Var(model.CLIENTS, domain=pyo.NonNegativeIntegers, doc="prefill stages on client j")
    model.decode_iterations = pyo.Var(model.CLIENTS, domain=pyo.NonNegativeIntegers,
                                      doc="decode iterations on client j")
    model.makespan_s = pyo.Var(domain=pyo.NonNegativeReals, bounds=(bound_s, None), doc="T (s)")

    @model.Constraint(model.CLASSES, doc="every request of every class on some client")
    def placed(mdl, g):
        return sum(mdl.y[g, j] for j in mdl.CLIENTS) == mdl.count[g]

    @model.Constraint(model.CLIENTS, doc="prefills_j >= ceil(|S_j| / B_j)")
    def prefill_ceiling(mdl, j):
        return mdl.batch_size[j] * mdl.prefills[j] >= sum(mdl.y[g, j] for g in mdl.CLASSES)

    @model.Constraint(model.CLIENTS, doc="decode_iterations_j >= ceil(D_j / B_j)")
    def decode_ceiling(mdl, j):
        return mdl.batch_size[j] * mdl.decode_iterations[j] >= pyo.quicksum(
            mdl.decodes[g] * mdl.y[g, j] for g in mdl.CLASSES)

    singles = [g for g in range(G) if data.count[g] == 1 and data.decodes[g] > 0]
    model.SINGLES = pyo.Set(initialize=singles, doc="classes of one request (their o_i - 1 is a max term)")

    @model.Constraint(model.SINGLES, model.CLIENTS, doc="decode_iterations_j >= o_i - 1 for every request on j")
    def longest_request(mdl, g, j):
        return mdl.decode_iterations[j] >= mdl.decodes[g] * mdl.y[g, j]

    @model.Constraint(model.CLIENTS, doc="T >= LB_j(S_j)")
    def client_bound(mdl, j):
        return mdl.makespan_s >= pyo.quicksum(mdl.work_s[g] * mdl.y[g, j] for g in mdl.CLASSES) \
            + data.a_p * mdl.prefills[j] + data.a_d * mdl.decode_iterations[j]

    # Valid for any schedule and exact in the totals, which the class minima round down.
    model.all_work = pyo.Constraint(
        expr=m * model.makespan_s >= data.total_work_s + data.a_p * sum(model.prefills[j] for j in model.CLIENTS)
        + data.a_d * sum(model.decode_iterations[j] for j in model.CLIENTS),
        doc="|J| T >= sum_j LB_j(S_j) with the exact total work V")
    model.all_decodes = pyo.Constraint(
        expr=sum(model.batch_size[j] * model.decode_iterations[j] for j in model.CLIENTS) >= data.total_decodes,
        doc="the decode iterations carry every decode: sum_j B_j N_j >= D")

    # Chvatal-Gomory roundings of the sums: the LP relaxation then already meets aggregate_ceiling.
    n_total, D, Bmax = data.n_requests, data.total_decodes, int(data.batch_size.max())
    model.all_prefills = pyo.Constraint(
        expr=sum(model.prefills[j] for j in model.CLIENTS) >= math.ceil(n_total / Bmax),
        doc="sum_j prefills_j >= ceil(n / max B)")
    model.all_decode_iterations = pyo.Constraint(
        expr=sum(model.decode_iterations[j] for j in model.CLIENTS) >= math.ceil(D / Bmax),
        doc="sum_j decode_iterations_j >= ceil(D / max B)")

    pairs = [(j, j + 1) for j in range(m - 1) if data.batch_size[j] == data.batch_size[j + 1]]
    model.SYMMETRIC_PAIRS = pyo.Set(initialize=pairs, dimen=2, doc="consecutive identical clients")

    @model.Constraint(model.SYMMETRIC_PAIRS, doc="symmetry breaking: identical clients by decreasing prefills")
    def symmetry(mdl, j, k):
        return mdl.prefills[j] >= mdl.prefills[k]

    model.objective = pyo.Objective(expr=model.makespan_s, sense=pyo.minimize, doc="the smallest possible makespan")
    return model


def lower_bound(trace: pd.DataFrame | str, clients: int, cost_model="llama-65b", *, batch_size=16,
                method: str = "auto", time_limit: float = 3.0, rel_gap: float = 1e-6,
                threads: int | None = None, kv_capacity_tokens=None, record: bool = False) -> LowerBound:
    """The instance's makespan lower bound with every term and the binding one.

    ``value_s`` is :func:`workbench.schedule.bounds.closed_form_lower_bound`
    (with ``kv_capacity_tokens``: its KV-aware term), the one bound every
    command reports for the instance.  ``method``: ``closed`` (only that,
    milliseconds), ``mip`` (also the bin-packing bound model, solved up to
    ``time_limit`` seconds; requests are grouped into classes beyond
    ``requests x clients = 20,000``) or ``auto`` (``mip`` when HiGHS is
    installed and ``requests x clients <= 2,000``).  The solver's bound is a
    separate figure, ``details["bin_packing_s"]`` (and the row
    ``bin_packing`` of :func:`bound_table`): it depends on the time limit
    and the machine, so it never becomes the instance's bound.  ``details``
    also holds the time of each part and the bound model's size and status.
    """
    from workbench.offline.solver import solver_available
    from workbench.schedule.bounds import refuse_recording

    refuse_recording(record)
    if method not in ("auto", "closed", "mip"):
        raise ConfigError(f"unknown method '{method}'.", field="method", fix="use auto, closed or mip.")
    started = time.perf_counter()
    trace = load_trace(trace)
    if isinstance(cost_model, (list, tuple)):
        models = [load_preset(c) for c in cost_model]
        if any(mdl != models[0] for mdl in models):
            if kv_capacity_tokens is not None:
                raise ConfigError("the bound of a mixed fleet does not take a KV capacity.",
                                  field="kv_capacity_tokens", fix="drop --kv-capacity, or give one cost model.")
            return _fleet_bound(trace, clients, batch_size, models, method, time_limit, started)
        cost_model = models[0]
    cm = load_preset(cost_model)
    try:
        clients = int(clients)
        B = batch_sizes_array(batch_size, clients)
    except (TypeError, ValueError):
        raise ConfigError(f"batch_size {batch_size!r} does not fit {clients!r} clients.", field="batch_size",
                          fix="give one integer, or one per client.") from None
    if clients < 1 or np.any(B < 1):
        raise ConfigError("clients and batch sizes must be >= 1.", field="clients", fix="use positive integers.")
    from workbench._checks import kv_capacities

    kv = kv_capacities(kv_capacity_tokens, [cm] * clients, clients)
    closed = closed_form_lower_bound(trace, clients, B, cm, kv_capacity_tokens=kv)
    details: dict = {"closed_form_s": time.perf_counter() - started}
    small = len(trace) * clients <= AUTO_MODEL_MAX_PAIRS
    if method == "auto" and not small:
        details["bound_model_skipped"] = "requests x clients above 2,000: method='mip' runs the bound model"
    if method == "mip" or (method == "auto" and small and solver_available()):
        t0 = time.perf_counter()
        data = bound_data(trace, clients, B, cm)
        model = build_bound_model(data, bound_s=max(closed.terms.values()))
        details["bound_model_build_s"] = time.perf_counter() - t0
        result = solve(model, time_limit=time_limit, rel_gap=rel_gap, threads=threads, require_solution=False)
        details.update(bound_model_classes=len(data.count), bound_model_exact=data.exact,
                       bound_model_status=result.status, bound_model_solve_s=result.time_s,
                       bound_model_incumbent_s=result.incumbent)
        if result.bound is not None:
            details["bin_packing"] = float(result.bound)
        details["bin_packing_time_s"] = time.perf_counter() - t0
    details["total_s"] = time.perf_counter() - started
    return LowerBound(value_s=closed.value_s, terms={k: float(v) for k, v in closed.terms.items()},
                      binding=closed.binding, details=details)


def _fleet_bound(trace, clients, batch_size, models, method, time_limit, started) -> LowerBound:
    """Unlike clients (a mixed fleet): :func:`workbench.schedule.fleet.fleet_lower_bound`, and with ``mip``
    (or ``auto`` on small instances) the offline bin packing's proven bound with per-client weights, as a
    separate figure in ``details`` (it depends on the solver's time limit)."""
    from workbench.offline.binpacking import assign
    from workbench.offline.solver import solver_available
    from workbench.schedule.fleet import fleet_lower_bound

    if len(models) != int(clients):
        raise ConfigError(f"{len(models)} cost models for {clients} clients.", field="cost_model",
                          fix="give one cost model, or one per client.")
    details: dict = {}
    if method == "mip" or (method == "auto" and len(trace) * int(clients) <= AUTO_MODEL_MAX_PAIRS
                           and solver_available()):
        result = assign(trace, clients, batch_size, models, method="mip" if method == "mip" else "auto",
                        time_limit=time_limit)
        details["bin_packing_weights_status"] = result.status
        details["bin_packing"] = float(result.lower_bound_s)
    bound = fleet_lower_bound(trace, clients, batch_size, models)
    details["total_s"] = time.perf_counter() - started
    return LowerBound(value_s=bound.value_s, terms=bound.terms, binding=bound.binding, details=details)


def bound_table(bound: LowerBound) -> pd.DataFrame:
    """The terms with their meaning, the binding one marked (for the CLI and notebooks)."""
    table = bound.table()
    if "bin_packing" in bound.details:
        # The solver's figure, shown beside the instance bound but never binding it (see lower_bound).
        table.loc["bin_packing"] = {"value_s": bound.details["bin_packing"], "binds": False}
    table["meaning"] = [TERM_DOCS.get(name, "") for name in table.index]
    return table
