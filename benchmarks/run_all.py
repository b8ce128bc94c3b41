"""The benchmark suite: one command, one table, one CSV row per figure.

    python benchmarks/run_all.py [--quick] [--csv runs/benchmarks/history.csv]

Measures, on this machine: simulator requests/s and iterations/s per policy
(gsm8k-test, 8 clients, B=16), the 13k- and 100k-request cases, offline bin
packing time and proven gap, lower-bound time (closed form and bin-packing
bound), the 100-case study time, Gantt build time and peak memory.  Each
figure is appended to the CSV with the machine, the commit and the time, so
runs can be compared over time (``--quick`` skips the 100-case study and the
100k case).  The default CSV is untracked (``runs/`` is git-ignored), so a run
never changes the checkout; ``--csv benchmarks/results/history.csv`` appends to
the tracked history when a run is meant to be recorded there.  The detailed scripts beside this one (``bench_sim.py``,
``bench_offline.py``, ``bench_online.py``, ``bench_case_study.py``,
``scaling.py``) print more about each part.
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

# This checkout's package, whether or not it is installed (`python benchmarks/...` from the repository root).
_sys.path.insert(0, str(_Path(__file__).resolve().parents[1] / "src"))

import argparse
import csv
import datetime as dt
import os
import platform
import resource
import subprocess
import time
from pathlib import Path


#: Where a run appends by default: under the git-ignored runs/ of the checkout, so a benchmark run leaves
#: every tracked file as it was (the tracked benchmarks/results/history.csv only when asked with --csv).
DEFAULT_CSV = Path(__file__).resolve().parents[1] / "runs" / "benchmarks" / "history.csv"


def best_of(fn, repeat: int = 3):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).resolve().parent).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def measure(quick: bool) -> list[tuple[str, float, str, str]]:
    """(figure, value, unit, target) rows."""
    from workbench.costmodel.linear import load_preset
    from workbench.viz.figures import gantt
    from workbench.offline import assign, lower_bound
    from workbench.engine.core import simulate
    from workbench.workload.trace import load_trace, synthetic_trace

    cm = load_preset("llama-65b")
    test, train = load_trace("gsm8k-test"), load_trace("gsm8k-train")
    rows = []
    for policy in ("static", "paper-baseline", "least-work", "offline", "online", "hybrid"):
        simulate(test, 8, 16, policy, cm)  # warm the bound cache and the offline assignment's imports
        s, sec = best_of(lambda: simulate(test, 8, 16, policy, cm))
        iters = int(s.compact()["iterations"].sum())
        rows += [(f"sim {policy} gsm8k-test/8/16 time", sec * 1e3, "ms", "< 50" if policy in ("paper-baseline", "static") else ""),
                 (f"sim {policy} requests/s", len(test) / sec, "1/s", ""),
                 (f"sim {policy} iterations/s", iters / sec, "1/s", "")]
    for n, clients, batch, target in ((13_000, 8, 16, "< 400"),) + (() if quick else ((100_000, 64, 32, "< 3000"),)):
        trace = synthetic_trace(n, seed=1, input_mean_tokens=68, output_mean_tokens=130)
        _, sec = best_of(lambda: simulate(trace, clients, batch, "paper-baseline", cm), repeat=1 if n > 50_000 else 3)
        rows.append((f"sim paper-baseline {n // 1000}k/{clients}/{batch} time", sec * 1e3, "ms", target))
    a, sec = best_of(lambda: assign(test, 8, 16, cm, method="auto", time_limit=2.0), repeat=1)
    rows += [("bin packing gsm8k-test/8 auto time", sec, "s", "< 2"), ("bin packing gsm8k-test/8 proven gap", a.gap * 100, "%", "< 0.05")]
    a, sec = best_of(lambda: assign(train, 64, 16, cm, method="auto", time_limit=10.0), repeat=1)
    rows += [("bin packing gsm8k-train/64 auto time", sec, "s", "< 10"), ("bin packing gsm8k-train/64 proven gap", a.gap * 100, "%", "< 0.5")]
    _, sec = best_of(lambda: lower_bound(train, 64, cm, batch_size=16, method="closed"))
    rows.append(("lower bound gsm8k-train/64 closed form time", sec * 1e3, "ms", "< 100"))
    _, sec = best_of(lambda: lower_bound(train, 64, cm, batch_size=16, method="mip", time_limit=5.0), repeat=1)
    rows.append(("lower bound gsm8k-train/64 bin-packing bound time (5 s solver limit)", sec, "s", "< 10"))
    s = simulate(test, 8, 16, "hybrid", cm)
    _, sec = best_of(lambda: gantt(s))
    rows.append(("gantt gsm8k-test/8 hybrid build time", sec * 1e3, "ms", "< 1000"))
    if not quick:
        from workbench.studies.experiments import case_study

        _, sec = best_of(lambda: case_study(n_cases=100, workers=2), repeat=1)
        rows.append(("100-case study time (2 Dask workers)", sec, "s", "< 60"))
    rows.append(("peak memory (max RSS)", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MB", ""))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--csv", default=str(DEFAULT_CSV),
                        help="append the figures here (default: %(default)s, untracked; "
                             "benchmarks/results/history.csv is the tracked history)")
    args = parser.parse_args()
    rows = measure(args.quick)
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    machine = f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}"
    rev = commit()
    print(f"machine: {machine}; commit {rev}; {stamp}")
    width = max(len(r[0]) for r in rows)
    for name, value, unit, target in rows:
        print(f"{name:{width}s} {value:>14,.3f} {unit:4s} {('target ' + target) if target else ''}")
    path = Path(args.csv)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(["time_utc", "commit", "machine", "figure", "value", "unit", "target"])
        writer.writerows([stamp, rev, machine, *row] for row in rows)
    print(f"appended {len(rows)} figures to {path}")


if __name__ == "__main__":
    main()
