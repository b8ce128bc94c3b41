"""A cost model that interpolates measured kernel tables (LLMServingSim / vLLM operator profiles).

An iteration of a vLLM-style engine (``n`` decodes reading ``C`` KV tokens
in all, plus prompt chunks ``p_i`` over ``q_i`` cached tokens each) takes

    t = dense(T) + per_sequence(S) + attention(p_1, q_1, n, C / n)
        + sum_{i >= 2} [attention(p_i, q_i, 0, 0) - attention_floor]
        + iteration_overhead_s

with ``T = n + sum p_i`` tokens and ``S = n + #chunks`` sequences, where

* ``dense(T)``: the non-attention operators of every layer (times the
  layers), the embedding and the final norm, and at TP > 1 the two
  all-reduces per layer, measured on a grid of token counts and
  interpolated piecewise-linearly (the tables show the GEMM tile steps a
  straight line cannot follow);
* ``per_sequence(S)``: the output head and the sampler, once per iteration;
* ``attention(pc, kp, n, kv)``: the measured attention of all layers for an
  iteration with one prompt chunk of ``pc`` tokens over ``kp`` cached tokens
  and ``n`` decodes of ``kv`` cached tokens each, interpolated linearly on
  each axis (as LLMServingSim does; below the grid clamped, above it
  extrapolated from the last two points).  Decodes enter at their *mean*
  context: a uniform batch at the mean reads the same KV as the real one.
  A skewed batch is a little slower; given the longest context the model
  adds ``skew_alpha * (attention at the max - attention at the mean)``
  (LLMServingSim's correction, with the profile's pooled alpha) to
  iterations without a prompt chunk (``skew_scope = "decode"``): the
  penalty is the long-context decodes' memory-bound tail, which a chunk's
  compute-bound attention in the same launch hides (LLMServingSim buckets
  its alpha by the chunk size for this reason; the bucket table is not in
  the shared profile, so the pooled alpha is kept where it was measured
  strongest and dropped where a chunk dominates); ``"all"`` applies it to
  every iteration;
* further chunks in the same iteration (several prompts admitted at once)
  add their own attention above the kernel's fixed cost
  (``attention_floor``, the cheapest measured prefill), since one varlen
  launch carries them all.

Nothing here is fitted to a serving run: ``iteration_overhead_s`` (CPU
scheduling between iterations) and ``frontend_overhead_s`` (per request)
default to 0 and are what a fit through the simulator may set.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from workbench.costmodel.linear import PRESET_LOADERS, LinearCostModel
from workbench.errors import ConfigError

KIND = "profiled"
#: What only a linear model has: the closed-form engine, the MIP and the bounds read these.
LINEAR_ONLY = ("a_p", "b_p", "a_d", "b_d", "c_d", "request_work_s", "request_weight_s", "alone_time_s",
               "with_coefficients")


class LinearOnlyError(ConfigError, AttributeError):
    """A linear-only attribute asked of a profiled model (an AttributeError too, so ``hasattr`` says False)."""


def _bracket(values: Sequence[float], query: float) -> tuple[int, int, float]:
    """(lo, hi, t) for linear blending on sorted ``values``: clamped below, extrapolated above."""
    n = len(values)
    if n == 1 or query <= values[0]:
        return 0, 0, 0.0
    idx = bisect.bisect_right(values, query)
    lo, hi = (n - 2, n - 1) if idx >= n else (idx - 1, idx)
    x0, x1 = values[lo], values[hi]
    return lo, hi, (0.0 if x1 == x0 else (query - x0) / (x1 - x0))


@dataclass(frozen=True)
class Table1D:
    """Piecewise-linear seconds over a sorted grid; beyond the grid, the slope of the top quarter."""

    keys: tuple[float, ...]
    values_s: tuple[float, ...]
    tail_slope_s: float = 0.0

    @classmethod
    def build(cls, keys, values_s) -> Table1D:
        k, v = np.asarray(keys, float), np.asarray(values_s, float)
        order = np.argsort(k)
        k, v = k[order], v[order]
        # the last two measured points alone are too noisy to extrapolate from: fit the top quarter
        top = k >= k[0] + 0.75 * (k[-1] - k[0])
        slope = float(np.polyfit(k[top], v[top], 1)[0]) if top.sum() >= 2 else 0.0
        return cls(tuple(k.tolist()), tuple(v.tolist()), max(slope, 0.0))

    def __call__(self, x: float) -> float:
        k = self.keys
        if x <= k[0]:
            return self.values_s[0]
        if x >= k[-1]:
            return self.values_s[-1] + self.tail_slope_s * (x - k[-1])
        i = bisect.bisect_right(k, x)
        x0, x1, y0, y1 = k[i - 1], k[i], self.values_s[i - 1], self.values_s[i]
        return y0 + (x - x0) / (x1 - x0) * (y1 - y0)

    def to_dict(self, key_name: str) -> dict[str, Any]:
        return {key_name: [int(x) if float(x).is_integer() else x for x in self.keys],
                "time_ms": [round(v * 1e3, 6) for v in self.values_s],
                "tail_slope_ms": round(self.tail_slope_s * 1e3, 9)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], key_name: str, source: str) -> Table1D:
        try:
            keys, values = [float(x) for x in data[key_name]], [float(v) * 1e-3 for v in data["time_ms"]]
            slope = float(data.get("tail_slope_ms", 0.0)) * 1e-3
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: the table lacks or mangles '{key_name}'/'time_ms' ({exc}).",
                              field=key_name, fix="regenerate the preset with workbench calibrate.") from None
        if not keys or len(keys) != len(values) or any(np.diff(keys) <= 0) or min(values) < 0:
            raise ConfigError(f"{source}: '{key_name}' must be increasing with one time_ms >= 0 each.",
                              field=key_name, fix="regenerate the preset with workbench calibrate.")
        return cls(tuple(keys), tuple(values), slope)


@dataclass(frozen=True)
class AttentionTable:
    """Measured attention seconds (all layers) over (prefill chunk, n decodes) slices of (kv_prefill, kv_decode) grids.

    Each slice holds its own kv_prefill values and, per kv_prefill, its own
    kv_decode values, because the profiler's grids are not a full cross.
    """

    slices: dict[tuple[int, int], tuple[tuple[float, ...], tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]]]
    pc_vals: tuple[int, ...] = field(init=False)
    nd_by_pc: dict[int, tuple[int, ...]] = field(init=False)

    def __post_init__(self) -> None:
        pcs = sorted({pc for pc, _ in self.slices})
        object.__setattr__(self, "pc_vals", tuple(pcs))
        object.__setattr__(self, "nd_by_pc", {pc: tuple(sorted(nd for p, nd in self.slices if p == pc))
                                              for pc in pcs})

    @classmethod
    def from_rows(cls, pc, kp, nd, kd, time_s) -> AttentionTable:
        grouped: dict[tuple[int, int], dict[float, dict[float, float]]] = {}
        for a, b, c, d, t in zip(pc, kp, nd, kd, time_s):
            grouped.setdefault((int(a), int(c)), {}).setdefault(float(b), {})[float(d)] = float(t)
        slices = {}
        for key, by_kp in grouped.items():
            kps = sorted(by_kp)
            rows = tuple((tuple(sorted(by_kp[p])), tuple(by_kp[p][d] for d in sorted(by_kp[p]))) for p in kps)
            slices[key] = (tuple(kps), rows)
        return cls(slices)

    def _slice(self, pc: int, nd: int, kp: float, kd: float) -> float:
        kps, rows = self.slices[(pc, nd)]

        def row(i: int) -> float:
            keys, values = rows[i]
            lo, hi, t = _bracket(keys, kd)
            return values[lo] + t * (values[hi] - values[lo])

        lo, hi, t = _bracket(kps, kp)
        v = row(lo)
        return v if lo == hi else v + t * (row(hi) - v)

    def _at_pc(self, pc: int, nd: float, kp: float, kd: float) -> float:
        nds = self.nd_by_pc[pc]
        if nd <= 0 and nds[0] > 0:
            # no decodes: only (0, 0) lacks a slice, and an empty iteration has no attention
            if pc == 0:
                return 0.0
        lo, hi, t = _bracket(nds, nd)
        v = self._slice(pc, nds[lo], kp, kd)
        return v if lo == hi else v + t * (self._slice(pc, nds[hi], kp, kd) - v)

    def __call__(self, pc: float, kp: float, nd: float, kd: float) -> float:
        if pc <= 0 and nd <= 0:
            return 0.0
        if pc <= 0:
            return max(self._at_pc(0, nd, 0.0, kd), 0.0)
        if nd <= 0:
            # prefill-only slices; between 0 and the first measured chunk, blend towards 0
            pcs = [p for p in self.pc_vals if p > 0 and 0 in self.nd_by_pc[p]]
            lo, hi, t = _bracket(pcs, pc)
            v = self._slice(pcs[lo], 0, kp, 0.0)
            v = v if lo == hi else v + t * (self._slice(pcs[hi], 0, kp, 0.0) - v)
            return max(v, 0.0)
        pcs = [p for p in self.pc_vals if any(n > 0 for n in self.nd_by_pc[p])]
        lo, hi, t = _bracket(pcs, pc)
        nd_pos = lambda p: tuple(n for n in self.nd_by_pc[p] if n > 0)  # noqa: E731

        def at(p: int) -> float:
            nds = nd_pos(p)
            a, b, u = _bracket(nds, nd)
            v = self._slice(p, nds[a], kp, kd)
            return v if a == b else v + u * (self._slice(p, nds[b], kp, kd) - v)

        v = at(pcs[lo])
        return max(v if lo == hi else v + t * (at(pcs[hi]) - v), 0.0)

    def prefill_floor_s(self) -> float:
        """The cheapest measured prefill-only attention: the kernel's fixed cost."""
        return min(min(min(values) for _, values in rows)
                   for (pc, nd), (_, rows) in self.slices.items() if pc > 0 and nd == 0)

    def to_dict(self) -> list[dict[str, Any]]:
        out = []
        for (pc, nd) in sorted(self.slices):
            kps, rows = self.slices[(pc, nd)]
            out.append({"prefill_chunk": pc, "n_decode": nd, "kv_prefill": [int(k) for k in kps],
                        "kv_decode": [[int(k) for k in keys] for keys, _ in rows],
                        "time_ms": [[round(v * 1e3, 6) for v in values] for _, values in rows]})
        return out

    @classmethod
    def from_dict(cls, data: list[dict[str, Any]], source: str) -> AttentionTable:
        slices = {}
        try:
            for s in data:
                rows = []
                for keys, values in zip(s["kv_decode"], s["time_ms"], strict=True):
                    if len(keys) != len(values) or not keys:
                        raise ValueError("kv_decode and time_ms differ in length")
                    rows.append((tuple(float(k) for k in keys), tuple(float(v) * 1e-3 for v in values)))
                if len(rows) != len(s["kv_prefill"]):
                    raise ValueError("one kv_decode row per kv_prefill value is needed")
                slices[(int(s["prefill_chunk"]), int(s["n_decode"]))] = (
                    tuple(float(k) for k in s["kv_prefill"]), tuple(rows))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: the attention table is malformed ({exc}).", field="attention",
                              fix="regenerate the preset with workbench calibrate.") from None
        if not slices:
            raise ConfigError(f"{source}: the attention table is empty.", field="attention",
                              fix="regenerate the preset with workbench calibrate.")
        return cls(slices)


