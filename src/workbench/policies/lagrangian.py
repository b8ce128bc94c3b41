"""The online stage: the Lagrangian iteration rule (MODEL.md section 6).

At an iteration boundary where a client has ``f`` free slots and waiting
requests, the rule chooses between a prefill now and one more decode run.
MODEL.md section 3 splits any schedule's time on a client into a part no
schedule can change and

    a_p * N_prefill + a_d * N_decode,

and since every decode iteration offers ``B`` slots,
``B * N_decode = D + E`` where ``D`` is the decode work (fixed) and ``E`` the
empty slot-iterations.  So the schedule-dependent cost is exactly

    a_p * N_prefill + lambda * E,        lambda = a_d / B,

the price of an empty slot (the Lagrange multiplier of the batch-capacity
constraint).  Waiting leaves slots empty (costs ``lambda`` per slot-iteration);
a prefill now costs ``a_p`` that waiting might save by merging it into a later,
larger prefill.  The rule prefills now when

    mu * lambda * E_wait  >=  S_wait

with ``E_wait`` the empty slot-iterations waiting leaves behind and ``S_wait``
the prefill cost it saves, both from a look-ahead over the running requests'
*predicted* remaining lengths (``ClientView.predicted_finish_counts``: the
true ones with exact predictions; see ``workbench.workload.predict``).  ``mu`` scales the price: ``mu = 0`` never prefills while
requests run (static batching), ``mu = inf`` always does (continuous
batching); both limits are exact.  The derivation is written out in
``docs/online.md`` and ``notebooks/04-online-lagrangian.ipynb``.

Look-aheads (parameter ``lookahead``):

``next-completion``
    the sketch: waiting until the next completion, ``k`` iterations away,
    leaves ``f * k`` empty slot-iterations and saves one prefill ``a_p``.
``tail``
    as ``next-completion``, but a wait saves nothing when every waiting
    request fits the free slots now (the queue's tail): one more prefill is
    needed either way, so waiting is pure loss.
``amortised``
    renewal-reward: compares the cost per admitted request of a prefill now,
    ``a_p / f``, with that of waiting for each of the next ``horizon``
    completion points ``j``, ``(a_p + lambda E_j) / min(f_j, W)``, where
    ``f_j`` slots will be free and ``W`` requests wait.  Prefill now if no
    wait is cheaper per request (scaled by ``mu``).  Handles the tail through
    ``min(f_j, W)``.
"""

from __future__ import annotations

import math

from workbench.errors import ConfigError
from workbench.policies.registry import (
    ClientView,
    Param,
    Policy,
    declare_params,
    register_policy,
    register_rule,
)

LOOKAHEADS = {
    "next-completion": "wait until the next completion: E = f*k empty slot-iterations, saves one prefill a_p",
    "tail": "next-completion, but waiting saves nothing when all waiting requests fit the free slots now",
    "amortised": "prefill now unless waiting for one of the next completions gives a lower cost per admitted "
                 "request, (a_p + lambda*E_j) / min(f_j, W)",
}
#: The default look-ahead and price scale (chosen by measurement, see docs/online.md).
DEFAULT_LOOKAHEAD = "amortised"
DEFAULT_MU = 1.0
DEFAULT_HORIZON = 4


