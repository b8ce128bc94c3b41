"""The cheapest fleet that meets a service-level objective, searched over a space the user gives, with a bound.

A **configuration** is a preset (a GPU kind at a tensor-parallel degree), a replica count, a batch size
(``max_num_seqs``), a token budget (mixed iterations), a policy and a controller (``fixed`` by default; any
other grows from one replica up to the count).  Its **cost** is what its replicas' GPUs cost per hour
(:mod:`workbench.costmodel.prices`; under a controller, the GPU-hours it held over the run's hours).  It
**meets** the objective when, simulated, at least ``attainment`` of the requests meet each given target
(``ttft_s``, ``tpot_s``): ``attainment = 0.99`` is "p99 TTFT <= ttft_s and p99 TPOT <= tpot_s"; with
``joint=True`` the share meeting both at once is held to it (goodput's criterion).

Before anything runs, :func:`workbench.schedule.capacity.slo_bound` caps each configuration's attainment
from the trace and the cost model alone; a configuration whose cap is below the target cannot meet it and
is **pruned** (never simulated).  The least cost among the configurations that are not pruned is a
**bound on the cheapest possible** in the space: the gap between it and the chosen configuration's cost is
certified (docs/capacity.md).  Strategies: ``grid`` simulates every configuration left (the whole Pareto
front of cost against attainment); ``cheapest-first`` simulates them in order of their least possible cost,
a batch of one per worker at a time, and stops once the next one's least cost exceeds the cheapest found
meeting the target: the same answer as ``grid`` (the test checks), in fewer simulations.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import ConfigError

STRATEGIES = ("grid", "cheapest-first")


@dataclass(frozen=True)
class Objective:
    """The service-level objective: at least ``attainment`` of the requests within each target (s)."""

    ttft_s: float | None = 1.0
    tpot_s: float | None = None
    attainment: float = 0.99
    joint: bool = False

    def __post_init__(self) -> None:
        if self.ttft_s is None and self.tpot_s is None:
            raise ConfigError("the objective names no target.", field="slo", fix="give a TTFT or a TPOT target.")
        for name in ("ttft_s", "tpot_s"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{name} {v!r} is not a positive number of seconds.", field=name,
                                  fix="give e.g. 1.0.")
        if not 0 < self.attainment <= 1:
            raise ConfigError(f"attainment {self.attainment!r} is not in (0, 1].", field="attainment",
                              fix="give a share such as 0.99.")

    @property
    def ttft(self) -> float:
        return math.inf if self.ttft_s is None else float(self.ttft_s)

    @property
    def tpot(self) -> float:
        return math.inf if self.tpot_s is None else float(self.tpot_s)


@dataclass(frozen=True)
class Space:
    """The configurations to search: every combination of these."""

    presets: tuple[str, ...] = ("llama2-70b-h100-tp4",)
    replicas: tuple[int, ...] = (1, 2, 4)
    batch_sizes: tuple[int, ...] = (64,)
    token_budgets: tuple[int | None, ...] = (None,)  # None: the policy's
    policies: tuple[str, ...] = ("vllm",)
    controllers: tuple[str, ...] = ("fixed",)

    def size(self) -> int:
        return len(configurations(self))


def configurations(space: Space) -> list[dict[str, Any]]:
    """Every configuration of ``space`` (a token budget only where the policy's iterations are mixed)."""
    from workbench.policies.registry import POLICIES

    out, seen = [], set()
    for preset, r, b, tau, policy, ctrl in itertools.product(space.presets, space.replicas, space.batch_sizes,
                                                             space.token_budgets, space.policies,
                                                             space.controllers):
        if policy not in POLICIES:
            raise ConfigError(f"unknown policy '{policy}'.", field="policies", fix=f"use one of {', '.join(POLICIES)}.")
        mixed = POLICIES[policy].engine.get("iteration") == "mixed"
        key = (preset, int(r), int(b), tau if mixed else None, policy, ctrl)
        if key in seen:
            continue
        seen.add(key)
        out.append(dict(zip(("preset", "replicas", "batch_size", "token_budget", "policy", "controller"), key)))
    for k, c in enumerate(out):
        c["config"] = k
    return out


def _label(c: dict) -> str:
    tau = f" tau {c['token_budget']}" if c["token_budget"] else ""
    ctrl = "" if c["controller"] == "fixed" else f" {c['controller']} <= "
    return f"{c['preset']}{ctrl} x{c['replicas']} B{c['batch_size']}{tau} {c['policy']}"


def _bound_model(preset: str):
    from workbench.costmodel.linear import LinearCostModel, load_preset

    model = load_preset(preset)
    return model if type(model) is LinearCostModel else model.bound_model()


def bound_rows(trace: pd.DataFrame, configs: list[dict], objective: Objective, prices) -> pd.DataFrame:
    """Each configuration with its least cost per hour and its bound on attainment (nothing simulated)."""
    from workbench.costmodel.prices import usd_per_replica_hour
    from workbench.policies.registry import POLICIES
    from workbench.schedule.capacity import slo_bound

    rows, cache = [], {}
    for c in configs:
        iteration = POLICIES[c["policy"]].engine.get("iteration", "exclusive")
        tau = c["token_budget"] or POLICIES[c["policy"]].engine.get("token_budget")
        key = (c["preset"], c["replicas"], c["batch_size"], iteration, tau)
        if key not in cache:
            model = _bound_model(c["preset"])
            args = dict(iteration=iteration, token_budget=tau)
            both = slo_bound(trace, model, c["replicas"], c["batch_size"], ttft_slo_s=objective.ttft,
                             tpot_slo_s=objective.tpot, **args)["bound"]
            if objective.joint:
                cache[key] = both
            else:
                # Each target met by a share a: both met by at least 2a - 1 (a miss of either is at most 1 - a),
                # so joint <= bound gives a <= (1 + bound) / 2; and each alone caps its own share.
                each = [slo_bound(trace, model, c["replicas"], c["batch_size"], ttft_slo_s=tt, tpot_slo_s=tp,
                                  **args)["bound"] for tt, tp in ((objective.ttft, math.inf), (math.inf, objective.tpot))]
                cache[key] = min([*each, (1.0 + both) / 2.0])
        per_replica = usd_per_replica_hour(c["preset"], prices)
        least = per_replica * (1 if c["controller"] != "fixed" else c["replicas"])  # a controller holds >= 1
        rows.append({**c, "label": _label(c), "usd_per_replica_hour": per_replica, "least_usd_per_hour": least,
                     "bound": cache[key], "pruned": cache[key] < objective.attainment})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class PlanTask:
    """One configuration to simulate (what a Dask worker receives: plain values and the trace)."""

    config: dict
    trace: pd.DataFrame
    objective: Objective
    usd_per_replica_hour: float


def run_config(task: PlanTask) -> dict[str, Any]:
    """Simulate one configuration; its attainment, latencies, cost and whether it meets the objective."""
    from workbench.engine.core import simulate
    from workbench.schedule.capacity import slo_metrics

    c, obj = task.config, task.objective
    started = time.perf_counter()
    options: dict[str, Any] = {"progress": False}
    if c["token_budget"]:
        options["token_budget"] = int(c["token_budget"])
    if c["controller"] != "fixed":
        options.update(controller=c["controller"], autoscaling={"max_replicas": int(c["replicas"])})
        if c["controller"] == "slo" and obj.ttft_s is not None:
            options["controller_params"] = {"ttft_slo_s": obj.ttft}
        clients = 1
    else:
        clients = int(c["replicas"])
    s = simulate(task.trace, clients, int(c["batch_size"]), c["policy"], c["preset"], **options)
    f = slo_metrics(s, ttft_slo_s=obj.ttft, tpot_slo_s=obj.tpot)
    attainment = f["slo_attainment"] if obj.joint else min(f["ttft_attainment"], f["tpot_attainment"])
    hours = s.makespan_s / 3600.0
    replica_hours = f["replica_hours"]
    usd_per_hour = task.usd_per_replica_hour * (replica_hours / hours if hours > 0 else c["replicas"])
    if c["controller"] == "fixed":
        usd_per_hour = task.usd_per_replica_hour * c["replicas"]
    return {"config": c["config"], "attainment": attainment, "ttft_attainment": f["ttft_attainment"],
            "tpot_attainment": f["tpot_attainment"], "ttft_s_p99": f["ttft_s_p99"], "tpot_s_p99": f["tpot_s_p99"],
            "goodput_rps": f["goodput_rps"], "usd_per_hour": usd_per_hour,
            "usd": usd_per_hour * hours, "makespan_s": s.makespan_s, "meets": attainment >= obj.attainment,
            "sim_s": time.perf_counter() - started}


class _Runner:
    """Runs plan tasks in-process (``workers == 0``, no scheduler) or on one Dask client kept for the search."""

    def __init__(self, *, workers: int, scheduler: str | None) -> None:
        self.workers, self.scheduler = int(workers), scheduler
        self.local = scheduler is None and self.workers <= 0
        self._session = self.client = None
        self.info: dict[str, Any] = {"executor": "in-process" if self.local else "dask"}

    def __enter__(self):
        if not self.local:
            from workbench.studies.experiments import dask_client

            self._session = dask_client(scheduler=self.scheduler, workers=self.workers)
            self.client, startup = self._session.__enter__()
            self.info.update(scheduler=self.scheduler or "LocalCluster (processes)", cluster_startup_s=startup,
                             workers=len(self.client.scheduler_info().get("workers", {})))
        return self

    def __exit__(self, *exc):
        if self._session is not None:
            self._session.__exit__(*exc)
        return False

    @property
    def slots(self) -> int:
        return max(1, self.info.get("workers", self.workers) or 1)

    def run(self, tasks: list[PlanTask], *, progress: bool, desc: str = "plan") -> list[dict]:
        from workbench.studies.experiments import _progress

        if not tasks:
            return []
        if self.local:
            return [run_config(t) for t in _progress(tasks, len(tasks), progress, desc)]
        from dask.distributed import as_completed

        futures = self.client.map(run_config, tasks, pure=False,
                                  key=[f"workbench-plan-{t.config['config']}-{id(t)}" for t in tasks])
        return [f.result() for f in _progress(as_completed(futures), len(futures), progress, desc)]


@dataclass
class PlanResult:
    table: pd.DataFrame  # one row per configuration: bound, pruned, simulated, attainment, cost, pareto
    chosen: int | None  # the configuration chosen (None: none meets the objective)
    cost_bound_usd_per_hour: float  # no configuration of the space that meets the objective costs less
    objective: Objective
    space: Space
    strategy: str
    info: dict = field(default_factory=dict)

    @property
    def gap(self) -> float:
        """(chosen cost - bound on the cheapest) / bound: how far the answer can be from the true cheapest."""
        if self.chosen is None or not math.isfinite(self.cost_bound_usd_per_hour):
            return math.nan
        cost = float(self.table.loc[self.chosen, "usd_per_hour"])
        return cost / self.cost_bound_usd_per_hour - 1.0

    def summary(self) -> dict[str, Any]:
        t = self.table
        chosen = None if self.chosen is None else t.loc[self.chosen, ["label", "usd_per_hour", "attainment",
                                                                      "ttft_s_p99", "tpot_s_p99"]].to_dict()
        return {"configurations": len(t), "pruned": int(t["pruned"].sum()), "simulated": int(t["simulated"].sum()),
                "chosen": chosen, "cost_bound_usd_per_hour": self.cost_bound_usd_per_hour, "gap": self.gap,
                "strategy": self.strategy, "objective": asdict(self.objective), **self.info}


def plan(trace: pd.DataFrame | str, space: Space, objective: Objective = Objective(), *, strategy: str = "grid",
         prices=None, workers: int = 0, scheduler: str | None = None, progress: bool = True) -> PlanResult:
    """The cheapest configuration of ``space`` meeting ``objective`` on ``trace`` (module docstring)."""
    from workbench.costmodel.prices import gpu_prices
    from workbench.workload.trace import load_trace

    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy {strategy!r} is not known.", field="strategy", fix=f"use {' or '.join(STRATEGIES)}.")
    started = time.perf_counter()
    trace = load_trace(trace)
    prices = gpu_prices(prices) if not isinstance(prices, pd.DataFrame) else prices
    table = bound_rows(trace, configurations(space), objective, prices)
    bound_s = time.perf_counter() - started
    alive = table[~table["pruned"]].sort_values(["least_usd_per_hour", "config"])
    cost_bound = float(alive["least_usd_per_hour"].min()) if len(alive) else math.inf

    def task(k: int) -> PlanTask:
        row = table.loc[k]
        return PlanTask(row[["config", "preset", "replicas", "batch_size", "token_budget", "policy",
                             "controller"]].to_dict(), trace, objective, float(row["usd_per_replica_hour"]))

    with _Runner(workers=workers, scheduler=scheduler) as runner:
        if strategy == "grid":
            results = runner.run([task(k) for k in alive.index], progress=progress)
        else:
            results = _cheapest_first(table, list(alive.index), task, runner, progress=progress)
    table = _merge(table, results)
    chosen = _choose(table)
    info = {"bound_s": bound_s, "wall_s": time.perf_counter() - started, **runner.info}
    return PlanResult(table, chosen, cost_bound, objective, space, strategy, info)


def _cheapest_first(table, order: list[int], task, runner: _Runner, *, progress: bool) -> list[dict]:
    """Simulate in order of least cost, a batch of one per worker, until the next least cost exceeds the
    cheapest cost found meeting the objective (ties at that cost are all simulated)."""
    from tqdm.auto import tqdm

    batch = runner.slots
    results: list[dict] = []
    best = math.inf
    bar = tqdm(total=len(order), desc="plan (cheapest first)", leave=False, disable=not progress)
    try:
        while order and table.loc[order[0], "least_usd_per_hour"] <= best:
            take = [k for k in order[:batch] if table.loc[k, "least_usd_per_hour"] <= best]
            order = order[len(take):]
            results += runner.run([task(k) for k in take], progress=False)
            bar.update(len(take))
            met = [r["usd_per_hour"] for r in results if r["meets"]]
            best = min(met) if met else math.inf
    finally:
        bar.close()
    return results


def _merge(table: pd.DataFrame, results: list[dict]) -> pd.DataFrame:
    res = pd.DataFrame(results, columns=["config", "attainment", "ttft_attainment", "tpot_attainment", "ttft_s_p99",
                                         "tpot_s_p99", "goodput_rps", "usd_per_hour", "usd", "makespan_s", "meets",
                                         "sim_s"])
    table = table.merge(res, on="config", how="left")
    table.index = pd.Index(table["config"].to_numpy(), name=None)
    table["simulated"] = table["attainment"].notna()
    # Not simulated: drawn at their least cost (a pruned one at its bound in the figure).
    table["usd_per_hour"] = table["usd_per_hour"].fillna(table["least_usd_per_hour"])
    table["meets"] = table["meets"].astype("boolean").fillna(False).astype(bool)
    table["pareto"] = _pareto(table)
    return table


def _pareto(table: pd.DataFrame) -> np.ndarray:
    """Simulated configurations no other simulated one beats on both cost (lower) and attainment (higher)."""
    sim = table[table["simulated"]].sort_values(["usd_per_hour", "attainment"], ascending=[True, False])
    front, best = set(), -math.inf
    for k, row in sim.iterrows():
        if row["attainment"] > best:
            front.add(k)
            best = row["attainment"]
    return table.index.isin(sorted(front))


def _choose(table: pd.DataFrame) -> int | None:
    """The cheapest configuration meeting the objective; ties: higher attainment, then the lower index."""
    met = table[table["meets"]]
    if not len(met):
        return None
    return int(met.sort_values(["usd_per_hour", "attainment", "config"], ascending=[True, False, True]).index[0])


def plan_table(result: PlanResult) -> pd.DataFrame:
    """The table a report prints: every configuration, its bound and, when simulated, what it reached."""
    cols = ["label", "usd_per_hour", "bound", "pruned", "simulated", "attainment", "ttft_s_p99", "tpot_s_p99",
            "goodput_rps", "meets", "pareto"]
    return result.table[cols].sort_values(["usd_per_hour", "label"])
