"""A fleet that changes size with the load: a controller driving the engine's ``add_replica``/``drain_replica``.

The driver is a small loop over :meth:`~workbench.engine.loop.Engine.run` (``until_s`` = the next control
instant, every ``period_s``): between two calls it reads the replicas' views and the arrivals, asks the
controller (:mod:`workbench.policies.controllers`) for a replica count, and applies it within the
:class:`~workbench.policies.controllers.Autoscaling` limits.  The engine itself is unchanged: every
decision is made at an instant the engine has reached, through its public methods, so a schedule under
``fixed`` is the fixed fleet's schedule byte for byte (MODEL.md section 11.9).

A replica added at ``t`` is held (paid for) from ``t`` and serves from ``t + startup_s``.  A scale-down
drains the accepting replica with the least outstanding work (an idle one first); it finishes what it holds.
"""

from __future__ import annotations

import math
from bisect import bisect_right

import numpy as np

from workbench.errors import ConfigError
from workbench.policies.controllers import Autoscaling, FleetObservation


class Autoscaler:
    """The controller's loop over one engine: ``run()`` to the end, then ``describe()`` for the metrics."""

    def __init__(self, engine, controller, settings: Autoscaling, *, name: str, cost_model, batch_size: int,
                 kv_capacity_tokens=None, gpus: int = 1, startup_s: float = 0.0) -> None:
        self.engine, self.controller, self.settings, self.name = engine, controller, settings, name
        self.cost_model, self.batch_size, self.kv_capacity_tokens = cost_model, int(batch_size), kv_capacity_tokens
        self.gpus, self.startup_s = int(gpus), float(startup_s)
        trace = engine.trace
        self.arrival_s = np.sort(trace["arrival_s"].to_numpy(float))
        order = np.argsort(trace["arrival_s"].to_numpy(float), kind="stable")
        self.input_tokens = trace["input_tokens"].to_numpy(np.int64)[order]
        self.seen_tokens = np.asarray(engine.requests.seen, dtype=np.int64)[order]  # what schedulers may know
        self.last_arrival_s = float(self.arrival_s[-1]) if len(self.arrival_s) else 0.0
        self.drains: list[dict] = []  # {"replica", "drain_s"}
        self.actions = {"added": 0, "drained": 0}
        self._last_up_s = self._last_down_s = -math.inf
        self._fewer_since_s: float | None = None

    # -- one control instant ----------------------------------------------------------------------------
    def observe(self, now: float) -> FleetObservation:
        s = self.settings
        hi = bisect_right(self.arrival_s, now)
        lo = bisect_right(self.arrival_s, now - s.window_s)
        return FleetObservation(now, self.engine.replicas, tuple(self.arrival_s[lo:hi].tolist()),
                                tuple(self.input_tokens[lo:hi].tolist()), tuple(self.seen_tokens[lo:hi].tolist()),
                                s.window_s, self.startup_s)

    def act(self, now: float) -> None:
        fleet = self.observe(now)
        s = self.settings
        current = len(fleet.active)
        want = min(max(int(self.controller.desired(fleet)), s.min_replicas), s.max_replicas)
        if want < current:
            self._fewer_since_s = now if self._fewer_since_s is None else self._fewer_since_s
        else:
            self._fewer_since_s = None
        if want > current and now - self._last_up_s >= s.scale_up_cooldown_s:
            for _ in range(want - current):
                self.engine.add_replica(self.cost_model, self.batch_size, self.kv_capacity_tokens,
                                        ready_at_s=now + self.startup_s)
                self.actions["added"] += 1
            self._last_up_s = now
        elif (want < current and now - self._fewer_since_s >= s.scale_down_after_s
              and now - self._last_down_s >= s.scale_down_cooldown_s and now - self._last_up_s >= s.scale_down_cooldown_s):
            self._drain_one(fleet, now)

    def _drain_one(self, fleet: FleetObservation, now: float) -> None:
        arrivals_left = now < self.last_arrival_s
        loading = [v for v in fleet.active if v.state == "loading"]
        serving = [v for v in fleet.active if v.state == "serving"]
        if loading:  # a start not yet paid off is the cheapest to stop: the newest one
            victim = max(loading, key=lambda v: v.index)
        elif len(serving) > 1 or not arrivals_left:
            victim = min(serving, key=lambda v: (v.n_running + v.n_waiting > 0, v.outstanding_s, -v.index))
        else:
            return
        if len(serving) <= 1 and victim.state == "serving" and arrivals_left:
            return
        self.engine.drain_replica(victim.index)
        self.drains.append({"replica": victim.index, "drain_s": float(now)})
        self.actions["drained"] += 1
        self._last_down_s = now
        self._fewer_since_s = None

    # -- the whole run ----------------------------------------------------------------------------------
    def run(self) -> None:
        engine, period = self.engine, self.settings.period_s
        t = 0.0
        self.act(t)
        while not engine.done:
            t += period
            if engine.run(until_s=t) is not None:
                raise ConfigError("an autoscaled run cannot take outside iteration decisions.", field="decisions",
                                  fix="use decisions='rule' with a controller.")
            if engine.done:
                break
            if t <= self.last_arrival_s + period:  # no scaling once the trace has ended: the fleet drains
                self.act(t)

    def describe(self, schedule) -> dict:
        """The ``metrics.autoscaling`` entry and the GPU-hours held."""
        m = schedule.metrics
        held_s = m.get("replica_seconds", m["clients"] * schedule.makespan_s)
        return {"autoscaling": {"controller": self.name, **self.settings.describe(), "startup_s": self.startup_s,
                                "gpus_per_replica": self.gpus, "drains": self.drains, **self.actions},
                "gpu_hours": held_s * self.gpus / 3600.0}


