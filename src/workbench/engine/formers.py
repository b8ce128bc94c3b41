"""The iteration formers: at a replica's iteration boundary, what its next iteration is.

Each former works in two phases around the one decision a scheduler makes:

1. ``prepare`` brings the replica to the boundary (work stealing, KV room, prompt
   chunks already under way) and returns ``admissible``, how many waiting requests could
   be admitted now (0: there is no choice to make);
2. ``form`` admits the ``m`` requests the iteration rule (or an outside caller)
   chose, times the iteration with the cost model, records it and schedules its end.
   It returns ``False`` when the replica must be brought to its boundary again (with paged
   KV every running request was preempted to make room: the queue has changed).

``complete`` applies an iteration's end (tokens generated, requests finished, memory
released).  ``exclusive`` (the paper's setting, MODEL.md section 1): an iteration is a
prefill stage or a run of decode stages, computed in closed form between two batch changes
(see :mod:`workbench.engine.loop`).  ``mixed`` (vLLM V1, Sarathi-Serve): every running decode
plus prompt chunks up to the token budget, one iteration at a time, except runs of decode-only
iterations where no decision can happen (``MixedFormer._decode_run``), taken in one step.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, insort
from heapq import heappop, heappush
from itertools import accumulate, repeat
from operator import add, itemgetter, mul

from workbench.engine.kv import reserved_admissible
from workbench.engine.recorder import DECODE, MIXED, PREEMPT, PREFILL


_second = itemgetter(1)


def id_key(text: str):
    """Ids in numeric order when they are integers (as the engine lists them), else as text."""
    return (0, int(text), "") if text.lstrip("-").isdigit() else (1, 0, text)


def id_ranks(ids: list[str]) -> tuple[list | None, list]:
    """Each id's position in id_key order, and the ids in that order; ``(None, [])`` when two ids have equal
    keys (sorted() then keeps their order of listing, which a rank cannot)."""
    n = len(ids)
    if all(map(str.isdigit, ids)):
        keys: list = list(map(int, ids))  # every key is (0, int(text), ""): the integers order them
    else:
        keys = list(map(id_key, ids))
    if len(set(keys)) < n:
        return None, []
    order = sorted(range(n), key=keys.__getitem__)
    rank = [0] * n
    for position, i in enumerate(order):
        rank[i] = position
    return rank, [ids[i] for i in order]


def cum_decode_s(r: int, base: float, c_d: float, S: int, n: int) -> float:
    """Time of the first ``r`` decodes of a run of ``n`` requests whose first reads ``S`` context tokens."""
    return r * base + c_d * (r * S + n * (r * (r - 1) // 2))


class Former:
    """What both formers share: the engine's parts they act on, preemption, and listing members."""

    def __init__(self, requests, recorder, clock, kv_manager, config, classic: bool, stealing) -> None:
        self.requests = requests
        self.recorder = recorder
        self.clock = clock
        self.kv = kv_manager  # a PagedKVManager, or None when KV memory is reserved
        self.paged = kv_manager is not None
        self.config = config
        self.classic = classic  # the paper's engine: linear costs, exclusive iterations, reserved KV
        self.stealing = stealing  # a WorkStealing hook, or None
        self._emit = recorder.emitter(clock)
        if not classic and requests.ids_text:
            self._id_rank, self._id_by_rank = id_ranks(requests.ids_text)
            if self._id_rank is not None:
                recorder.id_by_rank = self._id_by_rank

    def _joins(self, c, i: int) -> None:
        """Request i joins c's running decodes: its id's rank into the replica's sorted member ranks."""
        if self._id_rank is not None:
            insort(c.member_ranks, self._id_rank[i])

    def _leaves(self, c, i: int) -> None:
        if self._id_rank is not None:
            ranks = c.member_ranks
            del ranks[bisect_left(ranks, self._id_rank[i])]

    def _steal_if_idle(self, c) -> None:
        if not c.waiting and c.n_running < c.batch_size and c.accepting:  # the caller checked stealing is on
            self.stealing.steal_for(c)

    _id_rank: list | None = None  # per request, its id's place in id_key order (None: not yet, or ties)
    _id_by_rank: list | None = None

    def running_ids(self, c) -> str | int:
        """The running decodes' ids for the recorder: a reference to their ranks, appended to the recorder's
        flat array when they changed (joined as text at the end, see Recorder.id_by_rank), or the text where
        ids tie."""
        if c.ids_cache is None:
            if self._id_rank is not None:
                flat = self.recorder.member_flat
                c.ids_cache = len(flat) << 32 | len(c.member_ranks)
                flat.extend(c.member_ranks)  # array to array: the machine integers copied
            else:
                c.ids_cache = self.sorted_ids(map(_second, c.running))
        return c.ids_cache

    def sorted_ids(self, rows) -> str:
        """The requests' ids as text, in id_key order: by each id's rank, computed once per run."""
        if self._id_by_rank is None:
            self._id_rank, self._id_by_rank = id_ranks(self.requests.ids_text)
        rank = self._id_rank
        if rank is None:
            ids = self.requests.ids_text
            return " ".join(sorted((ids[i] for i in rows), key=id_key))
        return " ".join(map(self._id_by_rank.__getitem__, sorted(map(rank.__getitem__, rows))))

    def preempt(self, c, victims: list[int], now: float) -> None:
        """Recompute preemption: free the victims' blocks, send each back to the front of the queue, record a
        ``preempt`` row (its tokens: the KV tokens freed)."""
        rq, kvm = self.requests, c.paged
        ids_out = []
        freed = 0
        for i in victims:
            if i in c.prefilling_index:
                entry = c.prefilling_index.pop(i)
                c.prefilling.remove(entry)
                tokens = entry[1]  # computed prompt tokens (of the prompt plus generated tokens being recomputed)
            else:
                g = c.decode_count - rq.gen_base[i]
                rq.generated[i] = g
                tokens = rq.l[i] + g - 1
                self.kv.leave(c, i)
                c.running.remove((rq.o[i] + rq.gen_base[i], i))
                self._leaves(c, i)
                heapq.heapify(c.running)
                c.ctx_sum -= rq.l[i] + g
            self.kv.register(c, i, tokens)
            kvm.release(i, kvm.blocks(tokens))
            freed += tokens
            rq.preemptions[i] += 1
            heappush(c.waiting, rq.requeue_preempted(i))
            ids_out.append(rq.ids_text[i])
        c.n_running = len(c.running) + len(c.prefilling)
        c.ids_cache = None
        self.recorder.add_listed(c.index, PREEMPT, now, now, 1, len(victims), freed, " ".join(ids_out),
                                 mark=c.push_mark)

    def _finish(self, c, i: int, end: float, kv_tokens: int) -> None:
        """Request i produced its last token at ``end``: release its memory and its predicted work."""
        rq = self.requests
        rq.finish[i] = end
        rq.finished += 1
        if self.paged:
            c.paged.release(i, c.paged.blocks(kv_tokens), True)
        else:
            c.kv_reserved_tokens -= rq.l[i] + rq.o[i]
        c.outstanding_s -= rq.w[i]


