"""Closed-form lower bounds on the makespan (MODEL.md section 3).

Every schedule on client ``j`` costs ``sum v_i + a_p N_prefill + a_d N_decode``
with ``N_prefill >= ceil(|S|/B)`` and ``N_decode >= max(ceil(D/B), max(o_i-1))``.
Relaxing the ceilings gives additive weights ``w_i``, so the total work spread
evenly over the clients bounds any makespan, and so does the longest request
served alone.  The tighter bin-packing bound lives in ``workbench.offline``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from workbench.costmodel import LinearCostModel
from workbench.metrics import batch_sizes_array


@dataclass(frozen=True)
class LowerBound:
    """A lower bound with every term that was computed and the one that binds."""

    value_s: float
    terms: dict[str, float]
    binding: str
    details: dict = field(default_factory=dict, compare=False)

    def table(self) -> pd.DataFrame:
        rows = [{"term": name, "value_s": value, "binds": name == self.binding} for name, value in self.terms.items()]
        return pd.DataFrame(rows).set_index("term")


TERM_DOCS = {
    "single_request": "the longest request served alone: max_i t_alone(i)",
    "average_work": "total relaxed work spread evenly: sum_i w_i / |J|",
}


def closed_form_lower_bound(trace: pd.DataFrame, clients: int, batch_size, cost_model: LinearCostModel,
                            release_aware: bool = True) -> LowerBound:
    """``max(max_i t_alone(i), sum_i w_i / |J|)``, instant on any trace.

    With per-client batch sizes the weights use the largest ``B`` (the most
    favourable client), which keeps the bound valid.  When requests arrive
    over time, no request can finish before ``a_i + t_alone(i)``, which is
    added as a term.
    """
    B = batch_sizes_array(batch_size, clients)
    l = trace["input_tokens"].to_numpy(float)
    o = trace["output_tokens"].to_numpy(float)
    alone = cost_model.alone_time_s(l, o)
    weights = cost_model.request_weight_s(l, o, int(B.max()))
    terms = {
        "single_request": float(alone.max()),
        "average_work": float(weights.sum()) / int(clients),
    }
    if release_aware and "arrival_s" in trace and float(trace["arrival_s"].max()) > 0:
        terms["release_plus_alone"] = float((trace["arrival_s"].to_numpy(float) + alone).max())
    binding = max(terms, key=terms.get)
    return LowerBound(value_s=terms[binding], terms=terms, binding=binding)


# -- the tightest bound known so far --------------------------------------------------
#: (trace digest, clients, batch sizes, cost coefficients) -> best bound computed in this process.
_BEST: dict[tuple, LowerBound] = {}


def _bound_key(trace: pd.DataFrame, clients: int, batch_size, cost_model: LinearCostModel) -> tuple:
    from workbench.trace import trace_digest

    B = tuple(int(b) for b in batch_sizes_array(batch_size, clients))
    return (trace_digest(trace), int(clients), B, tuple(cost_model.coefficients().values()))


def record_bound(trace: pd.DataFrame, clients: int, batch_size, cost_model: LinearCostModel,
                 bound: LowerBound) -> None:
    """Remember a bound (e.g. the bin-packing bound) so later schedules report it."""
    key = _bound_key(trace, clients, batch_size, cost_model)
    if key not in _BEST or bound.value_s > _BEST[key].value_s:
        _BEST[key] = bound


def best_lower_bound(trace: pd.DataFrame, clients: int, batch_size, cost_model: LinearCostModel) -> LowerBound:
    """The tightest of the closed-form bound and any bound recorded for this instance."""
    closed = closed_form_lower_bound(trace, clients, batch_size, cost_model)
    known = _BEST.get(_bound_key(trace, clients, batch_size, cost_model))
    return known if known is not None and known.value_s > closed.value_s else closed
