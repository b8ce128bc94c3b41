"""Scheduling policies: dispatchers, queue orders and iteration rules behind registries.

:mod:`~workbench.policies.registry` is the leaf (it imports nothing above
it); each implementation registers itself where it is defined:
:mod:`~workbench.policies.builtin` (static, continuous, round-robin,
least-work), :mod:`~workbench.policies.lagrangian` (the paper's online rule
and the online/hybrid policies), :mod:`~workbench.policies.rolling` (the
hybrid method on a rolling horizon), :mod:`~workbench.policies.learned` (a
rule learned in :mod:`workbench.learn`, evaluated in numpy).  The offline stage's dispatcher is
registered by :mod:`workbench.offline.dispatch`.
"""

from workbench.policies.builtin import (  # noqa: F401
    Assigned,
    ContinuousRule,
    LeastWork,
    RoundRobin,
    StaticRule,
)
from workbench.policies.lagrangian import (  # noqa: F401
    DEFAULT_HORIZON,
    DEFAULT_LOOKAHEAD,
    DEFAULT_MU,
    LOOKAHEADS,
    ONLINE_PARAMS,
    ROBUST_MU,
    LagrangianRule,
    continuous_threshold_mu,
    price_of_empty_slot,
)
from workbench.policies.learned import (  # noqa: F401
    LearnedRule,
    observation,
)
from workbench.policies.registry import (  # noqa: F401
    DISPATCH_DOCS,
    DISPATCHERS,
    HOLD,
    ORDER_DOCS,
    ORDERS,
    POLICIES,
    RULES,
    ClientView,
    Dispatcher,
    IterationRule,
    Policy,
    list_policies,
    register_policy,
    register_rule,
    resolve_policy,
)
from workbench.policies import scaling as _scaling  # noqa: F401  (registers the autoscaling controllers)
from workbench.policies.controllers import (  # noqa: F401
    CONTROLLERS,
    Autoscaling,
    FleetObservation,
    make_controller,
)
from workbench.policies.rolling import (  # noqa: F401
    ROLLING_PARAMS,
    RollingHorizon,
)

__all__ = ['Assigned', 'ClientView', 'ContinuousRule', 'DEFAULT_HORIZON', 'DEFAULT_LOOKAHEAD', 'DEFAULT_MU', 'DISPATCHERS', 'DISPATCH_DOCS', 'Dispatcher', 'HOLD', 'IterationRule', 'LOOKAHEADS', 'LagrangianRule', 'LearnedRule', 'LeastWork', 'ONLINE_PARAMS', 'ORDERS', 'ORDER_DOCS', 'POLICIES', 'Policy', 'ROBUST_MU', 'ROLLING_PARAMS', 'RULES', 'RollingHorizon', 'RoundRobin', 'StaticRule', 'continuous_threshold_mu', 'list_policies', 'observation', 'price_of_empty_slot', 'register_policy', 'register_rule', 'resolve_policy']
