"""The batched KV cache of a `StreamEngine`: fixed slots with per-row lengths.

Every layer holds one key and one value tensor ``[slots, kv_heads, capacity, head_dim]``. A
session owns one slot (one row) and a length; positions past the length are never read (the
attention mask stops at it), so freeing a slot is setting its length to zero. Rows of one step
that sit in consecutive slots are read as a view (no copy), others with one ``index_select``.

Both dimensions grow on demand by doubling, up to ``max_slots`` and ``max_len``: a lone session
holds a small tensor, not the whole budget. Tensors start zeroed: a masked position multiplies a
zero weight by a finite value (never ``0 * NaN``).
"""

from __future__ import annotations

import heapq
from typing import Any

__all__ = ["SlotPool"]


class SlotPool:
    """Per-layer key/value tensors shared by all sessions of an engine (see module docstring)."""

    def __init__(
        self,
        torch: Any,
        *,
        layers: int,
        kv_heads: int,
        head_dim: int,
        dtype: Any,
        device: Any,
        max_slots: int,
        max_len: int,
        init_slots: int = 4,
        init_len: int = 256,
    ) -> None:
        self.torch = torch
        self.layers = layers
        self.kv_heads = kv_heads
        self.head_dim = head_dim
        self.dtype = dtype
        self.device = device
        self.max_slots = max_slots
        self.max_len = max_len
        self.slots = min(init_slots, max_slots)
        self.capacity = min(init_len, max_len)
        self.keys: list[Any] = []
        self.values: list[Any] = []
        self.lengths: list[int] = [0] * self.slots
        self._free: list[int] = list(range(self.slots))
        self._used: set[int] = set()
        self._alloc(self.slots, self.capacity)

    def _alloc(self, slots: int, capacity: int) -> None:
        torch = self.torch
        shape = (slots, self.kv_heads, capacity, self.head_dim)
        new_k = [
            torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.layers)
        ]
        new_v = [
            torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.layers)
        ]
        for old, new in ((self.keys, new_k), (self.values, new_v)):
            for o, n in zip(old, new):
                n[: o.shape[0], :, : o.shape[2]] = o
        self.keys, self.values = new_k, new_v

    @property
    def allocated_tokens(self) -> int:
        """Positions the tensors can hold (slots times capacity)."""
        return self.slots * self.capacity

    @property
    def live(self) -> int:
        """Slots in use."""
        return len(self._used)

    def acquire(self) -> int:
        """A free slot (growing the pool when none is free); `RuntimeError` at ``max_slots``."""
        if not self._free:
            if self.slots >= self.max_slots:
                raise RuntimeError("no free KV slot")
            grown = min(self.max_slots, 2 * self.slots)
            self._alloc(grown, self.capacity)
            self.lengths += [0] * (grown - self.slots)
            for s in range(self.slots, grown):
                heapq.heappush(self._free, s)
            self.slots = grown
        slot = heapq.heappop(self._free)  # the lowest free slot: keeps live rows together
        self._used.add(slot)
        self.lengths[slot] = 0
        return slot

    def release(self, slot: int) -> None:
        """Give ``slot`` back (its positions are dropped)."""
        if slot in self._used:
            self._used.discard(slot)
            self.lengths[slot] = 0
            heapq.heappush(self._free, slot)

    def reserve(self, length: int) -> None:
        """Make every slot able to hold ``length`` positions (grows the capacity by doubling)."""
        if length <= self.capacity:
            return
        if length > self.max_len:
            raise RuntimeError(f"{length} positions exceed the KV capacity {self.max_len}")
        cap = self.capacity
        while cap < length:
            cap *= 2
        cap = min(cap, self.max_len)
        self._alloc(self.slots, cap)
        self.capacity = cap
