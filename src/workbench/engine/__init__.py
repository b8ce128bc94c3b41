"""The simulation engine: one event loop, clients, batch forming and KV memory, with the cost model injected."""

from workbench.engine.chunked import (  # noqa: F401
    CHUNKED_POLICIES,
    DEFAULT_TOKEN_BUDGET,
    ChunkedPolicy,
    chunked_lower_bound,
    mixed_iteration_time,
    prefill_chunks,
    simulate_chunked,
)
from workbench.engine.client import (  # noqa: F401
    ClientState,
)
from workbench.engine.core import (  # noqa: F401
    PROGRESS_MIN_REQUESTS,
    simulate,
)

__all__ = ['CHUNKED_POLICIES', 'ChunkedPolicy', 'ClientState', 'DEFAULT_TOKEN_BUDGET', 'PROGRESS_MIN_REQUESTS', 'chunked_lower_bound', 'mixed_iteration_time', 'prefill_chunks', 'simulate', 'simulate_chunked']
