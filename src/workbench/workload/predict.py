"""Output-length predictors: what a scheduler believes each request will generate.

A real server does not know ``o_i`` before a request finishes; it sees a
*prediction* (a length regressor, a length-class classifier, a user's hint).
The simulator runs the true lengths and gives every scheduling decision the
predicted ones (see ``simulate(..., predictor=...)`` and ``docs/beyond.md``).

A predictor is any object with ``name`` and ``predict(trace) -> int64 array``
(one prediction >= 1 per trace row).  Four ship here:

``Exact()``
    the true lengths (today's behaviour, and the default).
``Noisy(spread, seed)``
    a seeded multiplicative lognormal error,
    ``o_hat_i = max(1, round(o_i * exp(spread * Z_i - spread**2 / 2)))``,
    ``Z_i ~ N(0, 1)`` i.i.d.  **spread** is the standard deviation of the log
    error, ``sigma = sd(log(o_hat / o))`` (before rounding).  The factor has
    mean 1 (the error is mean-preserving: total predicted work is right on
    average), median ``exp(-sigma^2/2)`` and relative standard deviation
    ``sqrt(exp(sigma^2) - 1)`` (0.202 at sigma = 0.2, 1.31 at sigma = 1).
    "20% prediction error" means ``spread = 0.2``.
``Bucketed(n_classes | edges)``
    a perfect classifier into length classes: each request is predicted as
    its class's mean length (so total work is preserved).  ``n_classes``
    classes of near-equal size by output-length quantile, or explicit
    ``edges`` (class k holds ``edges[k-1] < o <= edges[k]``).
``Column(name)``
    a column of the user's trace (or of a separate table joined on
    ``request_id``).

:func:`make_predictor` turns the strings users type (``"exact"``,
``"noisy:0.2"``, ``"noisy:0.2:7"`` = spread 0.2 with seed 7,
``"bucketed:8"``, ``"column:predicted_tokens"``) into predictors.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from workbench.errors import ConfigError


@runtime_checkable
class Predictor(Protocol):
    """Predicts each request's output length from the trace (never from the schedule)."""

    name: str

    def predict(self, trace: pd.DataFrame) -> np.ndarray:
        """One predicted output length (int64, >= 1) per trace row."""
        ...


