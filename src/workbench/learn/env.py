"""A Gymnasium environment over the engine's outside decisions (MODEL.md section 11.3).

One episode is one run of the engine (:func:`workbench.engine.build_engine` with
``decisions="external"``) on a seeded subset of a trace.  One step is one iteration decision
of a replica that has a choice: free slots, waiting requests that fit, and a running batch
(a replica with nothing running must refill, so the environment answers that itself, as
every rule does).  The observation is :func:`workbench.policies.learned.policy_input` (the features) of the
replica's view: what a :class:`~workbench.policies.registry.ClientView` may know.  The action
is one of ``levels + 1``: decode, or prefill ``ceil(a * admissible / levels)``.

Rewards (``objective``):

``makespan``
    minus the time the run advanced between two decisions, in units of the episode's
    lower bound; the terms telescope, so the return is ``-makespan / lower_bound`` (and
    ``-1 - gap``). Arrivals are all at t = 0 unless ``load`` is given.
``goodput``
    ``+1 / n`` for each request that finishes meeting both the TTFT and the TPOT target,
    credited at the step where its finish is known; the return is the share of requests
    meeting both (``slo_attainment`` of :mod:`workbench.studies.loadsweep`, the goodput).
    Arrivals are Poisson at ``load`` times the instance's fluid capacity.

Every random choice (the subset, the arrival times) comes from the seed given to
:meth:`SchedulingEnv.reset` (Gymnasium's ``np_random``).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces

from workbench.costmodel.linear import load_preset
from workbench.engine.core import build_engine
from workbench.errors import ConfigError
from workbench.policies.learned import FEATURE_NAMES, N_FEATURES, OBS_BOUND, action_count, policy_input
from workbench.schedule.bounds import closed_form_lower_bound
from workbench.workload.trace import load_trace

OBJECTIVES = ("makespan", "goodput")
#: The latency targets of the goodput reward (as the load studies' defaults, docs/beyond.md).
DEFAULT_TTFT_SLO_S = 1.0
DEFAULT_TPOT_SLO_S = 0.05


class SchedulingEnv(gym.Env):
    """The iteration decisions of an engine run, one per step (see the module docstring).

    ``trace`` (a name, file or DataFrame), ``requests`` per episode (drawn without replacement;
    ``None``: all of them), ``clients``, ``batch_size``, ``policy`` (its dispatcher and queue order
    serve; its rule is replaced by the agent), ``cost_model``, ``objective`` (``makespan`` or
    ``goodput``), ``load`` (arrivals at this fraction of capacity; default: batch for makespan, 0.9
    for goodput), the SLO targets, ``levels`` (prefill choices besides decode) and ``engine``
    (options of :func:`~workbench.engine.simulate`: ``iteration``, ``kv``, ``kv_capacity_tokens``, ...).
    """

    metadata = {"render_modes": []}

    def __init__(self, trace: pd.DataFrame | str = "gsm8k-train", *, requests: int | None = 200, clients: int = 1,
                 batch_size: int = 16, policy: str = "hybrid", cost_model: Any = "llama-65b",
                 objective: str = "makespan", load: float | None = None, ttft_slo_s: float = DEFAULT_TTFT_SLO_S,
                 tpot_slo_s: float = DEFAULT_TPOT_SLO_S, levels: int = 1, engine: dict | None = None) -> None:
        if objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective '{objective}'.", field="objective",
                              fix=f"use one of {', '.join(OBJECTIVES)}.")
        if int(levels) != levels or levels < 1:
            raise ConfigError(f"levels is {levels!r}.", field="levels", fix="give a whole number >= 1.")
        self.trace = load_trace(trace)
        n = len(self.trace)
        self.requests = n if requests is None else int(requests)
        if not 1 <= self.requests <= n:
            raise ConfigError(f"requests is {requests!r} but the trace has {n}.", field="requests",
                              fix=f"give 1..{n}.")
        if load is None and objective == "goodput":
            load = 0.9
        if load is not None and not (float(load) > 0 and math.isfinite(float(load))):
            raise ConfigError(f"load is {load!r}.", field="load", fix="give a fraction of capacity > 0, e.g. 0.9.")
        self.clients, self.batch_size, self.policy = int(clients), int(batch_size), policy
        self.cost_model = load_preset(cost_model)
        self.objective, self.load, self.levels = objective, None if load is None else float(load), int(levels)
        self.ttft_slo_s, self.tpot_slo_s = float(ttft_slo_s), float(tpot_slo_s)
        self.engine_options = dict(engine or {})
        self.observation_space = spaces.Box(-OBS_BOUND, OBS_BOUND, shape=(N_FEATURES,), dtype=np.float32)
        self.action_space = spaces.Discrete(self.levels + 1)
        self.feature_names = FEATURE_NAMES
        self._engine = None
        self._decision = None

    # -- an episode --------------------------------------------------------------------------------------
    def episode_trace(self, rng: np.random.Generator) -> pd.DataFrame:
        """The requests of one episode: a seeded subset, at t = 0 or with Poisson arrivals at ``load``."""
        rows = np.sort(rng.choice(len(self.trace), self.requests, replace=False))
        sub = self.trace.iloc[rows].reset_index(drop=True)
        if self.load is None:
            return sub.assign(arrival_s=0.0)
        rate = self.load * fluid_capacity_rps(sub, self.clients, self.batch_size, self.cost_model)
        order = rng.permutation(len(sub))
        gaps = rng.exponential(1.0 / rate, len(sub))
        sub = sub.iloc[order].reset_index(drop=True)
        return sub.assign(arrival_s=np.cumsum(gaps) - gaps[0])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode: a trace subset drawn with the environment's generator (or ``options["trace"]``),
        run up to its first decision; returns that decision's observation and ``{time_s, replica}``."""
        super().reset(seed=seed)
        for _ in range(16):  # an instance where no replica ever has a choice gives no step: draw again
            sub = (options or {}).get("trace")
            sub = load_trace(sub) if sub is not None else self.episode_trace(self.np_random)
            self.episode = sub
            bound = closed_form_lower_bound(sub, self.clients, self.batch_size, self.cost_model)
            self.lower_bound_s = bound.value_s
            self._engine = build_engine(sub, self.clients, self.batch_size, self.policy, self.cost_model,
                                        decisions="external", lower_bound_s=bound.value_s, progress=False,
                                        **self.engine_options)
            self._t_s = 0.0
            self._start_goodput(sub)
            self._decision = self._next_decision()
            if self._decision is not None:
                return self._obs(), {"time_s": self._decision.time_s, "replica": self._decision.replica}
            if (options or {}).get("trace") is not None:
                break
        raise ConfigError("no replica ever has a choice on these instances (every request fits at once).",
                          field="requests", fix="give more requests per episode than the clients' batch slots.")

    def step(self, action):
        """Answer the pending decision (0: decode; ``a``: prefill ``ceil(a * admissible / levels)``) and run to the
        next one; returns ``(observation, reward, terminated, truncated, info)`` as Gymnasium does."""
        d = self._decision
        if d is None:
            raise ConfigError("the episode is over.", field="step", fix="call reset() first.")
        self._engine.decide(action_count(int(action), d.admissible, self.levels))
        self._decision = self._next_decision()
        done = self._decision is None
        info: dict[str, Any] = {}
        if done:
            schedule = self._engine.schedule()
            t_now = float(schedule.metrics["makespan_s"])
            info.update(episode_metrics(schedule, self.ttft_slo_s, self.tpot_slo_s))
            info["schedule"] = schedule
        else:
            t_now = self._decision.time_s
            info.update(time_s=t_now, replica=self._decision.replica)
        if self.objective == "makespan":
            reward = -(t_now - self._t_s) / self.lower_bound_s
        else:
            reward = self._goodput_credit(final=done)
        self._t_s = t_now
        obs = self._obs() if not done else np.zeros(N_FEATURES, dtype=np.float32)
        return obs, float(reward), done, False, info

    # -- helpers ----------------------------------------------------------------------------------------
    @property
    def engine(self):
        """The engine of the episode in progress (read its replicas; do not answer its decisions)."""
        return self._engine

    @property
    def decision(self):
        """The decision the next step answers (its ``view`` is the replica's read-only view)."""
        return self._decision

    def _obs(self) -> np.ndarray:
        return policy_input(self._decision.view)

    def _next_decision(self):
        """Run to the next decision with a choice; an empty replica must refill, so it is answered here."""
        engine = self._engine
        while True:
            decision = engine.run()
            if decision is None:
                return None
            if decision.must_admit:
                engine.decide(decision.admissible)
                continue
            return decision

    def _start_goodput(self, sub: pd.DataFrame) -> None:
        self._open = set(range(len(sub)))
        self._arrival = sub["arrival_s"].to_numpy(float)
        self._out = sub["output_tokens"].to_numpy(np.int64)

    def _goodput_credit(self, final: bool) -> float:
        """``1/n`` per request newly finished within both targets (the engine's request table says when)."""
        rq = self._engine.requests
        if final:
            finish = self._engine.schedule().requests
            ttft = finish["first_token_s"].to_numpy() - self._arrival
            tpot = np.where(self._out > 1, (finish["finish_s"].to_numpy() - finish["first_token_s"].to_numpy())
                            / np.maximum(self._out - 1, 1), 0.0)
            ok = (ttft <= self.ttft_slo_s) & (tpot <= self.tpot_slo_s)
            credit = sum(bool(ok[i]) for i in self._open)
            self._open = set()
            return credit / len(self._arrival)
        finish, first = rq.finish, rq.first_token
        done = [i for i in self._open if finish[i] == finish[i]]
        credit = 0
        for i in done:
            self._open.discard(i)
            o = self._out[i]
            tpot = (finish[i] - first[i]) / (o - 1) if o > 1 else 0.0
            credit += (first[i] - self._arrival[i] <= self.ttft_slo_s) and (tpot <= self.tpot_slo_s)
        return credit / len(self._arrival)


