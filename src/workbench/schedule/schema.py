"""The one schedule schema every method produces (MODEL.md section 9).

A :class:`Schedule` is three tables: the per-iteration ``timeline``, the
per-request ``requests`` table, and ``metrics``.  The simulator, the
heuristics and the exact MIP all return one, so one Gantt function, one
metrics function and one validator serve them all.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench._paths import MAX_SCHEDULE_FILE_BYTES, input_file
from workbench._version import __version__
from workbench.costmodel.linear import LinearCostModel
from workbench.errors import ConfigError, ScheduleFileError
from workbench.schedule.metrics import batch_sizes_array, gap, schedule_metrics

TIMELINE_COLUMNS = ("client", "iteration", "kind", "start_s", "end_s", "n_requests", "tokens", "request_ids")
#: Written only when present: the prompt chunks of ``mixed`` rows (chunked prefill, :mod:`workbench.engine.chunked`).
OPTIONAL_TIMELINE_COLUMNS = ("prefill_ids", "prefill_tokens")
REQUEST_COLUMNS = ("request_id", "client", "input_tokens", "output_tokens", "arrival_s",
                   "prefill_start_s", "first_token_s", "finish_s")
#: Written only when present: the output length the schedulers were told (``simulate(predictor=...)``).
OPTIONAL_REQUEST_COLUMNS = ("predicted_output_tokens",)
FILES = ("timeline.csv", "requests.csv", "metrics.json")
#: Written into every output folder; only folders holding it (or empty ones) are ever replaced.
OUTPUT_MARKER = ".workbench-output"


class Schedule:
    """A complete schedule: per-iteration timeline, per-request times, metrics.

    A schedule from the simulator holds its decode *runs* (consecutive decode
    iterations over the same requests, see :meth:`compact`) and expands the
    per-iteration ``timeline`` only when it is asked for, with the very
    arithmetic the simulator used; a schedule read from files, or built by
    the MIP, holds the timeline itself.
    """

    def __init__(self, timeline: pd.DataFrame | None = None, requests: pd.DataFrame | None = None,
                 metrics: dict[str, Any] | None = None, runs: pd.DataFrame | None = None,
                 run_ids: Callable[[], np.ndarray] | None = None) -> None:
        if timeline is None and runs is None:
            raise ValueError("a Schedule needs a timeline or runs")
        self._timeline = timeline
        self.requests = requests
        self.metrics = metrics if metrics is not None else {}
        self._runs = runs
        self._run_ids = run_ids

    @property
    def runs(self) -> pd.DataFrame | None:
        """The simulator's runs with their ``request_ids``, listed on first use (it costs one pass)."""
        if self._runs is not None and "request_ids" not in self._runs.columns and self._run_ids is not None:
            self._runs["request_ids"] = self._run_ids()
        return self._runs

    def runs_without_ids(self) -> pd.DataFrame | None:
        """The runs as they are, without forcing the request ids (for metrics and bare Gantt bars)."""
        return self._runs

    @property
    def timeline(self) -> pd.DataFrame:
        """One row per iteration (MODEL.md section 9), expanded from the runs on first use."""
        if self._timeline is None:
            from workbench.schedule.estimate import check_rows

            check_rows(int(self._runs["iterations"].sum()))  # refuse before allocating, not after
            self._timeline = expand_runs(self.runs, self.metrics)
        return self._timeline

    @timeline.setter
    def timeline(self, value: pd.DataFrame) -> None:
        self._timeline = value

    def __repr__(self) -> str:
        m = self.metrics
        return (f"Schedule(policy={m.get('policy')!r}, clients={m.get('clients')}, requests="
                f"{0 if self.requests is None else len(self.requests)}, makespan_s={m.get('makespan_s')})")

    @property
    def makespan_s(self) -> float:
        return float(self.metrics["makespan_s"])

    @property
    def policy(self) -> str:
        return str(self.metrics.get("policy", "?"))

    @property
    def clients(self) -> int:
        return int(self.metrics["clients"])

    def compact(self) -> pd.DataFrame:
        """The timeline for display: consecutive decode iterations with the same requests merged.

        One row per prefill and per run of decodes between two batch changes,
        with ``iterations`` (how many were merged), ``tokens`` summed and
        ``first_iteration``/``last_iteration``.  Derived from the timeline, never a
        replacement for it.
        """
        if self._runs is not None:
            return self.runs
        return compact_timeline(self._timeline)

    def write(self, out_dir: str | Path) -> Path:
        """Write ``timeline.csv``, ``requests.csv`` and ``metrics.json`` into ``out_dir``, atomically."""
        with atomic_dir(out_dir) as tmp:
            self.write_into(tmp)
        return Path(out_dir)

    def write_into(self, folder: Path) -> None:
        columns = list(TIMELINE_COLUMNS) + [c for c in OPTIONAL_TIMELINE_COLUMNS if c in self.timeline.columns]
        self.timeline.loc[:, columns].to_csv(folder / "timeline.csv", index=False)
        request_columns = list(REQUEST_COLUMNS) + [c for c in OPTIONAL_REQUEST_COLUMNS if c in self.requests.columns]
        self.requests.loc[:, request_columns].to_csv(folder / "requests.csv", index=False)
        (folder / "metrics.json").write_text(json.dumps(_jsonable(self.metrics), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, folder: str | Path) -> Schedule:
        """Read a schedule written by :meth:`write` (or by anyone following MODEL.md section 9)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ScheduleFileError(f"'{folder}' is not a folder.", fix="give the folder a schedule was written to.")
        for name in FILES:
            if not (folder / name).exists():
                raise ScheduleFileError(f"'{folder}' has no {name}.", field=name,
                                        fix="a schedule folder holds timeline.csv, requests.csv and metrics.json.")
            input_file(folder / name, what="schedule file", field=name, max_bytes=MAX_SCHEDULE_FILE_BYTES,
                       error=ScheduleFileError, fix="a schedule folder holds the regular files timeline.csv, "
                                                    "requests.csv and metrics.json.")
        try:
            timeline = pd.read_csv(folder / "timeline.csv", dtype={"request_ids": str, "kind": str, "prefill_ids": str, "prefill_tokens": str},
                                   keep_default_na=False)
            requests = pd.read_csv(folder / "requests.csv")
            if "request_id" in requests.columns:
                # Ids as written, like timeline.csv's request_ids: the text "01", "+1" or "NaN" is an id,
                # not a number (pandas would read "01" and "1" both as 1).
                written = pd.read_csv(folder / "requests.csv", usecols=["request_id"], dtype=str,
                                      keep_default_na=False)["request_id"]
                requests["request_id"] = _ids_from_text(written)
            metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise ScheduleFileError(f"cannot read the schedule in '{folder}': {exc}.") from None
        if not isinstance(metrics, dict):
            raise ScheduleFileError("metrics.json is not a JSON object.", field="metrics.json")
        return cls(timeline=timeline, requests=requests, metrics=metrics)


def _ids_from_text(ids: pd.Series) -> pd.Series:
    """Integer ids when every id is written as a plain integer (as integer ids are written), else the text
    (the trace loader's rule, :func:`workbench.workload.trace.ids_from_text`)."""
    from workbench.workload.trace import ids_from_text

    return ids_from_text(ids)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    return value


@contextlib.contextmanager
def atomic_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``out_dir`` only if the block completes.

    A failure leaves ``out_dir`` as it was, so a half-written schedule never
    sits where a finished one is expected.  An existing ``out_dir`` is replaced
    only if it is empty or was written by this function (it holds
    :data:`OUTPUT_MARKER`).
    """
    out_dir = Path(out_dir)
    resolved = out_dir.resolve()
    if out_dir.is_symlink():
        out_dir = resolved  # replace the folder the link names; the link itself stays as it was
    parent = resolved.parent
    try:
        cwd = Path.cwd().resolve()
    except OSError:
        cwd = None
    if resolved == parent or resolved == Path(os.path.expanduser("~")).resolve() or (
            cwd is not None and cwd.is_relative_to(resolved)):
        # Replacing the output folder deletes what it held: never the working folder, a parent of it,
        # the home folder or a root.
        raise ConfigError(f"'{out_dir}' is the working folder, a parent of it, the home folder or a root; "
                          "writing the output there would replace everything in it.", field="out",
                          fix="give a new folder for the output, e.g. runs/my-run.")
    if out_dir.is_dir() and not (out_dir / OUTPUT_MARKER).is_file() and any(out_dir.iterdir()):
        # Only a folder this package wrote (it holds the marker), or an empty one, is replaced:
        # --out ~/Documents must not wipe the user's documents.
        raise ConfigError(f"'{out_dir}' already holds files that workbench did not write; writing the output "
                          "there would replace them.", field="out",
                          fix="give a new or empty folder, or delete this one first.")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=parent))
        (tmp / OUTPUT_MARKER).write_text("written by workbench; the next run into this folder replaces it\n")
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
    except OSError as exc:
        raise ConfigError(f"cannot write to '{out_dir}': {exc.strerror}.", field="out",
                          fix="choose a folder you can write to.") from None
    try:
        with _terminate_as_exit():
            yield tmp
            with _folder_lock(parent):
                _swap_in(tmp, out_dir, parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, out_dir: Path, parent: Path) -> None:
    """Move ``tmp`` to ``out_dir``, the previous output aside first and deleted after (under the lock)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"'{out_dir}' exists and is not a folder.", field="out",
                          fix="choose another output folder.")
    backup = None
    if out_dir.exists():
        backup = parent / f".{out_dir.name}.old-{os.getpid()}"
        os.replace(out_dir, backup)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if backup is not None:
            os.replace(backup, out_dir)  # put the previous output back
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``folder`` itself (no lock file to leave behind), so writers of
    one output folder swap their results in one at a time (the last one wins) instead of racing
    between moving the old folder aside and moving theirs in."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; writers there are not serialised
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """While an output is written, SIGTERM raises SystemExit (so the temporary folder is removed and
    the previous output stays) instead of killing the process where it stands."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def compact_timeline(timeline: pd.DataFrame) -> pd.DataFrame:
    """Merge consecutive decode iterations of a client that serve the same requests."""
    if len(timeline) == 0:
        return pd.DataFrame(columns=["client", "kind", "start_s", "end_s", "n_requests", "tokens",
                                     "iterations", "first_iteration", "last_iteration", "request_ids"])
    tl = timeline.sort_values(["client", "iteration"], kind="stable")
    client = tl["client"].to_numpy()
    kind = tl["kind"].to_numpy()
    ids = tl["request_ids"].to_numpy()
    same = np.zeros(len(tl), dtype=bool)
    same[1:] = (client[1:] == client[:-1]) & (kind[1:] == "decode") & (kind[:-1] == "decode") & (ids[1:] == ids[:-1])
    run = np.cumsum(~same) - 1
    grouped = tl.assign(_run=run).groupby("_run", sort=True)
    out = grouped.agg(client=("client", "first"), kind=("kind", "first"), start_s=("start_s", "first"),
                      end_s=("end_s", "last"), n_requests=("n_requests", "first"), tokens=("tokens", "sum"),
                      iterations=("iteration", "size"), first_iteration=("iteration", "first"),
                      last_iteration=("iteration", "last"), request_ids=("request_ids", "first"))
    return out.reset_index(drop=True)


def cost_model_record(cost_model: LinearCostModel) -> dict[str, Any]:
    record = cost_model.coefficients()
    record["name"] = cost_model.name
    return record


def build_metrics(timeline: pd.DataFrame, *, clients: int, batch_size, cost_model: LinearCostModel,
                  policy: str, params: dict[str, Any], lower_bound_s: float,
                  lower_bound_binding: str | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``metrics.json`` as MODEL.md section 9 and the foundation issue specify it."""
    if clients < 1:
        raise ConfigError(f"clients is {clients}.", field="clients", fix="use at least 1 client.")
    B = batch_sizes_array(batch_size, clients)
    base = schedule_metrics(timeline, clients, B)
    metrics = {
        "makespan_s": base["makespan_s"],
        "lower_bound_s": float(lower_bound_s),
        "gap": gap(base["makespan_s"], float(lower_bound_s)),
        "slot_utilization": base["slot_utilization"],
        "busy_utilization": base["busy_utilization"],
        "clients": int(clients),
        "batch_size": int(B[0]) if np.all(B == B[0]) else [int(b) for b in B],
        "cost_model": cost_model_record(cost_model),
        "policy": policy,
        "params": params,
        "version": __version__,
    }
    if lower_bound_binding:
        metrics["lower_bound_binding"] = lower_bound_binding
    if extra:
        metrics.update(extra)
    return metrics


def requests_from_timeline(timeline: pd.DataFrame, trace: pd.DataFrame) -> pd.DataFrame:
    """The ``requests`` table implied by a timeline (for schedules not made by the simulator)."""
    tl = timeline.sort_values(["client", "iteration"], kind="stable")
    ids = tl["request_ids"].astype(str).str.split()
    exploded = tl.assign(request_id=ids).explode("request_id")
    key = trace["request_id"].astype(str)
    pre = exploded[exploded["kind"] == "prefill"].drop_duplicates("request_id").set_index("request_id")
    last = exploded.drop_duplicates("request_id", keep="last").set_index("request_id")
    out = pd.DataFrame({
        "request_id": trace["request_id"].to_numpy(),
        "client": pre["client"].reindex(key).to_numpy(),
        "input_tokens": trace["input_tokens"].to_numpy(),
        "output_tokens": trace["output_tokens"].to_numpy(),
        "arrival_s": trace["arrival_s"].to_numpy(float),
        "prefill_start_s": pre["start_s"].reindex(key).to_numpy(float),
        "first_token_s": pre["end_s"].reindex(key).to_numpy(float),
        "finish_s": last["end_s"].reindex(key).to_numpy(float),
    })
    return out


def expand_runs(runs: pd.DataFrame, metrics: dict[str, Any]) -> pd.DataFrame:
    """The per-iteration timeline of a run table, with the simulator's own arithmetic.

    A decode run of ``k`` iterations starting at ``t0`` with ``n`` requests
    whose first iteration reads ``S`` context tokens has iteration ``r`` from
    ``t0 + cum(r)`` to ``t0 + cum(r + 1)``, where
    ``cum(r) = r (a_d + b_d n) + c_d (r S + n r (r-1) / 2)``; the simulator's
    clock advanced by exactly ``cum(k)``, so every boundary matches bit for
    bit.  Runs of one iteration (all prefills, and decodes under a cost model
    that is not linear) keep their recorded times.
    """
    k = runs["iterations"].to_numpy(np.int64)
    total = int(k.sum())
    seg = np.repeat(np.arange(len(runs)), k)
    r = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(k) - k, k)
    client = runs["client"].to_numpy(np.int64)[seg]
    nr = runs["n_requests"].to_numpy(np.int64)[seg]
    S = runs["first_tokens"].to_numpy(np.int64)[seg]
    decode = (runs["kind"].to_numpy() == "decode")[seg]
    t0 = runs["start_s"].to_numpy(float)[seg]
    clients = int(metrics["clients"])
    record = metrics["cost_model"]
    records = record if isinstance(record, list) else [record] * clients
    a_d = np.array([m["a_d"] for m in records])[client]
    b_d = np.array([m["b_d"] for m in records])[client]
    c_d = np.array([m["c_d"] for m in records])[client]
    base = a_d + b_d * nr
    start = t0 + (r * base + c_d * (r * S + nr * (r * (r - 1) // 2)))
    r1 = r + 1
    end = t0 + (r1 * base + c_d * (r1 * S + nr * (r1 * (r1 - 1) // 2)))
    single = (k == 1)[seg]
    start = np.where(single, t0, start)
    end = np.where(single, runs["end_s"].to_numpy(float)[seg], end)
    first_iteration = runs["first_iteration"].to_numpy(np.int64)[seg]
    return pd.DataFrame({
        "client": client, "iteration": first_iteration + r,
        "kind": np.where(decode, "decode", "prefill"), "start_s": start, "end_s": end,
        "n_requests": nr, "tokens": np.where(decode, S + r * nr, S),
        "request_ids": runs["request_ids"].to_numpy(object)[seg],
    })