def _as_lengths(values, n: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.shape != (n,):
        raise ConfigError(f"{what} gives {arr.shape} predictions for {n} requests.", field="predictor",
                          fix="give one prediction per trace row.")
    if not np.all(np.isfinite(arr)):
        row = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ConfigError(f"{what} predicts {arr[row]!r} for row {row}.", field="predictor", row=row,
                          fix="give finite output lengths in tokens.")
    return np.maximum(1, np.rint(arr)).astype(np.int64)


class Exact:
    """The true output lengths: schedulers know ``o_i`` (the paper's setting)."""

    name = "exact"

    def predict(self, trace: pd.DataFrame) -> np.ndarray:
        return trace["output_tokens"].to_numpy(np.int64).copy()

    def __repr__(self) -> str:
        return "Exact()"


#: Largest log-space sd of Noisy: at 5 one sd is a factor of about 150 (beyond it every prediction is 1 token).
MAX_SPREAD = 5.0
#: Most length classes of Bucketed (more classes than requests already predicts every length exactly).
MAX_CLASSES = 10**6


class Noisy:
    """Multiplicative, mean-preserving lognormal error of log-space sd ``spread`` (see the module docstring).

    The error of trace row ``k`` is the ``k``-th draw of
    ``numpy.random.default_rng(SeedSequence(seed))``, so a (trace, spread,
    seed) always gives the same predictions, in any process.
    """

    def __init__(self, spread: float, seed: int = 0) -> None:
        try:
            spread = float(spread)
        except (TypeError, ValueError):
            raise ConfigError(f"spread must be a number >= 0, got {spread!r}.", field="spread",
                              fix="give the sd of the log error, e.g. 0.2 for about 20% error.") from None
        if not math.isfinite(spread) or not 0 <= spread <= MAX_SPREAD:
            raise ConfigError(f"spread must be a number in 0..{MAX_SPREAD:g}, got {spread!r}.", field="spread",
                              fix="give the sd of the log error, e.g. 0.2 for about 20% error.")
        if int(seed) != seed or seed < 0:
            raise ConfigError(f"seed must be a whole number >= 0, got {seed!r}.", field="seed", fix="e.g. seed=0.")
        self.spread = spread
        self.seed = int(seed)
        self.name = f"noisy:{spread:g}:{self.seed}"

    def factors(self, n: int) -> np.ndarray:
        """The multiplicative errors ``exp(spread Z - spread^2 / 2)`` of the first ``n`` rows."""
        z = np.random.default_rng(np.random.SeedSequence(self.seed)).standard_normal(n)
        return np.exp(self.spread * z - self.spread ** 2 / 2.0)

    def predict(self, trace: pd.DataFrame) -> np.ndarray:
        o = trace["output_tokens"].to_numpy(float)
        if self.spread == 0:
            return o.astype(np.int64)
        return _as_lengths(o * self.factors(len(o)), len(o), self.name)

    def __repr__(self) -> str:
        return f"Noisy(spread={self.spread!r}, seed={self.seed!r})"


class Bucketed:
    """A perfect length-class classifier: each request predicted as its class's mean length.

    Give ``n_classes`` (classes of near-equal size by output-length quantile of
    the trace) or ``edges`` (increasing upper class limits; lengths above the
    last edge form one more class).
    """

    def __init__(self, n_classes: int | None = None, edges=None) -> None:
        if (n_classes is None) == (edges is None):
            raise ConfigError("give exactly one of n_classes and edges.", field="predictor",
                              fix="e.g. Bucketed(8) or Bucketed(edges=[64, 128, 256]).")
        if n_classes is not None and not (isinstance(n_classes, (int, float, np.integer, np.floating))
                                          and 1 <= n_classes <= MAX_CLASSES and int(n_classes) == n_classes):
            raise ConfigError(f"n_classes must be a whole number in 1..{MAX_CLASSES:,}, got {n_classes!r}.",
                              field="n_classes", fix="e.g. 8 length classes.")
        if edges is not None:
            edges = np.asarray(edges, dtype=float)
            if edges.ndim != 1 or len(edges) == 0 or np.any(np.diff(edges) <= 0):
                raise ConfigError(f"edges must be an increasing list, got {edges!r}.", field="edges",
                                  fix="e.g. edges=[64, 128, 256].")
        self.n_classes = None if n_classes is None else int(n_classes)
        self.edges = edges
        self.name = f"bucketed:{self.n_classes}" if edges is None else \
            "bucketed:edges=" + ",".join(f"{e:g}" for e in edges)

    def classes(self, output_tokens: np.ndarray) -> np.ndarray:
        """The class of each request (0 = shortest)."""
        o = np.asarray(output_tokens, dtype=float)
        if self.edges is not None:
            return np.searchsorted(self.edges, o, side="left")
        # near-equal counts: rank by length (ties by row), cut the ranks into n_classes
        ranks = np.empty(len(o), dtype=np.int64)
        ranks[np.lexsort((np.arange(len(o)), o))] = np.arange(len(o))
        # more classes than requests: each request its own class, in memory of the requests not the classes
        k = min(self.n_classes, len(o))
        return (ranks * k) // max(len(o), 1)

    def predict(self, trace: pd.DataFrame) -> np.ndarray:
        o = trace["output_tokens"].to_numpy(float)
        cls = self.classes(o)
        sums = np.bincount(cls, weights=o)
        counts = np.bincount(cls)
        means = np.divide(sums, counts, out=np.ones_like(sums), where=counts > 0)
        return _as_lengths(means[cls], len(o), self.name)

    def __repr__(self) -> str:
        return f"Bucketed(n_classes={self.n_classes!r})" if self.edges is None else \
            f"Bucketed(edges={self.edges.tolist()!r})"


class Column:
    """Predictions from a column: of the trace itself, or of ``table`` joined on ``request_id``."""

    def __init__(self, name: str, table: pd.DataFrame | None = None) -> None:
        self.column = str(name)
        self.table = table
        self.name = f"column:{self.column}"

    def predict(self, trace: pd.DataFrame) -> np.ndarray:
        source = trace if self.table is None else self.table
        if self.column not in source.columns:
            raise ConfigError(f"no column '{self.column}' to read predictions from "
                              f"(columns: {', '.join(map(str, source.columns))}).", field="predictor",
                              fix="pass the table that holds it: Column(name, table=frame), or add the column "
                                  "to the trace DataFrame given to simulate.")
        if self.table is None:
            values = source[self.column].to_numpy()
        else:
            by_id = pd.Series(self.table[self.column].to_numpy(), index=self.table["request_id"].astype(str))
            if by_id.index.has_duplicates:
                raise ConfigError("the predictions table repeats a request_id.", field="predictor",
                                  fix="give one prediction per request.")
            ids = trace["request_id"].astype(str)
            missing = ~ids.isin(by_id.index)
            if missing.any():
                raise ConfigError(f"no prediction for request {ids[missing].iloc[0]!r}.", field="predictor",
                                  row=int(np.flatnonzero(missing.to_numpy())[0]),
                                  fix="give a prediction for every request of the trace.")
            values = by_id.loc[ids].to_numpy()
        try:
            values = np.asarray(values, dtype=float)
        except (TypeError, ValueError):
            raise ConfigError(f"column '{self.column}' is not numeric.", field="predictor",
                              fix="give predicted output lengths in tokens.") from None
        return _as_lengths(values, len(trace), self.name)

    def __repr__(self) -> str:
        return f"Column({self.column!r})"


PREDICTORS = {
    "exact": "the true output lengths",
    "noisy:SPREAD[:SEED]": "multiplicative lognormal error, SPREAD = sd of the log error (0.2 = about 20%)",
    "bucketed:N": "N length classes of near-equal size, each predicted as its class mean",
    "column:NAME": "the trace's column NAME",
}


def make_predictor(spec: str | Predictor | None) -> Predictor | None:
    """A predictor from a registry string (see :data:`PREDICTORS`), an object, or None."""
    if spec is None or not isinstance(spec, str):
        if spec is not None and not (hasattr(spec, "predict") and hasattr(spec, "name")):
            raise ConfigError(f"{spec!r} is not a predictor.", field="predictor",
                              fix=f"use one of {', '.join(PREDICTORS)} or an object with name and predict(trace).")
        return spec
    kind, _, rest = spec.strip().partition(":")
    try:
        if kind == "exact" and not rest:
            return Exact()
        if kind == "noisy" and rest:
            spread, _, seed = rest.partition(":")
            return Noisy(float(spread), int(seed) if seed else 0)
        if kind == "bucketed" and rest:
            return Bucketed(float(rest))  # 1e3 or 2.5: Bucketed says what n_classes may be
        if kind == "column" and rest:
            return Column(rest)
    except ConfigError:
        raise  # a predictor named rightly with an argument out of range: its own message
    except ValueError:
        pass
    raise ConfigError(f"unknown predictor '{spec}'.", field="predictor", fix=f"use one of {', '.join(PREDICTORS)}.")


def prediction_error(trace: pd.DataFrame, predicted: np.ndarray) -> dict[str, float]:
    """Summary of the error of ``predicted`` against the trace's true output lengths."""
    o = trace["output_tokens"].to_numpy(float)
    p = np.asarray(predicted, dtype=float)
    rel = p / o - 1.0
    return {"mean_relative_error": float(np.mean(np.abs(rel))), "median_relative_error": float(np.median(np.abs(rel))),
            "sd_log_error": float(np.std(np.log(p / o))), "total_work_ratio": float(p.sum() / o.sum())}
