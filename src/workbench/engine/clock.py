"""The event clock: arrivals in time order, and a heap of replica boundaries.

A boundary is ``(time, sequence, replica, version)``.  The sequence makes ties
deterministic (first pushed, first served); the version cancels an event a replica
has superseded (a decode run cut short by an arrival pushes a new end and bumps the
version, so the old end is skipped when popped).  A replica that is added mid-run
has a *ready* event under ``~index`` (a negative number), which no version cancels.
At equal times the loop takes arrivals first, then decision epochs, then boundaries.
"""

from __future__ import annotations

import math
from heapq import heappush

import numpy as np


class EventClock:
    """The boundaries still to come and the arrivals not yet taken."""

    __slots__ = ("events", "seq", "arrival_order", "arrival_s", "rank", "next_arrival")

    def __init__(self, engine_arrival_s: np.ndarray) -> None:
        self.events: list[tuple[float, int, int, int]] = []
        self.seq = 0
        by_arrival = np.argsort(engine_arrival_s, kind="stable")
        self.arrival_order = by_arrival.tolist()
        self.arrival_s = engine_arrival_s[by_arrival].tolist()
        self.arrival_s.append(math.inf)  # a sentinel: the stream never runs dry
        # Each arrival's position in the run's arrival order (a shard's clock takes part of it: engine.shards).
        self.rank = list(range(len(self.arrival_order)))
        self.next_arrival = 0  # position in arrival order of the next request to arrive

    def at(self, replica, t: float) -> None:
        """A boundary of ``replica`` at ``t``, superseding any it had pending."""
        replica.version += 1
        replica.pending = True
        self.seq += 1
        heappush(self.events, (t, self.seq, replica.index, replica.version))

    def ready_at(self, index: int, t: float) -> None:
        """Replica ``index`` (added mid-run) starts serving at ``t``."""
        self.seq += 1
        heappush(self.events, (t, self.seq, ~index, 0))

    def next_event_s(self) -> float:
        """The earliest of the next arrival and the next boundary (``inf`` when both have run out)."""
        t_ev = self.events[0][0] if self.events else math.inf
        return min(self.arrival_s[self.next_arrival], t_ev)

    def free(self) -> None:
        self.arrival_s.clear()
        self.arrival_order.clear()
