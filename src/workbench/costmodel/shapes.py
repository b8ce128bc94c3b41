"""Shapes of common models (``data/models/shapes.json``), keyed by Hugging Face model id.

Calibration scales per-layer operator profiles to a whole model by the number
of decoder layers, and the profiling command builds one-layer models of the
same widths; both read the shapes from one shipped table so they agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from workbench._paths import data_dir
from workbench.errors import ConfigError

SHAPE_FIELDS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                "intermediate_size", "vocab_size")


@dataclass(frozen=True)
class ModelShape:
    """The widths of a dense decoder-only model (field names as in Hugging Face ``config.json``)."""

    name: str
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    max_position_embeddings: int | None = None
    source: str = ""
    #: A mixture of experts: routed experts per layer, experts per token and one expert's MLP width (0: dense).
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0

    @property
    def layers(self) -> int:
        return self.num_hidden_layers

    def kv_bytes_per_token(self, bytes_per_value: int = 2, tp: int = 1) -> int:
        """KV-cache bytes one token takes on one of ``tp`` ranks (K and V of every layer)."""
        kv_heads_per_rank = max(1, -(-self.num_key_value_heads // tp))
        return 2 * self.num_hidden_layers * kv_heads_per_rank * self.head_dim * bytes_per_value

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in ("name", *SHAPE_FIELDS, "tie_word_embeddings",
                                                    "max_position_embeddings", "source")}


def shapes_path():
    return data_dir() / "models" / "shapes.json"


@cache
def _table() -> dict[str, Any]:
    return json.loads(shapes_path().read_text(encoding="utf-8"))


def known_models() -> list[str]:
    """The model ids of the shipped table (without aliases)."""
    return sorted(_table()["models"])


def _resolve(name: str) -> str | None:
    table = _table()
    models, aliases = table["models"], table.get("aliases", {})
    by_lower = {key.lower(): key for key in [*models, *aliases]}
    key = by_lower.get(name.strip().lower())
    if key is None and "/" not in name:
        # a bare name such as 'Llama-3.1-8B' matches the one id whose repository part it is
        hits = [full for low, full in by_lower.items() if low.split("/", 1)[-1] == name.strip().lower()]
        key = hits[0] if len(hits) == 1 else None
    if key is None:
        return None
    return aliases.get(key, key)


def model_shape(name: str) -> ModelShape:
    """The shape of ``name`` (a Hugging Face id such as ``meta-llama/Llama-3.1-8B``, case-insensitive).

    Instruct/chat variants resolve to their base model; a bare repository name
    (``Llama-3.1-8B``) is accepted when it is unambiguous.
    """
    key = _resolve(str(name))
    if key is None:
        raise ConfigError(f"model '{name}' is not in the shipped table of model shapes ({shapes_path().name}).",
                          field="model",
                          fix=f"give --layers (decoder layers) explicitly, or use one of {', '.join(known_models())}.")
    entry = _table()["models"][key]
    return ModelShape(name=key, **{k: entry[k] for k in SHAPE_FIELDS},
                      tie_word_embeddings=bool(entry.get("tie_word_embeddings", False)),
                      max_position_embeddings=entry.get("max_position_embeddings"),
                      source=entry.get("source", ""), num_experts=int(entry.get("num_experts", 0)),
                      num_experts_per_tok=int(entry.get("num_experts_per_tok", 0)),
                      moe_intermediate_size=int(entry.get("moe_intermediate_size", 0)))