def fluid_capacity_rps(trace: pd.DataFrame, clients: int, batch_size: int, cost_model) -> float:
    """Requests per second no policy can outlast: ``n / (sum_i w_i / |J|)`` (as ``cluster_capacity``)."""
    bound = closed_form_lower_bound(trace.assign(arrival_s=0.0), clients, batch_size, cost_model,
                                    release_aware=False)
    return len(trace) / bound.terms["average_work"]


def episode_metrics(schedule, ttft_slo_s: float = DEFAULT_TTFT_SLO_S,
                    tpot_slo_s: float = DEFAULT_TPOT_SLO_S) -> dict[str, float]:
    """A finished episode's figures: makespan, bound and gap; p99 TTFT; goodput (share meeting both targets)."""
    from workbench.schedule.metrics import request_latencies

    lat = request_latencies(schedule.requests)
    ok = (lat["ttft_s"] <= ttft_slo_s) & (lat["tpot_s"] <= tpot_slo_s)
    m = schedule.metrics
    return {"makespan_s": float(m["makespan_s"]), "lower_bound_s": float(m["lower_bound_s"]),
            "gap": float(m["gap"]), "ttft_p99_s": float(lat["ttft_s"].quantile(0.99)),
            "goodput": float(ok.mean())}


def make_vector_env(n_envs: int = 4, **kwargs: Any) -> gym.vector.SyncVectorEnv:
    """``n_envs`` environments stepped together (Gymnasium's ``SyncVectorEnv``; seed it with ``reset(seed=s)``)."""
    return gym.vector.SyncVectorEnv([lambda: SchedulingEnv(**kwargs) for _ in range(int(n_envs))])
