"""Sizing a fleet on the Azure conversation trace: the targets of the capacity issue, printed.

    python benchmarks/capacity_study.py [--rates 1,4] [--out runs/benchmarks/capacity]

For each rate factor, the whole trace (19,366 requests over an hour, Llama-2-70B on 4 x H100, vllm policy,
max_num_seqs 128) on fixed fleets of 1, 2, ... replicas until one meets p99 TTFT <= 1 s, then under each
controller (starting from that fleet): GPU-hours, p99 TTFT, attainment and goodput.  With --out it writes
``study.csv`` and ``replicas.html`` (the replica-count figure of each rate) there.  Needs the shared data
(``../shared/data/azure-llm-2023``); never commit it, only what this script derives.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

TRACE = ROOT.parent / "shared" / "data" / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"


def main(argv=None) -> int:
    import pandas as pd

    from workbench.studies.capacity import fleet_study, scaled
    from workbench.workload import load_trace

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trace", default=str(TRACE))
    p.add_argument("--rates", default="1,4")
    p.add_argument("--ttft-slo", type=float, default=1.0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if not Path(args.trace).is_file():
        print(f"{args.trace} is absent: the study needs the shared Azure trace", file=sys.stderr)
        return 2
    trace = load_trace(args.trace)
    tables, figures = [], []
    for factor in (float(x) for x in args.rates.split(",")):
        started = time.perf_counter()
        table, runs = fleet_study(scaled(trace, factor), ttft_slo_s=args.ttft_slo)
        table.insert(0, "rate_factor", factor)
        smallest = table.attrs["smallest_fixed"]
        print(f"rate x{factor:g}: smallest fixed fleet meeting p99 TTFT <= {args.ttft_slo} s: {smallest} "
              f"({time.perf_counter() - started:.0f} s)")
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(table[["gpu_hours", "ttft_s_pq", "meets_ttft", "slo_attainment", "goodput_rps", "added",
                         "drained"]].round(3).to_string())
        tables.append(table)
        if args.out:
            from workbench.viz.figures import replica_count_figure

            keep = {k: v for k, v in runs.items() if k == f"fixed x{smallest}" or not k.startswith("fixed")}
            figures.append((f"rate x{factor:g}", replica_count_figure(keep, title=f"Replicas, rate x{factor:g}")))
    if args.out:
        from workbench.viz.report import write_report

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        pd.concat(tables).to_csv(out / "study.csv")
        write_report(out / "replicas.html", "Sizing a fleet: Azure conversation trace", figures)
        print(f"wrote {out}/study.csv and replicas.html")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
