"""The recorder: the segments a run produced, one flat list per field, turned into a ``Schedule`` at the end.

A *segment* is a prefill stage, a run of decode iterations between two batch changes
(``k`` iterations in closed form), a mixed iteration, or a preemption (a moment).  In the
paper's engine a segment's members are not stored: each request's admitting and last
segment are enough (:class:`~workbench.schedule.members.RunMembers`).  Outside it a request
may leave and rejoin a batch or prefill in chunks, so every segment records its members, its
prompt pieces and their tokens already in the KV cache as text, as it is formed.
"""

from __future__ import annotations

from array import array
from heapq import heappush

import numpy as np

PREFILL, DECODE, MIXED, PREEMPT = 0, 1, 2, 3
KIND_NAMES = np.array(["prefill", "decode", "mixed", "preempt"], dtype=object)


class Recorder:
    """The segment lists; ``classic`` (the paper's engine) keeps no member text."""

    __slots__ = ("classic", "client", "kind", "start", "end", "k", "n", "tokens", "ids", "pids", "ptok", "pprior",
                 "run_ends", "run_flat", "marks", "id_by_rank", "member_flat")

    def __init__(self, classic: bool, mixed: bool = False) -> None:
        self.classic = classic
        self.client: list[int] = []
        self.kind: list[int] = []
        self.start: list[float] = []
        self.end: list[float] = []
        self.k: list[int] = []
        self.n: list[int] = []
        self.tokens: list[int] = []
        self.ids: list[str] = []
        self.pids: list[str] = []
        self.ptok: list[str] = []
        self.pprior: list[str] = []  # per prompt piece: its tokens already in the KV cache (paged schedules)
        # Mixed iterations: a run of decodes (segment -> its iterations' end times, summed one by one as a
        # stepped loop sums them, as ``offset << 32 | count``: ``count`` doubles at ``offset`` of ``run_flat``, no
        # list for the cyclic collector to walk after the run), and per segment what pushed the boundary it was
        # formed at (-1: the replica's own last iteration; else (time, 0 during arrivals / 2 from outside, clock
        # sequence)), so that the timeline lists every iteration in the order a loop stepping each one would
        # have formed them.
        self.run_ends: dict[int, int] = {}
        self.run_flat = array("d")
        self.marks: list | None = [] if mixed else None
        # A segment's members may be recorded as their ids' ranks (ascending) instead of text: the integer
        # ``offset << 32 | count`` names ``count`` ranks at ``offset`` of ``member_flat`` (every member list the run
        # recorded, one after another, as machine integers: no object per list for the cyclic collector to walk
        # after the run), and the ids in rank order (set by the former) turn them into text at the end, in one
        # Arrow pass.
        self.id_by_rank: list[str] | None = None
        self.member_flat = array("q")

    def add(self, client: int, kind: int, start: float, end: float, k: int, n: int, tokens: int) -> int:
        """Append a segment of the paper's engine (no member text); return its index."""
        index = len(self.start)
        self.client.append(client)
        self.kind.append(kind)
        self.start.append(start)
        self.end.append(end)
        self.k.append(k)
        self.n.append(n)
        self.tokens.append(tokens)
        return index

    def emitter(self, clock):
        """``emit(replica, kind, start, end, k, n, tokens)``: append a segment of the paper's engine as the
        replica's current one and schedule its end on ``clock``.  The hot path of the paper's engine: the
        lists' appends are bound once here, so a segment costs no attribute look-ups."""
        lists = (self.client, self.kind, self.start, self.end, self.k, self.n, self.tokens)
        client, kind_, start, end_, k_, n_, tokens_ = (x.append for x in lists)
        starts, events = self.start, clock.events

        def emit(c, kind: int, now: float, end: float, k: int, n: int, tokens: int) -> None:
            c.current = len(starts)
            client(c.index)
            kind_(kind)
            start(now)
            end_(end)
            k_(k)
            n_(n)
            tokens_(tokens)
            c.version += 1
            c.pending = True
            clock.seq += 1
            heappush(events, (end, clock.seq, c.index, c.version))
        return emit

    def add_listed(self, client: int, kind: int, start: float, end: float, k: int, n: int, tokens: int,
                   ids: str | tuple = "", pids: str = "", ptok: str = "", pprior: str = "", mark=-1) -> int:
        """Append a segment with its members and prompt pieces as text; return its index."""
        index = len(self.start)  # add(), inline: a segment of every run outside the paper's engine
        self.client.append(client)
        self.kind.append(kind)
        self.start.append(start)
        self.end.append(end)
        self.k.append(k)
        self.n.append(n)
        self.tokens.append(tokens)
        if self.marks is not None:
            self.marks.append(mark)
        self.ids.append(ids)
        self.pids.append(pids)
        self.ptok.append(ptok)
        self.pprior.append(pprior)
        return index

    def __len__(self) -> int:
        return len(self.start)

    def arrays(self) -> dict[str, np.ndarray]:
        # fromiter: a third faster than np.array on lists this long, whose numbers lie all over the heap.
        def column(values: list, dtype) -> np.ndarray:
            return np.fromiter(values, dtype, len(values))

        return {"client": column(self.client, np.int64), "kind": column(self.kind, np.int8),
                "start_s": column(self.start, float), "end_s": column(self.end, float),
                "k": column(self.k, np.int64), "n": column(self.n, np.int64), "tokens": column(self.tokens, np.int64)}

    def texts(self) -> tuple[list, list[str], list[str], list[str]]:
        """Members (text, or a reference to id ranks: see ``id_by_rank``), prompt pieces, their tokens and prior."""
        return self.ids, self.pids, self.ptok, self.pprior

    # -- shards (engine.shards): a run's replicas split over processes, their segments gathered here -------
    #: The lists with one entry per segment (``marks`` too, outside the paper's engine).
    SEGMENT_LISTS = ("client", "kind", "start", "end", "k", "n", "tokens", "ids", "pids", "ptok", "pprior")
    SHARD_FIELDS = (*SEGMENT_LISTS, "marks", "run_ends", "run_flat", "member_flat")

    def shard_fields(self) -> dict:
        """What a shard's run recorded (the recorder of a forked process that started empty)."""
        return {name: getattr(self, name) for name in self.SHARD_FIELDS}

    def append_shard(self, fields: dict) -> int:
        """Append a shard's segments after this recorder's, their references into the flat arrays moved past
        this recorder's own; return the index of the shard's first segment."""
        offset = len(self.start)
        members = len(self.member_flat) << 32
        for name in self.SEGMENT_LISTS:
            values = fields[name]
            if name == "ids":  # references to member ranks: past this recorder's own
                values = [x + members if type(x) is int else x for x in values]
            getattr(self, name).extend(values)
        if self.marks is not None:
            self.marks.extend(fields["marks"])
        self.member_flat.extend(fields["member_flat"])
        ends = len(self.run_flat) << 32
        self.run_ends.update({index + offset: ref + ends for index, ref in fields["run_ends"].items()})
        self.run_flat.extend(fields["run_flat"])
        return offset

    def reorder(self, order: list[int]) -> None:
        """Put the segments in ``order`` (a permutation of their indices).  Only for a recorder with no run of
        decodes (``run_ends`` empty): a run's iteration ends are not moved."""
        for name in (*self.SEGMENT_LISTS, "marks"):
            values = getattr(self, name)
            if values:
                values[:] = [values[i] for i in order]

    def free(self) -> None:
        for spent in (self.client, self.kind, self.start, self.end, self.k, self.n, self.tokens):
            spent.clear()
