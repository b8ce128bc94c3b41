"""The exact MIP of MODEL.md section 4: assignment and iteration sequence, small instances.

Each client j runs iteration positions ``k = 1..K``; a position is a prefill,
a decode, or unused (unused ones only at the end).  Binary variables:

``x[i,j]``            request i runs on client j
``prefill[i,j,k]``    i is prefilled at position k of client j
``decode[i,j,k]``     i decodes at position k of client j
``finished[i,j,k]``   i's last token on j came before position k
``is_prefill[j,k]``, ``is_decode[j,k]``  the kind of position k

with ``started = sum_{k'<k} prefill`` and ``running = started - finished``
(prefilled, not yet done).  Constraints: each request on one client,
prefilled once there, decoded exactly ``o_i - 1`` times; a decode iteration
decodes *every* running request (the definition of a decode stage in MODEL.md
section 1, so idling while holding a slot is not a choice the model has);
requests holding a slot (being prefilled or running) never exceed ``B_j``.

Durations are exact without linearising products.  A request's ``d``-th
decode reads ``l_i + d`` context tokens in whatever iteration it falls, so a
client's iterations sum to ``sum v_i + a_p N_prefill + a_d N_decode``
(MODEL.md section 3) *exactly*; the objective ``T >= that`` per client is the
makespan because requests are all available at time 0 and a client never
idles.  Start and end times are rebuilt from the solution with the cost model
when the schedule is exported.

Two restrictions that lose no optimal value and make the schedule replayable
in the simulator (whose rules are consulted only at such boundaries):

* **prefill only after a completion** (or at the start).  Take a prefill
  that follows an iteration in which nothing completed.  If the previous
  iteration was a prefill, merge the two (both sets fit together, since nothing
  left in between): one ``a_p`` less.  If it was a decode, move the prefill to
  just before the run of decodes since the last completion or prefill: the
  same slots were free throughout, each request's own decode costs do not
  depend on when they happen, the number of prefill and decode iterations is
  unchanged, and the moved requests finish earlier, so no later iteration is
  needed more.  Repeat until every prefill follows a completion.
* **symmetry**: with identical clients, request i only on clients ``<= i``.

The brute force in ``tests/test_offline_exact.py`` enumerates every
iteration sequence without these restrictions and finds the same optimum.

Instances are refused before building when the estimated number of binaries
exceeds a limit (see :func:`exact_size`); larger instances belong to the
hybrid method (offline bin packing, then the online rule).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from workbench.costmodel.linear import LinearCostModel, load_preset
from workbench.errors import ConfigError
from workbench.offline.solver import SolveResult, solve
from workbench.policies.registry import Param, declare_params, register_rule
from workbench.schedule.bounds import closed_form_lower_bound
from workbench.schedule.metrics import batch_sizes_array
from workbench.schedule.schema import (
    TIMELINE_COLUMNS,
    Schedule,
    build_metrics,
    requests_from_timeline,
)
from workbench.workload.trace import load_trace

if TYPE_CHECKING:
    import pyomo.environ as pyo

#: Default refusal limits: beyond these HiGHS rarely proves optimality within minutes.
MAX_EXACT_REQUESTS = 12
MAX_EXACT_BINARIES = 12_000


@dataclass(frozen=True)
class ExactData:
    """Everything the exact model needs, in plain arrays."""

    input_tokens: np.ndarray
    output_tokens: np.ndarray
    work_s: np.ndarray  # v_i
    batch_size: np.ndarray
    cost_model: LinearCostModel
    positions: int  # K, iteration positions per client
    makespan_ub_s: float | None

    @property
    def n_requests(self) -> int:
        return len(self.input_tokens)

    @property
    def n_clients(self) -> int:
        return len(self.batch_size)

    @property
    def identical_clients(self) -> bool:
        return bool(np.all(self.batch_size == self.batch_size[0]))


def exact_size(n_requests: int, n_clients: int, positions: int) -> dict[str, int]:
    """Variables and constraints of the exact model, estimated before building."""
    n, m, K = n_requests, n_clients, positions
    binaries = n * m + m * K * (3 * n + 2)
    constraints = n + 2 * n * m + m * K * (6 * n + 5)
    return {"requests": n, "clients": m, "positions": K, "binaries": binaries, "constraints": constraints}


def positions_needed(output_tokens: np.ndarray, cost_model: LinearCostModel, makespan_ub_s: float | None) -> int:
    """An upper bound ``K`` on the iterations of any client in an optimal schedule.

    At most one prefill per request and one decode iteration per decode
    (``n + D``); and with a known schedule of makespan ``T_ub`` an optimal
    client spends at most ``T_ub`` on fixed costs, ``a_p N_P + a_d N_D <= T_ub``.
    """
    n = len(output_tokens)
    K = int(n + int(np.sum(np.asarray(output_tokens) - 1)))
    smallest = min(cost_model.a_p, cost_model.a_d)
    if makespan_ub_s is not None and smallest > 0:
        K = min(K, int(math.floor(makespan_ub_s / smallest * (1 + 1e-9))))
    return max(K, 1)


def build_exact_model(data: ExactData) -> pyo.ConcreteModel:
    """The exact MIP of MODEL.md section 4 (not solved here; see the module docstring)."""
    import pyomo.environ as pyo  # here, not at import: `simulate` never pays its 0.2 s
    n, m, K = data.n_requests, data.n_clients, data.positions
    l, o, v = data.input_tokens, data.output_tokens, data.work_s
    cm = data.cost_model
    model = pyo.ConcreteModel(name="exact")
    model.REQUESTS = pyo.RangeSet(0, n - 1, doc="requests i")
    model.CLIENTS = pyo.RangeSet(0, m - 1, doc="clients j")
    model.POSITIONS = pyo.RangeSet(1, K, doc="iteration positions k on each client")
    model.input_tokens = pyo.Param(model.REQUESTS, initialize=lambda _, i: int(l[i]), doc="l_i (tokens)")
    model.output_tokens = pyo.Param(model.REQUESTS, initialize=lambda _, i: int(o[i]), doc="o_i (tokens)")
    model.work_s = pyo.Param(model.REQUESTS, initialize=lambda _, i: float(v[i]),
                             doc="v_i: schedule-independent work of request i (s)")
    model.batch_size = pyo.Param(model.CLIENTS, initialize=lambda _, j: int(data.batch_size[j]), doc="B_j")

    model.x = pyo.Var(model.REQUESTS, model.CLIENTS, domain=pyo.Binary, doc="request i runs on client j")
    model.prefill = pyo.Var(model.REQUESTS, model.CLIENTS, model.POSITIONS, domain=pyo.Binary,
                            doc="request i is prefilled at position k of client j")
    model.decode = pyo.Var(model.REQUESTS, model.CLIENTS, model.POSITIONS, domain=pyo.Binary,
                           doc="request i decodes at position k of client j")
    model.finished = pyo.Var(model.REQUESTS, model.CLIENTS, model.POSITIONS, domain=pyo.Binary,
                             doc="request i completed on client j before position k")
    model.is_prefill = pyo.Var(model.CLIENTS, model.POSITIONS, domain=pyo.Binary, doc="position k is a prefill")
    model.is_decode = pyo.Var(model.CLIENTS, model.POSITIONS, domain=pyo.Binary, doc="position k is a decode")
    model.makespan_s = pyo.Var(domain=pyo.NonNegativeReals, bounds=(None, data.makespan_ub_s),
                               doc="T: the last client's finish time (s)")

    model.started = pyo.Expression(model.REQUESTS, model.CLIENTS, model.POSITIONS,
                                   rule=lambda mdl, i, j, k: sum(mdl.prefill[i, j, q] for q in range(1, k)),
                                   doc="request i was prefilled on j before position k")
    model.decodes_done = pyo.Expression(model.REQUESTS, model.CLIENTS, model.POSITIONS,
                                        rule=lambda mdl, i, j, k: sum(mdl.decode[i, j, q] for q in range(1, k)),
                                        doc="decodes of request i on j before position k")
    model.running = pyo.Expression(model.REQUESTS, model.CLIENTS, model.POSITIONS,
                                   rule=lambda mdl, i, j, k: mdl.started[i, j, k] - mdl.finished[i, j, k],
                                   doc="request i holds a slot on j entering position k (prefilled, not done)")

    @model.Constraint(model.REQUESTS, doc="each request on one client")
    def one_client(mdl, i):
        return sum(mdl.x[i, j] for j in mdl.CLIENTS) == 1

    @model.Constraint(model.REQUESTS, model.CLIENTS, doc="prefilled once, on its client")
    def prefill_once(mdl, i, j):
        return sum(mdl.prefill[i, j, k] for k in mdl.POSITIONS) == mdl.x[i, j]

    @model.Constraint(model.REQUESTS, model.CLIENTS, doc="exactly o_i - 1 decodes, on its client")
    def decode_count(mdl, i, j):
        return sum(mdl.decode[i, j, k] for k in mdl.POSITIONS) == (mdl.output_tokens[i] - 1) * mdl.x[i, j]

    @model.Constraint(model.CLIENTS, model.POSITIONS, doc="a position is one kind at most")
    def one_kind(mdl, j, k):
        return mdl.is_prefill[j, k] + mdl.is_decode[j, k] <= 1

    @model.Constraint(model.REQUESTS, model.CLIENTS, model.POSITIONS, doc="prefills only in prefill iterations")
    def prefill_in_prefill(mdl, i, j, k):
        return mdl.prefill[i, j, k] <= mdl.is_prefill[j, k]

    @model.Constraint(model.REQUESTS, model.CLIENTS, model.POSITIONS, doc="decodes only in decode iterations")
    def decode_in_decode(mdl, i, j, k):
        return mdl.decode[i, j, k] <= mdl.is_decode[j, k]

    @model.Constraint(model.REQUESTS, model.CLIENTS, model.POSITIONS, doc="only running requests decode")
    def decode_if_running(mdl, i, j, k):
        return mdl.decode[i, j, k] <= mdl.running[i, j, k]

    @model.Constraint(model.REQUESTS, model.CLIENTS, model.POSITIONS,
                      doc="a decode iteration decodes every running request (no idling in a slot)")
    def decode_all_running(mdl, i, j, k):
        return mdl.decode[i, j, k] >= mdl.running[i, j, k] + mdl.is_decode[j, k] - 1

    @model.Constraint(model.REQUESTS, model.CLIENTS, model.POSITIONS, doc="only a prefilled request can be done")
    def finished_after_start(mdl, i, j, k):
        return mdl.finished[i, j, k] <= mdl.started[i, j, k]

    @model.Constraint(model.REQUESTS, model.CLIENTS, model.POSITIONS, doc="done only after all o_i - 1 decodes")
    def finished_after_decodes(mdl, i, j, k):
        if mdl.output_tokens[i] == 1:
            return mdl.finished[i, j, k] >= mdl.started[i, j, k]  # one token: done at its prefill
        return (mdl.output_tokens[i] - 1) * mdl.finished[i, j, k] <= mdl.decodes_done[i, j, k]

    @model.Constraint(model.REQUESTS, model.CLIENTS, model.POSITIONS, doc="done as soon as all decodes are")
    def finished_when_decoded(mdl, i, j, k):
        if mdl.output_tokens[i] == 1:
            return pyo.Constraint.Skip
        return mdl.decodes_done[i, j, k] <= mdl.output_tokens[i] - 2 + mdl.finished[i, j, k]

    @model.Constraint(model.CLIENTS, model.POSITIONS, doc="slots held (prefilling or running) <= B_j")
    def batch_capacity(mdl, j, k):
        return sum(mdl.prefill[i, j, k] + mdl.running[i, j, k] for i in mdl.REQUESTS) <= mdl.batch_size[j]

    @model.Constraint(model.CLIENTS, model.POSITIONS, doc="a prefill iteration admits someone")
    def prefill_nonempty(mdl, j, k):
        return mdl.is_prefill[j, k] <= sum(mdl.prefill[i, j, k] for i in mdl.REQUESTS)

    @model.Constraint(model.CLIENTS, model.POSITIONS, doc="a decode iteration decodes someone")
    def decode_nonempty(mdl, j, k):
        return mdl.is_decode[j, k] <= sum(mdl.decode[i, j, k] for i in mdl.REQUESTS)

    @model.Constraint(model.CLIENTS, model.POSITIONS, doc="unused positions only at the end")
    def used_prefix(mdl, j, k):
        if k == K:
            return pyo.Constraint.Skip
        return mdl.is_prefill[j, k] + mdl.is_decode[j, k] >= mdl.is_prefill[j, k + 1] + mdl.is_decode[j, k + 1]

    @model.Constraint(model.CLIENTS, model.POSITIONS, doc="a prefill follows a completion (or starts the client)")
    def prefill_after_completion(mdl, j, k):
        if k == 1:
            return pyo.Constraint.Skip
        return mdl.is_prefill[j, k] <= sum(mdl.finished[i, j, k] - mdl.finished[i, j, k - 1] for i in mdl.REQUESTS)

    @model.Constraint(model.CLIENTS, doc="T >= client j's total time: sum v_i + a_p N_prefill + a_d N_decode")
    def client_time(mdl, j):
        return mdl.makespan_s >= sum(mdl.work_s[i] * mdl.x[i, j] for i in mdl.REQUESTS) \
            + cm.a_p * sum(mdl.is_prefill[j, k] for k in mdl.POSITIONS) \
            + cm.a_d * sum(mdl.is_decode[j, k] for k in mdl.POSITIONS)

    symmetric = [(i, j) for i in range(n) for j in range(m) if j > i] if data.identical_clients else []
    model.SYMMETRIC = pyo.Set(initialize=symmetric, dimen=2, doc="(i, j) with j > i, identical clients")

    @model.Constraint(model.SYMMETRIC, doc="symmetry: request i only on clients <= i")
    def symmetry(mdl, i, j):
        return mdl.x[i, j] == 0

    model.objective = pyo.Objective(expr=model.makespan_s, sense=pyo.minimize, doc="minimize the makespan")
    return model


# -- extraction, export and replay --------------------------------------------------------
def extract_plan(model: pyo.ConcreteModel) -> list[list[tuple[str, list[int]]]]:
    """Per client, the used positions in order as ``(kind, request rows)``."""
    import pyomo.environ as pyo  # here, not at import: `simulate` never pays its 0.2 s
    def on(var) -> bool:
        return (pyo.value(var, exception=False) or 0.0) > 0.5

    plan = []
    for j in model.CLIENTS:
        seq = []
        for k in model.POSITIONS:
            if on(model.is_prefill[j, k]):
                seq.append(("prefill", [i for i in model.REQUESTS if on(model.prefill[i, j, k])]))
            elif on(model.is_decode[j, k]):
                seq.append(("decode", [i for i in model.REQUESTS if on(model.decode[i, j, k])]))
        plan.append(seq)
    return plan


def plan_timeline(plan, trace: pd.DataFrame, cost_model: LinearCostModel) -> pd.DataFrame:
    """The timeline table (MODEL.md section 9) of a per-client plan, times from the cost model."""
    l = trace["input_tokens"].to_numpy(np.int64)
    ids = trace["request_id"].astype(str).to_numpy()
    rows = []
    for j, seq in enumerate(plan):
        clock, decoded = 0.0, {}
        for it, (kind, members) in enumerate(seq):
            if kind == "prefill":
                tokens = int(sum(l[i] for i in members))
                duration = float(cost_model.prefill_time(tokens))
            else:
                tokens = 0
                for i in members:
                    decoded[i] = decoded.get(i, 0) + 1
                    tokens += int(l[i]) + decoded[i]  # the d-th decode reads l_i + d tokens
                duration = float(cost_model.decode_time(len(members), tokens))
            rows.append({"client": j, "iteration": it, "kind": kind, "start_s": clock, "end_s": clock + duration,
                         "n_requests": len(members), "tokens": tokens,
                         "request_ids": " ".join(ids[i] for i in sorted(members))})
            clock += duration
    return pd.DataFrame(rows, columns=list(TIMELINE_COLUMNS))


def plan_from_timeline(timeline: pd.DataFrame, trace: pd.DataFrame, clients: int):
    """The per-client plan of a timeline (e.g. a simulated schedule, as a warm start)."""
    row_of = {str(r): k for k, r in enumerate(trace["request_id"].astype(str))}
    plan: list[list] = [[] for _ in range(clients)]
    for rec in timeline.sort_values(["client", "iteration"]).itertuples(index=False):
        plan[int(rec.client)].append((rec.kind, [row_of[s] for s in str(rec.request_ids).split()]))
    return plan


class PlannedRule:
    """Iteration rule ``planned``: admit what a precomputed plan admits, when it does.

    ``plan[j]`` lists, for client j, ``[decodes_before, count]`` per prefill:
    after ``decodes_before`` decode iterations on j, prefill the next
    ``count`` requests of its queue.  Used to replay an exact schedule.
    """

    def __init__(self, plan=None, **_: Any) -> None:
        if plan is None:
            raise ConfigError("the 'planned' rule needs a plan.", field="plan",
                              fix="pass plan= from workbench.offline.exact (see replay_exact).")
        self.plan = [list(map(tuple, p)) for p in plan]
        self.next = [0] * len(self.plan)

    def admit(self, client) -> int:
        steps, k = self.plan[client.index], self.next[client.index]
        if k < len(steps) and steps[k][0] == client.decode_count:
            self.next[client.index] += 1
            return int(steps[k][1])
        return 0


register_rule("planned")(PlannedRule)
declare_params("rule", "planned", plan=Param("object", "the admission plan of an exact schedule (replay_exact)"))


def replay_inputs(plan, trace: pd.DataFrame):
    """Trace rows reordered so FIFO is the plan's prefill order, the assignment, and the admission plan."""
    rows, client_of, admissions = [], [], []
    for j, seq in enumerate(plan):
        decodes, steps = 0, []
        for kind, members in seq:
            if kind == "prefill":
                steps.append([decodes, len(members)])
                for i in sorted(members):
                    rows.append(i)
                    client_of.append(j)
            else:
                decodes += 1
        admissions.append(steps)
    return trace.iloc[rows].reset_index(drop=True), np.array(client_of, dtype=np.int64), admissions


