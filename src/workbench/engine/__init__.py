"""The simulation engine: one event loop over named parts, with the cost model injected.

* :mod:`~workbench.engine.core` - :func:`simulate` and :func:`build_engine` (a run to step and join);
* :mod:`~workbench.engine.config` - :class:`EngineConfig`, how iterations are formed and KV held;
* :mod:`~workbench.engine.loop` - :class:`Engine`, the loop: ``run(until_s)``, ``step()``, ``decide()``,
  ``add_replica()``, ``drain_replica()``;
* :mod:`~workbench.engine.clock` - the event clock;
* :mod:`~workbench.engine.replica` - a replica's state (queue, running batch, KV use, clock, life) and
  its read-only view;
* :mod:`~workbench.engine.requests` - the requests as the engine tracks them;
* :mod:`~workbench.engine.formers` - the iteration formers (``exclusive``: the paper's prefill-or-decode
  stages; ``mixed``: vLLM V1 / Sarathi-Serve chunked prefill);
* :mod:`~workbench.engine.kv` - KV memory reserved at admission, or paged with recompute preemption and
  a prefix cache;
* :mod:`~workbench.engine.hooks` - routing, iteration rules, work stealing and outside decisions;
* :mod:`~workbench.engine.recorder` and :mod:`~workbench.engine.assemble` - the segments and the schedule;
* :mod:`~workbench.engine.lifecycle` - replicas that come and go;
* :mod:`~workbench.engine.pools` - prefill and decode pools and the KV transfer between them;
* :mod:`~workbench.engine.shards` - a run whose replicas never interact, in parallel processes
  (``workers``; the same schedule, byte for byte);
* :mod:`~workbench.engine.chunked` - the chunked-prefill entry point and its cost formula.
"""

from workbench.engine.chunked import (  # noqa: F401
    CHUNKED_POLICIES,
    mixed_iteration_time,
    prefill_chunks,
    simulate_chunked,
)
from workbench.engine.config import (  # noqa: F401
    DEFAULT_BLOCK_SIZE,
    DEFAULT_TOKEN_BUDGET,
    ENGINE_OPTIONS,
    ITERATION_MODES,
    KV_MODES,
    PROGRESS_MIN_REQUESTS,
    EngineConfig,
)
from workbench.engine.core import build_engine, simulate  # noqa: F401
from workbench.engine.hooks import Decision  # noqa: F401
from workbench.engine.kv import PagedKV, PagedKVManager  # noqa: F401
from workbench.engine.loop import Engine, Step  # noqa: F401
from workbench.engine.pools import ROLES, STAGE_ROUTERS, Pools  # noqa: F401
from workbench.engine.replica import ClientState, Replica, ReplicaView  # noqa: F401
from workbench.engine.shards import SHARD_MIN_REQUESTS  # noqa: F401

__all__ = ["CHUNKED_POLICIES", "DEFAULT_BLOCK_SIZE", "DEFAULT_TOKEN_BUDGET", "ENGINE_OPTIONS", "ITERATION_MODES",
           "KV_MODES", "PROGRESS_MIN_REQUESTS", "ClientState", "Decision", "Engine", "EngineConfig", "PagedKV",
           "PagedKVManager", "Pools", "ROLES", "Replica", "ReplicaView", "SHARD_MIN_REQUESTS", "STAGE_ROUTERS", "Step",
           "build_engine", "mixed_iteration_time", "prefill_chunks", "simulate", "simulate_chunked"]
