"""``workbench simulate``, ``compare`` and ``report``: run policies, export their schedules, report on them."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from workbench.cli._common import (
    add_controller_arguments,
    add_engine_arguments,
    add_pool_arguments,
    add_force_argument,
    check_out,
    out_dir,
    engine_options,
    _kv,
    add_instance_arguments,
    load_instance,
    params_for,
    policy_params,
    print_table,
    run_simulation,
    simulate_any,
)
from workbench.errors import ConfigError


def cmd_simulate(args) -> int:
    from workbench.schedule.schema import check_format

    check_format(args.format)
    check_out(args)
    if args.controller is not None:
        from workbench.cli._common import controller_options
        from workbench.policies.controllers import make_controller

        make_controller(args.controller, **controller_options(args)["controller_params"])  # refused before running
    started = time.perf_counter()
    trace, schedule = run_simulation(args)
    elapsed = time.perf_counter() - started
    started = time.perf_counter()
    with out_dir(args) as tmp:
        schedule.write_into(tmp, format=args.format)
        written = time.perf_counter() - started
        if args.report:  # Plotly is imported only when a chart is wanted
            from workbench.viz.figures import gantt, replica_count_figure
            from workbench.viz.report import write_report

            sections = [("Metrics", pd.DataFrame([_headline(schedule.metrics)], index=pd.Index([schedule.policy], name="policy"))), ("Gantt chart", gantt(schedule))]
            if args.controller is not None:
                sections.append(("Replicas over time", replica_count_figure(schedule)))
            write_report(tmp / "report.html", f"{schedule.policy} on {args.trace}", sections)
    m = schedule.metrics
    print(f"{schedule.policy}: {len(trace)} requests on {m['clients']} clients, makespan {m['makespan_s']:.3f} s, "
          f"lower bound {m['lower_bound_s']:.3f} s (gap {m['gap']:.2%}), slot utilization {m['slot_utilization']:.1%}, "
          f"busy {m['busy_utilization']:.1%}; simulated in {elapsed * 1e3:.0f} ms; wrote {args.out} in {written * 1e3:.0f} ms")
    if "transfers" in m:
        counts = {role: m["roles"].count(role) for role in ("prefill", "decode", "mixed") if role in m["roles"]}
        pools = " + ".join(f"{n} {role}" for role, n in counts.items())
        print(f"pools {pools}: {m['transfers']} KV transfers over {m['link']['name']}, "
              f"{m['transfer_bytes'] / 1e9:.2f} GB, {m['transfer_s_mean'] * 1e3:.3f} ms each on average")
    if args.controller is not None:
        from workbench.schedule.capacity import slo_metrics

        a, f = m["autoscaling"], slo_metrics(schedule)
        print(f"controller {a['controller']}: {a['added']} replicas added, {a['drained']} drained (start-up "
              f"{a['startup_s']:.1f} s); {f['gpu_hours']:.3f} GPU-hours; p99 TTFT {f['ttft_s_p99']:.3f} s, TTFT "
              f"within 1 s {f['ttft_attainment']:.1%}, both SLOs {f['slo_attainment']:.1%}, goodput "
              f"{f['goodput_rps']:.2f} req/s")
    return 0


def _headline(m: dict) -> dict:
    return {k: m[k] for k in ("makespan_s", "lower_bound_s", "gap", "slot_utilization", "busy_utilization")}


def cmd_compare(args) -> int:
    from tqdm.auto import tqdm

    from workbench.schedule.schema import check_format
    from workbench.viz.figures import comparison_table, gantt_compare
    from workbench.viz.report import write_report
    from workbench._units import display_units

    check_format(args.format)
    check_out(args)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if not policies:
        raise ConfigError("no policy named.", field="--policies", fix="give comma-separated policy names, "
                          "e.g. static,paper-baseline.")
    params = policy_params(args)
    taken = {k for name in policies for k in params_for(name, params)}
    for key in params:
        if key not in taken:
            raise ConfigError(f"no policy of {', '.join(policies)} takes parameter '{key}'.", field=key,
                              fix="drop it, or add a policy that takes it (workbench policies lists them).")
    _gap_closed_base(args, policies)  # refused before anything runs
    trace, cost_model = load_instance(args)
    schedules = {}
    for name in tqdm(policies, desc="simulating", disable=len(policies) < 3, leave=False):
        schedules[name] = simulate_any(trace, args.clients, args.batch_size, name, cost_model,
                                       kv_capacity_tokens=_kv(args), predictor=getattr(args, "predictor", None),
                                       engine=engine_options(args), **params_for(name, params))
    base = _gap_closed_base(args, policies)
    table = comparison_table(schedules, base=base)
    assumptions = {"trace": args.trace, "requests": len(trace), "clients": args.clients,
                   "batch_size": args.batch_size, "cost_model": cost_model.name, **cost_model.coefficients(),
                   "arrivals": "all at t=0" if float(trace["arrival_s"].max()) == 0 else "from the trace"}
    print("Assumptions: " + ", ".join(f"{k}={v}" for k, v in assumptions.items()))
    print(f"gap_closed: against {base}" if base is not None else
          "gap_closed: left out (paper-baseline is not among --policies; name a baseline with --baseline)")
    print_table(table)
    if args.out:
        with out_dir(args) as tmp:
            for name, schedule in schedules.items():
                (tmp / name).mkdir()
                schedule.write_into(tmp / name, format=args.format)
            display_units(table).to_csv(tmp / "comparison.csv")  # the printed table, in the same units
            write_report(tmp / "report.html", f"Policies compared on {args.trace}", [
                ("Assumptions", pd.DataFrame([assumptions]).T.rename(columns={0: "value"})),
                ("Comparison", table),
                ("Per-client Gantt charts", gantt_compare(schedules)),
            ], subtitle="Makespan, lower bound and utilizations as defined in MODEL.md section 8.")
        print(f"wrote {args.out}/report.html and one schedule folder per policy")
    return 0


def _gap_closed_base(args, policies: list[str]) -> str | None:
    """The policy ``gap_closed`` is measured against: ``--baseline``, else paper-baseline if listed, else none
    (the last listed policy was taken silently)."""
    base = getattr(args, "baseline", None)
    if base is None:
        return "paper-baseline" if "paper-baseline" in policies else None
    if base not in policies:
        raise ConfigError(f"baseline '{base}' is not among the compared policies ({', '.join(policies)}).",
                          field="--baseline", fix=f"add it to --policies, or name one of {', '.join(policies)}.")
    return base


def cmd_report(args) -> int:
    from workbench.schedule.schema import Schedule
    from workbench.viz.figures import comparison_table, gantt_compare
    from workbench.viz.report import write_report

    _check_report_target(Path(args.out))
    schedules = {Path(f).name: Schedule.read(f) for f in args.folders}
    table = comparison_table(schedules)
    write_report(args.out, "Schedules", [("Comparison", table), ("Per-client Gantt charts", gantt_compare(schedules))])
    print_table(table)
    print(f"wrote {args.out}")
    return 0


#: The closing line every report of viz.report.report_html ends with: how a file is known to be ours.
REPORT_MARKER = b"<p class='note'>Generated by workbench "


def _check_report_target(out: Path) -> None:
    """``report --out`` replaces a file only if it is a report this package wrote (a trace must not become HTML)."""
    if out.is_dir():
        raise ConfigError(f"'{out}' is a folder.", field="--out", fix="give the path of an HTML file, e.g. report.html.")
    if out.exists() or out.is_symlink():
        ours = False
        if out.is_file():
            with open(out, "rb") as fh:
                fh.seek(max(0, out.stat().st_size - 512))
                ours = REPORT_MARKER in fh.read()
        if not ours:
            raise ConfigError(f"'{out}' exists and is not a report workbench wrote; writing there would replace it.",
                              field="--out", fix="give a new file name, or delete that file first.")


def register(subparsers) -> None:
    p = subparsers.add_parser("simulate", help="simulate one policy and export its schedule")
    add_instance_arguments(p)
    p.add_argument("--out", required=True, help="folder for timeline.csv, requests.csv, metrics.json")
    p.add_argument("--format", default="csv", help="csv (default) or parquet: the format of timeline and requests (MODEL.md section 9)")
    p.add_argument("--report", action="store_true", help="also write report.html with the Gantt chart")
    p.add_argument("--workers", type=int, default=None,
                   help="processes for a run whose replicas never interact (round-robin or offline dispatch); the "
                        "schedule is the same byte for byte (default: from 20,000 requests, the cores available; "
                        "1: one process)")
    add_controller_arguments(p)
    add_pool_arguments(p)
    add_force_argument(p)
    p.set_defaults(func=cmd_simulate)

    p = subparsers.add_parser("compare", help="simulate several policies, print a table, write a report")
    add_instance_arguments(p, policy=False)
    p.add_argument("--policies", default="static,paper-baseline", help="comma-separated policy names")
    p.add_argument("--mu", type=float, default=None, help="price multiplier of the Lagrangian rule")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="a policy parameter")
    p.add_argument("--predictor", default=None, help="output lengths the schedulers see (see simulate --help)")
    p.add_argument("--baseline", default=None, help="the policy gap_closed is measured against (default: "
                   "paper-baseline when listed; otherwise no gap_closed column)")
    add_engine_arguments(p)
    p.add_argument("--out", default=None, help="folder for the report and the schedules")
    p.add_argument("--format", default="csv", help="csv (default) or parquet: the format of timeline and requests (MODEL.md section 9)")
    add_force_argument(p)
    p.set_defaults(func=cmd_compare)

    p = subparsers.add_parser("report", help="an HTML report comparing exported schedules")
    p.add_argument("folders", nargs="+")
    p.add_argument("--out", default="report.html")
    p.set_defaults(func=cmd_report)
