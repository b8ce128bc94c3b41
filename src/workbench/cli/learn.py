"""``workbench learn``: train an iteration rule with PPO on the engine's decisions (see :mod:`workbench.learn`).

Writes into ``--out``: ``model.npz`` (what ``--rule learned --model DIR/model.npz`` reads, with its
provenance inside), ``curve.csv`` (the greedy policy on held-out episodes against decisions trained
on), ``report.html`` (the curve's figure) and ``provenance.json``.  Needs the ``learn`` extra.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import shlex
import sys

from workbench.cli._common import add_force_argument, check_out, out_dir, output_writer
from workbench.errors import ConfigError


def register(subparsers) -> None:
    from workbench.cli._common import _positive

    p = subparsers.add_parser("learn", help="train an iteration rule with PPO (the `learn` extra) and write a model "
                                            "that --rule learned reads")
    p.add_argument("--trace", default="gsm8k-train", help="a shipped trace name or a file; episodes are seeded "
                                                          "subsets of it")
    p.add_argument("--objective", choices=("makespan", "goodput"), default="makespan",
                   help="makespan: reward is minus the time a decision costs (batch); goodput: requests meeting the "
                        "TTFT and TPOT targets (online arrivals at --load)")
    p.add_argument("--steps", type=_positive, default=100_000, help="decisions to train on")
    p.add_argument("--seed", type=int, default=0, help="seeds the network, PPO and every episode")
    p.add_argument("--requests", type=_positive, default=200, help="requests per episode")
    p.add_argument("--clients", type=_positive, default=1, help="replicas per episode")
    p.add_argument("--batch-size", type=_positive, default=16)
    p.add_argument("--cost-model", default="llama-65b", help="a preset name or a JSON file")
    p.add_argument("--load", type=float, default=None,
                   help="arrivals at this fraction of capacity (default: batch for makespan, 0.9 for goodput)")
    p.add_argument("--levels", type=_positive, default=1, help="prefill choices besides decode (1: all that fit)")
    p.add_argument("--envs", type=_positive, default=4, help="environments stepped together")
    p.add_argument("--eval-every", type=_positive, default=10_000, help="decisions between held-out evaluations")
    p.add_argument("--eval-episodes", type=_positive, default=16, help="held-out episodes per evaluation")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for model.npz, curve.csv, report.html")
    add_force_argument(p)
    p.set_defaults(func=cmd_learn)


def cmd_learn(args: argparse.Namespace) -> int:
    from workbench.learn.train import curve_figure, require_sb3, train
    from workbench.policies.learned import save_model
    from workbench.viz.report import report_html
    from workbench.workload.trace import load_trace

    if args.load is not None and not args.load > 0:
        raise ConfigError(f"--load is {args.load}.", field="--load", fix="give a fraction of capacity > 0, e.g. 0.9.")
    check_out(args)
    require_sb3()
    trace = load_trace(args.trace)
    if args.requests > len(trace):
        raise ConfigError(f"--requests is {args.requests} but the trace has {len(trace)}.", field="--requests",
                          fix=f"give 1..{len(trace)}.")
    result = train(args.trace, objective=args.objective, steps=args.steps, seed=args.seed, n_envs=args.envs,
                   requests=args.requests, clients=args.clients, batch_size=args.batch_size,
                   cost_model=args.cost_model, load=args.load, levels=args.levels, eval_every=args.eval_every,
                   eval_episodes=args.eval_episodes)
    provenance = provenance_record(args, result)
    last = result.curve.iloc[-1]
    with out_dir(args) as tmp:
        save_model(tmp / "model.npz", result.weights, result.biases, activation="tanh", levels=result.levels,
                   provenance=provenance)
        result.curve.to_csv(tmp / "curve.csv", index=False)
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str) + "\n", encoding="utf-8")
        (tmp / "report.html").write_text(report_html("Training curve", [
            ("Setting", json.dumps(provenance["settings"], default=str)),
            ("Held-out evaluation against decisions trained on", curve_figure(result.curve, args.objective)),
            ("Curve", result.curve)]), encoding="utf-8")
    figure = "gap to the lower bound" if args.objective == "makespan" else "goodput"
    value = last["eval_gap_mean"] if args.objective == "makespan" else last["eval_goodput_mean"]
    print(f"learned ({args.objective}): {args.steps} decisions in {result.seconds:.0f} s; held-out {figure} "
          f"{value:.2%} (mean of {len(range(*result.settings['eval_seeds']))} episodes); wrote {args.out}/model.npz "
          f"and {args.out}/curve.csv")
    return 0


def provenance_record(args: argparse.Namespace, result) -> dict:
    """How the model was made: the command line, its settings, the date, the versions, the training time."""
    import gymnasium
    import stable_baselines3
    import torch

    from workbench._version import __version__

    return {"command": "workbench learn " + " ".join(shlex.quote(a) for a in sys.argv[2:])
            if len(sys.argv) > 1 and sys.argv[1] == "learn" else "workbench learn (called from Python)",
            "settings": output_writer(args)["settings"], "train": result.settings,
            "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "training_seconds": round(result.seconds, 1),
            "versions": {"workbench": __version__, "stable_baselines3": stable_baselines3.__version__,
                         "torch": torch.__version__, "gymnasium": gymnasium.__version__,
                         "python": platform.python_version()}}