@dataclass(frozen=True)
class ProfiledCostModel:
    """Iteration times interpolated from measured kernel tables (see the module docstring)."""

    dense: Table1D
    per_sequence: Table1D
    attention: AttentionTable
    name: str = "profiled"
    description: str = field(default="", compare=False)
    kv_capacity_tokens: int | None = field(default=None, compare=False)
    skew_alpha: float = 0.0
    #: Where the skew correction applies: "decode" (iterations without a prompt chunk) or "all".
    skew_scope: str = "decode"
    iteration_overhead_s: float = 0.0
    frontend_overhead_s: float = 0.0
    bound: LinearCostModel | None = field(default=None, compare=False, repr=False)
    provenance: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: A mixture of experts: the seconds of every expert layer of an iteration (their kernels on one rank and
    #: expert parallelism's all-to-all) against the tokens gathered from the whole data-parallel group;
    #: None for a dense model.
    experts: Table1D | None = None
    #: The ranks the experts are spread over (vLLM: EP = DP x TP); a replica alone brings 1 / EP of the tokens.
    expert_parallel: int = 1
    attention_floor_s: float = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.skew_scope not in ("decode", "all"):
            raise ConfigError(f"skew_scope is {self.skew_scope!r}.", field="skew_scope",
                              fix="give 'decode' (iterations without a prompt chunk) or 'all'.")
        for key in ("skew_alpha", "iteration_overhead_s", "frontend_overhead_s"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise ConfigError(f"must be a finite number >= 0, got {value!r}.", field=key,
                                  fix="give seconds (or, for skew_alpha, a fraction) >= 0.")
        object.__setattr__(self, "attention_floor_s", self.attention.prefill_floor_s())

    def __getattr__(self, key: str):
        if key in LINEAR_ONLY:
            raise LinearOnlyError(f"the profiled cost model '{self.name}' has no closed-form '{key}': what asked "
                                  "for it needs the linear model (closed-form decode runs, the MIP, the bounds).",
                                  field="cost_model",
                                  fix=f"use the linear preset fitted to the same profile ('{self.name}-linear'), "
                                      "or an engine policy that steps iterations (vllm).")
        raise AttributeError(key)

    # -- the interface the engine calls -----------------------------------------
    def iteration_time(self, n_decode: int, decode_context_tokens: int, chunk_tokens: Sequence[int] = (),
                       chunk_prior_tokens: Sequence[int] = (), *, decode_max_context_tokens: int | None = None,
                       gathered_tokens: int | None = None) -> float:
        """Seconds of one iteration: ``n_decode`` decodes reading ``decode_context_tokens`` KV tokens in all,
        plus one prompt chunk per entry of ``chunk_tokens`` over ``chunk_prior_tokens`` cached tokens.

        ``decode_max_context_tokens`` (the longest decode context), when given,
        adds the profile's skew correction.  ``gathered_tokens`` (a mixture of
        experts): the tokens of the whole data-parallel group at this step, which
        the expert layers compute (default: ``expert_parallel`` replicas each
        bringing as many as this one).
        """
        chunks = [int(c) for c in chunk_tokens]
        priors = [int(q) for q in chunk_prior_tokens] if len(chunk_prior_tokens) else [0] * len(chunks)
        if len(priors) != len(chunks):
            raise ValueError("chunk_tokens and chunk_prior_tokens differ in length")
        n = int(n_decode)
        if n == 0 and not chunks:
            return 0.0
        tokens = n + sum(chunks)
        t = self.dense(tokens) + self.per_sequence(n + len(chunks)) + self.iteration_overhead_s
        if self.experts is not None:
            t += self.experts(gathered_tokens if gathered_tokens is not None else tokens * self.expert_parallel)
        order = sorted(range(len(chunks)), key=lambda i: -chunks[i])
        pc, kp = (chunks[order[0]], priors[order[0]]) if chunks else (0, 0)
        kv_mean = decode_context_tokens / n if n else 0.0
        attention = self.attention(pc, kp, n, kv_mean)
        if n and decode_max_context_tokens is not None and self.skew_alpha > 0 \
                and (self.skew_scope == "all" or not chunks) \
                and decode_max_context_tokens > kv_mean:
            attention += self.skew_alpha * max(self.attention(pc, kp, n, decode_max_context_tokens) - attention, 0.0)
        for i in order[1:]:
            attention += max(self.attention(chunks[i], priors[i], 0, 0) - self.attention_floor_s, 0.0)
        return max(t + attention, self._envelope_s(n, decode_context_tokens, chunks, priors))

    def _envelope_s(self, n: int, context_tokens: float, chunks: list[int], priors: list[int]) -> float:
        """The linear lower envelope's seconds for this iteration (0 without one).

        Calibration checks the envelope below the tables on the profiled grid; past it the tables
        extrapolate (a decode of 64 x 1M tokens came out faster than the envelope, a chunk beside
        decodes nearly free), so an iteration is never faster than the envelope: it stays a lower bound
        everywhere, and on the grid nothing changes.
        """
        b = self.bound
        if b is None:
            return 0.0
        fixed = (max(b.a_p, b.a_d) if n else b.a_p) if chunks else b.a_d
        return fixed + b.b_p * sum(chunks) + b.b_d * n + b.c_d * (context_tokens + sum(priors))

    def prefill_time(self, prompt_tokens):
        """Seconds of an exclusive prefill of one prompt of ``prompt_tokens`` (vectorised)."""
        if np.ndim(prompt_tokens):
            return np.array([self.iteration_time(0, 0, [int(p)], [0]) for p in np.ravel(prompt_tokens)]
                            ).reshape(np.shape(prompt_tokens))
        return self.iteration_time(0, 0, [int(prompt_tokens)], [0])

    def decode_time(self, batch_size, context_tokens):
        """Seconds of a decode iteration of ``batch_size`` requests reading ``context_tokens`` in total."""
        if np.ndim(batch_size) or np.ndim(context_tokens):
            b, c = np.broadcast_arrays(np.asarray(batch_size), np.asarray(context_tokens))
            return np.array([self.iteration_time(int(x), int(y)) for x, y in zip(b.ravel(), c.ravel())]
                            ).reshape(b.shape)
        return self.iteration_time(int(batch_size), int(context_tokens))

    def bound_model(self) -> LinearCostModel | None:
        """A linear model below this one on the domain it was checked on (provenance ``bound``), or None."""
        return self.bound

    def coefficients(self) -> dict[str, float]:
        """No closed-form coefficients: the tables are the model (see ``bound_model`` for a linear one)."""
        return {}

    def with_overheads(self, *, iteration_overhead_s: float | None = None,
                       frontend_overhead_s: float | None = None) -> ProfiledCostModel:
        """A copy with other overhead terms (what a fit through the simulator sets)."""
        data = self.to_dict()
        if iteration_overhead_s is not None:
            data["iteration_overhead_s"] = iteration_overhead_s
        if frontend_overhead_s is not None:
            data["frontend_overhead_s"] = frontend_overhead_s
        return ProfiledCostModel.from_dict(data)

    # -- serialisation --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": KIND, "name": self.name, "description": self.description}
        if self.kv_capacity_tokens is not None:
            out["kv_capacity_tokens"] = int(self.kv_capacity_tokens)
        out.update({"skew_alpha": self.skew_alpha, "skew_scope": self.skew_scope,
                    "iteration_overhead_s": self.iteration_overhead_s,
                    "frontend_overhead_s": self.frontend_overhead_s})
        if self.bound is not None:
            out["bound"] = {**self.bound.coefficients(), "name": self.bound.name,
                            "description": self.bound.description}
        out["provenance"] = self.provenance
        out["dense"] = self.dense.to_dict("tokens")
        out["per_sequence"] = self.per_sequence.to_dict("sequences")
        out["attention"] = self.attention.to_dict()
        if self.experts is not None:
            out["experts"] = self.experts.to_dict("gathered_tokens")
            out["expert_parallel"] = int(self.expert_parallel)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "cost model") -> ProfiledCostModel:
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise ConfigError(f"{source} is not a profiled cost model (kind '{KIND}').", field="kind",
                              fix="write it with workbench calibrate --profile.")
        for key in ("dense", "per_sequence", "attention"):
            if key not in data:
                raise ConfigError(f"{source} lacks '{key}'.", field=key,
                                  fix="regenerate the preset with workbench calibrate --profile.")
        bound = None
        if isinstance(data.get("bound"), dict):
            b = dict(data["bound"])
            bound = LinearCostModel.from_dict({"name": f"{data.get('name', 'profiled')}-bound", **b},
                                              source=f"{source} 'bound'")
        kv = data.get("kv_capacity_tokens")
        return cls(dense=Table1D.from_dict(data["dense"], "tokens", source),
                   per_sequence=Table1D.from_dict(data["per_sequence"], "sequences", source),
                   attention=AttentionTable.from_dict(data["attention"], source),
                   name=str(data.get("name", "profiled")), description=str(data.get("description", "")),
                   kv_capacity_tokens=None if kv is None else int(kv),
                   skew_alpha=float(data.get("skew_alpha", 0.0)),
                   skew_scope=str(data.get("skew_scope", "decode")),
                   iteration_overhead_s=float(data.get("iteration_overhead_s", 0.0)),
                   frontend_overhead_s=float(data.get("frontend_overhead_s", 0.0)),
                   bound=bound, provenance=dict(data.get("provenance", {})),
                   experts=(Table1D.from_dict(data["experts"], "gathered_tokens", source) if data.get("experts")
                            else None), expert_parallel=int(data.get("expert_parallel", 1)))


PRESET_LOADERS[KIND] = lambda data, source: ProfiledCostModel.from_dict(data, source=source)


def preset_json(data: dict[str, Any]) -> str:
    """``data`` as JSON text: one key per line, but each list of numbers on one line (the tables stay small)."""
    import json
    import re

    text = json.dumps(data, indent=1)
    return re.sub(r"\[\s*([-+0-9.eE,\s]+?)\s*\]", lambda m: "[" + ",".join(x.strip() for x in m.group(1).split(","))
                  + "]", text) + "\n"
