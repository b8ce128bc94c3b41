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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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
            raise ConfigError(f"the Vidur {kind} profile '{path}' does not exist.", field="profiling_dir",
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
