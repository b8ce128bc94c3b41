"""KV-cache memory as an engine manages it: reserved at admission, or paged in blocks with a prefix cache.

Two managers, one per run (``kv_mode``):

* ``reserve`` (the paper's setting and the workbench's first one): a request
  holds ``l_i + o_i`` tokens from its admission to its last token; the
  replica (:class:`~workbench.engine.replica.Replica`) counts them in
  ``kv_reserved_tokens`` and :func:`reserved_admissible` says how many of its
  waiting requests fit.
* ``paged`` (vLLM's PagedAttention): memory is ``capacity_blocks`` blocks of
  ``block_size`` tokens; a request holds ``ceil(kv_tokens / block_size)``
  blocks, allocated as its context grows; when a running request needs a
  block and none is free, the engine preempts the most recently admitted
  running request (recompute preemption).  :class:`PagedKV` is the block
  pool of one replica; :class:`PagedKVManager` is the request-level policy
  over it (admission, growth, the victim of a preemption, cache lookups),
  after vLLM's ``KVCacheManager`` over its ``BlockPool``.

**Prefix caching** (optional, paged only).  Every *full* block of a prompt
has a key: blocks inside a shared prefix (the trace's ``prefix_id`` +
``prefix_tokens``, or its ``prefix_hashes``) have a key shared by every
request with that prefix; the others are private to the request.  A block
whose last holder releases it stays cached but evictable, in a free queue
ordered by the time it was freed (a request's blocks tail first, so its
prefix is evicted last); allocation takes the queue head (the least recently
freed block) and so evicts its content, as vLLM's block pool does.  A request admitted with a cached leading run of blocks skips their
prefill compute (at least one prompt token is always computed, for the
logits); the blocks still count against capacity while referenced.  A
preempted request's own blocks go back to the free queue too, so its
recompute hits whatever has not been evicted since.
"""

from __future__ import annotations

import heapq
import math
from collections import deque

import pandas as pd

#: The key of a free-queue run of dead cached blocks (see PagedKV.release).
DEAD = ("dead",)


