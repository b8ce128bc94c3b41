"""Offline stage: minimizing-makespan bin packing (MODEL.md section 5).

Assign every request to a client so that the largest client load is smallest::

    min T   s.t.  sum_j x_ij = 1            (each request on one client)
                  sum_i W_ij x_ij <= T      (each client's load)
                  x_ij in {0, 1}

with ``W_ij = w_i`` of MODEL.md section 3 computed with client j's batch size
and cost model (identical clients have identical columns).  Symmetry among
identical clients is broken by ordering their loads.

:func:`assign` is the entry point.  Every result carries a *proven* lower
bound on the bin-packing optimum (closed form, or HiGHS's dual bound), so its
gap is known.  Methods:

``lpt``, ``kk``, ``ls``
    heuristics (:mod:`workbench.offline.heuristics`), no solver, milliseconds.
``mip``
    the Pyomo model, warm-started from the best heuristic, under a time limit.
``mip-cold``
    the same model with no start: HiGHS alone, kept for comparison (it is
    worse than LPT on GSM8K within 30 s, see ``docs/offline.md``).
``auto`` (default)
    the heuristics, then the MIP only if the proven gap still exceeds
    ``rel_gap`` and the instance is small enough to build in the time left.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from workbench._checks import cost_models, positive_int
from workbench.costmodel.linear import load_preset
from workbench.errors import ConfigError
from workbench.offline import heuristics as H
from workbench.offline.solver import solve
from workbench.schedule.metrics import batch_sizes_array
from workbench.workload.trace import load_trace

if TYPE_CHECKING:
    import pyomo.environ as pyo

METHODS = ("auto", "lpt", "kk", "ls", "mip", "mip-cold")
#: Above this many x_ij the MMBP model is not built by ``auto`` (Pyomo builds ~1e5 per second
#: and HiGHS does not improve a near-optimal heuristic on such sizes in seconds).
AUTO_MIP_MAX_BINARIES = 60_000
#: ``mip`` and ``mip-cold`` refuse to build beyond this (memory, and minutes of build time).
MIP_MAX_BINARIES = 2_000_000
#: ``auto`` runs Karmarkar-Karp only up to this many requests x clients: its m-way merges cost
#: about n m log m (0.3 s at gsm8k-train x 64 = 478k; 35 s at 100k x 1,024), and beyond it LPT
#: plus local search is already within 1e-4 of the bound on GSM8K-like traces.
AUTO_KK_MAX_CELLS = 1_000_000
#: The weight matrix W (requests x clients, float64) is refused beyond this many cells (1 GiB).
MAX_WEIGHT_CELLS = 2**27


@dataclass(frozen=True)
class MMBPData:
    """The data of one bin-packing instance: weights (s) per request and client."""

    weights_s: np.ndarray  # (requests, clients)
    request_ids: np.ndarray
    batch_size: np.ndarray

    @property
    def n_requests(self) -> int:
        return int(self.weights_s.shape[0])

    @property
    def n_clients(self) -> int:
        return int(self.weights_s.shape[1])


def mmbp_data(trace: pd.DataFrame | str, clients: int, batch_size, cost_model) -> MMBPData:
    """Weights ``W_ij`` (MODEL.md section 3) for ``trace`` on ``clients`` clients."""
    trace = load_trace(trace)
    m = positive_int(clients, "clients")
    try:
        B = batch_sizes_array(batch_size, m)
    except (ValueError, TypeError):
        raise ConfigError(f"batch_size {batch_size!r} does not give one size per client for {m} clients.",
                          field="batch_size", fix="give one integer, or one per client.") from None
    if np.any(B < 1):
        raise ConfigError(f"batch size {int(B.min())} is below 1.", field="batch_size", fix="use a batch size >= 1.")
    models = [load_preset(c) for c in cost_models(cost_model, m)]
    l = trace["input_tokens"].to_numpy(float)
    o = trace["output_tokens"].to_numpy(float)
    if all(model == models[0] for model in models) and np.all(B == B[0]):
        # Identical clients: every column is the same, so W is a read-only view of one column
        # (no memory, no build time, whatever the number of clients).
        W = np.broadcast_to(models[0].request_weight_s(l, o, int(B[0]))[:, None], (len(trace), m))
    else:
        if len(trace) * m > MAX_WEIGHT_CELLS:
            raise ConfigError(f"the offline stage would hold a {len(trace):,} x {m:,} weight matrix for these unlike "
                              f"clients ({len(trace) * m * 8 / 2**30:.1f} GiB; limit {MAX_WEIGHT_CELLS:,} cells).",
                              field="clients", fix="split the trace or the fleet, or use an online dispatcher "
                                                   "(round-robin, least-work) at this size.")
        W = np.column_stack([models[j].request_weight_s(l, o, int(B[j])) for j in range(m)])
    return MMBPData(weights_s=W, request_ids=trace["request_id"].to_numpy(), batch_size=B)


def build_mmbp_model(data: MMBPData, *, symmetry: bool = True, bound_s: float | None = None) -> pyo.ConcreteModel:
    """The MMBP of MODEL.md section 5 as a Pyomo model (not solved here).

    ``bound_s``, a proven lower bound on the optimum, becomes the makespan
    variable's lower bound, which lets HiGHS stop as soon as it meets it.
    """
    import pyomo.environ as pyo  # here, not at import: `simulate` never pays its 0.2 s
    W = data.weights_s
    n, m = W.shape
    model = pyo.ConcreteModel(name="mmbp")
    model.REQUESTS = pyo.RangeSet(0, n - 1, doc="requests i (trace rows)")
    model.CLIENTS = pyo.RangeSet(0, m - 1, doc="clients j (model replicas)")
    model.weight_s = pyo.Param(model.REQUESTS, model.CLIENTS, initialize=lambda _, i, j: float(W[i, j]),
                               doc="w_ij: request i's additive load on client j (s), MODEL.md section 3")
    model.x = pyo.Var(model.REQUESTS, model.CLIENTS, domain=pyo.Binary, doc="x_ij = 1 if request i runs on client j")
    model.makespan_s = pyo.Var(domain=pyo.NonNegativeReals, bounds=(bound_s, None),
                               doc="T: the largest client load (s)")

    @model.Constraint(model.REQUESTS, doc="each request on exactly one client")
    def one_client(mdl, i):
        return sum(mdl.x[i, j] for j in mdl.CLIENTS) == 1

    def load_expr(mdl, j):
        return pyo.quicksum(mdl.weight_s[i, j] * mdl.x[i, j] for i in mdl.REQUESTS)

    @model.Constraint(model.CLIENTS, doc="every client's load is at most T")
    def client_load(mdl, j):
        return load_expr(mdl, j) <= mdl.makespan_s

    pairs = []
    if symmetry:
        for group in H.client_groups(W):
            pairs.extend(zip(group[:-1], group[1:]))
    model.SYMMETRIC_PAIRS = pyo.Set(initialize=pairs, dimen=2,
                                    doc="consecutive identical clients (j, j'), j < j'")

    @model.Constraint(model.SYMMETRIC_PAIRS, doc="symmetry breaking: identical clients sorted by decreasing load")
    def load_order(mdl, j, k):
        return load_expr(mdl, j) >= load_expr(mdl, k)

    model.objective = pyo.Objective(expr=model.makespan_s, sense=pyo.minimize, doc="minimize the largest load")
    return model


def mmbp_warm_start(model: pyo.ConcreteModel, data: MMBPData, assignment: np.ndarray):
    """``(variable, value)`` pairs giving ``assignment`` as a MIP start, relabelled for the symmetry constraints."""
    assignment = _sorted_for_symmetry(data.weights_s, assignment)
    loads = H.loads_s(data.weights_s, assignment)
    n, m = data.weights_s.shape
    pairs = [(model.x[i, j], 1.0 if assignment[i] == j else 0.0) for i in range(n) for j in range(m)]
    pairs.append((model.makespan_s, float(max(loads.max(), model.makespan_s.lb or 0.0))))
    return pairs


def _sorted_for_symmetry(W: np.ndarray, assignment: np.ndarray) -> np.ndarray:
    """Relabel identical clients so that their loads decrease with the index (same packing)."""
    assignment = np.asarray(assignment, dtype=np.int64)
    loads = H.loads_s(W, assignment)
    relabel = np.arange(W.shape[1])
    for group in H.client_groups(W):
        order = sorted(group, key=lambda j: (-loads[j], j))
        for new, old in zip(group, order):
            relabel[old] = new
    return relabel[assignment]


def extract_assignment(model: pyo.ConcreteModel) -> np.ndarray:
    """Client of each request from a solved MMBP model (the largest x_ij, robust to tolerances)."""
    import pyomo.environ as pyo  # here, not at import: `simulate` never pays its 0.2 s
    n, m = len(model.REQUESTS), len(model.CLIENTS)
    x = np.array([[pyo.value(model.x[i, j], exception=False) or 0.0 for j in range(m)] for i in range(n)])
    return np.argmax(x, axis=1).astype(np.int64)


@dataclass(frozen=True)
class Assignment:
    """An offline assignment with its proven bound.

    ``makespan_s`` is the largest client load in the bin-packing weights;
    ``lower_bound_s`` is proven (closed form or a solver's dual bound) for the
    bin-packing optimum, so ``gap = makespan_s / lower_bound_s - 1`` bounds how
    far the assignment is from the best possible one.
    """

    assignment: np.ndarray
    loads_s: np.ndarray
    makespan_s: float
    lower_bound_s: float
    gap: float
    method: str
    status: str
    time_s: float
    bound_terms: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """One row per client: requests, load and its share of the bound."""
        counts = np.bincount(self.assignment, minlength=len(self.loads_s))
        return pd.DataFrame({"client": np.arange(len(self.loads_s)), "requests": counts, "load_s": self.loads_s,
                             "load_over_bound": self.loads_s / self.lower_bound_s}).set_index("client")

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "status": self.status, "makespan_s": self.makespan_s,
                "lower_bound_s": self.lower_bound_s, "gap": self.gap, "time_s": self.time_s,
                **{f"bound_{k}_s": v for k, v in self.bound_terms.items()}, **self.details}


def _gap(value: float, bound: float) -> float:
    return value / bound - 1.0 if bound > 0 else math.inf


def assign(trace: pd.DataFrame | str, clients: int = 8, batch_size=16, cost_model="llama-65b", *,
           method: str = "auto", time_limit: float = 2.0, rel_gap: float = 5e-4,
           threads: int | None = None, kv_capacity_tokens=None, record: bool = False) -> Assignment:
    """The offline bin-packing assignment of ``trace`` to ``clients`` clients.

    ``time_limit`` (s) bounds the whole call for ``auto`` and the solve for
    ``mip``/``mip-cold``; ``rel_gap`` is the proven gap at which to stop.  The proven bound
    (``lower_bound_s``) is a valid makespan bound too, but it depends on the
    time limit, so schedules report the instance's closed-form bound instead
    (MODEL.md section 3).

    ``kv_capacity_tokens`` (one, or one per client; ``None``: unlimited): no request goes to a
    client whose KV cache cannot hold its ``l_i + o_i`` tokens.  When that excludes some pairs
    the assignment comes from ``lpt`` and ``ls`` on the allowed pairs (``kk`` and the MIP assume
    every pair is allowed and are refused), and a request that fits no client is refused.
    """
    from workbench.schedule.bounds import refuse_recording

    refuse_recording(record)
    started = time.perf_counter()
    if method not in METHODS:
        raise ConfigError(f"unknown method '{method}'.", field="method", fix=f"use one of {', '.join(METHODS)}.")
    try:
        time_limit = float(time_limit)
        rel_gap = float(rel_gap)
    except (TypeError, ValueError):
        raise ConfigError("time_limit and rel_gap must be numbers.", field="time_limit",
                          fix="give seconds > 0 and a relative gap >= 0.") from None
    if not time_limit > 0:
        raise ConfigError(f"time_limit is {time_limit}.", field="time_limit", fix="give a positive number of seconds.")
    if not rel_gap >= 0:
        raise ConfigError(f"rel_gap is {rel_gap}.", field="rel_gap", fix="give a relative gap >= 0, e.g. 5e-4.")
    trace = load_trace(trace)
    data = mmbp_data(trace, clients, batch_size, cost_model)
    W = data.weights_s
    n, m = W.shape
    allowed = _kv_allowed(trace, m, kv_capacity_tokens)
    if allowed is not None:
        if method in ("kk", "mip", "mip-cold"):
            raise ConfigError(f"method '{method}' assumes every request may go to every client, but the KV "
                              "capacities exclude some pairs.", field="method", fix="use method 'auto', 'lpt' or 'ls'.")
        # An excluded pair weighs inf for the heuristics; the bound treats it as the largest finite
        # weight times n (a smaller weight can only lower the optimum, so the bound stays valid).
        big = float(np.max(W)) * (n + 1)
        bound, terms = H.mmbp_lower_bound(np.where(allowed, W, big))
        W = np.where(allowed, W, np.inf)
        method = {"auto": "ls"}.get(method, method)
    else:
        bound, terms = H.mmbp_lower_bound(W)
    identical = H.identical_columns(W)
    details: dict[str, Any] = {}
    candidates: dict[str, np.ndarray] = {}
    status = "heuristic"

    if method in ("lpt", "ls", "auto", "mip"):
        candidates["lpt"] = H.lpt(W)
    if method in ("kk", "ls", "auto", "mip"):
        if identical and (method != "auto" or n * m <= AUTO_KK_MAX_CELLS):
            candidates["kk"] = H.kk(W)
        elif identical:
            details["kk_skipped"] = f"{n:,} x {m:,} exceeds {AUTO_KK_MAX_CELLS:,} cells (too slow for auto)"
        elif method == "kk":
            raise ConfigError("kk (largest differencing) needs identical clients; these differ in batch size "
                              "or cost model.", field="method", fix="use method 'ls' or 'mip'.")
    best_name, best = _best(W, candidates) if candidates else ("", None)
    if method in ("ls", "auto", "mip") and best is not None:
        budget = max(0.05, 0.25 * time_limit) if method != "auto" else max(0.05, 0.5 * time_limit)
        best = H.local_search(W, best, time_limit=budget)
        best_name = f"{best_name}+ls"
    if best is not None:
        details["heuristic"] = best_name
        details["heuristic_makespan_s"] = float(H.loads_s(W, best).max())

    run_mip = method in ("mip", "mip-cold")
    if method == "auto":
        remaining = time_limit - (time.perf_counter() - started)
        heuristic_gap = _gap(float(H.loads_s(W, best).max()), bound)
        run_mip = heuristic_gap > rel_gap and n * m <= AUTO_MIP_MAX_BINARIES and remaining > 0.2
        details["mip_skipped"] = None if run_mip else (
            "heuristic within rel_gap" if heuristic_gap <= rel_gap else
            "instance too large for the time limit" if n * m > AUTO_MIP_MAX_BINARIES else "no time left")
    if run_mip:
        if n * m > MIP_MAX_BINARIES:
            raise ConfigError(f"the bin-packing MIP would have {n * m:,} binaries (limit {MIP_MAX_BINARIES:,}).",
                              field="method", fix="use method 'auto' or 'ls' (within 1e-6 of the bound on GSM8K).")
        build_started = time.perf_counter()
        model = build_mmbp_model(data, symmetry=True, bound_s=bound if method != "mip-cold" else None)
        details["build_s"] = time.perf_counter() - build_started
        warm = mmbp_warm_start(model, data, best) if (best is not None and method != "mip-cold") else None
        remaining = time_limit - (time.perf_counter() - started) if method == "auto" else time_limit
        result = solve(model, time_limit=max(remaining, 0.05), rel_gap=rel_gap, threads=threads, warm_start=warm,
                       require_solution=best is None)
        details.update(mip_status=result.status, mip_time_s=result.time_s, mip_warm_start=result.warm_start,
                       mip_incumbent_s=result.incumbent, mip_bound_s=result.bound)
        if result.bound is not None and result.bound > bound:
            bound = result.bound
            terms["mip_dual"] = result.bound
        if result.has_solution:
            mip_assignment = extract_assignment(model)
            candidates["mip"] = mip_assignment
            if best is None or H.loads_s(W, mip_assignment).max() < H.loads_s(W, best).max():
                best, best_name = mip_assignment, "mip"
        status = result.status
    loads = H.loads_s(W, best)
    makespan = float(loads.max())
    if makespan <= bound * (1 + 1e-12):
        status = "optimal"
    return Assignment(assignment=best, loads_s=loads, makespan_s=makespan, lower_bound_s=float(bound),
                      gap=_gap(makespan, bound), method=method if method != "auto" else f"auto({best_name})",
                      status=status, time_s=time.perf_counter() - started, bound_terms=terms, details=details)


def _kv_allowed(trace: pd.DataFrame, clients: int, kv_capacity_tokens) -> np.ndarray | None:
    """``allowed[i, j]``: client ``j``'s KV cache holds request ``i``; ``None`` when every pair is allowed."""
    if kv_capacity_tokens is None:
        return None
    from workbench._checks import kv_capacities

    caps = kv_capacities(kv_capacity_tokens, [None] * clients, clients)
    if all(c is None for c in caps):
        return None
    need = (trace["input_tokens"].to_numpy(np.int64) + trace["output_tokens"].to_numpy(np.int64))[:, None]
    cap = np.array([np.iinfo(np.int64).max if c is None else int(c) for c in caps], dtype=np.int64)[None, :]
    allowed = need <= cap
    homeless = np.flatnonzero(~allowed.any(axis=1))
    if len(homeless):
        row = int(homeless[0])
        raise ConfigError(f"request '{trace['request_id'].iloc[row]}' needs {int(need[row, 0])} KV tokens (input + "
                          f"output) but no client holds more than {int(max(c for c in caps if c is not None))}.",
                          field="kv_capacity_tokens", row=row,
                          fix="raise kv_capacity_tokens or drop requests longer than the cache.")
    return None if allowed.all() else allowed


def _best(W: np.ndarray, candidates: dict[str, np.ndarray]) -> tuple[str, np.ndarray]:
    name = min(candidates, key=lambda k: (H.loads_s(W, candidates[k]).max(), k))
    return name, candidates[name]
