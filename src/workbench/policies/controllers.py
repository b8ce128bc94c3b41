"""The registry of autoscaling controllers, keyed by the names users type (a leaf: imports nothing above it).

A **controller** is the fourth choice beside dispatch, queue order and iteration rule: it decides how
many replicas the fleet should have while a trace runs.  Every control period the engine's driver
(:mod:`workbench.engine.autoscale`) hands it a :class:`FleetObservation` (read-only replica views and the
arrivals it saw) and asks ``Controller.desired`` for a replica count; the driver then applies the
:class:`Autoscaling` limits (minimum and maximum replicas, cooldowns, scale-down only after the wish has
held for a while, start-up delay) through the engine's public ``add_replica`` / ``drain_replica``.

The registry starts empty; :mod:`workbench.policies.scaling` registers ``fixed``, ``threshold``,
``target-utilisation`` and ``slo`` (MODEL.md section 11.9).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from workbench.errors import ConfigError


@dataclass(frozen=True)
class FleetObservation:
    """What a controller may know at a control instant (never the true output lengths)."""

    now_s: float
    #: read-only views of every replica the run has held (``state``: loading, serving, draining, gone)
    replicas: tuple
    #: arrival times (s) of the requests that arrived in the last ``Autoscaling.window_s``
    recent_arrivals_s: tuple[float, ...]
    #: their prompt and (predicted) output lengths, aligned with ``recent_arrivals_s``
    recent_input_tokens: tuple[int, ...]
    recent_output_tokens: tuple[int, ...]
    window_s: float
    #: the time a replica added now takes before it serves (s)
    startup_s: float

    @property
    def active(self) -> list:
        """Replicas that serve or will serve (loading or serving): the fleet's size as a controller counts it."""
        return [v for v in self.replicas if v.state in ("loading", "serving")]

    @property
    def serving(self) -> list:
        return [v for v in self.replicas if v.state == "serving"]

    @property
    def arrival_rate_per_s(self) -> float:
        """Requests per second over the window (from the first instant of the run while it is shorter)."""
        span = min(self.window_s, self.now_s)
        return len(self.recent_arrivals_s) / span if span > 0 else 0.0


class Controller(Protocol):
    """Chooses the number of replicas (loading + serving) the fleet should have now."""

    def desired(self, fleet: FleetObservation) -> int: ...


#: name -> ``factory(**params)`` -> Controller; filled by :mod:`workbench.policies.scaling`.
CONTROLLERS: dict[str, Callable[..., Controller]] = {}
#: name -> one line for ``workbench simulate --help`` and the docs.
CONTROLLER_DOCS: dict[str, str] = {}
#: name -> {parameter: (type, default, meaning)}: the typed schema of each controller's parameters.
CONTROLLER_PARAMS: dict[str, dict[str, tuple[type, Any, str]]] = {}


def register_controller(name: str, doc: str, params: dict[str, tuple[type, Any, str]] | None = None):
    """Decorator: register a controller factory under ``name`` with its one-line doc and parameters."""

    def deco(factory):
        CONTROLLERS[name] = factory
        CONTROLLER_DOCS[name] = doc
        CONTROLLER_PARAMS[name] = dict(params or {})
        return factory
    return deco


def make_controller(name: str, **params: Any) -> Controller:
    """The controller ``name`` with its parameters checked against its schema (text is parsed)."""
    if name not in CONTROLLERS:
        raise ConfigError(f"unknown controller '{name}'.", field="controller",
                          fix=f"use one of {', '.join(CONTROLLERS) or '(none registered)'}.")
    schema = CONTROLLER_PARAMS[name]
    typed = {}
    for key, value in params.items():
        if key not in schema:
            known = ", ".join(schema) or "none"
            raise ConfigError(f"controller '{name}' takes no parameter '{key}'.", field=key,
                              fix=f"use one of its parameters: {known}.")
        kind = schema[key][0]
        try:
            typed[key] = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"controller parameter {key}={value!r} is not a {kind.__name__}.", field=key,
                              fix=f"give a {kind.__name__}.") from None
    return CONTROLLERS[name](**typed)


