"""Checks of the options every entry point shares (clients, batch sizes, cost models)."""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.costmodel.linear import load_preset
from workbench.errors import ConfigError

#: The largest value each whole-number option may take.  Beyond them the simulator's per-client state
#: or numpy's int64 arithmetic gives out (``--clients 10**7`` is gigabytes of client state before the
#: first event, ``--batch-size 2**63`` overflows); no serving cluster is near them.
OPTION_LIMITS = {"clients": 100_000, "batch_size": 1_000_000, "kv_capacity_tokens": 10**12}


def positive_int(value: Any, field: str) -> int:
    """``value`` as an int in ``1..OPTION_LIMITS[field]``, or a ConfigError naming ``field``."""
    limit = OPTION_LIMITS.get(field)
    fix = f"give {field} as an integer >= 1" + (f" and <= {limit:,}." if limit else ".")
    if isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{value!r} is not a whole number >= 1.", field=field, fix=fix)
    try:
        as_int = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{value!r} is not a whole number.", field=field, fix=fix) from None
    if as_int != value or as_int < 1:
        raise ConfigError(f"{value!r} is not a whole number >= 1.", field=field, fix=fix)
    if limit is not None and as_int > limit:
        raise ConfigError(f"{as_int:,} is above the limit of {limit:,}.", field=field, fix=fix)
    return as_int


def batch_size_option(batch_size: Any) -> int | list[int]:
    """One batch size, or one per client, each an int >= 1."""
    if np.ndim(batch_size) == 0:
        return positive_int(batch_size, "batch_size")
    return [positive_int(b, "batch_size") for b in batch_size]


def cost_models(cost_model: Any, n_clients: int) -> list:
    """One cost model per client from a preset name, a file, a model object, or a list of them.

    Any object with ``prefill_time`` and ``decode_time`` is taken as it is (the
    simulator accepts cost models that are not linear).
    """
    def one(m):
        return m if hasattr(m, "decode_time") else load_preset(m)

    if isinstance(cost_model, (list, tuple)):
        if len(cost_model) != n_clients:
            raise ConfigError(f"{len(cost_model)} cost models for {n_clients} clients.", field="cost_model",
                              fix="give one cost model, or one per client.")
        return [one(m) for m in cost_model]
    return [one(cost_model)] * n_clients


def kv_capacities(kv: Any, models: list, n_clients: int) -> list:
    """One KV capacity in tokens (or None: unlimited) per client, from None, an int, ``"preset"`` or a list.

    ``"preset"`` takes each client's cost-model preset value (``kv_capacity_tokens``).
    """
    if kv is None:
        return [None] * n_clients
    if np.ndim(kv) == 0:
        if isinstance(kv, str) and kv == "preset":
            caps = [getattr(m, "kv_capacity_tokens", None) for m in models]
            missing = [j for j, c in enumerate(caps) if c is None]
            if missing:
                name = getattr(models[missing[0]], "name", "the cost model")
                raise ConfigError(f"'preset' asks for the preset's KV capacity, but {name} has none "
                                  f"(client {missing[0]}).", field="kv_capacity_tokens",
                                  fix="give a capacity in tokens, or a preset with kv_capacity_tokens.")
            return [positive_int(c, "kv_capacity_tokens") for c in caps]
        return [positive_int(kv, "kv_capacity_tokens")] * n_clients
    if len(kv) != n_clients:
        raise ConfigError(f"{len(kv)} KV capacities for {n_clients} clients.", field="kv_capacity_tokens",
                          fix="give one capacity, or one per client.")
    return [None if v is None else positive_int(v, "kv_capacity_tokens") for v in kv]
