"""Profile your own device: per-layer operator times of any model shape, with no weights to download.

``workbench profile`` builds ONE decoder layer of a model (plus its embedding,
output head and sampler) from the model's configuration, with random weights
(timing does not depend on the values), and measures on the local device the
time of each operator over a grid of batch shapes.  It writes the layout of
LLMServingSim's profiler (casys-kaist/LLMServingSim, the one
``../shared/data/llmservingsim/profiles/<GPU>/<MODEL>/`` holds), which
``workbench.costmodel.calibrate`` reads:

* ``tp<N>/dense.csv`` (``layer,tokens,time_us``): the non-attention operators
  of one decoder layer (:data:`DENSE_OPERATORS`) against the number of tokens
  in the iteration; ``embedding`` and ``final_layernorm`` run once per
  iteration, the others once per layer.
* ``tp<N>/attention.csv`` (``prefill_chunk,kv_prefill,n_decode,kv_decode,time_us``):
  the attention of one layer for an iteration holding a prefill chunk of
  ``prefill_chunk`` new tokens over ``kv_prefill`` cached tokens and
  ``n_decode`` decodes over ``kv_decode`` cached tokens each, the write of the
  new tokens' K and V into the cache included.
* ``tp<N>/per_sequence.csv`` (``layer,sequences,time_us``): ``lm_head`` (the
  last token of each sequence) and ``sampler``, once per iteration.
* ``meta.yaml``: the device, the library versions, the model shape, the dtype,
  the grid, how the times were taken and which grid points were left out.

What is built is a Llama-style decoder layer (RMSNorm with the residual add,
fused QKV projection, rotary embedding, grouped-query attention, fused
gate/up projection, the configuration's activation times the up projection,
down projection), the layer every dense model of ``data/models/shapes.json``
has.  At tensor-parallel degree N the weights take ONE rank's shard shapes
(heads, key/value heads, MLP width and vocabulary divided by N; key/value
heads replicated when there are fewer than N) and no collective runs, as in
LLMServingSim's profiler: an iteration at TP > 1 adds its all-reduces, which
the cost model adds separately.

Differences from the vLLM-measured profile, stated so the two can be compared:
attention is PyTorch's ``scaled_dot_product_attention`` over a contiguous KV
cache (one call for the prefill chunk, bottom-right causal, one for the
decodes), not vLLM's paged FlashAttention with one varlen kernel for the
mixed batch; projections are plain ``torch.nn.functional.linear``.

Each time is the median of ``repetitions`` runs, taken in ``rounds`` passes
over the whole grid (a burst of load from elsewhere on the machine then hits
one pass of a point, not all its runs), each pass running the point
``warmup`` times first; the device is synchronised before and after every
run (``torch.cuda.synchronize``).  On CUDA each operator is by default
captured into a CUDA graph and its replay timed between CUDA events (the
kernels' own time, without the CPU's launch gaps; ``timing="events"`` times
the eager call instead), and the norm, rotary and activation operators are
fused by ``torch.compile`` (``kernels="compiled"``), as vLLM runs each as one
kernel.  On a CPU, ``time.perf_counter`` around the eager call.

Nothing here imports torch or transformers at module level: they are the
optional extra ``profile`` and are imported inside the functions that need
them, so ``import workbench`` never needs them.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from workbench._paths import missing_because
from workbench.errors import ConfigError

#: The columns of each file, as in LLMServingSim's profiles.
COLUMNS = {
    "dense": ("layer", "tokens", "time_us"),
    "attention": ("prefill_chunk", "kv_prefill", "n_decode", "kv_decode", "time_us"),
    "per_sequence": ("layer", "sequences", "time_us"),
}
#: Operators of dense.csv, with LLMServingSim's names.
DENSE_OPERATORS = ("embedding", "layernorm", "qkv_proj", "rotary_emb", "o_proj", "gate_up_proj", "act_fn",
                   "down_proj", "final_layernorm")
#: Operators of per_sequence.csv.
PER_SEQUENCE_OPERATORS = ("lm_head", "sampler")
#: --dtype choices and their bytes per element.
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
DEVICES = ("cuda", "cpu")
#: --kernels choices: how the elementwise operators (norm, rotary, activation) run.
KERNELS = ("compiled", "eager")
#: --timing choices per device (see _Timer).
TIMINGS = {"cuda": ("graphs", "events"), "cpu": ("wall",)}
#: Fraction of the device's memory an engine lets itself use (vLLM's gpu_memory_utilization default).
MEMORY_UTILIZATION = 0.9
INSTALL_HINT = "pip install 'llm-sched-workbench[profile]' (for a CPU-only machine: pip install torch==2.13.0 first)"


def _require_extra() -> None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"the 'profile' extra is not installed ({exc.name} is missing).", field="profile",
                          fix=INSTALL_HINT + ".") from None


# --------------------------------------------------------------------------------------------- model shapes
@dataclass(frozen=True)
class ProfileShape:
    """The sizes of a dense decoder-only model (config.json's field names), and what its layer needs beyond them.

    Built from a config.json or from ``workbench.costmodel.shapes.model_shape`` (the shipped table); the
    activation, norm epsilon and rotary base default to Llama's where the source does not give them (they
    change no operator's cost)."""

    name: str
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 131072

    @classmethod
    def from_config(cls, config: Mapping[str, Any], name: str) -> ProfileShape:
        """From a config.json dict or a ``shapes.model_shape`` entry (``layers`` is taken for num_hidden_layers)."""
        cfg = dict(config)
        if "num_hidden_layers" not in cfg and "layers" in cfg:
            cfg["num_hidden_layers"] = cfg["layers"]
        for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size"):
            if cfg.get(key) is None:
                raise ConfigError(f"the configuration of '{name}' has no {key}.", field=key,
                                  fix="give a config.json of a decoder-only model (Hugging Face field names).")
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        head_dim = cfg.get("head_dim") or hidden // heads
        rope = cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta") or 10000.0
        shape = cls(name=name, num_hidden_layers=int(cfg["num_hidden_layers"]), hidden_size=hidden,
                    num_attention_heads=heads, num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
                    head_dim=int(head_dim), intermediate_size=int(cfg.get("intermediate_size") or 4 * hidden),
                    vocab_size=int(cfg["vocab_size"]), tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                    hidden_act=str(cfg.get("hidden_act") or "silu"), rms_norm_eps=float(cfg.get("rms_norm_eps") or 1e-5),
                    rope_theta=float(rope), max_position_embeddings=int(cfg.get("max_position_embeddings") or 131072))
        for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                    "intermediate_size", "vocab_size"):
            if getattr(shape, key) <= 0:
                raise ConfigError(f"{key} of '{name}' is {getattr(shape, key)}.", field=key, fix="give a positive size.")
        if shape.num_attention_heads % shape.num_key_value_heads:
            raise ConfigError(f"'{name}' has {heads} attention heads, not a multiple of its "
                              f"{shape.num_key_value_heads} key/value heads.", field="num_key_value_heads")
        return shape

    def shard(self, tp: int) -> RankShape:
        """One tensor-parallel rank's sizes (vLLM's split: key/value heads replicated when fewer than ``tp``)."""
        for key, value in (("num_attention_heads", self.num_attention_heads),
                           ("intermediate_size", self.intermediate_size)):
            if value % tp:
                raise ConfigError(f"{key} = {value} of '{self.name}' does not divide by --tp {tp}.", field="--tp",
                                  fix="use a tensor-parallel degree that divides the heads and the MLP width.")
        kv = self.num_key_value_heads
        if kv >= tp and kv % tp:
            raise ConfigError(f"num_key_value_heads = {kv} of '{self.name}' does not divide by --tp {tp}.",
                              field="--tp", fix="use a tensor-parallel degree that divides the key/value heads.")
        return RankShape(tp=tp, heads=self.num_attention_heads // tp, kv_heads=max(1, kv // tp),
                         head_dim=self.head_dim, hidden=self.hidden_size, intermediate=self.intermediate_size // tp,
                         vocab=-(-self.vocab_size // tp), vocab_full=self.vocab_size)

    def layer_weight_elements(self, tp: int) -> int:
        r = self.shard(tp)
        qkv = (r.heads + 2 * r.kv_heads) * r.head_dim * r.hidden
        return qkv + r.heads * r.head_dim * r.hidden + 3 * r.intermediate * r.hidden + 2 * r.hidden

    def weight_bytes_per_rank(self, tp: int, dtype_bytes: int) -> int:
        """Weights one rank holds when the whole model is served (all layers, embedding, head)."""
        r = self.shard(tp)
        head = 0 if self.tie_word_embeddings else r.vocab * r.hidden
        return dtype_bytes * (self.num_hidden_layers * self.layer_weight_elements(tp) + r.vocab * r.hidden + head
                              + r.hidden)

    def kv_bytes_per_token_per_rank(self, tp: int, dtype_bytes: int, layers: int | None = None) -> int:
        r = self.shard(tp)
        return 2 * r.kv_heads * r.head_dim * dtype_bytes * (self.num_hidden_layers if layers is None else layers)


@dataclass(frozen=True)
class RankShape:
    tp: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    vocab_full: int


def _read_config_json(path: Path) -> dict[str, Any]:
    """config.json as a dict with Hugging Face's canonical field names (via AutoConfig where it knows the type)."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read '{path}' as JSON ({exc}).", field="--config",
                          fix="give the path of a model's config.json.") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"'{path}' is not a JSON object.", field="--config", fix="give a model's config.json.")
    model_type = raw.get("model_type")
    try:
        from transformers import AutoConfig
    except ImportError:
        return raw
    if not model_type:
        return raw
    rest = {k: v for k, v in raw.items() if k != "model_type"}
    try:
        cfg = AutoConfig.for_model(model_type, **rest)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"transformers does not know model_type '{model_type}' of '{path}' ({exc}).",
                          field="model_type", fix="use a decoder-only model type (llama, mistral, qwen2, ...).") from None
    out = dict(raw)
    for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                "intermediate_size", "vocab_size", "tie_word_embeddings", "hidden_act", "rms_norm_eps",
                "max_position_embeddings"):
        value = getattr(cfg, key, None)
        if value is not None:
            out[key] = value
    rope = getattr(cfg, "rope_theta", None) or (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta")
    if rope:
        out["rope_theta"] = rope
    return out


def resolve_shape(model: str, config: str | os.PathLike | None = None) -> ProfileShape:
    """The shape of ``model``: from ``config`` (a config.json or its folder), or the table of model shapes."""
    source = config
    if source is None and (str(model).endswith(".json") or Path(model).is_dir()):
        source = model
    if source is not None:
        path = Path(source)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError(f"the configuration '{path}' {missing_because(path, folder=False)}.", field="--config",
                              fix="give the path of a model's config.json.")
        name = model if config is not None else (path.parent.name or path.stem)
        return ProfileShape.from_config(_read_config_json(path), name)
    try:
        from workbench.costmodel.shapes import model_shape
    except ImportError:
        raise ConfigError(f"unknown model '{model}': this workbench has no table of model shapes.", field="--model",
                          fix="pass --config path/to/config.json.") from None
    try:
        entry = model_shape(model)
    except (KeyError, ValueError):  # the loader's ConfigError is a ValueError
        try:
            from workbench.costmodel.shapes import known_models
            table = f", or one of the table: {', '.join(known_models())}"
        except ImportError:
            table = ""
        raise ConfigError(f"unknown model '{model}': it is not in the table of model shapes.", field="--model",
                          fix=f"pass --config path/to/config.json{table}.") from None
    if hasattr(entry, "to_dict"):
        entry = entry.to_dict()
    elif not isinstance(entry, Mapping):
        entry = asdict(entry)
    return ProfileShape.from_config(entry, str(entry.get("name") or model))


# --------------------------------------------------------------------------------------------- the grid
def _doubling(start: int, stop: int) -> tuple[int, ...]:
    out, v = [], start
    while v <= stop:
        out.append(v)
        v *= 2
    return tuple(out)


@dataclass(frozen=True)
class ProfileGrid:
    """The batch shapes measured.  Attention is the cross of the prefill states (chunk, cached) -- and none --
    with the decode states (sequences, cached each) -- and none --, less the empty iteration."""

    name: str
    dense_tokens: tuple[int, ...]
    sequences: tuple[int, ...]
    prefill_chunks: tuple[int, ...]
    kv_prefill: tuple[int, ...]
    n_decode: tuple[int, ...]
    kv_decode: tuple[int, ...]
    warmup: int
    repetitions: int
    rounds: int = 1

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.repetitions % self.rounds:
            raise ValueError(f"grid {self.name}: repetitions {self.repetitions} do not split into {self.rounds} rounds")

    def attention_points(self) -> list[tuple[int, int, int, int]]:
        prefill = [(0, 0)] + [(c, k) for c in self.prefill_chunks for k in self.kv_prefill]
        decode = [(0, 0)] + [(n, k) for n in self.n_decode for k in self.kv_decode]
        return [(c, kp, n, kd) for c, kp in prefill for n, kd in decode if c + n > 0]

    def describe(self) -> dict[str, Any]:
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        out["statistic"] = "median"
        out["attention_cross"] = ("[(0,0)] + prefill_chunks x kv_prefill, crossed with [(0,0)] + n_decode x "
                                  "kv_decode, less the empty iteration")
        return out


def _llmservingsim_tokens(stop: int) -> tuple[int, ...]:
    # LLMServingSim's dense grid: every count to 16, steps of 4 to 64, steps of 16 beyond.
    return tuple(range(1, 17)) + tuple(range(20, 65, 4)) + tuple(range(80, stop + 1, 16))


GRIDS: dict[str, ProfileGrid] = {
    "small": ProfileGrid("small", dense_tokens=_doubling(1, 512), sequences=_doubling(1, 32),
                         prefill_chunks=(16, 64, 256), kv_prefill=(0, 256, 1024), n_decode=(1, 4, 16),
                         kv_decode=(16, 256, 1024), warmup=1, repetitions=6, rounds=3),
    "default": ProfileGrid("default", dense_tokens=_llmservingsim_tokens(2048),
                           sequences=_llmservingsim_tokens(256)[:40], prefill_chunks=_doubling(16, 2048),
                           kv_prefill=(0, 512, 2048, 8192), n_decode=_doubling(1, 256),
                           kv_decode=(16, 64, 256, 1024, 4096, 16384), warmup=3, repetitions=10,
                           rounds=2),
}


# --------------------------------------------------------------------------------------------- the device
@dataclass(frozen=True)
class DeviceInfo:
    kind: str
    name: str
    memory_bytes: int
    slug: str
    free_bytes: int | None = None   # free now (other processes' use left out); None: unknown


def device_info(device: str | None) -> DeviceInfo:
    """The device to profile; ConfigError when it is not there (no accelerator and no ``--device cpu``)."""
    _require_extra()
    import torch

    if device not in (None, *DEVICES):
        raise ConfigError(f"unknown device '{device}'.", field="--device", fix=f"use one of {', '.join(DEVICES)}.")
    if device in (None, "cuda"):
        if not torch.cuda.is_available():
            what = "--device cuda was asked for" if device else "no --device was given"
            raise ConfigError(f"no CUDA accelerator is available here ({what}).", field="--device",
                              fix="run on a machine with a GPU, or pass --device cpu to profile this CPU.")
        free, total = torch.cuda.mem_get_info()
        name = torch.cuda.get_device_name()
        return DeviceInfo("cuda", name, int(total), _slug(name), int(free))
    page = os.sysconf("SC_PAGE_SIZE")
    total, free = os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
    name = platform.processor() or platform.machine() or "cpu"
    return DeviceInfo("cpu", name, int(total), "CPU-" + _slug(platform.machine() or "unknown"), int(free))


def _slug(text: str) -> str:
    keep = "".join(ch if ch.isalnum() else " " for ch in text)
    words = [w for w in keep.split() if w.upper() not in ("NVIDIA", "SERVER", "EDITION", "GPU")]
    return "".join(w.upper() if len(w) <= 4 else w for w in words) or "device"


# --------------------------------------------------------------------------------------------- memory
@dataclass(frozen=True)
class MemoryPlan:
    """What the configuration says the run needs, estimated before anything is allocated."""

    serving_weights_bytes: int       # all layers' weights per rank: what an engine holds
    activation_bytes: int            # the largest iteration's activations and logits
    kv_bytes_per_token: int          # whole model, per rank
    kv_capacity_tokens: int          # what is left for the KV cache on this device, as an engine would see it
    profile_bytes: int               # what this run allocates: one layer, embedding, head, KV buffer, activations
    device_bytes: int

    def describe(self) -> dict[str, Any]:
        gib = 2 ** 30
        return {"serving_weights_gib": round(self.serving_weights_bytes / gib, 3),
                "activations_gib": round(self.activation_bytes / gib, 3),
                "kv_bytes_per_token": self.kv_bytes_per_token, "kv_capacity_tokens": self.kv_capacity_tokens,
                "profile_run_gib": round(self.profile_bytes / gib, 3), "device_gib": round(self.device_bytes / gib, 3),
                "memory_utilization": MEMORY_UTILIZATION}


def _max_tokens(grid: ProfileGrid) -> int:
    attention = max(c + n for c, _, n, _ in grid.attention_points())
    return max(max(grid.dense_tokens), attention)


def _kv_tokens(point: tuple[int, int, int, int]) -> int:
    c, kp, n, kd = point
    return (kp + c if c else 0) + n * (kd + 1)


def plan_memory(shape: ProfileShape, tp: int, dtype: str, grid: ProfileGrid, device_bytes: int) -> MemoryPlan:
    """Weights + KV + activations from the configuration; ConfigError when the model cannot be served here."""
    b = DTYPE_BYTES[dtype]
    r = shape.shard(tp)
    tokens = _max_tokens(grid)
    width = max(2 * r.intermediate, (r.heads + 2 * r.kv_heads) * r.head_dim, r.hidden)
    # input, residual, the widest projection's output and its activation; logits in float32 for the sampler
    activations = tokens * (3 * r.hidden + 2 * width) * b + max(grid.sequences) * r.vocab_full * (b + 8)
    weights = shape.weight_bytes_per_rank(tp, b)
    kv_token = shape.kv_bytes_per_token_per_rank(tp, b)
    budget = int(device_bytes * MEMORY_UTILIZATION)
    free = budget - weights - activations
    if free < kv_token * max(grid.kv_decode + grid.kv_prefill):
        gib = 2 ** 30
        raise ConfigError(
            f"'{shape.name}' at --tp {tp} in {dtype} does not fit this device: {weights / gib:.1f} GiB of weights "
            f"per rank + {activations / gib:.1f} GiB of activations + the KV cache of one "
            f"{max(grid.kv_decode + grid.kv_prefill)}-token context, against {MEMORY_UTILIZATION:g} x "
            f"{device_bytes / gib:.1f} GiB.", field="--model",
            fix="raise --tp (one rank's shard is profiled), use a smaller --dtype or model, or a larger device.")
    capacity = free // kv_token
    kv_buffer = min(capacity, max(_kv_tokens(p) for p in grid.attention_points()))
    profile = (b * (shape.layer_weight_elements(tp) + 2 * r.vocab * r.hidden) + activations
               + shape.kv_bytes_per_token_per_rank(tp, b, layers=1) * kv_buffer
               + tokens * (r.heads + 2 * r.kv_heads) * r.head_dim * b
               + min(shape.max_position_embeddings, 1 << 20) * r.head_dim * (b + 8))  # the cos/sin cache
    return MemoryPlan(weights, activations, kv_token, int(capacity), int(profile), device_bytes)


# --------------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class ProfilePlan:
    """Everything decided before the run: what is measured, and what is left out and why."""

    shape: ProfileShape
    tp: int
    dtype: str
    device: DeviceInfo
    grid: ProfileGrid
    memory: MemoryPlan
    attention: tuple[tuple[int, int, int, int], ...]
    attention_skipped: tuple[tuple[int, int, int, int], ...]
    seed: int = 0
    threads: int | None = None      # CPU threads of torch; None: torch's default
    kernels: str = "eager"          # "compiled": elementwise operators fused by torch.compile
    timing: str = "wall"            # graphs | events (CUDA), wall (CPU): see _Timer

    @property
    def measurements(self) -> int:
        return (len(DENSE_OPERATORS) * len(self.grid.dense_tokens) + len(self.attention)
                + len(PER_SEQUENCE_OPERATORS) * len(self.grid.sequences))


def make_plan(shape: ProfileShape, tp: int, dtype: str, device: DeviceInfo, grid: str | ProfileGrid,
              seed: int = 0, threads: int | None = None, kernels: str | None = None,
              timing: str | None = None) -> ProfilePlan:
    if isinstance(grid, str):
        if grid not in GRIDS:
            raise ConfigError(f"unknown grid '{grid}'.", field="--grid", fix=f"use one of {', '.join(GRIDS)}.")
        grid = GRIDS[grid]
    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"unknown dtype '{dtype}'.", field="--dtype", fix=f"use one of {', '.join(DTYPE_BYTES)}.")
    if int(tp) < 1:
        raise ConfigError(f"--tp {tp} is not a tensor-parallel degree.", field="--tp", fix="give an integer >= 1.")
    kernels = kernels or default_kernels(device.kind)
    if kernels not in KERNELS:
        raise ConfigError(f"unknown --kernels '{kernels}'.", field="--kernels", fix=f"use one of {', '.join(KERNELS)}.")
    timing = timing or ("graphs" if device.kind == "cuda" else "wall")
    if timing not in TIMINGS[device.kind]:
        raise ConfigError(f"--timing {timing} is refused on {device.kind}.", field="--timing",
                          fix=f"use one of {', '.join(TIMINGS[device.kind])} on {device.kind}.")
    if threads is not None and (device.kind != "cpu" or int(threads) < 1):
        raise ConfigError(f"--threads {threads} is refused on {device.kind}.", field="--threads",
                          fix="give --threads (an integer >= 1) only with --device cpu.")
    shape.shard(int(tp))
    memory = plan_memory(shape, int(tp), dtype, grid, device.memory_bytes)
    if device.free_bytes is not None and memory.profile_bytes > device.free_bytes:
        gib = 2 ** 30
        raise ConfigError(f"this run needs ~{memory.profile_bytes / gib:.1f} GiB but only {device.free_bytes / gib:.1f} "
                          f"GiB of the {device.kind} memory is free now.", field="--device",
                          fix="free the device (other processes hold its memory), or use --grid small.")
    points = grid.attention_points()
    # An iteration holding more KV than the engine's cache can never run: measuring it would describe nothing.
    kept = tuple(p for p in points if _kv_tokens(p) <= memory.kv_capacity_tokens)
    skipped = tuple(p for p in points if _kv_tokens(p) > memory.kv_capacity_tokens)
    return ProfilePlan(shape, int(tp), dtype, device, grid, memory, kept, skipped, seed,
                       None if threads is None else int(threads), kernels, timing)


# --------------------------------------------------------------------------------------------- timing
class _Timer:
    """Microseconds of ``repetitions`` runs of an operator after ``warmup`` runs, the device synchronised around each.

    ``graphs`` (CUDA): the operator is captured once into a CUDA graph and the graph is replayed between two CUDA
    events, so the time is the kernels' own, without the CPU's launch gaps between them (a Python-level operator
    of several kernels would otherwise be timed at the CPU's pace); where capture fails the operator is timed
    eagerly and named in ``eager``.  ``events`` (CUDA): the operator is called between the events.  ``wall``
    (CPU): ``time.perf_counter`` around the call.
    """

    def __init__(self, timing: str):
        import torch

        self.torch, self.timing, self.eager = torch, timing, set()
        if timing != "wall":
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def _graph(self, fn, warmup: int, label: str | None):
        torch = self.torch
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # capture needs the operator warmed up off the capturing stream
            for _ in range(max(warmup, 1)):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                fn()
        except Exception:  # noqa: BLE001 -- not capturable (a host sync, a generator): time it eagerly
            torch.cuda.synchronize()
            self.eager.add(label or "?")
            return None
        return graph

    def __call__(self, fn: Callable[[], Any], warmup: int, repetitions: int, label: str | None = None) -> list[float]:
        torch = self.torch
        if self.timing == "wall":
            for _ in range(warmup):
                fn()
            samples = []
            for _ in range(repetitions):
                t0 = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - t0) * 1e6)
            return samples
        call = fn
        if self.timing == "graphs" and repetitions:
            graph = self._graph(fn, warmup, label)
            call = graph.replay if graph is not None else fn
        for _ in range(warmup):
            call()
        samples = []
        for _ in range(repetitions):
            torch.cuda.synchronize()
            self.start.record()
            call()
            self.end.record()
            torch.cuda.synchronize()
            samples.append(self.start.elapsed_time(self.end) * 1e3)
        return samples


class _Layer:
    """One rank's decoder layer, embedding, head and sampler, with random weights, and the operators to time."""

    def __init__(self, plan: ProfilePlan):
        import torch
        from transformers.activations import ACT2FN

        self.torch = torch
        s, r = plan.shape, plan.shape.shard(plan.tp)
        self.r, self.eps = r, s.rms_norm_eps
        dev, dt = torch.device(plan.device.kind), getattr(torch, plan.dtype)
        self.generator = torch.Generator(device=dev).manual_seed(plan.seed)
        g = self.generator

        def rand(*size, scale=1.0):
            # uniform in place: half the memory traffic of randn * scale, and timing does not depend on values
            return torch.empty(*size, device=dev, dtype=dt).uniform_(-scale, scale, generator=g)

        tokens = _max_tokens(plan.grid)
        scale = 1 / math.sqrt(r.hidden)
        self.embed = rand(r.vocab, r.hidden)
        self.norm = torch.ones(r.hidden, device=dev, dtype=dt)
        self.qkv = rand((r.heads + 2 * r.kv_heads) * r.head_dim, r.hidden, scale=scale)
        self.o = rand(r.hidden, r.heads * r.head_dim, scale=scale)
        self.gate_up = rand(2 * r.intermediate, r.hidden, scale=scale)
        self.down = rand(r.hidden, r.intermediate, scale=scale)
        self.head = self.embed if s.tie_word_embeddings else rand(r.vocab, r.hidden, scale=scale)
        act, eps, half = ACT2FN[s.hidden_act], s.rms_norm_eps, r.head_dim // 2
        F = torch.nn.functional

        def add_rms_norm(x, res, weight):
            return F.rms_norm(x + res, (x.shape[-1],), weight, eps)

        def rotary(qk, cos_sin, pos):
            # neox-style rotation of q and k together from a cos/sin cache looked up by position, as vLLM's
            # rotary_embedding does
            cos, sin = cos_sin[pos].chunk(2, dim=-1)
            cos, sin = cos[:, None, :], sin[:, None, :]
            a, b = qk[..., :half], qk[..., half:]
            return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)

        def act_mul(mid):
            g, u = mid.chunk(2, dim=-1)
            return act(g) * u

        # vLLM runs each of these as ONE kernel (its custom ops, or torch.compile's fusion); in eager PyTorch
        # they are several, and on a GPU the launch gaps between them would be timed too.  "compiled" fuses
        # them with torch.compile (one graph per operator, dynamic in the token count).
        # No FX graph cache: its key pickles objects the graph reaches, and Pyomo's deferred imports (loaded by
        # the CLI's other commands) raise when touched; the graphs are small and compile in seconds.
        wrap = ((lambda f: torch.compile(f, dynamic=True, options={"fx_graph_cache": False}))
                if plan.kernels == "compiled" else (lambda f: f))
        self._add_rms_norm, self._rotary, self._act_mul = wrap(add_rms_norm), wrap(rotary), wrap(act_mul)
        self.ids = torch.randint(0, r.vocab, (tokens,), generator=g, device=dev)
        self.positions = torch.randint(0, min(s.max_position_embeddings, 1 << 20), (tokens,), generator=g, device=dev)
        half = r.head_dim // 2
        inv_freq = 1.0 / (s.rope_theta ** (torch.arange(0, half, device=dev, dtype=torch.float32) / half))
        freqs = torch.outer(torch.arange(min(s.max_position_embeddings, 1 << 20), device=dev,
                                         dtype=torch.float32), inv_freq)
        self.cos_sin = torch.cat((freqs.cos(), freqs.sin()), dim=-1).to(dt)
        self.x = rand(tokens, r.hidden)
        self.residual = rand(tokens, r.hidden)
        self.qkv_out = rand(tokens, (r.heads + 2 * r.kv_heads) * r.head_dim)
        self.attn_out = rand(tokens, r.heads * r.head_dim)
        self.mlp_mid = rand(tokens, 2 * r.intermediate)
        self.inter = rand(tokens, r.intermediate)
        self.logits = rand(max(plan.grid.sequences), r.vocab_full)
        kv = max([_kv_tokens(p) for p in plan.attention] or [0])
        self.k_cache = rand(kv * r.kv_heads * r.head_dim)
        self.v_cache = rand(kv * r.kv_heads * r.head_dim)

    # -- dense operators at ``t`` tokens
    def dense(self, name: str, t: int) -> Callable[[], Any]:
        F, r = self.torch.nn.functional, self.r
        x, res = self.x[:t], self.residual[:t]
        qk = self.qkv_out[:t, : (r.heads + r.kv_heads) * r.head_dim].view(t, -1, r.head_dim)
        pos, mid = self.positions[:t], self.mlp_mid[:t]

        def rms_norm():
            return self._add_rms_norm(x, res, self.norm)

        def rotary():
            return self._rotary(qk, self.cos_sin, pos)

        def act():
            return self._act_mul(mid)

        ops = {"embedding": lambda: F.embedding(self.ids[:t], self.embed),
               "layernorm": rms_norm, "final_layernorm": rms_norm,
               "qkv_proj": lambda: F.linear(x, self.qkv), "rotary_emb": rotary,
               "o_proj": lambda: F.linear(self.attn_out[:t], self.o),
               "gate_up_proj": lambda: F.linear(x, self.gate_up), "act_fn": act,
               "down_proj": lambda: F.linear(self.inter[:t], self.down)}
        return ops[name]

    def per_sequence(self, name: str, n: int) -> Callable[[], Any]:
        torch, F = self.torch, self.torch.nn.functional
        if name == "lm_head":
            return lambda: F.linear(self.x[:n], self.head)
        logits = self.logits[:n]

        def sampler():
            # vLLM gathers the vocabulary shards before sampling: the sampler sees the full vocabulary.
            probs = torch.softmax(logits.float(), dim=-1)
            return torch.multinomial(probs, 1, generator=self.generator)
        return sampler

    def attention(self, c: int, kp: int, n: int, kd: int) -> Callable[[], Any]:
        F, r = self.torch.nn.functional, self.r
        from torch.nn.attention.bias import causal_lower_right

        q_width, k_width = r.heads * r.head_dim, r.kv_heads * r.head_dim
        qkv = self.qkv_out[: c + n]
        q, k, v = qkv[:, :q_width], qkv[:, q_width:q_width + k_width], qkv[:, q_width + k_width:]
        per_token = r.kv_heads * r.head_dim
        pre = kp + c if c else 0
        kc_p = self.k_cache[: pre * per_token].view(1, r.kv_heads, pre, r.head_dim)
        vc_p = self.v_cache[: pre * per_token].view(1, r.kv_heads, pre, r.head_dim)
        span = n * (kd + 1) * per_token
        kc_d = self.k_cache[pre * per_token: pre * per_token + span].view(n, r.kv_heads, kd + 1, r.head_dim)
        vc_d = self.v_cache[pre * per_token: pre * per_token + span].view(n, r.kv_heads, kd + 1, r.head_dim)
        mask = causal_lower_right(c, pre) if c and kp else None

        def run():
            out = []
            if c:
                kc_p[0, :, kp:].copy_(k[:c].view(c, r.kv_heads, r.head_dim).transpose(0, 1))
                vc_p[0, :, kp:].copy_(v[:c].view(c, r.kv_heads, r.head_dim).transpose(0, 1))
                qp = q[:c].view(c, r.heads, r.head_dim).transpose(0, 1).unsqueeze(0)
                out.append(F.scaled_dot_product_attention(qp, kc_p, vc_p, attn_mask=mask, is_causal=mask is None,
                                                          enable_gqa=True))
            if n:
                kc_d[:, :, kd].copy_(k[c:].view(n, r.kv_heads, r.head_dim))
                vc_d[:, :, kd].copy_(v[c:].view(n, r.kv_heads, r.head_dim))
                qd = q[c:].view(n, r.heads, 1, r.head_dim)
                out.append(F.scaled_dot_product_attention(qd, kc_d, vc_d, enable_gqa=True))
            return out
        return run


# --------------------------------------------------------------------------------------------- the run
@contextmanager
def _threads(plan: ProfilePlan):
    import torch

    threads = torch.get_num_threads()
    if plan.threads is not None:
        torch.set_num_threads(plan.threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _points(plan: ProfilePlan, layer: _Layer):
    """Every grid point as (table, row without the time, operator to time), in the order of the files."""
    g = plan.grid
    for name in DENSE_OPERATORS:
        for t in g.dense_tokens:
            yield "dense", (name, t), layer.dense(name, t)
    for point in plan.attention:
        yield "attention", point, layer.attention(*point)
    for name in PER_SEQUENCE_OPERATORS:
        for n in g.sequences:
            yield "per_sequence", (name, n), layer.per_sequence(name, n)


def _warm(plan: ProfilePlan, layer: _Layer, timer) -> None:
    # A first call pays for kernel selection, allocator growth and lazy initialisation; the per-point warm-up is
    # too short to absorb that, so every operator first runs at its smallest and largest shape.
    g = plan.grid
    for name in DENSE_OPERATORS:
        for t in (g.dense_tokens[0], g.dense_tokens[-1]):
            timer(layer.dense(name, t), 3, 0)
    for point in plan.attention[:1] + plan.attention[-1:]:
        timer(layer.attention(*point), 3, 0)
    for name in PER_SEQUENCE_OPERATORS:
        for n in (g.sequences[0], g.sequences[-1]):
            timer(layer.per_sequence(name, n), 3, 0)


class Profiler:
    """The one-layer model of a plan on its device: ``estimate_seconds()`` then ``run()``.

    Building it allocates the weights and buffers (the memory was checked by
    :func:`make_plan` from the configuration first).
    """

    #: Points timed once by the estimate (spread evenly over the grid).
    PILOT_POINTS = 48

    def __init__(self, plan: ProfilePlan):
        import torch

        self.plan = plan
        t0 = time.perf_counter()
        with _threads(plan), torch.inference_mode():
            self.layer = _Layer(plan)
            self.timer = _Timer(plan.timing)
            try:
                _warm(plan, self.layer, self.timer)
            except Exception as exc:  # torch.compile raises its backends' own errors (no C++ compiler, no Triton)
                if plan.kernels != "compiled":
                    raise
                inner = getattr(exc, "inner_exception", None) or exc
                first = f"{type(inner).__name__}: {str(inner).strip().splitlines()[0] if str(inner).strip() else ''}"
                raise ConfigError(f"torch.compile of the elementwise operators failed ({first[:200]}).",
                                  field="--kernels", fix="pass --kernels eager (unfused operators).") from None
        self.setup_s = time.perf_counter() - t0

    def estimate_seconds(self) -> float:
        """Wall time of :meth:`run`: a pilot times every k-th grid point once and scales by k x (warm-up + runs)."""
        import torch

        g, n = self.plan.grid, self.plan.measurements
        stride = max(1, n // self.PILOT_POINTS)
        spent = 0.0
        with _threads(self.plan), torch.inference_mode():
            for i, (_, key, fn) in enumerate(_points(self.plan, self.layer)):
                if i % stride == 0:
                    t0 = time.perf_counter()
                    self.timer(fn, 0, 1, str(key[0]))
                    spent += time.perf_counter() - t0
        return spent * stride * (g.rounds * g.warmup + g.repetitions)

    def run(self, *, progress: bool = True) -> dict[str, pd.DataFrame]:
        """Measure the grid; the three tables, times in microseconds."""
        import torch
        from tqdm.auto import tqdm

        g = self.plan.grid
        per_round = g.repetitions // g.rounds
        with _threads(self.plan), torch.inference_mode():
            points = list(_points(self.plan, self.layer))
            samples: list[list[float]] = [[] for _ in points]
            bar = tqdm(total=len(points) * g.rounds, desc=f"profile {self.plan.shape.name} tp{self.plan.tp}",
                       unit="point", disable=not progress)
            for _ in range(g.rounds):
                for i, (kind, key, fn) in enumerate(points):
                    label = "attention" if kind == "attention" else key[0]
                    samples[i] += self.timer(fn, g.warmup, per_round, label)
                    bar.update()
            bar.close()
        rows: dict[str, list] = {kind: [] for kind in COLUMNS}
        for (kind, key, _), times in zip(points, samples):
            rows[kind].append((*key, float(statistics.median(times))))
        return {kind: pd.DataFrame(r, columns=list(COLUMNS[kind])) for kind, r in rows.items()}


def run_profile(plan: ProfilePlan, *, progress: bool = True) -> dict[str, pd.DataFrame]:
    """Build the plan's layer and measure its grid (no estimate)."""
    return Profiler(plan).run(progress=progress)


def _versions() -> dict[str, Any]:
    import torch
    import transformers

    from workbench._version import __version__

    return {"profiler": "workbench profile (workbench.costmodel.profile)", "profiler_version": __version__,
            "torch_version": str(torch.__version__), "transformers_version": str(transformers.__version__),
            "cuda_version": torch.version.cuda, "python_version": platform.python_version()}


def profile_meta(plan: ProfilePlan, wall_s: float, estimate_s: float | None,
                 eager_operators: Iterable[str] | None = None) -> dict[str, Any]:
    """The meta.yaml of one run (a later run at another --tp into the same folder adds to ``per_tp``)."""
    shape = asdict(plan.shape)
    r = plan.shape.shard(plan.tp)
    return {
        **_versions(),
        "device": plan.device.kind, "gpu": plan.device.name, "hardware": plan.device.slug,
        "device_memory_gib": round(plan.device.memory_bytes / 2 ** 30, 2),
        "profiled_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": plan.shape.name, "architecture": "llama-style decoder layer (fused-add RMSNorm, fused QKV, RoPE, "
                                                  "grouped-query SDPA attention, fused gate/up, activation x up, down)",
        "dtype": plan.dtype, "variant": {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}[plan.dtype],
        "weights": "random (torch.randn, seeded); nothing downloaded", "seed": plan.seed,
        "cpu_threads": plan.threads if plan.threads is not None else "torch default",
        "kernels": {"name": plan.kernels,
                    "elementwise_operators": ("layernorm, final_layernorm, rotary_emb and act_fn each fused into "
                                              "one graph by torch.compile(dynamic=True)" if plan.kernels == "compiled"
                                              else "layernorm, final_layernorm, rotary_emb and act_fn run eagerly, "
                                                   "several kernels each (the residual add apart from the norm)")},
        "model_shape": shape, "layers_profiled": 1,
        "num_hidden_layers": plan.shape.num_hidden_layers,
        "tp_degrees": [plan.tp],
        "grid": plan.grid.describe(),
        "measurement_iterations": plan.grid.repetitions,
        "timing": {
            "name": plan.timing,
            "statistic": "median of grid.repetitions runs, taken in grid.rounds passes over the grid, each pass "
                         "running a point grid.warmup times first",
            "method": {"graphs": "each operator captured into a CUDA graph, the graph replayed between two CUDA events "
                                 "with torch.cuda.synchronize() before and after: the kernels' own time, without "
                                 "the CPU's launch gaps",
                       "events": "each operator called between two CUDA events with torch.cuda.synchronize() before "
                                 "and after (launch gaps between its kernels included)",
                       "wall": "time.perf_counter around each call (CPU)"}[plan.timing],
            "timed_eagerly": sorted(eager_operators or ()),
        },
        "operators": {
            "dense.csv": "per decoder layer: layernorm (residual add + RMSNorm; a layer has two), qkv_proj, "
                         "rotary_emb (q and k), o_proj, gate_up_proj, act_fn (activation x up), down_proj; per "
                         "iteration: embedding, final_layernorm",
            "attention.csv": "per decoder layer: torch SDPA for the prefill chunk (bottom-right causal over its "
                             "cached tokens) and for the decodes, plus the write of the new tokens' K and V into a "
                             "contiguous cache",
            "per_sequence.csv": "per iteration: lm_head on the last token of each sequence (one rank's vocabulary "
                                "shard), sampler (softmax + multinomial over the full vocabulary, float32)",
            "not_included": "collectives at TP > 1 (no communication is run: add all-reduces separately), CPU "
                            "scheduling and Python overhead between operators, paged-KV bookkeeping",
        },
        "per_tp": {plan.tp: {"shard": asdict(r), "memory": plan.memory.describe(),
                             "attention_points": len(plan.attention),
                             "attention_points_skipped": len(plan.attention_skipped),
                             "attention_skipped_because": "the iteration holds more KV tokens than the whole "
                                                          "model's KV cache on this device (kv_capacity_tokens)",
                             "wall_s": round(wall_s, 2),
                             "estimated_s": None if estimate_s is None else round(estimate_s, 2)}},
    }


def check_output(out: str | os.PathLike, plan: ProfilePlan, *, force: bool = False) -> Path:
    """The output folder, checked before the run (nothing is written on a refusal)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"'{out}' exists and is not a folder.", field="--out", fix="give a folder path.")
    tp_dir = out / f"tp{plan.tp}"
    if tp_dir.exists() and not force:
        raise ConfigError(f"'{tp_dir}' already exists.", field="--out", fix="pass --force to replace it, or "
                                                                            "another --out.")
    meta = _read_meta(out / "meta.yaml")
    if meta:
        for key, mine in (("model", plan.shape.name), ("dtype", plan.dtype), ("hardware", plan.device.slug)):
            if meta.get(key) != mine:
                raise ConfigError(f"'{out / 'meta.yaml'}' is a profile of {key} '{meta.get(key)}', not '{mine}'.",
                                  field="--out", fix="give another --out folder (one folder per device and model).")
    return out


def _read_meta(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def write_profile(out: str | os.PathLike, plan: ProfilePlan, tables: Mapping[str, pd.DataFrame],
                  meta: dict[str, Any]) -> Path:
    """Write ``out/tp<N>/*.csv`` and ``out/meta.yaml``; the tp folder appears whole or not at all."""
    import yaml

    out = Path(out)
    old = _read_meta(out / "meta.yaml")
    if old:
        tps = sorted(set(old.get("tp_degrees", [])) | {plan.tp})
        per_tp = {**(old.get("per_tp") or {}), **meta["per_tp"]}
        meta = {**meta, "tp_degrees": tps, "per_tp": dict(sorted(per_tp.items()))}
    text = yaml.safe_dump(meta, sort_keys=False, width=120)  # fails here, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tp{plan.tp}-", dir=out))
    try:
        for kind, table in tables.items():
            table.to_csv(staging / f"{kind}.csv", index=False, float_format="%.6g")
        tp_dir = out / f"tp{plan.tp}"
        if tp_dir.exists():
            shutil.rmtree(tp_dir)
        staging.rename(tp_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    tmp = out / ".meta.yaml.partial"
    tmp.write_text(text)
    tmp.replace(out / "meta.yaml")
    return out


def read_profile(profile_dir: str | os.PathLike, tp: int = 1) -> dict[str, pd.DataFrame]:
    """The three tables of a profile folder (ours or LLMServingSim's); ConfigError if one is missing or malformed."""
    root = Path(profile_dir) / f"tp{tp}"
    tables = {}
    for kind, columns in COLUMNS.items():
        path = root / f"{kind}.csv"
        if not path.is_file():
            raise ConfigError(f"'{path}' {missing_because(path, folder=False)}.", field="profile_dir",
                              fix="run workbench profile first.")
        table = pd.read_csv(path)
        if tuple(table.columns) != columns:
            raise ConfigError(f"'{path}' has columns {list(table.columns)}, not {list(columns)}.", field=kind)
        tables[kind] = table
    return tables


def profile(model: str, *, out: str | os.PathLike, tp: int = 1, config: str | os.PathLike | None = None,
            device: str | None = None, grid: str | ProfileGrid = "default", dtype: str | None = None, seed: int = 0,
            threads: int | None = None, kernels: str | None = None, timing: str | None = None, force: bool = False,
            progress: bool = True) -> tuple[Path, dict[str, Any]]:
    """Plan, check, measure and write a profile; returns the folder and its meta (see the module docstring)."""
    shape = resolve_shape(model, config)
    info = device_info(device)
    plan = make_plan(shape, tp, dtype or default_dtype(info.kind), info, grid, seed, threads, kernels, timing)
    out = check_output(out, plan, force=force)
    profiler = Profiler(plan)
    estimate = profiler.estimate_seconds()
    t0 = time.perf_counter()
    tables = profiler.run(progress=progress)
    meta = profile_meta(plan, time.perf_counter() - t0, estimate, profiler.timer.eager)
    return write_profile(out, plan, tables, meta), meta


def default_kernels(device: str) -> str:
    """compiled on a GPU (one fused kernel per elementwise operator, as in vLLM); eager on a CPU, where compiling
    takes longer than the whole small grid."""
    return "compiled" if device == "cuda" else "eager"


def default_dtype(device: str) -> str:
    """bfloat16 on a GPU (what engines serve in); float32 on a CPU, where half-precision kernels are emulated."""
    return "bfloat16" if device == "cuda" else "float32"


def describe_plan(plan: ProfilePlan) -> Iterable[str]:
    r, m = plan.shape.shard(plan.tp), plan.memory
    gib = 2 ** 30
    yield (f"model {plan.shape.name}: {plan.shape.num_hidden_layers} layers, d={plan.shape.hidden_size}, "
           f"{plan.shape.num_attention_heads}/{plan.shape.num_key_value_heads} heads, MLP {plan.shape.intermediate_size}, "
           f"vocab {plan.shape.vocab_size}; one rank at tp {plan.tp}: {r.heads}/{r.kv_heads} heads, MLP "
           f"{r.intermediate}, vocab {r.vocab}")
    yield (f"device {plan.device.kind} ({plan.device.name}, {m.device_bytes / gib:.1f} GiB), {plan.dtype}: "
           f"serving needs {m.serving_weights_bytes / gib:.2f} GiB of weights per rank, "
           f"KV cache room {m.kv_capacity_tokens:,} tokens; this run allocates ~{m.profile_bytes / gib:.2f} GiB")
    yield (f"grid {plan.grid.name}: {plan.measurements} measurements ({len(plan.attention)} attention points, "
           f"{len(plan.attention_skipped)} left out beyond the KV capacity), {plan.grid.repetitions} runs each "
           f"in {plan.grid.rounds} passes (each after {plan.grid.warmup} warm-up), median; {plan.kernels} "
           f"elementwise kernels, timing: {plan.timing}")


__all__ = [
    "COLUMNS",
    "DENSE_OPERATORS",
    "GRIDS",
    "KERNELS",
    "PER_SEQUENCE_OPERATORS",
    "TIMINGS",
    "ProfileGrid",
    "ProfilePlan",
    "ProfileShape",
    "Profiler",
    "default_dtype",
    "default_kernels",
    "describe_plan",
    "device_info",
    "make_plan",
    "plan_memory",
    "profile",
    "read_profile",
    "resolve_shape",
    "run_profile",
    "write_profile",
]
