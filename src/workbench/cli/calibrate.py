"""``workbench calibrate``: a cost-model preset from measured operator profiles."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from workbench._paths import write_atomically
from workbench.cli._common import print_table
from workbench.errors import ConfigError


def _write_json(path: Path, data: dict) -> None:
    """Write beside the target and rename, so a failure leaves no half-written preset."""
    from workbench.costmodel.profiled import preset_json

    write_atomically(path, preset_json(data).encode("utf-8"))


def _check_out(path: str | None, option: str) -> Path | None:
    if path is None:
        return None
    out = Path(path)
    if out.suffix.lower() != ".json":
        raise ConfigError(f"'{path}' does not end in .json.", field=option, fix="name the preset file NAME.json.")
    if out.is_dir():
        raise ConfigError(f"'{path}' is a folder.", field=option, fix="give the path of a .json file.")
    return out


def cmd_calibrate_run(args) -> int:
    """``--run``: the overhead terms of ``--cost-model`` fitted to a measured serving run, through the engine."""
    from workbench.studies.fidelity import calibrate_run, errors_frame

    if args.profile is not None:
        raise ConfigError("give --profile or --run, not both.", field="--run",
                          fix="calibrate the kernels from a profile first, then the overheads from a run.")
    if args.cost_model is None:
        raise ConfigError("--run fits the overheads of a cost model: which one?", field="--cost-model",
                          fix="give --cost-model PRESET (e.g. one written by calibrate --profile).")
    out = _check_out(args.out, "--out")
    fitted, report = calibrate_run(args.run, args.cost_model)
    print(f"{getattr(fitted, 'name', 'custom')}: per-iteration overhead {report['iteration_overhead_s'] * 1e3:.3f} ms, "
          f"per-request front-end overhead {report['frontend_overhead_s'] * 1e3:.1f} ms, fitted through the engine "
          f"to {args.run}")
    print_table(errors_frame(report["errors"]))
    if out is not None:
        data = {**fitted.to_dict(), "calibrated_from_run": {k: report[k] for k in
                                                            ("run", "base", "iteration_overhead_s",
                                                             "frontend_overhead_s")}}
        _write_json(out, data)
        print(f"wrote {out}")
    if args.json:
        print(json.dumps(report, default=str))
    return 0


def _link(args):
    """The link the all-reduces are priced over: --cluster-config's declared one, else the --link-* flags on
    top of the PCIe 5.0 x16 guess (said loudly by :func:`_warn_if_guessed`)."""
    from workbench.costmodel.calibrate import PCIE5_X16, LinkModel, cluster_link, read_cluster_config

    flags = (("--link-bandwidth-gbps", args.link_bandwidth_gbps), ("--link-latency-us", args.link_latency_us),
             ("--link-efficiency", args.link_efficiency))
    for key, value in flags:
        if value is not None and not value > 0:
            raise ConfigError(f"{value} is not > 0.", field=key, fix="give a positive number.")
    given = [key for key, value in flags if value is not None]
    if args.cluster_config is not None:
        if given:
            raise ConfigError(f"{given[0]} and --cluster-config both give the link.", field=given[0],
                              fix="give the link once: the cluster configuration or the --link-* flags.")
        return cluster_link(read_cluster_config(args.cluster_config))
    link = LinkModel(
        name=PCIE5_X16.name if args.link_bandwidth_gbps is None else f"link of {args.link_bandwidth_gbps:g} GB/s",
        bandwidth_bytes_per_s=(args.link_bandwidth_gbps or PCIE5_X16.bandwidth_bytes_per_s / 1e9) * 1e9,
        efficiency=args.link_efficiency or PCIE5_X16.efficiency,
        latency_s=(args.link_latency_us if args.link_latency_us is not None else PCIE5_X16.latency_s * 1e6) * 1e-6,
        source="flags (" + ", ".join(given) + ")" if given else "assumed")
    return link


def _expert_parallel(args) -> int:
    """--ep, else the cluster configuration's ep_size (its first instance), else 1."""
    if args.ep is not None:
        if args.ep < 1:
            raise ConfigError(f"--ep {args.ep} is below 1.", field="--ep", fix="give the expert-parallel degree.")
        return int(args.ep)
    if args.cluster_config is not None:
        from workbench.costmodel.calibrate import read_cluster_config

        sizes = [inst.get("ep_size") for inst in read_cluster_config(args.cluster_config)["instances"]]
        sizes = [int(v) for v in sizes if isinstance(v, int) and not isinstance(v, bool) and v >= 1]
        return sizes[0] if sizes else 1
    return 1


