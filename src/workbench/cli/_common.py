"""What the commands share: the instance options, policy parameters, running a simulation, printing a table."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import pandas as pd

from workbench.errors import ConfigError


def policy_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in getattr(args, "param", None) or []:
        if "=" not in item:
            raise ConfigError(f"'{item}' is not KEY=VALUE.", field="--param", fix="write e.g. --param mu=2.")
        key, value = item.split("=", 1)
        # Kept as text: the policy's typed schema (workbench.policies.registry.check_params) parses it,
        # so `steal=no` is False and `mue=5` is refused with the known names.
        params[key.strip()] = value.strip()
    if getattr(args, "mu", None) is not None:
        params["mu"] = args.mu
    if getattr(args, "model", None) is not None:
        params["model"] = args.model  # the learned rule's model file
    return params


def _batch_size(text: str):
    parts = str(text).split(",")
    if not str(text).strip():
        raise argparse.ArgumentTypeError("is empty; give an integer or a comma-separated list of integers")
    empty = [k for k, p in enumerate(parts) if not p.strip()]
    if empty:
        raise argparse.ArgumentTypeError(f"'{text}' has an empty item at position {empty[0] + 1}; give an integer "
                                         "or a comma-separated list of integers, e.g. 16,16,32")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer or a comma-separated list of integers") from None
    return values[0] if len(values) == 1 else values


def policy_name(text: str) -> str:
    """A registered policy name, checked while the line is parsed: a typo is named before "--out required"."""
    from workbench.policies.registry import POLICIES

    if text not in POLICIES:
        raise argparse.ArgumentTypeError(f"unknown policy '{text}'; use one of {', '.join(POLICIES)} "
                                         "(workbench policies describes them)")
    return text


def add_instance_arguments(p: argparse.ArgumentParser, *, policy: bool = True) -> None:
    """The options every command that builds a schedule shares."""
    p.add_argument("--trace", default="gsm8k-test", help="a shipped trace name (see `workbench trace list`) or a file")
    p.add_argument("--prompt-column", default=None, help="use this column of the trace as input_tokens")
    # --format names the output format (csv, parquet) where a command writes a schedule; the trace's is this.
    p.add_argument("--trace-format", default=None, help="the trace file's format: workbench, azure, vidur, vllm, "
                   "mooncake (default: detected from the columns)")
    p.add_argument("--clients", type=int, default=8, help="number of clients (model replicas)")
    p.add_argument("--batch-size", type=_batch_size, default=16, help="batch capacity B, or one per client: 16,16,32")
    p.add_argument("--cost-model", default="llama-65b", help="a preset name (see `workbench presets`) or a JSON file")
    p.add_argument("--kv-capacity", "--kv-capacity-tokens", dest="kv_capacity", default=None,
                   help="KV-cache capacity per client in tokens, or 'preset' for the preset's value")
    if policy:
        add_engine_arguments(p)
        p.add_argument("--policy", type=policy_name, default="paper-baseline",
                       help="a policy name (see `workbench policies`)")
        p.add_argument("--dispatch", default=None, help="override the policy's dispatcher")
        p.add_argument("--order", default=None, help="override the policy's queue order")
        p.add_argument("--rule", default=None, help="override the policy's iteration rule (e.g. learned)")
        p.add_argument("--model", default=None, metavar="PATH",
                       help="the learned rule's model (.npz from `workbench learn`; default: the shipped one)")
        p.add_argument("--mu", type=float, default=None, help="price multiplier of the Lagrangian rule")
        p.add_argument("--param", action="append", metavar="KEY=VALUE", help="another policy parameter")
        p.add_argument("--predictor", default=None,
                       help="output lengths the schedulers see: exact, noisy:SPREAD[:SEED], bucketed:N "
                            "(default: exact; the simulator always runs the true lengths)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """How the engine forms iterations and holds KV memory (default: the policy's; MODEL.md section 11)."""
    g = p.add_argument_group("engine", "override the policy's engine options (see `workbench policies`)")
    g.add_argument("--iteration", choices=("exclusive", "mixed"), default=None,
                   help="exclusive: a prefill or a decode stage per iteration (the paper's); mixed: decodes plus "
                        "prompt chunks up to the token budget (vLLM V1, Sarathi-Serve)")
    g.add_argument("--token-budget", type=_positive, default=None,
                   help="mixed iterations: tokens per iteration, decodes included (vLLM max_num_batched_tokens)")
    g.add_argument("--max-partial-prefills", type=_positive, default=None,
                   help="mixed iterations: prompts that may be part-way through at once; above 1 it needs "
                        "--long-prefill-token-threshold (without a cap at most one prompt is part-way)")
    g.add_argument("--long-prefill-token-threshold", type=_positive, default=None,
                   help="mixed iterations: the most prompt tokens one request computes per iteration (vLLM's "
                        "long_prefill_token_threshold; default no cap)")
    for flag, vllm_name in (("cache-at-schedule", "blocks cached when scheduled, generated blocks hashed"),
                            ("full-prompt-admission", "admit only if the whole prompt's blocks are free: "
                                                      "scheduler_reserve_full_isl"),
                            ("async-scheduling", "a request queued during step t joins t+2; freed slots "
                                                 "usable from t+2")):
        g.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=None,
                       help=f"mixed iterations, vLLM V1 semantics (on in the vllm policy): {vllm_name}")
    g.add_argument("--kv-mode", choices=("reserve", "paged"), default=None,
                   help="reserve: l+o tokens held from admission; paged: blocks allocated as contexts grow, "
                        "recompute preemption when none is free (vLLM)")
    g.add_argument("--block-size", type=_positive, default=None, help="paged KV: tokens per block (vLLM: 16)")
    g.add_argument("--prefix-caching", action=argparse.BooleanOptionalAction, default=None,
                   help="paged KV: skip the prefill of cached prompt blocks (trace columns prefix_id and "
                        "prefix_tokens, or prefix_hashes)")


