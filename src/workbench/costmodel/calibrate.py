"""Fit the linear cost model to Vidur's public GPU operator profiles.

Vidur (microsoft/vidur, commit 7d47513, MIT) publishes measured times of the
operators of one transformer layer per number of tokens in the iteration and
per tensor-parallel degree (``compute/<device>/<org>/<model>/mlp.csv``), and
measured all-reduce times per message size (``network/<device>_dgx/
all_reduce.csv``).  The attention kernels' own profiles are not available
here, so the attention term comes from first principles (:mod:`workbench.costmodel.roofline`).

From these we build a *synthetic profile*: one row per iteration, in the
layout :func:`workbench.costmodel.linear.fit` reads, whose time is

    time = layers x (sum of the measured per-layer operator times at T tokens)
         + 2 x layers x (measured all-reduce of d x T x 2 bytes + NCCL launch overhead)
         + attention term (first principles)

where T is the number of tokens the iteration processes: the prompt tokens of
a prefill, the batch size of a decode (one new token per request).  Then
``fit`` gives the five coefficients.

Ranges (the "measured ranges" the R^2 refers to):

* **prefill rows**: every measured token count T >= ``prefill_min_tokens``
  (128 by default, up to 4096): a prefill stage admits whole prompts, so it
  processes hundreds to thousands of tokens; below 128 tokens the layer time
  is flat (weight streaming dominates) and belongs to the decode regime.
  The T tokens are taken as prompts of ``prefill_prompt_tokens`` (512) each,
  the last one shorter, for the causal-attention FLOPs.
* **decode rows**: every measured token count T = batch size in 1..256,
  crossed with per-request contexts of 128..4096 tokens.  The cross is full
  (balanced), so context is uncorrelated with batch size and ``c_d`` recovers
  the first-principles KV-read slope instead of soaking up the staircase of
  the measured times in the batch size.  Some corners of the cross hold more
  context than the KV cache of a small group can (``fits_kv_cache`` is
  False there); the fit uses them, but every R^2 and error we report is
  computed on the rows that fit.

Held-out error: every 5th distinct token count (prefill) or batch size
(decode), starting from the 3rd so the ends of each range stay in training,
is left out of a second fit and predicted; the shipped coefficients come from
the fit on all rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench._paths import missing_because
from workbench.costmodel.linear import FitResult, LinearCostModel, _r2, fit
from workbench.errors import ConfigError
from workbench.costmodel.roofline import A100_80GB_X8, H100_80GB_X8, LLAMA2_70B, HardwareSpec, TransformerSpec, \
    kv_capacity_tokens

VIDUR_SOURCE = {
    "repository": "microsoft/vidur",
    "commit": "7d47513",
    "licence": "MIT (LICENSE in the profiling directory)",
    "paper": "Agrawal et al., 'Vidur: A Large-Scale Simulation Framework for LLM Inference', MLSys 2024",
}

#: Vidur device folder -> the hardware spec used for the first-principles terms.
DEVICES: dict[str, HardwareSpec] = {"a100": A100_80GB_X8, "h100": H100_80GB_X8}
#: Vidur model folder -> the model spec used for the first-principles terms.
MODELS: dict[str, TransformerSpec] = {"meta-llama/Llama-2-70b-hf": LLAMA2_70B}
#: Vidur model folder -> the stem of its preset names (``<slug>-<device>-tp<N>``).
PRESET_SLUGS: dict[str, str] = {"meta-llama/Llama-2-70b-hf": "llama2-70b"}

#: The per-layer operators of mlp.csv that run once per layer (as Vidur sums them; ``emb`` runs once per pass).
LAYER_OPERATORS = ("input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj",
                   "post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")

DEFAULT_CONTEXTS = (128, 256, 512, 1024, 2048, 4096)


@dataclass(frozen=True)
class VidurSettings:
    """The choices that turn operator profiles into iteration rows (all stated in provenance)."""

    prefill_min_tokens: int = 128
    decode_max_batch: int = 256
    decode_contexts: tuple[int, ...] = DEFAULT_CONTEXTS
    prefill_prompt_tokens: int = 512
    statistic: str = "median"
    all_reduce_window: int = 15
    nccl_launch_overhead_s: float = 20e-6
    bandwidth_efficiency: float = 0.8
    attention_efficiency: float = 0.5

    def describe(self) -> dict[str, str]:
        return {
            "prefill_range": f"measured token counts T >= {self.prefill_min_tokens} (to 4096); "
                             f"the T tokens taken as prompts of {self.prefill_prompt_tokens} tokens (last one "
                             "shorter) for the attention FLOPs",
            "decode_range": f"measured token counts T = batch size in 1..{self.decode_max_batch}, one new token "
                            f"per request, fully crossed with per-request contexts {list(self.decode_contexts)} "
                            "tokens (balanced, so c_d is not confounded with batch size); rows beyond the KV "
                            "capacity are fitted but left out of every reported R^2 and error",
            "statistic": f"time_stats.<op>.{self.statistic} of each operator; duplicate token counts averaged",
            "nccl_launch_overhead": f"{self.nccl_launch_overhead_s * 1e3:g} ms per all-reduce added to the measured "
                                    "GPU time (Vidur's default nccl_cpu_launch_overhead_ms)",
            "all_reduce_smoothing": f"running median over the {self.all_reduce_window} measured message sizes "
                                    "nearest each size (removes 10-20 us single-sample noise of small messages)",
            "attention_efficiency": f"{self.attention_efficiency:g} of peak FLOP/s for prefill attention "
                                    "(FlashAttention-2 forward reaches 50-70% on A100)",
            "bandwidth_efficiency": f"{self.bandwidth_efficiency:g} of peak HBM bandwidth for KV-cache reads/writes",
        }


def _relative(profiling_dir: Path, path: Path) -> str:
    return path.relative_to(profiling_dir).as_posix()


def vidur_files(profiling_dir: str | Path, device: str, model: str) -> dict[str, Path]:
    """The two CSVs a (device, model) fit reads; ConfigError if either is missing."""
    root = Path(profiling_dir)
    files = {"compute": root / "compute" / device / model / "mlp.csv",
             "all_reduce": root / "network" / f"{device}_dgx" / "all_reduce.csv"}
    for kind, path in files.items():
        if not path.is_file():
            raise ConfigError(f"the Vidur {kind} profile '{path}' {missing_because(path, folder=False)}.",
                              field="profiling_dir",
                              fix="point --profiling-dir at the vidur-profiling folder, or pick a device/model "
                                  "it has.")
    return files


def available_tp(profiling_dir: str | Path, device: str, model: str) -> list[int]:
    """Tensor-parallel degrees > 1 with both operator and all-reduce profiles (empty if files are missing)."""
    try:
        files = vidur_files(profiling_dir, device, model)
    except ConfigError:
        return []
    compute = pd.read_csv(files["compute"], usecols=["num_tensor_parallel_workers"])
    network = pd.read_csv(files["all_reduce"], usecols=["num_workers", "devices_per_node"])
    net = set(network.loc[network["num_workers"] == network["devices_per_node"], "num_workers"])
    return sorted(int(tp) for tp in set(compute["num_tensor_parallel_workers"]) & net if tp > 1)


def _layer_times_s(path: Path, tp: int, spec: TransformerSpec, statistic: str) -> pd.Series:
    """Measured time of one layer's non-attention operators, seconds, indexed by num_tokens."""
    df = pd.read_csv(path)
    df = df[df["num_tensor_parallel_workers"] == tp]
    if df.empty:
        raise ConfigError(f"'{path}' has no rows at tensor-parallel degree {tp}.", field="tp",
                          fix=f"use one of {sorted(set(pd.read_csv(path)['num_tensor_parallel_workers']))}.")
    shape = {"n_head": spec.n_heads, "n_kv_head": spec.n_kv_heads, "n_embd": spec.d_model,
             "n_expanded_embd": spec.d_ffn}
    for column, expected in shape.items():
        found = set(df[column])
        if found != {expected}:
            raise ConfigError(f"'{path}' has {column}={sorted(found)}, but {spec.name} has {expected}.",
                              field=column, fix="pair the profile with the right TransformerSpec.")
    columns = [f"time_stats.{op}.{statistic}" for op in LAYER_OPERATORS]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ConfigError(f"'{path}' lacks column(s) {', '.join(missing)}.", field=missing[0])
    per_tokens = df.groupby("num_tokens")[columns].mean()
    return per_tokens.sum(axis=1) * 1e-3


def _all_reduce_s(path: Path, tp: int, message_bytes: np.ndarray, statistic: str, window: int = 1) -> np.ndarray:
    """Measured all-reduce time (s) over ``tp`` GPUs of one node, interpolated in message size.

    With ``window > 1`` each measured size first takes the median of the
    ``window`` measurements nearest in size (a running median), which removes
    the single-sample noise of small messages (10-20 us standard deviation).
    """
    if tp == 1:
        return np.zeros_like(message_bytes, dtype=float)
    df = pd.read_csv(path)
    df = df[(df["num_workers"] == tp) & (df["devices_per_node"] == tp) & (df["collective"] == "all_reduce")]
    if df.empty:
        raise ConfigError(f"'{path}' has no all-reduce over {tp} GPUs of one node.", field="tp")
    table = df.groupby("size")[f"time_stats.all_reduce.{statistic}"].mean().sort_index()
    if window > 1:
        table = table.rolling(window, center=True, min_periods=1).median()
    size = table.index.to_numpy(float)
    if message_bytes.max() > size.max() or message_bytes.min() < size.min():
        raise ConfigError(f"all-reduce sizes {message_bytes.min():.0f}-{message_bytes.max():.0f} B fall outside "
                          f"the measured {size.min():.0f}-{size.max():.0f} B.", field="size")
    return np.interp(message_bytes, size, table.to_numpy(float)) * 1e-3


