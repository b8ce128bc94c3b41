"""The ``workbench`` command line (also ``python -m workbench``).

User errors print one line naming the field, the row and the fix, exit with
status 2 and leave output folders untouched.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from workbench import __version__
from workbench.errors import ConfigError, WorkbenchError

#: Optional subcommand modules: each exposes ``register(subparsers)``.
EXTENSIONS = ("workbench.cli_offline", "workbench.cli_reproduce", "workbench.cli_extra", "workbench.cli_beyond")


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "inf": float("inf")}.get(text.lower(), text)


def policy_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in getattr(args, "param", None) or []:
        if "=" not in item:
            raise ConfigError(f"'{item}' is not KEY=VALUE.", field="--param", fix="write e.g. --param mu=2.")
        key, value = item.split("=", 1)
        params[key.strip()] = _parse_value(value.strip())
    if getattr(args, "mu", None) is not None:
        params["mu"] = args.mu
    return params


def _batch_size(text: str):
    parts = [p for p in str(text).split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer or a comma-separated list of integers") from None
    if not values:
        raise argparse.ArgumentTypeError("is empty; give an integer or a comma-separated list of integers")
    return values[0] if len(values) == 1 else values


def add_instance_arguments(p: argparse.ArgumentParser, *, policy: bool = True) -> None:
    """The options every command that builds a schedule shares."""
    p.add_argument("--trace", default="gsm8k-test", help="a shipped trace name (see `workbench trace list`) or a file")
    p.add_argument("--prompt-column", default=None, help="use this column of the trace as input_tokens")
    p.add_argument("--clients", type=int, default=8, help="number of clients (model replicas)")
    p.add_argument("--batch-size", type=_batch_size, default=16, help="batch capacity B, or one per client: 16,16,32")
    p.add_argument("--cost-model", default="llama-65b", help="a preset name (see `workbench presets`) or a JSON file")
    p.add_argument("--kv-capacity", default=None,
                   help="KV-cache capacity per client in tokens, or 'preset' for the preset's value")
    if policy:
        p.add_argument("--policy", default="paper-baseline", help="a policy name (see `workbench policies`)")
        p.add_argument("--dispatch", default=None, help="override the policy's dispatcher")
        p.add_argument("--order", default=None, help="override the policy's queue order")
        p.add_argument("--mu", type=float, default=None, help="price multiplier of the Lagrangian rule")
        p.add_argument("--param", action="append", metavar="KEY=VALUE", help="another policy parameter")
        p.add_argument("--predictor", default=None,
                       help="output lengths the schedulers see: exact, noisy:SPREAD[:SEED], bucketed:N "
                            "(default: exact; the simulator always runs the true lengths)")


def _kv(args) -> Any:
    if args.kv_capacity in (None, "preset"):
        return args.kv_capacity
    try:
        return int(args.kv_capacity)
    except ValueError:
        raise ConfigError(f"'{args.kv_capacity}' is not a number of tokens.", field="--kv-capacity",
                          fix="give an integer, or 'preset'.") from None


def load_instance(args):
    from workbench.costmodel import load_preset
    from workbench.trace import load_trace

    trace = load_trace(args.trace, prompt_column=args.prompt_column)
    return trace, load_preset(args.cost_model)


def simulate_any(trace, clients, batch_size, policy: str, cost_model, *, dispatch=None, order=None,
                 kv_capacity_tokens=None, predictor=None, **params):
    """``workbench.sim.simulate``, or the chunked-prefill simulator for its policies."""
    from workbench.chunked import CHUNKED_POLICIES, simulate_chunked
    from workbench.sim import simulate

    if policy in CHUNKED_POLICIES:
        if predictor is not None:
            raise ConfigError(f"policy '{policy}' does not take a predictor.", field="--predictor",
                              fix="drop --predictor, or use a prefill-first policy.")
        return simulate_chunked(trace, clients, batch_size, policy, cost_model, dispatch=dispatch, order=order,
                                kv_capacity_tokens=kv_capacity_tokens, **params)
    return simulate(trace, clients, batch_size, policy, cost_model, dispatch=dispatch, order=order,
                    kv_capacity_tokens=kv_capacity_tokens, predictor=predictor, **params)


def run_simulation(args, policy: str | None = None):
    trace, cost_model = load_instance(args)
    return trace, simulate_any(trace, args.clients, args.batch_size, policy or args.policy, cost_model,
                               dispatch=getattr(args, "dispatch", None), order=getattr(args, "order", None),
                               kv_capacity_tokens=_kv(args), predictor=getattr(args, "predictor", None),
                               **policy_params(args))


def print_table(table: pd.DataFrame, *, file=None) -> None:
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.float_format", "{:,.4f}".format):
        print(table.to_string(), file=file or sys.stdout)


# -- subcommands -------------------------------------------------------------------------
def cmd_simulate(args) -> int:
    from workbench.figures import gantt
    from workbench.report import write_report
    from workbench.schedule import atomic_dir

    started = time.perf_counter()
    trace, schedule = run_simulation(args)
    elapsed = time.perf_counter() - started
    with atomic_dir(args.out) as tmp:
        schedule.write_into(tmp)
        if args.report:
            write_report(tmp / "report.html", f"{schedule.policy} on {args.trace}",
                         [("Metrics", pd.DataFrame([_headline(schedule.metrics)])), ("Gantt chart", gantt(schedule))])
    m = schedule.metrics
    print(f"{schedule.policy}: {len(trace)} requests on {m['clients']} clients, makespan {m['makespan_s']:.3f} s, "
          f"lower bound {m['lower_bound_s']:.3f} s (gap {m['gap']:.2%}), slot utilization {m['slot_utilization']:.1%}, "
          f"busy {m['busy_utilization']:.1%}; simulated in {elapsed * 1e3:.0f} ms; wrote {args.out}")
    return 0


def _headline(m: dict) -> dict:
    return {k: m[k] for k in ("makespan_s", "lower_bound_s", "gap", "slot_utilization", "busy_utilization")}


def cmd_validate(args) -> int:
    from workbench.validate import validate_files

    report = validate_files(args.folder, trace=args.trace)
    print(report)
    return 0 if report.ok else 1


def cmd_compare(args) -> int:
    from tqdm.auto import tqdm

    from workbench.figures import comparison_table, gantt_compare
    from workbench.report import write_report
    from workbench.schedule import atomic_dir

    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if not policies:
        raise ConfigError("no policy named.", field="--policies", fix="give comma-separated policy names, "
                          "e.g. static,paper-baseline.")
    trace, cost_model = load_instance(args)
    schedules = {}
    for name in tqdm(policies, desc="simulating", disable=len(policies) < 3, leave=False):
        schedules[name] = simulate_any(trace, args.clients, args.batch_size, name, cost_model,
                                       kv_capacity_tokens=_kv(args), predictor=getattr(args, "predictor", None),
                                       **policy_params(args))
    base = policies[-1] if "paper-baseline" not in policies else "paper-baseline"
    table = comparison_table(schedules, base=base)
    assumptions = {"trace": args.trace, "requests": len(trace), "clients": args.clients,
                   "batch_size": args.batch_size, "cost_model": cost_model.name, **cost_model.coefficients(),
                   "arrivals": "all at t=0" if float(trace["arrival_s"].max()) == 0 else "from the trace"}
    print("Assumptions: " + ", ".join(f"{k}={v}" for k, v in assumptions.items()))
    print_table(table)
    if args.out:
        with atomic_dir(args.out) as tmp:
            for name, schedule in schedules.items():
                (tmp / name).mkdir()
                schedule.write_into(tmp / name)
            table.to_csv(tmp / "comparison.csv")
            write_report(tmp / "report.html", f"Policies compared on {args.trace}", [
                ("Assumptions", pd.DataFrame([assumptions]).T.rename(columns={0: "value"})),
                ("Comparison", table),
                ("Per-client Gantt charts", gantt_compare(schedules)),
            ], subtitle="Makespan, lower bound and utilizations as defined in MODEL.md section 8.")
        print(f"wrote {args.out}/report.html and one schedule folder per policy")
    return 0


def cmd_report(args) -> int:
    from workbench.figures import comparison_table, gantt_compare
    from workbench.report import write_report
    from workbench.schedule import Schedule

    schedules = {Path(f).name: Schedule.read(f) for f in args.folders}
    table = comparison_table(schedules)
    write_report(args.out, "Schedules", [("Comparison", table), ("Per-client Gantt charts", gantt_compare(schedules))])
    print_table(table)
    print(f"wrote {args.out}")
    return 0


def cmd_trace(args) -> int:
    from workbench.trace import NAMED_TRACES, load_trace

    if args.trace_command == "list":
        for name, (filename, column) in NAMED_TRACES.items():
            print(f"{name:20s} data/traces/{filename} (input_tokens from {column})")
        return 0
    if args.trace_command == "info":
        trace = load_trace(args.name)
        print(f"{args.name}: {len(trace)} requests")
        print_table(trace[["input_tokens", "output_tokens", "arrival_s"]].describe().T)
        return 0
    if args.trace_command == "build-gsm8k":
        from workbench import gsm8k

        argv = []
        for flag, value in (("--gsm8k-dir", args.gsm8k_dir), ("--tokenizer", args.tokenizer), ("--out", args.out)):
            if value:
                argv += [flag, str(value)]
        return int(gsm8k.main(argv) or 0)
    raise ConfigError("unknown trace command.", fix="use list, info or build-gsm8k.")


def cmd_presets(args) -> int:
    from workbench.costmodel import COEFFICIENT_UNITS, list_presets, load_preset

    if args.name:
        model = load_preset(args.name)
        print(json.dumps(model.to_dict(), indent=2))
        return 0
    rows = []
    for name in list_presets():
        m = load_preset(name)
        rows.append({"preset": name, **{k: v * 1e3 for k, v in m.coefficients().items()},
                     "kv_capacity_tokens": m.kv_capacity_tokens})
    table = pd.DataFrame(rows).set_index("preset") if rows else pd.DataFrame()
    print("coefficients in milliseconds: " + ", ".join(f"{k}: {u}" for k, u in COEFFICIENT_UNITS.items()))
    print_table(table)
    return 0


def cmd_policies(args) -> int:
    from workbench.policies import POLICIES

    from workbench.chunked import CHUNKED_POLICIES

    for name, p in POLICIES.items():
        print(f"{name:16s} dispatch={p.dispatch}, order={p.order}, rule={p.rule}  {p.description}")
    for name, p in CHUNKED_POLICIES.items():
        print(f"{name:16s} dispatch={p.dispatch}, order={p.order}, mixed batches of <= {p.token_budget} tokens  "
              f"{p.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"workbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("simulate", help="simulate one policy and export its schedule")
    add_instance_arguments(p)
    p.add_argument("--out", required=True, help="folder for timeline.csv, requests.csv, metrics.json")
    p.add_argument("--report", action="store_true", help="also write report.html with the Gantt chart")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("compare", help="simulate several policies, print a table, write a report")
    add_instance_arguments(p, policy=False)
    p.add_argument("--policies", default="static,paper-baseline", help="comma-separated policy names")
    p.add_argument("--mu", type=float, default=None, help="price multiplier of the Lagrangian rule")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="a policy parameter")
    p.add_argument("--predictor", default=None, help="output lengths the schedulers see (see simulate --help)")
    p.add_argument("--out", default=None, help="folder for the report and the schedules")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("validate", help="check an exported schedule against every rule of MODEL.md section 9")
    p.add_argument("folder")
    p.add_argument("--trace", default=None, help="also check against this trace")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("report", help="an HTML report comparing exported schedules")
    p.add_argument("folders", nargs="+")
    p.add_argument("--out", default="report.html")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("trace", help="list, inspect or build traces")
    tsub = p.add_subparsers(dest="trace_command", required=True, metavar="ACTION")
    tsub.add_parser("list", help="the shipped traces")
    q = tsub.add_parser("info", help="summary statistics of a trace")
    q.add_argument("name")
    q = tsub.add_parser("build-gsm8k", help="derive the GSM8K token-count traces with the LLaMA tokenizer")
    q.add_argument("--gsm8k-dir", default=None)
    q.add_argument("--tokenizer", default=None)
    q.add_argument("--out", default=None)
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser("presets", help="list the cost-model presets, or show one")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("policies", help="list the registered policies")
    p.set_defaults(func=cmd_policies)

    for module in EXTENSIONS:
        try:
            importlib.import_module(module).register(sub)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except WorkbenchError as exc:
        print(f"workbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"workbench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
