"""The hardware cost model of MODEL.md section 2.

Iteration times are linear in what the iteration processes::

    t_prefill(P)    = a_p + b_p * sum_{i in P} l_i
    t_decode(batch) = a_d + b_d * |batch| + c_d * sum_{i in batch} ctx_i

The same object serves the simulator, the MIP, the lower bound and the online
rule.  Anything with ``prefill_time`` and ``decode_time`` of the same meaning
may replace it in the simulator; the bounds and the MIP rely on linearity and
read the five coefficients.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench._paths import MAX_PRESET_BYTES, data_dir, input_file
from workbench.errors import ConfigError

COEFFICIENTS = ("a_p", "b_p", "a_d", "b_d", "c_d")
COEFFICIENT_UNITS = {
    "a_p": "s per prefill stage",
    "b_p": "s per prompt token",
    "a_d": "s per decode iteration",
    "b_d": "s per request in the batch",
    "c_d": "s per context token read",
}


#: A coefficient above this many seconds is a unit error (an iteration of hours); far below it,
#: times summed over any accepted trace stay finite.
MAX_COEFFICIENT_S = 1e4


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"a number of {len(text)} digits" if isinstance(value, int) else text[:37] + "..."


@dataclass(frozen=True)
class LinearCostModel:
    """Linear iteration-time model; all coefficients in seconds (see ``COEFFICIENT_UNITS``)."""

    a_p: float
    b_p: float
    a_d: float
    b_d: float
    c_d: float
    name: str = "custom"
    description: str = field(default="", compare=False)
    kv_capacity_tokens: int | None = field(default=None, compare=False)
    provenance: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: Per request, before the engine sees it (HTTP, tokenisation): delays its arrival at the engine, so it
    #: adds to TTFT and end-to-end latency but to no iteration.
    frontend_overhead_s: float = field(default=0.0, compare=False)

    def __post_init__(self) -> None:
        for key in COEFFICIENTS:
            value = getattr(self, key)
            shown = _shown(value)
            # JSON true is 1 and "0.015" parses as a number in Python, but neither is a coefficient.
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ConfigError(f"must be a number, got {shown}.", field=key,
                                  fix="give every coefficient as seconds, a JSON number >= 0 (not text or true/false).")
            try:
                value = float(value)
            except OverflowError:
                raise ConfigError(f"{shown} is too large for a float.", field=key,
                                  fix=f"give seconds, at most {MAX_COEFFICIENT_S:g}.") from None
            if not np.isfinite(value) or value < 0:
                raise ConfigError(f"must be finite and >= 0, got {shown}.", field=key,
                                  fix="iteration times cannot shrink with more work; refit or correct the preset.")
            if value > MAX_COEFFICIENT_S:
                raise ConfigError(f"{value:g} s is above {MAX_COEFFICIENT_S:g} s.", field=key,
                                  fix="check the units: coefficients are in seconds (an iteration of hours, "
                                      "summed over a trace, overflows the clock).")
            object.__setattr__(self, key, value)
        overhead = self.frontend_overhead_s
        if isinstance(overhead, bool) or not isinstance(overhead, (int, float)) or not 0 <= overhead < math.inf:
            raise ConfigError(f"must be a number of seconds >= 0, got {overhead!r}.", field="frontend_overhead_s",
                              fix="give the per-request front-end overhead in seconds (0 for none).")
        object.__setattr__(self, "frontend_overhead_s", float(overhead))
        kv = self.kv_capacity_tokens
        if kv is not None:
            if isinstance(kv, (bool, np.bool_)) or not isinstance(kv, (int, float, np.integer, np.floating)) \
                    or isinstance(kv, (float, np.floating)) and not float(kv).is_integer() or not 1 <= kv <= 10**12:
                raise ConfigError(f"must be a whole number of tokens in 1..10**12, got {_shown(kv)}.",
                                  field="kv_capacity_tokens", fix="give the KV cache size in tokens, or leave it out.")
            object.__setattr__(self, "kv_capacity_tokens", int(kv))
        if self.a_p + self.b_p <= 0:
            raise ConfigError("a_p and b_p are both 0, so a prefill would take no time.", field="a_p",
                              fix="give a positive a_p or b_p.")
        if self.a_d + self.b_d <= 0:
            raise ConfigError("a_d and b_d are both 0, so a decode iteration would take no time.", field="a_d",
                              fix="give a positive a_d or b_d.")

    # -- iteration times (vectorised) ------------------------------------
    def prefill_time(self, prompt_tokens):
        """Seconds for a prefill stage over ``prompt_tokens`` = sum of the admitted prompts' lengths."""
        return self.a_p + self.b_p * np.asarray(prompt_tokens, dtype=float) if np.ndim(prompt_tokens) else \
            self.a_p + self.b_p * float(prompt_tokens)

    def decode_time(self, batch_size, context_tokens):
        """Seconds for a decode iteration of ``batch_size`` requests reading ``context_tokens`` in total."""
        if np.ndim(batch_size) or np.ndim(context_tokens):
            return (self.a_d + self.b_d * np.asarray(batch_size, dtype=float)
                    + self.c_d * np.asarray(context_tokens, dtype=float))
        return self.a_d + self.b_d * float(batch_size) + self.c_d * float(context_tokens)

    def iteration_time(self, n_decode: int, decode_context_tokens: int, chunk_tokens, chunk_prior_tokens) -> float:
        """Seconds of one iteration: ``n_decode`` decodes reading ``decode_context_tokens`` in total, plus prompt
        chunks (``chunk_tokens[i]`` new tokens over ``chunk_prior_tokens[i]`` of the same prompt already cached).

        With no chunk it is :meth:`decode_time`; with chunks it is ``t_mixed`` of MODEL.md section 2.1:
        ``max(a_p, a_d) + b_d n_d + c_d (C_d + Q) + b_p P`` (``P`` chunk tokens, ``Q`` their prior tokens,
        which the chunks' attention reads back as a decode reads its context).
        """
        if not chunk_tokens:
            return self.a_d + self.b_d * n_decode + self.c_d * decode_context_tokens
        return (max(self.a_p, self.a_d) + self.b_d * n_decode + self.c_d * (decode_context_tokens + sum(chunk_prior_tokens))
                + self.b_p * sum(chunk_tokens))

    def bound_model(self) -> LinearCostModel:
        """The linear model the bounds assume: this one."""
        return self

    # -- per-request decompositions of MODEL.md section 3 ---------------
    def request_work_s(self, input_tokens, output_tokens) -> np.ndarray:
        """``v_i``: the schedule-independent work of each request."""
        l = np.asarray(input_tokens, dtype=float)
        d = np.asarray(output_tokens, dtype=float) - 1.0
        return self.b_p * l + self.b_d * d + self.c_d * (d * l + d * (d + 1.0) / 2.0)

    def request_weight_s(self, input_tokens, output_tokens, batch_size) -> np.ndarray:
        """``w_i = v_i + a_p/B + a_d (o_i-1)/B``: the additive weight used by bin packing."""
        d = np.asarray(output_tokens, dtype=float) - 1.0
        return (self.request_work_s(input_tokens, output_tokens)
                + self.a_p / batch_size + self.a_d * d / batch_size)

    def alone_time_s(self, input_tokens, output_tokens) -> np.ndarray:
        """Time of each request served alone: one prefill then ``o_i-1`` decodes of batch 1."""
        d = np.asarray(output_tokens, dtype=float) - 1.0
        return self.a_p + self.a_d * d + self.request_work_s(input_tokens, output_tokens)

    # -- serialisation ----------------------------------------------------
    def coefficients(self) -> dict[str, float]:
        return {key: getattr(self, key) for key in COEFFICIENTS}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["kv_capacity_tokens"] is None:
            del out["kv_capacity_tokens"]
        if not out["frontend_overhead_s"]:
            del out["frontend_overhead_s"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "cost model") -> LinearCostModel:
        if not isinstance(data, dict):
            raise ConfigError(f"{source} must be a JSON object with keys {', '.join(COEFFICIENTS)}.")
        missing = [key for key in COEFFICIENTS if key not in data]
        if missing:
            raise ConfigError(f"{source} lacks {', '.join(missing)}.", field=missing[0],
                              fix=f"give all of {', '.join(COEFFICIENTS)} in seconds.")
        known = {"name", "description", "kv_capacity_tokens", "provenance", "frontend_overhead_s"}
        kwargs = {key: data[key] for key in known if key in data}
        return cls(**{key: data[key] for key in COEFFICIENTS}, **kwargs)

    def with_coefficients(self, **changes: float) -> LinearCostModel:
        data = self.to_dict()
        data.update(changes)
        data["name"] = data.get("name", "custom") + "*" if changes else data.get("name", "custom")
        return LinearCostModel.from_dict(data)