class PagedKV:
    """Block accounting of one client; tokens per request are tracked by the engine.

    ``used`` counts blocks referenced by admitted requests (a shared cached
    block once, however many requests reference it); ``free_blocks`` =
    capacity - used, of which some hold evictable cached content.
    """

    __slots__ = ("block_size", "capacity_blocks", "used", "caching", "refs", "free_queue", "cached_free",
                 "stamp", "held", "private", "hits_tokens", "queried_tokens", "anon_queued", "dead_queued",
                 "residues")

    def __init__(self, capacity_tokens: int, block_size: int, caching: bool) -> None:
        self.block_size = block_size
        self.capacity_blocks = capacity_tokens // block_size
        self.used = 0
        self.caching = caching
        self.refs: dict = {}  # cached block key -> number of admitted requests that reference it
        # Free blocks with content, least recently freed first: entries (key, stamp); a stale entry (its key
        # re-referenced or re-freed since) is skipped when popped.
        self.free_queue: deque = deque()
        self.cached_free: dict = {}  # key -> stamp of its live entry in free_queue
        self.stamp = 0
        self.held: dict[int, list] = {}  # request -> keys of the full cached blocks it references, in order
        # Request -> how many of its own (private) blocks past its shared prefix it has registered without
        # listing their keys (see register_private): only the request itself can ever hit them.
        self.private: dict[int, int] = {}
        self.hits_tokens = 0
        self.queried_tokens = 0
        self.anon_queued = 0  # blocks in anonymous runs of the free queue
        # Cached blocks nobody can hit again (a finished request's private blocks), queued as runs
        # (DEAD, count): they are cached content as far as eviction order goes, so they count as cached.
        self.dead_queued = 0
        # The running decodes by (tokens held - 1 - decode count) mod block_size: each one's residue is
        # fixed while it decodes, so the blocks any number of decodes need is a sum over block_size bins.
        self.residues = [0] * block_size

    @property
    def free_blocks(self) -> int:
        return self.capacity_blocks - self.used

    @property
    def cached_blocks(self) -> int:
        """Free blocks that still hold cached content (evictable)."""
        return len(self.cached_free) + self.dead_queued

    def blocks(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    # -- the prefix cache ------------------------------------------------------------------------------
    def lookup(self, keys: list) -> int:
        """How many leading blocks of ``keys`` are cached (referenced by a running request, or free and not evicted)."""
        if not self.caching:
            return 0
        n = 0
        for key in keys:
            if key in self.refs or key in self.cached_free:
                n += 1
            else:
                break
        return n

    def new_blocks_for_hits(self, keys: list, hit_blocks: int) -> int:
        """Blocks that referencing the first ``hit_blocks`` cached keys takes from the free pool (free cached ones)."""
        return sum(1 for key in keys[:hit_blocks] if key not in self.refs)

    def admit(self, request: int, keys: list, hit_blocks: int, total_blocks: int) -> None:
        """Reference the hit blocks and allocate the rest of ``total_blocks`` for ``request``."""
        refs, cached_free = self.refs, self.cached_free
        held = []
        for key in keys[:hit_blocks]:
            if key in refs:
                refs[key] += 1
            else:
                del cached_free[key]  # its queue entry goes stale
                refs[key] = 1
                self.used += 1
            held.append(key)
        self.held[request] = held
        self._take(total_blocks - hit_blocks)

    def grow(self, request: int, blocks: int) -> None:
        """Allocate ``blocks`` more private blocks for ``request`` (the engine checked they are free)."""
        self._take(blocks)

    def grow_each(self, blocks: list[int]) -> None:
        """:meth:`grow` by each of ``blocks`` in turn (a run of decodes, one iteration's blocks at a time):
        the same evictions as separate calls.  Those differ from one call only where a call starts with nothing
        cached left to evict (it then forgets the queue's order), so one call does when the blocks taken
        before the last call cannot exhaust the cached content, or when nothing cached is there to begin with."""
        total = sum(blocks)
        content = len(self.cached_free) + self.dead_queued if self.caching else 0
        if not content or total - blocks[-1] - (self.free_blocks - self._queued_blocks()) < content:
            if total or self.free_queue:
                self._take(total)
            return
        for x, b in enumerate(blocks):
            if not (self.cached_free or self.dead_queued):
                self._take(sum(blocks[x:]))
                return
            if b:
                self._take(b)

    def register(self, request: int, keys: list, full_blocks: int) -> None:
        """Make the request's first ``full_blocks`` computed prompt blocks cacheable (their keys become known)."""
        if not self.caching:
            return
        held = self.held.setdefault(request, [])
        refs = self.refs
        while len(held) < min(full_blocks, len(keys)):
            key = keys[len(held)]
            if key in refs:
                # Computed again while another request holds the same content (both prefilled it at once):
                # vLLM keeps the duplicate block private; so do we.
                break
            refs[key] = 1
            held.append(key)

    def register_private(self, request: int, n_shared: int, keys: list, full_blocks: int) -> None:
        """As :meth:`register` for a request never preempted, whose first ``n_shared`` keys are its shared
        prefix and the rest its own ``(request, b)``: its own keys are only counted, since nobody else can
        hit them and the request itself only after a preemption (when :meth:`release` lists them)."""
        if not self.caching:
            return
        held = self.held.get(request)
        if held is None or len(held) < n_shared:
            self.register(request, keys[:n_shared], min(full_blocks, n_shared))
            held = self.held[request]
        if len(held) == n_shared and full_blocks > n_shared:
            private = self.private
            if private.get(request, 0) < full_blocks - n_shared:
                private[request] = full_blocks - n_shared

    def release(self, request: int, total_blocks: int, finished: bool = False) -> None:
        """Free the ``total_blocks`` blocks ``request`` holds; cached ones become evictable, the rest anonymous.

        Tail first, as vLLM's ``free`` does: the request's last blocks enter the free queue first and its
        first prompt block last, so the prefix (the part most likely shared) is evicted last.  The blocks past
        the cached ones (generated tokens, a partial last block) are the tail: they go in before the cached
        blocks, which go in from the last to the first.
        """
        held = self.held.pop(request, [])
        own = self.private.pop(request, 0) if self.private else 0  # registered private blocks, after held
        refs = self.refs
        private = total_blocks - len(held) - own
        queue = self.free_queue
        if private > 0 and self.caching and (own or self.cached_free or self.dead_queued
                                             or any(refs[key] == 1 for key in held)):
            queue.append((None, private))
            self.anon_queued += private
        if own:
            if finished:  # nobody can hit them again: one run, in the queue where they would be
                queue.append((DEAD, own))
                self.dead_queued += own
            else:
                n_shared = len(held)
                for b in range(n_shared + own - 1, n_shared - 1, -1):
                    self.stamp += 1
                    self.cached_free[(request, b)] = self.stamp
                    queue.append(((request, b), self.stamp))
        for key in reversed(held):
            left = refs[key] - 1
            if left:
                refs[key] = left
                total_blocks -= 1  # still referenced by another request: not freed
            else:
                del refs[key]
                self.stamp += 1
                self.cached_free[key] = self.stamp
                self.free_queue.append((key, self.stamp))
        self.used -= total_blocks

    def _take(self, blocks: int) -> None:
        """Allocate ``blocks`` free blocks, evicting the least recently freed cached content first in line."""
        self.used += blocks
        cached_free = self.cached_free
        if not self.caching or not (cached_free or self.dead_queued):
            if self.free_queue:
                self.free_queue.clear()  # nothing cached is left to evict: the order no longer matters
                self.anon_queued = 0
            return
        # The free queue's head is taken first: never-used blocks are older than any freed one.
        never_used = (self.capacity_blocks - (self.used - blocks)
                      - (len(cached_free) + self.anon_queued + self.dead_queued))  # _queued_blocks(), inline
        if never_used >= blocks:
            return
        if never_used > 0:
            blocks -= never_used
        queue = self.free_queue
        while blocks > 0 and queue:
            key, stamp = queue[0]
            if key is None or key is DEAD:
                take = blocks if blocks < stamp else stamp
                blocks -= take
                if key is None:
                    self.anon_queued -= take
                else:
                    self.dead_queued -= take
                if take == stamp:
                    queue.popleft()
                else:
                    queue[0] = (key, stamp - take)  # the rest of the run, of the same kind
                continue
            queue.popleft()
            if cached_free.get(key) == stamp:
                del cached_free[key]
                blocks -= 1

    def _queued_blocks(self) -> int:
        """Blocks in the free queue that still hold something (cached content or anonymous runs)."""
        return len(self.cached_free) + self.anon_queued + self.dead_queued


def reserved_admissible(c, l: list[int], o: list[int], by_rank: list[int]) -> int:
    """How many waiting requests, in queue order, fit the free slots and the reserved KV cache."""
    free = c.batch_size - c.n_running
    if c.kv_capacity_tokens is None:
        return min(free, len(c.waiting))
    room = c.kv_capacity_tokens - c.kv_reserved_tokens
    count = 0
    for r in heapq.nsmallest(min(free, len(c.waiting)), c.waiting):
        need = l[by_rank[r]] + o[by_rank[r]]
        if need > room:
            break  # head-of-line: keep the queue order
        room -= need
        count += 1
    return count


def prefix_block_keys(trace: pd.DataFrame, block_size: int) -> list[list]:
    """Per request, the keys of the full blocks of its shared prompt prefix (see the module docstring)."""
    n = len(trace)
    # One empty list for every request without a shared prefix (nothing appends to a request's keys: keys_for
    # slices or concatenates them), not a list each.
    keys: list[list] = [[]] * n
    if "prefix_id" in trace.columns and "prefix_tokens" in trace.columns:
        pid = trace["prefix_id"].tolist()
        ptok = trace["prefix_tokens"].tolist()
        for i in range(n):
            if pid[i] is None or (isinstance(pid[i], float) and math.isnan(pid[i])):
                continue
            keys[i] = [("p", str(pid[i]), b) for b in range(int(ptok[i]) // block_size)]
    elif "prefix_hashes" in trace.columns:
        hashes = trace["prefix_hashes"].tolist()
        per = (trace["prefix_block_tokens"].tolist() if "prefix_block_tokens" in trace.columns else [512] * n)
        prompt = trace["input_tokens"].tolist()
        for i in range(n):
            text = hashes[i]
            if not isinstance(text, str) or not text.strip():
                continue
            chain = text.split()
            hb = int(per[i])
            # Engine block b covers tokens [b*bs, (b+1)*bs).  A chain hash names the whole prefix up to the end
            # of its hashed block, so b is shared exactly when its last token lies inside a hashed block of the
            # prompt: its key is that block's hash (and b).  Past the prompt (generated tokens) nothing is shared.
            n_blocks = min(len(chain) * hb, int(prompt[i])) // block_size
            keys[i] = [("h", chain[((b + 1) * block_size - 1) // hb], b) for b in range(n_blocks)]
    return keys


class PagedKVManager:
    """Paged KV at the level of requests: what fits, what a request holds, whom to preempt.

    One per run, over every replica's :class:`PagedKV` (``replica.paged``).  It reads the
    requests' prompt lengths, generated tokens and admission order from the engine's
    :class:`~workbench.engine.requests.RequestTable`.
    """

    __slots__ = ("requests", "block_size", "block_keys", "mixed")

    def __init__(self, requests, block_size: int, mixed: bool) -> None:
        self.requests = requests
        self.block_size = block_size
        self.block_keys = requests.block_keys
        self.mixed = mixed

    def keys_for(self, i: int, tokens: int) -> list:
        """Keys of the full blocks of request i's first ``tokens`` tokens: its shared prefix, then its own."""
        shared = self.block_keys[i]
        full = tokens // self.block_size
        if full <= len(shared):
            return shared[:full]
        if not self.requests.preemptions[i]:
            # Never preempted: its own blocks were never cached, so no look-up passes its shared prefix.
            return shared
        return shared + [(i, b) for b in range(len(shared), full)]

    def hit_tokens(self, c, i: int, need: int) -> int:
        """Cached leading tokens of request i's first ``need`` tokens (at least one is always computed)."""
        if self.block_keys is None:
            return 0
        return min(c.paged.lookup(self.keys_for(i, need)), (need - 1) // self.block_size) * self.block_size

    def admissible(self, c, free_slots: int) -> int:
        """How many waiting requests, in queue order, fit the free slots and the free blocks (head-of-line)."""
        kvm, rq = c.paged, self.requests
        free = kvm.free_blocks
        count = 0
        for r in heapq.nsmallest(min(free_slots, len(c.waiting)), c.waiting):
            i = rq.request_of_rank(r)
            blocks = self.admission_blocks(c, i, rq.l[i] + rq.generated[i])
            if blocks > free:
                break
            free -= blocks
            count += 1
        return count

    def admission_blocks(self, c, i: int, need: int) -> int:
        """Free blocks that admitting request i for its first ``need`` tokens takes: its blocks less the
        prefix-cache hits, plus any cached block a hit takes back from the free list."""
        kvm = c.paged
        if self.block_keys is None:
            return kvm.blocks(need)
        keys = self.keys_for(i, need)
        hit = min(kvm.lookup(keys), (need - 1) // self.block_size)
        return kvm.blocks(need) - hit + kvm.new_blocks_for_hits(keys, hit)

    def first_chunk_blocks(self, c, i: int, need_tokens: int, hit_tokens: int, first: int) -> int:
        """Blocks that admitting request i for its cached part and a first chunk of ``first`` tokens takes."""
        kvm = c.paged
        hit_blocks = hit_tokens // self.block_size
        keys = self.keys_for(i, need_tokens) if self.block_keys is not None else []
        return (kvm.blocks(hit_tokens + first) - hit_blocks
                + (kvm.new_blocks_for_hits(keys, hit_blocks) if hit_blocks else 0))

    def admit(self, c, i: int, tokens: int) -> int:
        """Admit request i to c's blocks for the first ``tokens`` tokens it will compute; return cached tokens."""
        kvm, rq, bs = c.paged, self.requests, self.block_size
        need = rq.l[i] + rq.generated[i]
        hit = 0
        keys: list = []
        if self.block_keys is not None:
            keys = self.keys_for(i, need)
            hit = min(kvm.lookup(keys), (need - 1) // bs)
            kvm.queried_tokens += need
            kvm.hits_tokens += hit * bs
        kvm.admit(i, keys, hit, kvm.blocks(max(hit * bs + tokens, 1)) if self.mixed else kvm.blocks(need))
        return hit * bs

    def register(self, c, i: int, tokens: int) -> None:
        """Request i's first ``tokens`` computed tokens become cacheable (prefix caching only)."""
        if self.block_keys is not None:
            if self.requests.preemptions[i]:
                c.paged.register(i, self.keys_for(i, tokens), tokens // self.block_size)
            else:  # its own blocks counted, not listed (PagedKV.register_private)
                shared = self.block_keys[i]
                c.paged.register_private(i, len(shared), shared, tokens // self.block_size)

    def join(self, c, i: int) -> None:
        """Request i starts decoding on c (its gen_base set): count its block residue."""
        self._residue(c, i, 1)

    def leave(self, c, i: int) -> None:
        """Request i stops decoding on c (finished or preempted), before its gen_base changes."""
        self._residue(c, i, -1)

    def _residue(self, c, i: int, delta: int) -> None:
        rq = self.requests
        c.paged.residues[(rq.l[i] - 2 - rq.gen_base[i]) % self.block_size] += delta

    def decode_blocks_needed(self, c, j: int) -> int:
        """New blocks the running decodes need for ``j`` more decode iterations.

        A request holding ``s`` tokens needs ``ceil((s + j) / bs) - ceil(s / bs) = (rho + j) // bs`` more, with
        ``rho = (s - 1) mod bs = (residue + decode_count) mod bs``: a sum over the residue bins."""
        bs = self.block_size
        hist, d = c.paged.residues, c.decode_count
        if j == 1:
            return hist[(bs - 1 - d) % bs]
        q, r = divmod(j, bs)
        need = q * len(c.running) if q else 0
        for rho in range(bs - r, bs):
            need += hist[(rho - d) % bs]
        return need

    def decode_blocks_each(self, c, k: int) -> list[int]:
        """New blocks the running decodes need at each of the next ``k`` decode iterations, in order."""
        bs = self.block_size
        hist, d = c.paged.residues, c.decode_count
        return [hist[(-r - d) % bs] for r in range(1, k + 1)]

    def longest_decode_run(self, c, k: int, free: int | None = None) -> int:
        """The longest run of at most ``k`` decodes whose new blocks fit ``free`` (default: the free blocks; the
        caller made room for one)."""
        if free is None:
            free = c.paged.free_blocks
        if self.decode_blocks_needed(c, k) <= free:
            return k
        lo, hi = 1, k  # need(lo) fits, need(hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.decode_blocks_needed(c, mid) <= free:
                lo = mid
            else:
                hi = mid
        return lo

    def victim(self, c) -> int:
        """The running request admitted last (vLLM preempts from the tail of its running list)."""
        admit_seq = self.requests.admit_seq
        best, best_seq = -1, -1
        for _, i in c.running:
            if admit_seq[i] > best_seq:
                best, best_seq = i, admit_seq[i]
        for entry in c.prefilling:
            if admit_seq[entry[0]] > best_seq:
                best, best_seq = entry[0], admit_seq[entry[0]]
        return best
