"""The autoscaling controllers (registered in :mod:`workbench.policies.controllers`).

* ``fixed`` keeps the fleet it starts with;
* ``threshold`` adds a replica when the waiting requests (or the KV share held) per serving replica exceed
  ``high`` and removes one below ``low`` (cooldowns and the scale-down window are the driver's);
* ``target-utilisation`` is Kubernetes' Horizontal Pod Autoscaler:
  ``desired = ceil(current x metric / target)``, left unchanged within the tolerance (HPA's 0.1); the
  metric is the mean over serving replicas of (running + waiting) / batch size;
* ``slo`` is predictive: it forecasts the arrival rate one start-up delay ahead, prices a request with the
  replica's own cost model, and takes the smallest fleet whose projected p99 time to first token meets the
  target (per replica, prompts queue for the time the decodes leave; see
  ``SloController.projected_ttft_s`` and docs/capacity.md).
"""

from __future__ import annotations

import math

import numpy as np

from workbench.policies.controllers import FleetObservation, register_controller


@register_controller("fixed", "keep the fleet it starts with")
class Fixed:
    def desired(self, fleet: FleetObservation) -> int:
        return len(fleet.active)


@register_controller("threshold", "one replica more above `high` waiting requests (or KV share) per serving "
                     "replica, one fewer below `low`", {
                         "metric": (str, "queue", "queue (waiting requests per serving replica) or kv (KV share held)"),
                         "high": (float, 4.0, "scale up above this"),
                         "low": (float, 0.5, "scale down below this"),
                     })
class Threshold:
    def __init__(self, metric: str = "queue", high: float = 4.0, low: float = 0.5) -> None:
        from workbench.errors import ConfigError

        if metric not in ("queue", "kv"):
            raise ConfigError(f"threshold metric {metric!r} is not known.", field="metric", fix="use queue or kv.")
        if not low < high:
            raise ConfigError(f"threshold low {low} is not below high {high}.", field="low", fix="give low < high.")
        self.metric, self.high, self.low = metric, float(high), float(low)

    def value(self, fleet: FleetObservation) -> float:
        serving = fleet.serving
        if not serving:
            return 0.0
        if self.metric == "queue":
            return sum(v.n_waiting for v in serving) / len(serving)
        return float(np.mean([v.kv_used_tokens / max(1, v.kv_capacity_tokens) for v in serving]))

    def desired(self, fleet: FleetObservation) -> int:
        current = len(fleet.active)
        x = self.value(fleet)
        if x > self.high:
            return current + 1
        if x < self.low:
            return current - 1
        return current


@register_controller("target-utilisation", "Kubernetes HPA: ceil(current x utilisation / target), "
                     "utilisation = (running + waiting) / batch size per serving replica", {
                         "target": (float, 0.7, "the utilisation aimed at"),
                         "tolerance": (float, 0.1, "no change while |utilisation / target - 1| <= this (HPA's 0.1)"),
                     })
class TargetUtilisation:
    def __init__(self, target: float = 0.7, tolerance: float = 0.1) -> None:
        from workbench.errors import ConfigError

        if not target > 0:
            raise ConfigError(f"target {target} is not positive.", field="target", fix="give e.g. 0.7.")
        self.target, self.tolerance = float(target), float(tolerance)

    def desired(self, fleet: FleetObservation) -> int:
        serving = fleet.serving
        current = len(fleet.active)
        if not serving:
            return current
        util = float(np.mean([(v.n_running + v.n_waiting) / v.batch_size for v in serving]))
        ratio = util / self.target
        if abs(ratio - 1.0) <= self.tolerance:
            return current
        # HPA counts the pods that serve; loading ones are added back so a start in progress is not repeated.
        return math.ceil(len(serving) * ratio) + (current - len(serving))


def erlang_c(servers: int, offered: float) -> float:
    """P(wait > 0) in an M/M/c queue with ``servers`` servers and ``offered`` = lambda / mu (Erlang's C)."""
    if offered <= 0:
        return 0.0
    if offered >= servers:
        return 1.0
    # The Erlang B recursion, then C from B: stable for large counts.
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    rho = offered / servers
    return b / (1.0 - rho + rho * b)


def replica_service_s(model, batch_size: int, input_tokens: float, output_tokens: float) -> float:
    """The replica time one request takes at a full batch (s): its prompt, and its share of the batch's decodes.

    ``model`` is the linear model (``a_p, b_p, a_d, b_d, c_d``): a decode iteration of ``B`` requests with mean
    context ``L + O/2`` takes ``a_d + B (b_d + c_d (L + O/2))``, shared by ``B`` requests for ``O - 1`` steps.
    """
    B = max(1, int(batch_size))
    context = input_tokens + output_tokens / 2.0
    decode_share = (model.a_d / B + model.b_d + model.c_d * context) * max(0.0, output_tokens - 1.0)
    return model.b_p * input_tokens + model.a_p / B + decode_share