def takes_longest_context(cost_model) -> bool:
    """Whether ``cost_model.iteration_time`` takes ``decode_max_context_tokens`` (measured attention kernels
    correct for a skewed batch from its longest context); the engine and the validator both ask."""
    import inspect

    try:
        return "decode_max_context_tokens" in inspect.signature(cost_model.iteration_time).parameters
    except (AttributeError, TypeError, ValueError):
        return False


# -- presets ------------------------------------------------------------------
#: Other kinds of preset file ("kind" in the JSON) -> function(data, source) -> cost model.  Filled in by
#: the modules of those kinds (``profiled``: workbench.costmodel.profiled), which the package imports.
PRESET_LOADERS: dict[str, Any] = {}


def presets_dir() -> Path:
    return data_dir() / "presets"


def preset_kind(name: str) -> str:
    """``"linear"`` (the five coefficients) or ``"profiled"`` (interpolated kernel tables) for a shipped preset."""
    data = json.loads((presets_dir() / f"{name}.json").read_text(encoding="utf-8"))
    return str(data.get("kind", "linear")) if isinstance(data, dict) else "linear"


def list_presets(kind: str | None = None) -> list[str]:
    """Names of the shipped presets; with ``kind``, only those of that kind (``linear`` or ``profiled``)."""
    names = sorted(p.stem for p in presets_dir().glob("*.json"))
    return names if kind is None else [n for n in names if preset_kind(n) == kind]


