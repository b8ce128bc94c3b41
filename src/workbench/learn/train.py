"""Training the learned rule: PPO (stable-baselines3) on :class:`~workbench.learn.env.SchedulingEnv`.

:func:`train` runs PPO over a few environments stepped together, evaluates the deterministic
policy every ``eval_every`` steps on fixed held-out episodes (the seeds after the training
seeds), and returns the training curve and the policy network's weights; :func:`export_policy`
reads the weights out of an SB3 policy into the ``.npz`` of :mod:`workbench.policies.learned`
(whose forward pass is numpy's: the rule needs no torch).  Needs the ``learn`` extra.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import ConfigError
from workbench.learn.env import SchedulingEnv
from workbench.policies.learned import LearnedModel, MLPPolicy

#: PPO settings used unless told otherwise (small: a decision has 16 features and 2 actions).
PPO_DEFAULTS = {"n_steps": 512, "batch_size": 256, "n_epochs": 6, "learning_rate": 1e-3, "gamma": 1.0,
                "gae_lambda": 0.95, "ent_coef": 0.005, "clip_range": 0.2}
NET_ARCH = (32, 32)
#: Seeds of the evaluation episodes start here (training draws its episodes from seeds below).
EVAL_SEED_BASE = 10_000


def require_sb3():
    """stable-baselines3, or one line saying how to get it."""
    try:
        import stable_baselines3  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        raise ConfigError("training needs stable-baselines3 and torch (the `learn` extra).", field="learn",
                          fix="pip install -e '.[learn]' after the CPU wheel of torch (see docs/learn.md).") from None
    return stable_baselines3


@dataclass
class TrainResult:
    """What a training run gives: the network (weights, biases), the curve, and the settings."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    levels: int
    curve: pd.DataFrame
    settings: dict[str, Any]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def policy(self) -> MLPPolicy:
        return MLPPolicy(self.weights, self.biases, "tanh")


