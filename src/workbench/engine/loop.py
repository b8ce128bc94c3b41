"""The engine: the event loop over the clock, the replicas, the router, the iteration former and the recorder.

Speed comes from one observation.  Between two batch changes on a replica (a prefill, a
completion) its decode iterations run the same requests, and each one reads ``n`` more
context tokens than the one before, so with the linear cost model a run of ``k`` decodes
takes, in closed form,

    k (a_d + b_d n) + c_d (k S + n k (k-1) / 2)

where ``S`` is the context read by the first.  The loop advances over the run in one step
and its events are batch changes, not iterations.  The exported timeline still has one row
per iteration, rebuilt exactly from the same formula
(:func:`workbench.schedule.schema.expand_runs`), so start and end times agree bit for bit
with the clock the engine kept.  A run is cut short when a request arrives at a replica with
free slots (so that the iteration rule can react at the next boundary) and, with paged KV,
where the running requests' next block would not fit.  Mixed iterations take such runs where
no decision can happen (see ``MixedFormer._decode_run``); their timeline is the stepped one, byte
for byte (``engine.assemble.stepped_rows``).

A caller may drive the loop (``Engine.step()``, ``Engine.run(until_s=...)``), read
the replicas between steps (``Engine.replicas``), answer the iteration decisions itself
(``decisions="external"``), and add or drain replicas while it runs.  A whole ``run()`` from the start of
a run whose replicas never interact goes through this loop once per shard of its replicas, in parallel
processes (:mod:`workbench.engine.shards`).
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass
from heapq import heappop, heappush

from workbench.engine.hooks import Decision
from workbench.engine.replica import ReplicaView
from workbench.engine.shards import ShardedRun
from workbench.errors import ConfigError
from workbench.policies.registry import HOLD


@dataclass(frozen=True)
class Step:
    """What one :meth:`Engine.step` did: the instant it reached and what happened there."""

    time_s: float
    arrivals: int  # requests that arrived (and were routed or held)
    segments: int  # iterations, runs of decodes and preemptions formed
    decision: Decision | None  # the decision the engine waits for (external decisions), if any
    done: bool


class Engine:
    """One run of a trace on a set of replicas; built by :func:`workbench.engine.core.build_engine`."""

    def __init__(self, *, trace, replicas, requests, clock, recorder, former, dispatcher, rule, stealing,
                 mixed: bool, external: bool, new_replica, finish, bar=None, shards=None) -> None:
        self.trace = trace
        self._replicas = replicas  # Replica objects; the list grows with add_replica
        self.requests, self.clock, self.recorder, self.former = requests, clock, recorder, former
        self.dispatcher, self.rule, self.stealing = dispatcher, rule, stealing
        self._cut_runs = True  # a run of decodes (closed form, either mode) is cut where a request arrives
        self.external = external
        self._new_replica = new_replica  # (cost_model, batch_size, kv_capacity_tokens) -> Replica
        self._finish = finish  # (engine) -> Schedule
        self._bar = bar
        self._next_epoch = getattr(dispatcher, "next_epoch_s", None)
        self._loop_now = 0.0  # the time of the last event the loop took (what decision epochs are asked at)
        self._now = 0.0  # the caller's clock: the same, or the ``until_s`` a run stopped at
        self._ids: list[str] | None = None
        self._pending: tuple | None = None  # (replica, time, admissible) awaiting decide()
        self._changed = False  # whether replicas came or went (the schedule then lists their lives)
        self.done = False
        self._schedule = None
        self._shards = shards  # a ShardPlan (engine.shards): a whole run() from the start runs in parallel shards

    # -- reading it -------------------------------------------------------------------------------------
    @property
    def now_s(self) -> float:
        return self._now

    @property
    def replicas(self) -> tuple[ReplicaView, ...]:
        return tuple(self._view(c) for c in self._replicas)

    def _view(self, c) -> ReplicaView:
        if self._ids is None:
            self._ids = self.requests.ids_text or self.trace["request_id"].astype(str).tolist()
        return ReplicaView(c, self._ids, self.requests)

    @property
    def pending_decision(self) -> Decision | None:
        if self._pending is None:
            return None
        c, now, admissible = self._pending
        return Decision(now, c.index, admissible, c.n_running == 0, self._view(c))

    # -- driving it -------------------------------------------------------------------------------------
    def run(self, until_s: float | None = None) -> Decision | None:
        """Process every event up to ``until_s`` (all of them by default); stop early at a decision."""
        self._refuse_if_waiting()
        # The loop allocates many small objects and frees them in order, so the cyclic collector only costs it
        # time (about 10% of a large vllm run): paused while it runs.
        collecting = gc.isenabled()
        gc.disable()
        try:
            if until_s is None and self._shards is not None and self._untouched():
                self.done = ShardedRun(self, self._shards).run()
            else:
                self.done = self._advance(math.inf if until_s is None else float(until_s))
            self._shards = None
        finally:
            if collecting:
                gc.enable()
        if until_s is not None and not self.done and self._pending is None:
            self._now = max(self._now, float(until_s))
        return self.pending_decision

    def step(self) -> Step:
        """Advance to the next instant with an event and process what happens there."""
        self._refuse_if_waiting()
        arrived, formed = self.clock.next_arrival, len(self.recorder)
        t = self._next_time()
        self.done = t == math.inf or self._advance(t)
        return Step(self._now, self.clock.next_arrival - arrived, len(self.recorder) - formed,
                    self.pending_decision, self.done)

    def decide(self, admit: int) -> None:
        """Answer the pending decision: prefill ``admit`` waiting requests now (0: decode)."""
        decision = self.pending_decision
        if decision is None:
            raise ConfigError("no decision is pending.", field="admit",
                              fix="call decide() only after step() or run() returned a Decision.")
        m = decision.check(admit)
        c, now, _ = self._pending
        self._pending = None
        if self.former.form(c, now, m):
            self._after_boundary(c, now)
        else:
            self._boundary(c, now)

    def schedule(self):
        """The finished run as a :class:`~workbench.schedule.schema.Schedule` (runs to the end first)."""
        if self._schedule is not None:
            return self._schedule
        if not self.done:
            self.run()  # refuses while a decision is pending
            if not self.done:
                raise ConfigError("the run is waiting for a decision.", field="admit",
                                  fix="answer each with decide(k) until run() returns None.")
        self._schedule = self._finish(self)
        return self._schedule

    def _untouched(self) -> bool:
        clock = self.clock
        return clock.next_arrival == 0 and not clock.events and not len(self.recorder) and not self._changed

    def _refuse_if_waiting(self) -> None:
        if self._pending is not None:
            raise ConfigError("the engine is waiting for a decision.", field="admit",
                              fix="answer it with decide(k) before stepping on.")

    def _next_time(self) -> float:
        t = self.clock.next_event_s()
        if self._next_epoch is not None:
            t = min(t, self._next_epoch(self._loop_now, self._replicas))
        return t

    # -- the loop ---------------------------------------------------------------------------------------
    def _advance(self, until_s: float) -> bool:
        """Take events in time order up to ``until_s``; return whether every event has been taken."""
        clock = self.clock
        events, arrival_s, arrival_order, arrival_rank = clock.events, clock.arrival_s, clock.arrival_order, clock.rank
        state = self._replicas
        next_epoch = self._next_epoch
        assign, enqueue, boundary = self.dispatcher.assign, self._enqueue, self._boundary
        # The paper's engine with the rule deciding forms each iteration in one call (its hot path).
        classic = (self.former.classic_boundary if self.former.classic and not self.external
                   and self.stealing is None else None)
        admit, after_boundary = self.rule.admit, self._after_boundary
        complete = self.former.complete
        bar, loops, rq = self._bar, 0, self.requests
        inf = math.inf
        ptr, now = clock.next_arrival, self._loop_now
        ended = False
        while True:
            if bar is not None:
                loops += 1
                if not loops & 16383:
                    bar.n = rq.finished
                    bar.refresh()
            t_arr = arrival_s[ptr]
            t_ev = events[0][0] if events else inf
            t_ep = next_epoch(now, state) if next_epoch is not None else inf
            if t_arr == inf and t_ev == inf and t_ep == inf:
                ended = True
                break
            nxt = min(t_arr, t_ev, t_ep)
            if nxt > until_s:
                break
            now = nxt
            if t_ep < t_arr and t_ep <= t_ev:
                for i, j in self.dispatcher.release(t_ep, state):
                    enqueue(i, j, t_ep, len(arrival_order) + clock.seq)  # after every arrival of the instant
                continue
            if t_arr <= t_ev:
                # Arrivals first at equal times, so a boundary sees every request that has arrived.  Without
                # decision epochs every arrival of this instant is taken now: what they push is at t_arr or
                # later, so the loop would take them next anyway.
                while True:
                    i = arrival_order[ptr]
                    ptr += 1
                    j = int(assign(i, t_arr, state))
                    if j == HOLD and next_epoch is not None:
                        break
                    enqueue(i, j, t_arr, arrival_rank[ptr - 1])
                    if next_epoch is not None or arrival_s[ptr] != t_arr:
                        break
                continue
            t, _, j, version = heappop(events)
            if j < 0:
                if self._join(state[~j], t):
                    break
                continue
            c = state[j]
            if version != c.version:
                continue
            complete(c)
            if classic is not None:
                classic(c, t, admit)
                if c.draining:
                    after_boundary(c, t)
            elif boundary(c, t):
                break  # an outside caller decides
        clock.next_arrival, self._loop_now, self._now = ptr, now, max(now, self._now)
        if ended and bar is not None:
            bar.n = rq.finished
            bar.close()
        return ended

    def _boundary(self, c, now: float) -> bool:
        """Replica ``c`` is at an iteration boundary: form its next iteration.  True when a caller must decide."""
        former = self.former
        while True:
            admissible = former.prepare(c, now)
            if admissible > 0:
                if self.external:
                    self._pending = (c, now, admissible)
                    return True
                # The rule's answer: at most ``admissible``; an empty replica always refills, or it would idle.
                m = int(self.rule.admit(c))
                if m <= 0 and c.n_running == 0:
                    m = admissible
                elif m > admissible:
                    m = admissible
            else:
                m = 0
            if former.form(c, now, m):
                break
        if c.draining:
            self._after_boundary(c, now)
        return False

    def _after_boundary(self, c, now: float) -> None:
        if c.draining and not c.pending and not c.holds_work():
            c.left_s = now  # drained: it leaves at its last boundary

    def _enqueue(self, i: int, j: int, t: float, key: int) -> None:
        """Queue request ``i`` at replica ``j`` at time ``t`` (an arrival, or a release of a held request).

        ``key`` orders what the request pushes among the pushes of the instant (Recorder.marks): its position in
        the run's arrival order, or past every arrival for a release; so the order is the same when the replicas
        run in shards, each with its own clock (engine.shards)."""
        state = self._replicas
        if not 0 <= j < len(state):
            raise ConfigError(f"dispatcher sent request row {i} to client {j}.", field="dispatch",
                              fix=f"a dispatcher must return 0..{len(state) - 1}.")
        c = state[j]
        if not c.accepting:
            c = self._reroute()
        rq = self.requests
        rq.client_of[i] = c.index
        heappush(c.waiting, rq.rank[i])
        c.outstanding_s += rq.w[i]
        if not c.pending:
            clock = self.clock  # clock.at(c, ...) inlined: once per arrival
            c.version += 1
            c.pending = True
            clock.seq += 1
            c.push_mark = (t, 0, key)
            heappush(clock.events, (max(c.clock_s, t), clock.seq, c.index, c.version))
        else:
            if c.n_running < c.batch_size and self._cut_runs:
                self.former.cut_run_at(c, t)
            if self.stealing is not None:
                self.stealing.wake_idle(t)  # the request queues at a busy replica: an idle one may steal it

    def _reroute(self):
        best, best_load = None, math.inf
        for c in self._replicas:
            if c.accepting and c.outstanding_s / c.speed < best_load:
                best, best_load = c, c.outstanding_s / c.speed
        if best is None:
            raise ConfigError("no replica accepts requests (every one is loading, draining or gone).",
                              field="replicas", fix="add a replica, or drain fewer.")
        return best

    # -- replicas that come and go -----------------------------------------------------------------------
    def add_replica(self, cost_model, batch_size: int, kv_capacity_tokens: int | None = None, *,
                    ready_at_s: float | None = None) -> int:
        """A new replica, held from now and serving from ``ready_at_s`` (default: now); returns its index."""
        ready = self._now if ready_at_s is None else float(ready_at_s)
        if not ready >= self._now:
            raise ConfigError(f"ready_at_s {ready_at_s!r} is before the engine's clock ({self._now:.6f} s).",
                              field="ready_at_s", fix="give a time at or after engine.now_s.")
        c = self._new_replica(cost_model, batch_size, kv_capacity_tokens, len(self._replicas))
        c.added_s, c.ready_s, c.clock_s = self._now, ready, ready
        c.accepting = False
        self._replicas.append(c)
        self._changed = True
        self.clock.ready_at(c.index, ready)
        c.push_mark = (self._now, 2, self.clock.seq)
        self.done = False
        return c.index

    def drain_replica(self, j: int) -> None:
        """Replica ``j`` takes no new requests, finishes those it holds (queued and running), then leaves."""
        if not (isinstance(j, int) and 0 <= j < len(self._replicas)):
            raise ConfigError(f"replica {j!r} does not exist.", field="replica",
                              fix=f"give 0..{len(self._replicas) - 1}.")
        c = self._replicas[j]
        if c.draining or c.left_s == c.left_s:
            raise ConfigError(f"replica {j} is already {c.state}.", field="replica", fix="drain it once.")
        arrivals_left = self.clock.arrival_s[self.clock.next_arrival] < math.inf
        if not any(v.accepting and v is not c for v in self._replicas) and arrivals_left:
            raise ConfigError(f"replica {j} is the last one accepting requests, and requests are still to come.",
                              field="replica", fix="add a replica first, or drain it after the last arrival.")
        loading = not c.accepting
        c.draining, c.accepting = True, False
        self._changed = True
        if loading:
            c.left_s = self._now  # it never served
        elif not c.pending and not c.holds_work():
            c.left_s = max(self._now, c.clock_s)

    def _join(self, c, t: float) -> bool:
        """An added replica is ready at ``t``: it serves from now on (unless it was drained meanwhile)."""
        if c.left_s == c.left_s:
            return False  # drained while it loaded
        c.accepting = True
        c.clock_s = t
        return self._boundary(c, t) if (c.waiting or self.stealing is not None) else False