def load_preset(name_or_path: str | Path | LinearCostModel = "llama-65b") -> LinearCostModel:
    """A shipped preset by name, or a JSON file with the five coefficients (or ``"kind": "profiled"``)."""
    if isinstance(name_or_path, LinearCostModel) or (
            not isinstance(name_or_path, (str, Path)) and hasattr(name_or_path, "decode_time")):
        return name_or_path  # a cost model object already (linear, profiled, ...)
    text = str(name_or_path)
    path = Path(text)
    named = presets_dir() / f"{text}.json"
    try:
        a_file = path.exists() and not path.is_dir()  # a folder named like a preset does not hide it
    except OSError:  # a name too long to be a file: input_file names it
        a_file = True
    if path.suffix != ".json" and not a_file:
        if not named.is_file():
            raise ConfigError(f"unknown cost-model preset '{text}'.", field="cost_model",
                              fix=f"use one of {', '.join(list_presets())} or the path of a JSON file.")
        path = named
    path = input_file(path, what="cost-model file", field="cost_model", max_bytes=MAX_PRESET_BYTES,
                      fix=f"give the path of a JSON file, or one of the presets {', '.join(list_presets())}.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise ConfigError(f"cost-model file '{path}' is not valid JSON ({str(exc)[:120]}).", field="cost_model",
                          fix="write a JSON object with a_p, b_p, a_d, b_d, c_d in seconds.") from None
    if isinstance(data, dict):
        data.setdefault("name", path.stem)
        kind = data.get("kind", "linear")
        if kind != "linear":
            if kind not in PRESET_LOADERS:
                raise ConfigError(f"cost-model file '{path}' is of unknown kind {kind!r}.", field="kind",
                                  fix=f"use one of linear, {', '.join(PRESET_LOADERS)}.")
            return PRESET_LOADERS[kind](data, f"cost-model file '{path}'")
    return LinearCostModel.from_dict(data, source=f"cost-model file '{path}'")


def save_preset(model: LinearCostModel, path: str | Path, **extra: Any) -> Path:
    """Write ``model`` (and any extra provenance keys) as a preset JSON file."""
    path = Path(path)
    data = model.to_dict()
    data.update(extra)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


# -- fitting ----------------------------------------------------------------------
@dataclass(frozen=True)
class FitResult:
    """A fitted cost model with its quality on the profile it came from."""

    model: LinearCostModel
    r2_prefill: float
    r2_decode: float
    residuals: pd.DataFrame = field(repr=False)

    def summary(self) -> pd.DataFrame:
        rows = []
        for kind, r2 in (("prefill", self.r2_prefill), ("decode", self.r2_decode)):
            res = self.residuals[self.residuals["kind"] == kind]
            rel = (res["residual_s"].abs() / res["time_s"]).to_numpy()
            rows.append({"kind": kind, "rows": len(res), "r2": r2,
                         "rmse_s": float(np.sqrt(np.mean(res["residual_s"] ** 2))) if len(res) else np.nan,
                         "max_rel_error": float(rel.max()) if len(rel) else np.nan})
        return pd.DataFrame(rows).set_index("kind")


