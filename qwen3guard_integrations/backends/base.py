"""The backend protocols the guard objects and adapters depend on (never on a concrete backend)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..core.messages import Message
from ..core.verdict import Verdict

__all__ = ["BackendHealth", "GenBackend"]


@dataclass(frozen=True)
class BackendHealth:
    """What `Qwen3Guard.health` found: ``ok`` when the backend can serve checks now.

    ``status`` is the HTTP status of the health route (None for a local model); ``info`` the
    server's self-description (TGI ``/info``, the OpenAI ``/models`` list) or the local model's.
    """

    ok: bool
    backend: str
    endpoint: str | None
    status: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    latency_ms: float | None = None


@runtime_checkable
class GenBackend(Protocol):
    """Anything that turns conversations into Gen verdicts.

    ``check_batch`` returns one entry per conversation, in order: a `Verdict`, or the
    exception that item failed with (bad input, an unparsable answer, a failed request). A
    failure of the backend as a whole (model crashed) may be raised instead; the guard turns
    either into a raised error (fail-closed) or a degraded verdict (fail-open).
    """

    name: str
    model_id: str
    endpoint: str | None
    #: True: the guard coalesces concurrent checks into batches for it (a local model);
    #: False: the backend fans out itself and `acheck_batch` is native async (a server).
    coalesce: bool

    def check_batch(
        self, conversations: Sequence[Sequence[Message]], *, fast: bool = True
    ) -> list[Verdict | Exception]:
        """Check each conversation; the mode follows its last message."""
        ...

    async def acheck_batch(
        self, conversations: Sequence[Sequence[Message]], *, fast: bool = True
    ) -> list[Verdict | Exception]:
        """Async twin of `check_batch` (never blocks the event loop)."""
        ...

    def health(self) -> BackendHealth:
        """Whether the backend can serve checks now."""
        ...

    async def ahealth(self) -> BackendHealth:
        """Async twin of `health`."""
        ...

    def close(self) -> None:
        """Release threads and connections."""
        ...
