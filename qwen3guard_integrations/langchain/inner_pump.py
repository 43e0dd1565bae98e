"""The pumps that run the inner model while the prompt is checked in parallel.

`InnerPump` (a worker thread with the caller's context) and `AsyncInnerPump` (an asyncio task)
pull the inner model's stream freely until `InnerPump.demand`, then one item per ``get``, as
the hold-back loop consumes them. ``stop`` ends the pull (the async pump cancels its task; a
sync read cannot be interrupted, so the thread stops after the read in flight) and closes the
inner stream. Their counters (`PumpCounters`) are written once: what may be read next, and
what was produced.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["AsyncInnerPump", "InnerPump", "PumpCounters"]


class _End:
    """The inner stream ended."""


@dataclass(frozen=True)
class _Failure:
    error: BaseException


_END = _End()


class PumpCounters:
    """The bookkeeping both pumps share: the buffered items and the read-ahead rule."""

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._free = True  # read freely (until `demand`)
        self._stopped = False
        self._wanted = 0
        self._put = 0
        self._taken = 0
        self.produced = 0  # chunks the inner model produced
        self.reading = False  # a read of the inner model is under way

    def _may_read(self) -> bool:
        return self._stopped or self._free or self._put < self._wanted

    def _stored(self, item: Any) -> None:
        self._items.append(item)
        self._put += 1

    def _want_one(self) -> None:
        """A consumer waits for an item: let the pump read one more."""
        if not self._items:
            self._wanted = max(self._wanted, self._taken + 1)

    def _take(self) -> Any:
        self._taken += 1
        return self._items.popleft()

    def counts(self) -> tuple[int, bool]:
        """What was produced so far, and whether a read is under way."""
        return self.produced, self.reading


def _unwrap(item: Any) -> Any:
    """An item of the inner stream, `_END` at its end; its failure raised."""
    if isinstance(item, _Failure):
        raise item.error
    return item


class InnerPump(PumpCounters):
    """Pulls the inner stream in a worker thread (see the module docstring)."""

    def __init__(self, make: Callable[[], Iterator[Any]]) -> None:
        super().__init__()
        self._cond = threading.Condition()
        context = contextvars.copy_context()  # LangChain's run context goes with the inner call
        self._thread = threading.Thread(
            target=context.run, args=(self._work, make), name="qwen3guard-inner", daemon=True
        )
        self._thread.start()

    def _work(self, make: Callable[[], Iterator[Any]]) -> None:
        source: Iterator[Any] | None = None
        try:
            self.reading = True  # an invoked (not streamed) inner model runs in make()
            source = make()
            while True:
                with self._cond:
                    while not self._may_read():
                        self._cond.wait()
                    if self._stopped:
                        return
                self.reading = True
                try:
                    item: Any = next(source)
                except StopIteration:
                    item = _END
                with self._cond:
                    self.reading = False
                    if item is not _END:
                        self.produced += 1
                    if self._stopped:
                        return
                    self._stored(item)
                    self._cond.notify_all()
                if item is _END:
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            with self._cond:
                self._items.append(_Failure(exc))
                self._cond.notify_all()
        finally:
            close = getattr(source, "close", None)
            if callable(close):
                close()

    def demand(self) -> None:
        """From now on read one item per `get`."""
        with self._cond:
            self._free = False

    def stop(self) -> tuple[int, bool]:
        """Read nothing more; returns `counts` as they were at the stop."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            return self.counts()

    def get(self) -> Any:
        """The next item (waits for it)."""
        with self._cond:
            self._want_one()
            self._cond.notify_all()
            while not self._items:
                self._cond.wait()
            return self._take()

    def items(self) -> Generator[Any, None, None]:
        """The inner stream, buffered items first (closing it stops the pump)."""
        try:
            while (item := _unwrap(self.get())) is not _END:
                yield item
        finally:
            self.stop()


class AsyncInnerPump(PumpCounters):
    """Async twin of `InnerPump`: an asyncio task; `stop` cancels it and closes the stream."""

    def __init__(self, make: Callable[[], AsyncIterator[Any]]) -> None:
        super().__init__()
        self._cond = asyncio.Condition()
        self._task = asyncio.ensure_future(self._work(make))

    async def _work(self, make: Callable[[], AsyncIterator[Any]]) -> None:
        source: AsyncIterator[Any] | None = None
        try:
            self.reading = True
            source = make()
            while True:
                async with self._cond:
                    await self._cond.wait_for(self._may_read)
                self.reading = True
                try:
                    item: Any = await anext(source)
                    self.produced += 1
                except StopAsyncIteration:
                    item = _END
                self.reading = False
                await self._push(item)
                if item is _END:
                    return
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await self._push(_Failure(exc))
        finally:
            aclose = getattr(source, "aclose", None)
            if callable(aclose):
                await aclose()

    async def _push(self, item: Any) -> None:
        async with self._cond:
            self._stored(item)
            self._cond.notify_all()

    def demand(self) -> None:
        """From now on read one item per `get`."""
        self._free = False

    async def stop(self) -> tuple[int, bool]:
        """Cancel the pump and close the inner stream; returns `counts` as they were (a read
        counts as under way only while the task still runs)."""
        produced, reading = self.counts()
        counts = (produced, reading and not self._task.done())
        if not self._task.done():
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return counts

    async def get(self) -> Any:
        """The next item (waits for it)."""
        async with self._cond:
            self._want_one()
            self._cond.notify_all()
            await self._cond.wait_for(lambda: bool(self._items))
            return self._take()

    async def items(self) -> AsyncGenerator[Any, None]:
        """Async twin of `InnerPump.items`."""
        try:
            while (item := _unwrap(await self.get())) is not _END:
                yield item
        finally:
            await self.stop()