def export_policy(model) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The weights of an SB3 ``MlpPolicy`` (actor network, then the action head) as float64 arrays."""
    import torch

    layers = [m for m in model.policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
    layers.append(model.policy.action_net)
    weights = [m.weight.detach().cpu().numpy().astype(np.float64) for m in layers]
    biases = [m.bias.detach().cpu().numpy().astype(np.float64) for m in layers]
    return weights, biases


def evaluate(net: MLPPolicy | LearnedModel | None, env_kwargs: dict, seeds, *, levels: int = 1,
             rule=None, wrapper=None) -> pd.DataFrame:
    """One row per seeded episode: the network's greedy decisions (or a rule's, or continuous when both None).

    ``wrapper`` (``env -> env``, e.g. a ``gymnasium.ObservationWrapper``) changes what the network sees.
    """
    if isinstance(net, LearnedModel):
        net = net.net
    env = SchedulingEnv(**env_kwargs)
    play = wrapper(env) if wrapper is not None else env
    rows = []
    for seed in seeds:
        obs, _ = play.reset(seed=int(seed))
        done, ret = False, 0.0
        while not done:
            d = env.decision
            if net is not None:
                action = net.act(obs.astype(np.float64))
            elif rule is not None:
                m = int(rule.admit(d.view))
                action = min(env.levels, -(-m * env.levels // d.admissible)) if m > 0 else 0
            else:
                action = env.levels
            obs, reward, done, _, info = play.step(action)
            ret += reward
        info.pop("schedule", None)
        rows.append({"seed": int(seed), "return": ret, **info})
    return pd.DataFrame(rows)


def train(trace="gsm8k-train", *, objective: str = "makespan", steps: int = 50_000, seed: int = 0,
          n_envs: int = 4, requests: int = 200, clients: int = 1, batch_size: int = 16,
          cost_model: Any = "llama-65b", load: float | None = None, levels: int = 1, policy: str = "hybrid",
          engine: dict | None = None, eval_every: int = 5_000,
          eval_episodes: int = 16, progress: bool = True, ppo: dict | None = None, wrapper=None) -> TrainResult:
    """PPO for ``steps`` decisions; the greedy policy evaluated every ``eval_every`` on held-out seeds.

    The environment's settings are :class:`~workbench.learn.env.SchedulingEnv`'s (``policy``: whose
    dispatcher, queue order and engine serve; ``engine``: engine options on top).

    ``wrapper`` (``env -> env``) wraps every environment, in training and evaluation alike (a model
    trained through one is for that wrapper: the rule ``learned`` reads the plain features).
    """
    require_sb3()
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    steps = int(steps)
    if steps < 1:
        raise ConfigError(f"steps is {steps}.", field="steps", fix="give the number of decisions to train on, >= 1.")
    env_kwargs = {"trace": trace, "requests": requests, "clients": clients, "batch_size": batch_size,
                  "cost_model": cost_model, "objective": objective, "load": load, "levels": levels,
                  "policy": policy, "engine": engine}
    SchedulingEnv(**env_kwargs)  # refuses bad settings before any training starts
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # the networks are tiny: threads only contend
    venv = make_vec_env(SchedulingEnv, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs, wrapper_class=wrapper)
    settings = {**PPO_DEFAULTS, **(ppo or {})}
    settings["n_steps"] = max(8, min(settings["n_steps"], -(-steps // n_envs)))
    settings["batch_size"] = min(settings["batch_size"], settings["n_steps"] * n_envs)
    model = PPO("MlpPolicy", venv, seed=seed, verbose=0, device="cpu",
                policy_kwargs={"net_arch": list(NET_ARCH), "activation_fn": torch.nn.Tanh}, **settings)
    eval_seeds = range(EVAL_SEED_BASE + seed * 1000, EVAL_SEED_BASE + seed * 1000 + eval_episodes)
    # The rules it should be measured against, on the same held-out episodes (constant over the curve).
    from workbench.policies.registry import RULES

    figure = "gap" if objective == "makespan" else "goodput"
    reference = {f"{name}_{figure}_mean": float(evaluate(None, env_kwargs, eval_seeds, rule=RULES[name]())[figure].mean())
                 for name in ("lagrangian", "continuous")}
    rows: list[dict] = []
    started = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"learning ({objective})", unit="decision", mininterval=1.0)

    def record(done_steps: int) -> None:
        w, b = export_policy(model)
        table = evaluate(MLPPolicy(w, b, "tanh"), env_kwargs, eval_seeds, levels=levels, wrapper=wrapper)
        recent = [e["r"] for e in model.ep_info_buffer] if model.ep_info_buffer else [np.nan]
        rows.append({"steps": done_steps, "seconds": time.perf_counter() - started,
                     "train_return_mean": float(np.mean(recent)), "eval_return_mean": float(table["return"].mean()),
                     "eval_gap_mean": float(table["gap"].mean()), "eval_goodput_mean": float(table["goodput"].mean()),
                     "eval_makespan_s_mean": float(table["makespan_s"].mean()), **reference})
        if bar is not None:
            bar.set_postfix(eval_return=f"{rows[-1]['eval_return_mean']:.4f}")

    class Progress(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next_eval = 0

        def _on_step(self) -> bool:
            if bar is not None:
                bar.update(self.training_env.num_envs)
            if self.num_timesteps >= self.next_eval:
                record(self.num_timesteps)
                self.next_eval += eval_every
            return True

    model.learn(total_timesteps=steps, callback=Progress())
    record(model.num_timesteps)
    if bar is not None:
        bar.close()
    weights, biases = export_policy(model)
    curve = pd.DataFrame(rows)
    return TrainResult(weights, biases, levels, curve,
                       {"trace": trace if isinstance(trace, str) else "(a DataFrame)", "objective": objective,
                        "steps": steps, "seed": seed, "n_envs": n_envs, "requests": requests, "clients": clients,
                        "batch_size": batch_size, "cost_model": cost_model if isinstance(cost_model, str) else
                        "(an object)", "load": load, "levels": levels, "policy": policy, "engine": engine,
                        "net_arch": list(NET_ARCH),
                        "ppo": settings, "eval_seeds": [eval_seeds.start, eval_seeds.stop]},
                       time.perf_counter() - started)


def curve_figure(curve: pd.DataFrame, objective: str = "makespan"):
    """The training curve: the greedy policy's held-out figure against decisions trained on."""
    import plotly.graph_objects as go

    y, label = (("eval_gap_mean", "held-out gap to the lower bound") if objective == "makespan"
                else ("eval_goodput_mean", "held-out goodput (share meeting TTFT and TPOT)"))
    fig = go.Figure(go.Scatter(x=curve["steps"], y=curve[y], mode="lines+markers", name="learned (greedy)"))
    figure = "gap" if objective == "makespan" else "goodput"
    for name, dash in (("lagrangian", "dash"), ("continuous", "dot")):
        column = f"{name}_{figure}_mean"
        if column in curve:
            fig.add_scatter(x=curve["steps"], y=curve[column], mode="lines", name=name, line={"dash": dash})
    fig.update_layout(title=f"Training curve ({objective})", xaxis_title="decisions trained on",
                      yaxis_title=label, template="plotly_white")
    if objective == "makespan":
        fig.update_yaxes(tickformat=".1%")
    return fig


__all__ = ["NET_ARCH", "PPO_DEFAULTS", "TrainResult", "curve_figure", "evaluate", "export_policy",
           "require_sb3", "train"]
