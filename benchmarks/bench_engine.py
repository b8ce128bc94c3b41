"""The engine's speed per policy and size, optionally beside another checkout's, measured back to back.

    python benchmarks/bench_engine.py                      # this checkout
    python benchmarks/bench_engine.py --against ../old     # also another checkout, interleaved, with the ratio

Cases: paper-baseline, hybrid and vllm at gsm8k-test (1,319 requests, 8 clients, B = 16), 13k requests
(8 clients, B = 16) and 100k requests (64 clients, B = 32), all at t = 0 on the llama-65b preset; vllm
with a 2,048-token budget and the preset's KV capacity.  Each figure is the best of ``--repeat`` calls of
``simulate`` in one process per checkout (a fresh subprocess each round), rounds alternating between
the checkouts so that a machine whose speed drifts slows both alike.  Printed: seconds, requests per
second, and, with ``--against``, this checkout's time over the other's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
CASES = [
    # name, trace, requests, clients, batch, policy
    ("gsm8k-test paper-baseline", "gsm8k-test", None, 8, 16, "paper-baseline"),
    ("gsm8k-test hybrid", "gsm8k-test", None, 8, 16, "hybrid"),
    ("gsm8k-test vllm", "gsm8k-test", None, 8, 16, "vllm"),
    ("13k paper-baseline", "synthetic", 13_000, 8, 16, "paper-baseline"),
    ("13k hybrid", "synthetic", 13_000, 8, 16, "hybrid"),
    ("13k vllm", "synthetic", 13_000, 8, 16, "vllm"),
    ("100k paper-baseline", "synthetic", 100_000, 64, 32, "paper-baseline"),
    ("100k hybrid", "synthetic", 100_000, 64, 32, "hybrid"),
    ("100k vllm", "synthetic", 100_000, 64, 32, "vllm"),
]


def measure(repeat: int, names: list[str]) -> dict[str, float]:
    """In this process (whose ``workbench`` is the checkout on sys.path): best seconds per case."""
    from workbench.costmodel.linear import load_preset
    from workbench.engine.core import simulate
    from workbench.workload.trace import load_trace, synthetic_trace

    cm = load_preset("llama-65b")
    out = {}
    for name, trace_name, n, clients, batch, policy in CASES:
        if name not in names:
            continue
        trace = load_trace(trace_name) if trace_name != "synthetic" else synthetic_trace(
            n, seed=1, input_mean_tokens=68, output_mean_tokens=130)
        best = float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            simulate(trace, clients, batch, policy, cm)
            best = min(best, time.perf_counter() - t)
        out[name] = best
    return out


def run_checkout(src: Path, repeat: int, names: list[str]) -> dict[str, float]:
    code = (f"import sys, json; sys.path.insert(0, {str(src / 'src')!r}); sys.path.insert(0, {str(HERE)!r}); "
            f"from benchmarks.bench_engine import measure; print(json.dumps(measure({repeat}, {names!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="another checkout of the project to time beside this one")
    parser.add_argument("--repeat", type=int, default=3, help="calls per round (best kept)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per checkout, alternating")
    parser.add_argument("--case", action="append", help="only this case (repeatable)")
    args = parser.parse_args()
    names = args.case or [c[0] for c in CASES]
    checkouts = {"this": HERE} | ({"other": args.against.resolve()} if args.against else {})
    best: dict[str, dict[str, float]] = {k: {} for k in checkouts}
    for _ in range(args.rounds):
        for key, src in checkouts.items():
            for name, s in run_checkout(src, args.repeat, names).items():
                best[key][name] = min(best[key].get(name, float("inf")), s)
    sizes = {c[0]: (1319 if c[2] is None else c[2]) for c in CASES}
    header = f"{'case':28s} {'this s':>9s} {'req/s':>10s}" + (f" {'other s':>9s} {'ratio':>7s}" if args.against else "")
    print(header)
    print("-" * len(header))
    for name in names:
        s = best["this"][name]
        line = f"{name:28s} {s:>9.4f} {sizes[name] / s:>10,.0f}"
        if args.against:
            o = best["other"][name]
            line += f" {o:>9.4f} {s / o:>7.3f}"
        print(line)


if __name__ == "__main__":
    main()
