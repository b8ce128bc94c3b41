"""``workbench reproduce``: the paper's experiments in one command (see :mod:`workbench.experiments`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

DEFAULT_OUT = "results/reproduce"


def register(subparsers) -> None:
    from workbench.experiments import SCENARIOS, CaseStudy

    p = subparsers.add_parser("reproduce", help="run the paper's experiments: headline table, 100-case study, "
                                                "mu sweep, Gantt charts, HTML report")
    p.add_argument("--scenario", default="paper-gsm8k", choices=list(SCENARIOS), help="the headline scenario")
    p.add_argument("--cases", type=int, default=CaseStudy.n_cases,
                   help="cases in the case study (0 skips it; default %(default)s)")
    p.add_argument("--seed", type=int, default=CaseStudy.seed, help="seed of the case study (default %(default)s)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="address of an existing Dask scheduler (default: a local cluster)")
    p.add_argument("--workers", type=int, default=2,
                   help="local Dask workers (processes); 0 runs in-process without Dask (default %(default)s)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help="folder for results.json, report.html and the two schedules (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout instead of tables")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.set_defaults(func=cmd_reproduce)


def _fmt_table(frame: pd.DataFrame) -> str:
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4f}".format):
        return frame.to_string()


def cmd_reproduce(args: argparse.Namespace) -> int:
    from workbench.errors import ConfigError
    from workbench.experiments import reproduce, write_reproduce_report
    from workbench.schedule import atomic_dir

    if args.cases < 0:
        raise ConfigError(f"--cases is {args.cases}.", field="--cases", fix="give 0 (skip) or more cases.")
    if args.workers < 0:
        raise ConfigError(f"--workers is {args.workers}.", field="--workers", fix="give 0 (in-process) or more.")
    log = sys.stderr if args.json else sys.stdout
    run = reproduce(args.scenario, n_cases=args.cases, seed=args.seed, scheduler=args.scheduler,
                    workers=args.workers, progress=True)
    res = run["results"]
    out = Path(args.out)
    with atomic_dir(out) as tmp:
        (tmp / "results.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
        for name in (run["headline"]["scenario"].base_policy, "hybrid"):
            run["headline"]["schedules"][name].write(tmp / f"schedule-{name}")
        if run["study"] is not None:
            run["study"]["cases"].to_csv(tmp / "cases.csv", index=False)
        if not args.no_report:
            write_reproduce_report(run, tmp / "report.html")
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    _print_text(run, out, args, file=log)
    return 0


def _print_text(run, out: Path, args, *, file) -> None:
    res = run["results"]
    sc = res["scenario"]
    print(f"workbench reproduce: scenario {sc['name']}", file=file)
    print("defaults:", file=file)
    for key, value in sc.items():
        if key != "description":
            print(f"  {key:26s} {value}", file=file)
    cm = res["cost_model"]
    print("  cost model coefficients    " + ", ".join(f"{k}={v:.4g}" for k, v in cm.items() if k != "name"), file=file)
    lb = res["lower_bound"]
    print(f"lower bound: {lb['value_s']:.3f} s from {lb['source']} (binding: {lb['binding']})", file=file)
    print("\nheadline (columns paper_* are the paper's published figures, on its own hardware):", file=file)
    print(_fmt_table(run["headline"]["table"]), file=file)
    hs = res["headline_summary"]
    print(f"\nhybrid closes {hs['gap_closed']:.1%} of paper-baseline's gap to the bound "
          f"(paper: {res['paper']['gap_closed']:.1%}) and raises slot utilization by "
          f"{hs['slot_utilization_gain'] * 100:+.1f} points (paper: "
          f"{(res['paper']['hybrid_utilization'] - res['paper']['baseline_utilization']) * 100:+.1f}).", file=file)
    dt = res["decision_time"]
    print(f"online decision: {dt['mean_us']:.2f} us on average over {dt['decisions']} decisions", file=file)
    print("\nmu sweep (hybrid):", file=file)
    print(_fmt_table(run["sweep"].set_index(["lookahead", "mu"])[["makespan_s", "slot_utilization", "gap_closed",
                                                                  "prefills"]]), file=file)
    cs = res["case_study"]
    if cs is not None:
        s = cs["summary"]
        ex = cs["execution"]
        print(f"\ncase study: {s['cases']} cases (seed {args.seed}), {ex['executor']} with {ex['workers']} workers, "
              f"{ex['study_s']:.1f} s", file=file)
        print(f"  hybrid better than paper-baseline in {s['share_won']:.0%} of cases; slot-utilization gain "
              f"mean {s['utilization_gain_mean'] * 100:+.1f} points (sd {s['utilization_gain_std'] * 100:.1f}, "
              f"min {s['utilization_gain_min'] * 100:+.1f}, max {s['utilization_gain_max'] * 100:+.1f}); "
              f"paper: {res['paper']['case_study_mean_improvement'] * 100:+.1f} on average", file=file)
        print(f"  gap closed: mean {s['gap_closed_mean']:.1%}, median {s['gap_closed_median']:.1%}", file=file)
        print(f"  worst case: {s['worst_case_explanation']}", file=file)
    print("\ntargets:", file=file)
    for name, t in res["targets"].items():
        print(f"  {'met ' if t['met'] else 'MISS'} {name:32s} {t['value']:.4g} (target {t['target']})", file=file)
    print(f"\nwritten: {out}/results.json" + ("" if args.no_report else f", {out}/report.html"), file=file)
