"""The registries of scheduling policies, keyed by the names users type (a leaf: imports nothing above it).

A policy is three choices, each from its own registry:

* a **dispatcher** sends each request to a client when it arrives
  (``round-robin``, ``least-work``, ``offline`` bin packing, ...);
* a **queue order** sorts each client's waiting requests
  (``fifo``, ``longest-output``, ``shortest-output``, ...);
* an **iteration rule** decides, at each iteration boundary with free slots
  and waiting requests, how many requests to prefill now (0 means decode).

Named policies (``static``, ``continuous``, ``paper-baseline``, ...) bundle
the three with default parameters; every part can be overridden.  The
registries start empty: each implementation registers itself in the module
that defines it (:mod:`workbench.policies.builtin`,
:mod:`workbench.policies.lagrangian`, :mod:`workbench.policies.rolling`,
:mod:`workbench.offline.dispatch`), and importing :mod:`workbench` brings
them all in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from workbench.errors import ConfigError


class ClientView(Protocol):
    """What a rule or a dispatcher may read of a client (the engine's client state satisfies it).

    ``running`` is not here on purpose: it holds the true output lengths,
    which only the engine knows; a scheduler looks ahead through
    :meth:`predicted_finish_counts`.
    """

    index: int
    batch_size: int
    speed: float
    outstanding_s: float
    admissible: int
    waiting: list[int]

    @property
    def n_running(self) -> int: ...

    @property
    def n_waiting(self) -> int: ...

    @property
    def free_slots(self) -> int: ...

    @property
    def cost_model(self): ...

    @property
    def rule_model(self):
        """The linear cost model rules price with (the cost model itself, or a measured model's linear one)."""
        ...

    def predicted_finish_counts(self) -> list[int]: ...

    def predicted_iterations_to_next_completion(self) -> int: ...


# -- iteration rules ----------------------------------------------------------
class IterationRule(Protocol):
    """Chooses how many waiting requests to prefill at an iteration boundary."""

    def admit(self, client: ClientView) -> int:
        """Number of waiting requests to prefill now; 0 to decode instead.

        Called only when the client has a free slot and a waiting request
        that fits.  ``client.admissible`` is the most that can be admitted.
        """
        ...


#: name -> ``factory(**params)`` -> IterationRule; filled by the modules that define the rules.
RULES: dict[str, Callable[..., IterationRule]] = {}


def register_rule(name: str):
    """Decorator: register an iteration-rule factory under ``name``."""

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
#: ``release(now_s, clients) -> [(request, client), ...]`` may hold (see :mod:`workbench.studies.loadsweep`).
HOLD = -1


class Dispatcher(Protocol):
    """Sends each arriving request to a client (or, with deferred dispatch, answers :data:`HOLD`).

    One whose choice never depends on the clients' state may also have ``in_advance(arrival_order,
    n_clients) -> array`` (each request's client, before the run): its replicas never interact, so the engine
    may run them in parallel shards (:mod:`workbench.engine.shards`).
    """

    def assign(self, request: int, now_s: float, clients: list[ClientView]) -> int: ...


#: name -> factory(trace=, clients=, batch_size=, cost_model=, params=) -> Dispatcher
DISPATCHERS: dict[str, Callable[..., Dispatcher]] = {}
#: name -> one line for ``workbench policies`` and the widgets.
DISPATCH_DOCS: dict[str, str] = {}


# -- parameters: one typed schema for every policy -------------------------------------
@dataclass(frozen=True)
class Param:
    """A policy parameter: its type (``bool``, ``int``, ``float``, ``str`` or ``object``) and meaning."""

    kind: str
    doc: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None


#: name -> type and meaning; the parts that take each are in :data:`PART_PARAMS`.
PARAMS: dict[str, Param] = {
    "steal": Param("bool", "work stealing: a client with free slots and an empty queue takes waiting requests "
                           "from the most loaded client"),
    "token_budget": Param("int", "tokens per chunked-prefill iteration, decodes included (above the batch size)",
                          minimum=2),
}
#: ("rule" | "dispatch" | "engine", name) -> the parameters that part takes.  The two simulators
#: (``engine.core``: prefill-first; ``engine.chunked``) are declared here so a leaf holds them all.
PART_PARAMS: dict[tuple[str, str], tuple[str, ...]] = {("engine", "prefill-first"): ("steal",),
                                                       ("engine", "chunked"): ("token_budget",)}

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def declare_params(part: str, name: str, **params: Param) -> None:
    """Declare the parameters the ``part`` (``"rule"``, ``"dispatch"`` or ``"engine"``) named ``name`` takes."""
    for key, spec in params.items():
        if key in PARAMS and PARAMS[key] != spec:
            raise ValueError(f"parameter {key!r} declared twice with different types")
        PARAMS[key] = spec
    PART_PARAMS[(part, name)] = tuple(params)


def coerce_param(key: str, value: Any) -> Any:
    """``value`` as the declared type of parameter ``key`` (text from the command line is parsed)."""
    spec = PARAMS[key]
    kind = spec.kind

    def bad(what: str) -> ConfigError:
        extra = f" one of {', '.join(spec.choices)}" if spec.choices else ""
        return ConfigError(f"{value!r} is not {what}.", field=key, fix=f"give {key} as{extra or ' ' + what} "
                           f"({spec.doc}).")

    if kind == "object":
        return value
    if kind == "bool":
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, (int, np.integer)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise bad("a boolean (true/false, yes/no, 1/0)")
    if kind == "str":
        if not isinstance(value, str):
            raise bad("a name")
        if spec.choices and value not in spec.choices:
            raise bad(f"one of {', '.join(spec.choices)}")
        return value
    if isinstance(value, (bool, np.bool_)):
        raise bad("a number")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if kind == "int" else float(text)
        except ValueError:
            raise bad("a whole number" if kind == "int" else "a number") from None
    if kind == "int":
        if isinstance(value, (float, np.floating)):
            if not math.isfinite(value) or value != int(value):
                raise bad("a whole number")
            value = int(value)
        if not isinstance(value, (int, np.integer)):
            raise bad("a whole number")
        value = int(value)
    else:
        if not isinstance(value, (int, float, np.integer, np.floating)):
            raise bad("a number")
        value = float(value)
        if math.isnan(value):
            raise bad("a number")
    if spec.minimum is not None and value < spec.minimum:
        raise ConfigError(f"{value!r} is below {spec.minimum:g}.", field=key,
                          fix=f"give {key} >= {spec.minimum:g} ({spec.doc}).")
    return value


def check_params(params: dict[str, Any], parts: Iterable[tuple[str, str]], *, policy: str) -> dict[str, Any]:
    """``params`` checked against what ``parts`` take: unknown keys refused, values converted to their types."""
    known: list[str] = []
    parts = list(parts)
    for part in parts:
        known.extend(k for k in PART_PARAMS.get(part, ()) if k not in known)
    # A rule or dispatcher a user registered without declaring its parameters (a notebook's logged rule,
    # say) takes whatever it is given: it is the one to refuse what it does not know.
    open_schema = any(part not in PART_PARAMS for part in parts if part[0] in ("rule", "dispatch"))
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key not in known and open_schema:
            out[key] = coerce_param(key, value) if key in PARAMS else value
            continue
        if key not in known:
            what = (f"an unknown parameter of policy '{policy}'" if key not in PARAMS
                    else f"a parameter that policy '{policy}' does not take")
            raise ConfigError(f"'{key}' is {what}.", field=key,
                              fix=f"use one of {', '.join(sorted(known)) or '(none: this policy takes no parameters)'}.")
        out[key] = coerce_param(key, value)
    return out


def policy_parts(policy: Policy, *, engine: str = "prefill-first") -> list[tuple[str, str]]:
    """The parts whose parameters ``policy`` takes."""
    return [("engine", engine), ("rule", policy.rule), ("dispatch", policy.dispatch)]


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
    #: How the engine forms iterations and holds KV memory (``workbench.engine.core.EngineConfig``
    #: options: iteration, token_budget, max_partial_prefills, kv, block_size, prefix_caching); empty
    #: is the paper's engine: exclusive prefill or decode stages, KV reserved at admission.
    engine: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"policy": self.name, "dispatch": self.dispatch, "order": self.order, "rule": self.rule,
                **self.params}


POLICIES: dict[str, Policy] = {}


def register_policy(policy: Policy) -> Policy:
    POLICIES[policy.name] = policy
    return policy


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
    defaults = dict(policy.params)
    if rule is not None or dispatch is not None:
        # The policy's own defaults for a part the caller replaced do not follow it to the new part
        # (hybrid with rule="continuous" keeps no mu); what the caller passes is always checked.
        replaced = [("rule", policy.rule)] if rule is not None else []
        replaced += [("dispatch", policy.dispatch)] if dispatch is not None else []
        dropped = {k for part in replaced for k in PART_PARAMS.get(part, ())}
        defaults = {k: v for k, v in defaults.items() if k not in dropped}
    if params or defaults != policy.params:
        changes["params"] = {**defaults, **{k: v for k, v in params.items() if v is not None}}
    policy = replace(policy, **changes) if changes else policy
    for kind, value, registry in (("dispatch", policy.dispatch, DISPATCHERS), ("order", policy.order, ORDERS),
                                  ("rule", policy.rule, RULES)):
        if value not in registry:
            raise ConfigError(f"unknown {kind} '{value}'.", field=kind, fix=f"use one of {', '.join(registry)}.")
    if policy.params:
        policy = replace(policy, params=check_params(policy.params, policy_parts(policy), policy=policy.name))
    return policy
