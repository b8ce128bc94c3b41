"""A naive reference: continuous round-robin batching simulated and exported in plain Python.

    python benchmarks/naive_export.py TRACE.csv CLIENTS BATCH OUT_DIR [--cost-model llama-65b]

What a new user would write first: one Python loop over iterations, one list per timeline row,
written with the ``csv`` module.  Same semantics as ``workbench simulate --policy continuous``
(round-robin dispatch in trace order, FIFO queues, prefill first: whenever slots are free and
requests wait, prefill as many as fit; all requests arrive at t = 0), so the makespan must agree;
``bench_export.py`` checks it and times the two against each other.  Prints the makespan.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trace")
    p.add_argument("clients", type=int)
    p.add_argument("batch", type=int)
    p.add_argument("out")
    p.add_argument("--cost-model", default="llama-65b")
    args = p.parse_args(argv)
    preset = Path(__file__).resolve().parents[1] / "data" / "presets" / f"{args.cost_model}.json"
    cm = json.loads(preset.read_text())
    a_p, b_p, a_d, b_d, c_d = (float(cm[k]) for k in ("a_p", "b_p", "a_d", "b_d", "c_d"))
    with open(args.trace, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if any(float(r.get("arrival_s") or 0) for r in rows):
        sys.exit("naive_export: arrivals other than 0 are not modelled")
    trace = [(r["request_id"], int(r["input_tokens"]), int(r["output_tokens"])) for r in rows]
    os.makedirs(args.out, exist_ok=True)
    makespan = 0.0
    with open(os.path.join(args.out, "timeline.csv"), "w", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["client", "iteration", "kind", "start_s", "end_s", "n_requests", "tokens", "request_ids"])
        for j in range(args.clients):
            queue = trace[j::args.clients]  # round-robin in trace order
            running = []  # [id, input_tokens, decodes done, decodes needed]
            t, it, head = 0.0, 0, 0
            while head < len(queue) or running:
                free = args.batch - len(running)
                if head < len(queue) and free > 0:
                    batch = queue[head:head + free]
                    head += len(batch)
                    tokens = sum(l for _, l, _ in batch)
                    end = t + a_p + b_p * tokens
                    out.writerow([j, it, "prefill", t, end, len(batch), tokens, " ".join(i for i, _, _ in batch)])
                    running += [[i, l, 0, o - 1] for i, l, o in batch if o > 1]
                else:
                    for r in running:
                        r[2] += 1
                    tokens = sum(r[1] + r[2] for r in running)
                    end = t + a_d + b_d * len(running) + c_d * tokens
                    out.writerow([j, it, "decode", t, end, len(running), tokens, " ".join(r[0] for r in running)])
                    running = [r for r in running if r[2] < r[3]]
                t, it = end, it + 1
            makespan = max(makespan, t)
    print(json.dumps({"makespan_s": makespan}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
