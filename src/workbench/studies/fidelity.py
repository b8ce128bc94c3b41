"""Fidelity to a real engine: replay a measured serving run through the ``vllm`` policy and compare, request by request.

A **run** is a folder as the shared LLMServingSim data lay it out:

* ``meta.json``: the engine's settings (``engine_kwargs``: ``max_num_seqs``,
  ``max_num_batched_tokens``, ``tensor_parallel_size``, ``data_parallel_size``,
  and where given ``block_size``, ``enable_prefix_caching``,
  ``enable_chunked_prefill``, ``max_num_partial_prefills``, ``num_gpu_blocks``
  or ``kv_cache_tokens``);
* ``requests.jsonl``: one request a line with ``input_toks``, ``output_toks`` and
  the engine's own clock: ``queued_ts``, ``first_token_ts``, ``last_token_ts``
  (read by :mod:`workbench.workload.formats`, format ``vllm``).

:func:`replay` maps the settings onto the ``vllm`` policy (vLLM V1's defaults
where ``meta.json`` is silent: block size 16, prefix caching and chunked prefill
on, one partial prefill), replays the arrivals (``queued_ts`` from the first) and
returns the simulated schedule; :func:`compare` puts predicted beside measured
TTFT, TPOT and end-to-end latency and :func:`error_table` gives the errors: the
relative error of the mean, p50, p90 and p99, and the per-request mean absolute
percentage error (MAPE).  Measured TTFT = ``first_token_ts - queued_ts``,
end-to-end = ``last_token_ts - queued_ts``, TPOT = ``(last - first) /
(output_toks - 1)``; the simulated ones are the same differences of the
simulated times.  Nothing here fits anything: the cost model comes in whole.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import ConfigError

METRICS = ("ttft_s", "tpot_s", "e2e_s")
METRIC_NAMES = {"ttft_s": "TTFT", "tpot_s": "TPOT", "e2e_s": "end-to-end"}
#: vLLM V1's defaults, used where the run records nothing (vLLM 0.19 ``SchedulerConfig``/``CacheConfig``).
VLLM_DEFAULTS = {"max_num_seqs": 256, "max_num_batched_tokens": 2048, "block_size": 16,
                 "enable_prefix_caching": True, "enable_chunked_prefill": True, "max_num_partial_prefills": 1,
                 "tensor_parallel_size": 1, "data_parallel_size": 1, "async_scheduling": True,
                 "scheduler_reserve_full_isl": True, "long_prefill_token_threshold": 0,
                 "enable_expert_parallel": False}
#: Where each setting may be recorded, most authoritative first: vLLM's resolved configuration (what the
#: engine ran with), the ``kv_cache`` summary, the engine arguments asked for, the file's top level.
SETTING_SOURCES = {
    "max_num_seqs": ("resolved_config.scheduler_config", "engine_kwargs", ""),
    "max_num_batched_tokens": ("resolved_config.scheduler_config", "engine_kwargs", ""),
    "enable_chunked_prefill": ("resolved_config.scheduler_config", "engine_kwargs", ""),
    "max_num_partial_prefills": ("resolved_config.scheduler_config", "engine_kwargs", ""),
    "async_scheduling": ("resolved_config.scheduler_config", "engine_kwargs", ""),
    "scheduler_reserve_full_isl": ("resolved_config.scheduler_config", "engine_kwargs", ""),
    "long_prefill_token_threshold": ("resolved_config.scheduler_config", "engine_kwargs", ""),
    "block_size": ("resolved_config.cache_config", "kv_cache", "engine_kwargs", ""),
    "enable_prefix_caching": ("resolved_config.cache_config", "kv_cache", "engine_kwargs", ""),
    "tensor_parallel_size": ("resolved_config.parallel_config", "engine_kwargs", ""),
    "data_parallel_size": ("resolved_config.parallel_config", "engine_kwargs", ""),
    "enable_expert_parallel": ("resolved_config.parallel_config", "engine_kwargs", ""),
}
#: Settings that may be 0 (vLLM: 0 = off).
ZERO_ALLOWED = {"long_prefill_token_threshold"}
#: The largest run read (requests.jsonl lines): a replay is seconds per thousand requests.
MAX_RUN_REQUESTS = 1_000_000
MAX_META_BYTES = 1 << 20


@dataclass
class ServingRun:
    """A measured serving run: its requests (with the measured times) and the engine settings."""

    path: Path
    trace: pd.DataFrame
    meta: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    assumed: list[str] = field(default_factory=list)
    #: setting -> where the run records it (meta.json's section and key, or config.json)
    read: dict[str, str] = field(default_factory=dict)
    cluster: dict[str, Any] | None = None  # RUN/config.json, when present (see cluster_settings)
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.meta.get("model", self.path.name))


def find_workload(path: Path, meta: dict[str, Any]) -> Path | None:
    """The file ``meta.json``'s ``dataset_path`` names, looked for in the run folder and beside it (the folder
    and up to three folders up, as LLMServingSim lays out ``runs/<gpu>/<model>/`` beside ``workloads/``)."""
    name = meta.get("dataset_path")
    if not isinstance(name, str) or not name.strip():
        return None
    relative = Path(name)
    for base in (path, *list(path.resolve().parents)[:3]):
        for candidate in (base / relative, base / relative.name):
            if candidate.is_file():
                return candidate
    return None


def attach_prefixes(trace: pd.DataFrame, workload: Path) -> pd.DataFrame:
    """The run's requests with the prefixes of its workload's token ids (``prefix_hashes``, vLLM's chained
    16-token block hashes), matched by order; refused when the two do not describe the same requests."""
    from workbench.workload.trace import load_trace

    inputs = load_trace(workload)
    if "prefix_hashes" not in inputs.columns:
        raise ConfigError(f"{workload} gives no prompt token ids (input_tok_ids) or prefix hashes.", field="workload",
                          fix="give the workload the run served, with its token ids (LLMServingSim workloads/).")
    if len(inputs) != len(trace):
        raise ConfigError(f"{workload} has {len(inputs):,} requests, the run {len(trace):,}.", field="workload",
                          fix="give the workload the run served (meta.json dataset_path).")
    block = int(inputs["prefix_block_tokens"].iloc[0]) if len(inputs) else 16
    prompt = trace["input_tokens"].to_numpy()
    hashes = []
    for k, text in enumerate(inputs["prefix_hashes"].tolist()):
        chain = text.split() if isinstance(text, str) else []
        hashes.append(" ".join(chain[:int(prompt[k]) // block]))  # a prompt served shorter keeps its full blocks
    return trace.assign(prefix_hashes=hashes, prefix_block_tokens=block)


def ideal_prefix_hits(trace: pd.DataFrame, block_tokens: int) -> int:
    """Prompt tokens a prefix cache of unbounded size would serve, in arrival order: each request hits the
    leading blocks some earlier request computed (at most all but its last token, which vLLM always
    computes); 0 without ``prefix_hashes``."""
    if "prefix_hashes" not in trace.columns:
        return 0
    seen: set[str] = set()
    hits = 0
    prompt = trace["input_tokens"].to_numpy()
    per = int(trace["prefix_block_tokens"].iloc[0]) if len(trace) else block_tokens
    for k in np.argsort(trace["arrival_s"].to_numpy(), kind="stable"):
        chain = trace["prefix_hashes"].iloc[k].split()
        n = 0
        while n < len(chain) and chain[n] in seen:
            n += 1
        hits += min(n * per, (int(prompt[k]) - 1) // block_tokens * block_tokens)
        seen.update(chain)
    return hits


def read_run(folder: str | Path, workload: str | Path | None = None) -> ServingRun:
    """Read a run folder (``meta.json`` + ``requests.jsonl``; ``RUN/config.json`` and the workload's token ids
    where found); refuse what cannot be replayed faithfully.

    ``workload``: the file of the requests' token ids (default: ``meta.json``'s ``dataset_path``, found in the
    run folder or beside it); their prefixes are replayed exactly (:func:`attach_prefixes`).
    """
    from workbench.workload.trace import load_trace

    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"'{folder}' is not a folder.", field="run",
                          fix="give a run folder holding meta.json and requests.jsonl.")
    for name in ("meta.json", "requests.jsonl"):
        if not (path / name).is_file():
            raise ConfigError(f"'{path}' has no {name}.", field=name,
                              fix="a run folder holds meta.json (the engine settings) and requests.jsonl.")
    from workbench._paths import read_json_object

    meta = read_json_object(path / "meta.json", field="meta.json", max_bytes=MAX_META_BYTES,
                            fix="give the meta.json the benchmark wrote.",
                            size_fix="give the run's settings file, not another file named meta.json.")
    trace = load_trace(path / "requests.jsonl", format="vllm")
    if len(trace) > MAX_RUN_REQUESTS:
        raise ConfigError(f"the run has {len(trace):,} requests, more than {MAX_RUN_REQUESTS:,}.", field="requests.jsonl",
                          fix="replay a part of it (first N lines).")
    for column in ("measured_ttft_s", "measured_e2e_s"):
        if column not in trace.columns:
            raise ConfigError(f"{path / 'requests.jsonl'} has no first_token_ts/last_token_ts: nothing to compare.",
                              field="first_token_ts", fix="give a run whose requests carry the engine's timestamps.")
    settings, assumed, read = engine_settings(meta)
    meta_notes = check_meta_against_run(meta, trace, settings)
    cluster, notes = None, [*meta_notes, "max_num_partial_prefills: vLLM V1's scheduler does not read it (several "
                            "prompts may be part-way, each within long_prefill_token_threshold); replayed without "
                            "a limit"]
    if (path / "config.json").is_file():
        cluster, more = cluster_settings(path / "config.json", settings)
        notes += more
        read["link"] = (f"config.json link_bw {cluster['link_bw_gbps']:g} GB/s, link_latency "
                        f"{cluster['link_latency_ns']:g} ns")
    else:
        assumed.append("link (no config.json: the cost model's)")
    if workload is not None and not Path(workload).is_file():
        from workbench._paths import missing_because

        raise ConfigError(f"'{workload}' {missing_because(Path(workload), folder=False)}.", field="--workload",
                          fix="give the workload the run served (a JSONL file with input_tok_ids).")
    source = Path(workload) if workload is not None else find_workload(path, meta)
    if source is not None:
        trace = attach_prefixes(trace, source)
        read["prefixes"] = f"{'--workload' if workload is not None else 'dataset_path'} {source}"
    else:
        assumed.append("prefixes (no workload with token ids found: no prompt shares a prefix)")
    return ServingRun(path=path, trace=trace, meta=meta, settings=settings, assumed=assumed, read=read,
                      cluster=cluster, notes=notes)


def check_meta_against_run(meta: dict[str, Any], trace: pd.DataFrame, settings: dict[str, Any]) -> list[str]:
    """Refuse a ``meta.json`` that contradicts the run it sits beside (issue 27 item 22): another run's
    settings would be replayed as this one's, and the errors measured against the wrong engine.  Returns
    notes for the report (fewer request lines than requests: the failed ones leave none)."""
    count, where = _recorded(meta, "num_requests", ("", "engine_kwargs"))
    notes = []
    if count is not None and count < len(trace):
        raise ConfigError(f"meta.json {where} is {count!r}, but requests.jsonl holds {len(trace):,} requests.",
                          field="num_requests", fix="give the meta.json of this run.")
    if count is not None and count > len(trace):  # requests that failed leave no line: said, not refused
        notes.append(f"meta.json {where} is {count:,}; requests.jsonl holds {len(trace):,}: the others left no "
                     "timestamps and are not replayed")
    limit, where = _recorded(meta, "max_model_len", ("resolved_config.model_config", "engine_kwargs", ""))
    if limit is not None:
        longest = trace["input_tokens"] + trace["output_tokens"]
        over = np.flatnonzero(longest.to_numpy() > limit)
        if len(over):
            k = int(over[0])
            raise ConfigError(f"meta.json {where} is {limit!r}, but request row {k} holds {int(longest.iloc[k]):,} "
                              "tokens: vLLM would have refused it.", field="max_model_len",
                              fix="give the meta.json of this run.")
    override, where = _recorded(meta, "num_gpu_blocks_override",
                                ("resolved_config.cache_config", "engine_kwargs", ""))
    blocks, blocks_where = _recorded(meta, "num_gpu_blocks", ("kv_cache", "resolved_config.cache_config"))
    if override is not None and blocks is not None and override != blocks:
        raise ConfigError(f"meta.json {where} is {override!r} but {blocks_where} is {blocks!r}: vLLM allocates "
                          "exactly the override.", field="num_gpu_blocks_override",
                          fix="give the meta.json of this run.")
    policy, where = _recorded(meta, "scheduling_policy", ("engine_kwargs", ""))
    if policy not in (None, "fcfs"):
        raise ConfigError(f"meta.json {where} is {policy!r}; the vllm policy replays FCFS only.",
                          field="scheduling_policy", fix="replay a run with vLLM's default policy (fcfs).")
    return notes


_TP_IN_DESCRIPTION = re.compile(r"\(TP (\d+)\)")


def check_cost_model_against_run(run: "ServingRun", cost_model) -> None:
    """Refuse a cost model of another model or another tensor-parallel degree than the run's (issue 27
    item 9: fidelity read tensor_parallel_size and ignored it).  A preset states both in its description
    (``"meta-llama/Llama-3.1-8B on 2 x GPU (TP 2)"``) and its provenance; one that states neither is not checked."""
    description = str(getattr(cost_model, "description", "") or "")
    provenance = getattr(cost_model, "provenance", None) or {}
    name = getattr(cost_model, "name", "the cost model")
    tp = run.settings["tensor_parallel_size"]
    found = _TP_IN_DESCRIPTION.search(description)
    if found and int(found.group(1)) != tp:
        raise ConfigError(f"{name} prices TP {found.group(1)}, but the run served with tensor_parallel_size {tp}.",
                          field="tensor_parallel_size",
                          fix=f"use a cost model of TP {tp} (workbench calibrate --profile DIR --tp {tp}).")
    run_model = run.meta.get("model") or _section(run.meta, "engine_kwargs").get("model")
    source = provenance.get("source") if isinstance(provenance.get("source"), dict) else {}
    model = source.get("model") or (description.split(" on ", 1)[0] if " on " in description else None)
    if run_model and model and _model_key(model) != _model_key(run_model):
        raise ConfigError(f"{name} is a cost model of {model}, but the run served {run_model}.", field="model",
                          fix="use a cost model calibrated from this model's profile (workbench calibrate).")


def _model_key(model: str) -> str:
    """A model's name without its organisation, in lower case: ``meta-llama/Llama-3.1-8B`` -> ``llama-3.1-8b``."""
    return str(model).rsplit("/", 1)[-1].strip().lower()


