"""The places where the engine asks someone else: the router, the iteration rule, work stealing, an outside caller.

Contracts (MODEL.md section 11.3):

* **Router** (a dispatcher of :mod:`workbench.policies`): ``assign(request_row, now_s, replicas)``
  is called once per arrival with every replica (position = index; each a
  :class:`~workbench.policies.registry.ClientView`) and returns a replica index, or
  :data:`~workbench.policies.registry.HOLD` where it also has ``next_epoch_s``/``release``.
  A request sent to a replica that is not accepting (loading, draining or gone) goes to the
  accepting replica with the least outstanding work per unit speed (lowest index on ties).
* **Iteration rule**: ``admit(view)`` at a boundary with free slots and ``view.admissible > 0``
  waiting requests that fit; returns how many to prefill (0 or less: decode).  An empty
  replica always refills, or it would idle forever.
* **Outside decisions** (``decisions="external"``): the engine stops at each such boundary and
  hands the caller a :class:`Decision`; :meth:`~workbench.engine.loop.Engine.decide` answers it.
"""

from __future__ import annotations

from dataclasses import dataclass
from heapq import heappop, heappush

from workbench.errors import ConfigError


@dataclass(frozen=True)
class Decision:
    """A replica at an iteration boundary with a choice: admit ``0..admissible`` waiting requests.

    ``0`` decodes instead; a replica with nothing running must admit at least one
    (``must_admit``).  ``view`` is the replica's :class:`~workbench.engine.replica.ReplicaView`.
    """

    time_s: float
    replica: int
    admissible: int
    must_admit: bool
    view: object

    def check(self, admit) -> int:
        """The answer ``admit`` as a count, or a refusal that says what is allowed."""
        if isinstance(admit, bool) or not hasattr(admit, "__index__"):
            raise ConfigError(f"the decision's answer {admit!r} is not a whole number.", field="admit",
                              fix=f"give 0 (decode) to {self.admissible} (requests to prefill).")
        k = int(admit)
        low = 1 if self.must_admit else 0
        if not low <= k <= self.admissible:
            why = "it has nothing running, so it must admit at least 1" if self.must_admit and k < 1 else (
                f"{self.admissible} waiting requests fit")
            raise ConfigError(f"replica {self.replica} cannot admit {k} at {self.time_s:.6f} s: {why}.",
                              field="admit", fix=f"give {low} to {self.admissible}.")
        return k


class WorkStealing:
    """A replica with free slots and an empty queue takes waiting requests from the busiest replica.

    The victim is the replica with waiting requests and the most predicted outstanding work
    per unit speed (ties: lowest index).  The thief takes the requests the victim would start
    next (its queue head), one at a time, up to its free slots and only while the victim stays
    at least as loaded as the thief after the move, so work never moves from a lighter replica
    to a heavier one and no request bounces back.  A request is only taken if it fits the
    thief's KV cache.
    """

    def __init__(self, replicas: list, requests, clock) -> None:
        self.replicas = replicas
        self.requests = requests
        self.clock = clock

    def steal_for(self, c) -> None:
        victim, load_v = None, -1.0
        for v in self.replicas:
            if v.waiting and v is not c:
                load = v.outstanding_s / v.speed
                if load > load_v:
                    victim, load_v = v, load
        if victim is None:
            return
        rq = self.requests
        load_c = c.outstanding_s / c.speed
        cap = c.kv_capacity_tokens
        vw = victim.waiting
        for _ in range(c.batch_size - c.n_running):
            if not vw:
                break
            if vw[0] < 0:
                break  # a preempted request stays: its recompute and cached blocks are the victim's
            i = rq.request_of_rank(vw[0])
            w = rq.w[i]
            if load_v - w / victim.speed < load_c + w / c.speed:
                break
            if cap is not None and rq.l[i] + rq.o[i] > cap:
                break
            heappush(c.waiting, heappop(vw))
            rq.client_of[i] = c.index
            victim.outstanding_s -= w
            c.outstanding_s += w
            load_v -= w / victim.speed
            load_c += w / c.speed
            rq.stolen += 1

    def wake_idle(self, now: float) -> None:
        """Give the first idle replica (no iteration pending) a boundary at ``now``, where it may steal."""
        for v in self.replicas:
            if not v.pending and v.accepting:
                self.clock.at(v, max(v.clock_s, now))
                return

