"""``workbench fidelity``: replay a measured serving run through the ``vllm`` policy and compare, request by request."""

from __future__ import annotations

import json
import sys

from workbench.cli._common import add_force_argument, check_out, output_writer, print_table


def cmd_fidelity(args) -> int:
    from workbench.studies.fidelity import errors_frame, fidelity, write_fidelity

    check_out(args)
    result = fidelity(args.run, args.cost_model, workload=args.workload)
    if args.out:
        write_fidelity(result, args.out, writer=output_writer(args), force=args.force)
    s = result.run.settings
    print(f"{result.run.name}: {len(result.per_request)} requests replayed with {result.cost_model_name} "
          f"(vllm policy: max_num_seqs {s['max_num_seqs']}, max_num_batched_tokens {s['max_num_batched_tokens']}, "
          f"block size {s['block_size']}, prefix caching {'on' if s['enable_prefix_caching'] else 'off'}, "
          f"{result.schedule.metrics.get('preemptions', 0)} preemptions)")
    if result.run.read:
        print("read from the run: " + ", ".join(f"{k} ({v})" for k, v in result.run.read.items()))
    if result.run.assumed:
        print("vLLM defaults assumed (the run records nothing): " + ", ".join(result.run.assumed))
    for note in result.run.notes:
        print(f"note: {note}")
    for warning in result.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    summary = result.summary()
    if "prefix_hashes" in result.run.trace.columns:
        hits, ideal = summary["prefix_hit_tokens"], summary["prefix_hit_tokens_ideal"]
        share = f" ({hits / ideal:.1%} of it)" if ideal else ""
        print(f"prefix-cache hits: {hits:,} prompt tokens; ideal {ideal:,} (an unbounded cache, in arrival order)"
              + share)
        if "prefix_hit_tokens_ideal_per_replica" in summary:
            print(f"  with a cache per data-parallel replica, as the replay sent the requests: ideal "
                  f"{summary['prefix_hit_tokens_ideal_per_replica']:,}")
    print_table(errors_frame(result.errors))
    if args.json:
        print(json.dumps(summary, default=str))
    if args.out:
        print(f"wrote {args.out}: timeline.csv, requests.csv, metrics.json, fidelity.csv, fidelity.json, report.html")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("fidelity", help="replay a measured vLLM run (meta.json + requests.jsonl) and compare "
                                               "predicted with measured TTFT, TPOT and end-to-end latency")
    p.add_argument("run", help="the run folder: meta.json and requests.jsonl")
    p.add_argument("--workload", default=None, metavar="FILE.jsonl",
                   help="the requests' token ids (LLMServingSim workloads/*.jsonl), for their prefixes (default: "
                        "meta.json's dataset_path, found in the run folder or beside it; none: no shared prefixes)")
    p.add_argument("--cost-model", required=True, help="a preset name or file (e.g. one fitted by workbench calibrate)")
    p.add_argument("--out", default=None, help="folder for the simulated schedule, fidelity.csv/json and report.html")
    p.add_argument("--json", action="store_true", help="also print the summary as one JSON line")
    add_force_argument(p)
    p.set_defaults(func=cmd_fidelity)