#: Default bandwidth at which a starting replica reads its weights, per GPU (bytes/s): a local NVMe read of
#: about 2 GB/s, the slowest link of disk -> host memory -> PCIe -> GPU memory for a single stream (PCIe 4.0
#: x16 carries about 25 GB/s; network storage is often slower than 2 GB/s).  Overridable per run.
DEFAULT_LOAD_BANDWIDTH_BYTES_PER_S = 2.0e9
#: Time a replica takes to start besides reading its weights (process and CUDA context start, CUDA-graph
#: capture, warm-up), s.  Overridable per run.
DEFAULT_STARTUP_OVERHEAD_S = 30.0


@dataclass(frozen=True)
class Autoscaling:
    """How the driver applies a controller's wishes (every time in seconds).

    ``startup_s`` None: derived from the preset's weights, ``overhead_s + weight_bytes / (gpus x
    load_bandwidth_bytes_per_s)`` (each GPU reads its tensor-parallel shard at once).  A scale-down is
    applied only after the controller has wished for fewer replicas for ``scale_down_after_s`` without a
    break (Kubernetes' stabilisation window), and drains the replica with the least outstanding work
    (an idle one first).
    """

    period_s: float = 5.0
    min_replicas: int = 1
    max_replicas: int = 16
    scale_up_cooldown_s: float = 0.0
    scale_down_cooldown_s: float = 60.0
    scale_down_after_s: float = 120.0
    window_s: float = 60.0
    startup_s: float | None = None
    load_bandwidth_bytes_per_s: float = DEFAULT_LOAD_BANDWIDTH_BYTES_PER_S
    overhead_s: float = DEFAULT_STARTUP_OVERHEAD_S

    def __post_init__(self) -> None:
        for name in ("period_s", "load_bandwidth_bytes_per_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"autoscaling {name} {value!r} is not a positive number.", field=name,
                                  fix="give a positive number of seconds (bytes/s for the bandwidth).")
        for name in ("scale_up_cooldown_s", "scale_down_cooldown_s", "scale_down_after_s", "window_s",
                     "overhead_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"autoscaling {name} {value!r} is not a number of seconds >= 0.", field=name,
                                  fix="give 0 or more.")
        if self.startup_s is not None and not (math.isfinite(self.startup_s) and self.startup_s >= 0):
            raise ConfigError(f"startup_s {self.startup_s!r} is not a number of seconds >= 0.", field="startup_s",
                              fix="give 0 or more, or leave it out to derive it from the preset's weights.")
        if not (isinstance(self.min_replicas, int) and self.min_replicas >= 1):
            raise ConfigError(f"min_replicas {self.min_replicas!r} is below 1.", field="min_replicas",
                              fix="keep at least one replica.")
        if not (isinstance(self.max_replicas, int) and self.max_replicas >= self.min_replicas):
            raise ConfigError(f"max_replicas {self.max_replicas!r} is below min_replicas {self.min_replicas}.",
                              field="max_replicas", fix="give max_replicas >= min_replicas.")

    def check_start(self, clients: int) -> None:
        """The fleet a controlled run starts with (``clients``) lies within the limits."""
        if not self.min_replicas <= clients <= self.max_replicas:
            raise ConfigError(f"clients {clients} (the starting fleet) is outside min_replicas..max_replicas "
                              f"({self.min_replicas}..{self.max_replicas}).", field="clients",
                              fix="start with a fleet within the autoscaling limits.")

    def startup_for(self, weight_bytes: float, gpus: int) -> float:
        """The start-up delay of one replica: the stated one, or derived from its weights."""
        if self.startup_s is not None:
            return float(self.startup_s)
        return float(self.overhead_s) + float(weight_bytes) / (max(1, int(gpus)) * self.load_bandwidth_bytes_per_s)

    def describe(self) -> dict[str, Any]:
        return asdict(self)
