"""Learning a scheduler: a Gymnasium environment over the engine, and training the learned rule.

* :mod:`~workbench.learn.env` - :class:`~workbench.learn.env.SchedulingEnv`, one step per iteration
  decision of the engine's outside-decision mode (MODEL.md section 11.3), its reward the time a decision
  costs the makespan or the goodput it earns; :func:`~workbench.learn.env.make_vector_env`.
* :mod:`~workbench.learn.train` - PPO (stable-baselines3, the ``learn`` extra) on that environment, the
  training curve, and the export of the policy network to the ``.npz`` the numpy-only rule
  ``learned`` (:mod:`workbench.policies.learned`) reads.

Gymnasium's registry knows the environment as ``workbench/Scheduling-v0``.
"""

from __future__ import annotations

import gymnasium as gym

from workbench.learn.env import OBJECTIVES, SchedulingEnv, episode_metrics, make_vector_env

ENV_ID = "workbench/Scheduling-v0"
if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="workbench.learn.env:SchedulingEnv")

__all__ = ["ENV_ID", "OBJECTIVES", "SchedulingEnv", "episode_metrics", "make_vector_env"]