class ExclusiveFormer(Former):
    """The paper's iterations: a prefill stage (the rule admits) or a run of decode stages."""

    def prepare(self, c, now: float) -> int:
        c.clock_s = now
        c.current = None
        if self.stealing is not None:
            self._steal_if_idle(c)
        if c.waiting and c.n_running < c.batch_size:
            rq = self.requests
            c.admissible = admissible = (reserved_admissible(c, rq.l, rq.o, rq.by_rank) if not self.paged
                                         else self.kv.admissible(c, c.batch_size - c.n_running))
            return admissible
        return 0

    def classic_boundary(self, c, now: float, admit) -> None:
        """The paper's engine at a boundary where the rule decides, in one call: ``prepare``, the rule's answer
        (``admit(c)``, kept within what is admissible, and an empty replica always refills) and ``form``.
        The hot path of the paper's engine (reserved KV, linear costs, no stealing, no outside caller); it
        forms exactly what the three steps would, and the pins check that it does."""
        c.clock_s = now
        c.current = None
        nr = c.n_running
        if c.waiting and nr < c.batch_size:
            rq = self.requests
            c.admissible = admissible = reserved_admissible(c, rq.l, rq.o, rq.by_rank)
            if admissible > 0:
                m = int(admit(c))
                if (m <= 0 and nr == 0) or m > admissible:
                    m = admissible
                if m > 0:
                    self._prefill_classic(c, now, m)
                    return
        if nr == 0:
            c.pending = False
            return
        k, tokens = c.running[0][0] - c.decode_count, c.ctx_sum
        end = now + (k * (c.a_d + c.b_d * nr) + c.c_d * (k * tokens + nr * (k * (k - 1) // 2)))
        self._emit(c, DECODE, now, end, k, nr, tokens)

    def form(self, c, now: float, m: int) -> bool:
        """A prefill of ``m`` requests, or else a run of decodes up to the next completion (closed form; one
        decode for a measured model), or else nothing (the replica idles)."""
        if m > 0:
            (self._prefill_classic if self.classic else self._prefill)(c, now, m)
            return True
        if c.n_running == 0:
            c.pending = False
            return True
        nr, tokens = c.n_running, c.ctx_sum
        k = c.running[0][0] - c.decode_count if c.linear else 1
        if self.paged:
            k = self.fit_run(c, k, now)
            nr, tokens = c.n_running, c.ctx_sum
            if nr == 0:
                return False  # everyone was preempted: the queue changed, start the boundary again
        if c.linear:
            end = now + (k * (c.a_d + c.b_d * nr) + c.c_d * (k * tokens + nr * (k * (k - 1) // 2)))
        else:
            end = now + self._measured_decode_s(c, nr, tokens)
        if self.classic:
            self._emit(c, DECODE, now, end, k, nr, tokens)
        else:
            c.current = self.recorder.add_listed(c.index, DECODE, now, end, k, nr, tokens, self.running_ids(c))
            self.clock.at(c, end)
        return True

    def _measured_decode_s(self, c, nr: int, tokens: int) -> float:
        if c.skew_aware:
            rq, d = self.requests, c.decode_count
            longest = max(rq.l[i] + d - rq.gen_base[i] for _, i in c.running)
            return float(c.cost_model.iteration_time(nr, tokens, [], [], decode_max_context_tokens=longest))
        return float(c.cost_model.decode_time(nr, tokens))

    def _prefill_classic(self, c, now: float, m: int) -> None:
        """The paper's engine, the hot path: ``m`` requests prefilled from the queue head."""
        rq = self.requests
        by_rank, l, o, seen = rq.by_rank, rq.l, rq.o, rq.seen
        prefill_start, pre_seg, predicted_finish = rq.prefill_start, rq.pre_seg, rq.predicted_finish
        waiting, running = c.waiting, c.running
        members = [by_rank[heappop(waiting)] for _ in range(m)]
        index = len(self.recorder.start)
        tokens = 0
        done_at_prefill = []
        count = c.decode_count - 1
        for i in members:
            li, oi = l[i], o[i]
            tokens += li
            prefill_start[i] = now
            pre_seg[i] = index
            if oi > 1:
                heappush(running, (count + oi, i))
                predicted_finish[i] = count + seen[i]
                c.ctx_sum += li + 1
            else:
                done_at_prefill.append(i)
            c.kv_reserved_tokens += li + oi
        c.n_running = len(running)
        end = now + (c.a_p + c.b_p * tokens if c.linear else float(c.cost_model.prefill_time(tokens)))
        c._just_prefilled = (members, done_at_prefill)
        c.ids_cache = None
        self._emit(c, PREFILL, now, end, 1, m, tokens)

    def _prefill(self, c, now: float, m: int) -> None:
        """A prefill stage outside the paper's engine: recomputes, cached prefixes, members listed."""
        rq = self.requests
        l, o, generated = rq.l, rq.o, rq.generated
        members = [rq.pop_waiting(c) for _ in range(m)]
        tokens = 0
        done_at_prefill = []
        pieces: list[tuple[int, int]] = []  # (computed tokens, cached tokens) per member
        count = c.decode_count - 1
        for i in members:
            li, oi, g = l[i], o[i], generated[i]
            need = li + g  # a preempted request recomputes its prompt and the tokens it had generated
            hit = self.kv.admit(c, i, need) if self.paged else 0
            if not self.paged:
                c.kv_reserved_tokens += li + oi
            rq.cached[i] += hit
            if rq.preemptions[i]:  # an admission after a preemption: all it computes is recomputed
                rq.recomputed[i] += need - hit
            tokens += need - hit
            pieces.append((need - hit, hit))
            if rq.prefill_start[i] != rq.prefill_start[i]:
                rq.prefill_start[i] = now
            rq.admissions += 1
            rq.admit_seq[i] = rq.admissions
            if g + 1 < oi:
                rq.gen_base[i] = c.decode_count - (g + 1)
                heappush(c.running, (oi + rq.gen_base[i], i))
                self._joins(c, i)
                if self.paged:
                    self.kv.join(c, i)
                rq.predicted_finish[i] = count + max(rq.seen[i] - g, 1)
                c.ctx_sum += li + g + 1
            else:
                done_at_prefill.append(i)
        c.n_running = len(c.running)
        end = now + (c.a_p + c.b_p * tokens if c.linear else float(c.cost_model.prefill_time(tokens)))
        c._just_prefilled = (members, done_at_prefill)
        c.ids_cache = None
        ids = rq.ids_text
        c.current = self.recorder.add_listed(
            c.index, PREFILL, now, end, 1, m, tokens, self.sorted_ids(members),
            " ".join(ids[i] for i in members), " ".join(str(p[0]) for p in pieces),
            " ".join(str(p[1]) for p in pieces))
        self.clock.at(c, end)

    def fit_run(self, c, k: int, now: float) -> int:
        """Paged KV: the longest run of at most k decodes whose blocks fit, preempting first if none fits."""
        kv = self.kv
        while c.running and kv.decode_blocks_needed(c, 1) > c.paged.free_blocks:
            self.preempt(c, [kv.victim(c)], now)
        if not c.running:
            return 0
        return kv.longest_decode_run(c, k)

    def complete(self, c) -> None:
        """Apply the end of ``c``'s current segment: a prefill's first tokens, or a decode run's completions."""
        index = c.current
        if index is None:
            return
        rec = self.recorder
        if rec.kind[index] == PREFILL:
            self._complete_prefill(c, index)
            return
        end, k, nr = rec.end[index], rec.k[index], rec.n[index]
        if self.paged:
            c.paged.grow(-1, self.kv.decode_blocks_needed(c, k))
        c.decode_count += k
        c.ctx_sum += nr * k
        d = c.decode_count
        running = c.running
        if running and running[0][0] <= d:
            rq = self.requests
            l, o, last_seg, finish, w = rq.l, rq.o, rq.last_seg, rq.finish, rq.w
            paged = self.paged
            while running and running[0][0] <= d:
                i = heappop(running)[1]
                self._leaves(c, i)
                finish[i] = end
                rq.finished += 1
                last_seg[i] = index
                done = l[i] + o[i]
                c.ctx_sum -= done
                if paged:
                    self.kv.leave(c, i)
                    c.paged.release(i, c.paged.blocks(done - 1), True)
                else:
                    c.kv_reserved_tokens -= done
                c.outstanding_s -= w[i]
                c.ids_cache = None
        c.n_running = len(running)

    def _complete_prefill(self, c, index: int) -> None:
        rq = self.requests
        end = self.recorder.end[index]
        members, done = c._just_prefilled
        first_token = rq.first_token
        if self.classic:
            for i in members:
                first_token[i] = end
        else:
            for i in members:
                if first_token[i] != first_token[i]:  # a recompute keeps the first token's time
                    first_token[i] = end
        for i in done:
            rq.last_seg[i] = index
            self._finish(c, i, end, rq.l[i] + rq.generated[i])
        if self.paged:
            for i in members:
                if i not in done:
                    self.kv.register(c, i, rq.l[i] + rq.generated[i])
        c._just_prefilled = ((), ())

    def cut_run_at(self, c, t: float) -> None:
        """End the decode run in progress at the first iteration boundary at or after ``t``."""
        index = c.current
        rec = self.recorder
        if index is None or rec.kind[index] != DECODE or rec.k[index] <= 1 or not c.linear:
            return
        t0, k, nr, S = rec.start[index], rec.k[index], rec.n[index], rec.tokens[index]
        base = c.a_d + c.b_d * nr
        # Solve cum(r) = t - t0 for r, then step to the first boundary at or after t.
        target = t - t0
        qa, qb = c.c_d * nr / 2.0, base + c.c_d * (S - nr / 2.0)
        r = target / qb if qa == 0 else (-qb + math.sqrt(qb * qb + 4 * qa * target)) / (2 * qa)
        r = max(1, min(k, int(math.ceil(r))))
        while r > 1 and t0 + cum_decode_s(r - 1, base, c.c_d, S, nr) >= t:
            r -= 1
        while r < k and t0 + cum_decode_s(r, base, c.c_d, S, nr) < t:
            r += 1
        if r >= k:
            return
        rec.k[index] = r
        rec.end[index] = t0 + cum_decode_s(r, base, c.c_d, S, nr)
        self.clock.at(c, rec.end[index])


class MixedFormer(Former):
    """vLLM V1's iterations: every running decode plus prompt chunks up to the token budget."""

    #: Per request, when it reached the engine (set by the engine's builder under async scheduling).
    arrival_s: list | None = None

    def prepare(self, c, now: float) -> int:
        c.clock_s = now
        c.current = None
        if self.stealing is not None:
            self._steal_if_idle(c)
        if self.paged and not c.prefilling:
            # Decodes alone (the common boundary): _make_room's and _continue_chunks' blocks in one look-up.
            kvm = c.paged
            bs = kvm.block_size
            need = kvm.residues[(bs - 1 - c.decode_count) % bs] if c.running else 0
            if need > kvm.capacity_blocks - kvm.used:
                preempted_now = self._make_room(c, now)
                n_d, budget, chunks = self._continue_chunks(c)
            else:
                preempted_now = False
                if need or (kvm.free_queue and not (kvm.caching and (kvm.cached_free or kvm.dead_queued))):
                    kvm._take(need)  # taking no block changes nothing unless it lets the queue's order go
                n_d = len(c.running)
                budget, chunks = self.config.token_budget - n_d, []
        else:
            preempted_now = self._make_room(c, now) if self.paged else False
            n_d, budget, chunks = self._continue_chunks(c)
        c.forming = (n_d, budget, chunks, preempted_now)
        held = len(c.async_freed)  # async: the slots of requests that finished at this boundary, still held
        if budget > 0 and c.waiting and c.n_running + held < c.batch_size and not preempted_now:
            rq = self.requests
            if self.config.async_scheduling and (n_d or chunks) and not self._joins_now(c, rq.peek_waiting(c)):
                return 0  # the head of the queue arrived while this iteration was being scheduled
            # Paged: blocks are checked request by request in form(), for the cached part and the first
            # chunk only (vLLM allocates a prompt's blocks chunk by chunk), or the whole prompt (the gate).
            c.admissible = admissible = (reserved_admissible(c, rq.l, rq.o, rq.by_rank) if not self.paged
                                         else min(c.batch_size - c.n_running - held, len(c.waiting)))
            return admissible
        return 0

    def _joins_now(self, c, i: int) -> bool:
        """Async scheduling: whether waiting request i can join the iteration scheduled now.  vLLM schedules
        step t+1 as soon as step t is launched, so a request queued after step t started joins t+2 at the
        earliest; a preempted request was in the queue already."""
        return self.arrival_s[i] <= c.async_cutoff_s or self.requests.preemptions[i] > 0

    def _chunk(self, remaining: int, budget: int) -> int:
        """The prompt tokens a request computes this iteration: its rest, within the budget and the cap."""
        cap = self.config.long_prefill_token_threshold
        return min(remaining, budget, cap) if cap else min(remaining, budget)

    def _make_room(self, c, now: float) -> bool:
        """Blocks for this iteration's decode tokens and the chunks under way: preempt the newest running
        requests until they fit (vLLM then admits nobody new in this step).  Whether anyone was preempted."""
        rq, kv, kvm = self.requests, self.kv, c.paged
        if not c.prefilling and (not c.running or kv.decode_blocks_needed(c, 1) <= kvm.free_blocks):
            return False  # the decodes alone, and they fit (the loop below would stop at once)
        tau = self.config.token_budget
        preempted = False
        while c.running or c.prefilling:
            need = kv.decode_blocks_needed(c, 1)
            budget = tau - len(c.running)
            for i, done in c.prefilling:
                if budget <= 0:
                    break
                take = self._chunk(rq.l[i] + rq.generated[i] - done, budget)
                need += kvm.blocks(done + take) - kvm.blocks(done)
                budget -= take
            if need <= kvm.free_blocks:
                break
            self.preempt(c, [kv.victim(c)], now)
            preempted = True
        return preempted

    def _continue_chunks(self, c) -> tuple[int, int, list]:
        """This iteration's decodes and the next chunks of the prompts under way, in admission order."""
        rq = self.requests
        kvm = c.paged
        if self.paged:
            need = self.kv.decode_blocks_needed(c, 1)  # the decode tokens, before anyone is admitted
            if need or (kvm.free_queue and not (kvm.caching and (kvm.cached_free or kvm.dead_queued))):
                kvm.grow(-1, need)  # taking no block changes nothing unless it lets the queue's order go
        n_d = len(c.running)
        budget = self.config.token_budget - n_d
        chunks: list[tuple[int, int, int]] = []  # (request, chunk tokens, prompt tokens done before)
        at_schedule = self.config.cache_at_schedule
        for i, done in c.prefilling:
            if budget <= 0:
                break
            take = self._chunk(rq.l[i] + rq.generated[i] - done, budget)
            chunks.append((i, take, done))
            budget -= take
            if self.paged:
                kvm.grow(i, kvm.blocks(done + take) - kvm.blocks(done))
                if at_schedule:
                    self.kv.register(c, i, done + take)  # vLLM caches a chunk's full blocks as it schedules it
        return n_d, budget, chunks

    def form(self, c, now: float, m: int) -> bool:
        n_d, budget, chunks, preempted_now = c.forming
        c.forming = None
        if m > 0:
            self._admit(c, now, m, budget, chunks)
        elif not chunks and n_d and self.runs and c.linear and not preempted_now and self._decode_run(c, now, n_d):
            return True
        if n_d == 0 and not chunks:
            c.async_cutoff_s = math.inf
            if c.async_freed:
                # Nothing to run while the finished requests still held their slots and blocks: vLLM
                # processes their outputs before it schedules again, so they are free now; start again.
                self._release_freed(c)
                return False
            c.pending = False
            return True
        c.async_cutoff_s = now
        end = self._iteration_end(c, now, n_d, chunks)
        c._just_prefilled = chunks
        ids = self.requests.ids_text
        if len(chunks) == 1:  # one prompt piece (the common mixed row): its texts without a join
            i, take, done = chunks[0]
            c.current = self.recorder.add_listed(c.index, MIXED, now, end, 1, n_d, c.ctx_sum, self.running_ids(c),
                                                 ids[i], str(take), str(done), c.push_mark)
        elif chunks:
            c.current = self.recorder.add_listed(
                c.index, MIXED, now, end, 1, n_d, c.ctx_sum, self.running_ids(c),
                " ".join(ids[ch[0]] for ch in chunks), " ".join(str(ch[1]) for ch in chunks),
                " ".join(str(ch[2]) for ch in chunks), c.push_mark)
        else:
            c.current = self.recorder.add_listed(c.index, DECODE, now, end, 1, n_d, c.ctx_sum, self.running_ids(c),
                                                 "", "", "", c.push_mark)
        if self.config.dp_lockstep:
            self._lockstep(c, now, end, n_d, chunks)
        else:
            self.clock.at(c, end)
            c.push_mark = -1
        return True

    #: Whether runs of decode-only iterations may be taken in one step (set by the builder: not with work
    #: stealing or lockstep, where another replica acts at this one's boundaries).
    runs = False

    def _decode_run(self, c, now: float, n_d: int) -> bool:
        """A run of decode-only iterations where no decision can happen: nothing part-way, no slot held by
        async scheduling, and no admission possible (a full batch, or an empty queue; an arrival cuts the run
        at the next boundary, see cut_run_at).  It ends at the first completion, or where the running
        decodes' next block would not fit.  Its iterations' ends are summed one by one, as stepping sums them,
        so the clock and the timeline agree bit for bit.  False: a single iteration is formed instead."""
        if c.prefilling or c.async_freed or (c.waiting and c.n_running < c.batch_size):
            return False
        k = c.running[0][0] - c.decode_count
        if k > 1 and self.paged:
            kvm = c.paged
            # Blocks for the first iteration were taken (_continue_chunks); later ones while they fit.  Each
            # decode needs at most ceil(k / block_size) more in k iterations: when that fits, all k do.
            free = kvm.capacity_blocks - kvm.used
            if -(-k // kvm.block_size) * n_d > free:
                k = self.kv.longest_decode_run(c, k, free + self.kv.decode_blocks_needed(c, 1))
        if k <= 1:
            return False
        base, c_d, S = c.a_d + c.b_d * n_d, c.c_d, c.ctx_sum
        # Iteration r lasts base + c_d (S + n_d r); summed one by one from now, as stepping sums them.
        ends = list(accumulate(map(add, repeat(base, k), map(mul, repeat(c_d, k), range(S, S + n_d * k, n_d))),
                               initial=now))
        del ends[0]
        c.async_cutoff_s = now
        rec = self.recorder
        c.current = index = rec.add_listed(c.index, DECODE, now, ends[-1], k, n_d, S, self.running_ids(c),
                                           "", "", "", c.push_mark)
        rec.run_ends[index] = len(rec.run_flat) << 32 | k
        rec.run_flat.fromlist(ends)
        c._just_prefilled = ()
        self.clock.at(c, ends[-1])
        c.push_mark = -1
        return True

    def cut_run_at(self, c, t: float) -> None:
        """End the run of decodes in progress at its first iteration boundary at or after ``t``."""
        index = c.current
        if index is None:
            return
        rec = self.recorder
        ref = rec.run_ends.get(index)
        if ref is None:
            return
        at, count = ref >> 32, ref & 0xFFFFFFFF
        r = bisect_left(rec.run_flat, t, at, at + count) - at
        if r >= count - 1:
            return
        rec.run_ends[index] = at << 32 | (r + 1)
        rec.k[index] = r + 1
        rec.end[index] = end = rec.run_flat[at + r]
        self.clock.at(c, end)
        c.push_mark = -1

    def _end_run(self, c, index: int, k: int) -> None:
        """The first k - 1 iterations of a run of decodes (none completes a request); the last is completed as
        any iteration is.  Their blocks are taken in iteration order, as stepping takes them."""
        if self.paged:
            c.paged.grow_each(self.kv.decode_blocks_each(c, k)[1:])
        c.decode_count += k - 1
        c.ctx_sum += self.recorder.n[index] * (k - 1)
        rec = self.recorder
        c.async_cutoff_s = rec.run_flat[(rec.run_ends[index] >> 32) + k - 2]  # the last iteration's start

    #: Lockstep (a data-parallel group of an expert-parallel model): the replicas (set by the engine's
    #: builder) and the iterations formed at the group's current boundary: [time, [replica, ...]].
    replicas: list | None = None
    _step: list | None = None

    def _lockstep(self, c, now: float, end: float, n_d: int, chunks: list) -> None:
        """vLLM's data-parallel replicas of an MoE model step together (every expert layer waits for all of
        them): the iterations formed at one boundary all end when the slowest does, their expert layers
        compute the tokens of every member, and a replica with nothing to run joins at the group's next
        boundary (it runs dummy steps meanwhile)."""
        step = self._step
        if step is None or step[0] != now:
            step = self._step = [now, []]
        step[1].append((c, end, n_d, self._measured_args(c, n_d, chunks)))
        rec = self.recorder
        gathered = sum(member[2] + sum(member[3][2]) for member in step[1])
        ends = [now + float(m.cost_model.iteration_time(*args[:4], **args[4], gathered_tokens=gathered))
                if getattr(m.cost_model, "experts", None) is not None else own for m, own, _, args in step[1]]
        group_end = max(ends)
        for m, _, _, _ in step[1]:
            if rec.end[m.current] != group_end or m is c:
                rec.end[m.current] = group_end
                self.clock.at(m, group_end)
        for other in self.replicas:
            if not other.pending and other.clock_s < group_end:
                other.clock_s = group_end  # an arrival there waits for the group's boundary

    def _admit(self, c, now: float, m: int, budget: int, chunks: list) -> None:
        """Admit up to ``m`` waiting requests in queue order, each with a first chunk, while the budget,
        the partial-prefill limit and the KV memory allow (head-of-line: the queue order is kept)."""
        rq, kv = self.requests, self.kv
        l, o, generated = rq.l, rq.o, rq.generated
        max_partial = self.config.max_partial_prefills
        partial = sum(1 for ch in chunks if ch[2] + ch[1] < l[ch[0]] + generated[ch[0]]) if chunks else 0
        cfg = self.config
        # Async: with something else in this iteration it was scheduled while the last one ran; without, vLLM
        # scheduled nothing then and schedules every queued request as soon as the last one's outputs are in.
        strict = cfg.async_scheduling and bool(c.running or chunks)
        block_keys = kv.block_keys if self.paged else None
        while budget > 0 and m > 0 and c.waiting:
            i = rq.peek_waiting(c)
            need_tokens = l[i] + generated[i]
            if max_partial is not None and partial >= max_partial:
                break
            if strict and not self._joins_now(c, i):
                break
            if not self.paged:
                want = l[i] + o[i]
                if c.kv_capacity_tokens is not None and c.kv_reserved_tokens + want > c.kv_capacity_tokens:
                    break
            m -= 1
            hit = 0
            if self.paged and (block_keys is None or not (block_keys[i] or rq.preemptions[i])):
                # Nothing of it can be cached (no shared prefix, never computed before): the steps below
                # without their look-ups, which find nothing.
                kvm = c.paged
                first = self._chunk(need_tokens, budget)
                if kvm.blocks(need_tokens if cfg.full_prompt_admission else first) > kvm.capacity_blocks - kvm.used:
                    break
                rq.pop_waiting(c)
                if block_keys is not None:
                    kvm.queried_tokens += need_tokens
                kvm.held[i] = []
                kvm._take(kvm.blocks(max(first, 1)) if kv.mixed else kvm.blocks(need_tokens))
                # Its first chunk's blocks are its own (nobody else can hit them), so caching them as scheduled
                # changes nothing before the chunk's end registers them (_complete_chunks): not done here.
                take = first  # nothing cached: the chunk is the one just checked
            elif self.paged:
                hit_tokens = kv.hit_tokens(c, i, need_tokens)
                first = self._chunk(need_tokens - hit_tokens, budget)
                # The gate (scheduler_reserve_full_isl) asks for the whole prompt's blocks, else the first chunk's.
                gate = need_tokens - hit_tokens if cfg.full_prompt_admission else first
                if kv.first_chunk_blocks(c, i, need_tokens, hit_tokens, gate) > c.paged.free_blocks:
                    break
                rq.pop_waiting(c)
                hit = kv.admit(c, i, first)
                rq.cached[i] += hit
                if cfg.cache_at_schedule:
                    kv.register(c, i, hit + first)  # cached as scheduled: a request behind it hits these now
                take = self._chunk(need_tokens - hit, budget)
            else:
                rq.pop_waiting(c)
                c.kv_reserved_tokens += l[i] + o[i]
                take = self._chunk(need_tokens, budget)
            entry = [i, hit]
            c.prefilling.append(entry)
            c.prefilling_index[i] = entry
            rq.admissions += 1
            rq.admit_seq[i] = rq.admissions
            if rq.prefill_start[i] != rq.prefill_start[i]:
                rq.prefill_start[i] = now
            chunks.append((i, take, hit))
            budget -= take
            if hit + take < need_tokens:
                partial += 1
        c.n_running = len(c.running) + len(c.prefilling)

    def _measured_args(self, c, n_d: int, chunks: list) -> tuple:
        """A measured cost model's iteration_time arguments for this iteration (the lockstep re-prices it)."""
        rq, d = self.requests, c.decode_count
        longest = max((rq.l[i] + d - rq.gen_base[i] for _, i in c.running), default=0)
        return (n_d, c.ctx_sum, [ch[1] for ch in chunks], [ch[2] for ch in chunks],
                {"decode_max_context_tokens": longest} if c.skew_aware else {})

    def _iteration_end(self, c, now: float, n_d: int, chunks: list) -> float:
        ctx = c.ctx_sum
        if c.linear:
            if len(chunks) == 1:
                _, P, Q = chunks[0]
                return now + (c.a_m + c.b_d * n_d + c.c_d * (ctx + Q) + c.b_p * P)
            if chunks:
                P = sum(ch[1] for ch in chunks)
                Q = sum(ch[2] for ch in chunks)
                return now + (c.a_m + c.b_d * n_d + c.c_d * (ctx + Q) + c.b_p * P)
            return now + (c.a_d + c.b_d * n_d + c.c_d * ctx)
        # A measured attention kernel is slower for skewed contexts than for their mean: the cost model
        # may correct for it from the longest context.
        rq, d = self.requests, c.decode_count
        longest = max((rq.l[i] + d - rq.gen_base[i] for _, i in c.running), default=0)
        return now + float(c.cost_model.iteration_time(n_d, ctx, [ch[1] for ch in chunks], [ch[2] for ch in chunks],
                                                       **({"decode_max_context_tokens": longest}
                                                          if c.skew_aware else {})))

    def complete(self, c) -> None:
        index = c.current
        if index is None:
            return
        if c.async_freed:
            self._release_freed(c)  # finished one iteration ago: their outputs are processed by now
        rec = self.recorder
        end = rec.end[index]
        if rec.k[index] > 1:
            self._end_run(c, index, rec.k[index])
        if rec.n[index]:
            self._complete_decodes(c, end, rec.n[index])
        if c._just_prefilled:
            self._complete_chunks(c, end, c._just_prefilled)
            c._just_prefilled = ()
        c.n_running = len(c.running) + len(c.prefilling)

    def _complete_decodes(self, c, end: float, n_d: int) -> None:
        rq = self.requests
        c.decode_count += 1
        c.ctx_sum += n_d
        d = c.decode_count
        running = c.running
        if not running or running[0][0] > d:
            return  # nobody finishes (every iteration of a run but its last)
        rank, ranks = self._id_rank, c.member_ranks
        while running and running[0][0] <= d:
            i = heappop(running)[1]
            if rank is not None:  # _leaves, inline
                del ranks[bisect_left(ranks, rank[i])]
            done = rq.l[i] + rq.o[i]
            c.ctx_sum -= done
            if self.paged:
                self.kv.leave(c, i)
            self._finish(c, i, end, done - 1)
            c.ids_cache = None

    def _complete_chunks(self, c, end: float, chunks: list) -> None:
        rq = self.requests
        l, o, generated = rq.l, rq.o, rq.generated
        # A prompt with nothing shared, never preempted, whose blocks are registered again before they are
        # freed (vLLM's semantics cache a request's blocks when it finishes; a preemption registers them too):
        # only its own blocks, which nobody else can hit, so its count is left to that registration.
        own_later = self.paged and self.config.cache_at_schedule and self.kv.block_keys is not None
        for i, take, _ in chunks:
            entry = c.prefilling_index[i]
            entry[1] += take
            need = l[i] + generated[i]
            if self.paged and not (own_later and not self.kv.block_keys[i] and not rq.preemptions[i]):
                self.kv.register(c, i, entry[1])
            if rq.preemptions[i] and take:  # after a preemption, also one before the first token
                rq.recomputed[i] += take
            if entry[1] < need:
                continue
            del c.prefilling_index[i]
            c.prefilling.remove(entry)
            g = generated[i] + 1  # the prompt's last chunk yields a token
            if rq.first_token[i] != rq.first_token[i]:
                rq.first_token[i] = end
            if g >= o[i]:
                self._finish(c, i, end, need)
            else:
                rq.gen_base[i] = c.decode_count - g
                heappush(c.running, (o[i] + rq.gen_base[i], i))
                self._joins(c, i)
                if self.paged:
                    self.kv.join(c, i)
                rq.predicted_finish[i] = c.decode_count - 1 + max(rq.seen[i] - generated[i], 1)
                c.ctx_sum += l[i] + g
                c.ids_cache = None

    def _finish(self, c, i: int, end: float, kv_tokens: int) -> None:
        """As :meth:`Former._finish`; with vLLM's semantics the generated tokens' full blocks are cached too,
        and under async scheduling the slot and blocks come back one iteration later."""
        if self.config.cache_at_schedule:
            self.kv.register(c, i, kv_tokens)
        if not self.config.async_scheduling:
            super()._finish(c, i, end, kv_tokens)
            return
        rq = self.requests
        rq.finish[i] = end
        rq.finished += 1
        if not self.paged:
            c.kv_reserved_tokens -= rq.l[i] + rq.o[i]
        c.outstanding_s -= rq.w[i]
        c.async_freed.append((i, c.paged.blocks(kv_tokens) if self.paged else 0))

    def _release_freed(self, c) -> None:
        """Async scheduling: the blocks of the requests that finished one iteration ago go back to the pool."""
        if self.paged:
            for i, blocks in c.async_freed:
                c.paged.release(i, blocks, True)
        c.async_freed = []