@register_controller("slo", "predictive: the smallest fleet whose projected p99 TTFT (prompts queueing for "
                     "the time decodes leave, priced by the cost model, the arrival rate forecast one start-up "
                     "ahead) meets the target", {
                         "ttft_slo_s": (float, 1.0, "the p99 time-to-first-token target"),
                         "headroom": (float, 0.9, "aim at this share of the target"),
                         "quantile": (float, 0.99, "the TTFT quantile held to the target"),
                     })
class SloController:
    def __init__(self, ttft_slo_s: float = 1.0, headroom: float = 0.9, quantile: float = 0.99) -> None:
        self.ttft_slo_s, self.headroom, self.quantile = float(ttft_slo_s), float(headroom), float(quantile)

    def forecast_rate(self, fleet: FleetObservation) -> float:
        """The arrival rate one start-up delay ahead: the window's rate, raised by its trend when the trend is
        real (the two half-windows' counts differ by more than two standard deviations of Poisson noise), so
        a rising load is met early and noise does not add replicas."""
        t = np.asarray(fleet.recent_arrivals_s, dtype=float)
        rate = fleet.arrival_rate_per_s
        half = fleet.window_s / 2.0
        if len(t) < 4 or fleet.now_s < fleet.window_s:
            return rate
        newer = float(np.sum(t > fleet.now_s - half))
        older = float(len(t) - newer)
        if newer - older <= 2.0 * math.sqrt(newer + older):
            return rate
        slope = (newer - older) / half / half  # requests / s^2
        return newer / half + slope * fleet.startup_s

    def projected_ttft_s(self, replicas: int, rate: float, model, batch_size: int, input_tokens: float,
                         output_tokens: float, long_prompt_tokens: float) -> float:
        """The p99 TTFT of ``replicas`` replicas sharing ``rate`` (each gets ``rate / replicas``).

        A replica's batch has ``B`` slots, so requests queue for their prefill, not for a slot: the decodes
        take a share ``rho_d`` of its time (each request's decode share at a full batch,
        :func:`replica_service_s` less its prompt), and prompts are served in what is left, an M/M/1 queue of
        prompts of ``b_p L`` seconds slowed by ``1 / (1 - rho_d)``.  Its p99 wait is
        ``ln(rho / 0.01) s / (1 - rho)`` (0 when ``rho <= 0.01``).  The p99 of a prompt's own prefill and
        that wait are not reached by the same request: their excesses over the mean prefill combine as
        independent tails, ``mean + sqrt((prefill_99 - mean)^2 + wait_99^2)``.
        """
        lam = rate / replicas
        prompt_s = model.b_p * input_tokens + model.a_p / max(1, batch_size)
        decode_s = replica_service_s(model, batch_size, input_tokens, output_tokens) - prompt_s
        rho_d = lam * decode_s
        if rho_d >= 1.0:
            return math.inf
        service = prompt_s / (1.0 - rho_d)
        rho = lam * service
        if rho >= 1.0:
            return math.inf
        tail = 1.0 - self.quantile
        wait = 0.0 if rho <= tail else math.log(rho / tail) * service / (1.0 - rho)
        mean = (model.a_p + model.b_p * input_tokens) / (1.0 - rho_d)
        long = (model.a_p + model.b_p * long_prompt_tokens) / (1.0 - rho_d)
        return mean + math.hypot(max(0.0, long - mean), wait)

    def desired(self, fleet: FleetObservation) -> int:
        views = fleet.active or list(fleet.replicas)
        current = len(fleet.active)
        if not fleet.recent_input_tokens:
            return current
        view = views[0]
        model = view.rule_model
        L = float(np.mean(fleet.recent_input_tokens))
        O = float(np.mean(fleet.recent_output_tokens))
        long_prompt = float(np.quantile(fleet.recent_input_tokens, self.quantile))
        rate = self.forecast_rate(fleet)
        # What is queued now must also drain within the target: its prompts, spread over the fleet.
        backlog = sum(v.n_waiting for v in fleet.serving)
        target = self.headroom * self.ttft_slo_s
        for c in range(1, 4097):
            if self.projected_ttft_s(c, rate, model, view.batch_size, L, O, long_prompt) <= target and \
                    backlog * model.b_p * L / c <= target:
                return c
        return 4096
