"""The simulation engine's front door: :func:`simulate` runs a trace under a policy; :func:`build_engine` hands
you the run to step, join and change while it runs.

The engine's parts, each in its own module (MODEL.md sections 1 and 11; ``docs/engine.md`` draws them):

* the **event clock** (:mod:`~workbench.engine.clock`): arrivals and replica boundaries in time order;
* the **replicas** (:mod:`~workbench.engine.replica`): queue, running batch, KV use, clock and life;
* the **requests** (:mod:`~workbench.engine.requests`): where each is, its times and counts;
* the **router**, queue order and **iteration rule** of the policy (:mod:`workbench.policies`), asked
  through the **hooks** (:mod:`~workbench.engine.hooks`: routing, rules, work stealing, outside decisions);
* the **iteration formers** (:mod:`~workbench.engine.formers`): ``exclusive`` (the paper's prefill or
  decode stages) and ``mixed`` (vLLM V1 / Sarathi-Serve chunked prefill);
* the **KV managers** (:mod:`~workbench.engine.kv`): reserved at admission, or paged with recompute
  preemption and a prefix cache;
* the **recorder** (:mod:`~workbench.engine.recorder`) and the assembly of the schedule
  (:mod:`~workbench.engine.assemble`);
* the **loop** (:mod:`~workbench.engine.loop`): :class:`~workbench.engine.loop.Engine`, with the cost
  model injected into every replica;
* the **shards** (:mod:`~workbench.engine.shards`): replicas that never interact, run through the same
  loop in parallel processes.

How an iteration is formed and how KV memory is held are choices of one loop
(:class:`~workbench.engine.config.EngineConfig`), never a second simulator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from workbench._checks import batch_size_option, cost_models, kv_capacities, positive_int
from workbench.costmodel.linear import LinearCostModel
from workbench.engine.assemble import assemble, assemble_general, same_models, unserved_error
from workbench.engine.clock import EventClock
from workbench.engine.config import (  # noqa: F401  (the engine's options, importable from here as before)
    DEFAULT_BLOCK_SIZE,
    DEFAULT_TOKEN_BUDGET,
    ENGINE_OPTIONS,
    ITERATION_MODES,
    KV_MODES,
    PROGRESS_MIN_REQUESTS,
    VLLM_SEMANTICS,
    EngineConfig,
)
from workbench.engine.formers import ExclusiveFormer, MixedFormer
from workbench.engine.hooks import WorkStealing
from workbench.engine.kv import PagedKV, PagedKVManager, prefix_block_keys
from workbench.engine.loop import Engine
from workbench.engine.pools import (
    PooledFormer,
    PoolRouter,
    plan_pools,
    pool_router,
    pooled_schedule,
    pools_option,
    stage_weights,
)
from workbench.engine.recorder import Recorder
from workbench.engine.replica import Replica
from workbench.engine.requests import RequestTable
from workbench.engine.shards import shard_plan, workers_option
from workbench.errors import ConfigError
from workbench.policies.registry import DISPATCHERS, ORDERS, RULES, Policy, resolve_policy
from workbench.schedule.metrics import batch_sizes_array
from workbench.schedule.schema import Schedule
from workbench.workload.trace import load_trace

DECISIONS = ("rule", "external")


def simulate(trace: pd.DataFrame | str, clients: int = 8, batch_size: int | list[int] = 16,
             policy: str | Policy = "paper-baseline", cost_model: str | LinearCostModel | list = "llama-65b", *,
             dispatch: str | None = None, order: str | None = None, rule: str | None = None,
             kv_capacity_tokens: int | list[int] | None = None, lower_bound_s: float | None = None,
             assignment: np.ndarray | None = None, predictor=None, progress: bool | None = None,
             iteration: str | None = None, token_budget: int | None = None,
             max_partial_prefills: int | None = None, kv: str | None = None, block_size: int | None = None,
             prefix_caching: bool | None = None, cache_at_schedule: bool | None = None,
             full_prompt_admission: bool | None = None, async_scheduling: bool | None = None,
             long_prefill_token_threshold: int | None = None, dp_lockstep: bool | None = None,
             controller=None, autoscaling=None, controller_params: dict | None = None, pools=None,
             workers: int | None = None, **params: Any) -> Schedule:
    """Simulate ``trace`` on ``clients`` clients under ``policy``; return the schedule.

    ``cost_model`` is a preset name, a cost model, or one per client.
    ``batch_size`` and ``kv_capacity_tokens`` may be per client.
    ``assignment`` (request row -> client) fixes the dispatch, as an offline
    stage does.  ``predictor`` (a :mod:`workbench.workload.predict` object or
    name such as ``"noisy:0.2"``; default: exact) gives the output lengths every
    scheduling decision sees: dispatch weights, the offline assignment, queue
    order and the iteration rule's look-ahead; the engine runs the true ones.
    ``iteration``, ``token_budget``, ``max_partial_prefills``, ``kv``,
    ``block_size``, ``prefix_caching`` and vLLM V1's semantics
    (``cache_at_schedule``, ``full_prompt_admission``, ``async_scheduling``,
    ``long_prefill_token_threshold``; on in the ``vllm`` policy) and
    ``dp_lockstep`` (the replicas step together, as an expert-parallel
    data-parallel group does) override the policy's engine options
    (:class:`EngineConfig`).  Other keyword arguments are the policy's
    parameters (for example ``mu`` for the Lagrangian rule, ``steal=True`` for
    work stealing: a client with free slots and an empty queue takes waiting
    requests from the most loaded client).  ``progress`` shows a tqdm bar
    (default: from :data:`PROGRESS_MIN_REQUESTS` requests on).  ``controller`` (a name of
    :data:`workbench.policies.controllers.CONTROLLERS` or a controller object, with ``controller_params``)
    grows and shrinks the fleet from ``clients`` replicas within ``autoscaling``
    (:class:`~workbench.policies.controllers.Autoscaling`; MODEL.md section 11.9).  ``pools`` (a
    :class:`~workbench.engine.pools.Pools` or a dict of its fields) splits the fleet into prefill and
    decode pools with the KV cache moved between them over a link (MODEL.md section 11.11); ``clients``
    is then the pools' size.  ``workers`` runs a run whose replicas never interact (round-robin or offline
    dispatch; no stealing, pools or lock-step) in that many parallel processes, with the same schedule
    byte for byte (:mod:`~workbench.engine.shards`; default: runs from
    :data:`~workbench.engine.shards.SHARD_MIN_REQUESTS` requests over the cores available, 1: one process).
    """
    if controller is not None:
        if pools is not None:
            raise ConfigError("a controller does not grow or shrink pooled fleets.", field="pools",
                              fix="leave out controller, or pools.")
        if workers_option(workers) not in (None, 1):
            raise ConfigError(f"workers {workers} needs replicas that never interact, but a controller adds and "
                              "drains them as the run goes.", field="workers",
                              fix="leave workers out with a controller.")
        from workbench.engine.autoscale import controlled_run

        return controlled_run(build_engine, trace, clients, batch_size, policy, cost_model, controller=controller,
                              autoscaling=autoscaling, controller_params=controller_params, dispatch=dispatch,
                              order=order, rule=rule, kv_capacity_tokens=kv_capacity_tokens,
                              lower_bound_s=lower_bound_s, predictor=predictor, progress=progress,
                              iteration=iteration, token_budget=token_budget,
                              max_partial_prefills=max_partial_prefills, kv=kv, block_size=block_size,
                              prefix_caching=prefix_caching, cache_at_schedule=cache_at_schedule,
                              full_prompt_admission=full_prompt_admission, async_scheduling=async_scheduling,
                              long_prefill_token_threshold=long_prefill_token_threshold, dp_lockstep=dp_lockstep,
                              **params)
    engine = build_engine(trace, clients, batch_size, policy, cost_model, dispatch=dispatch, order=order, rule=rule,
                          kv_capacity_tokens=kv_capacity_tokens, lower_bound_s=lower_bound_s, assignment=assignment,
                          predictor=predictor, progress=progress, iteration=iteration, token_budget=token_budget,
                          max_partial_prefills=max_partial_prefills, kv=kv, block_size=block_size,
                          prefix_caching=prefix_caching, cache_at_schedule=cache_at_schedule,
                          full_prompt_admission=full_prompt_admission, async_scheduling=async_scheduling,
                          long_prefill_token_threshold=long_prefill_token_threshold, dp_lockstep=dp_lockstep,
                          pools=pools, workers=workers, **params)
    engine.run()
    return engine.schedule()


def build_engine(trace: pd.DataFrame | str, clients: int = 8, batch_size: int | list[int] = 16,
                 policy: str | Policy = "paper-baseline", cost_model: str | LinearCostModel | list = "llama-65b", *,
                 decisions: str = "rule", **options: Any) -> Engine:
    """The run :func:`simulate` would make, not started: step it, read it, add and drain replicas.

    Takes :func:`simulate`'s arguments.  ``decisions="external"`` hands every iteration decision
    to the caller: :meth:`~workbench.engine.loop.Engine.run` and ``step`` stop with a
    :class:`~workbench.engine.hooks.Decision` that :meth:`~workbench.engine.loop.Engine.decide` answers.
    """
    if decisions not in DECISIONS:
        raise ConfigError(f"decisions {decisions!r} is not known.", field="decisions",
                          fix=f"use {' or '.join(DECISIONS)}.")
    run = _Setup(trace, clients, batch_size, policy, cost_model, **options)
    return run.engine(external=decisions == "external")


class _Setup:
    """Everything a run needs before its first event: the checked arguments, the parts, the replicas."""

    def __init__(self, trace, clients, batch_size, policy, cost_model, *, dispatch=None, order=None, rule=None,
                 kv_capacity_tokens=None, lower_bound_s=None, assignment=None, predictor=None, progress=None,
                 iteration=None, token_budget=None, max_partial_prefills=None, kv=None, block_size=None,
                 prefix_caching=None, cache_at_schedule=None, full_prompt_admission=None, async_scheduling=None,
                 long_prefill_token_threshold=None, dp_lockstep=None, pools=None, workers=None, **params) -> None:
        raw_trace = trace
        self.workers = workers_option(workers)
        self.trace = trace = load_trace(trace)
        pools = pools_option(pools)
        roles = pools.replica_roles() if pools is not None else None
        if roles is not None and clients not in (8, len(roles)):  # 8: simulate's default, left as it is
            raise ConfigError(f"clients is {clients!r} but the pools hold {len(roles)} replicas.", field="clients",
                              fix="leave clients out with pools (it is the pools' size).")
        n_clients = positive_int(len(roles) if roles is not None else clients, "clients")
        B = batch_sizes_array(batch_size_option(batch_size), n_clients)
        if np.any(B < 1):
            raise ConfigError(f"batch size {int(B.min())} is below 1.", field="batch_size",
                              fix="use a batch size of at least 1.")
        self.models = models = cost_models(cost_model, n_clients)
        if assignment is not None:
            policy_obj = resolve_policy(policy, order=order, rule=rule, **params)
        else:
            policy_obj = resolve_policy(policy, dispatch=dispatch, order=order, rule=rule, **params)
        explicit = {name: value for name, value in (
            ("iteration", iteration), ("token_budget", token_budget), ("max_partial_prefills", max_partial_prefills),
            ("kv", kv), ("block_size", block_size), ("prefix_caching", prefix_caching),
            ("cache_at_schedule", cache_at_schedule), ("full_prompt_admission", full_prompt_admission),
            ("async_scheduling", async_scheduling), ("long_prefill_token_threshold", long_prefill_token_threshold),
            ("dp_lockstep", dp_lockstep)) if value is not None}
        self.config = config = EngineConfig.from_options(_engine_options(policy_obj, explicit), int(B.max()))
        self.linear_models = all(type(m) is LinearCostModel for m in models)
        # The work, estimated before anything runs: refused with the figure if it cannot finish in memory.
        from workbench.schedule.estimate import check_work

        check_work(trace, n_clients, B, export=False, stepped=config.iteration == "mixed" or not self.linear_models,
                   cost_models=models)
        self.l = trace["input_tokens"].to_numpy(np.int64)
        self.o = trace["output_tokens"].to_numpy(np.int64)
        self.arrival = trace["arrival_s"].to_numpy(float)
        self.kv_caps = self._kv_capacities(kv_capacity_tokens, n_clients)
        # What the schedulers see: predicted output lengths (the true ones unless a predictor is given).
        self.predictor = _predictor(predictor)
        self.seen_trace, self.o_seen = trace, self.o
        if self.predictor is not None:
            self.o_seen = self.predictor.predict(raw_trace if isinstance(raw_trace, pd.DataFrame) else trace)
            self.seen_trace = trace.assign(output_tokens=self.o_seen)
        if config.iteration == "mixed" and not self.linear_models and not all(
                hasattr(m, "iteration_time") for m in models):
            raise ConfigError("mixed iterations need a cost model with iteration_time().", field="cost_model",
                              fix="use a linear or profiled preset.")
        self.n_clients, self.B, self.lower_bound_s, self.progress = n_clients, B, lower_bound_s, progress
        self.steal = bool(policy_obj.params.get("steal", False))
        self.pools = None
        if pools is not None:
            plan = plan_pools(pools, models, policy_obj, config, steal=self.steal)
            self.pools = plan if plan.disaggregated else None  # every replica mixed: today's engine
        # A measured model is stepped and recorded row by row; so are pooled replicas (their members listed).
        self.classic = config.classic and self.linear_models and self.pools is None
        self._policy(policy_obj, assignment)

    def _kv_capacities(self, kv_capacity_tokens, n_clients: int) -> list:
        """Per client, the KV tokens it holds (None: unlimited), checked against the longest request."""
        config, models, l, o, trace = self.config, self.models, self.l, self.o, self.trace
        kv_caps = kv_capacities(kv_capacity_tokens, models, n_clients)
        if config.kv != "paged":
            _check_kv(kv_caps, l, o, trace)
            return kv_caps
        if kv_capacity_tokens is None and all(getattr(m, "kv_capacity_tokens", None) for m in models):
            kv_caps = [int(m.kv_capacity_tokens) for m in models]  # the preset's: GPU memory less weights
        caps = list(kv_caps)
        if any(c is None for c in caps):
            raise ConfigError("paged KV memory needs a capacity on every client.", field="kv_capacity_tokens",
                              fix="give --kv-capacity-tokens (or 'preset' for the preset's value).")
        for j, cap in enumerate(caps):
            if cap < config.block_size:
                raise ConfigError(f"client {j} holds {cap} KV tokens, less than one block of {config.block_size}.",
                                  field="kv_capacity_tokens", fix="give a capacity of at least one block.")
        _check_kv_paged(caps, config.block_size, l, o, trace)
        return kv_caps

    def _policy(self, policy_obj: Policy, assignment) -> None:
        """The dispatcher, the iteration rule and the dispatch weights of the policy."""
        models, n_clients, B, n = self.models, self.n_clients, self.B, len(self.trace)
        reference = models[0]
        bound_ref = reference if type(reference) is LinearCostModel else getattr(reference, "bound_model",
                                                                                 lambda: None)()
        weight_model = reference if type(reference) is LinearCostModel else (bound_ref or reference)
        self.reference = reference
        self.weights = weight_model.request_weight_s(self.l, self.o_seen, int(B.max()))
        if self.pools is not None and assignment is None:
            self._pool_routers(policy_obj, weight_model)
            return
        if assignment is not None:
            from workbench.policies.builtin import Assigned
            assignment = np.asarray(assignment)
            if (assignment.shape != (n,) or not np.issubdtype(assignment.dtype, np.integer)
                    or assignment.min() < 0 or assignment.max() >= n_clients):
                raise ConfigError(f"assignment must give each of the {n} requests a client in 0..{n_clients - 1}.",
                                  field="assignment", fix="pass one client index per trace row.")
            self.dispatcher = Assigned(assignment)
            policy_obj = Policy(policy_obj.name, "assigned", policy_obj.order, policy_obj.rule, policy_obj.params,
                                policy_obj.description, policy_obj.engine)
        else:
            self.dispatcher = DISPATCHERS[policy_obj.dispatch](
                trace=self.seen_trace, clients=n_clients, batch_size=B,
                cost_model=weight_model if same_models(models) else models, params=policy_obj.params,
                kv_capacity_tokens=self.kv_caps)
        self.rule = RULES[policy_obj.rule](**policy_obj.params)
        self.policy = policy_obj

    def _pool_routers(self, policy_obj: Policy, weight_model) -> None:
        """Pools: a router per stage over its pool, weighing each request by its work at that stage."""
        plan, B = self.pools, int(self.B.max())
        self.weights, self.w_decode = stage_weights(weight_model, self.l, self.o_seen, B)
        front = plan.members["prefill"] + plan.members["mixed"]
        self.dispatcher = PoolRouter(pool_router(plan.prefill_router, self.weights, len(front)), front)
        self.decode_router = pool_router(plan.decode_router, self.w_decode, len(plan.members["decode"]))
        self.rule = RULES[policy_obj.rule](**policy_obj.params)
        self.policy = policy_obj

    def replica(self, cost_model, batch_size: int, kv_capacity_tokens, index: int) -> Replica:
        """A replica of this run's engine (also for one added mid-run, checked as the first ones were)."""
        c = Replica(index, int(batch_size), cost_model, None if kv_capacity_tokens is None else int(kv_capacity_tokens),
                    float(self.reference.decode_time(1, 1) / cost_model.decode_time(1, 1)))
        c.predicted_finish = self.requests.predicted_finish
        if self.config.kv == "paged":
            c.paged = PagedKV(int(c.kv_capacity_tokens), self.config.block_size, self.config.prefix_caching)
        return c

    def added_replica(self, cost_model, batch_size, kv_capacity_tokens, index: int) -> Replica:
        """:meth:`Engine.add_replica`'s arguments checked as :func:`simulate` checks its own."""
        if self.pools is not None:
            raise ConfigError("replicas are not added to pooled fleets while they run (their routers are fixed).",
                              field="pools", fix="give every replica in Pools(...) before the run.")
        model = cost_models(cost_model, 1)[0]
        size = positive_int(batch_size, "batch_size")
        if self.classic and type(model) is not LinearCostModel:
            raise ConfigError("this run computes decode runs in closed form, which needs a linear cost model.",
                              field="cost_model", fix="give a linear preset, or start the run with a measured one.")
        if self.config.iteration == "mixed" and not hasattr(model, "iteration_time"):
            raise ConfigError("mixed iterations need a cost model with iteration_time().", field="cost_model",
                              fix="use a linear or profiled preset.")
        cap = kv_capacities(kv_capacity_tokens, [model], 1)[0]
        if self.config.kv == "paged":
            cap = cap if cap is not None else getattr(model, "kv_capacity_tokens", None)
            if cap is None or cap < self.config.block_size:
                raise ConfigError(f"the new replica holds {cap} KV tokens; paged KV needs at least one block of "
                                  f"{self.config.block_size}.", field="kv_capacity_tokens",
                                  fix="give a capacity of at least one block.")
        return self.replica(model, size, cap, index)

    def engine(self, external: bool) -> Engine:
        config, trace, n = self.config, self.trace, len(self.trace)
        block_keys = prefix_block_keys(trace, config.block_size) if config.prefix_caching else None
        ids_text = trace["request_id"].astype(str).tolist() if not self.classic else []
        order_key = ORDERS[self.policy.order](self.l.astype(float), self.o_seen.astype(float), self.arrival)
        self.requests = rq = RequestTable(self.l, self.o, self.o_seen, self.weights, order_key, ids_text, block_keys)
        self.requests_keys = block_keys
        replicas = [self.replica(self.models[j], int(self.B[j]), self.kv_caps[j], j) for j in range(self.n_clients)]
        overhead = [float(getattr(m, "frontend_overhead_s", 0.0)) for m in self.models]
        if any(overhead) and len(set(overhead)) > 1:
            raise ConfigError("the clients' cost models give different front-end overheads.",
                              field="frontend_overhead_s", fix="give every client the same frontend_overhead_s.")
        # The front end delays every request before the engine sees it.
        clock = EventClock(self.arrival + overhead[0] if any(overhead) else self.arrival)
        recorder = Recorder(self.classic, config.iteration == "mixed")
        kv_manager = PagedKVManager(rq, config.block_size, config.iteration == "mixed") if config.kv == "paged" else None
        stealing = WorkStealing(replicas, rq, clock) if self.steal else None
        former = (MixedFormer if config.iteration == "mixed" else PooledFormer if self.pools is not None
                  else ExclusiveFormer)(rq, recorder, clock, kv_manager, config, self.classic, stealing)
        if self.pools is not None:
            former.setup(self.pools, replicas, self.decode_router, self.w_decode.tolist())
        if config.async_scheduling:
            former.arrival_s = (self.arrival + overhead[0]).tolist()  # when each request reached the engine
        if config.dp_lockstep:
            former.replicas = replicas  # the group: every replica of the run (the list add_replica grows)
        if config.iteration == "mixed":
            former.runs = stealing is None and not config.dp_lockstep
        bar = None
        if self.progress or (self.progress is None and n >= PROGRESS_MIN_REQUESTS):
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="simulating", unit="request", leave=False, mininterval=0.5)
        coupled = ("its iterations are decided outside (decisions='external')" if external
                   else "work stealing moves requests between replicas" if stealing is not None
                   else "its pools hand requests from prefill to decode replicas" if self.pools is not None
                   else "its replicas step in lock-step (dp_lockstep)" if config.dp_lockstep else "")
        shards = shard_plan(self.workers, n_requests=n, weights=self.weights, replicas=replicas,
                            dispatcher=self.dispatcher, arrival_order=clock.arrival_order,
                            coupled=coupled)
        return Engine(trace=trace, replicas=replicas, requests=rq, clock=clock, recorder=recorder, former=former,
                      dispatcher=self.dispatcher, rule=self.rule, stealing=stealing,
                      mixed=config.iteration == "mixed", external=external, new_replica=self.added_replica,
                      finish=self.finish, bar=bar, shards=shards)

    def finish(self, engine: Engine) -> Schedule:
        """The schedule of the finished run (see :mod:`workbench.engine.assemble`)."""
        from workbench.engine.lifecycle import replica_lives

        rq, recorder, replicas = engine.requests, engine.recorder, engine._replicas
        config, trace = self.config, self.trace
        segments = recorder.arrays()
        segments["run_ends"], segments["run_flat"] = recorder.run_ends, recorder.run_flat
        segments["marks"] = recorder.marks
        members, per_request = rq.arrays()
        recorder.free()
        rq.free()
        engine.clock.free()
        models, B, kv_caps, n_clients = self.models, self.B, self.kv_caps, self.n_clients
        if len(replicas) > n_clients:
            models = [c.cost_model for c in replicas]
            B = np.array([c.batch_size for c in replicas], dtype=np.int64)
            kv_caps = [c.kv_capacity_tokens for c in replicas]
            n_clients = len(replicas)
        unserved = np.flatnonzero(np.isnan(per_request["finish_s"]))
        if len(unserved):
            raise unserved_error(unserved, per_request["client"], kv_caps, self.l, self.o, trace)
        described = self.policy.describe()
        if self.predictor is not None:
            described["predictor"] = self.predictor.name
        if not self.classic or self.policy.engine:
            described.update(config.describe())
        lower_bound_s, pool_bound = self.lower_bound_s, None
        if self.pools is not None:
            per_request["prefill_client"] = np.array(engine.former.prefill_client, dtype=np.int64)
            if lower_bound_s is None:
                pool_bound = self._pool_bound()
                lower_bound_s = pool_bound.value_s
        if self.classic:
            schedule = assemble(trace, segments, members, per_request, models, B, n_clients, self.policy.name,
                                described, self.lower_bound_s, kv_caps)
        else:
            schedule = assemble_general(trace, segments, recorder.texts(), per_request, models, B, n_clients,
                                        self.policy.name, described, lower_bound_s, kv_caps, config,
                                        self._extra(replicas, rq), {"preemptions": rq.preemptions,
                                                                    "cached_tokens": rq.cached,
                                                                    "recomputed_tokens": rq.recomputed},
                                        rq.block_keys, id_by_rank=recorder.id_by_rank,
                                        member_flat=recorder.member_flat)
        if self.pools is not None:
            pooled_schedule(schedule, self.pools, engine.former, per_request["prefill_client"], pool_bound)
        if self.steal:
            schedule.metrics["stolen_requests"] = rq.stolen
        if self.predictor is not None:
            schedule.requests["predicted_output_tokens"] = self.o_seen
        if engine._changed:
            schedule.metrics.update(replica_lives(replicas, schedule))
        return schedule

    def _pool_bound(self):
        """The pooled fleet's bound (MODEL.md section 11.11): on the linear model the rules price with."""
        from workbench.engine.assemble import prefix_bound_prompts
        from workbench.schedule.bounds import disaggregated_lower_bound

        plan, config, reference = self.pools, self.config, self.reference
        model = reference if type(reference) is LinearCostModel else reference.bound_model()
        prompts = None
        if config.prefix_caching:
            prompts = prefix_bound_prompts(self.l, self.o, self.requests_keys, config.block_size)[0]
        # With a prefix cache on the decode pool a copy may move fewer tokens: only its latency is certain.
        moved = np.array([plan.transfer_s(0 if config.prefix_caching else int(x)) for x in self.l])
        bound_trace = self.trace[["input_tokens", "output_tokens", "arrival_s"]]
        return disaggregated_lower_bound(bound_trace, plan.roles, self.B, model, moved, prompts)

    def _extra(self, replicas, rq) -> dict:
        config = self.config
        extra = {"preemptions": int(sum(rq.preemptions)), "iteration_mode": config.iteration, "kv_mode": config.kv}
        if config.iteration == "mixed":
            extra["token_budget"] = config.token_budget or 0
        if config.dp_lockstep:
            extra["dp_lockstep"] = True  # rows last as long as the group's slowest member (the validator knows)
        if config.kv == "paged":
            extra["block_size"] = config.block_size
            extra["prefix_caching"] = config.prefix_caching
            if config.cache_at_schedule and config.prefix_caching:
                extra["cache_at_schedule"] = True  # the validator lets a row's later piece hit an earlier one
            if config.prefix_caching:
                queried = sum(c.paged.queried_tokens for c in replicas)
                hits = sum(c.paged.hits_tokens for c in replicas)
                extra["prefix_cache_hit_rate"] = hits / queried if queried else 0.0
        return extra