def attention_prefill_s(spec: TransformerSpec, hw: HardwareSpec, tokens: np.ndarray, prompt_tokens: int,
                        attention_efficiency: float, bandwidth_efficiency: float) -> tuple[np.ndarray, np.ndarray]:
    """First-principles attention time of prefill stages of ``tokens`` tokens each, and their prompt counts.

    The tokens are prompts of ``prompt_tokens`` (the last shorter); causal
    attention FLOPs are split over the group's GPUs by heads and run at
    ``attention_efficiency`` of peak; the new tokens' KV cache is written at
    ``bandwidth_efficiency`` of HBM bandwidth.
    """
    tokens = np.asarray(tokens, dtype=float)
    full, rest = np.floor(tokens / prompt_tokens), np.mod(tokens, prompt_tokens)
    flops = full * spec.prefill_attention_flops(prompt_tokens) + np.array(
        [spec.prefill_attention_flops(r) for r in rest])
    compute_s = flops / (hw.n_gpus * hw.peak_flops * attention_efficiency)
    write_s = tokens * spec.kv_bytes_per_token(hw.n_gpus) / (hw.hbm_bandwidth * bandwidth_efficiency)
    return compute_s + write_s, full + (rest > 0)


def attention_decode_s(spec: TransformerSpec, hw: HardwareSpec, batch_size: np.ndarray, context_tokens: np.ndarray,
                       attention_efficiency: float, bandwidth_efficiency: float) -> np.ndarray:
    """First-principles attention time of decode steps: KV cache read (and the new tokens' KV write).

    Decode attention reads every context token's K and V once; at 8 FLOPs per
    KV byte (grouped-query) it is bandwidth-bound, so the time is the larger of
    bytes over bandwidth and FLOPs over compute (the former, in practice).
    """
    batch_size = np.asarray(batch_size, dtype=float)
    context_tokens = np.asarray(context_tokens, dtype=float)
    kv = spec.kv_bytes_per_token(hw.n_gpus)
    bandwidth = hw.hbm_bandwidth * bandwidth_efficiency
    read_s = context_tokens * kv / bandwidth
    flops_s = context_tokens * spec.decode_attention_flops_per_context_token() / (
        hw.n_gpus * hw.peak_flops * attention_efficiency)
    return np.maximum(read_s, flops_s) + batch_size * kv / bandwidth


def profile_from_vidur(profiling_dir: str | Path, device: str, model: str = "meta-llama/Llama-2-70b-hf",
                       tp: int = 8, settings: VidurSettings | None = None) -> pd.DataFrame:
    """Synthetic per-iteration profile (the ``fit()`` layout) from Vidur's measured operator times.

    Columns: ``kind``, ``batch_size``, ``tokens`` (prompt tokens for a
    prefill, total context read for a decode), ``time_s``, and the parts
    ``num_tokens``, ``layers_s``, ``all_reduce_s`` (measured), ``attention_s``
    (first principles), ``context_per_request``, ``fits_kv_cache`` (False for
    decode rows holding more context than the group's KV cache).
    """
    s = settings or VidurSettings()
    if device not in DEVICES:
        raise ConfigError(f"unknown device '{device}'.", field="device", fix=f"use one of {', '.join(DEVICES)}.")
    if model not in MODELS:
        raise ConfigError(f"no TransformerSpec for '{model}'.", field="model", fix=f"use one of {', '.join(MODELS)}.")
    spec, hw = MODELS[model], DEVICES[device].with_gpus(int(tp))
    files = vidur_files(profiling_dir, device, model)
    layer_s = _layer_times_s(files["compute"], hw.n_gpus, spec, s.statistic)
    T = layer_s.index.to_numpy(float)
    n_ar = 2 * spec.n_layers if hw.n_gpus > 1 else 0
    ar_s = _all_reduce_s(files["all_reduce"], hw.n_gpus, T * spec.d_model * spec.bytes_per_activation, s.statistic,
                         s.all_reduce_window)
    measured = pd.DataFrame({"num_tokens": T.astype(int), "layers_s": spec.n_layers * layer_s.to_numpy(),
                             "all_reduce_s": n_ar * (ar_s + s.nccl_launch_overhead_s * (n_ar > 0))})

    pre = measured[measured["num_tokens"] >= s.prefill_min_tokens].copy()
    attention, prompts = attention_prefill_s(spec, hw, pre["num_tokens"].to_numpy(), s.prefill_prompt_tokens,
                                             s.attention_efficiency, s.bandwidth_efficiency)
    pre = pre.assign(kind="prefill", batch_size=prompts.astype(int), tokens=pre["num_tokens"],
                     attention_s=attention, context_per_request=0)
    pre["fits_kv_cache"] = True

    capacity = kv_capacity_tokens(spec, hw)
    dec = measured[measured["num_tokens"] <= s.decode_max_batch]
    dec = dec.merge(pd.DataFrame({"context_per_request": list(s.decode_contexts)}), how="cross")
    dec = dec.assign(kind="decode", batch_size=dec["num_tokens"],
                     tokens=dec["num_tokens"] * dec["context_per_request"])
    dec = dec.assign(fits_kv_cache=dec["tokens"] <= capacity)
    dec["attention_s"] = attention_decode_s(spec, hw, dec["batch_size"].to_numpy(), dec["tokens"].to_numpy(),
                                            s.attention_efficiency, s.bandwidth_efficiency)

    out = pd.concat([pre, dec], ignore_index=True)
    out["time_s"] = out["layers_s"] + out["all_reduce_s"] + out["attention_s"]
    return out[["kind", "batch_size", "tokens", "time_s", "num_tokens", "context_per_request", "fits_kv_cache",
                "layers_s", "all_reduce_s", "attention_s"]]


@dataclass(frozen=True)
class VidurFit:
    """A cost model fitted to a Vidur profile, with its quality and where it came from.

    ``rows`` is the synthetic profile with, per row, ``predicted_s`` and
    ``rel_error`` of the shipped fit, ``heldout`` (left out of the second fit)
    and ``heldout_predicted_s`` / ``heldout_rel_error`` (that fit's prediction,
    NaN for rows it was trained on).
    """

    fit: FitResult
    rows: pd.DataFrame = field(repr=False)
    kv_capacity_tokens: int = 0

    @property
    def model(self) -> LinearCostModel:
        return self.fit.model

    def fit_info(self) -> dict[str, Any]:
        """R^2 and relative errors on the rows that fit in the KV cache, and row counts."""
        ok = self.rows[self.rows["fits_kv_cache"]]
        info: dict[str, Any] = {}
        for kind in ("prefill", "decode"):
            part = ok[ok["kind"] == kind]
            y, pred = part["time_s"].to_numpy(), part["predicted_s"].to_numpy()
            info[f"r2_{kind}"] = _r2(y, pred)
        info["r2_decode_full_grid"] = self.fit.r2_decode
        for kind in ("prefill", "decode"):
            part = ok[ok["kind"] == kind]
            info[f"max_rel_error_{kind}"] = float(part["rel_error"].max())
            info[f"mean_rel_error_{kind}"] = float(part["rel_error"].mean())
        held = ok[ok["heldout"]]
        info["heldout_max_rel_error"] = float(held["heldout_rel_error"].max())
        info["heldout_mean_rel_error"] = float(held["heldout_rel_error"].mean())
        for kind in ("prefill", "decode"):
            info[f"heldout_max_rel_error_{kind}"] = float(held.loc[held["kind"] == kind, "heldout_rel_error"].max())
        counts = ok["kind"].value_counts()
        info.update({"rows_prefill": int(counts.get("prefill", 0)), "rows_decode": int(counts.get("decode", 0)),
                     "rows_decode_beyond_kv_capacity": int((~self.rows["fits_kv_cache"]).sum()),
                     "rows_heldout": int(len(held))})
        return info


def _heldout_mask(profile: pd.DataFrame, every: int) -> np.ndarray:
    """Rows whose token count (prefill) or batch size (decode) is every ``every``-th distinct value, from the 3rd."""
    mask = np.zeros(len(profile), dtype=bool)
    for kind in ("prefill", "decode"):
        rows = profile["kind"] == kind
        values = np.sort(profile.loc[rows, "num_tokens"].unique())
        held = set(values[2::every].tolist())
        mask |= (rows & profile["num_tokens"].isin(held)).to_numpy()
    return mask


