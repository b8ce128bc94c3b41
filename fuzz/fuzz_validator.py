"""Fuzz the schedule validator on corrupted exports of valid schedules.

Run:  python fuzz/fuzz_validator.py --minutes 5 [--seed N] [--verbose]

Each example simulates a small random instance (trace, clients, batch sizes,
cost model, policy, arrivals, KV capacity), writes the schedule, and then
either

* leaves it alone: the validator must accept it (with and without the trace);
* applies one corruption the validator must catch (a timeline row deleted or
  duplicated, a token count, a makespan, an output length or a client changed):
  the report must not be ok; or
* applies 1-4 random corruptions (a cell set to hostile text, a column dropped,
  rows deleted, duplicated or swapped, bytes truncated or garbage inserted, a
  file emptied or removed, metrics.json keys deleted or set to junk).

In every case ``validate_files`` must return a report and never raise, and
``validate`` (folder or in-memory :class:`Schedule`) may raise only a
``WorkbenchError``.
"""

from __future__ import annotations

import functools
import itertools
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Invariant, main  # noqa: E402

from workbench.costmodel.linear import LinearCostModel  # noqa: E402
from workbench.errors import WorkbenchError  # noqa: E402
from workbench.policies.registry import POLICIES  # noqa: E402
from workbench.schedule.schema import Schedule  # noqa: E402
from workbench.engine.core import simulate  # noqa: E402
from workbench.workload.trace import synthetic_trace  # noqa: E402
from workbench.schedule.validator import validate, validate_files  # noqa: E402

try:  # registers the online and hybrid policies when that module has landed
    import workbench.policies.lagrangian  # noqa: F401
except ImportError:
    pass

#: Policies quick enough to simulate thousands of times (the offline ones call a solver).
FAST_POLICIES = [p for p in POLICIES if POLICIES[p].dispatch != "offline"]
COSTS = [
    LinearCostModel(a_p=0.015, b_p=1e-4, a_d=0.015, b_d=1e-4, c_d=2e-7, name="small"),
    LinearCostModel(a_p=1.0, b_p=0.5, a_d=1.0, b_d=0.0, c_d=0.0, name="unit"),
    LinearCostModel(a_p=0.0, b_p=3e-3, a_d=0.0, b_d=2e-2, c_d=1e-6, name="no-fixed"),
]
HOSTILE = ["", " ", "nan", "inf", "-inf", "-1", "0", "1e308", "1e400", "1.5", "x", "prefill", "decode", "a b",
           "99999999999999999999", "-0", "\u00e9", '"', ",", "None", "true", "[1]", "\n", "7 7"]
JSON_JUNK = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=5),
                      st.lists(st.integers(-2, 5), max_size=4), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                      st.sampled_from([{"a_p": -1, "b_p": 0, "a_d": 0, "b_d": 0, "c_d": 0}, [None], [0, 0, 0], "nan"]))

_TMP = Path(tempfile.mkdtemp(prefix="fuzz-validator-"))
_COUNTER = itertools.count()


@functools.lru_cache(maxsize=512)
def base_schedule(n: int, seed: int, clients: int, batch: tuple, cost: int, policy: str, rate: float, kv: bool):
    trace = synthetic_trace(n, seed=seed, input_mean_tokens=30, output_mean_tokens=8, sigma=0.8, max_tokens=200,
                            rate_per_s=rate or None)
    bs = list(batch) if len(batch) == clients else batch[0]
    kv_cap = int((trace["input_tokens"] + trace["output_tokens"]).max()) * 2 if kv else None
    schedule = simulate(trace, clients, bs, policy, COSTS[cost], kv_capacity_tokens=kv_cap)
    folder = _TMP / f"base-{n}-{seed}-{clients}-{'_'.join(map(str, batch))}-{cost}-{policy}-{rate}-{kv}"
    schedule.write(folder)
    return folder, trace