def controlled_run(build, trace, clients: int, batch_size: int, policy, cost_model, *, controller, autoscaling=None,
                   controller_params: dict | None = None, **options):
    """:func:`~workbench.engine.core.simulate` under a controller: the fleet starts at ``clients`` replicas of
    ``cost_model`` and grows and shrinks within ``autoscaling`` (an :class:`~workbench.policies.controllers.Autoscaling` or a dict of its
    fields).  ``build`` is :func:`~workbench.engine.core.build_engine`.  Returns the schedule, its metrics
    with ``autoscaling`` and ``gpu_hours``."""
    from workbench.costmodel.prices import preset_hardware
    from workbench.policies.controllers import make_controller

    if isinstance(autoscaling, dict):
        autoscaling = Autoscaling(**autoscaling)
    settings = autoscaling or Autoscaling()
    if isinstance(batch_size, (list, tuple)) or isinstance(cost_model, (list, tuple)):
        raise ConfigError("a controlled fleet has one kind of replica.", field="cost_model",
                          fix="give one cost model and one batch size (the replicas it adds are alike).")
    if options.get("decisions", "rule") != "rule":
        raise ConfigError("an autoscaled run cannot take outside iteration decisions.", field="decisions",
                          fix="use decisions='rule' with a controller.")
    settings.check_start(int(clients))
    name = controller if isinstance(controller, str) else type(controller).__name__
    ctrl = make_controller(controller, **(controller_params or {})) if isinstance(controller, str) else controller
    try:
        hw = preset_hardware(cost_model)
    except ConfigError:
        if settings.startup_s is None:
            raise
        hw = {"gpus": 1, "weight_bytes": 0.0}  # a cost model without stated hardware: one GPU, the given delay
    kv = options.pop("kv_capacity_tokens", None)
    engine = build(trace, int(clients), int(batch_size), policy, cost_model, kv_capacity_tokens=kv, **options)
    model = engine.replicas[0].cost_model
    driver = Autoscaler(engine, ctrl, settings, name=name, cost_model=model, batch_size=int(batch_size),
                        kv_capacity_tokens=engine.replicas[0].kv_capacity_tokens,
                        gpus=hw["gpus"], startup_s=settings.startup_for(hw["weight_bytes"], hw["gpus"]))
    driver.run()
    schedule = engine.schedule()
    schedule.metrics.update(driver.describe(schedule))
    return schedule
