"""Simulator speed: the foundation issue's targets and the scaling targets, printed.

    python benchmarks/bench_sim.py            # the standard cases
    python benchmarks/bench_sim.py --big      # also 1,000,000 requests on 256 clients

Each case runs in a fresh subprocess so its peak memory (max RSS) is its own:
"sim MB" is the peak through the simulation, "peak MB" after also expanding the
per-iteration timeline (one row per iteration, as exported).
Times are the best of ``--repeat`` runs of ``simulate`` (trace validation,
dispatch, the event loop, the run table and the metrics; the per-iteration
timeline is expanded lazily and timed separately as "export").
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

# This checkout's package, whether or not it is installed (`python benchmarks/...` from the repository root).
_sys.path.insert(0, str(_Path(__file__).resolve().parents[1] / "src"))

import argparse
import json
import resource
import subprocess
import sys
import time

CASES = [
    # name, trace, requests, clients, batch, policy, target_s
    ("gsm8k-test continuous", "gsm8k-test", None, 8, 16, "continuous", 0.050),
    ("gsm8k-test static", "gsm8k-test", None, 8, 16, "static", 0.050),
    ("gsm8k-test least-work", "gsm8k-test", None, 8, 16, "least-work", 0.050),
    ("13k requests, 8 clients", "synthetic", 13_000, 8, 16, "continuous", 0.4),
    ("100k requests, 64 clients", "synthetic", 100_000, 64, 32, "continuous", 3.0),
]
BIG = [("1M requests, 256 clients", "synthetic", 1_000_000, 256, 32, "continuous", 30.0)]


def run_case(trace_name, n, clients, batch, policy, repeat):
    from workbench.costmodel.linear import load_preset
    from workbench.viz.figures import gantt
    from workbench.engine.core import simulate
    from workbench.workload.trace import load_trace, synthetic_trace

    cm = load_preset("llama-65b")
    trace = load_trace(trace_name) if trace_name != "synthetic" else synthetic_trace(
        n, seed=1, input_mean_tokens=68, output_mean_tokens=130)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        schedule = simulate(trace, clients, batch, policy, cm)
        best = min(best, time.perf_counter() - t)
    sim_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    iterations = len(schedule.timeline)
    export_s = time.perf_counter() - t
    gantt_s = None
    if len(trace) <= 20_000:
        t = time.perf_counter()
        gantt(schedule)
        gantt_s = time.perf_counter() - t
    return {"requests": len(trace), "iterations": iterations, "runs": len(schedule.runs), "sim_s": best,
            "export_s": export_s, "gantt_s": gantt_s, "makespan_s": schedule.makespan_s,
            "sim_rss_mb": sim_rss_mb, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(*json.loads(args.case), args.repeat)))
        return
    rows = []
    for name, trace, n, clients, batch, policy, target in CASES + (BIG if args.big else []):
        repeat = args.repeat if (n or 0) < 500_000 else 1
        out = subprocess.run([sys.executable, __file__, "--repeat", str(repeat), "--case",
                              json.dumps([trace, n, clients, batch, policy])],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((name, r, target))
    header = (f"{'case':28s} {'requests':>9s} {'iterations':>11s} {'sim':>9s} {'target':>8s} {'req/s':>10s} "
              f"{'iter/s':>11s} {'export':>8s} {'gantt':>7s} {'sim MB':>7s} {'peak MB':>8s}")
    print(header)
    print("-" * len(header))
    for name, r, target in rows:
        gantt_s = f"{r['gantt_s']:.3f}s" if r["gantt_s"] is not None else "-"
        print(f"{name:28s} {r['requests']:>9,d} {r['iterations']:>11,d} {r['sim_s']:>8.3f}s {target:>7.2f}s "
              f"{r['requests'] / r['sim_s']:>10,.0f} {r['iterations'] / r['sim_s']:>11,.0f} {r['export_s']:>7.2f}s "
              f"{gantt_s:>7s} {r['sim_rss_mb']:>7.0f} {r['peak_rss_mb']:>8.0f}  {'ok' if r['sim_s'] <= target else 'MISSED'}")


if __name__ == "__main__":
    main()