def _section(meta: dict[str, Any], dotted: str) -> dict[str, Any]:
    """``meta[a][b]`` for ``dotted`` = ``"a.b"`` (the top level for ""), or {} where it is absent."""
    node: Any = meta
    for part in (dotted.split(".") if dotted else []):
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _recorded(meta: dict[str, Any], key: str, sources) -> tuple[Any, str | None]:
    """The first value of ``key`` recorded in ``sources`` (see :data:`SETTING_SOURCES`) and where it was."""
    for source in sources:
        value = _section(meta, source).get(key)
        if value is not None:
            return value, (f"{source}.{key}" if source else key)
    return None, None


def engine_settings(meta: dict[str, Any]) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """The settings the replay needs, from ``meta.json``: what it records (:data:`SETTING_SOURCES`, most
    authoritative first), and the names of those taken from vLLM's defaults because it records nothing.

    Returns ``(settings, assumed, read)``; ``read`` maps each recorded setting to where it was found.
    """
    settings: dict[str, Any] = {}
    assumed: list[str] = []
    read: dict[str, str] = {}
    for key, default in VLLM_DEFAULTS.items():
        value, where = _recorded(meta, key, SETTING_SOURCES[key])
        if value is None:
            value = default
            assumed.append(key)
        else:
            read[key] = where
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"meta.json {where or key} is {value!r}, not true or false.", field=key,
                                  fix="give true or false, as vLLM's engine arguments are.")
        elif isinstance(value, bool) or not isinstance(value, int) or value < (0 if key in ZERO_ALLOWED else 1):
            raise ConfigError(f"meta.json {where or key} is {value!r}, not a whole number >= "
                              f"{0 if key in ZERO_ALLOWED else 1}.", field=key,
                              fix="give the engine argument as vLLM took it.")
        settings[key] = value
    if not settings["enable_chunked_prefill"]:
        raise ConfigError("the run has chunked prefill off, which the vllm policy does not model (a prompt longer "
                          "than the token budget would wait for a whole iteration).", field="enable_chunked_prefill",
                          fix="replay a run with chunked prefill on (vLLM V1's default).")
    policy = _section(meta, "resolved_config.scheduler_config").get("policy")
    if policy not in (None, "fcfs"):
        raise ConfigError(f"the run's scheduler policy is {policy!r}; the vllm policy replays FCFS only.",
                          field="policy", fix="replay a run with vLLM's default policy (fcfs).")
    _kv_capacity(meta, settings, assumed, read)
    return settings, assumed, read


