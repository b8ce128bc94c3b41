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
ENGINE_OPTIONS = ("iteration", "token_budget", "max_partial_prefills", "kv", "block_size", "prefix_caching",
                  "cache_at_schedule", "full_prompt_admission", "async_scheduling", "long_prefill_token_threshold",
                  "dp_lockstep")
#: vLLM V1's KV and scheduling semantics (mixed iterations only; MODEL.md section 11.5): off in every
#: policy but ``vllm``, so the paper's policies keep their results.
VLLM_SEMANTICS = ("cache_at_schedule", "full_prompt_admission", "async_scheduling", "long_prefill_token_threshold",
                  "dp_lockstep")


@dataclass(frozen=True)
class EngineConfig:
    """How the engine forms iterations and holds KV memory (see the module docstring)."""

    iteration: str = "exclusive"
    token_budget: int | None = None
    max_partial_prefills: int | None = None
    kv: str = "reserve"
    block_size: int = DEFAULT_BLOCK_SIZE
    prefix_caching: bool = False
    #: vLLM's ``allocate_slots -> cache_blocks``: a request's full blocks are cached when they are scheduled
    #: (a request later in the same step hits them) and the blocks of generated tokens are hashed too.
    cache_at_schedule: bool = False
    #: vLLM's ``scheduler_reserve_full_isl``: a waiting request is admitted only if its whole prompt (plus
    #: what it had generated, after a preemption) fits the free blocks, not merely its first chunk.
    full_prompt_admission: bool = False
    #: vLLM's ``async_scheduling``: step t+1 is scheduled while step t runs, so a request queued during step
    #: t joins at t+2 at the earliest, and slots and blocks freed by step t are usable from step t+2.
    async_scheduling: bool = False
    #: vLLM's ``long_prefill_token_threshold``: the most prompt tokens one request computes per iteration
    #: (None: no cap, vLLM's 0).
    long_prefill_token_threshold: int | None = None
    #: The replicas are one data-parallel group of a mixture-of-experts model (vLLM's DP + EP): they step in
    #: lockstep, each iteration ending when the slowest member's does.
    dp_lockstep: bool = False

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
            # Equal to the batch size is enough (vLLM allows it): a full batch of decodes leaves no slot to
            # admit into, and a prompt part-way holds a slot that no decode takes, so its chunk has a token.
            if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < batch_size_max:
                raise ConfigError(f"token_budget {budget!r} must be a whole number at least the batch size "
                                  f"{batch_size_max}, so every iteration has room for its decodes.",
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
        semantics = _vllm_semantics(options, iteration, kv)
        if partial is not None and partial > 1 and semantics["long_prefill_token_threshold"] is None:
            # Without a per-request chunk cap a prompt part-way through took the whole rest of the budget, so at
            # most one is ever part-way: a limit above 1 could never bind (it was accepted and ignored).
            raise ConfigError(f"max_partial_prefills {partial} can never bind without long_prefill_token_threshold: "
                              "a prompt part-way through takes the rest of the token budget, so at most one is "
                              "part-way at a time.", field="max_partial_prefills",
                              fix="also give long_prefill_token_threshold (a per-request chunk cap), or drop it.")
        return cls(iteration, None if budget is None else int(budget), None if partial is None else int(partial),
                   kv, int(block), bool(caching), **semantics)

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
        for name in VLLM_SEMANTICS:  # listed only when on, so the other policies' schedules read as before
            if getattr(self, name):
                out[name] = getattr(self, name)
        return out


def _vllm_semantics(options: dict[str, Any], iteration: str, kv: str) -> dict[str, Any]:
    """The vLLM V1 options, checked: true/false flags and a threshold >= 1 (0 or None: off)."""
    out: dict[str, Any] = {}
    for name in (*VLLM_SEMANTICS[:3], "dp_lockstep"):
        value = options.get(name, False)
        if value is None:
            value = False
        if not isinstance(value, (bool, np.bool_)):
            raise ConfigError(f"{name} {value!r} must be true or false.", field=name, fix="give true or false.")
        out[name] = bool(value)
    threshold = options.get("long_prefill_token_threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer))
                                  or threshold < 0):
        raise ConfigError(f"long_prefill_token_threshold {threshold!r} must be a whole number >= 0 (0: no cap).",
                          field="long_prefill_token_threshold", fix="give e.g. 0 (vLLM's default) or 512.")
    out["long_prefill_token_threshold"] = int(threshold) if threshold else None
    on = [name for name in VLLM_SEMANTICS if out[name]]
    if on and iteration != "mixed":
        raise ConfigError(f"{on[0]} is vLLM V1 scheduling, which forms mixed iterations.", field=on[0],
                          fix="use iteration='mixed', or drop it.")
    if (out["cache_at_schedule"] or out["full_prompt_admission"]) and kv != "paged":
        name = "cache_at_schedule" if out["cache_at_schedule"] else "full_prompt_admission"
        raise ConfigError(f"{name} acts on KV blocks, which need paged KV memory.", field=name,
                          fix="use kv='paged', or drop it.")
    return out