def fit_vidur_preset(profiling_dir: str | Path, device: str, tp: int, model: str = "meta-llama/Llama-2-70b-hf",
                     *, name: str | None = None, holdout_every: int = 5,
                     settings: VidurSettings | None = None) -> VidurFit:
    """Fit the five coefficients for ``model`` on ``tp`` GPUs of ``device`` from the Vidur profiles."""
    s = settings or VidurSettings()
    root = Path(profiling_dir)
    profile = profile_from_vidur(root, device, model, tp, s)
    spec, hw = MODELS[model], DEVICES[device].with_gpus(int(tp))
    files = vidur_files(root, device, model)
    capacity = kv_capacity_tokens(spec, hw)
    name = name or f"{PRESET_SLUGS[model]}-{device}-tp{tp}"

    held = _heldout_mask(profile, holdout_every)
    train = fit(profile[~held], name=name).model
    heldout_pred = _predict(train, profile)

    provenance = {
        "method": "least-squares fit (coefficients >= 0) to per-iteration times built from measured "
                  "operator profiles plus a first-principles attention term",
        "source": {**VIDUR_SOURCE,
                   "files": [_relative(root, files["compute"]), _relative(root, files["all_reduce"])],
                   "files_relative_to": "the vidur-profiling folder (not shipped with the workbench)"},
        "measured": (f"per-layer non-attention operators ({', '.join(LAYER_OPERATORS)}) at "
                     f"num_tensor_parallel_workers={tp}, times {spec.n_layers} layers; "
                     f"{2 * spec.n_layers} all-reduces per iteration (2 per layer) of {spec.d_model} x tokens x 2 "
                     f"bytes over num_workers=devices_per_node={tp}, running median over "
                     f"{s.all_reduce_window} sizes then linearly interpolated in message size"),
        "derived": ("attention from first principles, as the attention profiles are not available: prefill = "
                    "causal attention FLOPs 2 L H dh l(l+1) per prompt / (G x peak x attention efficiency) + KV "
                    "write; decode = KV-cache bytes read (2 L ceil(Hkv/G) dh 2 B per context token per GPU) / "
                    "(HBM bandwidth x bandwidth efficiency) + KV write of the new tokens; "
                    f"hardware {hw.name}: {hw.peak_flops / 1e12:g} TFLOP/s, {hw.hbm_bandwidth / 1e12:g} TB/s per GPU"),
        "kv_capacity_tokens": ("derived, not measured: (0.9 x 80 GiB - weights/G - 2 GiB) per GPU / KV bytes "
                               "per token per GPU (workbench.costmodel.roofline.kv_capacity_tokens)"),
        "not_included": ("embedding lookup, output head (lm_head) and sampling, CPU scheduling overhead "
                         "(Vidur leaves these out of its model time too)"),
        "settings": s.describe(),
        "model": {"name": spec.name, **spec.sources},
        "heldout": (f"every {holdout_every}th distinct token count (prefill) or batch size (decode), from the "
                    "3rd, left out of a second fit and predicted; shipped coefficients use all rows"),
        "quality": ("fit.r2_*, fit.*rel_error* are computed on the rows that fit in the KV cache; "
                    "r2_decode_full_grid includes the decode rows beyond it"),
        "function": "workbench.costmodel.calibrate.fit_vidur_preset",
        "script": "scripts/make_presets.py",
    }
    description = (f"{spec.name} on {tp} x {device.upper()} (tensor parallel), fitted to Vidur operator "
                   "profiles with a first-principles attention term.")
    full = fit(profile, name=name, description=description, provenance=provenance)
    model_out = LinearCostModel(**full.model.coefficients(), name=name, description=description,
                                kv_capacity_tokens=capacity, provenance=provenance)
    pred = _predict(model_out, profile)
    rows = profile.assign(predicted_s=pred, rel_error=np.abs(pred - profile["time_s"]) / profile["time_s"],
                          heldout=held,
                          heldout_predicted_s=np.where(held, heldout_pred, np.nan))
    rows["heldout_rel_error"] = np.abs(rows["heldout_predicted_s"] - rows["time_s"]) / rows["time_s"]
    result = FitResult(model=model_out, r2_prefill=full.r2_prefill, r2_decode=full.r2_decode,
                       residuals=full.residuals)
    return VidurFit(fit=result, rows=rows, kv_capacity_tokens=capacity)


def _predict(model: LinearCostModel, profile: pd.DataFrame) -> np.ndarray:
    return np.where(profile["kind"] == "prefill", model.prefill_time(profile["tokens"]),
                    model.decode_time(profile["batch_size"], profile["tokens"]))


def shipped_profile(preset: str) -> pd.DataFrame:
    """The derived profile a fitted preset was made from (``data/presets/profiles/<preset>.csv``)."""
    from workbench.costmodel.linear import presets_dir
    from workbench.errors import ConfigError

    path = presets_dir() / "profiles" / f"{preset}.csv"
    if not path.is_file():
        raise ConfigError(f"preset '{preset}' has no fitted profile.", field="preset",
                          fix="use one of the llama2-70b-* presets (llama-65b is derived, not fitted).")
    return pd.read_csv(path)