def replay_exact(result: ExactResult):
    """Replay an exact schedule in the simulator (``planned`` rule); returns the simulated schedule."""
    from workbench.engine.core import simulate

    trace, assignment, admissions = replay_inputs(result.plan, result.trace)
    return simulate(trace, result.n_clients, list(result.batch_size), "continuous", result.cost_model,
                    assignment=assignment, order="fifo", rule="planned", plan=admissions)


# -- solve ----------------------------------------------------------------------------------
@dataclass
class ExactResult:
    """The exact solve: its schedule, the solver's outcome, and the plan."""

    schedule: Schedule
    status: str
    makespan_s: float
    bound_s: float | None
    gap: float
    time_s: float
    size: dict[str, int]
    plan: list = field(repr=False)
    trace: pd.DataFrame = field(repr=False)
    cost_model: LinearCostModel = field(repr=False)
    batch_size: np.ndarray = field(repr=False)
    solve_result: SolveResult | None = field(default=None, repr=False)

    @property
    def n_clients(self) -> int:
        return len(self.batch_size)

    @property
    def optimal(self) -> bool:
        return self.status == "optimal"


def _heuristic_schedule(trace, clients, B, cm) -> Schedule:
    """The best of a few simulated policies: an upper bound and a warm start."""
    from workbench.engine.core import simulate

    best = None
    for policy in ("paper-baseline", "static", "least-work"):
        s = simulate(trace, clients, list(B), policy, cm, lower_bound_s=0.0)
        if best is None or s.makespan_s < best.makespan_s:
            best = s
    return best


