"""``workbench reproduce``: the paper's experiments in one command (see :mod:`workbench.studies.experiments`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

DEFAULT_OUT = "results/reproduce"


def register(subparsers) -> None:
    from workbench.cli._common import add_force_argument
    from workbench.studies.experiments import SCENARIOS, CaseStudy

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
    p.add_argument("--format", default="csv",
                   help="csv (default) or parquet: the format of the two schedules (MODEL.md section 9)")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout instead of tables")
    add_force_argument(p)
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.add_argument("--uncertainty", action="store_true",
                   help="also run the output-length uncertainty study: paper-baseline, online, hybrid and its "
                        "remedies as prediction error grows from 0 to 100%% (JSON key 'uncertainty')")
    p.add_argument("--uncertainty-seeds", type=int, default=5, metavar="N",
                   help="seeds per error level in the uncertainty study (default %(default)s)")
    p.set_defaults(func=cmd_reproduce)


def _fmt_table(frame: pd.DataFrame) -> str:
    from workbench._units import display_units

    frame = display_units(frame)  # shares in percent, differences of shares in percentage points
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4f}".format):
        return frame.to_string(na_rep="")  # a row without the value (the bound has no prefills): blank


def cmd_reproduce(args: argparse.Namespace) -> int:
    from workbench.errors import ConfigError
    from workbench.cli._common import check_out, out_dir
    from workbench.schedule.schema import check_format
    from workbench.studies.experiments import reproduce, write_reproduce_report

    check_format(args.format)
    check_out(args)
    if args.cases < 0:
        raise ConfigError(f"--cases is {args.cases}.", field="--cases", fix="give 0 (skip) or more cases.")
    if args.workers < 0:
        raise ConfigError(f"--workers is {args.workers}.", field="--workers", fix="give 0 (in-process) or more.")
    log = sys.stderr if args.json else sys.stdout
    run = reproduce(args.scenario, n_cases=args.cases, seed=args.seed, scheduler=args.scheduler,
                    workers=args.workers, progress=True)
    res = run["results"]
    if getattr(args, "uncertainty", False):
        _run_uncertainty(run, args)
    out = Path(args.out)
    with out_dir(args) as tmp:
        (tmp / "results.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
        for name in (run["headline"]["scenario"].base_policy, "hybrid"):
            run["headline"]["schedules"][name].write(tmp / f"schedule-{name}", format=args.format)
        if run["study"] is not None:
            run["study"]["cases"].to_csv(tmp / "cases.csv", index=False)
        if run.get("uncertainty") is not None:
            run["uncertainty"]["runs"].to_csv(tmp / "uncertainty.csv", index=False)
        if not args.no_report:
            _write_report(run, tmp / "report.html", write_reproduce_report)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    _print_text(run, out, args, file=log)
    return 0


def _run_uncertainty(run, args) -> None:
    """The uncertainty study (workbench.studies.uncertainty), added to the results under the key 'uncertainty'."""
    from workbench.errors import ConfigError
    from workbench.studies.experiments import _jsonable_dict, _records
    from workbench.studies.uncertainty import uncertainty_study

    if args.uncertainty_seeds < 1:
        raise ConfigError(f"--uncertainty-seeds is {args.uncertainty_seeds}.", field="--uncertainty-seeds",
                          fix="give 1 or more seeds.")
    study = uncertainty_study(seeds=range(args.uncertainty_seeds), scenario=args.scenario,
                              lower_bound_s=run["results"]["lower_bound"]["value_s"])
    run["uncertainty"] = study
    run["results"]["uncertainty"] = {
        "study": _jsonable_dict(study["study"].describe()),
        "lower_bound_s": study["lower_bound_s"],
        "table": _records(study["table"]),
        "target": _jsonable_dict(study["target"]),
        "ahead_up_to": _jsonable_dict(study["ahead_up_to"]),
        "time_s": study["time_s"],
    }


def _write_report(run, path, write_reproduce_report) -> None:
    if run.get("uncertainty") is None:
        write_reproduce_report(run, path)
        return
    from workbench._version import __version__
    from workbench.studies.experiments import report_sections
    from workbench.viz.report import write_report

    study = run["uncertainty"]
    table = study["table"].set_index(["spread", "policy"])
    t = study["target"]
    note = (f"Target: with spread {t['spread']} (about {t['spread']:.0%} error) hybrid beats paper-baseline on every "
            f"seed: {'met' if t['met'] else 'MISSED'} (worst hybrid {t['worst_makespan_s']:.3f} s vs "
            f"{t['base_makespan_s']:.3f} s).")
    sections = report_sections(run) + [("Uncertain output lengths", [study["figure"], note, table])]
    write_report(path, "workbench reproduce: Pang et al. (2025), hybrid offline-online scheduling", sections,
                 subtitle=f"scenario {run['results']['scenario']['name']}, workbench {__version__}")


def _print_uncertainty(study, *, file) -> None:
    t = study["target"]
    print("\nuncertain output lengths (Noisy predictor; spread = sd of the log error, 0.2 = about 20%; "
          f"{len(study['study'].seeds)} seeds per level, {study['time_s']:.1f} s):", file=file)
    table = study["table"].set_index(["spread", "policy"])[["makespan_mean_s", "makespan_sd_s", "makespan_max_s",
                                                            "gap_closed_mean", "share_beating_base",
                                                            "stolen_mean"]]
    print(_fmt_table(table), file=file)
    print(f"  target: spread {t['spread']}: hybrid beats paper-baseline on every seed: "
          f"{'met' if t['met'] else 'MISS'} (worst {t['worst_makespan_s']:.3f} s vs {t['base_makespan_s']:.3f} s)",
          file=file)
    ahead = ", ".join(f"{p} up to {v if v is not None else '-'}" for p, v in study["ahead_up_to"].items())
    print(f"  ahead of paper-baseline on every seed: {ahead}", file=file)


def _print_text(run, out: Path, args, *, file) -> None:
    from workbench.studies.experiments import format_points

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
          f"{hs['slot_utilization_gain'] * 100:+.1f} percentage points (paper: "
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
        print(f"  hybrid won (a shorter makespan than paper-baseline) in {s['share_won']:.0%} of cases; "
              f"slot-utilization gain in percentage points: mean {format_points(s['utilization_gain_mean'])} "
              f"(sd {s['utilization_gain_std'] * 100:.1f}, min {format_points(s['utilization_gain_min'])}, "
              f"max {format_points(s['utilization_gain_max'])}); "
              f"paper: {res['paper']['case_study_mean_improvement'] * 100:+.1f} on average", file=file)
        print(f"  gap closed: mean {s['gap_closed_mean']:.1%}, median {s['gap_closed_median']:.1%}", file=file)
        print(f"  worst case: {s['worst_case_explanation']}", file=file)
    print("\ntargets:", file=file)
    from workbench.studies.experiments import targets_table

    for name, t in targets_table(res["targets"]).iterrows():
        print(f"  {'met ' if t['met'] == 'yes' else 'MISS'} {name:32s} {t['value']} (target {t['target']})", file=file)
    if run.get("uncertainty") is not None:
        _print_uncertainty(run["uncertainty"], file=file)
    print(f"\nwritten: {out}/results.json" + ("" if args.no_report else f", {out}/report.html"), file=file)
