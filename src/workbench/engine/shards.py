"""Shards: a run whose replicas never interact, split over processes that run the same loop.

When the router's choice does not depend on the replicas' state (round-robin, or an assignment made
before the run: a dispatcher with ``in_advance``) and nothing else couples them (no work stealing, no
lock-step group, no pools, no outside decisions, no replicas added), no replica's events change
another's: the run is the union of its replicas' own runs.  Its replicas are then split into shards of
about equal work; each shard's loop (``Engine._advance``, the one loop) takes only its own requests'
arrivals, the first shard in this process and the others in forked copies of it, and the shards'
segments, requests and replicas are gathered into this engine as if it had run them all.

The schedule is the one process's, byte for byte.  Each replica's segments are in its own order in any
shard; the timeline's order across replicas is rebuilt from what pushed each boundary
(:func:`~workbench.engine.assemble.stepped_order`), and an arrival's key is its position in the run's
arrival order, the same in every shard (``EventClock.rank``).  Where the recorder's own order is the
timeline's (mixed iterations with no run of decodes), the gathered segments are put in that order.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass

import numpy as np

from workbench.engine.assemble import previous_iteration, stepped_order
from workbench.errors import ConfigError
from workbench.policies.builtin import Assigned

#: Below this many requests a run is not split unless ``workers`` asks: a fork and the gathering cost
#: tens of milliseconds, about what a fifth of the loop over 20,000 requests takes.
SHARD_MIN_REQUESTS = 20_000


def cores_available() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def can_fork() -> bool:
    return hasattr(os, "fork") and sys.platform != "darwin"  # macOS: system libraries may not survive a fork


def workers_option(workers) -> int | None:
    if workers is None:
        return None
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ConfigError(f"workers {workers!r} is not a positive integer.", field="workers",
                          fix="give 1 (one process), 2 or more, or leave it out (as many as help).")
    return int(workers)


@dataclass(frozen=True)
class ShardPlan:
    """Replicas split into shards: ``groups`` (replica indices per shard) and each request's replica."""

    groups: list[list[int]]
    client: np.ndarray

    def arrivals(self, arrival_s: list[float], arrival_order: list[int], rank: list[int], group: list[int]):
        """One shard's part of the clock's arrivals (times with the sentinel, requests, their global positions)."""
        mine = np.isin(self.client[np.asarray(arrival_order, dtype=np.int64)], group)
        where = np.flatnonzero(mine)
        times = np.asarray(arrival_s[:-1])[where].tolist()
        times.append(arrival_s[-1])
        return times, np.asarray(arrival_order)[where].tolist(), np.asarray(rank)[where].tolist()


def shard_plan(workers: int | None, *, n_requests: int, weights, replicas, dispatcher, arrival_order, coupled: str
               ) -> ShardPlan | None:
    """The shards of a run (None: one process).  ``coupled`` names what ties the replicas together ("" if
    nothing does); ``workers=None`` splits only large runs, over the cores this process may use."""
    if workers == 1:
        return None
    in_advance = getattr(dispatcher, "in_advance", None)
    reason = coupled or ("" if in_advance is not None else "its router reads the replicas' state")
    if reason == "" and not can_fork():
        reason = "this platform cannot fork the engine"
    if workers is None:
        # Only from the main thread: in a worker thread (a Dask worker's, a server's) this process is already
        # one of several sharing the cores, and forking beside other threads' work is not safe.
        if reason or n_requests < SHARD_MIN_REQUESTS or threading.current_thread() is not threading.main_thread():
            return None
        workers = min(cores_available(), len(replicas))
        if workers < 2:
            return None
    elif reason:
        raise ConfigError(f"workers {workers} needs replicas that never interact, but {reason}.", field="workers",
                          fix="leave workers out (or give 1) for this run.")
    elif workers > len(replicas):
        raise ConfigError(f"workers {workers} is more than the run's {len(replicas)} replicas.", field="workers",
                          fix=f"give at most {len(replicas)}.")
    client = np.asarray(in_advance(arrival_order, len(replicas)), dtype=np.int64)
    return ShardPlan(balanced_groups(np.bincount(client, weights=weights, minlength=len(replicas)), workers), client)


#: A forked shard's loop runs about this much longer than the same work here: it copies each page of memory
#: it first writes (shared with this process until then), and it pickles what it recorded.  Measured on the
#: vllm policy, 100,000 requests on 64 replicas (benchmarks/bench_vllm.py): 1.40-1.51 s against 1.17 s.
FORKED_SLOWDOWN = 1.25


