"""The cost model from first principles: a roofline derivation anyone can check.

A transformer forward pass on a tensor-parallel node is limited by three
resources, and each coefficient of :class:`~workbench.costmodel.linear.LinearCostModel`
is the time one of them spends on one unit of work:

* **HBM bandwidth** -- every iteration streams all weights once (the same bytes
  whether the batch holds 1 request or 200), and every decode step reads each
  request's KV cache;
* **tensor-core FLOP/s** -- every token processed costs ``2 x params`` FLOPs
  (one multiply and one add per weight), plus attention FLOPs;
* **NVLink** -- tensor parallelism all-reduces the activations twice per layer
  (after the attention output projection and after the MLP); each all-reduce
  costs a fixed latency plus bytes over the link.

Summing the time of each resource (rather than taking the maximum, which is the
strict roofline) keeps the model linear, which is what the scheduling bounds of
MODEL.md section 3 need; it overestimates iterations near the point where
weight streaming and compute take equally long.  The reader can see every
intermediate number in :func:`roofline_table`.

Every hardware and model number carries its source in ``sources``; every
efficiency (the share of a peak that real kernels reach) is a parameter with a
stated default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from workbench.costmodel.linear import LinearCostModel
from workbench.errors import ConfigError

GiB = 2**30


@dataclass(frozen=True)
class TransformerSpec:
    """The shapes of a decoder-only transformer (LLaMA family: gated MLP, RoPE, no biases)."""

    name: str
    n_params: float            #: published parameter count (all weights)
    n_layers: int
    d_model: int               #: hidden size
    n_heads: int               #: query heads
    n_kv_heads: int            #: key/value heads (< n_heads with grouped-query attention)
    head_dim: int
    d_ffn: int                 #: MLP inner size
    vocab_size: int
    bytes_per_param: int = 2   #: fp16 / bf16 weights
    bytes_per_kv: int = 2      #: fp16 / bf16 KV cache
    bytes_per_activation: int = 2
    tied_embeddings: bool = False
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def architecture_params(self) -> float:
        """Parameter count recomputed from the shapes (a check of ``n_params``)."""
        d, kv = self.d_model, self.n_kv_heads * self.head_dim
        attention = d * self.n_heads * self.head_dim * 2 + d * kv * 2      # Wq, Wo; Wk, Wv
        mlp = 3 * d * self.d_ffn                                            # gate, up, down
        norms = 2 * d
        embeddings = self.vocab_size * d * (1 if self.tied_embeddings else 2)
        return float(self.n_layers * (attention + mlp + norms) + embeddings + d)

    @property
    def matmul_params(self) -> float:
        """Weights that multiply every token: all but the input embedding table (a lookup)."""
        return self.n_params - (0 if self.tied_embeddings else self.vocab_size * self.d_model)

    def kv_bytes_per_token(self, tp: int = 1) -> float:
        """KV-cache bytes one context token occupies on ONE GPU of a ``tp``-way group.

        K and V (2) per layer, for the KV heads that GPU holds: heads are split
        across the group, and replicated when there are fewer KV heads than GPUs.
        """
        heads_per_gpu = math.ceil(self.n_kv_heads / tp)
        return float(2 * self.n_layers * heads_per_gpu * self.head_dim * self.bytes_per_kv)

    def prefill_attention_flops(self, prompt_tokens: float) -> float:
        """Attention FLOPs (QK^T and AV, all layers, all heads) of one causal prompt.

        Token t attends to t keys; a dot product and a weighted sum each cost
        2 x head_dim FLOPs per (query, key) pair, so a prompt of l tokens costs
        ``4 head_dim sum_{t=1..l} t = 2 head_dim l (l+1)`` per head and layer.
        """
        l = float(prompt_tokens)
        return 2.0 * self.n_layers * self.n_heads * self.head_dim * l * (l + 1.0)

    def decode_attention_flops_per_context_token(self) -> float:
        """Attention FLOPs one decode step spends per token of context it reads."""
        return 4.0 * self.n_layers * self.n_heads * self.head_dim


@dataclass(frozen=True)
class HardwareSpec:
    """One tensor-parallel group of identical GPUs in one node (peaks per GPU)."""

    name: str
    n_gpus: int
    peak_flops: float               #: dense fp16/bf16 tensor-core FLOP/s per GPU
    hbm_bandwidth: float            #: bytes/s per GPU
    hbm_bytes: float                #: memory per GPU
    allreduce_latency_s: float      #: fixed cost of one small-message all-reduce over the group
    link_bandwidth: float           #: NVLink bytes/s per GPU, one direction
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def with_gpus(self, n_gpus: int) -> HardwareSpec:
        if n_gpus < 1:
            raise ConfigError(f"a GPU group needs at least one GPU, got {n_gpus}.", field="n_gpus")
        return replace(self, name=f"{self.name.split(' x')[0]} x{n_gpus}", n_gpus=n_gpus)


LLAMA_65B = TransformerSpec(
    name="LLaMA-65B", n_params=65.2e9, n_layers=80, d_model=8192, n_heads=64, n_kv_heads=64,
    head_dim=128, d_ffn=22016, vocab_size=32000,
    sources={
        "shapes": "Touvron et al., 'LLaMA: Open and Efficient Foundation Language Models' (2023), Table 2: "
                  "65.2B parameters, dimension 8192, 64 heads, 80 layers; FFN size 22016 and vocabulary 32000 "
                  "from the released model configuration (Hugging Face LlamaConfig of llama-65b).",
        "attention": "multi-head attention: 64 KV heads = 64 query heads, head_dim = 8192/64 = 128.",
        "precision": "fp16 weights and KV cache (2 bytes), as served by vLLM by default.",
    },
)

LLAMA2_70B = TransformerSpec(
    name="Llama-2-70B", n_params=68.98e9, n_layers=80, d_model=8192, n_heads=64, n_kv_heads=8,
    head_dim=128, d_ffn=28672, vocab_size=32000,
    sources={
        "shapes": "meta-llama/Llama-2-70b-hf config.json: hidden 8192, 80 layers, 64 heads, 8 KV heads "
                  "(grouped-query attention), intermediate 28672, vocab 32000; 68.98e9 parameters "
                  "recomputed from these shapes. Vidur's mlp.csv rows carry n_head=64, n_kv_head=8, "
                  "n_embd=8192, n_expanded_embd=28672 (vocab padded to 32768 there).",
        "precision": "fp16 weights and KV cache (2 bytes).",
    },
)

A100_80GB_X8 = HardwareSpec(
    name="A100-SXM4-80GB x8", n_gpus=8, peak_flops=312e12, hbm_bandwidth=2.039e12,
    hbm_bytes=80 * GiB, allreduce_latency_s=25e-6, link_bandwidth=300e9,
    sources={
        "peak_flops": "NVIDIA A100 datasheet: 312 TFLOP/s dense FP16/BF16 tensor core (624 with sparsity).",
        "hbm_bandwidth": "NVIDIA A100 80GB SXM datasheet: HBM2e, 2,039 GB/s.",
        "hbm_bytes": "80 GB card, reported by nvidia-smi as 81920 MiB = 80 GiB.",
        "link_bandwidth": "third-generation NVLink: 600 GB/s per GPU in both directions together, "
                          "so 300 GB/s each way (DGX A100, NVSwitch: every pair at full rate).",
        "allreduce_latency_s": "assumed 25 us for a small-message NCCL all-reduce across 8 GPUs on NVSwitch; "
                               "the Vidur profile network/a100_dgx/all_reduce.csv measures 0.025-0.04 ms "
                               "for 10-60 KB at 8 workers.",
    },
)

H100_80GB_X8 = HardwareSpec(
    name="H100-SXM5-80GB x8", n_gpus=8, peak_flops=989.4e12, hbm_bandwidth=3.35e12,
    hbm_bytes=80 * GiB, allreduce_latency_s=25e-6, link_bandwidth=450e9,
    sources={
        "peak_flops": "NVIDIA H100 SXM5 datasheet: 989.4 TFLOP/s dense FP16/BF16 tensor core (1979 with sparsity).",
        "hbm_bandwidth": "NVIDIA H100 SXM5 datasheet: HBM3, 3.35 TB/s.",
        "hbm_bytes": "80 GB card (80 GiB usable as reported by the driver, approximately).",
        "link_bandwidth": "fourth-generation NVLink: 900 GB/s per GPU both directions, 450 GB/s each way.",
        "allreduce_latency_s": "assumed 25 us, as for the A100 node (Vidur network/h100_dgx/all_reduce.csv: "
                               "0.02-0.04 ms for small messages at 8 workers).",
    },
)


#: Defaults of the free parameters of the derivation, each with why.
ROOFLINE_DEFAULTS: dict[str, tuple[float, str]] = {
    "matmul_efficiency": (0.6, "share of peak FLOP/s large fp16 GEMMs reach in practice (cuBLAS on A100: 60-70%)"),
    "bandwidth_efficiency": (0.8, "share of peak HBM bandwidth a streaming kernel reaches "
                                  "(80-90% in STREAM-like tests)"),
    "link_efficiency": (0.8, "share of NVLink bandwidth NCCL achieves (nccl-tests bus bandwidth ~230-240 of 300 GB/s)"),
    "iteration_overhead_s": (1e-3, "CPU work per iteration: scheduling, sampling, kernel launches "
                                   "(CUDA graphs assumed)"),
    "typical_prompt_tokens": (128.0, "prompt length at which the attention FLOPs per prompt token are evaluated"),
    "memory_utilization": (0.90, "share of GPU memory the server may use (vLLM gpu_memory_utilization default)"),
    "activation_reserve_bytes": (2.0 * GiB, "per GPU, peak activations and workspace of one forward pass"),
}


_PARAMETER_LABELS = {
    "matmul_efficiency": "matmul efficiency (share of peak FLOP/s)",
    "bandwidth_efficiency": "HBM bandwidth efficiency",
    "link_efficiency": "NVLink efficiency",
    "iteration_overhead_s": "fixed CPU overhead per iteration",
    "typical_prompt_tokens": "typical prompt length",
    "memory_utilization": "usable share of GPU memory",
    "activation_reserve_bytes": "activation and workspace reserve per GPU",
}


def _params(overrides: dict[str, float]) -> dict[str, float]:
    unknown = set(overrides) - set(ROOFLINE_DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown roofline parameter(s) {', '.join(sorted(unknown))}.",
                          field=sorted(unknown)[0], fix=f"use {', '.join(ROOFLINE_DEFAULTS)}.")
    values = {key: default for key, (default, _) in ROOFLINE_DEFAULTS.items()}
    values.update({key: float(value) for key, value in overrides.items()})
    for key, value in values.items():
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"must be finite and >= 0, got {value!r}.", field=key)
    for key in ("matmul_efficiency", "bandwidth_efficiency", "link_efficiency", "memory_utilization"):
        if not 0 < values[key] <= 1:
            raise ConfigError(f"must be in (0, 1], got {values[key]!r}.", field=key)
    return values


def _derive(model: TransformerSpec, hw: HardwareSpec, **overrides: float) -> list[dict[str, Any]]:
    """Every step of the derivation, in order: one dict per quantity."""
    p = _params(overrides)
    G = hw.n_gpus
    rows: list[dict[str, Any]] = []
    v: dict[str, float] = {}

    def put(symbol: str, quantity: str, value: float, unit: str, how: str) -> float:
        v[symbol] = float(value)
        rows.append({"symbol": symbol, "quantity": quantity, "value": float(value), "unit": unit, "how": how})
        return float(value)

    # -- inputs ---------------------------------------------------------------
    put("N", "parameters (published)", model.n_params, "params", model.sources.get("shapes", "given"))
    put("N_arch", "parameters recomputed from the shapes", model.architecture_params(), "params",
        "L (2 d H dh + 2 d Hkv dh + 3 d d_ffn + 2 d) + 2 V d + d")
    put("N_mm", "parameters that multiply every token", model.matmul_params, "params",
        "N - V d (the input embedding is a lookup, the output head is a matmul)")
    put("G", "GPUs (tensor-parallel degree)", G, "GPUs", hw.name)
    put("F_peak", "peak dense fp16 FLOP/s per GPU", hw.peak_flops, "FLOP/s", hw.sources.get("peak_flops", ""))
    put("B_hbm", "HBM bandwidth per GPU", hw.hbm_bandwidth, "B/s", hw.sources.get("hbm_bandwidth", ""))
    put("B_link", "NVLink bandwidth per GPU, one direction", hw.link_bandwidth, "B/s",
        hw.sources.get("link_bandwidth", ""))
    put("lat_ar", "latency of one all-reduce", hw.allreduce_latency_s, "s", hw.sources.get("allreduce_latency_s", ""))
    for key, (_, why) in ROOFLINE_DEFAULTS.items():
        unit = {"iteration_overhead_s": "s", "typical_prompt_tokens": "tokens",
                "activation_reserve_bytes": "B"}.get(key, "fraction")
        put(key, _PARAMETER_LABELS[key], p[key], unit, ("default: " if key not in overrides else "set: ") + why)

    # -- weights: streamed from HBM once per iteration --------------------------
    put("W_gpu", "weight bytes per GPU", model.n_params * model.bytes_per_param / G, "B",
        f"N x {model.bytes_per_param} B / G (weights split evenly by tensor parallelism)")
    put("W_stream_gpu", "weight bytes each GPU streams per iteration",
        model.matmul_params * model.bytes_per_param / G, "B", "N_mm x bytes / G")
    put("B_eff", "effective HBM bandwidth per GPU", hw.hbm_bandwidth * p["bandwidth_efficiency"], "B/s",
        "B_hbm x bandwidth efficiency")
    put("t_weights", "time to stream the weights once", v["W_stream_gpu"] / v["B_eff"], "s", "W_stream_gpu / B_eff")

    # -- tensor-parallel all-reduces ---------------------------------------------
    n_ar = 2 * model.n_layers if G > 1 else 0
    put("n_ar", "all-reduces per forward pass", n_ar, "all-reduces",
        "2 per layer (after attention output projection and after MLP down projection); 0 when G = 1")
    put("t_ar_fixed", "all-reduce latency per iteration", n_ar * hw.allreduce_latency_s, "s", "n_ar x lat_ar")
    ring = 2.0 * (G - 1) / G
    ar_bytes = model.d_model * model.bytes_per_activation
    put("ar_bytes_tok", "all-reduce payload per token", ar_bytes, "B", "d x 2 B (one fp16 hidden vector)")
    put("t_ar_tok", "all-reduce transfer time per token per iteration",
        n_ar * ring * ar_bytes / (hw.link_bandwidth * p["link_efficiency"]), "s",
        "n_ar x 2(G-1)/G x ar_bytes_tok / (B_link x link efficiency) (ring all-reduce)")

    # -- compute: FLOPs per token ----------------------------------------------
    put("C_eff", "effective FLOP/s per GPU", hw.peak_flops * p["matmul_efficiency"], "FLOP/s",
        "F_peak x matmul efficiency")
    put("F_tok", "matmul FLOPs per token", 2.0 * model.matmul_params, "FLOP", "2 N_mm (one multiply-add per weight)")
    put("t_flops_tok", "matmul time per token", v["F_tok"] / (G * v["C_eff"]), "s", "F_tok / (G C_eff)")
    Lp = p["typical_prompt_tokens"]
    put("F_attn_tok", "attention FLOPs per prompt token at the typical prompt length",
        model.prefill_attention_flops(Lp) / Lp if Lp > 0 else 0.0, "FLOP",
        "2 L H dh (l+1) (causal QK^T and AV, averaged over the prompt's tokens)")
    put("t_attn_tok", "attention time per prompt token", v["F_attn_tok"] / (G * v["C_eff"]), "s",
        "F_attn_tok / (G C_eff)")

    # -- KV cache -----------------------------------------------------------------
    put("kv_tok", "KV-cache bytes per context token (whole group)", model.kv_bytes_per_token(1), "B",
        "2 (K and V) x L x Hkv x dh x 2 B")
    put("kv_tok_gpu", "KV-cache bytes per context token on one GPU", model.kv_bytes_per_token(G), "B",
        "2 x L x ceil(Hkv/G) x dh x 2 B")
    put("t_kv_tok", "time to read (or write) one context token's KV cache", v["kv_tok_gpu"] / v["B_eff"], "s",
        "kv_tok_gpu / B_eff")
    put("t_kv_flops_tok", "decode attention compute per context token",
        model.decode_attention_flops_per_context_token() / (G * v["C_eff"]), "s",
        "4 L H dh / (G C_eff): smaller than t_kv_tok, so decode attention is bandwidth-bound")

    # -- the five coefficients -----------------------------------------------------
    fixed = v["t_weights"] + v["t_ar_fixed"] + p["iteration_overhead_s"]
    put("a_d", "decode: fixed time per iteration", fixed, "s", "t_weights + t_ar_fixed + iteration overhead")
    put("b_d", "decode: time per request in the batch", v["t_flops_tok"] + v["t_ar_tok"] + v["t_kv_tok"], "s",
        "t_flops_tok + t_ar_tok + t_kv_tok (the new token's matmuls, all-reduce bytes, KV write)")
    put("c_d", "decode: time per context token read", max(v["t_kv_tok"], v["t_kv_flops_tok"]), "s",
        "max(t_kv_tok, t_kv_flops_tok)")
    put("a_p", "prefill: fixed time per stage", fixed, "s", "t_weights + t_ar_fixed + iteration overhead")
    put("b_p", "prefill: time per prompt token",
        v["t_flops_tok"] + v["t_attn_tok"] + v["t_ar_tok"] + v["t_kv_tok"], "s",
        "t_flops_tok + t_attn_tok + t_ar_tok + t_kv_tok (KV write)")

    # -- memory: how many tokens of KV cache fit ------------------------------------
    usable = hw.hbm_bytes * p["memory_utilization"] - v["W_gpu"] - p["activation_reserve_bytes"]
    put("M_kv_gpu", "memory left for the KV cache per GPU", usable, "B",
        "HBM x memory utilization - W_gpu - activation reserve")
    if usable <= 0:
        raise ConfigError(f"{model.name} does not fit on {hw.name}: {usable / GiB:.1f} GiB left per GPU for "
                          "the KV cache.", field="n_gpus", fix="use more GPUs or a smaller model.")
    put("kv_capacity_tokens", "KV-cache capacity", math.floor(usable / v["kv_tok_gpu"]), "tokens",
        "floor(M_kv_gpu / kv_tok_gpu)")
    return rows


def roofline_table(model: TransformerSpec = LLAMA_65B, hw: HardwareSpec = A100_80GB_X8,
                   **params: float) -> pd.DataFrame:
    """Every intermediate quantity of the derivation with its unit and formula, in order.

    ``params`` override :data:`ROOFLINE_DEFAULTS`.  Columns: ``symbol``,
    ``quantity``, ``value``, ``unit``, ``how`` (formula or source).
    """
    return pd.DataFrame(_derive(model, hw, **params)).set_index("symbol")


def kv_capacity_tokens(model: TransformerSpec = LLAMA_65B, hw: HardwareSpec = A100_80GB_X8,
                       **params: float) -> int:
    """Tokens of KV cache that fit beside the weights (see :func:`roofline_table`)."""
    rows = {row["symbol"]: row["value"] for row in _derive(model, hw, **params)}
    return int(rows["kv_capacity_tokens"])


def roofline_cost_model(model: TransformerSpec = LLAMA_65B, hw: HardwareSpec = A100_80GB_X8, *,
                        name: str | None = None, **params: float) -> LinearCostModel:
    """The linear cost model of ``model`` on ``hw`` from first principles.

    ``a_p = a_d`` = weights streamed once + all-reduce latencies + iteration
    overhead; ``b_p``, ``b_d`` = per-token matmul FLOPs (+ attention for a
    prompt token) + all-reduce bytes + KV write; ``c_d`` = KV bytes per context
    token over HBM bandwidth.  ``params`` override :data:`ROOFLINE_DEFAULTS`.
    """
    rows = _derive(model, hw, **params)
    values = {row["symbol"]: row["value"] for row in rows}
    assumptions = {row["symbol"]: row["how"] for row in rows if row["symbol"] in ROOFLINE_DEFAULTS}
    return LinearCostModel(
        a_p=values["a_p"], b_p=values["b_p"], a_d=values["a_d"], b_d=values["b_d"], c_d=values["c_d"],
        name=name or f"{model.name} on {hw.name} (roofline)",
        description=f"{model.name} on {hw.name}, derived from datasheet peaks and stated efficiencies.",
        kv_capacity_tokens=int(values["kv_capacity_tokens"]),
        provenance={
            "method": "roofline, first principles",
            "model": {"name": model.name, **model.sources},
            "hardware": {"name": hw.name, **hw.sources},
            "parameters": {key: values[key] for key in ROOFLINE_DEFAULTS},
            "parameter_reasons": assumptions,
        },
    )
