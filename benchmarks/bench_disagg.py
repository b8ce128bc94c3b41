"""A disaggregated run's speed: 100k requests on 64 replicas split into prefill and decode pools (issue 26).

    python benchmarks/bench_disagg.py                       # 100k requests, 16 prefill + 48 decode replicas
    python benchmarks/bench_disagg.py --requests 20000 --prefill 4 --decode 12

The trace of the engine benchmarks (``benchmarks/bench_vllm.py``): prompts uniform 20-600 tokens, outputs uniform
2-400 (``numpy.random.default_rng(0)``), all at t = 0, llama-65b preset, B = 32, reserved KV at the preset's
capacity; policy paper-baseline (round-robin per stage) over NVLink.  Each figure is the best of ``--repeat``
in-process calls of ``build_engine(...).run()`` then ``.schedule()`` (what ``simulate`` does), with the
colocated paper-baseline and hybrid on the same 64 replicas beside it.  The target of the issue: under 3 s.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd


def issue_trace(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"request_id": np.arange(n), "input_tokens": rng.integers(20, 601, n),
                         "output_tokens": rng.integers(2, 401, n)})


def measure(trace: pd.DataFrame, clients: int, policy: str, pools, repeat: int, kv: str) -> dict:
    from workbench.costmodel.linear import load_preset
    from workbench.engine import build_engine

    cm = load_preset("llama-65b")
    best, rows = float("inf"), 0
    for _ in range(repeat):
        t = time.perf_counter()
        engine = build_engine(trace, clients, 32, policy, cm, progress=False, pools=pools, kv=kv,
                              kv_capacity_tokens=cm.kv_capacity_tokens)
        engine.run()
        rows = int(sum(engine.recorder.k))  # iterations (one timeline row each)
        schedule = engine.schedule()
        best = min(best, time.perf_counter() - t)
    return {"setting": f"{policy}{' pooled' if pools else ''} ({kv})", "seconds": round(best, 3),
            "us_per_request": round(1e6 * best / len(trace), 1), "iterations": rows,
            "makespan_s": round(schedule.makespan_s, 2)}


def main() -> None:
    from workbench.engine.pools import Pools

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--prefill", type=int, default=16)
    parser.add_argument("--decode", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=2, help="calls per case (best kept)")
    parser.add_argument("--kv", default="reserve", choices=("reserve", "paged"))
    args = parser.parse_args()
    trace = issue_trace(args.requests)
    clients = args.prefill + args.decode
    pools = Pools(prefill=args.prefill, decode=args.decode, link="nvlink")
    rows = [measure(trace, clients, "paper-baseline", pools, args.repeat, args.kv),
            measure(trace, clients, "paper-baseline", None, args.repeat, args.kv),
            measure(trace, clients, "hybrid", None, args.repeat, args.kv)]
    print(f"{args.requests:,} requests on {clients} replicas ({args.prefill} prefill + {args.decode} decode when "
          "pooled); best of", args.repeat)
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
