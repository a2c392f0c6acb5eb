"""A paged KV cache with automatic prefix caching, after vLLM v1's block pool. Pure, no I/O.

Blocks hold BLOCK_TOKENS tokens. A request holds a table of blocks; a full block is registered under a hash
of its content and of everything before it, so another request with the same prefix reuses it. Freed blocks
keep their hash in an LRU queue until a new allocation evicts them (the oldest first, a request's tail
blocks before its head), exactly the property that makes prefix-affine routing pay off.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


class KVCache:
    """Block allocation, reference counts and the prefix-cache index of one replica."""

    def __init__(self, num_blocks: int, block_tokens: int = 16, *, prefix_caching: bool = True) -> None:
        self.num_blocks = num_blocks
        self.block_tokens = block_tokens
        self.prefix_caching = prefix_caching
        self._refs = [0] * num_blocks
        self._hashes: list[int | None] = [None] * num_blocks
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._cached: dict[int, int] = {}
        self._tables: dict[str, list[int]] = {}
        self._registered: dict[str, int] = {}

    @property
    def free_blocks(self) -> int:
        """Blocks no request holds (some still carry a cached prefix)."""
        return len(self._free)

    @property
    def usage(self) -> float:
        """Share of blocks held by requests: vLLM's `kv_cache_usage_perc`."""
        return 1.0 - self.free_blocks / self.num_blocks

    def blocks_of(self, request_id: str) -> int:
        """Blocks a request holds."""
        return len(self._tables.get(request_id, ()))

    def blocks_for(self, tokens: int) -> int:
        """Blocks needed to hold `tokens` tokens."""
        return -(-tokens // self.block_tokens)

    def cached_prefix(self, hashes: Sequence[int]) -> list[int]:
        """Blocks holding the longest cached prefix of a request whose full blocks hash to `hashes`."""
        if not self.prefix_caching:
            return []
        found: list[int] = []
        for h in hashes:
            block = self._cached.get(h)
            if block is None:
                break
            found.append(block)
        return found

    def allocate(self, request_id: str, tokens: int, computed: Sequence[int] = ()) -> bool:
        """Make `request_id` hold enough blocks for `tokens` tokens, first taking the cached blocks `computed`
        (a request's first allocation only). False, with nothing changed, when the free blocks do not suffice."""
        table = self._tables.get(request_id, [])
        needed = self.blocks_for(tokens) - len(table) - len(computed)
        if needed <= 0 and not computed:
            return True  # the common decode step: the last block still has room
        reusable_free = sum(1 for b in computed if self._refs[b] == 0)
        if needed > self.free_blocks - reusable_free:
            return False
        for block in computed:
            if self._refs[block] == 0:
                del self._free[block]
            self._refs[block] += 1
            table.append(block)
        for _ in range(max(0, needed)):
            block, _ = self._free.popitem(last=False)
            self._evict(block)
            self._refs[block] = 1
            table.append(block)
        self._tables[request_id] = table
        if computed:
            self._registered[request_id] = len(computed)
        return True

    def register(self, request_id: str, hashes: Sequence[int], full_blocks: int) -> None:
        """Index the request's first `full_blocks` blocks (now full; `hashes` in block order) for prefix reuse."""
        if not self.prefix_caching:
            return
        table = self._tables.get(request_id)
        if table is None:
            return
        done = self._registered.get(request_id, 0)
        upto = min(full_blocks, len(hashes), len(table))
        for i in range(done, upto):
            block = table[i]
            if self._hashes[block] is None and hashes[i] not in self._cached:
                self._hashes[block] = hashes[i]
                self._cached[hashes[i]] = block
        self._registered[request_id] = max(done, upto)

    def free(self, request_id: str) -> None:
        """Release a request's blocks; they stay cached (tail first in line for eviction)."""
        table = self._tables.pop(request_id, [])
        self._registered.pop(request_id, None)
        for block in reversed(table):
            self._refs[block] -= 1
            if self._refs[block] == 0:
                self._free[block] = None

    def _evict(self, block: int) -> None:
        h = self._hashes[block]
        if h is not None:
            self._hashes[block] = None
            if self._cached.get(h) == block:
                del self._cached[h]