def _kv_capacity(meta: dict[str, Any], settings: dict[str, Any], assumed: list[str], read: dict[str, str]) -> None:
    """The KV capacity of one replica in tokens: the blocks vLLM allocated (``num_gpu_blocks`` x block size;
    ``kv_cache.num_kv_tokens`` or ``kv_cache_tokens`` where only tokens are recorded) less the null block
    its block pool keeps back, else the preset's."""
    sources = ("kv_cache", "resolved_config.cache_config", "engine_kwargs", "")
    blocks, where = _recorded(meta, "num_gpu_blocks", sources)
    if blocks is not None:
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
            raise ConfigError(f"meta.json {where} is {blocks!r}.", field="num_gpu_blocks",
                              fix="give the KV blocks vLLM reported (a whole number >= 1).")
        # vLLM's block pool keeps one block back (the null block, for padding): the rest hold KV.
        settings["kv_capacity_tokens"] = max(blocks - 1, 1) * settings["block_size"]
        read["kv_capacity_tokens"] = f"({where} - 1 null block) x block_size"
        return
    for key in ("num_kv_tokens", "kv_cache_tokens"):
        tokens, where = _recorded(meta, key, sources)
        if tokens is None:
            continue
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < settings["block_size"]:
            raise ConfigError(f"meta.json {where} is {tokens!r}.", field=key,
                              fix="give the KV-cache size vLLM reported, in tokens.")
        settings["kv_capacity_tokens"] = max(tokens - settings["block_size"], settings["block_size"])
        read["kv_capacity_tokens"] = f"{where} - 1 null block"
        return
    assumed.append("kv_capacity_tokens (the cost model's preset)")