def balanced_groups(work: np.ndarray, shards: int) -> list[list[int]]:
    """Consecutive replicas in ``shards`` groups (each at least one replica), the first (run in this process)
    with ``FORKED_SLOWDOWN`` times the work of each other one, so that all end at about the same time."""
    share = np.full(shards, 1.0)
    share[0] = FORKED_SLOWDOWN
    targets = work.sum() * np.cumsum(share)[:-1] / share.sum()
    cut = np.searchsorted(np.cumsum(work), targets, side="right")
    first, last = np.arange(1, shards), len(work) - shards + np.arange(1, shards)
    cut = np.minimum(np.maximum.accumulate(np.maximum(cut, first)), last)
    bounds = [0, *cut.tolist(), len(work)]
    return [list(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]


class ShardedRun:
    """One ``run()`` of an engine over its shards: forks, runs its own, gathers the others'."""

    def __init__(self, engine, plan: ShardPlan) -> None:
        self.engine, self.plan = engine, plan
        clock = engine.clock
        self.full = (clock.arrival_s, clock.arrival_order, clock.rank)
        self.parts = [plan.arrivals(*self.full, group) for group in plan.groups]

    def run(self) -> bool:
        engine, clock = self.engine, self.engine.clock
        children: dict[int, tuple[int, int]] = {}  # shard -> (process, its pipe), until gathered
        try:
            for s in range(1, len(self.parts)):
                children[s] = self._fork(s)
            if engine._bar is not None:
                engine._bar.total = len(self.parts[0][1])  # the part this process runs
                engine._bar.set_description(f"simulating (1 of {len(self.parts)} shards)")
            started = time.perf_counter()
            ended = self._run_part(0)
            # A shard's process runs about as long as this one's part: one far longer than that is stuck.
            patience_s = 60.0 + 20.0 * (time.perf_counter() - started)
            for s in list(children):
                pid, reading = children.pop(s)
                self._gather(s, pid, reading, patience_s)
        finally:
            for pid, reading in children.values():  # an error here: stop the others
                os.close(reading)
                _reap(pid, kill=True)
            clock.arrival_s, clock.arrival_order, clock.rank = self.full
            clock.next_arrival = len(clock.arrival_order)
        engine._loop_now = engine._now
        self.in_formation_order()
        return ended

    def _run_part(self, s: int) -> bool:
        """Run shard ``s``'s arrivals through the loop, each to the replica the router gave it in advance."""
        engine, clock = self.engine, self.engine.clock
        clock.arrival_s, clock.arrival_order, clock.rank = self.parts[s]
        clock.next_arrival = 0
        router, engine.dispatcher = engine.dispatcher, Assigned(self.plan.client)
        try:
            return engine._advance(float("inf"))
        finally:
            engine.dispatcher = router

    def _fork(self, s: int) -> tuple[int, int]:
        reading, writing = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: forking a process that has threads
            pid = os.fork()
        if pid == 0:  # the shard's process: run, send what it recorded, leave without tidying up
            try:
                os.close(reading)
                self._child(s, writing)
            finally:
                os._exit(0)  # whatever happened, never return into the caller's code in a second process
        os.close(writing)
        return pid, reading

    def _child(self, s: int, writing: int) -> None:
        try:
            self.engine._bar = None
            self._run_part(s)
            data = pickle.dumps(("ok", self._result(s)), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:  # noqa: BLE001  (sent to the caller, which raises it)
            try:
                data = pickle.dumps(("error", exc))
            except Exception:  # noqa: BLE001  (an exception that does not pickle: its text)
                data = pickle.dumps(("error", RuntimeError(f"shard {s + 1}: {exc!r}")))
        with os.fdopen(writing, "wb") as out:
            out.write(data)

    def _result(self, s: int) -> dict:
        engine = self.engine
        return {"recorder": engine.recorder.shard_fields(),
                "requests": engine.requests.shard_state(self.parts[s][1]),
                "replicas": [engine._replicas[j].run_state() for j in self.plan.groups[s]],
                "seq": engine.clock.seq, "now": engine._loop_now}

    def _gather(self, s: int, pid: int, reading: int, patience_s: float) -> None:
        data = _read_all(reading, patience_s)
        _reap(pid, kill=data is None)
        if not data:  # the process died (killed, out of memory) or hung: its replicas are untouched here
            warnings.warn(f"shard {s + 1} of {len(self.parts)} ended without a result; running it in this process.",
                          RuntimeWarning, stacklevel=4)
            self._run_part(s)
            return
        status, result = pickle.loads(data)
        if status == "error":
            raise result
        engine = self.engine
        offset = engine.recorder.append_shard(result["recorder"])
        engine.requests.set_shard_state(self.parts[s][1], result["requests"], offset)
        for j, state in zip(self.plan.groups[s], result["replicas"]):
            engine._replicas[j].set_run_state(state, offset)
        engine.clock.seq += result["seq"]  # later pushes stay after every earlier one
        engine._loop_now = max(engine._loop_now, result["now"])
        engine._now = max(engine._now, result["now"])

    def in_formation_order(self) -> None:
        """Mixed iterations with no run of decodes list the timeline in the recorder's order: the order in which
        one loop would have formed the gathered segments (the stepped order of single iterations)."""
        rec = self.engine.recorder
        if rec.marks is None or rec.run_ends:
            return
        client = np.array(rec.client, dtype=np.int64)
        rows = {"start_s": np.array(rec.start, dtype=float), "client": client}
        previous = previous_iteration(client, np.array(rec.kind, dtype=np.int8))
        order = stepped_order(rows, rec.marks, lambda row: int(previous[row])).tolist()
        rec.reorder(order)
        where = np.empty(len(order), dtype=np.int64)
        where[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
        self.engine.requests.move_segments(where)
        for c in self.engine._replicas:
            if type(c.current) is int and c.current >= 0:
                c.current = int(where[c.current])


def _read_all(fd: int, patience_s: float) -> bytes | None:
    """Everything a shard's process sends until it closes its end (None: nothing for ``patience_s``)."""
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], patience_s)
            if not ready:
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def _reap(pid: int, kill: bool) -> None:
    """Wait for a shard's process to end (``kill``: end it first, its result no longer wanted)."""
    if kill:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # already reaped
        pass