def fit_figure(preset: str):
    """Fit against data for a fitted preset: measured vs predicted iteration time, per kind."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from workbench.costmodel.linear import load_preset

    rows = shipped_profile(preset)
    model = load_preset(preset)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("prefill: time vs batch tokens",
                                                        "decode: time vs batch size (one line per context)"))
    pre = rows[rows["kind"] == "prefill"].sort_values("tokens")
    fig.add_trace(go.Scatter(x=pre["tokens"], y=pre["time_s"] * 1e3, mode="markers", name="profile (derived)",
                             marker=dict(size=4, color="#2E86AB")), row=1, col=1)
    fig.add_trace(go.Scatter(x=pre["tokens"], y=model.prefill_time(pre["tokens"]) * 1e3, mode="lines",
                             name="linear fit", line=dict(color="#E4572E")), row=1, col=1)
    dec = rows[rows["kind"] == "decode"]
    for k, (ctx, part) in enumerate(dec.groupby("context_per_request")):
        part = part.sort_values("batch_size")
        fig.add_trace(go.Scatter(x=part["batch_size"], y=part["time_s"] * 1e3, mode="markers", showlegend=False,
                                 marker=dict(size=4, color="#2E86AB"), name=f"context {ctx}"), row=1, col=2)
        fig.add_trace(go.Scatter(x=part["batch_size"], y=model.decode_time(part["batch_size"], part["tokens"]) * 1e3,
                                 mode="lines", showlegend=False, line=dict(color="#E4572E", width=1),
                                 name=f"fit, context {ctx}"), row=1, col=2)
    fig.update_xaxes(title_text="prompt tokens in the batch", row=1, col=1)
    fig.update_xaxes(title_text="requests in the batch", row=1, col=2)
    fig.update_yaxes(title_text="iteration time (ms)", row=1, col=1)
    fig.update_layout(title=f"{preset}: the linear model against the profile it was fitted to",
                      template="plotly_white", height=420)
    return fig


# =============================================================================================
# Operator profiles of a serving engine (LLMServingSim's profiler, kernel times inside vLLM)
# =============================================================================================
#
# A profile folder holds ``meta.yaml`` and one ``tp<N>/`` folder per tensor-parallel degree with
# ``dense.csv`` (layer, tokens, time_us), ``attention.csv`` (prefill_chunk, kv_prefill, n_decode,
# kv_decode, time_us) and ``per_sequence.csv`` (layer, sequences, time_us).  meta.yaml says how they
# were taken: vLLM in eager mode with dummy weights and a model cut to ``hf_overrides.num_hidden_layers``
# (1) decoder layers; each degree measured on ONE GPU with the widths of one rank (``engine_effective``
# shows the overrides of the last degree profiled, e.g. intermediate 7168 = 14336 / 2 at TP 2), so the
# times are per-rank kernel times without collectives.  Which operator runs how often per iteration
# follows vLLM's Llama decoder (LLMServingSim ``profiler/models/llama.yaml``): the embedding once; per
# layer two RMSNorms (the ``layernorm`` row is one of them; the profiler averages repeated calls),
# qkv_proj, rotary_emb, attention, o_proj, gate_up_proj, act_fn, down_proj; the final norm once; the
# output head and the sampler once per iteration over the sequences.

PROFILE_FILES: dict[str, tuple[str, ...]] = {
    "dense.csv": ("layer", "tokens", "time_us"),
    "attention.csv": ("prefill_chunk", "kv_prefill", "n_decode", "kv_decode", "time_us"),
    "per_sequence.csv": ("layer", "sequences", "time_us"),
}
#: dense.csv operators of one decoder layer, and how many times each runs per layer.
DECODER_LAYER_OPERATORS: dict[str, int] = {"layernorm": 2, "qkv_proj": 1, "rotary_emb": 1, "o_proj": 1,
                                           "gate_up_proj": 1, "act_fn": 1, "down_proj": 1}
#: Per decoder layer where the profile has them (Qwen3's q/k norms); absent, they cost nothing.
OPTIONAL_LAYER_OPERATORS: dict[str, int] = {"qk_norm": 1}
#: A mixture-of-experts layer's dense operators: the MLP is the experts' (moe.csv).
MOE_LAYER_OPERATORS: dict[str, int] = {"layernorm": 2, "qkv_proj": 1, "rotary_emb": 1, "o_proj": 1}
#: dense.csv operators that run once per iteration, whatever the number of layers.
ONCE_PER_ITERATION_OPERATORS = ("embedding", "final_layernorm")
#: per_sequence.csv operators (once per iteration, over the sequences that produce logits).
PER_SEQUENCE_OPERATORS = ("lm_head", "sampler")

LLMSERVINGSIM_SOURCE = {
    "repository": "casys-kaist/LLMServingSim",
    "licence": "MIT",
    "what": "kernel times measured inside vLLM by LLMServingSim's profiler (profiler/perf/<GPU>/<model>/<dtype>/)",
}


@dataclass(frozen=True)
class LinkModel:
    """A first-principles interconnect for tensor-parallel all-reduces: latency + bytes / (bandwidth x efficiency)."""

    name: str = "PCIe 5.0 x16"
    bandwidth_bytes_per_s: float = 63.0e9
    efficiency: float = 0.75
    latency_s: float = 15e-6
    #: Where the figures come from: "assumed" (nobody measured them), "flags" (``--link-*``), or the cluster
    #: configuration file that declared them.
    source: str = "assumed"
    #: True: the latency is paid on each of the ring's 2 (N-1) steps, as ASTRA-Sim's analytical network
    #: charges a link latency per chunk sent; False: once per collective.
    latency_per_step: bool = False

    def all_reduce_s(self, message_bytes, ranks: int):
        """A ring all-reduce: each rank sends and receives 2 (N-1)/N of the message."""
        if ranks <= 1:
            return np.zeros_like(np.asarray(message_bytes, dtype=float))
        moved = 2.0 * (ranks - 1) / ranks * np.asarray(message_bytes, dtype=float)
        latency_s = self.latency_s * (2 * (ranks - 1) if self.latency_per_step else 1)
        return latency_s + moved / (self.bandwidth_bytes_per_s * self.efficiency)

    def all_gather_s(self, bytes_per_rank, ranks: int):
        """A ring all-gather (or reduce-scatter) of ``bytes_per_rank`` from each of ``ranks``: N - 1 steps."""
        if ranks <= 1:
            return np.zeros_like(np.asarray(bytes_per_rank, dtype=float))
        steps = ranks - 1
        latency_s = self.latency_s * (steps if self.latency_per_step else 1)
        return latency_s + steps * np.asarray(bytes_per_rank, dtype=float) / (self.bandwidth_bytes_per_s
                                                                              * self.efficiency)

    def transfer_s(self, message_bytes, lanes: int = 1):
        """A point-to-point copy of ``message_bytes`` split over ``lanes`` such links in parallel (a replica of
        ``lanes`` GPUs sends each GPU's KV shard over its own link): one latency plus bytes over the bandwidth.
        An infinite bandwidth with zero latency costs nothing (the hand-computed checks use it)."""
        rate = self.bandwidth_bytes_per_s * self.efficiency * lanes
        return self.latency_s + (0.0 if math.isinf(rate) else float(message_bytes) / rate)

    def figures(self) -> dict[str, Any]:
        """The numbers that price a collective (what a replay compares with a run's declared link)."""
        return {"bandwidth_gbps": self.bandwidth_bytes_per_s / 1e9, "efficiency": self.efficiency,
                "latency_us": self.latency_s * 1e6, "latency_per_step": self.latency_per_step}

    @property
    def guessed(self) -> bool:
        return self.source == "assumed"

    def describe(self) -> str:
        if self.latency_per_step:
            return (f"{self.name}: {self.bandwidth_bytes_per_s / 1e9:g} GB/s x {self.efficiency:g}, "
                    f"{self.latency_s * 1e6:g} us per ring step (2 (N-1) steps of 1/N of the message, as "
                    f"ASTRA-Sim's analytical network charges them); declared by {self.source}")
        return (f"{self.name}: {self.bandwidth_bytes_per_s / 1e9:g} GB/s per direction x {self.efficiency:g} "
                f"efficiency, {self.latency_s * 1e6:g} us per collective (launch + NCCL latency); ring "
                "all-reduce moving 2 (N-1)/N of the message per rank; "
                + ("first principles, not measured" if self.guessed else f"given by {self.source}"))


#: The largest cluster configuration read (LLMServingSim's are about 1 KB).
MAX_CLUSTER_CONFIG_BYTES = 1 << 20


def read_cluster_config(path: str | Path) -> dict[str, Any]:
    """LLMServingSim's cluster configuration (``link_bw`` GB/s, ``link_latency`` ns, ``nodes[].instances[]``),
    checked for what the workbench reads of it: the link and each instance's layout and memory."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"'{path}' {missing_because(path, folder=False)}.", field="cluster_config",
                          fix="give LLMServingSim's cluster configuration (a JSON file with link_bw, link_latency "
                              "and nodes).")
    from workbench._paths import read_json_object

    data = read_json_object(path, field="cluster_config", max_bytes=MAX_CLUSTER_CONFIG_BYTES,
                            fix="give LLMServingSim's cluster configuration file.",
                            size_fix="give the cluster configuration, not another JSON file.")
    for key, unit in (("link_bw", "GB/s"), ("link_latency", "ns")):
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
                or (key == "link_bw" and value == 0):
            raise ConfigError(f"{path} {key} is {value!r}, not a number of {unit}"
                              + (" above 0." if key == "link_bw" else " >= 0."), field=key,
                              fix=f"give the link's {'bandwidth in GB/s' if key == 'link_bw' else 'latency in ns'}.")
    instances = []
    nodes = data.get("nodes", [])
    if not isinstance(nodes, list):
        raise ConfigError(f"{path} nodes is not a list.", field="nodes", fix="give nodes as LLMServingSim does.")
    for node in nodes:
        for inst in (node.get("instances", []) if isinstance(node, dict) else []):
            if isinstance(inst, dict):
                instances.append(inst)
    return {"path": str(path), "link_bw_gbps": float(data["link_bw"]), "link_latency_ns": float(data["link_latency"]),
            "instances": instances}


def cluster_link(cluster: dict[str, Any]) -> LinkModel:
    """The link a cluster configuration declares, priced as ASTRA-Sim prices it: the declared bandwidth in
    full (efficiency 1) and the declared latency on every ring step."""
    return LinkModel(name=f"declared link of {cluster['link_bw_gbps']:g} GB/s, {cluster['link_latency_ns']:g} ns",
                     bandwidth_bytes_per_s=cluster["link_bw_gbps"] * 1e9, efficiency=1.0,
                     latency_s=cluster["link_latency_ns"] * 1e-9, source=cluster["path"], latency_per_step=True)


#: PCIe 5.0 x16: 32 GT/s x 16 lanes x 128b/130b = 63 GB/s per direction.  The RTX PRO 6000 Blackwell
#: Server Edition has no NVLink, so ranks talk over PCIe.  0.75 is what NCCL typically reaches of the
#: PCIe peak for large messages; 15 us covers the kernel launch and NCCL's small-message latency.
PCIE5_X16 = LinkModel()

#: Links a KV cache can be moved over between a prefill and a decode replica (MODEL.md section 11.11), per
#: GPU and per direction; a replica of G GPUs moves its G shards over G such links at once.
#: Fourth-generation NVLink (H100 SXM5, NVIDIA H100 datasheet: 900 GB/s per GPU both directions together);
#: 0.8 of it as NCCL reaches of the A100's NVLink (the llama-65b preset's link_efficiency), 5 us per copy.
NVLINK4 = LinkModel(name="NVLink 4 (H100 SXM5)", bandwidth_bytes_per_s=450e9, efficiency=0.8, latency_s=5e-6,
                    source="NVIDIA H100 Tensor Core GPU datasheet: NVLink 900 GB/s per GPU (450 GB/s each way)")
#: RDMA between nodes: one 400 Gb/s InfiniBand NDR port per GPU (NVIDIA ConnectX-7; the DGX H100 has eight,
#: one per GPU; Splitwise, ISCA 2024, moves its KV cache between machines over InfiniBand), 50 GB/s each
#: way; 0.9 of it as large RDMA writes reach, 10 us per transfer (queue pair set-up and completion).
RDMA_NDR400 = LinkModel(name="InfiniBand NDR 400 Gb/s RDMA", bandwidth_bytes_per_s=50e9, efficiency=0.9,
                        latency_s=10e-6, source="NVIDIA ConnectX-7 datasheet: 400 Gb/s InfiniBand NDR per port")
#: No cost at all: what a hand-computed case or a bound that ignores the link uses.
INFINITE_LINK = LinkModel(name="infinite", bandwidth_bytes_per_s=math.inf, efficiency=1.0, latency_s=0.0,
                          source="an idealisation (no transfer cost)")
#: The links by the names a user types (``Pools(link=...)``, ``workbench simulate --link``).
LINKS = {"nvlink": NVLINK4, "pcie": PCIE5_X16, "rdma": RDMA_NDR400, "infinite": INFINITE_LINK}

#: GPU memory per device for the KV-capacity estimate (GiB), by meta.yaml ``gpu``.
GPU_MEMORY_GIB = {
    "NVIDIA RTX PRO 6000 Blackwell Server Edition": 96.0,
    "NVIDIA RTX PRO 6000 Blackwell Workstation Edition": 96.0,
    "NVIDIA H100 80GB HBM3": 80.0,
    "NVIDIA A100-SXM4-80GB": 80.0,
    "NVIDIA GeForce RTX 4090": 24.0,
}


def _profile_error(path: Path, message: str, *, field: str | None = None, row: int | None = None,
                   fix: str) -> ConfigError:
    return ConfigError(f"'{path}': {message}", field=field, row=row, fix=fix)


def read_profile_meta(profile_dir: str | Path) -> dict[str, Any]:
    """meta.yaml of an operator-profile folder, checked for what the mapping needs."""
    import yaml

    root = Path(profile_dir)
    path = root / "meta.yaml"
    if not root.is_dir():
        raise ConfigError(f"profile folder '{root}' {missing_because(root, folder=True)}.", field="profile",
                          fix="give a folder laid out as profiles/<GPU>/<model>/ (meta.yaml, tp1/, ...).")
    if not path.is_file():
        raise _profile_error(path, "is missing.", field="meta.yaml",
                             fix="give the folder that holds meta.yaml and the tp<N>/ folders.")
    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise _profile_error(path, f"is not valid YAML ({str(exc).splitlines()[0]}).", field="meta.yaml",
                             fix="restore the profiler's meta.yaml.") from None
    if not isinstance(meta, dict):
        raise _profile_error(path, "is not a mapping.", field="meta.yaml", fix="restore the profiler's meta.yaml.")
    return meta


#: The longest operator time a profile may hold: 1e4 s, the longest coefficient (MAX_COEFFICIENT_S).
MAX_OPERATOR_US = 1e10


def _read_profile_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise _profile_error(path, "is missing.", field=path.name,
                             fix=f"profile this degree again, or give a folder with {', '.join(PROFILE_FILES)}.")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise _profile_error(path, f"cannot be read as CSV ({str(exc).strip().splitlines()[0]}).",
                             field=path.name, fix=f"give a CSV with columns {', '.join(columns)}.") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise _profile_error(path, f"has no column '{missing[0]}' (columns: {', '.join(map(str, frame.columns))}).",
                             field=missing[0], fix=f"give columns {', '.join(columns)}.")
    if frame.empty:
        raise _profile_error(path, "has no rows.", field=path.name, fix="profile this degree again.")
    for column in columns:
        if column == "layer":
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan)) | (values < 0).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise _profile_error(path, f"{frame[column].iloc[row]!r} is not a number >= 0.", field=column, row=row,
                                 fix="restore the profiler's file (times in microseconds, counts as integers).")
        if column == "time_us" and (values > MAX_OPERATOR_US).any():
            # Such times overflowed the fit into zero coefficients, refused as "a_p and b_p are both 0".
            row = int(np.flatnonzero((values > MAX_OPERATOR_US).to_numpy())[0])
            raise _profile_error(path, f"{frame[column].iloc[row]!r} us is above {MAX_OPERATOR_US:g} us (an operator "
                                 "of hours).", field=column, row=row,
                                 fix="give times in microseconds, as the profiler writes them.")
        frame[column] = values.astype(float)
    _check_duplicates(frame, path, [c for c in columns if c != "time_us"])
    return frame


def _check_duplicates(frame: pd.DataFrame, path: Path, keys: list[str]) -> None:
    """One time per grid point: two rows of one point with different times were averaged silently."""
    twice = frame.duplicated(keys, keep=False)
    if not twice.any():
        return
    spread = frame[twice].groupby(keys)["time_us"].transform("nunique")
    conflicting = spread[spread > 1]
    if len(conflicting):
        row = int(conflicting.index[1] if len(conflicting) > 1 else conflicting.index[0])
        point = ", ".join(f"{k}={frame.loc[row, k]}" for k in keys)
        raise _profile_error(path, f"gives {point} twice with different times.", field="time_us", row=row,
                             fix="keep one row per grid point (the profiler writes the median of its repeats).")


def _check_not_reversed(times_us: pd.Series, path: Path, key: str) -> None:
    """Times that fall from the smallest grid point to the largest: a table written in reverse (or its
    keys shuffled), which interpolation would take as work that gets cheaper as it grows."""
    if len(times_us) >= 2 and times_us.iloc[-1] < times_us.iloc[0]:
        raise _profile_error(path, f"times fall from {times_us.iloc[0]:g} us at {key}={times_us.index[0]:g} to "
                             f"{times_us.iloc[-1]:g} us at {key}={times_us.index[-1]:g}: the table looks reversed.",
                             field=key, fix="restore the profiler's file (times grow with the work).")


def _operator_table(frame: pd.DataFrame, path: Path, operators, key: str) -> pd.DataFrame:
    """time_us per operator (columns) and ``key`` value (index); every operator on one common grid."""
    found = set(frame["layer"].astype(str))
    for op in operators:
        if op not in found:
            raise _profile_error(path, f"has no rows for operator '{op}' (operators: {', '.join(sorted(found))}).",
                                 field="layer", fix=f"profile every operator of the model: {', '.join(operators)}.")
    table = frame[frame["layer"].isin(list(operators))].pivot_table(index=key, columns="layer", values="time_us",
                                                                    aggfunc="mean")
    holes = table.isna().any(axis=1)
    if holes.any():
        at = table.index[holes][0]
        missing = [op for op in operators if np.isnan(table.loc[at, op])]
        raise _profile_error(path, f"has no time for operator '{missing[0]}' at {key}={at:g}.", field=key,
                             fix="profile every operator on the same grid.")
    return table.sort_index()


def _weights_per_rank(shape, tp: int, ep: int) -> float:
    """Parameters one GPU holds: a TP rank's share, with the experts split over the EP ranks instead."""
    total = _model_parameters(shape)
    if not shape.num_experts:
        return total / tp
    experts = shape.num_hidden_layers * 3 * shape.hidden_size * shape.moe_intermediate_size * shape.num_experts
    return (total - experts) / tp + experts / max(ep, tp)


def _layer_operators(frame: pd.DataFrame, moe: bool) -> dict[str, int]:
    """The decoder layer's operators and how often each runs: the dense MLP's or, with moe.csv, none (the
    experts are priced from moe.csv); plus the optional ones the profile has."""
    found = set(frame["layer"].astype(str))
    ops = dict(MOE_LAYER_OPERATORS if moe else DECODER_LAYER_OPERATORS)
    ops.update({op: k for op, k in OPTIONAL_LAYER_OPERATORS.items() if op in found})
    return ops


def moe_layer_s(path: Path, gathered: np.ndarray, shape, ep: int) -> np.ndarray:
    """One expert layer's kernel time on one rank (moe.csv: ``tokens, activated_experts, time_us``, measured
    with every expert on one GPU) when the data-parallel group's step gathers ``gathered`` tokens and the
    experts are spread over ``ep`` ranks: a rank computes its E / ep experts for them, which is
    gathered x k / ep token-expert pairs (the profile's ``tokens`` = gathered / ep), with
    (E / ep)(1 - (1 - k / E)^gathered) experts active in expectation (uniform routing).  Linear in the
    active experts at each profiled token count, then linear in tokens (beyond the grid: the last two
    points' slope)."""
    frame = _read_profile_csv(path, ("tokens", "activated_experts", "time_us"))
    grid = frame.groupby(["tokens", "activated_experts"])["time_us"].mean()
    points = np.array(sorted(grid.index.get_level_values(0).unique()), dtype=float)
    E, k = shape.num_experts, shape.num_experts_per_tok
    if E < 1 or k < 1:
        raise ConfigError(f"{path} prices expert layers, but the model's shape gives no experts.", field="model",
                          fix="give the model's num_experts and num_experts_per_tok in data/models/shapes.json.")
    gathered = np.asarray(gathered, dtype=float)
    active = (E / ep) * (1.0 - (1.0 - k / E) ** gathered)
    tokens = gathered / ep

    def at(point: float, a: float) -> float:
        row = grid.loc[point]
        return float(np.interp(a, row.index.to_numpy(float), row.to_numpy(float)))

    out = []
    for t, a in zip(np.asarray(tokens, dtype=float), active):
        hi = int(np.clip(np.searchsorted(points, t), 1, len(points) - 1))
        lo = hi - 1
        y0, y1 = at(points[lo], a), at(points[hi], a)
        out.append(y0 + (y1 - y0) * (t - points[lo]) / (points[hi] - points[lo]))
    return np.maximum(np.array(out), 0.0) * 1e-6


def _model_parameters(shape) -> float:
    """Weights of a dense decoder (embedding, attention, MLP, norms, output head)."""
    d, L = shape.hidden_size, shape.num_hidden_layers
    q, kv = shape.num_attention_heads * shape.head_dim, shape.num_key_value_heads * shape.head_dim
    mlp = (3 * d * shape.moe_intermediate_size * shape.num_experts + d * shape.num_experts if shape.num_experts
           else 3 * d * shape.intermediate_size)
    per_layer = d * (q + 2 * kv) + q * d + mlp + 2 * d
    head = 0 if shape.tie_word_embeddings else shape.vocab_size * d
    return shape.vocab_size * d + L * per_layer + d + head


@dataclass(frozen=True)
class ProfileSettings:
    """The stated choices of a profile fit (all in the preset's provenance)."""

    link: LinkModel = PCIE5_X16
    #: Expert parallelism over this many data-parallel replicas (vLLM: EP = DP x TP); 1 without.
    expert_parallel: int = 1
    gpu_memory_utilization: float = 0.9
    activation_reserve_gib: float = 2.0
    bytes_per_value: int = 2
    heldout_every: int = 5
    decode_contexts: tuple[int, ...] = DEFAULT_CONTEXTS


@dataclass(frozen=True)
class ProfileFit:
    """What :func:`fit_profile` returns besides the cost model: the linear fit, the bound and the report."""

    linear: LinearCostModel
    report: dict[str, Any]
    rows: pd.DataFrame = field(repr=False)


def _check_model(meta: dict[str, Any], model: str, path: Path) -> None:
    profiled = str(meta.get("model", "")).strip()
    if profiled and profiled.lower() != model.strip().lower():
        raise _profile_error(path, f"profiles '{profiled}', not '{model}'.", field="model",
                             fix=f"give --model {profiled}, or the folder profiled for {model}.")


def _loo_errors(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Relative error of predicting each interior grid point from its two neighbours (leave one out)."""
    if len(keys) < 3:
        return np.array([])
    x0, x1, x = keys[:-2], keys[2:], keys[1:-1]
    pred = values[:-2] + (x - x0) / (x1 - x0) * (values[2:] - values[:-2])
    return np.abs(pred - values[1:-1]) / values[1:-1], pred, values[1:-1]


def _term_quality(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    errors, preds, truths = [], [], []
    for keys, values in pairs:
        if len(keys) < 3:
            continue
        e, p, t = _loo_errors(keys, values)
        errors.append(e)
        preds.append(p)
        truths.append(t)
    e, p, t = np.concatenate(errors), np.concatenate(preds), np.concatenate(truths)
    return {"points_heldout": int(len(e)), "r2_heldout": _r2(t, p), "heldout_mean_rel_error": float(e.mean()),
            "heldout_p90_rel_error": float(np.percentile(e, 90)), "heldout_max_rel_error": float(e.max())}


def _quiet_highs(highspy):
    """A Highs instance without its banner, which the library writes to file descriptor 1 on construction."""
    import os
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            h = highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    h.setOptionValue("output_flag", False)
    return h


def _solve_bound(rows: list[tuple[np.ndarray, float]], objective_rows: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """Largest linear model (coefficients >= 0) with A x <= f on every row, by linear programming (HiGHS)."""
    import highspy

    A = np.array([r for r, _ in rows], dtype=float)
    f = np.array([v for _, v in rows], dtype=float)
    # maximise sum of g/f over the rows that matter (a tight bound where the engine spends its time)
    cost = -np.sum([r / v for r, v in objective_rows], axis=0)
    h = _quiet_highs(highspy)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = A.shape[1], A.shape[0]
    lp.col_cost_ = cost
    lp.col_lower_ = np.zeros(A.shape[1])
    lp.col_upper_ = np.full(A.shape[1], highspy.kHighsInf)
    lp.row_lower_ = np.full(A.shape[0], -highspy.kHighsInf)
    lp.row_upper_ = f
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = np.arange(0, A.size + 1, A.shape[1], dtype=np.int32)
    lp.a_matrix_.index_ = np.tile(np.arange(A.shape[1], dtype=np.int32), A.shape[0])
    lp.a_matrix_.value_ = A.ravel()
    h.passModel(lp)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(f"bound LP ended {h.modelStatusToString(h.getModelStatus())}")
    return np.maximum(np.array(h.getSolution().col_value), 0.0)


def _bound_model(model, layers_name: str, attention_table_rows: pd.DataFrame, *, name: str):
    """A LinearCostModel below ``model`` on the profiled grid (prefill, decode and mixed iterations)."""
    from workbench.costmodel.profiled import ProfiledCostModel  # noqa: F401  (type of ``model``)

    dense_keys = np.array(model.dense.keys)
    seq_keys = np.array(model.per_sequence.keys)
    ps_min = min(model.per_sequence.values_s)
    floor = model.attention_floor_s
    pcs = sorted(p for p in set(attention_table_rows["prefill_chunk"]) if p > 0)
    nds = sorted(n for n in set(attention_table_rows["n_decode"]) if n > 0)
    kds = sorted(k for k in set(attention_table_rows["kv_decode"]) if k > 0)
    kps = sorted(set(attention_table_rows["kv_prefill"]))
    max_seq = int(seq_keys.max())
    rows, objective = [], []
    # exclusive prefill of prompts summing to T: at least dense(T) + the cheapest head + the kernel's fixed cost
    for T in sorted(set(dense_keys.tolist()) | set(pcs)):
        f = model.dense(T) + ps_min + floor
        rows.append((np.array([1.0, T, 0, 0, 0]), f))
        objective.append((rows[-1][0], model.prefill_time(int(T))))
    # decode-only iterations, on the union of the grids' breakpoints (the interpolant is multilinear between)
    ns = sorted({int(n) for n in dense_keys if n <= max_seq} | {int(n) for n in seq_keys} | set(nds))
    for n in ns:
        for kv in kds:
            f = model.iteration_time(n, n * kv)
            rows.append((np.array([0, 0, 1.0, n, n * kv]), f))
            objective.append((rows[-1][0], f))
    # mixed iterations of one chunk: max(a_p, a_d) + b_d n + c_d (C + Q) + b_p P <= t (the chunked rule of MODEL.md)
    small = [p for p in (1, 2, 4, 8, 12) if p < pcs[0]]
    for p in small + pcs:
        for q in [k for k in kps if k <= 4096]:
            for n in [n for n in nds if n <= 128]:
                for kv in kds[::2]:
                    f = model.iteration_time(n, n * kv, [p], [q])
                    rows.append((np.array([1.0, p, 0, n, n * kv + q]), f))
                    rows.append((np.array([0, p, 1.0, n, n * kv + q]), f))
    x = _solve_bound(rows, objective)
    # The dense table is piecewise in T = n + P, a diagonal of the (n, P) grid, so the grid alone proves
    # nothing between its points: check seeded random iterations across the domain as well, and scale the
    # bound down by the worst ratio seen (with a margin for the LP's round-off).
    n_grid = len(rows)
    rng = np.random.default_rng(0)
    max_pc, max_nd, max_kd, max_kp = pcs[-1], max_seq, kds[-1], min(kps[-1], 4096)
    for _ in range(3000):
        n = int(rng.integers(0, max_nd + 1))
        m = int(rng.integers(0 if n else 1, 4))
        chunks = [int(c) for c in rng.integers(1, max_pc + 1, m)]
        priors = [int(q) for q in rng.integers(0, max_kp + 1, m)]
        kv = int(rng.integers(kds[0], max_kd + 1)) if n else 0
        f = model.iteration_time(n, n * kv, chunks, priors)
        P, Q = sum(chunks), sum(priors)
        if n and chunks:
            rows += [(np.array([1.0, P, 0, n, n * kv + Q]), f), (np.array([0, P, 1.0, n, n * kv + Q]), f)]
        elif chunks:
            rows.append((np.array([1.0, P, 0, 0, Q]), f))
        else:
            rows.append((np.array([0, 0, 1.0, n, n * kv]), f))
    A = np.array([r for r, _ in rows])
    f = np.array([v for _, v in rows])
    ratios = (A @ x) / f
    worst = float(np.max(ratios)) if len(f) else 0.0
    worst_random = float(np.max(ratios[n_grid:])) if len(f) > n_grid else 0.0
    scaled = worst > 1.0 - 1e-9
    if scaled:
        x = x * (1.0 - 1e-6) / worst
    return LinearCostModel(*x.tolist(), name=name,
                           description="linear lower envelope of the profiled model (bounds only)"), \
        {"rows": len(rows), "grid_rows": n_grid, "worst_ratio_before_scaling": worst,
         "worst_random_ratio": worst_random, "scaled": scaled}


def _fit_vidur_folder(root: Path, model: str, tp, layers, device, name):
    """Today's path: Vidur's mlp.csv + all_reduce.csv, a LinearCostModel with a first-principles attention term."""
    if device is None:
        have = sorted(p.name for p in (root / "compute").iterdir() if p.is_dir())
        raise ConfigError(f"'{root}' is a Vidur profiling folder, which holds several GPUs.", field="device",
                          fix=f"give --device, one of {', '.join(have)}.")
    if layers is not None:
        raise ConfigError("--layers is not used with Vidur profiles (the model spec gives them).", field="layers",
                          fix="drop --layers.")
    if model not in MODELS:
        raise ConfigError(f"no first-principles spec for '{model}' to pair with Vidur's profile.", field="model",
                          fix=f"use one of {', '.join(MODELS)}.")
    result = fit_vidur_preset(root, device, int(tp), model, name=name)
    return result.model, {"preset": result.model.name, "linear": result.fit_info(), "source": "vidur"}


def fit_profile(profile_dir: str | Path, model: str, tp: int = 1, layers: int | None = None, *,
                name: str | None = None, settings: ProfileSettings | None = None, device: str | None = None):
    """A :class:`~workbench.costmodel.profiled.ProfiledCostModel` of ``model`` from an operator-profile folder.

    Returns ``(cost_model, report)``: the report holds, per term (dense,
    per_sequence, attention), the held-out (leave-one-out) error of the
    interpolation, the linear fit of the same profile (a LinearCostModel for
    the closed-form engine and the bounds) with its R^2 and held-out error,
    the linear lower envelope the profiled model's bounds use, and the sanity
    figures.  ``report["linear_model"]`` is the fitted LinearCostModel.

    A Vidur profiling folder (``compute/<device>/...``, with ``device``)
    takes today's path instead: a LinearCostModel fitted to ``mlp.csv`` with
    a first-principles attention term (:func:`fit_vidur_preset`).
    """
    from workbench.costmodel.profiled import AttentionTable, ProfiledCostModel, Table1D
    from workbench.costmodel.shapes import model_shape

    s = settings or ProfileSettings()
    root = Path(profile_dir)
    if (root / "compute").is_dir() and not (root / "meta.yaml").is_file():
        return _fit_vidur_folder(root, model, tp, layers, device, name)
    if device is not None:
        raise ConfigError(f"--device is for Vidur profiling folders; '{root}' is an operator-profile folder "
                          "(meta.yaml names its GPU).", field="device", fix="drop --device.")
    meta = read_profile_meta(root)
    _check_model(meta, model, root / "meta.yaml")
    try:
        tp = int(tp)
    except (TypeError, ValueError):
        raise ConfigError(f"'{tp}' is not an integer.", field="tp", fix="give --tp 1, 2, ...") from None
    tp_dir = root / f"tp{tp}"
    if not tp_dir.is_dir():
        have = sorted(p.name for p in root.glob("tp*") if p.is_dir())
        raise ConfigError(f"'{root}' has no folder tp{tp}/ (it has {', '.join(have) or 'none'}).", field="tp",
                          fix=f"give --tp {' or '.join(h[2:] for h in have) or 'N'} (the degrees profiled).")
    shape = None
    if layers is None:
        shape = model_shape(model)
        layers = shape.num_hidden_layers
    else:
        try:
            layers = int(layers)
        except (TypeError, ValueError):
            raise ConfigError(f"'{layers}' is not an integer.", field="layers", fix="give --layers N >= 1.") from None
        if layers < 1:
            raise ConfigError(f"{layers} decoder layers.", field="layers", fix="give --layers N >= 1.")
        try:
            shape = model_shape(model)
        except ConfigError:
            shape = None
    effective = meta.get("engine_effective") or {}
    overrides = effective.get("hf_overrides") or {}
    profiled_layers = int(overrides.get("num_hidden_layers", 1))
    if tp > 1 and shape is None:
        raise ConfigError(f"the all-reduces at TP {tp} need the hidden size of '{model}', which is not in the "
                          "table of model shapes.", field="model",
                          fix="add the model to data/models/shapes.json, or calibrate at --tp 1.")

    frames = {fname: _read_profile_csv(tp_dir / fname, cols) for fname, cols in PROFILE_FILES.items()}
    moe = (tp_dir / "moe.csv").is_file()
    layer_ops = _layer_operators(frames["dense.csv"], moe)
    dense = _operator_table(frames["dense.csv"], tp_dir / "dense.csv",
                            (*layer_ops, *ONCE_PER_ITERATION_OPERATORS), "tokens")
    per_seq = _operator_table(frames["per_sequence.csv"], tp_dir / "per_sequence.csv", PER_SEQUENCE_OPERATORS,
                              "sequences")
    _check_not_reversed(dense.sum(axis=1), tp_dir / "dense.csv", "tokens")
    _check_not_reversed(per_seq.sum(axis=1), tp_dir / "per_sequence.csv", "sequences")
    attention = frames["attention.csv"].groupby(["prefill_chunk", "kv_prefill", "n_decode", "kv_decode"],
                                                as_index=False)["time_us"].mean()
    if not (attention["time_us"] > 0).any():
        raise _profile_error(tp_dir / "attention.csv", "has every time 0, so attention would cost nothing.",
                             field="time_us", fix="profile attention again (times in microseconds).")
    prefill_only = attention[attention["n_decode"] == 0].groupby("prefill_chunk")["time_us"].max()
    _check_not_reversed(prefill_only[prefill_only.index > 0], tp_dir / "attention.csv", "prefill_chunk")
    if not ((attention["n_decode"] > 0) & (attention["prefill_chunk"] == 0)).any() or \
            not ((attention["n_decode"] == 0) & (attention["prefill_chunk"] > 0)).any():
        raise _profile_error(tp_dir / "attention.csv", "needs both decode-only rows (prefill_chunk 0) and "
                             "prefill-only rows (n_decode 0).", field="n_decode",
                             fix="profile attention over the full grid (chunks 0..., n_decode 0...).")

    # per-layer tables are of `profiled_layers` layers; the whole model has `layers`
    scale = layers / profiled_layers
    tokens = dense.index.to_numpy(float)
    layer_us = sum(dense[op].to_numpy() * k for op, k in layer_ops.items())
    once_us = sum(dense[op].to_numpy() for op in ONCE_PER_ITERATION_OPERATORS)
    compute_s = (scale * layer_us + once_us) * 1e-6
    ep = int(s.expert_parallel)
    experts_table = None
    if moe:
        if shape is None:
            raise ConfigError(f"the expert layers of '{model}' need its experts, which are not in the table of "
                              "model shapes.", field="model", fix="add the model to data/models/shapes.json.")
        gathered = tokens * ep  # the group's tokens at a step: ep replicas of the dense grid's sizes
        experts_s = scale * moe_layer_s(tp_dir / "moe.csv", gathered, shape, ep)
        if ep > 1:
            # vLLM's all2all of expert parallelism (allgather, then reduce-scatter): a rank's share x hidden
            experts_s = experts_s + 2 * layers * s.link.all_gather_s(gathered / ep * shape.hidden_size
                                                                     * s.bytes_per_value, ep)
        experts_table = Table1D.build(gathered, experts_s)
    # at TP > 1: two all-reduces per layer (after o_proj and down_proj) and one after the vocab-parallel
    # embedding, each of T x hidden x 2 bytes
    n_all_reduce = (2 * layers + 1) if tp > 1 else 0
    hidden = shape.hidden_size if shape is not None else 0
    all_reduce_s = n_all_reduce * s.link.all_reduce_s(tokens * hidden * s.bytes_per_value, tp)
    dense_table = Table1D.build(tokens, compute_s + all_reduce_s)
    sequences = per_seq.index.to_numpy(float)
    head_s = sum(per_seq[op].to_numpy() for op in PER_SEQUENCE_OPERATORS) * 1e-6
    if tp > 1:
        # the vocab-parallel head gathers its logits (sequences x vocab x 2 bytes) onto one rank
        head_s = head_s + s.link.all_reduce_s(sequences * shape.vocab_size * s.bytes_per_value / 2.0, tp)
    seq_table = Table1D.build(sequences, head_s)
    attn_table = AttentionTable.from_rows(attention["prefill_chunk"], attention["kv_prefill"],
                                          attention["n_decode"], attention["kv_decode"],
                                          attention["time_us"].to_numpy() * 1e-6 * scale)

    skew = ((meta.get("skew_fit") or {}).get("per_tp") or {}).get(tp) or {}
    alpha = float(skew.get("alpha_default", 0.0) or 0.0)
    gpu = str(meta.get("gpu", ""))
    kv_capacity = None
    kv_note = "not estimated (the model's shape is not in data/models/shapes.json)"
    block = int(effective.get("block_size", 16) or 16)
    if shape is not None and gpu in GPU_MEMORY_GIB:
        free = (s.gpu_memory_utilization * GPU_MEMORY_GIB[gpu] * 2**30
                - _weights_per_rank(shape, tp, ep) * s.bytes_per_value - s.activation_reserve_gib * 2**30)
        per_token = shape.kv_bytes_per_token(s.bytes_per_value, tp)
        kv_capacity = int(free // per_token) // block * block
        kv_note = (f"derived, not measured: ({s.gpu_memory_utilization:g} x {GPU_MEMORY_GIB[gpu]:g} GiB - "
                   f"{_weights_per_rank(shape, tp, ep) * s.bytes_per_value / 2**30:.2f} GiB weights per rank - "
                   f"{s.activation_reserve_gib:g} GiB activations) / {per_token} B of KV per token per rank, "
                   f"rounded down to blocks of {block}")
    name = name or _profile_preset_name(model, meta, tp)
    grids = {k: meta.get(k) for k in ("attention_grid",) if k in meta}
    provenance = {
        "method": "piecewise-linear interpolation of measured kernel tables, scaled to the whole model",
        "source": {**LLMSERVINGSIM_SOURCE, "gpu": gpu, "vllm_version": meta.get("vllm_version"),
                   "profiled_at": meta.get("profiled_at"), "model": meta.get("model"),
                   "files": [f"tp{tp}/{f}" for f in PROFILE_FILES] + ["meta.yaml"],
                   "files_relative_to": "the profile folder (not shipped with the workbench)"},
        "era": f"vLLM {meta.get('vllm_version')} kernels measured {str(meta.get('profiled_at', ''))[:10]} "
               "(eager mode, bf16)",
        "mapping": (f"meta.yaml hf_overrides.num_hidden_layers = {profiled_layers}: per-layer times x "
                    f"{layers}/{profiled_layers}; per decoder layer 2 x layernorm + "
                    + " + ".join(op for op in layer_ops if op != "layernorm")
                    + (" + the expert layer (moe.csv)" if moe else "")
                    + " + attention; once per iteration: embedding + final_layernorm (over all tokens) and "
                    "lm_head + sampler (over the sequences: decodes + prompt chunks)"),
        **({"experts": (f"moe.csv per layer: {shape.num_experts} experts, top {shape.num_experts_per_tok}, "
                        f"expert parallelism over {ep} data-parallel replicas each bringing as many tokens "
                        "(lockstep and its waits for the slowest replica are not modelled); active experts "
                        "from uniform routing"
                        + (f"; allgather + reduce-scatter of tokens x {shape.hidden_size} x "
                           f"{s.bytes_per_value} B per expert layer over {s.link.describe()}" if ep > 1 else ""))}
           if moe else {}),
        "layers": {"value": layers, "from": "--layers" if shape is None or layers != shape.num_hidden_layers
                   else f"data/models/shapes.json ({shape.source})"},
        "tp": (f"tp{tp}/ holds per-rank kernel times measured on one GPU with one rank's widths, without "
               "collectives" + (f"; added: {n_all_reduce} all-reduces per iteration (2 per layer + 1 after the "
                                 f"embedding) of tokens x {hidden} x {s.bytes_per_value} B and a logits gather "
                                 f"over {s.link.describe()}" if tp > 1 else "")),
        "link": s.link.describe() if tp > 1 else "none (TP 1)",
        "link_source": s.link.source if tp > 1 else "none (TP 1)",
        **({"link_figures": s.link.figures()} if tp > 1 else {}),
        "attention": ("measured attention.csv (no first-principles stand-in), linear on each axis; decodes at "
                      f"their mean context; skew correction alpha = {alpha:g} (meta.yaml skew_fit.per_tp."
                      f"{tp}.alpha_default; the bucket table is not used) when the longest decode context is "
                      "given; further prompt chunks add their attention above the kernel's fixed cost"),
        "grids": grids,
        "extrapolation": (f"beyond the measured {int(tokens.max())} tokens and {int(sequences.max())} sequences "
                          "the tables continue with the slope of their top quarter; attention beyond its grid "
                          "from the last two points"),
        "not_included": ("CPU time between iterations (scheduling, input preparation, detokenisation) and the "
                         "per-request front end: iteration_overhead_s and frontend_overhead_s are 0 here"),
        "kv_capacity_tokens": kv_note,
        "block_size": block,
        "function": "workbench.costmodel.calibrate.fit_profile",
        "script": "scripts/make_presets.py",
    }
    description = (f"{model} on {tp} x {gpu or 'GPU'} (TP {tp}): vLLM {meta.get('vllm_version')} kernel times "
                   "interpolated from an operator profile.")
    draft = ProfiledCostModel(dense=dense_table, per_sequence=seq_table, attention=attn_table, name=name,
                              description=description, kv_capacity_tokens=kv_capacity, skew_alpha=alpha,
                              provenance=provenance,
                              experts=experts_table, expert_parallel=ep)
    bound, check = _bound_model(draft, name, attention, name=f"{name}-bound")
    provenance["bound"] = (
        "linear lower envelope (linear program, HiGHS; coefficients >= 0) below the profiled model on the "
        f"grid: exclusive prefills of 1-{int(tokens.max())} tokens (against dense + the cheapest head + the "
        "attention kernel's fixed cost, so it holds for any number of prompts), decode-only iterations (1-"
        f"{int(sequences.max())} requests x every measured context) and mixed iterations of one chunk (the "
        "rule max(a_p, a_d) + b_d n + c_d (C + Q) + b_p P, C the decodes' context, Q the chunks' cached "
        "tokens, P their new tokens); then checked on 3000 seeded random iterations of up to 3 chunks of "
        f"1-{int(attention['prefill_chunk'].max())} tokens over 0-4096 cached tokens beside 0-"
        f"{int(sequences.max())} decodes of 16-{int(attention['kv_decode'].max())} tokens each "
        f"(worst ratio bound/model there {check['worst_random_ratio']:.6f}, on the grid "
        f"{check['worst_ratio_before_scaling']:.9f}" + (", so all coefficients scaled down by that ratio and a "
        "1e-6 margin" if check["scaled"] else "") + f"; {check['rows']} rows in all). Valid on "
        "that domain; outside it (longer chunks or contexts) the tables extrapolate and no check was made")
    cost_model = ProfiledCostModel(dense=dense_table, per_sequence=seq_table, attention=attn_table, name=name,
                                   description=description, kv_capacity_tokens=kv_capacity, skew_alpha=alpha,
                                   bound=bound, provenance=provenance,
                              experts=experts_table, expert_parallel=ep)

    report = _profile_report(cost_model, dense, dense_table, per_seq, seq_table, attention, scale, s, name,
                             provenance, kv_capacity)
    return cost_model, report


def _profile_preset_name(model: str, meta: dict[str, Any], tp: int) -> str:
    import re

    # 'meta-llama/Llama-3.1-8B' -> 'llama31-8b', as the llama2-70b-* presets are named
    slug = re.sub(r"-(?=\d)", "", model.split("/")[-1].lower(), count=1).replace(".", "")
    hardware = str(meta.get("hardware", "gpu")).lower()
    return f"{slug}-{hardware}-tp{tp}"


def _profile_report(model, dense, dense_table, per_seq, seq_table, attention, scale, s, name, provenance,
                    kv_capacity) -> dict[str, Any]:
    report: dict[str, Any] = {"preset": name, "terms": {}}
    report["terms"]["dense"] = _term_quality([(np.array(dense_table.keys), np.array(dense_table.values_s))])
    report["terms"]["per_sequence"] = _term_quality([(np.array(seq_table.keys), np.array(seq_table.values_s))])
    pairs = []
    for _, part in attention.groupby(["prefill_chunk", "n_decode", "kv_prefill"]):
        part = part.sort_values("kv_decode")
        pairs.append((part["kv_decode"].to_numpy(float), part["time_us"].to_numpy(float)))
    for _, part in attention[attention["prefill_chunk"] == 0].groupby("kv_decode"):
        part = part.sort_values("n_decode")
        pairs.append((part["n_decode"].to_numpy(float), part["time_us"].to_numpy(float)))
    report["terms"]["attention"] = _term_quality(pairs)
    report["terms"]["dense"]["note"] = "leave-one-out along tokens"
    report["terms"]["per_sequence"]["note"] = "leave-one-out along sequences"
    report["terms"]["attention"]["note"] = "leave-one-out along kv_decode in every slice and along n_decode (decode-only)"

    # the linear model of MODEL.md section 2 fitted to the same profile (for the closed-form engine)
    rows = []
    for T in dense_table.keys:
        if T >= 16:
            rows.append({"kind": "prefill", "batch_size": 1, "tokens": int(T), "num_tokens": int(T),
                         "time_s": model.prefill_time(int(T))})
    for n in [int(k) for k in seq_table.keys]:
        for ctx in s.decode_contexts:
            rows.append({"kind": "decode", "batch_size": n, "tokens": n * ctx, "num_tokens": n,
                         "context_per_request": ctx, "time_s": model.decode_time(n, n * ctx)})
    profile = pd.DataFrame(rows)
    held = _heldout_mask(profile, s.heldout_every)
    train = fit(profile[~held], name=name).model
    full = fit(profile, name=f"{name}-linear")
    linear = full.model
    pred_held = _predict(train, profile)
    rel_held = np.abs(pred_held - profile["time_s"]) / profile["time_s"]
    pred = _predict(linear, profile)
    rel = np.abs(pred - profile["time_s"]) / profile["time_s"]
    lin: dict[str, Any] = {"coefficients_ms": {k: v * 1e3 for k, v in linear.coefficients().items()}}
    for kind in ("prefill", "decode"):
        m = (profile["kind"] == kind).to_numpy()
        lin[f"r2_{kind}"] = _r2(profile.loc[m, "time_s"].to_numpy(), pred[m])
        lin[f"mean_rel_error_{kind}"] = float(rel[m].mean())
        lin[f"max_rel_error_{kind}"] = float(rel[m].max())
        lin[f"heldout_mean_rel_error_{kind}"] = float(rel_held[m & held].mean())
        lin[f"heldout_max_rel_error_{kind}"] = float(rel_held[m & held].max())
    report["linear"] = lin
    report["linear_model"] = LinearCostModel(
        **linear.coefficients(), name=f"{name}-linear",
        description=f"{model.description} Linear fit (MODEL.md section 2) of the profiled model.",
        kv_capacity_tokens=kv_capacity,
        provenance={**provenance, "method": "least-squares fit (coefficients >= 0) of the linear model to "
                    "iterations timed by the profiled model of the same profile",
                    "rows": (f"prefill: one prompt of each measured token count 16-{int(max(dense_table.keys))}; "
                             f"decode: every measured sequence count x contexts {list(s.decode_contexts)} per "
                             "request (balanced)"),
                    "heldout": (f"every {s.heldout_every}th distinct token count / batch size, from the 3rd, left "
                                "out of a second fit and predicted"),
                    "fit": {k: v for k, v in lin.items() if k != "coefficients_ms"}})
    bound = model.bound_model()
    b_pre = bound.prefill_time(profile.loc[profile["kind"] == "prefill", "tokens"])
    b_dec = bound.decode_time(profile.loc[profile["kind"] == "decode", "batch_size"],
                              profile.loc[profile["kind"] == "decode", "tokens"])
    report["bound"] = {"coefficients_ms": {k: v * 1e3 for k, v in bound.coefficients().items()},
                       "prefill_mean_ratio": float(np.mean(b_pre / profile.loc[profile["kind"] == "prefill",
                                                                                "time_s"])),
                       "decode_mean_ratio": float(np.mean(b_dec / profile.loc[profile["kind"] == "decode",
                                                                               "time_s"]))}
    report["sanity_ms"] = {
        "decode_100_requests_1000_context": model.iteration_time(100, 100_000) * 1e3,
        "decode_100_requests_1000_context_max_2000": model.iteration_time(
            100, 100_000, decode_max_context_tokens=2000) * 1e3,
        "mixed_2048_chunk_alone": model.iteration_time(0, 0, [2048], [0]) * 1e3,
        "mixed_100_decodes_1000_context_plus_1948_chunk": model.iteration_time(100, 100_000, [1948], [0]) * 1e3,
        "mixed_100_decodes_1000_context_plus_1948_chunk_over_2048_cached": model.iteration_time(
            100, 100_000, [1948], [2048]) * 1e3,
    }
    report["rows"] = profile.assign(predicted_s=pred, heldout=held)
    return report
