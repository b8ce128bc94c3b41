"""The hybrid method on a rolling horizon: hold arrivals, bin-pack them at decision epochs (``hybrid-rolling``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from workbench.errors import ConfigError
from workbench.policies.registry import (
    DISPATCH_DOCS,
    DISPATCHERS,
    HOLD,
    ClientView,
    Param,
    Policy,
    declare_params,
    register_policy,
)


class RollingHorizon:
    """Hold arriving requests; at each decision epoch bin-pack the held ones onto the clients.

    Decision epochs come every ``horizon_s`` seconds (on the grid ``k *
    horizon_s``) and, with ``release_on_idle``, as soon as some client could
    admit a request and has none waiting (it would otherwise idle or run
    with empty slots).  At an epoch the held requests are assigned by
    longest-processing-time-first bin packing (weights ``w_i`` of MODEL.md
    section 3) on top of each client's outstanding work, scaled by its
    speed: each request, heaviest first, goes to the client whose load after
    taking it is smallest.  LPT is within 4/3 of the optimal bin packing
    and takes microseconds, so it runs at every epoch; the offline stage's
    MIP is for the whole job, not for a handful of requests.
    """

    def __init__(self, weights: Sequence[float], *, horizon_s: float = 0.25, release_on_idle: bool = True) -> None:
        horizon_s = float(horizon_s)
        if not horizon_s >= 0 or math.isnan(horizon_s):
            raise ConfigError(f"horizon_s is {horizon_s!r}.", field="horizon_s",
                              fix="give the seconds between decision epochs, >= 0 (inf: only when a client idles).")
        if horizon_s == math.inf and not release_on_idle:
            raise ConfigError("horizon_s = inf without release_on_idle would hold requests forever.",
                              field="horizon_s", fix="give a finite horizon or release_on_idle=True.")
        self.weights = list(map(float, weights))
        self.horizon_s = horizon_s
        self.release_on_idle = bool(release_on_idle)
        self.held: list[int] = []
        self.first_held_s = math.inf
        self.epochs = 0

    def assign(self, request: int, now_s: float, clients: list[ClientView]) -> int:
        if not self.held:
            self.first_held_s = now_s
        self.held.append(request)
        return HOLD

    def next_epoch_s(self, now_s: float, clients: list[ClientView]) -> float:
        if not self.held:
            return math.inf
        if self.release_on_idle:
            for c in clients:
                if not c.waiting and c.n_running < c.batch_size:
                    return now_s
        h = self.horizon_s
        if h == 0:
            return max(now_s, self.first_held_s)
        if h == math.inf:
            return math.inf
        return max(now_s, math.ceil(self.first_held_s / h) * h)

    def release(self, now_s: float, clients: list[ClientView]) -> list[tuple[int, int]]:
        held, self.held = self.held, []
        self.first_held_s = math.inf
        self.epochs += 1
        w = self.weights
        speed = [c.speed for c in clients]
        load = [c.outstanding_s / s for c, s in zip(clients, speed)]
        out = []
        for i in sorted(held, key=lambda r: (-w[r], r)):
            best, best_load = 0, math.inf
            for j, (lj, sj) in enumerate(zip(load, speed)):
                after = lj + w[i] / sj
                if after < best_load:
                    best, best_load = j, after
            load[best] = best_load
            out.append((i, best))
        return out


def _rolling_dispatcher(*, trace, clients, batch_size, cost_model, params, **_) -> RollingHorizon:
    B = np.broadcast_to(np.asarray(batch_size), (int(clients),))
    # A mixed fleet comes as one model per client.  The engine measures each client's speed against
    # the first (ClientView.speed), so the weights are the first model's, as least-work's are.
    reference = cost_model[0] if isinstance(cost_model, (list, tuple)) else cost_model
    weights = reference.request_weight_s(trace["input_tokens"].to_numpy(float),
                                          trace["output_tokens"].to_numpy(float), int(np.max(B)))
    return RollingHorizon(weights, horizon_s=params.get("horizon_s", 0.25),
                          release_on_idle=params.get("release_on_idle", True))


DISPATCHERS["rolling"] = _rolling_dispatcher
declare_params("dispatch", "rolling",
               horizon_s=Param("float", "seconds between decision epochs (inf: only when a client idles)",
                               minimum=0.0),
               release_on_idle=Param("bool", "also release held requests as soon as a client would idle"))
DISPATCH_DOCS["rolling"] = ("hold arrivals; every horizon_s seconds, or when a client would idle, bin-pack the "
                            "held requests (LPT) on top of each client's outstanding work")


#: The online stage's defaults (``workbench.policies.lagrangian.ONLINE_PARAMS``, which may not be importable yet while
#: the registries load; a test checks that they agree) plus the epoch spacing.
ROLLING_PARAMS = {"mu": 1.0, "lookahead": "amortised", "horizon_s": 0.25}

register_policy(Policy("hybrid-rolling", "rolling", "longest-output", "lagrangian", dict(ROLLING_PARAMS),
                       description="the hybrid method on a rolling horizon: held arrivals bin-packed at "
                                   "decision epochs, longest-output-first queues, the Lagrangian rule"))