def _nonnegative_lstsq(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with coefficients >= 0, exact for the few columns used here.

    An active-set search over all column subsets: with 2-3 columns that is at
    most 7 small solves, and it needs nothing beyond numpy.
    """
    best, best_sse = np.zeros(X.shape[1]), float(np.sum(y**2))
    for size in range(1, X.shape[1] + 1):
        for cols in itertools.combinations(range(X.shape[1]), size):
            coef, *_ = np.linalg.lstsq(X[:, cols], y, rcond=None)
            if np.any(coef < 0):
                continue
            sse = float(np.sum((y - X[:, cols] @ coef) ** 2))
            if sse < best_sse:
                best, best_sse = np.zeros(X.shape[1]), sse
                best[list(cols)] = coef
    return best


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot if ss_tot > 0 else float("nan")


PROFILE_COLUMNS = ("kind", "batch_size", "tokens", "time_s")


def _check_profile_times(profile: pd.DataFrame) -> None:
    """Each measured time a number of seconds in 0..MAX_COEFFICIENT_S: a time of 1e300 overflowed the
    least-squares fit into zeros, which was then refused as "a_p and b_p are both 0"."""
    times = pd.to_numeric(profile["time_s"], errors="coerce").to_numpy(float)
    bad = np.flatnonzero(~((times >= 0) & (times <= MAX_COEFFICIENT_S)))
    if len(bad):
        row = int(bad[0])
        shown = f"{times[row]:g}" if np.isfinite(times[row]) else repr(profile["time_s"].iloc[row])
        raise ConfigError(f"time {shown} is not a number of seconds in "
                          f"0..{MAX_COEFFICIENT_S:g}.", field="time_s", row=row,
                          fix="give each iteration's measured time in seconds (check the units: not us or ns).")


def fit(profile: pd.DataFrame, *, name: str = "fitted", description: str = "",
        provenance: dict[str, Any] | None = None) -> FitResult:
    """Least-squares fit of the five coefficients to measured iteration times.

    ``profile`` has one row per measured iteration: ``kind`` (``prefill`` or
    ``decode``), ``batch_size`` (requests in the iteration), ``tokens``
    (prompt tokens for a prefill, context tokens read for a decode) and
    ``time_s``.  Coefficients are constrained to be >= 0.
    """
    missing = [c for c in PROFILE_COLUMNS if c not in profile.columns]
    if missing:
        raise ConfigError(f"profile lacks column(s) {', '.join(missing)}.", field=missing[0],
                          fix=f"give columns {', '.join(PROFILE_COLUMNS)}.")
    _check_profile_times(profile)
    frames, coef, r2 = [], {}, {}
    for kind, columns in (("prefill", ("tokens",)), ("decode", ("batch_size", "tokens"))):
        rows = profile[profile["kind"] == kind]
        if len(rows) and not (rows["time_s"].to_numpy(float) > 0).any():
            raise ConfigError(f"every '{kind}' time in the profile is 0, so a {kind} would take no time.",
                              field="time_s", fix=f"give the measured {kind} times in seconds.")
        if len(rows) < len(columns) + 1:
            raise ConfigError(f"profile has {len(rows)} '{kind}' rows, too few to fit "
                              f"{len(columns) + 1} coefficients.", field="kind",
                              fix=f"measure at least {len(columns) + 2} distinct {kind} iterations.")
        X = np.column_stack([np.ones(len(rows))] + [rows[c].to_numpy(float) for c in columns])
        y = rows["time_s"].to_numpy(float)
        beta = _nonnegative_lstsq(X, y)
        pred = X @ beta
        r2[kind] = _r2(y, pred)
        names = ("a_p", "b_p") if kind == "prefill" else ("a_d", "b_d", "c_d")
        coef.update(dict(zip(names, beta.tolist())))
        frames.append(rows.assign(predicted_s=pred, residual_s=y - pred)[
            ["kind", "batch_size", "tokens", "time_s", "predicted_s", "residual_s"]])
    model = LinearCostModel(**coef, name=name, description=description, provenance=provenance or {})
    return FitResult(model=model, r2_prefill=r2["prefill"], r2_decode=r2["decode"],
                     residuals=pd.concat(frames, ignore_index=True))
