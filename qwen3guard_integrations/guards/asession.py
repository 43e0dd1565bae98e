"""`AsyncStreamSession`: the async twin of `StreamSession`, for ``async with``.

```python
async with guard.asession(messages) as s:    # the prompt pass runs in a worker thread
    update = await s.afeed(piece)            # awaits the shared engine's step
```

Importable from ``guards.session`` as well.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..core.errors import SessionClosedError
from ..core.verdict import Verdict

if TYPE_CHECKING:  # session.py imports this module (and re-exports its class)
    from .session import StreamSession
    from .session_ledger import StreamUpdate

__all__ = ["AsyncStreamSession"]


class AsyncStreamSession:
    """Async twin of `StreamSession`: ``async with guard.asession(messages) as s``.

    The prompt pass on entry runs in a worker thread; `afeed` and `afinish` await the
    shared `StreamEngine`'s step when the guard has one (a worker thread otherwise), so the
    event loop never blocks on the model.
    """

    def __init__(self, factory: Callable[[], StreamSession]) -> None:
        self._factory = factory
        self._session: StreamSession | None = None

    async def start(self) -> AsyncStreamSession:
        """Render and run the prompt (in a worker thread). Idempotent."""
        if self._session is None:
            self._session = await asyncio.to_thread(self._factory)
        return self

    @property
    def session(self) -> StreamSession:
        """The underlying sync session (after `start`)."""
        if self._session is None:
            raise SessionClosedError("the async session has not been started: use 'async with'")
        return self._session

    @property
    def prompt_verdict(self) -> Verdict:
        """The prompt verdict (after `start`)."""
        return self.session.prompt_verdict

    @property
    def verdict(self) -> Verdict | None:
        """The response verdict of the most severe trip so far."""
        return self.session.verdict

    async def afeed(self, piece: str | int | Sequence[int]) -> StreamUpdate:
        """`StreamSession.afeed`."""
        return await self.session.afeed(piece)

    async def apeek(self) -> StreamUpdate:
        """`StreamSession.peek` in a worker thread."""
        return await asyncio.to_thread(self.session.peek)

    async def afinish(self) -> StreamUpdate:
        """`StreamSession.afinish`."""
        return await self.session.afinish()

    async def aclose(self) -> None:
        """Free the KV cache."""
        if self._session is not None:
            await asyncio.to_thread(self._session.close)

    async def __aenter__(self) -> AsyncStreamSession:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
