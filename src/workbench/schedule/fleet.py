"""Heterogeneous clients: a mixed fleet (per-client batch size, cost model and KV capacity).

The simulator, the validator and the offline stage take one batch size, cost
model and KV capacity per client.  This module adds what a mixed fleet needs
beyond that:

* :class:`Fleet` - a fleet as groups of identical clients, e.g.
  ``Fleet.parse("llama2-70b-a100-tp8:4x32,llama2-70b-h100-tp4:4x32")``
  (4 A100 replicas and 4 H100 replicas of batch 32), with the keyword
  arguments :func:`workbench.engine.core.simulate` takes;
* :func:`fleet_lower_bound` - a makespan lower bound valid for per-client cost
  models and batch sizes (the single-model closed form of
  :mod:`workbench.schedule.bounds` is not: it prices every request on one model);
* :func:`fractional_work_bound` - its work term, the LP relaxation of the
  bin packing with per-client weights, bounded through its dual.

**Why the bound is valid** (MODEL.md section 3 on each client).  Client ``j``
with batch size ``B_j`` and cost model ``(a_p^j, b_p^j, a_d^j, b_d^j, c_d^j)``
serving set ``S_j`` is busy at least ``LB_j(S_j) >= sum_{i in S_j} W_ij``
with ``W_ij = v_i^j + a_p^j / B_j + a_d^j (o_i - 1) / B_j`` (ceilings
relaxed).  So ``T >= sum_{i in S_j} W_ij`` for every ``j``.  For any
``y >= 0`` with ``sum_j y_j = 1``,

    T = sum_j y_j T >= sum_j y_j sum_{i in S_j} W_ij >= sum_i min_j y_j W_ij,

because each request is in exactly one ``S_j``.  Every such ``y`` gives a
valid bound (it is a feasible point of the dual of the bin-packing LP
relaxation), so we search ``y`` numerically and any point found is safe.
Identical clients get equal ``y_j`` (the dual is concave and symmetric), and
with one kind of client the bound is ``sum_i w_i / |J|``, the classic
``average_work`` term.  With uniform machines (``W_ij = w_i / s_j``) the best
``y_j`` is ``s_j / sum s``, giving total work over total speed.  The other
terms: a request cannot finish before it runs alone on the fastest client for
it (``max_i min_j t_alone^j(i)``, plus its arrival time); and two of the
``|J| + 1`` requests longest alone share some client (pigeonhole), so
``T >= min over those pairs and clients of LB_j({a, b})``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from workbench._checks import cost_models as _cost_models
from workbench._checks import positive_int
from workbench.costmodel.linear import load_preset
from workbench.errors import ConfigError
from workbench.schedule.bounds import LowerBound, _round_down
from workbench.schedule.metrics import batch_sizes_array
from workbench.workload.trace import load_trace

TERM_DOCS = {
    "single_request": "the longest request served alone on its fastest client: max_i min_j t_alone_j(i)",
    "fractional_work": "max_y sum_i min_j y_j W_ij (y >= 0, sum y = 1): the bin-packing LP relaxation with "
                       "per-client weights W_ij, through its dual",
    "pair": "two of the |J|+1 requests longest alone share a client: min over pairs and clients of LB_j({a, b})",
    "release_plus_alone": "max_i (a_i + min_j t_alone_j(i)) when requests arrive over time",
    "bin_packing_weights": "the proven bound of the offline bin packing with per-client weights",
    "fractional_tokens": "mixed iterations: fractional_work with W_ij = v_ij + a_d^j (o_i - 1 + l_i) / tau "
                         "+ (a_m^j - a_d^j) l_i / tau (at most tau tokens per iteration)",
}


# -- the fleet --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fleet:
    """Groups of identical clients: ``(cost model preset, count, batch size)``, in client order."""

    groups: tuple[tuple[str, int, int], ...]

    @classmethod
    def parse(cls, spec: str) -> Fleet:
        """``"preset:COUNTxBATCH,preset:COUNTxBATCH,..."`` (``xBATCH`` optional, default 16)."""
        groups = []
        for part in str(spec).split(","):
            name, _, size = part.strip().rpartition(":")
            count, _, batch = size.partition("x")
            try:
                groups.append((name, int(count), int(batch) if batch else 16))
            except ValueError:
                raise ConfigError(f"cannot read fleet part '{part}'.", field="fleet",
                                  fix="write e.g. llama2-70b-a100-tp8:4x32,llama2-70b-h100-tp4:4x32.") from None
        return cls(tuple(groups))

    def __post_init__(self) -> None:
        if not self.groups:
            raise ConfigError("a fleet needs at least one group of clients.", field="fleet",
                              fix="e.g. Fleet.parse('llama2-70b-a100-tp8:4x32').")
        for name, count, batch in self.groups:
            load_preset(name)
            positive_int(count, "count")
            positive_int(batch, "batch_size")

    @property
    def clients(self) -> int:
        return sum(count for _, count, _ in self.groups)

    @property
    def batch_size(self) -> list[int]:
        return [batch for _, count, batch in self.groups for _ in range(count)]

    @property
    def cost_model(self) -> list:
        return [load_preset(name) for name, count, _ in self.groups for _ in range(count)]

    @property
    def kv_capacity_tokens(self) -> list[int | None]:
        return [getattr(m, "kv_capacity_tokens", None) for m in self.cost_model]

    def simulate_kwargs(self, kv: bool = True) -> dict:
        """``clients``, ``batch_size``, ``cost_model`` (and ``kv_capacity_tokens``) for ``simulate``."""
        out = {"clients": self.clients, "batch_size": self.batch_size, "cost_model": self.cost_model}
        if kv:
            out["kv_capacity_tokens"] = self.kv_capacity_tokens
        return out

    def table(self) -> pd.DataFrame:
        rows = []
        for name, count, batch in self.groups:
            m = load_preset(name)
            rows.append({"preset": name, "clients": count, "batch_size": batch,
                         "kv_capacity_tokens": m.kv_capacity_tokens, **m.coefficients(),
                         "decode_s_full_batch_ctx512": float(m.decode_time(batch, batch * 512))})
        return pd.DataFrame(rows)


# -- the bound --------------------------------------------------------------------------------
def fleet_weights(trace: pd.DataFrame, batch_size, cost_model, clients: int | None = None) -> np.ndarray:
    """``W_ij`` (requests x clients): request i's additive load on client j (seconds)."""
    clients = clients if clients is not None else (len(cost_model) if isinstance(cost_model, (list, tuple))
                                                   else len(np.atleast_1d(batch_size)))
    models = _cost_models(cost_model, clients)
    B = batch_sizes_array(batch_size, clients)
    l = trace["input_tokens"].to_numpy(float)
    o = trace["output_tokens"].to_numpy(float)
    return np.column_stack([models[j].request_weight_s(l, o, int(B[j])) for j in range(clients)])