def cluster_settings(path: Path, settings: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """What ``RUN/config.json`` (LLMServingSim's cluster configuration) states of the run's machine: the link
    and, per instance, the layout and memory.  Returns ``(cluster, notes)``; a layout that contradicts
    ``meta.json`` is refused (one of the two describes another run)."""
    from workbench.costmodel.calibrate import read_cluster_config

    cluster = read_cluster_config(path)
    notes = []
    for inst in cluster["instances"]:
        tp = inst.get("tp_size")
        if tp is not None and tp != settings["tensor_parallel_size"]:
            raise ConfigError(f"{path} gives tp_size {tp!r}, meta.json tensor_parallel_size "
                              f"{settings['tensor_parallel_size']}.", field="tp_size",
                              fix="give the cluster configuration of this run.")
    groups = {inst.get("dp_group") for inst in cluster["instances"] if inst.get("dp_group") is not None}
    cluster["dp_groups"] = len(groups)
    utils = {(inst.get("npu_mem") or {}).get("mem_util") for inst in cluster["instances"]} - {None}
    if utils:
        cluster["mem_util"] = sorted(utils)
        notes.append("mem_util read, not used: the KV capacity is vLLM's recorded block count, or the preset's")
    return cluster, notes


def link_warnings(run: ServingRun, cost_model) -> list[str]:
    """At TP > 1: whether the cost model priced its all-reduces over the link the run declares."""
    tp = run.settings["tensor_parallel_size"]
    if tp <= 1:
        return []
    provenance = getattr(cost_model, "provenance", None) or {}
    figures = provenance.get("link_figures")
    if run.cluster is None:
        if not figures or provenance.get("link_source") == "assumed":
            return [f"the TP {tp} all-reduces are priced over a link nobody measured "
                    f"({provenance.get('link', 'the cost model does not say which')}), and the run has no "
                    "config.json declaring its own."]
        return []
    from workbench.costmodel.calibrate import cluster_link

    declared = cluster_link(run.cluster)
    if figures != declared.figures():
        return [f"the cost model prices the TP {tp} all-reduces over "
                f"{provenance.get('link', 'a link it does not state')}, but the run declares {declared.name} "
                f"(config.json): calibrate with --cluster-config {run.path / 'config.json'}."]
    return []


def replay(run: ServingRun, cost_model, *, progress: bool | None = False, overrides: dict | None = None):
    """Simulate the run's requests as its engine was set up; return the schedule (the run's own request ids).
    ``overrides``: engine options that replace the run's (what :func:`modelling_choices` varies)."""
    from workbench.costmodel.linear import load_preset
    from workbench.engine.core import simulate

    model = load_preset(cost_model) if isinstance(cost_model, (str, Path)) else cost_model
    s = run.settings
    kv = s.get("kv_capacity_tokens", getattr(model, "kv_capacity_tokens", None))
    if kv is None:
        raise ConfigError("neither the run nor the cost model gives the KV-cache size.", field="kv_capacity_tokens",
                          fix="use a preset with kv_capacity_tokens, or a run whose meta.json gives num_gpu_blocks.")
    # Data parallelism: vLLM's front end sends each request to the engine with the lowest 4 x waiting + running.
    # V1's scheduler does not read max_num_partial_prefills (several prompts may be part-way, each within
    # long_prefill_token_threshold): no limit but the batch.  Without a threshold at most one prompt is ever
    # part-way, so the policy's limit of 1 is the same thing (and a higher one is refused as never binding).
    unlimited = s["max_num_seqs"] if s["long_prefill_token_threshold"] else None
    options = dict(kv_capacity_tokens=int(kv), token_budget=s["max_num_batched_tokens"],
                   max_partial_prefills=unlimited, block_size=s["block_size"],
                   prefix_caching=s["enable_prefix_caching"], cache_at_schedule=s["enable_prefix_caching"],
                   full_prompt_admission=s["scheduler_reserve_full_isl"], async_scheduling=s["async_scheduling"],
                   long_prefill_token_threshold=s["long_prefill_token_threshold"], progress=progress)
    if s["data_parallel_size"] > 1:
        options["dispatch"] = "vllm-dp"
        # With expert parallelism the replicas are one group whose expert layers wait for every member.
        options["dp_lockstep"] = bool(s["enable_expert_parallel"])
    options.update(overrides or {})
    return simulate(run.trace, s["data_parallel_size"], s["max_num_seqs"], "vllm", model, **options)


#: The modelling choices :func:`modelling_choices` takes back one at a time: (label, engine overrides, whether
#: the workload's prefixes are dropped, whether it applies to data-parallel runs only).
CHOICES = (
    ("as the run recorded (every choice)", {}, False, False),
    ("without the workload's prefixes", {}, True, False),
    ("without async scheduling", {"async_scheduling": False}, False, False),
    ("blocks cached at iteration end, not when scheduled", {"cache_at_schedule": False}, False, False),
    ("admission on the first chunk (no full-prompt gate)", {"full_prompt_admission": False}, False, False),
    ("replicas stepping independently (no lockstep)", {"dp_lockstep": False}, False, True),
    ("round-robin dispatch (not 4 x waiting + running)", {"dispatch": "round-robin"}, False, True),
)


def modelling_choices(run: str | Path | ServingRun, cost_model) -> pd.DataFrame:
    """Each modelling choice's measured effect: the run replayed with every choice, then with one taken back
    at a time (:data:`CHOICES`); per variant the errors of the targets (percent) and the prefix-cache hits."""
    from workbench.costmodel.linear import load_preset

    run = run if isinstance(run, ServingRun) else read_run(run)
    model = load_preset(cost_model) if isinstance(cost_model, (str, Path)) else cost_model
    plain = run.trace.drop(columns=[c for c in ("prefix_hashes", "prefix_block_tokens") if c in run.trace.columns])
    rows = []
    for label, overrides, drop, dp_only in CHOICES:
        if drop and plain.shape[1] == run.trace.shape[1]:
            continue  # the run has no prefixes to drop
        if dp_only and run.settings["data_parallel_size"] <= 1:
            continue
        variant = ServingRun(run.path, plain, run.meta, run.settings, run.assumed, run.read, run.cluster,
                             run.notes) if drop else run
        schedule = replay(variant, model, overrides=overrides)
        e = error_table(compare(variant, schedule))
        rq = schedule.requests
        rows.append({"variant": label, "e2e mean %": 100 * e["e2e_s"]["error_mean"],
                     "e2e p99 %": 100 * e["e2e_s"]["error_p99"], "TTFT mean %": 100 * e["ttft_s"]["error_mean"],
                     "TPOT mean %": 100 * e["tpot_s"]["error_mean"], "e2e MAPE %": 100 * e["e2e_s"]["mape"],
                     "prefix-hit tokens": int(rq["cached_tokens"].sum()) if "cached_tokens" in rq.columns else 0,
                     "preemptions": int(schedule.metrics.get("preemptions", 0))})
    return pd.DataFrame(rows).set_index("variant")


def compare(run: ServingRun, schedule) -> pd.DataFrame:
    """Per request (in the run's order, by its ids): predicted and measured TTFT, TPOT and end-to-end latency."""
    sim = schedule.requests.set_index(schedule.requests["request_id"].astype(str))
    trace = run.trace.set_index(run.trace["request_id"].astype(str))
    sim = sim.loc[trace.index]
    out = pd.DataFrame({"request_id": trace.index, "input_tokens": trace["input_tokens"].to_numpy(),
                        "output_tokens": trace["output_tokens"].to_numpy(),
                        "arrival_s": trace["arrival_s"].to_numpy(float)})
    predicted = {
        "ttft_s": (sim["first_token_s"] - sim["arrival_s"]).to_numpy(float),
        "e2e_s": (sim["finish_s"] - sim["arrival_s"]).to_numpy(float),
    }
    decodes = (sim["output_tokens"] - 1).to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        predicted["tpot_s"] = np.where(decodes > 0, (sim["finish_s"] - sim["first_token_s"]).to_numpy(float) / decodes,
                                       np.nan)
    for metric in METRICS:
        out[f"predicted_{metric}"] = predicted[metric]
        out[f"measured_{metric}"] = trace[f"measured_{metric}"].to_numpy(float)
    return out


def error_table(per_request: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per metric: predicted and measured mean, p50, p90, p99, their relative errors, and the per-request MAPE."""
    out: dict[str, dict[str, float]] = {}
    for metric in METRICS:
        p = per_request[f"predicted_{metric}"].to_numpy(float)
        m = per_request[f"measured_{metric}"].to_numpy(float)
        keep = np.isfinite(p) & np.isfinite(m)
        p, m = p[keep], m[keep]
        row: dict[str, float] = {"requests": int(keep.sum())}
        for stat, fn in (("mean", np.mean), ("p50", lambda x: np.quantile(x, 0.5)),
                         ("p90", lambda x: np.quantile(x, 0.9)), ("p99", lambda x: np.quantile(x, 0.99))):
            pv, mv = float(fn(p)), float(fn(m))
            row[f"predicted_{stat}"] = pv
            row[f"measured_{stat}"] = mv
            row[f"error_{stat}"] = pv / mv - 1.0 if mv > 0 else math.nan
        positive = m > 0
        row["mape"] = float(np.mean(np.abs(p[positive] - m[positive]) / m[positive])) if positive.any() else math.nan
        out[metric] = row
    return out


def errors_frame(errors: dict[str, dict[str, float]]) -> pd.DataFrame:
    """The errors as a table for printing: one row per metric, relative errors in percent."""
    rows = []
    for metric, row in errors.items():
        rows.append({"metric": METRIC_NAMES[metric], "measured mean": row["measured_mean"],
                     "predicted mean": row["predicted_mean"],
                     **{f"{stat} error %": 100 * row[f"error_{stat}"] for stat in ("mean", "p50", "p90", "p99")},
                     "MAPE %": 100 * row["mape"]})
    return pd.DataFrame(rows).set_index("metric")


def fidelity_figures(per_request: pd.DataFrame, *, title: str = "") -> list:
    """A predicted-vs-measured scatter (end-to-end and TTFT) and the CDFs of TTFT, TPOT and end-to-end."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    scatter = make_subplots(rows=1, cols=2, subplot_titles=("end-to-end latency (s)", "TTFT (s)"))
    for col, metric in enumerate(("e2e_s", "ttft_s"), start=1):
        m = per_request[f"measured_{metric}"]
        p = per_request[f"predicted_{metric}"]
        scatter.add_trace(go.Scatter(x=m, y=p, mode="markers", name=METRIC_NAMES[metric],
                                     text=per_request["request_id"], marker={"size": 5, "opacity": 0.6},
                                     hovertemplate="%{text}<br>measured %{x:.3f} s<br>predicted %{y:.3f} s"),
                          row=1, col=col)
        hi = float(np.nanmax([m.max(), p.max()])) * 1.05
        scatter.add_trace(go.Scatter(x=[0, hi], y=[0, hi], mode="lines", line={"dash": "dot", "color": "grey"},
                                     name="predicted = measured", showlegend=col == 1), row=1, col=col)
        scatter.update_xaxes(title_text="measured", row=1, col=col)
        scatter.update_yaxes(title_text="predicted", row=1, col=col)
    scatter.update_layout(title=title or "Predicted against measured, one point per request", height=420,
                          autosize=True)
    cdf = make_subplots(rows=1, cols=3, subplot_titles=[f"{METRIC_NAMES[m]} (s)" for m in METRICS])
    for col, metric in enumerate(METRICS, start=1):
        for kind, dash in (("measured", "solid"), ("predicted", "dash")):
            values = np.sort(per_request[f"{kind}_{metric}"].dropna().to_numpy(float))
            cdf.add_trace(go.Scatter(x=values, y=np.arange(1, len(values) + 1) / max(len(values), 1), mode="lines",
                                     line={"dash": dash, "color": "#1f77b4" if kind == "measured" else "#d62728"},
                                     name=kind, showlegend=col == 1, legendgroup=kind), row=1, col=col)
    cdf.update_layout(title="Cumulative distributions: measured (solid) and predicted (dashed)", height=380,
                      autosize=True)
    cdf.update_yaxes(title_text="share of requests", row=1, col=1)
    return [scatter, cdf]


@dataclass
class FidelityResult:
    """A replay beside its run: the schedule, per-request predictions and measurements, and the errors."""

    run: ServingRun
    schedule: Any
    per_request: pd.DataFrame
    errors: dict  # metric -> {"error_mean": ..., "mape": ...} (see error_table)
    cost_model_name: str
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"run": str(self.run.path), "model": self.run.name, "cost_model": self.cost_model_name,
                "requests": len(self.per_request), "settings": self.run.settings,
                "read": self.run.read, "assumed_defaults": self.run.assumed, "notes": self.run.notes,
                "warnings": self.warnings, "errors": self.errors,
                "preemptions": int(self.schedule.metrics.get("preemptions", 0)),
                "prefix_cache_hit_rate": self.schedule.metrics.get("prefix_cache_hit_rate"),
                "prefix_hit_tokens": self.prefix_hit_tokens(),
                "prefix_hit_tokens_ideal": ideal_prefix_hits(self.run.trace, self.run.settings["block_size"]),
                **self._ideal_per_replica()}

    def _ideal_per_replica(self) -> dict[str, int]:
        """Data-parallel replicas keep a cache each: the ideal of each replica's requests as the replay sent
        them (vLLM's front end does not route by prefix), summed."""
        if self.run.settings["data_parallel_size"] <= 1 or "prefix_hashes" not in self.run.trace.columns:
            return {}
        client = self.schedule.requests.set_index(self.schedule.requests["request_id"].astype(str))["client"]
        trace = self.run.trace
        where = client.loc[trace["request_id"].astype(str)].to_numpy()
        block = self.run.settings["block_size"]
        return {"prefix_hit_tokens_ideal_per_replica": int(sum(ideal_prefix_hits(trace[where == j], block)
                                                               for j in np.unique(where)))}

    def prefix_hit_tokens(self) -> int:
        """Prompt tokens the replay served from the prefix cache at each request's first admission."""
        rq = self.schedule.requests
        if "cached_tokens" not in rq.columns:
            return 0
        first = rq["cached_tokens"].where(rq.get("preemptions", 0) == 0, np.nan)
        return int(first.fillna(0).sum()) if "preemptions" in rq.columns else int(rq["cached_tokens"].sum())


def fidelity(run: str | Path | ServingRun, cost_model, *, workload: str | Path | None = None) -> FidelityResult:
    """Replay ``run`` with ``cost_model`` and compare (nothing is written; see :func:`write_fidelity`).
    ``workload``: as :func:`read_run`."""
    from workbench.costmodel.linear import load_preset

    run = run if isinstance(run, ServingRun) else read_run(run, workload)
    model = load_preset(cost_model) if isinstance(cost_model, (str, Path)) else cost_model
    check_cost_model_against_run(run, model)
    schedule = replay(run, model)
    per_request = compare(run, schedule)
    return FidelityResult(run, schedule, per_request, error_table(per_request), getattr(model, "name", "custom"),
                          link_warnings(run, model))


def write_fidelity(result: FidelityResult, out: str | Path, *, writer: dict | None = None,
                   force: bool = False) -> Path:
    """Write the simulated schedule (as any schedule is written), ``fidelity.csv``, ``fidelity.json`` and
    ``report.html`` into ``out``, atomically (``writer``, ``force``: as :func:`~workbench.schedule.schema.atomic_dir`)."""
    from workbench.schedule.schema import atomic_dir
    from workbench.viz.report import write_report

    summary = result.summary()
    with atomic_dir(out, writer=writer, force=force) as tmp:
        result.schedule.write_into(tmp)
        result.per_request.to_csv(tmp / "fidelity.csv", index=False)
        (tmp / "fidelity.json").write_text(json.dumps(summary, indent=2, default=_json_default) + "\n",
                                           encoding="utf-8")
        read = result.run.read
        settings = pd.DataFrame({"value": {k: str(v) for k, v in result.run.settings.items()},
                                 "from": {k: read.get(k, "assumed (vLLM's default)" if k in VLLM_DEFAULTS
                                                       else "assumed (the cost model's)")
                                          for k in result.run.settings}})
        for key in ("link", "prefixes"):
            settings.loc[key] = ["", read.get(key, "assumed: none recorded")]
        write_report(tmp / "report.html", f"Fidelity: {result.run.name}, replayed with {result.cost_model_name}", [
            ("Errors (predicted against measured)", errors_frame(result.errors).round(3)),
            ("Engine settings of the run: where each was read, or assumed "
             f"({', '.join(result.run.assumed) or 'nothing assumed'})", settings),
            ("Per request", fidelity_figures(result.per_request)),
        ], subtitle="The vllm policy of the workbench engine replays the run's arrivals; the cost model is not "
                    "fitted to the run.")
    return Path(out)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return str(value)


# -- calibration through the simulator ---------------------------------------------------------------------
def calibrate_run(run: str | Path | ServingRun, cost_model, *, rounds: int = 3, bisect_steps: int = 14):
    """Fit a cost model's two overhead terms to a measured run, through the simulator; return (model, report).

    The per-iteration overhead (CPU scheduling between iterations; for a linear
    model it is added to ``a_p`` and ``a_d``) is set by bisection so that the
    replay's mean TPOT matches the run's (TPOT grows with it monotonically),
    and the per-request front-end overhead (HTTP, tokenisation: it delays a
    request's arrival at the engine) so that the median TTFT of the requests
    the replay admits at once matches (a run whose times are the engine's own,
    ``queued_ts`` on, has no front end in them: the fit then finds about 0); the two are refined in turn for
    ``rounds`` rounds.  Both are >= 0: an overhead cannot make the engine
    faster than its kernels.  The kernel times themselves stay as measured.
    """
    from workbench.costmodel.linear import LinearCostModel, load_preset

    run = run if isinstance(run, ServingRun) else read_run(run)
    base = load_preset(cost_model) if isinstance(cost_model, (str, Path)) else cost_model
    measured_tpot = float(np.nanmean(run.trace["measured_tpot_s"]))

    def with_overheads(iteration_s: float, frontend_s: float):
        if isinstance(base, LinearCostModel):
            data = base.to_dict()
            data.update(a_p=base.a_p + iteration_s, a_d=base.a_d + iteration_s, frontend_overhead_s=frontend_s)
            return LinearCostModel.from_dict(data)
        return base.with_overheads(iteration_overhead_s=getattr(base, "iteration_overhead_s", 0.0) + iteration_s,
                                   frontend_overhead_s=frontend_s)

    def evaluate(iteration_s: float, frontend_s: float) -> pd.DataFrame:
        return compare(run, replay(run, with_overheads(iteration_s, frontend_s)))

    iteration_s, frontend_s = 0.0, 0.0
    history = []
    for _ in range(max(1, int(rounds))):
        # The iteration overhead that matches the mean TPOT, given the front end: bisection from 0.
        if float(evaluate(0.0, frontend_s)["predicted_tpot_s"].mean()) >= measured_tpot:
            iteration_s = 0.0  # the kernels alone are already as slow as the run: no overhead to add
        else:
            lo, hi = 0.0, 1e-4
            while float(evaluate(hi, frontend_s)["predicted_tpot_s"].mean()) < measured_tpot and hi < 1.0:
                lo, hi = hi, hi * 2
            for _ in range(bisect_steps):
                mid = (lo + hi) / 2
                if float(evaluate(mid, frontend_s)["predicted_tpot_s"].mean()) < measured_tpot:
                    lo = mid
                else:
                    hi = mid
            iteration_s = (lo + hi) / 2
        schedule = replay(run, with_overheads(iteration_s, frontend_s))
        per = compare(run, schedule)
        # Requests the engine admitted at once in the replay: their TTFT differs from the measured one by the
        # front end alone (their queueing is nil on both sides once the overhead is right).
        sim = schedule.requests.set_index(schedule.requests["request_id"].astype(str)).loc[per["request_id"]]
        waited = (sim["prefill_start_s"] - sim["arrival_s"]).to_numpy(float) - frontend_s
        quick = waited < 1e-3
        gap = np.nanmedian((per["measured_ttft_s"] - per["predicted_ttft_s"]).to_numpy(float)[quick]) \
            if quick.any() else 0.0
        frontend_s = max(0.0, frontend_s + float(gap))
        history.append({"iteration_overhead_s": iteration_s, "frontend_overhead_s": frontend_s})
    fitted = with_overheads(iteration_s, frontend_s)
    per = evaluate(iteration_s, frontend_s)
    report = {"iteration_overhead_s": iteration_s, "frontend_overhead_s": frontend_s, "rounds": history,
              "errors": error_table(per), "run": str(run.path), "base": getattr(base, "name", "custom")}
    return fitted, report