def add_pool_arguments(p: argparse.ArgumentParser) -> None:
    """Prefill and decode pools with the KV cache moved between them (MODEL.md section 11.11); --clients is then
    the pools' size."""
    g = p.add_argument_group("pools", "disaggregated serving: prefill replicas, decode replicas, the link between")
    g.add_argument("--prefill-replicas", type=_positive, default=None, help="replicas that only prefill")
    g.add_argument("--decode-replicas", type=_positive, default=None, help="replicas that only decode")
    g.add_argument("--link", default=None, help="the link KV caches move over: nvlink, pcie, rdma, infinite "
                                                "(default nvlink)")
    g.add_argument("--transfer-overlap", action=argparse.BooleanOptionalAction, default=None,
                   help="decode replicas compute while transfers into them run (default: on)")
    g.add_argument("--prefill-router", default=None, help="round-robin, least-work or offline (default: the "
                                                          "policy's dispatcher where it is one of them)")
    g.add_argument("--decode-router", default=None, help="round-robin, least-work or offline")
    g.add_argument("--kv-bytes-per-token", type=float, default=None,
                   help="a replica's KV bytes per token (default: from the preset's model shape)")


def pool_options(args) -> dict[str, Any]:
    """``{"pools": {...}}`` from the command line, or ``{}`` when no pool option is given."""
    given = {k: getattr(args, k, None) for k in ("prefill_replicas", "decode_replicas", "link", "transfer_overlap",
                                                 "prefill_router", "decode_router", "kv_bytes_per_token")}
    if all(v is None for v in given.values()):
        return {}
    for flag in ("prefill_replicas", "decode_replicas"):
        if given[flag] is None:
            raise ConfigError(f"--{flag.replace('_', '-')} is missing.", field=f"--{flag.replace('_', '-')}",
                              fix="give both --prefill-replicas and --decode-replicas with any pool option.")
    pools = {"prefill": given["prefill_replicas"], "decode": given["decode_replicas"],
             "link": given["link"] or "nvlink", "prefill_router": given["prefill_router"],
             "decode_router": given["decode_router"], "kv_bytes_per_token": given["kv_bytes_per_token"]}
    if given["transfer_overlap"] is not None:
        pools["overlap"] = given["transfer_overlap"]
    return {"pools": pools}


