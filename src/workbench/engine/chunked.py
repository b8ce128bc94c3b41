"""Chunked-prefill mixed batching (Sarathi-Serve, vLLM V1): the engine's ``iteration="mixed"`` mode.

Every iteration of a client carries **all** its running decodes (one token
each) and fills the rest of a **token budget** ``tau`` with prefill chunks:
first the requests whose prompts are part-way through, then new requests
from the queue (admitted in queue order while a batch slot is free and, with
a KV cache, their ``l_i + o_i`` tokens fit; head-of-line).  A request's first
token comes out at the end of the iteration that processes the last chunk of
its prompt; it decodes from the next iteration on.  Decodes never wait for a
prefill ("stall-free batching"), which is the point of the method.

Cost of an iteration (the extension of MODEL.md section 2, same coefficients)::

    t_mixed = a_m + b_d n_d + c_d (C_d + Q) + b_p P,    a_m = max(a_p, a_d) if P > 0 else a_d

``n_d`` decodes reading ``C_d`` context tokens, ``P`` prefill tokens in
chunks, and ``Q`` the tokens of earlier chunks of the same prompts, which the
chunks' attention reads back from the KV cache (``c_d`` per token, as a
decode does).  With no chunk it is the decode model exactly; a chunk that is
a whole prompt (``Q = 0``) with no decodes costs ``t_prefill`` when
``a_p >= a_d`` (the shipped presets have ``a_p = a_d``).

An iteration with prefill chunks is a timeline row of kind ``mixed``:
``n_requests``, ``tokens`` and ``request_ids`` describe its decodes as for a
``decode`` row, and two optional columns, ``prefill_ids`` and
``prefill_tokens`` (space-separated, aligned), list the chunks.  Files
without these columns are read as before; the validator checks the rows
(see docs/beyond.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from workbench.costmodel.linear import LinearCostModel
from workbench.engine.core import DEFAULT_TOKEN_BUDGET, simulate  # noqa: F401  (DEFAULT_TOKEN_BUDGET: its old home)
from workbench.errors import ConfigError
from workbench.policies.registry import POLICIES, Policy
from workbench.schedule.bounds import chunked_lower_bound  # noqa: F401  (re-exported: its old home)
from workbench.schedule.schema import Schedule

#: The registered chunked-prefill policies: mixed iterations over KV reserved at admission (each a
#: :class:`~workbench.policies.registry.Policy` whose ``engine`` options say ``iteration="mixed"``; ``vllm``,
#: with paged KV, is not one of them).
CHUNKED_POLICIES: dict[str, Policy] = {
    name: p for name, p in POLICIES.items()
    if p.engine.get("iteration") == "mixed" and p.engine.get("kv", "reserve") == "reserve"}


def mixed_iteration_time(cost_model: LinearCostModel, n_decode, decode_context_tokens, prefill_tokens,
                         prefill_prior_tokens=0):
    """``t_mixed`` of the module docstring (vectorised)."""
    cm = cost_model
    P = np.asarray(prefill_tokens, dtype=float)
    fixed = np.where(P > 0, max(cm.a_p, cm.a_d), cm.a_d)
    out = (fixed + cm.b_d * np.asarray(n_decode, dtype=float)
           + cm.c_d * (np.asarray(decode_context_tokens, dtype=float) + np.asarray(prefill_prior_tokens, dtype=float))
           + cm.b_p * P)
    return float(out) if np.ndim(out) == 0 else out


def simulate_chunked(trace: pd.DataFrame | str, clients: int = 8, batch_size: int | list[int] = 16,
                     policy: str | Policy = "chunked-prefill", cost_model: str | LinearCostModel = "llama-65b",
                     *, token_budget: int | None = None, dispatch: str | None = None, order: str | None = None,
                     kv_capacity_tokens: int | list[int] | str | None = None, **params: Any) -> Schedule:
    """Simulate chunked-prefill mixed batching: :func:`workbench.engine.simulate` with ``iteration="mixed"``.

    ``token_budget`` (tokens per iteration, decodes included; default
    :data:`DEFAULT_TOKEN_BUDGET` or the policy's) must exceed the batch size.
    """
    if isinstance(policy, str) and policy in POLICIES and POLICIES[policy].engine.get("iteration") != "mixed":
        raise ConfigError(f"policy '{policy}' forms exclusive iterations, not mixed ones.", field="policy",
                          fix=f"use one of {', '.join(CHUNKED_POLICIES)}, or simulate(..., iteration='mixed').")
    return simulate(trace, clients, batch_size, policy, cost_model, dispatch=dispatch, order=order,
                    kv_capacity_tokens=kv_capacity_tokens, iteration="mixed",
                    token_budget=token_budget, **params)


def prefill_chunks(timeline: pd.DataFrame) -> pd.DataFrame:
    """The chunks of a timeline's mixed rows, one row each: client, iteration, request_id, tokens."""
    if "prefill_ids" not in timeline.columns:
        return pd.DataFrame(columns=["client", "iteration", "request_id", "tokens"])
    mixed = timeline[timeline["kind"] == "mixed"]
    ids = mixed["prefill_ids"].astype(str).str.split()
    toks = mixed["prefill_tokens"].astype(str).str.split()
    out = mixed[["client", "iteration"]].assign(request_id=ids, tokens=toks).explode(["request_id", "tokens"])
    out = out.dropna(subset=["request_id"])
    return out.assign(tokens=out["tokens"].astype(np.int64)).reset_index(drop=True)


