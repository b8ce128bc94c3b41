"""How the engine forms iterations and holds KV memory: the options of one loop (MODEL.md section 11)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.errors import ConfigError

#: From this many requests (about 2 s of simulation) a progress bar is shown unless progress=False.
PROGRESS_MIN_REQUESTS = 200_000
ITERATION_MODES = ("exclusive", "mixed")
KV_MODES = ("reserve", "paged")
DEFAULT_TOKEN_BUDGET = 512
DEFAULT_BLOCK_SIZE = 16
#: The engine options a policy or a caller may set (MODEL.md section 11).
ENGINE_OPTIONS = ("iteration", "token_budget", "max_partial_prefills", "kv", "block_size", "prefix_caching")


@dataclass(frozen=True)
class EngineConfig:
    """How the engine forms iterations and holds KV memory (see the module docstring)."""

    iteration: str = "exclusive"
    token_budget: int | None = None
    max_partial_prefills: int | None = None
    kv: str = "reserve"
    block_size: int = DEFAULT_BLOCK_SIZE
    prefix_caching: bool = False

    @classmethod
    def from_options(cls, options: dict[str, Any], batch_size_max: int) -> EngineConfig:
        unknown = set(options) - set(ENGINE_OPTIONS)
        if unknown:
            raise ConfigError(f"unknown engine option {sorted(unknown)[0]!r}.", field=sorted(unknown)[0],
                              fix=f"use {', '.join(ENGINE_OPTIONS)}.")
        iteration = options.get("iteration") or "exclusive"
        if iteration not in ITERATION_MODES:
            raise ConfigError(f"iteration mode {iteration!r} is not known.", field="iteration",
                              fix=f"use {' or '.join(ITERATION_MODES)}.")
        kv = options.get("kv") or "reserve"
        if kv not in KV_MODES:
            raise ConfigError(f"KV mode {kv!r} is not known.", field="kv", fix=f"use {' or '.join(KV_MODES)}.")
        budget = options.get("token_budget")
        partial = options.get("max_partial_prefills")
        if iteration == "exclusive":
            for name, value in (("token_budget", budget), ("max_partial_prefills", partial)):
                if value is not None:
                    raise ConfigError(f"{name} is set but iterations are exclusive (a prefill or a decode stage), "
                                      "which have no token budget.", field=name,
                                      fix="drop it, or use iteration='mixed' (a chunked-prefill policy).")
        else:
            budget = DEFAULT_TOKEN_BUDGET if budget is None else budget
            if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget <= batch_size_max:
                raise ConfigError(f"token_budget {budget!r} must be a whole number above the batch size "
                                  f"{batch_size_max}, so every iteration has room for a prompt token.",
                                  field="token_budget", fix="give e.g. 512 tokens per iteration (vLLM: 2048).")
            if partial is not None and (isinstance(partial, bool) or not isinstance(partial, (int, np.integer))
                                        or partial < 1):
                raise ConfigError(f"max_partial_prefills {partial!r} must be a whole number >= 1.",
                                  field="max_partial_prefills", fix="give 1 (vLLM's default) or more.")
        block = options.get("block_size")
        if kv == "reserve" and block is not None:
            raise ConfigError("block_size is set but KV memory is reserved per request, not paged.",
                              field="block_size", fix="drop it, or use kv='paged'.")
        block = DEFAULT_BLOCK_SIZE if block is None else block
        if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
            raise ConfigError(f"block_size {block!r} must be a whole number of tokens >= 1.", field="block_size",
                              fix="give e.g. 16 (vLLM's default).")
        caching = options.get("prefix_caching", False)
        if not isinstance(caching, (bool, np.bool_)):
            raise ConfigError(f"prefix_caching {caching!r} must be true or false.", field="prefix_caching",
                              fix="give true or false.")
        if caching and kv != "paged":
            raise ConfigError("prefix caching needs paged KV memory (cached blocks are KV blocks).",
                              field="prefix_caching", fix="use kv='paged', or drop prefix_caching.")
        return cls(iteration, None if budget is None else int(budget), None if partial is None else int(partial),
                   kv, int(block), bool(caching))

    @property
    def classic(self) -> bool:
        """The paper's engine exactly: exclusive iterations, KV reserved at admission."""
        return self.iteration == "exclusive" and self.kv == "reserve"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"iteration": self.iteration, "kv": self.kv}
        if self.iteration == "mixed":
            out["token_budget"] = self.token_budget
            out["max_partial_prefills"] = self.max_partial_prefills
        if self.kv == "paged":
            out["block_size"] = self.block_size
            out["prefix_caching"] = self.prefix_caching
        return out
