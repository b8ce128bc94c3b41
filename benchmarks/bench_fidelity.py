"""Fidelity to real vLLM runs: every shared run, what was read and what assumed, the targets, LLMServingSim.

    python benchmarks/bench_fidelity.py [--runs DIR] [--run DIR --cost-model PRESET] [--no-choices]

Replays each run under ``../shared/data/llmservingsim/runs/<gpu>/<model>/`` (vLLM 0.19, 300 ShareGPT
requests at about 10 requests/s) through the ``vllm`` policy with the preset fitted ONLY from the kernel
profile measured inside that vLLM (never from the run), with every setting the run records (``meta.json``,
``config.json``) and the prefixes of its workload's token ids; prints what was read and what assumed, the
errors beside the targets of the fidelity issues and beside LLMServingSim's own replay of the same run, and
(unless ``--no-choices``) each modelling choice's measured effect (the run replayed with one choice taken
back at a time).  A run without a preset for its model is listed with the reason it is not replayed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

RUNS = ROOT.parent / "shared" / "data" / "llmservingsim" / "runs"
#: (metric, statistic, target |error|): the second fidelity issue's targets for the shared dense run, and for
#: the shared mixture-of-experts run.
TARGETS = [("e2e_s", "mean", 0.02), ("e2e_s", "p99", 0.02), ("tpot_s", "mean", 0.02), ("ttft_s", "mean", 0.04),
           ("e2e_s", "mape", 0.03)]
MOE_TARGETS = [("e2e_s", "mean", 0.03), ("tpot_s", "mean", 0.03), ("ttft_s", "mean", 0.10)]
#: LLMServingSim's replay of the same runs (the fidelity issues; its bench/examples summaries).
ANCHORS = {
    "Llama-3.1-8B": {("e2e_s", "mean"): -0.018, ("e2e_s", "p99"): -0.016, ("ttft_s", "mean"): -0.040,
                     ("tpot_s", "mean"): -0.010},
    "Qwen3-30B-A3B-Instruct-2507": {("e2e_s", "mean"): -0.022, ("ttft_s", "mean"): -0.136,
                                    ("tpot_s", "mean"): -0.017},
}
#: The preset fitted from each model's profile, by model folder and tensor-parallel degree.
PRESETS = {("Llama-3.1-8B", 1): "llama31-8b-rtxpro6000-tp1", ("Llama-3.1-8B", 2): "llama31-8b-rtxpro6000-tp2"}


def report_run(folder: Path, cost_model: str | None, choices: bool) -> list[tuple[str, float, bool]]:
    """Print one run: read vs assumed, errors against targets and LLMServingSim; return (label, error, met)."""
    import pandas as pd

    from workbench.studies.fidelity import fidelity, modelling_choices, read_run

    run = read_run(folder)
    s = run.settings
    print(f"\n== {folder.relative_to(folder.parents[1]) if len(folder.parents) > 1 else folder}: {run.name}, "
          f"{len(run.trace)} requests (TP {s['tensor_parallel_size']}, DP {s['data_parallel_size']}"
          f"{', expert parallel' if s['enable_expert_parallel'] else ''})")
    print("read:    " + "; ".join(f"{k} <- {v}" for k, v in run.read.items()))
    print("assumed: " + ("; ".join(run.assumed) or "nothing"))
    for note in run.notes:
        print(f"note:    {note}")
    preset = cost_model or PRESETS.get((folder.name, s["tensor_parallel_size"])) or calibrated(folder, run)
    if preset is None:
        print("not replayed: no preset is fitted from this model's profile, and no profile lies beside the run.")
        anchor = ANCHORS.get(folder.name, {})
        if anchor:
            print("LLMServingSim on it: " + ", ".join(f"{m} {st} {v:+.1%}" for (m, st), v in anchor.items()))
        return []
    model = preset  # a preset name, or a model fitted now
    preset = getattr(model, "name", model)
    started = time.perf_counter()
    result = fidelity(run, model)
    elapsed = time.perf_counter() - started
    summary = result.summary()
    print(f"{preset}: replay + comparison {elapsed:.2f} s, {summary['preemptions']} preemptions; prefix-cache hits "
          f"{summary['prefix_hit_tokens']:,} of an ideal {summary['prefix_hit_tokens_ideal']:,} prompt tokens")
    for warning in result.warnings:
        print(f"WARNING: {warning}")
    anchor = ANCHORS.get(folder.name, {})
    print(f"{'figure':22s} {'error':>8s} {'target':>8s} {'met':>4s} {'LLMServingSim':>14s}")
    rows = []
    for metric, stat, target in (MOE_TARGETS if s["enable_expert_parallel"] else TARGETS):
        value = result.errors[metric]["mape" if stat == "mape" else f"error_{stat}"]
        label = f"{metric} {'MAPE' if stat == 'mape' else stat}"
        met = abs(value) <= target
        a = anchor.get((metric, stat))
        print(f"{label:22s} {value:+8.2%} {target:8.0%} {'yes' if met else 'NO':>4s} "
              f"{'' if a is None else f'{a:+.1%}':>14s}")
        rows.append((f"{folder.name} {label}", value, met))
    print(f"{'ttft_s MAPE':22s} {result.errors['ttft_s']['mape']:+8.2%}   (per request; TTFT is mostly queueing)")
    if choices:
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print("each modelling choice taken back in turn (errors in percent):")
            print(modelling_choices(run, model).round(2).to_string())
    return rows


def calibrated(folder: Path, run):
    """A profiled cost model fitted now from the model's own kernel profile beside the run
    (``profiles/<gpu>/<model>/``), with the link and expert parallelism its ``config.json`` declares; None
    without such a profile."""
    from workbench.costmodel.calibrate import PCIE5_X16, ProfileSettings, cluster_link, fit_profile

    profile = folder.parents[2] / "profiles" / folder.parent.name / folder.name
    tp = run.settings["tensor_parallel_size"]
    if not (profile / f"tp{tp}").is_dir():
        return None
    ep = 1
    if run.settings["enable_expert_parallel"]:
        sizes = [i.get("ep_size") for i in (run.cluster or {}).get("instances", []) if i.get("ep_size")]
        ep = int(sizes[0]) if sizes else run.settings["data_parallel_size"] * tp
    link = cluster_link(run.cluster) if run.cluster else PCIE5_X16
    model, _ = fit_profile(profile, run.name, tp=tp, settings=ProfileSettings(link=link, expert_parallel=ep))
    print(f"calibrated {model.name} from {profile} (its own kernel profile; link and EP {ep} from config.json)")
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(RUNS), help="a folder of <gpu>/<model>/ run folders")
    parser.add_argument("--run", default=None, help="one run folder instead")
    parser.add_argument("--cost-model", default=None, help="with --run: the preset (default: by model and TP)")
    parser.add_argument("--no-choices", action="store_true", help="skip the modelling-choice table")
    args = parser.parse_args(argv)
    folders = [Path(args.run)] if args.run else sorted(p.parent for p in Path(args.runs).glob("*/*/meta.json"))
    if not folders:
        print(f"no run under {args.run or args.runs} (the shared data is absent): nothing to measure")
        return 0
    for folder in folders:
        report_run(folder, args.cost_model, not args.no_choices)
    return 0


if __name__ == "__main__":
    sys.exit(main())
