"""The requests as the engine tracks them: one flat list per field, indexed by trace row.

Flat lists rather than one object per request because the loop touches a few fields of
many requests per event, and a list index is the cheapest access Python has.  Times are
NaN until they happen; the counters are the run's totals.
"""

from __future__ import annotations

from heapq import heappop

import numpy as np

NAN = float("nan")


class RequestTable:
    """Per request: its lengths, where it is, and the times and counts the schedule reports.

    ``l``/``o`` are the true prompt and output lengths (only the engine reads ``o``);
    ``seen`` are the output lengths the schedulers see (predicted); ``w`` the dispatch
    weights.  The waiting queues hold integer *ranks* (position in queue order); a
    preempted request is queued under a negative rank that goes in front of every other
    (``preempted_rank`` maps it back).
    """

    __slots__ = ("n", "l", "o", "seen", "w", "rank", "by_rank", "ids_text", "client_of", "prefill_start",
                 "first_token", "finish", "pre_seg", "last_seg", "generated", "gen_base", "admit_seq",
                 "preemptions", "cached", "recomputed", "predicted_finish", "preempted_rank", "block_keys",
                 "admissions", "preempt_count", "finished", "stolen")

    def __init__(self, l: np.ndarray, o: np.ndarray, seen: np.ndarray, weights: np.ndarray, order_key: np.ndarray,
                 ids_text: list[str], block_keys: list[list] | None) -> None:
        n = len(l)
        self.n = n
        # Queue order as one integer rank per request (ties broken by trace row), so the waiting heaps
        # compare plain ints: several times faster than tuples whose keys often tie.
        by_rank = np.lexsort((np.arange(n), order_key))
        rank = np.empty(n, dtype=np.int64)
        rank[by_rank] = np.arange(n)
        self.rank, self.by_rank = rank.tolist(), by_rank.tolist()
        self.l, self.o, self.seen, self.w = l.tolist(), o.tolist(), seen.tolist(), weights.tolist()
        self.ids_text = ids_text  # ids as text, listed by the loop outside the paper's engine
        self.client_of = [-1] * n
        self.prefill_start = [NAN] * n
        self.first_token = [NAN] * n
        self.finish = [NAN] * n
        # Each request's prefill segment and the segment at whose end it finished: enough to list the
        # members of any segment later (see schedule.members.RunMembers), so none are stored per segment.
        self.pre_seg = [-1] * n
        self.last_seg = [-1] * n
        # Outside the paper's engine: tokens generated so far (for a request not decoding now), the decode
        # count it is referenced to while decoding (generated = decode_count - gen_base), the order of
        # admission, preemptions, cache hits and recomputed tokens.
        self.generated = [0] * n
        self.gen_base = [0] * n
        self.admit_seq = [0] * n
        self.preemptions = [0] * n
        self.cached = [0] * n
        self.recomputed = [0] * n
        self.predicted_finish = [0] * n  # decode count at which it is predicted to finish (shared by replicas)
        self.preempted_rank: dict[int, int] = {}
        self.block_keys = block_keys
        self.admissions = 0
        self.preempt_count = 0
        self.finished = 0
        self.stolen = 0

    def request_of_rank(self, r: int) -> int:
        return self.by_rank[r] if r >= 0 else self.preempted_rank[r]

    def pop_waiting(self, c) -> int:
        """Take the head of replica ``c``'s queue; return its request."""
        r = heappop(c.waiting)
        return self.by_rank[r] if r >= 0 else self.preempted_rank.pop(r)

    def peek_waiting(self, c) -> int:
        r = c.waiting[0]
        return self.by_rank[r] if r >= 0 else self.preempted_rank[r]

    def requeue_preempted(self, i: int) -> int:
        """The queue rank of preempted request ``i``: later preemptions go in front, as vLLM prepends."""
        self.preempt_count += 1
        rk = -self.preempt_count
        self.preempted_rank[rk] = i
        return rk

    def arrays(self) -> tuple[dict, dict]:
        """The members' segment positions and the per-request columns, as arrays."""
        members = {"pre_seg": np.array(self.pre_seg, dtype=np.int64),
                   "last_seg": np.array(self.last_seg, dtype=np.int64)}
        per_request = {"client": np.array(self.client_of, dtype=np.int64),
                       "prefill_start_s": np.array(self.prefill_start),
                       "first_token_s": np.array(self.first_token), "finish_s": np.array(self.finish)}
        return members, per_request

    # -- shards (engine.shards) ---------------------------------------------------------------------------------
    SHARD_FIELDS = ("client_of", "prefill_start", "first_token", "finish", "pre_seg", "last_seg", "generated",
                    "gen_base", "admit_seq", "preemptions", "cached", "recomputed", "predicted_finish")
    SEGMENT_FIELDS = ("pre_seg", "last_seg")  # segment indices: moved with the shard's segments

    def shard_state(self, rows: list[int]) -> dict:
        """What a shard's run wrote of its requests (``rows``) and the counters it moved."""
        state = {name: [getattr(self, name)[i] for i in rows] for name in self.SHARD_FIELDS}
        state["counts"] = (self.admissions, self.preempt_count, self.finished, self.stolen)
        return state

    def set_shard_state(self, rows: list[int], state: dict, segment_offset: int) -> None:
        """Take a shard's requests as its process left them; its segments start at ``segment_offset`` here."""
        for name in self.SHARD_FIELDS:
            values, target = state[name], getattr(self, name)
            if name in self.SEGMENT_FIELDS:
                values = [v + segment_offset if v >= 0 else v for v in values]
            for i, v in zip(rows, values):
                target[i] = v
        admissions, preempt_count, finished, stolen = state["counts"]
        # Admission and preemption numbers order requests within one replica only: any increasing count will do.
        self.admissions += admissions
        self.preempt_count += preempt_count
        self.finished += finished
        self.stolen += stolen

    def move_segments(self, where) -> None:
        """The segments were reordered: segment ``k`` is now ``where[k]``."""
        for name in self.SEGMENT_FIELDS:
            values = getattr(self, name)
            values[:] = [int(where[v]) if v >= 0 else v for v in values]

    def free(self) -> None:
        """Drop the lists once they are arrays (at a million requests they hold about 0.4 GB of objects)."""
        for spent in (self.pre_seg, self.last_seg, self.client_of, self.prefill_start, self.first_token,
                      self.finish, self.l, self.o, self.w, self.seen, self.rank, self.by_rank,
                      self.predicted_finish):
            spent.clear()