def _warn_if_guessed(args, link) -> None:
    """At TP > 1, say loudly (stderr) which figures of the link nobody gave; after the fit, so that an error
    stays one line."""
    import sys

    guessed = [key for key, value in (("--link-bandwidth-gbps", args.link_bandwidth_gbps),
                                      ("--link-latency-us", args.link_latency_us)) if value is None]
    if args.tp > 1 and args.cluster_config is None and guessed:
        print(f"WARNING: the TP {args.tp} all-reduces are priced over a link nobody measured: "
              f"{', '.join(guessed)} assumed ({link.describe()}). Give --cluster-config FILE (the run's "
              "link_bw GB/s and link_latency ns) or --link-bandwidth-gbps and --link-latency-us.", file=sys.stderr)


def cmd_calibrate(args) -> int:
    from workbench.costmodel.calibrate import ProfileSettings, fit_profile

    if args.run is not None:
        return cmd_calibrate_run(args)
    if args.profile is None:
        raise ConfigError("nothing to calibrate from.", field="--profile",
                          fix="give --profile DIR (an operator-profile folder with meta.yaml and tp<N>/), or "
                              "--run RUN --cost-model PRESET.")
    if args.model is None:
        raise ConfigError("--profile needs the model whose kernels it holds.", field="--model",
                          fix="give --model, e.g. meta-llama/Llama-3.1-8B (the model: of meta.yaml).")
    out = _check_out(args.out, "--out")
    linear_out = _check_out(args.linear_out, "--linear-out")
    link = _link(args)
    cost_model, report = fit_profile(args.profile, args.model, tp=args.tp, layers=args.layers, name=args.name,
                                     settings=ProfileSettings(link=link, expert_parallel=_expert_parallel(args)),
                                     device=args.device)
    _warn_if_guessed(args, link)
    if report.get("source") == "vidur":
        if linear_out is not None:
            raise ConfigError("a Vidur profile gives the linear model only.", field="--linear-out",
                              fix="drop --linear-out; --out is the linear preset.")
        print(f"{cost_model.name}: linear fit to Vidur's operator profile")
        print_table(pd.DataFrame([report["linear"]]).T.rename(columns={0: "value"}))
        if out is not None:
            _write_json(out, {**cost_model.to_dict(), "fit": report["linear"]})
            print(f"wrote {out}")
        return 0

    terms = pd.DataFrame(report["terms"]).T.drop(columns=["note"])
    print(f"{cost_model.name}: {cost_model.description}")
    if args.tp > 1:
        print(f"link: {link.describe()}")
    print("profiled model, per term (interpolation; held out = each interior grid point predicted from its "
          "neighbours):")
    print_table(terms)
    lin = report["linear"]
    print("linear model of the same profile: R^2 prefill {:.4f}, decode {:.4f}; held-out mean/max error "
          "prefill {:.1%}/{:.1%}, decode {:.1%}/{:.1%}".format(
              lin["r2_prefill"], lin["r2_decode"], lin["heldout_mean_rel_error_prefill"],
              lin["heldout_max_rel_error_prefill"], lin["heldout_mean_rel_error_decode"],
              lin["heldout_max_rel_error_decode"]))
    print("  coefficients (ms): " + ", ".join(f"{k}={v:.5g}" for k, v in lin["coefficients_ms"].items()))
    bound = report["bound"]
    print("linear lower envelope (for bounds): " + ", ".join(f"{k}={v:.5g}" for k, v in bound["coefficients_ms"].items())
          + f" ms; mean share of the profiled time: prefill {bound['prefill_mean_ratio']:.1%}, "
            f"decode {bound['decode_mean_ratio']:.1%}")
    sanity = report["sanity_ms"]
    print("iteration times (ms): " + "; ".join(f"{k.replace('_', ' ')}: {v:.2f}" for k, v in sanity.items()))
    if cost_model.kv_capacity_tokens is not None:
        print(f"kv_capacity_tokens: {cost_model.kv_capacity_tokens:,} (derived, see provenance)")
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k not in ("rows", "linear_model")}, indent=1))
    if out is not None:
        _write_json(out, cost_model.to_dict())
        print(f"wrote {out}")
    if linear_out is not None:
        _write_json(linear_out, report["linear_model"].to_dict())
        print(f"wrote {linear_out}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("calibrate", help="fit a cost-model preset to measured operator profiles",
                              description="Fit a cost model to operator profiles: an LLMServingSim/vLLM profile "
                                          "folder (meta.yaml + tp<N>/dense.csv, attention.csv, per_sequence.csv) "
                                          "gives an interpolated ('profiled') preset and its linear fit; a Vidur "
                                          "profiling folder (compute/<device>/.../mlp.csv) gives today's linear "
                                          "preset.")
    p.add_argument("--profile", default=None, metavar="DIR", help="the profile folder, e.g. "
                   "../shared/data/llmservingsim/profiles/RTXPRO6000/Llama-3.1-8B")
    p.add_argument("--run", default=None, metavar="RUN",
                   help="a measured serving run (meta.json + requests.jsonl): fit --cost-model's per-iteration and "
                        "per-request front-end overheads to it through the engine")
    p.add_argument("--cost-model", default=None, help="with --run: the preset whose overheads are fitted")
    p.add_argument("--model", default=None, help="Hugging Face model id, e.g. meta-llama/Llama-3.1-8B")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel degree (a tp<N>/ folder of the profile)")
    p.add_argument("--layers", type=int, default=None,
                   help="decoder layers (default: from data/models/shapes.json)")
    p.add_argument("--device", default=None, help="Vidur profiles only: the device folder (a100, h100, ...)")
    p.add_argument("--name", default=None, help="the preset's name (default: <model>-<gpu>-tp<N>)")
    p.add_argument("--out", default=None, metavar="PRESET.json", help="write the preset here")
    p.add_argument("--linear-out", default=None, metavar="LINEAR.json",
                   help="also write the linear fit (for the closed-form engine and the MIP)")
    p.add_argument("--ep", type=int, default=None,
                   help="mixture of experts: expert parallelism over this many data-parallel replicas (default: "
                        "the cluster configuration's ep_size, else 1)")
    p.add_argument("--cluster-config", default=None, metavar="FILE",
                   help="TP > 1: LLMServingSim's cluster configuration (config.json); its link_bw (GB/s) and "
                        "link_latency (ns) price the all-reduces as ASTRA-Sim does (default: none, the link is "
                        "assumed and said so)")
    p.add_argument("--link-bandwidth-gbps", type=float, default=None,
                   help="TP > 1: link bandwidth per direction, GB/s (default: PCIe 5.0 x16, 63)")
    p.add_argument("--link-latency-us", type=float, default=None,
                   help="TP > 1: latency per collective, microseconds (default 15)")
    p.add_argument("--link-efficiency", type=float, default=None,
                   help="TP > 1: fraction of the link bandwidth reached (default 0.75)")
    p.add_argument("--json", action="store_true", help="also print the whole report as JSON")
    p.set_defaults(func=cmd_calibrate)
