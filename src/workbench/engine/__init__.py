"""The simulation engine: one event loop, clients, batch forming and KV memory, with the cost model injected.

* :mod:`~workbench.engine.core` - :func:`simulate`, the loop and its iteration formers
  (``exclusive``: the paper's prefill-or-decode stages; ``mixed``: vLLM V1 / Sarathi-Serve
  chunked prefill), :class:`EngineConfig`;
* :mod:`~workbench.engine.client` - a client's state (queue, running batch, KV use, clock);
* :mod:`~workbench.engine.kv` - KV memory reserved at admission, or paged with recompute
  preemption and a prefix cache;
* :mod:`~workbench.engine.chunked` - the chunked-prefill entry point and its cost formula.
"""

from workbench.engine.chunked import (  # noqa: F401
    CHUNKED_POLICIES,
    mixed_iteration_time,
    prefill_chunks,
    simulate_chunked,
)
from workbench.engine.client import ClientState  # noqa: F401
from workbench.engine.core import (  # noqa: F401
    DEFAULT_BLOCK_SIZE,
    DEFAULT_TOKEN_BUDGET,
    ENGINE_OPTIONS,
    ITERATION_MODES,
    KV_MODES,
    PROGRESS_MIN_REQUESTS,
    EngineConfig,
    simulate,
)
from workbench.engine.kv import PagedKV  # noqa: F401

__all__ = ["CHUNKED_POLICIES", "DEFAULT_BLOCK_SIZE", "DEFAULT_TOKEN_BUDGET", "ENGINE_OPTIONS", "ITERATION_MODES",
           "KV_MODES", "PROGRESS_MIN_REQUESTS", "ClientState", "EngineConfig", "PagedKV", "mixed_iteration_time",
           "prefill_chunks", "simulate", "simulate_chunked"]
