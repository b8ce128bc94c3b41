"""Disaggregated against colocated serving on an Azure trace: the study target of the disaggregation issue.

    python benchmarks/disagg_study.py [--trace PATH] [--seconds 300] [--gpus 4,8,16] [--slo 1.0,0.1 ...]

For each GPU count (Llama-2-70B on H100 at tensor-parallel 2, so 2 GPUs a replica; max_num_seqs 128), the
best colocated policy (paper-baseline, hybrid, vllm) against the best split into prefill and decode pools
(vllm's queue order in exclusive iterations, NVLink between the pools), by goodput per GPU (DistServe: the
highest rate per GPU, on a ladder, the trace replayed at it, at which 90% of the requests meet both targets),
with the p99 TTFT and TPOT at that rate; one table per pair of targets (``--slo TTFT,TPOT``, repeatable).
Default trace: the Azure conversation trace in the shared data (``../shared/data/azure-llm-2023``; never
commit it).  The code trace is not in the shared data: fetch ``data/AzureLLMInferenceTrace_code.csv`` of
Azure/AzurePublicDataset at commit b469a113cedca53ddc3bdea71a143dc4b7d8700c and pass ``--trace``.
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

    from workbench.studies.disaggregation import RATES_PER_GPU, study
    from workbench.workload import load_trace

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trace", default=str(TRACE))
    p.add_argument("--seconds", type=float, default=300.0, help="the first seconds of the trace")
    p.add_argument("--gpus", default="4,8,16")
    p.add_argument("--slo", action="append", default=None, help="TTFT,TPOT targets in seconds (repeatable)")
    p.add_argument("--rates", default=",".join(f"{f:g}" for f in RATES_PER_GPU), help="req/s per GPU")
    p.add_argument("--link", default="nvlink")
    p.add_argument("--pool-policy", default="vllm", help="the policy on the pools (exclusive iterations)")
    args = p.parse_args(argv)
    if not Path(args.trace).is_file():
        print(f"{args.trace} is absent: the study needs an Azure trace (see --help)", file=sys.stderr)
        return 2
    trace = load_trace(args.trace)
    trace = trace[trace["arrival_s"] < args.seconds].reset_index(drop=True)
    gpus = tuple(int(g) for g in args.gpus.split(","))
    factors = tuple(float(f) for f in args.rates.split(","))
    print(f"{Path(args.trace).name}: {len(trace)} requests in the first {args.seconds:g} s "
          f"({len(trace) / max(trace['arrival_s'].max(), 1e-9):.2f} req/s); rates per GPU {factors}")
    for slo in args.slo or ["1.0,0.1", "2.0,0.05"]:
        ttft, tpot = (float(x) for x in slo.split(","))
        started = time.perf_counter()
        table, detail = study(trace, gpus, ttft_slo_s=ttft, tpot_slo_s=tpot, rates_per_gpu=factors, link=args.link,
                              pool_policy=args.pool_policy)
        sims = sum(int(d["split"].pairs["simulated"].sum()) for d in detail.values())
        pruned = sum(int(d["split"].pairs["pruned"].sum()) for d in detail.values())
        pairs = sum(len(d["split"].pairs) for d in detail.values())
        print(f"\nTTFT <= {ttft:g} s and TPOT <= {tpot:g} s for 90% (goodput in req/s per GPU; p99 at that rate); "
              f"split pairs: {pairs}, pruned by the bound {pruned}, simulated {sims}; "
              f"{time.perf_counter() - started:.0f} s")
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(table.round(3).to_string(index=False))
        for g, d in detail.items():
            print(f"  {g} GPUs splits:", ", ".join(
                f"{r.prefill_gpus}P{r.decode_gpus}D {r.goodput_rps_per_gpu:.3f}"
                f"{'' if r.simulated_goodput else ' (not measured: at most ' + format(r.goodput_bound_rps_per_gpu, '.3f') + ')'}"
                for r in d["split"].splits.itertuples()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
