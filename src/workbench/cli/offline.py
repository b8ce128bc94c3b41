"""Subcommands ``offline``, ``exact`` and ``bound`` (registered by :mod:`workbench.cli`).

* ``workbench offline``: the bin-packing assignment and its proven bound, written to ``--out``
  as ``assignment.csv`` (request_id, client, weight_s) and ``assignment.json``.
* ``workbench exact``: the exact MIP on a small instance, exported as a schedule
  (timeline.csv, requests.csv, metrics.json) and checked by replaying it in the simulator.
* ``workbench bound``: the lower-bound table, term by term, the binding one marked.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from workbench.cli._common import (
    _kv,
    add_force_argument,
    add_instance_arguments,
    check_out,
    load_instance,
    out_dir,
    print_table,
)

#: More solver threads than this is a typo: each HiGHS thread allocates its own workspace.
MAX_THREADS = 256


def _check_solver_options(args) -> None:
    """--threads and --time-limit in range, one line each, before any solver starts."""
    from workbench.errors import ConfigError

    if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
        raise ConfigError(f"{args.threads} is not between 1 and {MAX_THREADS} threads.", field="--threads",
                          fix="give a whole number of solver threads, e.g. 2, or leave it out.")
    if not (args.time_limit > 0 and args.time_limit < float("inf")):
        raise ConfigError(f"{args.time_limit} is not a positive number of seconds.", field="--time-limit",
                          fix="give the solver's wall-clock limit in seconds, e.g. 5.")


def _solver_arguments(p, *, time_limit: float, gap: float) -> None:
    p.add_argument("--time-limit", type=float, default=time_limit, help="solver time limit in seconds")
    p.add_argument("--gap", type=float, default=gap, help="relative MIP gap at which to stop")
    p.add_argument("--threads", type=int, default=None,
                   help=f"solver threads, 1 to {MAX_THREADS} (HiGHS default when absent)")


def _kv_caps(args, cost_model):
    from workbench._checks import kv_capacities

    return None if _kv(args) is None else kv_capacities(_kv(args), [cost_model] * args.clients, args.clients)


def instance_bound_s(trace, args, cost_model) -> float:
    """The instance's makespan lower bound: the value every command reports (simulate's metrics, bound)."""
    from workbench.schedule.bounds import closed_form_lower_bound

    return closed_form_lower_bound(trace, args.clients, args.batch_size, cost_model,
                                   kv_capacity_tokens=_kv_caps(args, cost_model)).value_s


def cmd_offline(args) -> int:
    from workbench.offline import assign, mmbp_data
    from workbench.schedule.schema import _jsonable

    _check_solver_options(args)
    check_out(args)
    trace, cost_model = load_instance(args)
    result = assign(trace, args.clients, args.batch_size, cost_model, method=args.method,
                    time_limit=args.time_limit, rel_gap=args.gap, threads=args.threads,
                    kv_capacity_tokens=_kv_caps(args, cost_model))
    table = pd.DataFrame({"request_id": trace["request_id"].to_numpy(), "client": result.assignment})
    W = mmbp_data(trace, args.clients, args.batch_size, cost_model).weights_s
    table["weight_s"] = W[np.arange(len(trace)), result.assignment]
    bound_s = instance_bound_s(trace, args, cost_model)
    with out_dir(args) as tmp:
        table.to_csv(tmp / "assignment.csv", index=False)
        (tmp / "assignment.json").write_text(json.dumps(_jsonable(_summary(result, args, cost_model, bound_s)),
                                                        indent=2) + "\n", encoding="utf-8")
    # Two different bounds: the bin-packing one bounds the largest *load* (the assignment's objective, in the
    # weights w_ic), the instance's bounds the *makespan*; only the latter is "the lower bound" of every command.
    print(f"offline {result.method}: {len(trace)} requests on {args.clients} clients, largest load "
          f"{result.makespan_s:.6f} s (within {result.gap * 100:.2g}% of the best possible, load bound "
          f"{result.lower_bound_s:.6f} s), {result.status}, {result.time_s:.3f} s; lower bound {bound_s:.6f} s "
          f"(the instance's makespan bound, as simulate and bound report) -> {args.out}")
    return 0


def _summary(result, args, cost_model, bound_s: float) -> dict:
    """assignment.json: ``lower_bound_s`` is the instance's bound (as in metrics.json); the bin-packing
    figures are ``load_bound_s`` and ``load_gap``."""
    summary = result.summary()
    summary["load_bound_s"], summary["load_gap"] = summary.pop("lower_bound_s"), summary.pop("gap")
    return {**summary, "lower_bound_s": bound_s, "clients": args.clients, "batch_size": args.batch_size,
            "trace": str(args.trace), "cost_model": cost_model.name, "loads_s": result.loads_s,
            "kv_capacity_tokens": _kv(args)}


def cmd_exact(args) -> int:
    from workbench.offline import replay_exact, solve_exact
    from workbench.schedule.schema import check_format

    check_format(args.format)
    _check_solver_options(args)
    check_out(args)
    trace, cost_model = load_instance(args)
    result = solve_exact(trace, args.clients, args.batch_size, cost_model, time_limit=args.time_limit,
                         rel_gap=args.gap, threads=args.threads, max_binaries=args.max_binaries,
                         kv_capacity_tokens=_kv(args))
    replayed = replay_exact(result)
    with out_dir(args) as tmp:
        result.schedule.write_into(tmp, format=args.format)
    same = np.isclose(replayed.makespan_s, result.makespan_s, rtol=1e-12, atol=0.0)
    bound = "none" if result.bound_s is None else f"{result.bound_s:.6f} s"
    print(f"exact: {len(trace)} requests on {args.clients} clients ({result.size['binaries']:,} binaries, "
          f"{result.size['positions']} positions), makespan {result.makespan_s:.6f} s, {result.status}, "
          f"MIP bound {bound}, {result.time_s:.2f} s; simulator replay "
          f"{replayed.makespan_s:.6f} s ({'same' if same else 'DIFFERENT'}) -> {args.out}")
    return 0 if same else 1


def cmd_bound(args) -> int:
    from workbench.offline import bound_table, lower_bound

    _check_solver_options(args)
    trace, cost_model = load_instance(args)
    bound = lower_bound(trace, args.clients, cost_model, batch_size=args.batch_size, method=args.method,
                        time_limit=args.time_limit, rel_gap=args.gap, threads=args.threads,
                        kv_capacity_tokens=_kv_caps(args, cost_model))
    table = bound_table(bound)
    kv = "" if args.kv_capacity is None else f", KV capacity {args.kv_capacity}"
    print(f"lower bound {bound.value_s:.6f} s ({bound.binding}) for {len(trace)} requests on {args.clients} "
          f"clients, B={args.batch_size}, cost model {cost_model.name}{kv} (the instance's bound: every command "
          f"reports this value)")
    if "bin_packing" in bound.details:
        print(f"bin-packing bound model (HiGHS, {bound.details.get('bound_model_status')}): "
              f"{bound.details['bin_packing']:.6f} s; a solver figure that depends on --time-limit, "
              f"so it is not the instance's bound (docs/offline.md)")
    print_table(table[["value_s", "binds", "meaning"]])
    timing = {k: v for k, v in bound.details.items() if k.endswith("_s") and isinstance(v, float)}
    print("times: " + ", ".join(f"{k.removesuffix('_s')} {v:.3f} s" for k, v in timing.items()))  # seconds, said
    if args.json:
        print(json.dumps({"value_s": bound.value_s, "binding": bound.binding, "terms": bound.terms}))
    return 0


def register(subparsers) -> None:
    """Add ``offline``, ``exact`` and ``bound`` to the ``workbench`` command line."""
    from workbench.offline.binpacking import METHODS

    p = subparsers.add_parser("offline", help="bin-packing assignment of requests to clients, with its proven bound")
    add_instance_arguments(p, policy=False)
    p.add_argument("--method", default="auto", choices=METHODS,
                   help="auto: heuristics then the MIP if needed; lpt, kk, ls: heuristics; mip: warm-started MIP; "
                        "mip-cold: HiGHS alone")
    _solver_arguments(p, time_limit=2.0, gap=5e-4)
    p.add_argument("--out", required=True, help="folder for assignment.csv and assignment.json")
    add_force_argument(p)
    p.set_defaults(func=cmd_offline)

    p = subparsers.add_parser("exact", help="the exact MIP on a small instance, exported as a schedule")
    add_instance_arguments(p, policy=False)
    p.set_defaults(clients=2, batch_size=2)
    _solver_arguments(p, time_limit=60.0, gap=0.0)
    p.add_argument("--max-binaries", type=int, default=None, help="refuse larger models (default: the package limit)")
    p.add_argument("--out", required=True, help="folder for timeline.csv, requests.csv, metrics.json")
    p.add_argument("--format", default="csv", help="csv (default) or parquet: the format of timeline and requests (MODEL.md section 9)")
    add_force_argument(p)
    p.set_defaults(func=cmd_exact)

    p = subparsers.add_parser("bound", help="the makespan lower bound, term by term")
    add_instance_arguments(p, policy=False)
    p.add_argument("--method", default="auto", choices=("auto", "closed", "mip"),
                   help="closed: closed-form terms only; mip/auto: also the bin-packing bound model")
    _solver_arguments(p, time_limit=5.0, gap=1e-6)
    p.add_argument("--json", action="store_true", help="also print the bound as one JSON line")
    p.set_defaults(func=cmd_bound)
