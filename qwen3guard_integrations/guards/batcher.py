"""A micro-batcher: coalesces concurrent single requests into batched calls on one worker thread.

Async callers ``await batcher.asubmit(x)`` and sync callers ``batcher.submit(x).result()`` share
the same queue, so an async server's concurrent requests and a thread pool's calls both end up
in batched forwards, and the event loop never blocks on the model.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from ..core.errors import ConfigurationError

__all__ = ["MicroBatcher"]

T = TypeVar("T")
R = TypeVar("R")

_STOP = object()


class MicroBatcher(Generic[T, R]):
    """Runs ``fn`` over batches of submitted items on a single daemon worker thread.

    ``fn`` takes a list of items and returns one result per item, in order; a result that is an
    exception instance is raised to that item's caller alone. If ``fn`` itself raises, every item
    of that batch gets the error. The worker waits at most ``max_wait_ms`` after the first item
    for more, and never batches more than ``max_batch`` items.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R | BaseException]],
        *,
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        name: str = "qwen3guard-batcher",
    ) -> None:
        if max_batch < 1:
            raise ConfigurationError("max_batch must be at least 1")
        if max_wait_ms < 0:
            raise ConfigurationError("max_wait_ms must not be negative")
        self._fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._queue: queue.Queue[object] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._name = name
        self.batches_run = 0  #: how many calls of ``fn`` were made (for tests and stats)

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def submit(self, item: T) -> Future[R]:
        """Queue ``item``; the returned future resolves with its result."""
        fut: Future[R] = Future()
        self._ensure_worker()
        self._queue.put((item, fut))
        return fut

    async def asubmit(self, item: T) -> R:
        """Queue ``item`` and await its result without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(item))

    def _collect(self, first: tuple[T, Future[R]]) -> list[tuple[T, Future[R]]]:
        batch = [first]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            timeout = deadline - time.monotonic()
            try:
                nxt = (
                    self._queue.get(timeout=max(timeout, 0))
                    if timeout > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if nxt is _STOP:
                self._queue.put(_STOP)
                break
            batch.append(nxt)  # type: ignore[arg-type]
        return batch

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [
                (item, fut)
                for item, fut in self._collect(first)  # type: ignore[arg-type]
                if fut.set_running_or_notify_cancel()  # skip callers that gave up
            ]
            if not batch:
                continue
            try:
                results = list(self._fn([item for item, _ in batch]))
                if len(results) != len(batch):
                    raise RuntimeError(
                        f"batch function returned {len(results)} results for {len(batch)} items"
                    )
            except BaseException as exc:
                for _, fut in batch:
                    fut.set_exception(exc)
                continue
            finally:
                self.batches_run += 1
            for (_, fut), res in zip(batch, results):
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the worker after the queued items; later submits raise ``RuntimeError``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        self._queue.put(_STOP)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
