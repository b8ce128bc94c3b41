"""A learned iteration rule: a small policy network, trained in :mod:`workbench.learn`, evaluated in numpy.

The rule answers the same question as every iteration rule (MODEL.md section 6): at a
boundary with free slots and waiting requests that fit, prefill now (how many) or decode.
It sees what any rule may see, a :class:`~workbench.policies.registry.ClientView`, turned
into a fixed vector of dimensionless features by :func:`observation` (the environment
of :mod:`workbench.learn` hands an agent exactly this vector, so what was trained is what
runs).  The network is a multilayer perceptron whose weights live in a ``.npz`` file;
its forward pass is numpy only, so ``rule="learned"`` needs no torch and its schedules are
reproducible bit for bit.  The action is the argmax of the network's logits (the trained
policy's deterministic action).

Action ``a`` of ``levels + 1`` means: ``a = 0`` decode; otherwise prefill
``ceil(a * admissible / levels)`` waiting requests.  ``levels = 1`` is the Lagrangian
rule's own choice set (decode, or fill every free slot that fits).

The shipped model (:func:`default_model_path`) was trained on gsm8k-train subsets for the
makespan; its provenance is in the file (``provenance``) and in
``data/models/PROVENANCE.md``.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from workbench._paths import data_dir
from workbench.errors import ConfigError
from workbench.policies.registry import ClientView, Param, declare_params, register_rule

#: The feature set's version: a model records the one it was trained on, and a mismatch is refused.
FEATURES_VERSION = "v1"
#: How many future completion points the features look at (as the Lagrangian rule's default horizon).
HORIZON = 4
FEATURE_NAMES = (
    "admissible_per_slot",  # f / B
    "running_share",  # n_running / B
    "waiting_share",  # W / (W + B): bounded, 0 with an empty queue
    "queue_tail",  # 1 when every waiting request fits now (W <= f)
    *(f"log_decode_time_to_completion_{j + 1}" for j in range(HORIZON)),  # log1p(k_j a_d / a_p)
    *(f"slots_freed_by_completion_{j + 1}" for j in range(HORIZON)),  # (f_j - f) / B
    "log_prefill_in_empty_slots",  # log(B a_p / a_d) / 10: a prefill's cost in empty slot-iterations
    "log_amortised_ratio",  # log of the best wait's cost per admitted request over now's (mu = 1)
    "log_next_completion_ratio",  # log(lambda f k_1 / a_p): the next-completion look-ahead's test
    "log_outstanding_work",  # log1p(outstanding_s / a_p) / 5
)
N_FEATURES = len(FEATURE_NAMES)
#: Features are log-compressed or shares; the box is wide enough never to clip a real one.
OBS_BOUND = 10.0
#: Where the shipped model lives (under the package data folder).
DEFAULT_MODEL = "learned-gsm8k-makespan.npz"


def default_model_path() -> Path:
    """The shipped model: trained on gsm8k-train subsets for the makespan (see ``data/models/PROVENANCE.md``)."""
    return data_dir() / "models" / DEFAULT_MODEL


def observation(view: ClientView) -> np.ndarray:
    """The features a learned rule (and an agent in :mod:`workbench.learn`) sees of a replica at a boundary.

    Every feature is dimensionless and bounded or log-compressed, so one model serves any
    batch size and any linear cost model; times are in units of the replica's prefill
    cost ``a_p`` (from ``rule_model``, as the Lagrangian rule prices).
    """
    B = view.batch_size
    f = view.admissible
    waiting = view.n_waiting
    n_running = view.n_running
    cm = getattr(view, "rule_model", None) or view.cost_model
    a_p = max(float(cm.a_p), 1e-12)
    a_d = max(float(cm.a_d), 1e-12)
    price = a_d / B  # lambda: the price of an empty slot-iteration (MODEL.md section 6)
    ks, freed = _completion_points(view)
    obs = np.zeros(N_FEATURES, dtype=np.float64)
    obs[0] = f / B
    obs[1] = n_running / B
    obs[2] = waiting / (waiting + B)
    obs[3] = 1.0 if waiting <= f else 0.0
    for j in range(HORIZON):
        k = ks[j] if j < len(ks) else (ks[-1] if ks else 0)
        obs[4 + j] = math.log1p(k * a_d / a_p)
        obs[4 + HORIZON + j] = (freed[j] if j < len(freed) else (freed[-1] if freed else 0)) / B
    obs[4 + 2 * HORIZON] = math.log(B * a_p / a_d) / 10.0
    obs[5 + 2 * HORIZON] = _amortised_log_ratio(ks, freed, f, waiting, a_p, price)
    k1 = ks[0] if ks else 0
    obs[6 + 2 * HORIZON] = _clip_log(price * f * k1 / a_p) if k1 else 0.0
    obs[7 + 2 * HORIZON] = math.log1p(max(float(view.outstanding_s), 0.0) / a_p) / 5.0
    return obs


def policy_input(view: ClientView) -> np.ndarray:
    """:func:`observation` as the network sees it, in training and here alike: clipped, rounded to float32."""
    return np.clip(observation(view), -OBS_BOUND, OBS_BOUND).astype(np.float32)


def _clip_log(x: float, bound: float = 5.0) -> float:
    return max(-bound, min(bound, math.log(x))) if x > 0 else -bound


def _completion_points(view: ClientView) -> tuple[list[int], list[int]]:
    """The next ``HORIZON`` distinct predicted completion points: iterations away, and slots freed by then."""
    finish = view.predicted_finish_counts() if view.n_running else []
    d = view.decode_count
    ks: list[int] = []
    freed: list[int] = []
    idx, n = 0, len(finish)
    while idx < n and len(ks) < HORIZON:
        k = finish[idx] - d
        while idx < n and finish[idx] - d == k:
            idx += 1
        ks.append(max(int(k), 1))
        freed.append(idx)
    return ks, freed


def _amortised_log_ratio(ks, freed, f: int, waiting: int, a_p: float, price: float) -> float:
    """log(min_j cost per admitted request of waiting for completion j / cost per request of prefilling now).

    Negative: some wait is cheaper per request (the Lagrangian rule's ``amortised`` look-ahead
    with ``mu = 1`` decodes); positive or 0: prefill now.  0 when nothing runs or all fit.
    """
    if not ks or f <= 0 or waiting <= f:
        return 0.0
    now = a_p / f
    best = math.inf
    # The empty slot-iterations before completion point j: f slots empty until the first, then more.
    empty = 0.0
    prev = 0
    free = f
    for k, done in zip(ks, freed):
        empty += free * (k - prev)
        free = f + done
        prev = k
        admitted = min(free, waiting)
        best = min(best, (a_p + price * empty) / admitted)
    return max(-5.0, min(5.0, math.log(best / now)))


class MLPPolicy:
    """The forward pass of a trained policy network: ``tanh`` or ``relu`` hidden layers, then logits."""

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray], activation: str) -> None:
        self.weights = [np.asarray(w, dtype=np.float64) for w in weights]
        self.biases = [np.asarray(b, dtype=np.float64) for b in biases]
        self.activation = np.tanh if activation == "tanh" else (lambda x: np.maximum(x, 0.0))

    def logits(self, obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float64)
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = w @ x + b
            if k < last:
                x = self.activation(x)
        return x

    def act(self, obs: np.ndarray) -> int:
        return int(np.argmax(self.logits(obs)))


class LearnedModel:
    """A model file read: the network, its action levels, the feature version and its provenance."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"model file '{path}' does not exist.", field="model",
                              fix="give the .npz a `workbench learn` run wrote (model.npz), or leave model out "
                                  "for the shipped gsm8k model.")
        try:
            with np.load(path, allow_pickle=False) as z:
                n_layers = int(z["n_layers"])
                weights = [z[f"w{k}"] for k in range(n_layers)]
                biases = [z[f"b{k}"] for k in range(n_layers)]
                activation = str(z["activation"])
                self.levels = int(z["levels"])
                version = str(z["features"])
                self.provenance = json.loads(str(z["provenance"])) if "provenance" in z else {}
        except (KeyError, ValueError, OSError) as err:
            raise ConfigError(f"model file '{path}' is not a learned-rule model ({err}).", field="model",
                              fix="give the model.npz a `workbench learn` run wrote.") from None
        if version != FEATURES_VERSION:
            raise ConfigError(f"model '{path}' was trained on features {version}, this rule reads "
                              f"{FEATURES_VERSION}.", field="model", fix="retrain it with `workbench learn`.")
        if weights[0].shape[1] != N_FEATURES or weights[-1].shape[0] != self.levels + 1:
            raise ConfigError(f"model '{path}' takes {weights[0].shape[1]} features and gives "
                              f"{weights[-1].shape[0]} actions; expected {N_FEATURES} and levels + 1.",
                              field="model", fix="retrain it with `workbench learn`.")
        self.path = path
        self.net = MLPPolicy(weights, biases, activation)


