"""Scheduling policies behind registries keyed by the names users type.

A policy is three choices, each from its own registry:

* a **dispatcher** sends each request to a client when it arrives
  (``round-robin``, ``least-work``, ``offline`` bin packing, ...);
* a **queue order** sorts each client's waiting requests
  (``fifo``, ``longest-output``, ``shortest-output``, ...);
* an **iteration rule** decides, at each iteration boundary with free slots
  and waiting requests, how many requests to prefill now (0 means decode).

Named policies (``static``, ``continuous``, ``paper-baseline``, ...) bundle
the three with default parameters; every part can be overridden.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from workbench.errors import ConfigError

if TYPE_CHECKING:
    from workbench.sim import ClientState


# -- iteration rules ----------------------------------------------------------
class IterationRule(Protocol):
    """Chooses how many waiting requests to prefill at an iteration boundary."""

    def admit(self, client: ClientState) -> int:
        """Number of waiting requests to prefill now; 0 to decode instead.

        Called only when the client has a free slot and a waiting request
        that fits.  ``client.admissible`` is the most that can be admitted.
        """
        ...


class StaticRule:
    """Static batching: refill only when the batch is empty."""

    def admit(self, client: ClientState) -> int:
        return client.admissible if client.n_running == 0 else 0


class ContinuousRule:
    """Continuous batching, prefill first: fill every free slot as soon as it frees."""

    def admit(self, client: ClientState) -> int:
        return client.admissible


RULES: dict[str, Callable[..., IterationRule]] = {
    "static": lambda **_: StaticRule(),
    "continuous": lambda **_: ContinuousRule(),
}


def register_rule(name: str):
    def deco(factory):
        RULES[name] = factory
        return factory
    return deco


# -- queue orders ---------------------------------------------------------------
#: name -> key(input_tokens, output_tokens, arrival_s) giving an array; smaller goes first.
ORDERS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "fifo": lambda l, o, a: a,
    "arrival": lambda l, o, a: a,
    "longest-output": lambda l, o, a: -o,
    "shortest-output": lambda l, o, a: o,
    "longest-input": lambda l, o, a: -l,
    "shortest-input": lambda l, o, a: l,
    "longest-total": lambda l, o, a: -(l + o),
}
ORDER_DOCS = {
    "fifo": "arrival order (trace order at equal arrival times)",
    "arrival": "same as fifo",
    "longest-output": "longest output first: long decodes start early, short ones fill the tail",
    "shortest-output": "shortest output first",
    "longest-input": "longest prompt first",
    "shortest-input": "shortest prompt first",
    "longest-total": "longest prompt + output first",
}


# -- dispatchers -----------------------------------------------------------------
#: What ``assign`` returns to hold a request back; only a dispatcher that also has
#: ``next_epoch_s(now_s, clients) -> float`` (the next decision epoch, ``inf`` when none) and
#: ``release(now_s, clients) -> [(request, client), ...]`` may hold (see :mod:`workbench.arrivals`).
HOLD = -1


class Dispatcher(Protocol):
    """Sends each arriving request to a client (or, with deferred dispatch, answers :data:`HOLD`)."""

    def assign(self, request: int, now_s: float, clients: list[ClientState]) -> int: ...


class RoundRobin:
    """Request k (in arrival order) goes to client k mod |J|."""

    def __init__(self) -> None:
        self._next = 0

    def assign(self, request: int, now_s: float, clients: list[ClientState]) -> int:
        j = self._next % len(clients)
        self._next += 1
        return j


class LeastWork:
    """Join the client with the least outstanding work (sum of ``w_i`` assigned and unfinished).

    Ties go to the lowest client index, so runs are deterministic.
    """

    def assign(self, request: int, now_s: float, clients: list[ClientState]) -> int:
        best, best_load = 0, float("inf")
        for j, c in enumerate(clients):
            load = c.outstanding_s / c.speed
            if load < best_load:
                best, best_load = j, load
        return best


class Assigned:
    """A fixed assignment computed before the run (the offline stage)."""

    def __init__(self, assignment: np.ndarray) -> None:
        self.assignment = np.asarray(assignment, dtype=np.int64)

    def assign(self, request: int, now_s: float, clients: list[ClientState]) -> int:
        return int(self.assignment[request])


def _offline_dispatcher(*, trace, clients, batch_size, cost_model, params) -> Dispatcher:
    from workbench.offline import assign  # the offline stage is optional for the simulator's import

    method = params.get("method", "auto")
    result = assign(trace, clients=clients, batch_size=batch_size, cost_model=cost_model, method=method,
                    time_limit=params.get("time_limit", 2.0), rel_gap=params.get("rel_gap", 5e-4))
    return Assigned(result.assignment)


#: name -> factory(trace=, clients=, batch_size=, cost_model=, params=) -> Dispatcher
DISPATCHERS: dict[str, Callable[..., Dispatcher]] = {
    "round-robin": lambda **_: RoundRobin(),
    "least-work": lambda **_: LeastWork(),
    "offline": _offline_dispatcher,
}
DISPATCH_DOCS = {
    "round-robin": "request k in arrival order goes to client k mod |J|",
    "least-work": "join the client with the least outstanding work",
    "offline": "the offline bin-packing assignment (minimizing-makespan), fixed before the run",
}


# -- named policies ----------------------------------------------------------------
@dataclass(frozen=True)
class Policy:
    """A named bundle of dispatcher, queue order and iteration rule, with their parameters."""

    name: str
    dispatch: str
    order: str
    rule: str
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def describe(self) -> dict[str, Any]:
        return {"policy": self.name, "dispatch": self.dispatch, "order": self.order, "rule": self.rule,
                **self.params}


POLICIES: dict[str, Policy] = {}


def register_policy(policy: Policy) -> Policy:
    POLICIES[policy.name] = policy
    return policy


register_policy(Policy("static", "round-robin", "fifo", "static",
                       description="static batching: fill the batch, decode until empty, refill"))
register_policy(Policy("continuous", "round-robin", "fifo", "continuous",
                       description="continuous batching, prefill first (vLLM's classic policy)"))
register_policy(Policy("paper-baseline", "round-robin", "fifo", "continuous",
                       description="the paper's baseline as we state it: round-robin dispatch in trace order, "
                                   "FIFO queues, continuous prefill-first batching"))
register_policy(Policy("least-work", "least-work", "fifo", "continuous",
                       description="online dispatch to the least-loaded client, continuous batching"))
register_policy(Policy("offline", "offline", "fifo", "continuous",
                       description="offline stage only: bin-packing assignment, then continuous batching"))


def list_policies() -> list[str]:
    return list(POLICIES)


def resolve_policy(name: str | Policy, *, dispatch: str | None = None, order: str | None = None,
                   rule: str | None = None, **params: Any) -> Policy:
    """The named policy with any part overridden; checks every name."""
    if isinstance(name, Policy):
        policy = name
    else:
        if name not in POLICIES:
            raise ConfigError(f"unknown policy '{name}'.", field="policy",
                              fix=f"use one of {', '.join(POLICIES)}.")
        policy = POLICIES[name]
    changes: dict[str, Any] = {}
    if dispatch is not None:
        changes["dispatch"] = dispatch
    if order is not None:
        changes["order"] = order
    if rule is not None:
        changes["rule"] = rule
    if params:
        changes["params"] = {**policy.params, **{k: v for k, v in params.items() if v is not None}}
    policy = replace(policy, **changes) if changes else policy
    for kind, value, registry in (("dispatch", policy.dispatch, DISPATCHERS), ("order", policy.order, ORDERS),
                                  ("rule", policy.rule, RULES)):
        if value not in registry:
            raise ConfigError(f"unknown {kind} '{value}'.", field=kind, fix=f"use one of {', '.join(registry)}.")
    return policy


# Policies defined in their own modules register themselves on import.
from workbench import online as _online  # noqa: E402,F401
from workbench import arrivals as _arrivals  # noqa: E402,F401
