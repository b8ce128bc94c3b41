"""A replica (the paper's *client*: one copy of the model on its GPUs) as the engine keeps it, and its view.

:class:`Replica` is the engine's own state: queue, running batch, KV use, clock, and where
it is in its life (loading, serving, draining, gone).  :class:`ReplicaView` is what a caller
outside the engine may read of it between steps: the same facts, read-only, with request ids
instead of engine rows.
"""

from __future__ import annotations

from array import array
from collections import deque

from workbench.costmodel.linear import LinearCostModel, takes_longest_context


class Replica:
    """One replica: its queue, running batch, KV use and clock.

    Iteration rules read ``batch_size``, ``n_running``, ``n_waiting``,
    ``free_slots``, ``admissible``, ``cost_model`` and, to look ahead,
    :meth:`predicted_finish_counts` (what a scheduler may know: the running
    requests' *predicted* lengths; ``running`` holds the true ones, which only
    the simulator reads).
    """

    __slots__ = ("index", "batch_size", "cost_model", "kv_capacity_tokens", "speed", "waiting", "running",
                 "n_running", "ctx_sum", "decode_count", "clock_s", "outstanding_s", "kv_reserved_tokens",
                 "current", "version", "pending", "admissible", "_just_prefilled", "linear",
                 "a_p", "b_p", "a_d", "b_d", "c_d", "a_m", "predicted_finish", "paged", "prefilling",
                 "prefilling_index", "ids_cache", "skew_aware", "rule_model", "accepting", "draining", "added_s",
                 "ready_s", "left_s", "forming", "async_cutoff_s", "async_freed", "push_mark", "member_ranks",
                 "role", "incoming", "inflight", "held_out")

    def __init__(self, index: int, batch_size: int, cost_model: LinearCostModel,
                 kv_capacity_tokens: int | None, speed: float) -> None:
        self.index = index
        self.batch_size = batch_size
        self.cost_model = cost_model
        self.kv_capacity_tokens = kv_capacity_tokens
        self.speed = speed
        self.waiting: list[int] = []  # heap of queue ranks (position in queue order; see ``by_rank``)
        self.running: list[tuple[int, int]] = []  # heap of (decode count at which it finishes, request)
        self.n_running = 0
        self.ctx_sum = 0  # context tokens the next decode reads
        self.decode_count = 0
        self.clock_s = 0.0
        self.outstanding_s = 0.0
        self.kv_reserved_tokens = 0
        self.current: list | None = None  # the segment in progress
        self.version = 0
        self.pending = False
        self.admissible = 0
        self._just_prefilled: list[int] = []
        # Per request (shared by all clients): the decode count at which it is predicted to finish.
        self.predicted_finish: list[int] = []
        # Cached coefficients: the closed-form runs need them at every batch change.
        self.linear = type(cost_model) is LinearCostModel
        self.a_p, self.b_p, self.a_d, self.b_d, self.c_d = (
            (cost_model.a_p, cost_model.b_p, cost_model.a_d, cost_model.b_d, cost_model.c_d)
            if self.linear else (0.0,) * 5)
        self.a_m = max(self.a_p, self.a_d)  # the fixed cost of a mixed iteration (MODEL.md section 2.1)
        # What the iteration rules price with: the linear model itself, or a measured model's linear lower model.
        self.rule_model = cost_model if self.linear else (getattr(cost_model, "bound_model", lambda: None)()
                                                           or cost_model)
        # Outside the paper's engine: the paged-KV manager (kv="paged"), the prompts part-way through
        # their chunked prefill ([request, tokens computed], admission order; mixed iterations) and the
        # running requests' ids as the last row listed them.
        self.paged = None
        self.prefilling: list[list[int]] = []
        self.prefilling_index: dict[int, list[int]] = {}
        self.ids_cache: str | None = None
        # Whether the cost model's iteration_time takes the longest decode context (measured kernels do).
        self.skew_aware = not self.linear and takes_longest_context(cost_model)
        # Its life (MODEL.md section 11.4): held from added_s, serving from ready_s, gone at left_s (NaN while
        # it is held).  A draining replica takes no new requests and leaves once it holds none.
        self.accepting = True
        self.draining = False
        self.added_s = 0.0
        self.ready_s = 0.0
        self.left_s = float("nan")
        self.forming = None  # a mixed iteration's state between its two phases (see engine.formers)
        # vLLM's async scheduling (mixed iterations): the start of the iteration in flight, before which a
        # request must have queued to join the next one (inf: nothing in flight), and the requests that
        # finished at the last iteration end, whose slots and blocks come back one iteration later.
        self.async_cutoff_s = float("inf")
        self.async_freed: list[tuple[int, int]] = []
        # What pushed its pending boundary (mixed iterations; see Recorder.marks): -1 its own last iteration.
        self.push_mark = -1
        self.member_ranks = array("q")  # the running decodes' id ranks, sorted (outside the paper's engine)
        # Its pool (MODEL.md section 11.11; engine.pools): mixed (prefills and decodes its own requests), prefill
        # or decode.  A decode replica's prefilled requests waiting for a transfer (first come, first served)
        # and its transfers in flight (a heap of (end, request)); a prefill replica's requests whose prompt KV
        # it holds until their transfer ends (a heap of (end, request)).
        self.role = "mixed"
        self.incoming: deque[int] = deque()
        self.inflight: list[tuple[float, int]] = []
        self.held_out: list[tuple[float, int]] = []

    #: What a run changes (the rest is the replica's make, fixed when it is built); engine.shards moves it.
    RUN_STATE = ("waiting", "running", "n_running", "ctx_sum", "decode_count", "clock_s", "outstanding_s",
                 "kv_reserved_tokens", "current", "version", "pending", "admissible", "_just_prefilled", "paged",
                 "prefilling", "prefilling_index", "ids_cache", "accepting", "draining", "added_s", "ready_s",
                 "left_s", "forming", "async_cutoff_s", "async_freed", "push_mark", "member_ranks", "role",
                 "incoming", "inflight", "held_out")

    def run_state(self) -> dict:
        return {name: getattr(self, name) for name in self.RUN_STATE}

    def set_run_state(self, state: dict, segment_offset: int) -> None:
        for name, value in state.items():
            setattr(self, name, value)
        if type(self.current) is int and self.current >= 0:
            self.current += segment_offset  # its last segment's index, now among this run's

    @property
    def state(self) -> str:
        if self.left_s == self.left_s:
            return "gone"
        if self.draining:
            return "draining"
        return "serving" if self.accepting else "loading"

    def holds_work(self) -> bool:
        return bool(self.waiting or self.running or self.prefilling)

    @property
    def n_waiting(self) -> int:
        return len(self.waiting)

    @property
    def free_slots(self) -> int:
        return self.batch_size - self.n_running

    def remaining_decodes(self) -> list[int]:
        """Decode iterations each running request still needs, smallest first."""
        d = self.decode_count
        return sorted(f - d for f, _ in self.running)

    def iterations_to_next_completion(self) -> int:
        return self.running[0][0] - self.decode_count if self.running else 0

    def predicted_finish_counts(self) -> list[int]:
        """Predicted decode counts at which the running requests finish, smallest first.

        From the predicted output lengths (equal to the true ones with exact
        predictions).  A request that has outlived its prediction is expected
        to finish at the next iteration, ``decode_count + 1``.
        """
        pf = self.predicted_finish
        finish = sorted([pf[i] for _, i in self.running])
        d = self.decode_count
        if finish and finish[0] <= d:
            finish = [f if f > d else d + 1 for f in finish]
        return finish

    def predicted_iterations_to_next_completion(self) -> int:
        """Iterations to the first predicted completion (at least 1 while requests run)."""
        if not self.running:
            return 0
        pf = self.predicted_finish
        return max(1, min([pf[i] for _, i in self.running]) - self.decode_count)