def _engine_options(policy_obj: Policy, explicit: dict) -> dict:
    """The policy's engine options with the caller's on top.

    A policy's defaults for a mode the caller switched off do not apply (vllm with kv="reserve" keeps no
    block size); the caller's own options are always checked.
    """
    options = {**policy_obj.engine, **explicit}
    if options.get("kv", "reserve") == "reserve":
        for name in ("block_size", "prefix_caching", "cache_at_schedule", "full_prompt_admission"):
            if name not in explicit:
                options.pop(name, None)
    if options.get("iteration", "exclusive") == "exclusive":
        for name in ("token_budget", "max_partial_prefills", *VLLM_SEMANTICS):
            if name not in explicit:
                options.pop(name, None)
    return options


def _check_kv_paged(caps, block_size, l, o, trace) -> None:
    """A request whose every KV block (``l + o - 1`` tokens at its last decode) cannot fit is never served."""
    largest_blocks = max(int(c) // block_size for c in caps)
    need = -(-(l + o - 1) // block_size)
    too_big = need > largest_blocks
    if too_big.any():
        row = int(np.flatnonzero(too_big)[0])
        raise ConfigError(f"request '{trace['request_id'].iloc[row]}' needs {int(need[row])} KV blocks of "
                          f"{block_size} tokens ({int(l[row] + o[row] - 1)} tokens at its last decode) but the "
                          f"largest client holds {largest_blocks} blocks.", field="kv_capacity_tokens", row=row,
                          fix="raise the KV capacity or drop requests longer than the cache.")


def _check_kv(kv, l, o, trace) -> None:
    caps = [v for v in kv if v is not None]
    if len(caps) < len(kv) or not caps:
        return
    need = l + o
    largest = max(caps)
    too_big = need > largest
    if too_big.any():
        row = int(np.flatnonzero(too_big)[0])
        raise ConfigError(f"request {trace['request_id'].iloc[row]!r} needs {int(need[row])} KV tokens "
                          f"(input + output) but the largest client holds {largest}.",
                          field="kv_capacity_tokens", row=row,
                          fix="raise kv_capacity_tokens or drop requests longer than the cache.")


def _predictor(spec):
    """A predictor object from ``simulate``'s ``predictor`` argument (imported when used)."""
    if spec is None:
        return None
    from workbench.workload.predict import make_predictor

    return make_predictor(spec)
