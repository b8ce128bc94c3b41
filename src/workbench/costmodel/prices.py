"""What a replica costs to hold: its GPUs, its weights, and the price of a GPU-hour.

Two editable tables ship in the package data (``data/costs/``), each row with its source and date:

* ``gpu_prices.csv`` - ``gpu, usd_per_gpu_hour, source, as_of``: list prices, stated and dated; a user
  passes their own file (same columns) to ``workbench plan --prices`` or :func:`gpu_prices`;
* ``preset_hardware.csv`` - ``preset, gpu, gpus, weight_bytes, source``: the GPUs a preset's replica holds
  (its tensor-parallel degree) and the bytes of weights a starting replica reads (its start-up delay).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

from workbench._paths import data_dir
from workbench.errors import ConfigError

PRICE_COLUMNS = ("gpu", "usd_per_gpu_hour", "source", "as_of")
HARDWARE_COLUMNS = ("preset", "gpu", "gpus", "weight_bytes", "source")


def costs_dir() -> Path:
    return data_dir() / "costs"


def _read(path: Path, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    if not path.is_file():
        raise ConfigError(f"{what} '{path}' does not exist.", field=what, fix=f"give a CSV with columns {', '.join(columns)}.")
    frame = pd.read_csv(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(f"{what} '{path}' has no column {missing[0]}.", field=missing[0],
                          fix=f"give a CSV with columns {', '.join(columns)}.")
    return frame


def gpu_prices(path: str | Path | None = None) -> pd.DataFrame:
    """The price table (default: the shipped one), indexed by GPU; prices must be positive numbers."""
    frame = _read(Path(path) if path is not None else costs_dir() / "gpu_prices.csv", PRICE_COLUMNS, "prices")
    price = pd.to_numeric(frame["usd_per_gpu_hour"], errors="coerce")
    bad = frame.index[~(price > 0)]
    if len(bad):
        row = int(bad[0])
        raise ConfigError(f"price {frame.loc[row, 'usd_per_gpu_hour']!r} of {frame.loc[row, 'gpu']} is not a "
                          "positive number.", field="usd_per_gpu_hour", row=row + 2,
                          fix="give US dollars per GPU-hour, e.g. 2.5.")
    frame["usd_per_gpu_hour"] = price
    return frame.set_index("gpu")


@lru_cache(maxsize=1)
def _hardware_table() -> pd.DataFrame:
    return _read(costs_dir() / "preset_hardware.csv", HARDWARE_COLUMNS, "preset hardware").set_index("preset")


def preset_hardware(cost_model) -> dict:
    """``gpu``, ``gpus`` and ``weight_bytes`` of a preset (by name, or a cost model whose name is a preset)."""
    name = cost_model if isinstance(cost_model, str) else getattr(cost_model, "name", None)
    table = _hardware_table()
    if name not in table.index:
        raise ConfigError(f"no hardware is stated for cost model {name!r}.", field="cost_model",
                          fix=f"use one of {', '.join(table.index)}, add a row to {costs_dir() / 'preset_hardware.csv'},"
                              " or give startup_s and gpus yourself.")
    row = table.loc[name]
    return {"gpu": str(row["gpu"]), "gpus": int(row["gpus"]), "weight_bytes": float(row["weight_bytes"])}


def usd_per_replica_hour(cost_model, prices: pd.DataFrame | None = None) -> float:
    """What holding one replica of ``cost_model`` costs per hour: its GPUs times their price."""
    hw = preset_hardware(cost_model)
    prices = gpu_prices() if prices is None else prices
    if hw["gpu"] not in prices.index:
        raise ConfigError(f"the price table has no row for {hw['gpu']}.", field="gpu",
                          fix=f"add a row '{hw['gpu']},USD,source,date' to the prices CSV.")
    return hw["gpus"] * float(prices.loc[hw["gpu"], "usd_per_gpu_hour"])
