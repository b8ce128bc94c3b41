"""KV-cache memory as an engine manages it: reserved at admission, or paged in blocks with a prefix cache.

Two managers, one per run (``kv_mode``):

* ``reserve`` (the paper's setting and the workbench's first one): a request
  holds ``l_i + o_i`` tokens from its admission to its last token; the
  client's :class:`~workbench.engine.client.ClientState` counts them in
  ``kv_reserved_tokens`` and nothing here is used.
* ``paged`` (vLLM's PagedAttention): memory is ``capacity_blocks`` blocks of
  ``block_size`` tokens; a request holds ``ceil(kv_tokens / block_size)``
  blocks, allocated as its context grows; when a running request needs a
  block and none is free, the engine preempts the most recently admitted
  running request (recompute preemption).  :class:`PagedKV` is that
  bookkeeping for one client.

**Prefix caching** (optional, paged only).  Every *full* block of a prompt
has a key: blocks inside a shared prefix (the trace's ``prefix_id`` +
``prefix_tokens``, or its ``prefix_hashes``) have a key shared by every
request with that prefix; the others are private to the request.  A block
whose last holder releases it stays cached but evictable, in a free queue
ordered by the time it was freed; allocation takes the queue head (the
least recently freed block) and so evicts its content, as vLLM's block pool
does.  A request admitted with a cached leading run of blocks skips their
prefill compute (at least one prompt token is always computed, for the
logits); the blocks still count against capacity while referenced.  A
preempted request's own blocks go back to the free queue too, so its
recompute hits whatever has not been evicted since.
"""

from __future__ import annotations

from collections import deque


class PagedKV:
    """Block accounting of one client; tokens per request are tracked by the engine.

    ``used`` counts blocks referenced by admitted requests (a shared cached
    block once, however many requests reference it); ``free_blocks`` =
    capacity - used, of which some hold evictable cached content.
    """

    __slots__ = ("block_size", "capacity_blocks", "used", "caching", "refs", "free_queue", "cached_free",
                 "stamp", "held", "shared", "hits_tokens", "queried_tokens", "anon_queued")

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
        self.shared: dict[int, int] = {}  # request -> how many of its blocks are counted in refs
        self.hits_tokens = 0
        self.queried_tokens = 0
        self.anon_queued = 0  # blocks in anonymous runs of the free queue

    @property
    def free_blocks(self) -> int:
        return self.capacity_blocks - self.used

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
        self.shared[request] = hit_blocks
        self._take(total_blocks - hit_blocks)

    def grow(self, request: int, blocks: int) -> None:
        """Allocate ``blocks`` more private blocks for ``request`` (the engine checked they are free)."""
        self._take(blocks)

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
            self.shared[request] = self.shared.get(request, 0) + 1

    def release(self, request: int, total_blocks: int) -> None:
        """Free the ``total_blocks`` blocks ``request`` holds; cached ones become evictable, the rest anonymous."""
        held = self.held.pop(request, [])
        self.shared.pop(request, None)
        refs = self.refs
        # vLLM frees a request's blocks tail first, so its prefix (the part most likely shared) is evicted last.
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
        private = total_blocks - len(held)
        self.used -= total_blocks
        if private > 0 and self.caching and self.cached_free:
            self.free_queue.append((None, private))
            self.anon_queued += private

    def _take(self, blocks: int) -> None:
        """Allocate ``blocks`` free blocks, evicting the least recently freed cached content first in line."""
        self.used += blocks
        if not self.caching or not self.cached_free:
            if self.free_queue:
                self.free_queue.clear()  # nothing cached is left to evict: the order no longer matters
                self.anon_queued = 0
            return
        # The free queue's head is taken first: never-used blocks are older than any freed one.
        never_used = self.capacity_blocks - (self.used - blocks) - self._queued_blocks()
        blocks -= min(blocks, max(0, never_used))
        queue, cached_free = self.free_queue, self.cached_free
        while blocks > 0 and queue:
            key, stamp = queue[0]
            if key is None:
                take = min(blocks, stamp)
                blocks -= take
                self.anon_queued -= take
                if take == stamp:
                    queue.popleft()
                else:
                    queue[0] = (None, stamp - take)
                continue
            queue.popleft()
            if cached_free.get(key) == stamp:
                del cached_free[key]
                blocks -= 1

    def _queued_blocks(self) -> int:
        """Blocks in the free queue that still hold something (cached content or anonymous runs)."""
        return len(self.cached_free) + self.anon_queued
