"""``workbench plan``: the cheapest fleet for a trace and an SLO over a space you give, with a bound.

Prints how many configurations the bounds pruned and how many were simulated, the chosen configuration,
the bound on the cheapest possible and the certified gap; writes ``plan.csv`` (every configuration),
``summary.json`` and ``report.html`` (the Pareto front of cost against SLO attainment, and the table)
into ``--out``.  See :mod:`workbench.studies.plan` and docs/capacity.md.
"""

from __future__ import annotations

import argparse
import json
import re

from workbench.cli._common import add_force_argument, check_out, out_dir, print_table
from workbench.errors import ConfigError


def _names(text: str) -> tuple[str, ...]:
    values = tuple(x.strip() for x in text.split(",") if x.strip())
    if not values:
        raise argparse.ArgumentTypeError("is empty; give comma-separated names")
    return values


def _ints(text: str) -> tuple[int, ...]:
    """``1-16``, ``1,2,4`` or ``1-4,8,16``."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise argparse.ArgumentTypeError(f"'{part}' is not a whole number or a range such as 1-16")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if lo < 1 or hi < lo:
            raise argparse.ArgumentTypeError(f"'{part}' is not a range of whole numbers from 1 up")
        out += range(lo, hi + 1)
    return tuple(dict.fromkeys(out))


def _budgets(text: str) -> tuple[int | None, ...]:
    return tuple(None if p.strip() in ("policy", "") else v for p in text.split(",")
                 for v in ([None] if p.strip() in ("policy", "") else _ints(p)))


def register(subparsers) -> None:
    from workbench.studies.plan import STRATEGIES

    p = subparsers.add_parser("plan", help="the cheapest fleet meeting an SLO over a space of configurations, "
                                           "pruned by lower bounds, with the gap to the bound on the cheapest")
    p.add_argument("--trace", required=True, help="a shipped trace name or a file (Azure, Vidur, ... formats)")
    p.add_argument("--trace-format", default=None, help="the trace file's format (default: detected)")
    p.add_argument("--until", type=float, default=None, metavar="S",
                   help="keep the requests arriving before S seconds of the trace (default: all)")
    p.add_argument("--speedup", type=float, default=1.0,
                   help="divide arrival times by this: the trace at this many times its rate")
    p.add_argument("--presets", type=_names, default=("llama2-70b-h100-tp4",),
                   help="comma-separated presets (a GPU kind at a TP degree), e.g. llama2-70b-h100-tp4,llama2-70b-a100-tp8")
    p.add_argument("--replicas", type=_ints, default=(1, 2, 4, 8), help="replica counts: 1-16 or 1,2,4")
    p.add_argument("--batch-sizes", type=_ints, default=(64,), help="max_num_seqs values, e.g. 32,64,128")
    p.add_argument("--token-budgets", type=_budgets, default=(None,),
                   help="mixed iterations' token budgets, e.g. 2048,4096, or 'policy' (default: the policy's)")
    p.add_argument("--policies", type=_names, default=("vllm",), help="comma-separated policy names")
    p.add_argument("--controllers", type=_names, default=("fixed",),
                   help="fixed and/or autoscaling controllers (then --replicas is the most they hold)")
    p.add_argument("--ttft-p99", type=float, default=1.0, help="the TTFT target, s; 0 for none")
    p.add_argument("--tpot-p99", type=float, default=0.0, help="the TPOT target, s; 0 for none")
    p.add_argument("--attainment", type=float, default=0.99, help="share of requests within each target")
    p.add_argument("--joint", action="store_true", help="hold the share meeting both targets at once (goodput)")
    p.add_argument("--strategy", choices=STRATEGIES, default="grid",
                   help="grid: simulate every configuration the bounds leave; cheapest-first: in order of least "
                        "cost, stopping when the rest cannot be cheaper (same answer, fewer simulations)")
    p.add_argument("--prices", default=None, metavar="CSV",
                   help="GPU-hour prices (columns gpu,usd_per_gpu_hour,source,as_of; default: the shipped, dated table)")
    p.add_argument("--workers", type=int, default=0, help="Dask worker processes on this machine (0: in-process)")
    p.add_argument("--scheduler", default=None, help="a Dask scheduler address, tcp://HOST:8786")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for plan.csv, summary.json, report.html")
    add_force_argument(p)
    p.set_defaults(func=cmd_plan)


def _objective(args):
    from workbench.studies.plan import Objective

    return Objective(ttft_s=args.ttft_p99 or None, tpot_s=args.tpot_p99 or None, attainment=args.attainment,
                     joint=args.joint)


def _trace(args):
    from workbench.workload.trace import load_trace

    trace = load_trace(args.trace, format=args.trace_format)
    if args.until is not None:
        trace = trace[trace["arrival_s"] < args.until].reset_index(drop=True)
        if not len(trace):
            raise ConfigError(f"no request arrives before {args.until} s.", field="--until", fix="give a later time.")
    if not args.speedup > 0:
        raise ConfigError(f"speedup {args.speedup} is not positive.", field="--speedup", fix="give e.g. 2.")
    return trace.assign(arrival_s=trace["arrival_s"] / args.speedup)


def cmd_plan(args) -> int:
    from workbench.costmodel.linear import load_preset
    from workbench.costmodel.prices import gpu_prices, usd_per_replica_hour
    from workbench.policies.controllers import CONTROLLERS
    from workbench.studies.plan import Space, configurations, plan, plan_table

    check_out(args)
    objective = _objective(args)
    if args.workers < 0:
        raise ConfigError(f"--workers {args.workers} is below 0.", field="--workers", fix="give 0 or more.")
    prices = gpu_prices(args.prices)
    for name in args.presets:
        load_preset(name)
        usd_per_replica_hour(name, prices)  # a preset without stated hardware or price is named now
    for name in args.controllers:
        if name not in CONTROLLERS:
            raise ConfigError(f"unknown controller '{name}'.", field="--controllers", fix=f"use {', '.join(CONTROLLERS)}.")
    space = Space(tuple(args.presets), tuple(args.replicas), tuple(args.batch_sizes), tuple(args.token_budgets),
                  tuple(args.policies), tuple(args.controllers))
    configurations(space)  # unknown policies refused before the trace is read
    trace = _trace(args)
    result = plan(trace, space, objective, strategy=args.strategy, prices=prices, workers=args.workers,
                  scheduler=args.scheduler, progress=True)
    s = result.summary()
    print(f"{s['configurations']} configurations: {s['pruned']} pruned by the bounds, {s['simulated']} simulated "
          f"({args.strategy}), in {s['wall_s']:.1f} s ({s['executor']})")
    if result.chosen is None:
        print("no configuration meets the objective")
    else:
        c = s["chosen"]
        print(f"chosen: {c['label']}, {c['usd_per_hour']:.2f} USD/h, attainment {c['attainment']:.2%} "
              f"(p99 TTFT {c['ttft_s_p99']:.3f} s, p99 TPOT {c['tpot_s_p99']:.3f} s)")
    bound = s["cost_bound_usd_per_hour"]
    if bound == float("inf"):
        print("bound on the cheapest possible: none (every configuration's bound misses the objective)")
    elif result.chosen is None:
        print(f"bound on the cheapest possible: {bound:.2f} USD/h (no configuration simulated meets the objective)")
    else:
        print(f"bound on the cheapest possible: {bound:.2f} USD/h; certified gap {s['gap']:.1%}")
    table = plan_table(result)
    front = table[table["pareto"]]
    print("Pareto front (cost against attainment):")
    print_table(front.set_index("label")[["usd_per_hour", "attainment", "ttft_s_p99", "tpot_s_p99", "meets"]])
    with out_dir(args) as tmp:
        table.to_csv(tmp / "plan.csv", index_label="config")
        (tmp / "summary.json").write_text(json.dumps(_plain(s), indent=2) + "\n", encoding="utf-8")
        _report(tmp / "report.html", result, table, args)
    print(f"wrote {args.out}/plan.csv, summary.json and report.html")
    return 0


def _plain(value):
    import math

    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _plain(value.item())
    return value


def _report(path, result, table, args) -> None:
    import pandas as pd

    from workbench.viz.figures import pareto_figure
    from workbench.viz.report import write_report

    s = result.summary()
    fig = pareto_figure(result.table, target=result.objective.attainment, chosen=result.chosen,
                        cost_bound=result.cost_bound_usd_per_hour)
    facts = pd.DataFrame({"value": {k: v for k, v in _plain(s).items() if not isinstance(v, dict)}})
    write_report(path, f"Plan on {args.trace}", [("Summary", facts), ("Pareto front", fig), ("Configurations", table)],
                 subtitle="Cost per hour from the GPU price table; bounds from docs/capacity.md.")
