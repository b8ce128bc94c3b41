"""Pin the exported bytes of the engine's schedules across its modes (``tests/golden/engine.json``).

    python scripts/pin_engine.py            # writes tests/golden/engine.json
    python scripts/pin_engine.py --check    # compares with it, prints every case that differs
    python scripts/pin_engine.py --check --workers 2   # the same, each case whose replicas never interact
                                                       # run in 2 parallel shards (engine.shards)

``tests/test_golden.py`` pins each policy's gsm8k makespan in the paper's engine; this pins the
whole schedule (timeline, requests and metrics, as written by ``write_schedule_files``) for a
matrix of policies x iteration modes x KV modes x prefix caching x stealing x predictors x fleets
x arrivals, so a change of the engine that must keep every result bit for bit is checked on every
branch of it.  A case the engine refuses pins the refusal's text.  Run once before such a change;
``tests/test_engine_pins.py`` compares against the file.
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1] / "src"))

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "tests" / "golden" / "engine.json"
MODES = {
    "exclusive-reserve": {},
    "exclusive-reserve-kv": {"kv_capacity_tokens": 1200},
    "mixed-reserve": {"iteration": "mixed", "token_budget": 256},
    "exclusive-paged": {"kv": "paged", "kv_capacity_tokens": 1600, "block_size": 16},
    "mixed-paged": {"iteration": "mixed", "token_budget": 256, "kv": "paged", "kv_capacity_tokens": 1600},
    "mixed-paged-prefix": {"iteration": "mixed", "token_budget": 256, "kv": "paged", "kv_capacity_tokens": 1600,
                           "prefix_caching": True, "max_partial_prefills": 1},
    "exclusive-paged-prefix": {"kv": "paged", "kv_capacity_tokens": 1600, "block_size": 8,
                               "prefix_caching": True},
}
POLICY_NAMES = ("static", "paper-baseline", "least-work", "offline", "online", "hybrid", "hybrid-steal",
                "hybrid-robust", "hybrid-rolling", "chunked-prefill", "vllm")


def traces() -> dict[str, pd.DataFrame]:
    from workbench.workload.trace import load_trace, synthetic_trace

    batch = load_trace("gsm8k-test").iloc[:240].reset_index(drop=True)
    rng = np.random.default_rng(7)
    share = rng.integers(0, 4, len(batch))
    prefix_tokens = 24 + 8 * share
    fits = batch["input_tokens"].to_numpy() > prefix_tokens
    batch = batch.assign(prefix_id=[f"sys{k}" if ok else None for k, ok in zip(share, fits)],
                         prefix_tokens=np.where(fits, prefix_tokens, 0))
    online = synthetic_trace(300, seed=3, input_mean_tokens=60, output_mean_tokens=90, rate_per_s=40.0)
    blocks = np.minimum(1 + np.arange(len(online)) % 3, -(-online["input_tokens"].to_numpy() // 16))
    hashes = [" ".join(f"h{i % 3}-{b}" for b in range(k)) for i, k in enumerate(blocks)]
    online = online.assign(prefix_hashes=hashes, prefix_block_tokens=16)
    return {"batch": batch, "online": online}


def cases():
    for trace in ("batch", "online"):
        for policy in POLICY_NAMES:
            for mode, options in MODES.items():
                yield f"{trace}/{policy}/{mode}", trace, {"policy": policy, **options}
    yield "batch/hybrid/noisy", "batch", {"policy": "hybrid", "predictor": "noisy:0.3"}
    yield "batch/hybrid-robust/noisy-paged", "batch", {"policy": "hybrid-robust", "predictor": "noisy:0.3",
                                                       "kv": "paged", "kv_capacity_tokens": 1600}
    yield "batch/least-work/fleet", "batch", {"policy": "least-work",
                                              "cost_model": ["llama2-70b-h100-tp4", "llama2-70b-a100-tp4"] * 2,
                                              "batch_size": [8, 4, 8, 4]}
    yield "online/chunked-least-work/fleet", "online", {"policy": "chunked-least-work",
                                                        "cost_model": ["llama2-70b-h100-tp4",
                                                                       "llama2-70b-a100-tp4"] * 2}
    yield "batch/continuous/profiled", "batch", {"policy": "continuous", "cost_model": "llama31-8b-rtxpro6000-tp1"}
    yield "online/vllm/profiled", "online", {"policy": "vllm", "cost_model": "llama31-8b-rtxpro6000-tp1",
                                             "kv_capacity_tokens": 1600}
    yield "online/hybrid/steal-mu", "online", {"policy": "hybrid", "steal": True, "mu": 2.0}


def digest(schedule) -> str:
    from workbench.schedule.schema import write_schedule_files

    h = hashlib.sha256()
    with tempfile.TemporaryDirectory() as tmp:
        write_schedule_files(schedule, Path(tmp))
        for path in sorted(Path(tmp).iterdir()):
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def schedules(workers: int | None = None, sharded: list | None = None):
    """Each case's name, its trace, and its schedule (or the refusal's text); ``workers``: in that many shards
    where the case's replicas never interact (their names appended to ``sharded``), else in one process."""
    import workbench
    from workbench.errors import ConfigError

    data = traces()
    for name, trace, kwargs in cases():
        kwargs = dict(kwargs)
        batch_size = kwargs.pop("batch_size", 8)
        cost_model = kwargs.pop("cost_model", "llama2-70b-h100-tp4")
        try:
            try:
                schedule = workbench.simulate(data[trace], 4, batch_size, cost_model=cost_model,
                                              **kwargs, **({} if workers is None else {"workers": workers}))
                if sharded is not None:
                    sharded.append(name)
            except ConfigError as exc:
                if workers is None or exc.field != "workers":
                    raise
                schedule = workbench.simulate(data[trace], 4, batch_size, cost_model=cost_model, **kwargs)
            yield name, data[trace], schedule
        except ConfigError as exc:
            yield name, data[trace], "refused: " + str(exc)


def pins(workers: int | None = None, sharded: list | None = None) -> dict[str, str]:
    return {name: s if isinstance(s, str) else digest(s) for name, _, s in schedules(workers, sharded)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the pinned file instead of writing it")
    parser.add_argument("--workers", type=int, default=None,
                        help="run each case whose replicas never interact in this many parallel shards")
    args = parser.parse_args()
    if args.workers is not None and not args.check:
        parser.error("--workers is for --check: the pins are written from one process")
    sharded: list[str] = []
    got = pins(args.workers, sharded)
    if args.workers is not None:
        print(f"{len(sharded)} cases ran in {args.workers} shards")
    if args.check:
        want = json.loads(OUT.read_text())
        bad = [k for k in want if got.get(k) != want[k]]
        for k in bad:
            print(f"DIFFERS {k}: {want[k][:70]} -> {str(got.get(k))[:70]}")
        print(f"{len(want) - len(bad)} of {len(want)} cases identical")
        raise SystemExit(1 if bad else 0)
    OUT.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}: {len(got)} cases, {sum(v.startswith('refused') for v in got.values())} refused")


if __name__ == "__main__":
    main()
