"""The vLLM-style engine's speed beside the paper's exclusive engine, from 1k to 1M requests (issue 24).

    python benchmarks/bench_vllm.py                 # 1k, 10k, 20k (16 clients) and 100k (64 clients)
    python benchmarks/bench_vllm.py --max 1000000   # also 300k and 1M (64 clients)

The trace of the issue: prompts uniform 20-600 tokens, outputs uniform 2-400 (``numpy.random.default_rng(0)``),
all at t = 0, llama-65b preset, B = 32; vllm with its defaults (mixed 2,048-token iterations, paged KV at the
preset's capacity, prefix caching, vLLM V1's semantics).  Each figure is the best of ``--repeat`` in-process
calls of ``build_engine(...).run()`` then ``.schedule()`` (what ``simulate`` does), with the engine's default
``workers`` (from 20,000 requests, a run whose replicas never interact is split into parallel shards over
the cores this process may use: ``engine.shards``) and in one process (``workers=1``).  Printed per policy
and size: seconds (default, then one process), microseconds per request, segments the loop formed (prefills,
runs of decodes, mixed iterations, preemptions) and iterations in the timeline, both per second, the times
over paper-baseline's (default, then one process), and, with ``+timeline``, the default time with the
per-iteration timeline listed too (member texts included), which both engines list when it is first read or
written.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd

POLICIES = ("paper-baseline", "hybrid", "chunked-prefill", "vllm")


def issue_trace(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"request_id": np.arange(n), "input_tokens": rng.integers(20, 601, n),
                         "output_tokens": rng.integers(2, 401, n)})


def measure(n: int, clients: int, policy: str, repeat: int, workers: int | None = None) -> dict:
    from workbench.costmodel.linear import load_preset
    from workbench.engine import build_engine

    cm = load_preset("llama-65b")
    trace = issue_trace(n)
    best, listed, segments, iterations = float("inf"), float("inf"), 0, 0
    for _ in range(repeat):
        t = time.perf_counter()
        engine = build_engine(trace, clients, 32, policy, cm, progress=False, workers=workers)
        engine.run()
        segments = len(engine.recorder)
        iterations = int(sum(engine.recorder.k))
        schedule = engine.schedule()
        done = time.perf_counter()
        best = min(best, done - t)
        listed = min(listed, time_timeline(schedule) + done - t)
    return {"requests": n, "clients": clients, "policy": policy, "seconds": best, "us_per_request": 1e6 * best / n,
            "segments": segments, "segments_per_s": segments / best, "iterations": iterations,
            "iterations_per_s": iterations / best, "with_timeline_s": listed}


def time_timeline(schedule) -> float:
    """Seconds to list the per-iteration timeline, which both engines build on first read (texts included)."""
    t = time.perf_counter()
    schedule.timeline
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=100_000, help="largest trace (requests)")
    parser.add_argument("--repeat", type=int, default=2, help="calls per case (best kept)")
    parser.add_argument("--policy", action="append", help="only this policy (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = parser.parse_args()
    sizes = [(1_000, 16), (10_000, 16), (20_000, 16), (100_000, 64), (300_000, 64), (1_000_000, 64)]
    rows = []
    print(f"{'requests':>9} {'clients':>7} {'policy':<15} {'s':>8} {'1 proc s':>9} {'us/req':>7} {'segments/s':>11} "
          f"{'iterations/s':>13} {'x paper':>8} {'1 proc x':>9} {'+timeline':>10}")
    for n, clients in sizes:
        if n > args.max:
            continue
        base = base_1 = None
        for policy in args.policy or POLICIES:
            repeat = 1 if n >= 300_000 else args.repeat
            row = measure(n, clients, policy, repeat)
            row["one_process_s"] = measure(n, clients, policy, repeat, workers=1)["seconds"]
            if policy == "paper-baseline":
                base, base_1 = row["seconds"], row["one_process_s"]
            row["over_paper"] = row["seconds"] / base if base else float("nan")
            row["one_process_over_paper"] = row["one_process_s"] / base_1 if base_1 else float("nan")
            rows.append(row)
            print(f"{n:>9,} {clients:>7} {policy:<15} {row['seconds']:>8.3f} {row['one_process_s']:>9.3f} "
                  f"{row['us_per_request']:>7.1f} {row['segments_per_s']:>11,.0f} {row['iterations_per_s']:>13,.0f} "
                  f"{row['over_paper']:>8.1f} {row['one_process_over_paper']:>9.1f} {row['with_timeline_s']:>10.3f}",
                  flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