def add_controller_arguments(p: argparse.ArgumentParser) -> None:
    """A fleet that grows and shrinks with the load (MODEL.md section 11.5); --clients is the starting fleet."""
    g = p.add_argument_group("autoscaling", "a controller that adds and drains replicas while the trace runs")
    g.add_argument("--controller", default=None,
                   help="fixed, threshold, target-utilisation or slo (default: none, a fixed fleet as before)")
    g.add_argument("--controller-param", action="append", metavar="KEY=VALUE", default=None,
                   help="a controller parameter, e.g. ttft_slo_s=0.5 (slo), high=4 (threshold), target=0.7")
    g.add_argument("--min-replicas", type=_positive, default=1, help="fewest replicas the controller keeps")
    g.add_argument("--max-replicas", type=_positive, default=16, help="most replicas the controller holds")
    g.add_argument("--control-period", type=float, default=5.0, help="seconds between two control decisions")
    g.add_argument("--startup", type=float, default=None,
                   help="seconds a new replica loads before it serves (default: the preset's weight bytes over "
                        "--load-bandwidth per GPU, plus 30 s)")
    g.add_argument("--load-bandwidth", type=float, default=2.0, help="GB/s per GPU at which weights load")
    g.add_argument("--scale-down-after", type=float, default=120.0,
                   help="seconds the controller must want fewer replicas before one is drained")
    g.add_argument("--cooldown", type=float, default=60.0, help="seconds after a scaling action before a scale-down")


def controller_options(args) -> dict[str, Any]:
    """``simulate``'s controller arguments from the command line (empty without --controller)."""
    if getattr(args, "controller", None) is None:
        return {}
    from workbench.policies.controllers import Autoscaling

    params = {}
    for item in args.controller_param or []:
        if "=" not in item:
            raise ConfigError(f"'{item}' is not KEY=VALUE.", field="--controller-param",
                              fix="write e.g. --controller-param ttft_slo_s=0.5.")
        key, value = item.split("=", 1)
        params[key.strip()] = value.strip()
    settings = Autoscaling(period_s=args.control_period, min_replicas=args.min_replicas,
                           max_replicas=args.max_replicas, startup_s=args.startup,
                           load_bandwidth_bytes_per_s=args.load_bandwidth * 1e9,
                           scale_down_after_s=args.scale_down_after, scale_down_cooldown_s=args.cooldown)
    return {"controller": args.controller, "controller_params": params, "autoscaling": settings}


def engine_options(args) -> dict[str, Any]:
    """The engine options given on the command line (None: the policy's)."""
    return {"iteration": getattr(args, "iteration", None), "token_budget": getattr(args, "token_budget", None),
            "max_partial_prefills": getattr(args, "max_partial_prefills", None),
            "kv": getattr(args, "kv_mode", None), "block_size": getattr(args, "block_size", None),
            "prefix_caching": getattr(args, "prefix_caching", None),
            **{name: getattr(args, name, None) for name in ("long_prefill_token_threshold", "cache_at_schedule",
                                                             "full_prompt_admission", "async_scheduling")}}


def _kv(args) -> Any:
    if args.kv_capacity in (None, "preset"):
        return args.kv_capacity
    try:
        return int(args.kv_capacity)
    except ValueError:
        raise ConfigError(f"'{args.kv_capacity}' is not a number of tokens.", field="--kv-capacity",
                          fix="give an integer, or 'preset'.") from None


def load_instance(args):
    from workbench._checks import batch_size_option, positive_int
    from workbench.costmodel.linear import load_preset
    from workbench.workload.trace import load_trace

    # Ranges first (one line each, before any allocation): --clients 10**12 must not reach numpy.
    args.clients = positive_int(args.clients, "clients")
    args.batch_size = batch_size_option(args.batch_size)
    trace = load_trace(args.trace, prompt_column=args.prompt_column, format=getattr(args, "trace_format", None))
    return trace, load_preset(args.cost_model)


def checked_params(policy: str, params: dict[str, Any], *, dispatch: str | None = None,
                   rule: str | None = None) -> dict[str, Any]:
    """``params`` typed by the schema of ``policy`` (a simulator policy or a chunked-prefill one)."""
    from workbench.engine.chunked import CHUNKED_POLICIES
    from workbench.policies.registry import check_params, resolve_policy

    if policy in CHUNKED_POLICIES:
        parts = [("engine", "chunked"), ("dispatch", dispatch or CHUNKED_POLICIES[policy].dispatch)]
        return check_params(params, parts, policy=policy)
    return resolve_policy(policy, dispatch=dispatch, rule=rule, **params).params if params else {}


