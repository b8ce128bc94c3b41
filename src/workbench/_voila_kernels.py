"""The dashboard's kernel manager: a kept-ready kernel's idle clock starts when a page takes it.

Voila keeps preheated kernels out of the idle cull while they wait in its pool, but a kernel's
``last_activity`` is the moment it finished preheating.  A page that took a kernel which had waited
longer than the cull time therefore held a kernel "idle" for longer than the limit before its browser
had connected, and the next cull check stopped it: the page hung on "Loading widget..." (issue 28;
Voila's log: "Using pre-heated kernel", then "Culling 'idle' kernel ... 201 seconds of inactivity").

Voila wraps the configured ``VoilaConfiguration.multi_kernel_manager_class`` and calls this class's
:meth:`cull_kernel_if_idle` only for kernels outside its pool; the first such call for a kernel is the
first look at it since it left the pool (within one cull interval of the hand-over), so its idle clock
is restarted there and the cull applies from then on as to any kernel.
"""

from __future__ import annotations

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from jupyter_server.utils import ensure_async

try:
    from jupyter_server._tz import utcnow
except ImportError:  # pragma: no cover - older jupyter_server
    from datetime import datetime, timezone

    def utcnow():
        return datetime.now(timezone.utc)


class HandOverKernelManager(AsyncMappingKernelManager):
    """:class:`AsyncMappingKernelManager` whose idle clock of a kernel starts at its first cull check."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._clock_started: set[str] = set()

    async def cull_kernel_if_idle(self, kernel_id: str):
        kernel = self._kernels.get(kernel_id)
        if kernel is not None and kernel_id not in self._clock_started:
            self._clock_started.add(kernel_id)  # just out of the pool (or just started): not idle yet
            kernel.last_activity = utcnow()
            return None
        return await ensure_async(super().cull_kernel_if_idle(kernel_id))

    async def shutdown_kernel(self, kernel_id: str, *args, **kwargs):
        self._clock_started.discard(kernel_id)
        return await ensure_async(super().shutdown_kernel(kernel_id, *args, **kwargs))
