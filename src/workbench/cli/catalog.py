"""``workbench trace``, ``presets`` and ``policies``: what is shipped and registered."""

from __future__ import annotations

import json

import pandas as pd

from workbench.cli._common import print_table
from workbench.errors import ConfigError


def cmd_trace(args) -> int:
    from workbench.workload.trace import NAMED_TRACES, load_trace

    if args.trace_command == "list":
        for name, (filename, column) in NAMED_TRACES.items():
            print(f"{name:20s} data/traces/{filename} (input_tokens from {column})")
        return 0
    if args.trace_command == "info":
        from workbench.workload.formats import describe_trace

        trace = load_trace(args.name, format=args.format)
        info = describe_trace(trace)
        for column in info["tokens"].values():  # counts of tokens are whole numbers: 24, never 24.0000
            column.update({k: int(column[k]) for k in ("min", "max", "total") if k in column})
        if args.json:
            print(json.dumps(info, indent=2))
            return 0
        rate = f", {info['rate_per_s']:.3g} requests/s" if info["arrival_span_s"] > 0 else " (all at t=0)"
        print(f"{args.name}: format {info['format']}, {info['requests']} requests, arrivals over "
              f"{info['arrival_span_s']:.6g} s{rate}")
        stats = pd.DataFrame(info["tokens"]).T[["mean", "p50", "p90", "p99", "min", "max", "total"]]
        print_table(stats.astype({"min": "int64", "max": "int64", "total": "int64"}))
        prefix = info["prefix"]
        if prefix:
            print(f"prefix sharing ({prefix['kind']}): {prefix['distinct']} distinct, "
                  f"{prefix['requests_sharing']} requests reuse a prefix; {prefix['reusable_prompt_tokens']:,} "
                  f"prompt tokens ({prefix['reusable_fraction']:.1%}) reusable with an unbounded cache")
        if info["extra_columns"]:
            print("extra columns: " + ", ".join(info["extra_columns"]))
        return 0
    if args.trace_command == "build-gsm8k":
        from workbench.workload import gsm8k as gsm8k

        argv = []
        for flag, value in (("--gsm8k-dir", args.gsm8k_dir), ("--tokenizer", args.tokenizer), ("--out", args.out)):
            if value:
                argv += [flag, str(value)]
        return int(gsm8k.main(argv) or 0)
    raise ConfigError("unknown trace command.", fix="use list, info or build-gsm8k.")


#: The unit each coefficient is shown in by ``workbench presets``: each a few digits before the point
#: (the per-stage costs are milliseconds, the per-token ones micro- or nanoseconds).
PRESET_TABLE_UNITS = {"a_p": "ms", "b_p": "us", "a_d": "ms", "b_d": "us", "c_d": "ns"}
PRESET_TABLE_SCALE = {"ms": 1e3, "us": 1e6, "ns": 1e9}


def cmd_presets(args) -> int:
    from workbench.costmodel.linear import COEFFICIENT_UNITS, list_presets, load_preset

    if args.name:
        record = load_preset(args.name).to_dict()
        text = json.dumps(record, indent=2)
        print(text if args.json else _preset_summary(record, lines=text.count("\n") + 1))
        return 0
    rows = []
    for name in list_presets():
        m = load_preset(name)
        coefficients = m.coefficients()
        rows.append({"preset": name, "kind": "linear" if coefficients else "profiled",
                     **{f"{k}_{unit}": v * PRESET_TABLE_SCALE[unit] for k, v in coefficients.items()
                        for unit in [PRESET_TABLE_UNITS[k]]},
                     "kv_capacity_tokens": m.kv_capacity_tokens})
    table = pd.DataFrame(rows).set_index("preset") if rows else pd.DataFrame()
    print("coefficients: " + ", ".join(f"{k}_{PRESET_TABLE_UNITS[k]}: {u.replace('s per', PRESET_TABLE_UNITS[k] + ' per', 1)}"
                                       for k, u in COEFFICIENT_UNITS.items())
          + "; profiled presets interpolate measured kernel tables (workbench presets NAME shows them)")
    print_table(table)
    return 0


def _preset_summary(record: dict, *, lines: int) -> str:
    """A preset in a dozen lines: what it is, its coefficients with units, where it came from (--json: all)."""
    from workbench.costmodel.linear import COEFFICIENT_UNITS

    out = [f"{record['name']}: {record.get('kind', 'linear')} cost model", f"  {record.get('description', '')}"]
    for key, meaning in COEFFICIENT_UNITS.items():
        if key in record:
            unit = PRESET_TABLE_UNITS[key]
            out.append(f"  {key} = {record[key] * PRESET_TABLE_SCALE[unit]:.4g} {unit} "
                       f"({meaning.replace('s per', unit + ' per', 1)})")
    if record.get("kv_capacity_tokens") is not None:
        out.append(f"  KV-cache capacity: {record['kv_capacity_tokens']:,} tokens per client")
    tables = [k for k in ("dense", "per_sequence", "attention") if k in record]
    if tables:
        out.append(f"  measured tables: {', '.join(tables)} ({len(record.get('attention', []))} attention points); "
                   "the bound model below them: " + ", ".join(f"{k}={v:.4g}" for k, v in record.get("bound", {}).items()
                                                              if isinstance(v, float)))
    provenance = record.get("provenance") or {}
    for key in ("method", "source", "script"):
        if isinstance(provenance.get(key), str):
            out.append(f"  {key}: {provenance[key]}")
    out.append(f"  (--json prints the whole record, {lines:,} lines: provenance, derivation{', tables' * bool(tables)})")
    return "\n".join(out)


def cmd_policies(args) -> int:
    from workbench.policies.registry import POLICIES

    for name, p in POLICIES.items():
        engine = ", ".join(f"{k}={v}" for k, v in p.engine.items()) or "iteration=exclusive, kv=reserve"
        print(f"{name:18s} dispatch={p.dispatch}, order={p.order}, rule={p.rule}; {engine}\n{'':18s} {p.description}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("trace", help="list, inspect or build traces")
    tsub = p.add_subparsers(dest="trace_command", required=True, metavar="ACTION")
    tsub.add_parser("list", help="the shipped traces")
    q = tsub.add_parser("info", help="format, arrivals, token statistics and prefix sharing of a trace")
    q.add_argument("name")
    q.add_argument("--format", default=None, help="workbench, azure, vidur, vllm, mooncake, token-ids (default: detected)")
    q.add_argument("--json", action="store_true", help="print the description as JSON")
    q = tsub.add_parser("build-gsm8k", help="derive the GSM8K token-count traces with the LLaMA tokenizer")
    q.add_argument("--gsm8k-dir", default=None)
    q.add_argument("--tokenizer", default=None)
    q.add_argument("--out", default=None)
    p.set_defaults(func=cmd_trace)

    p = subparsers.add_parser("presets", help="list the cost-model presets, or show one")
    p.add_argument("name", nargs="?", help="show this preset (a summary; --json for the whole record)")
    p.add_argument("--json", action="store_true", help="with NAME: print the whole preset as JSON")
    p.set_defaults(func=cmd_presets)

    p = subparsers.add_parser("policies", help="list the registered policies")
    p.set_defaults(func=cmd_policies)