@lru_cache(maxsize=16)
def _load(path: str, mtime_ns: int) -> LearnedModel:
    return LearnedModel(path)


def load_model(path: str | Path | None = None) -> LearnedModel:
    """The model at ``path`` (default: the shipped one), read once per file version."""
    p = Path(path) if path is not None else default_model_path()
    try:
        stamp = p.stat().st_mtime_ns
    except OSError:
        return LearnedModel(p)  # refuses with the field and the fix
    return _load(str(p.resolve()), stamp)


def action_count(action: int, admissible: int, levels: int) -> int:
    """Requests to prefill for action ``action`` of ``levels + 1`` (0: decode)."""
    a = int(action)
    if a <= 0:
        return 0
    return min(admissible, max(1, math.ceil(a * admissible / levels)))


def save_model(path: str | Path, weights: list[np.ndarray], biases: list[np.ndarray], *, activation: str,
               levels: int, provenance: dict) -> Path:
    """Write a model file the learned rule reads (float64 weights, no pickles)."""
    path = Path(path)
    arrays = {f"w{k}": np.asarray(w, dtype=np.float64) for k, w in enumerate(weights)}
    arrays.update({f"b{k}": np.asarray(b, dtype=np.float64) for k, b in enumerate(biases)})
    np.savez_compressed(path, n_layers=np.int64(len(weights)), activation=np.str_(activation),
                        levels=np.int64(levels), features=np.str_(FEATURES_VERSION),
                        provenance=np.str_(json.dumps(provenance, sort_keys=True)), **arrays)
    return path


class LearnedRule:
    """The iteration rule of a trained model: features of the view, the network's argmax, a prefill count."""

    __slots__ = ("model", "levels", "calls")

    def __init__(self, model: str | Path | None = None, **_: object) -> None:
        self.model = load_model(None if model is None else str(model))
        self.levels = self.model.levels
        self.calls = 0

    def admit(self, client: ClientView) -> int:
        self.calls += 1
        f = client.admissible
        if client.n_running == 0:
            return f  # an empty batch always refills (as every rule; the engine would anyway)
        return action_count(self.model.net.act(policy_input(client).astype(np.float64)), f, self.levels)


declare_params("rule", "learned",
               model=Param("object", "path of a trained model (.npz from `workbench learn`); default: the shipped "
                                  "gsm8k makespan model"))


@register_rule("learned")
def _learned_factory(model: str | Path | None = None, **_: object) -> LearnedRule:
    return LearnedRule(model=model)