#: The name the engine's replicas had before they were objects of their own (kept importable).
ClientState = Replica


class ReplicaView:
    """Read-only: what a router, a controller or an agent may know of a replica between steps.

    It satisfies :class:`~workbench.policies.registry.ClientView`, so any iteration rule can
    be asked what it would do (``RULES["lagrangian"]().admit(view)``).  ``waiting_ids`` and
    ``running_ids`` are the trace's request ids (queue order; admission order).  True output
    lengths are not here: ``predicted_finish_counts`` gives what a scheduler may know.
    """

    __slots__ = ("_r", "_ids")

    def __init__(self, replica: Replica, ids_text: list[str], requests) -> None:
        self._r = replica
        self._ids = (ids_text, requests)

    def __repr__(self) -> str:
        r = self._r
        return (f"ReplicaView({r.index}, {self.state}, clock {r.clock_s:.4f} s, running {r.n_running}/"
                f"{r.batch_size}, waiting {len(r.waiting)}, kv {self.kv_used_tokens} tokens)")

    index = property(lambda self: self._r.index)
    role = property(lambda self: self._r.role, doc="mixed, prefill or decode (MODEL.md section 11.11)")
    state = property(lambda self: self._r.state)
    clock_s = property(lambda self: self._r.clock_s, doc="when its last iteration boundary was")
    batch_size = property(lambda self: self._r.batch_size)
    cost_model = property(lambda self: self._r.cost_model)
    rule_model = property(lambda self: self._r.rule_model)
    speed = property(lambda self: self._r.speed)
    outstanding_s = property(lambda self: self._r.outstanding_s, doc="predicted work queued and running, s")
    admissible = property(lambda self: self._r.admissible, doc="how many waiting requests fit now")
    decode_count = property(lambda self: self._r.decode_count)
    n_running = property(lambda self: self._r.n_running)
    n_waiting = property(lambda self: len(self._r.waiting))
    free_slots = property(lambda self: self._r.batch_size - self._r.n_running)
    kv_capacity_tokens = property(lambda self: self._r.kv_capacity_tokens)
    added_s = property(lambda self: self._r.added_s)
    ready_s = property(lambda self: self._r.ready_s)
    left_s = property(lambda self: self._r.left_s)

    @property
    def kv_used_tokens(self) -> int:
        """KV tokens held: reserved ones, or blocks in use times the block size (paged)."""
        r = self._r
        return r.paged.used * r.paged.block_size if r.paged is not None else r.kv_reserved_tokens

    @property
    def waiting_ids(self) -> list[str]:
        ids, rq = self._ids
        return [ids[rq.request_of_rank(x)] for x in sorted(self._r.waiting)]

    @property
    def running_ids(self) -> list[str]:
        ids, rq = self._ids
        rows = sorted([i for _, i in self._r.running] + [e[0] for e in self._r.prefilling],
                      key=lambda i: rq.admit_seq[i])
        return [ids[i] for i in rows]

    def predicted_finish_counts(self) -> list[int]:
        return self._r.predicted_finish_counts()

    def predicted_iterations_to_next_completion(self) -> int:
        return self._r.predicted_iterations_to_next_completion()