def _warm_start(model: pyo.ConcreteModel, plan, data: ExactData):
    """Variable values of a plan, clients relabelled for the symmetry constraints."""
    n, m, K = data.n_requests, data.n_clients, data.positions
    if any(len(seq) > K for seq in plan):
        return None
    if data.identical_clients:
        lowest = [min((i for kind, mem in seq if kind == "prefill" for i in mem), default=n + j)
                  for j, seq in enumerate(plan)]
        plan = [plan[j] for j in sorted(range(m), key=lambda j: lowest[j])]
    values = []
    o = data.output_tokens
    for j, seq in enumerate(plan):
        state = {}  # i -> decodes done
        started, finished = set(), set()
        for k in range(1, K + 1):
            for i in range(n):
                values.append((model.finished[i, j, k], 1.0 if i in finished else 0.0))
            kind, members = seq[k - 1] if k <= len(seq) else (None, [])
            values.append((model.is_prefill[j, k], 1.0 if kind == "prefill" else 0.0))
            values.append((model.is_decode[j, k], 1.0 if kind == "decode" else 0.0))
            for i in range(n):
                values.append((model.prefill[i, j, k], 1.0 if kind == "prefill" and i in members else 0.0))
                values.append((model.decode[i, j, k], 1.0 if kind == "decode" and i in members else 0.0))
            for i in members:
                if kind == "prefill":
                    started.add(i)
                    state[i] = 0
                    if o[i] == 1:
                        finished.add(i)
                else:
                    state[i] += 1
                    if state[i] == o[i] - 1:
                        finished.add(i)
        for i in range(n):
            values.append((model.x[i, j], 1.0 if i in started else 0.0))
    return values


