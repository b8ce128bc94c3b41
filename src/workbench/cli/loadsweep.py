"""``workbench loadsweep``: every policy under online arrivals at several loads (see :mod:`workbench.studies.loadsweep`).

Prints p50/p90/p99 of TTFT, TPOT and end-to-end latency and the SLO
attainment per policy and load, names the winner of p99 TTFT at each load,
and writes ``loadsweep.csv`` and ``report.html`` (with the load-sweep figure)
into ``--out``.
"""

from __future__ import annotations

import argparse
import json

import pandas as pd

from workbench.errors import ConfigError
from workbench._units import display_units
from workbench.cli._common import add_force_argument, check_out, out_dir

COLUMNS = ("ttft_s_p50", "ttft_s_p90", "ttft_s_p99", "tpot_s_p50", "tpot_s_p90", "tpot_s_p99",
           "e2e_s_p50", "e2e_s_p90", "e2e_s_p99", "slo_attainment")


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers") from None
    if not values:
        raise argparse.ArgumentTypeError("is empty")
    return values


def register(subparsers) -> None:
    from workbench.cli._common import _batch_size
    from workbench.studies.loadsweep import (
        DEFAULT_SWEEP_POLICIES,
        DEFAULT_TPOT_SLO_S,
        DEFAULT_TTFT_SLO_S,
    )

    p = subparsers.add_parser("loadsweep", help="online arrivals at several loads: latency quantiles and SLO "
                                                "attainment per policy, and the load-sweep figure")
    p.add_argument("--trace", default="gsm8k-train", help="a shipped trace name or a file (default %(default)s)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--batch-size", type=_batch_size, default=16)
    p.add_argument("--cost-model", default="llama-65b", help="preset name or JSON file")
    p.add_argument("--loads", type=_floats, default=[0.5, 0.7, 0.8, 0.9],
                   help="fractions of the cluster's capacity (default 0.5,0.7,0.8,0.9)")
    p.add_argument("--policies", default=",".join(DEFAULT_SWEEP_POLICIES), help="comma-separated policy names")
    p.add_argument("--requests", type=int, default=None, help="use this many requests of the trace (default all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--burstiness", type=float, default=1.0, help="1 = Poisson arrivals, > 1 burstier")
    p.add_argument("--kv-capacity", default=None, help="KV tokens per client, or 'preset'")
    p.add_argument("--ttft-slo", type=float, default=DEFAULT_TTFT_SLO_S, help="TTFT target, s (default %(default)s)")
    p.add_argument("--tpot-slo", type=float, default=DEFAULT_TPOT_SLO_S, help="TPOT target, s (default %(default)s)")
    p.add_argument("--out", default=None, metavar="DIR", help="folder for loadsweep.csv and report.html")
    add_force_argument(p)
    p.set_defaults(func=cmd_loadsweep)


def cmd_loadsweep(args: argparse.Namespace) -> int:
    from workbench.costmodel.linear import load_preset
    from workbench.studies.loadsweep import (
        load_sweep,
        load_sweep_figure,
        winners,
    )
    from workbench.viz.report import report_html
    from workbench.workload.trace import load_trace

    if args.clients < 1:
        raise ConfigError(f"--clients is {args.clients}.", field="--clients", fix="give at least 1 client.")
    if args.requests is not None and args.requests < 1:
        raise ConfigError(f"--requests is {args.requests}.", field="--requests", fix="give at least 1 request.")
    kv = args.kv_capacity
    if kv is not None and kv != "preset":
        try:
            kv = int(kv)
        except ValueError:
            raise ConfigError(f"--kv-capacity is {kv!r}.", field="--kv-capacity",
                              fix="give tokens per client or 'preset'.") from None
    policies = [x.strip() for x in args.policies.split(",") if x.strip()]
    check_out(args)
    cm = load_preset(args.cost_model)
    trace = load_trace(args.trace)  # --requests samples it inside load_sweep, seeded
    table = load_sweep(trace, clients=args.clients, batch_size=args.batch_size, cost_model=cm, loads=args.loads,
                       policies=policies, n_requests=args.requests, seed=args.seed, burstiness=args.burstiness,
                       kv_capacity_tokens=kv, ttft_slo_s=args.ttft_slo, tpot_slo_s=args.tpot_slo)
    cap = table.attrs["capacity_rps"]
    print(f"capacity: {cap:.2f} requests/s ({table.attrs['n_requests']} requests of {args.trace}, "
          f"{args.clients} clients, B = {args.batch_size}, {cm.name}); SLO: TTFT <= {args.ttft_slo} s, "
          f"TPOT <= {args.tpot_slo} s")
    shown = table.set_index(["load", "policy"])[list(COLUMNS)]
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4f}".format):
        print(display_units(shown).to_string())
        best = winners(table, "ttft_s_p99")
        print("\nlowest p99 TTFT per load:")
        print(display_units(best).to_string())
    if args.out:
        fig = load_sweep_figure(table, "ttft_s_p99")
        slo = load_sweep_figure(table, "slo_attainment", log_y=False, title="SLO attainment against load")
        text = report_html("Load sweep", [
            ("Setting", (f"Capacity {cap:.2f} requests/s (fluid bound |J| / mean w_i). Loads {args.loads}; "
                         f"seed {args.seed}; burstiness {args.burstiness}.")),
            ("p99 time to first token", fig), ("SLO attainment", slo),
            ("Winners (p99 TTFT)", best.reset_index()), ("All results", shown.reset_index())])
        with out_dir(args) as tmp:
            table.to_csv(tmp / "loadsweep.csv", index=False)
            (tmp / "report.html").write_text(text, encoding="utf-8")
            (tmp / "setting.json").write_text(json.dumps({k: v for k, v in table.attrs.items()}, indent=2,
                                                         default=str) + "\n", encoding="utf-8")
        print(f"wrote {args.out}/loadsweep.csv and {args.out}/report.html")
    return 0
