"""A client (model replica) as the engine keeps it: its queue, running batch, KV use and clock."""

from __future__ import annotations

from workbench.costmodel.linear import LinearCostModel, takes_longest_context


class ClientState:
    """One client (model replica): its queue, running batch and clock.

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
                 "prefilling_index", "ids_cache", "skew_aware", "rule_model")

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