def solve_exact(trace: pd.DataFrame | str, clients: int = 2, batch_size=2, cost_model="llama-65b", *,
                time_limit: float = 60.0, rel_gap: float = 0.0, threads: int | None = None,
                max_binaries: int | None = MAX_EXACT_BINARIES, max_requests: int = MAX_EXACT_REQUESTS,
                warm_start: bool = True, kv_capacity_tokens=None, record: bool = False) -> ExactResult:
    """Solve the exact MIP and export its schedule (policy ``exact``) in the common format.

    Refuses, before building, instances with more than ``max_requests``
    requests or an estimated ``max_binaries`` binaries.  A time limit with an
    incumbent returns that schedule with ``status='time_limit'`` and its
    proven gap.  The schedule's ``lower_bound_s`` is the instance's bound
    (:func:`workbench.schedule.bounds.closed_form_lower_bound`); the MIP's own
    proven bound is ``bound_s`` and ``params.mip_bound_s``.  The MIP has no
    KV-cache constraint, so ``kv_capacity_tokens`` other than ``None`` is
    refused rather than ignored.
    """
    from workbench.schedule.bounds import refuse_recording

    refuse_recording(record)
    if kv_capacity_tokens is not None:
        raise ConfigError("the exact MIP has no KV-cache constraint, so it cannot honour a KV capacity.",
                          field="kv_capacity_tokens",
                          fix="drop --kv-capacity, or simulate a policy with it (workbench simulate --kv-capacity).")
    started_at = time.perf_counter()
    max_binaries = MAX_EXACT_BINARIES if max_binaries is None else int(max_binaries)
    trace = load_trace(trace)
    cm = load_preset(cost_model)
    m = int(clients)
    if m != clients or m < 1:
        raise ConfigError(f"clients is {clients!r}.", field="clients", fix="use an integer >= 1.")
    try:
        B = batch_sizes_array(batch_size, m)
    except (TypeError, ValueError):
        raise ConfigError(f"batch_size {batch_size!r} does not fit {m} clients.", field="batch_size",
                          fix="give one integer, or one per client.") from None
    if np.any(B < 1):
        raise ConfigError(f"batch size {int(B.min())} is below 1.", field="batch_size", fix="use B >= 1.")
    if float(trace["arrival_s"].max()) > 0:
        row = int(np.flatnonzero(trace["arrival_s"].to_numpy() > 0)[0])
        raise ConfigError("the exact MIP assumes every request is available at time 0 (the paper's batch job).",
                          field="arrival_s", row=row, fix="set arrival_s to 0, or simulate online traffic instead.")
    n = len(trace)
    hybrid = "use the hybrid method for instances this size: `workbench offline` (bin packing) then the online rule"
    if n > max_requests:
        raise ConfigError(f"{n} requests exceed the exact MIP's limit of {max_requests}.", field="trace",
                          fix=f"{hybrid}, or take a subset with workbench.workload.trace.sample_trace.")
    l = trace["input_tokens"].to_numpy(np.int64)
    o = trace["output_tokens"].to_numpy(np.int64)
    # Size from the trivial K first, so a hopeless instance is refused before any simulation.
    K_max = positions_needed(o, cm, None)
    if exact_size(n, m, min(K_max, n + int(np.sum(o - 1))))["binaries"] > 50 * max_binaries:
        size = exact_size(n, m, K_max)
        raise ConfigError(f"the exact MIP would have about {size['binaries']:,} binaries "
                          f"({n} requests x {m} clients x {K_max} positions; limit {max_binaries:,}).",
                          field="trace", fix=hybrid + ".")
    heuristic = _heuristic_schedule(trace, m, B, cm)
    K = positions_needed(o, cm, heuristic.makespan_s)
    size = exact_size(n, m, K)
    if size["binaries"] > max_binaries:
        raise ConfigError(f"the exact MIP would have about {size['binaries']:,} binaries "
                          f"({n} requests x {m} clients x {K} positions; limit {max_binaries:,}).",
                          field="trace", fix=hybrid + ", or raise max_binaries knowingly.")
    data = ExactData(input_tokens=l, output_tokens=o, work_s=cm.request_work_s(l, o), batch_size=B, cost_model=cm,
                     positions=K, makespan_ub_s=heuristic.makespan_s * (1 + 1e-9) + 1e-12)
    model = build_exact_model(data)
    start = _warm_start(model, plan_from_timeline(heuristic.timeline, trace, m), data) if warm_start else None
    result = solve(model, time_limit=time_limit, rel_gap=rel_gap, threads=threads, warm_start=start,
                   started_at=started_at)  # the limit covers building the model too
    plan = extract_plan(model)
    timeline = plan_timeline(plan, trace, cm)
    makespan = float(timeline["end_s"].max())
    bound = closed_form_lower_bound(trace, m, B, cm)
    lb_value, lb_binding = bound.value_s, bound.binding
    metrics = build_metrics(timeline, clients=m, batch_size=B, cost_model=cm, policy="exact",
                            params={"method": "exact-mip", "status": result.status, "time_limit": time_limit,
                                    "rel_gap": rel_gap, "positions": K, "mip_bound_s": result.bound},
                            lower_bound_s=lb_value, lower_bound_binding=lb_binding)
    schedule = Schedule(timeline=timeline, requests=requests_from_timeline(timeline, trace), metrics=metrics)
    return ExactResult(schedule=schedule, status=result.status, makespan_s=makespan, bound_s=result.bound,
                       gap=result.gap, time_s=time.perf_counter() - started_at, size=size, plan=plan, trace=trace,
                       cost_model=cm, batch_size=B, solve_result=result)
