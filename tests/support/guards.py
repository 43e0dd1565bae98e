"""Public-API stand-ins for what tests used to read off a guard's private attributes."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from qwen3guard_integrations.core.messages import (
    Message,
    moderation_role,
    normalize_messages,
    response_messages,
)
from qwen3guard_integrations.core.verdict import Verdict

__all__ = ["BatchCounter", "conversation"]


def conversation(item: Any) -> tuple[Message, ...]:
    """The typed conversation a `Qwen3Guard` checks for a `check_batch` item, built with the
    public helpers of `qwen3guard_integrations.core.messages` (a prompt, a message list, or a
    ``(prompt, response)`` pair)."""
    if isinstance(item, tuple) and len(item) == 2 and not isinstance(item, Message):
        return tuple(response_messages(item[0], item[1]))
    msgs = normalize_messages(item)
    moderation_role(msgs)
    return tuple(msgs)


class BatchCounter:
    """A real `GenBackend` (``inner``) that counts the batches and conversations it is given.

    Build a guard on it (``Qwen3Guard(BatchCounter(backend))``) to see how the guard's
    micro-batcher coalesced concurrent checks, without reading the guard's internals.
    """

    coalesce = True

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.model_id, self.endpoint = inner.name, inner.model_id, inner.endpoint
        self.batches = 0
        self.conversations = 0
        self._lock = threading.Lock()

    def check_batch(
        self, conversations: Sequence[Sequence[Message]], *, fast: bool = True
    ) -> list[Verdict | Exception]:
        with self._lock:
            self.batches += 1
            self.conversations += len(conversations)
        result: list[Verdict | Exception] = self.inner.check_batch(conversations, fast=fast)
        return result

    async def acheck_batch(
        self, conversations: Sequence[Sequence[Message]], *, fast: bool = True
    ) -> list[Verdict | Exception]:
        import asyncio

        return await asyncio.to_thread(self.check_batch, conversations, fast=fast)

    def encode(self, messages: Sequence[Message]) -> Any:
        return self.inner.encode(messages)

    def health(self) -> Any:
        return self.inner.health()

    async def ahealth(self) -> Any:
        return await self.inner.ahealth()

    def close(self) -> None:
        """The inner backend belongs to whoever made it: nothing to release here."""