def _types(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct client columns of ``W`` and how many clients have each."""
    cols, counts = np.unique(W.T, axis=0, return_counts=True)
    return cols.T, counts


def fractional_work_bound(W: np.ndarray, *, sweeps: int = 4, iterations: int = 80) -> tuple[float, np.ndarray]:
    """``max over y of sum_i min_j y_j W_ij`` (``y >= 0``, ``sum_j y_j = 1``), searched numerically.

    Returns the best value found and its ``y`` per client.  Every ``y`` the
    search visits gives a valid lower bound on the bin-packing optimum and
    hence on the makespan (see the module docstring), so the value is proven
    whether or not the search reaches the maximum.  Clients with identical
    columns share one ``y``; with ``K`` kinds of client the search is a
    golden-section line search over each pair of kinds, ``sweeps`` times.
    """
    W = np.asarray(W, dtype=float)
    m = W.shape[1]
    cols, counts = _types(W)
    K = cols.shape[1]
    if K == 1:
        return float(cols[:, 0].sum()) / m, np.full(m, 1.0 / m)

    def value(z: np.ndarray) -> float:  # z_t = total dual weight of kind t (y_j = z_t / count_t)
        return float(np.min(cols * (z / counts), axis=1).sum())

    # start from speeds: y_j proportional to 1 / (client j's total weight)
    z = counts / cols.sum(axis=0)
    z = z / z.sum()
    best = value(z)
    phi = (math.sqrt(5) - 1) / 2
    for _ in range(sweeps):
        improved = False
        for a in range(K):
            for b in range(a + 1, K):
                total = z[a] + z[b]
                if total <= 0:
                    continue

                def f(x, a=a, b=b, total=total):
                    trial = z.copy()
                    trial[a], trial[b] = x, total - x
                    return value(trial)

                lo, hi = 0.0, total
                x1, x2 = hi - phi * (hi - lo), lo + phi * (hi - lo)
                f1, f2 = f(x1), f(x2)
                for _ in range(iterations):
                    if f1 < f2:
                        lo, x1, f1 = x1, x2, f2
                        x2 = lo + phi * (hi - lo)
                        f2 = f(x2)
                    else:
                        hi, x2, f2 = x2, x1, f1
                        x1 = hi - phi * (hi - lo)
                        f1 = f(x1)
                x = x1 if f1 >= f2 else x2
                fx = max(f1, f2)
                if fx > best:
                    improved = improved or fx > best * (1 + 1e-12)
                    z[a], z[b] = x, total - x
                    best = value(z)
        if not improved:
            break
    # the y of each client
    _, inverse = np.unique(W.T, axis=0, return_inverse=True)
    y = (z / counts)[np.asarray(inverse).ravel()]
    return best, y


def fleet_lower_bound(trace: pd.DataFrame | str, clients: int, batch_size, cost_model, *,
                      release_aware: bool = True) -> LowerBound:
    """A makespan lower bound for clients with their own cost models and batch sizes.

    Terms: ``single_request``, ``fractional_work``, ``pair`` and, when
    requests arrive over time, ``release_plus_alone`` (see :data:`TERM_DOCS`
    and the module docstring for the proofs).  Milliseconds on GSM8K.
    """
    trace = load_trace(trace)
    m = positive_int(clients, "clients")
    models = _cost_models(cost_model, m)
    B = batch_sizes_array(batch_size, m)
    l = trace["input_tokens"].to_numpy(float)
    o = trace["output_tokens"].to_numpy(float)
    alone = np.min(np.column_stack([mdl.alone_time_s(l, o) for mdl in models]), axis=1)
    W = fleet_weights(trace, B, models, m)
    work, y = fractional_work_bound(W)
    terms = {"single_request": float(alone.max()), "fractional_work": work}
    pair = _pair_term(l, o, alone, models, B)
    if pair is not None:
        terms["pair"] = pair
    if release_aware and "arrival_s" in trace and float(trace["arrival_s"].max()) > 0:
        terms["release_plus_alone"] = float((trace["arrival_s"].to_numpy(float) + alone).max())
    binding = max(terms, key=terms.get)
    return LowerBound(value_s=_round_down(terms[binding]), terms=terms, binding=binding,
                      details={"dual_y": y.tolist()})


def chunked_fleet_lower_bound(trace: pd.DataFrame | str, clients: int, batch_size, cost_model, *,
                              token_budget: float = math.inf) -> LowerBound:
    """:func:`fleet_lower_bound` for mixed (chunked-prefill) iterations, which pay no ``a_p`` per stage.

    On client ``j`` the iterations take at least ``V_j + a_d^j N_j + (a_m^j - a_d^j) N_mixed_j``
    (:func:`workbench.schedule.bounds.chunked_lower_bound`), with ``N_j >= D_j / B_j`` and, under a token
    budget ``tau``, ``N_j >= (D_j + L_j) / tau`` and ``N_mixed_j >= L_j / tau``: each is a sum over the
    client's requests, so each gives weights ``W_ij`` for the dual argument of the module docstring
    (``fractional_work``, ``fractional_tokens``).  A prompt's iterations cost at least ``a_m >= a_p``, so a
    request alone still takes ``t_alone`` (``single_request``, ``release_plus_alone``).  The ``pair`` term
    is left out: a mixed iteration can carry one request's prompt and the other's decode.
    """
    trace = load_trace(trace)
    m = positive_int(clients, "clients")
    models = _cost_models(cost_model, m)
    B = batch_sizes_array(batch_size, m)
    l = trace["input_tokens"].to_numpy(float)
    d = trace["output_tokens"].to_numpy(float) - 1.0
    alone = np.min(np.column_stack([mdl.alone_time_s(l, d + 1.0) for mdl in models]), axis=1)
    tau = float(token_budget)
    mixed_s = [(max(mdl.a_p, mdl.a_d) - mdl.a_d) * l / tau if math.isfinite(tau) else 0.0 * l for mdl in models]
    v = [mdl.request_work_s(l, d + 1.0) for mdl in models]
    W = np.column_stack([v[j] + models[j].a_d * d / int(B[j]) + mixed_s[j] for j in range(m)])
    terms = {"single_request": float(alone.max()), "fractional_work": fractional_work_bound(W)[0]}
    if math.isfinite(tau):
        W_tokens = np.column_stack([v[j] + models[j].a_d * (d + l) / tau + mixed_s[j] for j in range(m)])
        terms["fractional_tokens"] = fractional_work_bound(W_tokens)[0]
    if "arrival_s" in trace and float(trace["arrival_s"].max()) > 0:
        terms["release_plus_alone"] = float((trace["arrival_s"].to_numpy(float) + alone).max())
    binding = max(terms, key=terms.get)
    return LowerBound(value_s=_round_down(terms[binding]), terms=terms, binding=binding)


def _pair_term(l, o, alone, models, B) -> float | None:
    m = len(models)
    if len(l) <= m:
        return None
    top = np.argsort(-alone, kind="stable")[: m + 1]
    kinds = {(tuple(mdl.coefficients().values()), int(b)): (mdl, int(b)) for mdl, b in zip(models, B)}
    best = math.inf
    for mdl, b in kinds.values():
        v = mdl.request_work_s(l[top], o[top])
        for x in range(len(top)):
            for z in range(x + 1, len(top)):
                a, c = top[x], top[z]
                d = (o[a] - 1) + (o[c] - 1)
                cost = (v[x] + v[z] + mdl.a_p * math.ceil(2 / b)
                        + mdl.a_d * max(math.ceil(d / b), max(o[a], o[c]) - 1))
                best = min(best, cost)
    return float(best)