class LagrangianRule:
    """Prefill now iff ``mu * lambda * E_wait >= S_wait`` (see the module docstring).

    ``mu`` in ``[0, inf]``; ``lookahead`` one of :data:`LOOKAHEADS`;
    ``horizon`` how many future completion points the ``amortised``
    look-ahead considers.  Counts its calls in ``calls`` (for benchmarks).
    """

    __slots__ = ("mu", "lookahead", "horizon", "calls", "_kind")

    def __init__(self, mu: float = DEFAULT_MU, lookahead: str = DEFAULT_LOOKAHEAD,
                 horizon: int = DEFAULT_HORIZON, **_: object) -> None:
        try:
            mu = float(mu)
        except (TypeError, ValueError):
            raise ConfigError(f"mu must be a number >= 0, got {mu!r}.", field="mu",
                              fix="give mu as a float: 0 = static, inf = continuous, 1 = the plain price.") from None
        if math.isnan(mu) or mu < 0:
            raise ConfigError(f"mu must be >= 0, got {mu!r}.", field="mu",
                              fix="give mu as a float: 0 = static, inf = continuous, 1 = the plain price.")
        if lookahead not in LOOKAHEADS:
            raise ConfigError(f"unknown lookahead '{lookahead}'.", field="lookahead",
                              fix=f"use one of {', '.join(LOOKAHEADS)}.")
        if int(horizon) != horizon or int(horizon) < 1:
            raise ConfigError(f"horizon must be a whole number >= 1, got {horizon!r}.", field="horizon",
                              fix="give the number of future completions to look at, e.g. 4.")
        self.mu = mu
        self.lookahead = lookahead
        self.horizon = int(horizon)
        self.calls = 0
        self._kind = ("next-completion", "tail", "amortised").index(lookahead)

    def admit(self, client: ClientView) -> int:
        self.calls += 1
        f = client.admissible
        mu = self.mu
        if client.n_running == 0 or mu == math.inf:
            return f  # an empty batch always refills; mu = inf is continuous batching
        if mu == 0.0:
            return 0  # mu = 0 is static batching: never prefill while requests run
        # The rule prices stages with the linear coefficients; a measured model lends its linear model.
        cm = getattr(client, "rule_model", client.cost_model)
        a_p = cm.a_p
        price = mu * cm.a_d / client.batch_size  # mu * lambda, per empty slot-iteration
        kind = self._kind
        if kind == 2:
            return f if self._amortised_prefers_now(client, f, a_p, price) else 0
        if kind == 1 and client.n_waiting <= f:
            return f  # the tail: a wait would save no prefill
        k = client.predicted_iterations_to_next_completion()
        return f if price * f * k >= a_p else 0

    def _amortised_prefers_now(self, client: ClientView, f: int, a_p: float, price: float) -> bool:
        waiting = client.n_waiting
        if waiting <= f:
            return True  # nothing to gain by waiting: every waiting request fits now
        now_per_request = a_p / f
        d = client.decode_count
        finish = client.predicted_finish_counts()  # predicted lengths: the rule never sees the truth
        n = len(finish)
        empty = 0.0  # slot-iterations left empty while waiting
        free = f
        prev = 0
        idx = 0
        for _ in range(self.horizon):
            if idx >= n:
                break
            k = finish[idx] - d
            empty += free * (k - prev)
            while idx < n and finish[idx] - d == k:
                free += 1
                idx += 1
            prev = k
            admitted = free if free < waiting else waiting
            if (a_p + price * empty) < now_per_request * admitted:
                return False  # waiting for this completion is cheaper per admitted request
            if admitted >= waiting:
                break
        return True


declare_params("rule", "lagrangian",
               mu=Param("float", "price multiplier: 0 = static, inf = continuous, 1 = the plain price", minimum=0.0),
               lookahead=Param("str", "the look-ahead of the rule", choices=tuple(LOOKAHEADS)),
               horizon=Param("int", "future completions the amortised look-ahead considers", minimum=1))


@register_rule("lagrangian")
def _lagrangian_factory(mu: float = DEFAULT_MU, lookahead: str = DEFAULT_LOOKAHEAD,
                        horizon: int = DEFAULT_HORIZON, **_: object) -> LagrangianRule:
    return LagrangianRule(mu=mu, lookahead=lookahead, horizon=horizon)


ONLINE_PARAMS = {"mu": DEFAULT_MU, "lookahead": DEFAULT_LOOKAHEAD}

register_policy(Policy("online", "round-robin", "longest-output", "lagrangian", dict(ONLINE_PARAMS),
                       description="online stage only: round-robin dispatch, longest-output-first queues, "
                                   "the Lagrangian iteration rule"))
register_policy(Policy("hybrid", "offline", "longest-output", "lagrangian", dict(ONLINE_PARAMS),
                       description="the hybrid method: offline bin-packing assignment, longest-output-first "
                                   "queues, the Lagrangian iteration rule"))
#: The price scale of ``hybrid-robust``: prefill unless a predicted wait is very short (see docs/beyond.md).
ROBUST_MU = 10.0
register_policy(Policy("hybrid-steal", "offline", "longest-output", "lagrangian", {**ONLINE_PARAMS, "steal": True},
                       description="the hybrid method plus work stealing: a client with free slots and an empty "
                                   "queue takes the waiting requests the most loaded client would start next"))
register_policy(Policy("hybrid-robust", "offline", "longest-output", "lagrangian",
                       {**ONLINE_PARAMS, "mu": ROBUST_MU, "steal": True},
                       description="the hybrid method for uncertain output lengths: work stealing and a "
                                   "prefill-eager price (mu = 10), so a mispredicted completion is not waited for"))


def price_of_empty_slot(cost_model, batch_size: int) -> float:
    """``lambda = a_d / B``: seconds of decode time one empty slot-iteration wastes."""
    return float(cost_model.a_d) / int(batch_size)


def continuous_threshold_mu(cost_model, batch_size: int) -> float:
    """The smallest ``mu`` at which ``next-completion`` always prefills (acts as continuous batching).

    With ``f >= 1`` and ``k >= 1``, ``mu * lambda * f * k >= a_p`` holds for every
    boundary once ``mu >= a_p / lambda = a_p B / a_d``.
    """
    return float(cost_model.a_p) * int(batch_size) / float(cost_model.a_d) if cost_model.a_d > 0 else math.inf