def _instance_pool(size: int = 300, seed: int = 0) -> list[tuple]:
    """A fixed pool of instances, so that their schedules are simulated once and reused (the cache)."""
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(size):
        clients = int(rng.integers(1, 4))
        batch = tuple(int(b) for b in rng.integers(1, 5, size=clients if rng.random() < 0.3 else 1))
        pool.append((int(rng.integers(1, 26)), int(rng.integers(0, 6)), clients, batch, int(rng.integers(0, len(COSTS))),
                     str(rng.choice(FAST_POLICIES)), float(rng.choice([0.0, 0.0, 20.0])), bool(rng.random() < 0.3)))
    return pool


INSTANCE = st.sampled_from(_instance_pool())
CSV_FILES = ("timeline.csv", "requests.csv")
RANDOM_MUTATION = st.one_of(
    st.tuples(st.just("cell"), st.sampled_from(CSV_FILES), st.integers(0, 10**6), st.integers(0, 10**6),
              st.sampled_from(HOSTILE) | st.text(max_size=4) | st.floats().map(repr)),
    st.tuples(st.just("number"), st.sampled_from(CSV_FILES), st.integers(0, 10**6), st.integers(0, 10**6),
              st.floats(-1e3, 1e3)),
    st.tuples(st.sampled_from(["drop_col", "del_row", "dup_row", "swap_rows"]), st.sampled_from(CSV_FILES),
              st.integers(0, 10**6), st.integers(0, 10**6)),
    st.tuples(st.sampled_from(["truncate", "garbage", "empty", "delete", "header_only"]),
              st.sampled_from(CSV_FILES + ("metrics.json",)), st.integers(0, 10**6), st.binary(max_size=12)),
    st.tuples(st.just("metric_del"), st.integers(0, 100)),
    st.tuples(st.just("metric_set"), st.integers(0, 100), JSON_JUNK),
    st.tuples(st.just("metrics_whole"), JSON_JUNK),
)
MUST_DETECT = st.tuples(st.sampled_from(["del_tl_row", "dup_tl_row", "tokens", "makespan", "output_tokens",
                                         "client"]), st.integers(0, 10**6), st.integers(1, 5))
EXAMPLE = st.tuples(INSTANCE, st.one_of(
    st.just(("pristine",)),
    st.tuples(st.just("detect"), MUST_DETECT),
    st.tuples(st.just("random"), st.lists(RANDOM_MUTATION, min_size=1, max_size=4)),
), st.booleans())


def _read(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / name, dtype=str, keep_default_na=False)


def _write(folder: Path, name: str, frame: pd.DataFrame) -> None:
    frame.to_csv(folder / name, index=False)


def apply_random(folder: Path, m: tuple) -> None:
    kind = m[0]
    if kind in ("cell", "number", "drop_col", "del_row", "dup_row", "swap_rows"):
        name = m[1]
        try:
            frame = _read(folder, name)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, FileNotFoundError, ValueError):
            return
        if kind in ("cell", "number") and len(frame) and len(frame.columns):
            r, c = m[2] % len(frame), m[3] % len(frame.columns)
            if kind == "cell":
                frame.iat[r, c] = m[4]
            else:
                frame.iat[r, c] = repr(float(frame.iat[r, c] or 0) + m[4]) if _is_float(frame.iat[r, c]) else repr(m[4])
        elif kind == "drop_col" and len(frame.columns):
            frame = frame.drop(columns=frame.columns[m[2] % len(frame.columns)])
        elif kind == "del_row" and len(frame):
            frame = frame.drop(index=frame.index[m[2] % len(frame)])
        elif kind == "dup_row" and len(frame):
            r = m[2] % len(frame)
            frame = pd.concat([frame.iloc[: r + 1], frame.iloc[r:]], ignore_index=True)
        elif kind == "swap_rows" and len(frame) > 1:
            a, b = m[2] % len(frame), m[3] % len(frame)
            rows = list(range(len(frame)))
            rows[a], rows[b] = rows[b], rows[a]
            frame = frame.iloc[rows]
        _write(folder, name, frame)
    elif kind in ("truncate", "garbage", "empty", "delete", "header_only"):
        path = folder / m[1]
        if not path.exists():
            return
        data = path.read_bytes()
        if kind == "truncate":
            path.write_bytes(data[: m[2] % (len(data) + 1)])
        elif kind == "garbage":
            at = m[2] % (len(data) + 1)
            path.write_bytes(data[:at] + m[3] + data[at:])
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "delete":
            path.unlink()
        else:
            path.write_bytes(data.split(b"\n", 1)[0] + b"\n")
    else:
        path = folder / "metrics.json"
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, FileNotFoundError, UnicodeDecodeError):
            return
        if kind == "metrics_whole":
            metrics = m[1]
        elif isinstance(metrics, dict) and metrics:
            key = sorted(metrics)[m[1] % len(metrics)]
            if kind == "metric_del":
                del metrics[key]
            else:
                metrics[key] = m[2]
        path.write_text(json.dumps(metrics, allow_nan=True), encoding="utf-8")