def params_for(policy: str, params: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``params`` that ``policy`` takes (``compare`` gives one set to several policies)."""
    from workbench.engine.chunked import CHUNKED_POLICIES
    from workbench.policies.registry import PART_PARAMS, POLICIES, policy_parts

    if policy in CHUNKED_POLICIES:
        parts = [("engine", "chunked"), ("dispatch", CHUNKED_POLICIES[policy].dispatch)]
    elif policy in POLICIES:
        parts = policy_parts(POLICIES[policy])
    else:
        return params
    takes = {k for part in parts for k in PART_PARAMS.get(part, ())}
    return {k: v for k, v in params.items() if k in takes}


def simulate_any(trace, clients, batch_size, policy: str, cost_model, *, dispatch=None, order=None, rule=None,
                 kv_capacity_tokens=None, predictor=None, engine: dict[str, Any] | None = None,
                 controlled: dict[str, Any] | None = None, workers: int | None = None, **params):
    """:func:`workbench.engine.simulate` with the command line's engine options (one engine for every policy).

    ``params`` are checked against the policy's typed schema first (unknown keys refused, text parsed), and
    the work is estimated before anything runs (:func:`workbench.schedule.estimate.check_work`).
    """
    from workbench._checks import cost_models as _models
    from workbench.engine.core import simulate
    from workbench.policies.registry import POLICIES
    from workbench.schedule.estimate import check_work

    options = {k: v for k, v in (engine or {}).items() if v is not None}
    params = checked_params(policy, params, dispatch=dispatch, rule=rule) if params else {}
    iteration = options.get("iteration") or (POLICIES[policy].engine.get("iteration") if policy in POLICIES else None)
    check_work(trace, clients, batch_size, export=True, stepped=iteration == "mixed",
               cost_models=_models(cost_model, 1) if not isinstance(cost_model, (list, tuple)) else
               _models(cost_model, len(cost_model)))
    return simulate(trace, clients, batch_size, policy, cost_model, dispatch=dispatch, order=order, rule=rule,
                    kv_capacity_tokens=kv_capacity_tokens, predictor=predictor, **options, **(controlled or {}),
                    workers=workers, **params)


def run_simulation(args, policy: str | None = None):
    trace, cost_model = load_instance(args)
    pooled = pool_options(args)
    controlled = {**controller_options(args), **pooled}
    clients = args.clients
    if pooled:
        if clients != 8:  # 8: the default, left as it is
            raise ConfigError("--clients is the pools' size with --prefill-replicas and --decode-replicas.",
                              field="--clients", fix="leave --clients out.")
        clients = pooled["pools"]["prefill"] + pooled["pools"]["decode"]
    return trace, simulate_any(trace, clients, args.batch_size, policy or args.policy, cost_model,
                               dispatch=getattr(args, "dispatch", None), order=getattr(args, "order", None),
                               rule=getattr(args, "rule", None), kv_capacity_tokens=_kv(args),
                               predictor=getattr(args, "predictor", None), engine=engine_options(args),
                               controlled=controlled, workers=getattr(args, "workers", None), **policy_params(args))


def print_table(table: pd.DataFrame, *, file=None) -> None:
    """``table`` in display units (:func:`workbench._units.display_units`: shares in percent)."""
    from workbench._units import display_units

    table = display_units(table)
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.float_format", "{:,.4f}".format):
        print(table.to_string(na_rep=""), file=file or sys.stdout)  # no value (a profiled preset's a_p): blank


#: Options that change how a command runs or prints, not what it writes: a rerun differing only in
#: these may replace its own output folder.
NOT_SETTINGS = frozenset({"func", "command", "out", "force", "json", "workers", "scheduler"})


def output_writer(args: argparse.Namespace) -> dict[str, Any]:
    """The command and its settings, as recorded in an output folder's marker (JSON-normal, so one read back
    compares equal).  Computed once per run, before any option is normalised in place."""
    cached = getattr(args, "_writer", None)
    if cached is None:
        settings = {k: v for k, v in sorted(vars(args).items()) if k not in NOT_SETTINGS and not k.startswith("_")}
        cached = json.loads(json.dumps({"command": getattr(args, "command", None), "settings": settings}, default=str))
        args._writer = cached
    return cached


def add_force_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="replace --out even if another command, or this one with other settings, wrote it")


def check_out(args: argparse.Namespace) -> None:
    """Refuse --out before any work when this run may not replace it (one line, exit 2, nothing touched)."""
    from workbench.schedule.schema import check_replace

    if getattr(args, "out", None):
        check_replace(args.out, output_writer(args), getattr(args, "force", False))


def out_dir(args: argparse.Namespace):
    """:func:`workbench.schedule.schema.atomic_dir` for --out, recording this command and its settings."""
    from workbench.schedule.schema import atomic_dir

    return atomic_dir(args.out, writer=output_writer(args), force=getattr(args, "force", False))