def _is_float(text) -> bool:
    try:
        float(text)
        return True
    except (TypeError, ValueError):
        return False


def apply_must_detect(folder: Path, m: tuple, clients: int) -> bool:
    """Apply a corruption the validator must catch; False when it does not apply to this schedule."""
    kind, pick, delta = m
    schedule = Schedule.read(folder)
    tl, rq, metrics = schedule.timeline, schedule.requests, schedule.metrics
    if kind == "del_tl_row":
        tl = tl.drop(index=tl.index[pick % len(tl)])
    elif kind == "dup_tl_row":
        r = pick % len(tl)
        tl = pd.concat([tl.iloc[: r + 1], tl.iloc[r:]], ignore_index=True)
    elif kind == "tokens":
        r = tl.index[pick % len(tl)]
        tl.loc[r, "tokens"] += delta
    elif kind == "makespan":
        metrics["makespan_s"] = float(metrics["makespan_s"]) * (1 + 1e-6 * delta)
    elif kind == "output_tokens":
        r = rq.index[pick % len(rq)]
        rq.loc[r, "output_tokens"] += delta
    elif kind == "client":
        if clients < 2:
            return False
        r = rq.index[pick % len(rq)]
        rq.loc[r, "client"] = (rq.loc[r, "client"] + 1 + delta % (clients - 1)) % clients
    Schedule(timeline=tl, requests=rq, metrics=metrics).write(folder)
    return True


def target(example) -> bool:
    instance, action, with_trace = example
    base, trace = base_schedule(*instance)
    folder = _TMP / f"x{next(_COUNTER)}"
    shutil.copytree(base, folder)
    try:
        return _check(folder, trace if with_trace else None, instance, action)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _check(folder: Path, trace, instance, action) -> bool:
    if action[0] == "detect" and not apply_must_detect(folder, action[1], instance[2]):
        action = ("pristine",)
    elif action[0] == "random":
        for m in action[1]:
            apply_random(folder, m)
    report = validate_files(folder, trace=trace)  # must never raise
    if action[0] == "pristine" and not report.ok:
        raise Invariant(f"a valid schedule was rejected: {report}")
    if action[0] == "detect" and report.ok:
        raise Invariant(f"corruption {action[1][0]} was not caught")
    try:
        schedule = Schedule.read(folder)
    except WorkbenchError:
        return False
    validate(schedule, trace=trace)  # the in-memory path may raise only a WorkbenchError
    return report.ok


def describe(example) -> str:
    instance, action, with_trace = example
    names = ("n", "seed", "clients", "batch", "cost", "policy", "rate", "kv")
    return f"instance={dict(zip(names, instance))} action={action!r} with_trace={with_trace}"


if __name__ == "__main__":
    sys.exit(main("validator", EXAMPLE, target, describe))
