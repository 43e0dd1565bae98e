"""A micro-batcher: coalesces concurrent single requests into batched calls on one worker thread.

Async callers ``await batcher.asubmit(x)`` and sync callers ``batcher.submit(x).result()`` share
the same queue, so an async server's concurrent requests and a thread pool's calls both end up
in batched forwards, and the event loop never blocks on the model.

No idle tax: an item that finds the worker idle is dispatched at once (a lone check costs what
``check_batch([x])`` costs); items that queue while a forward runs go together in the next one.
A sync caller (`MicroBatcher.call`) that finds nothing running and nothing queued runs its item
itself, in its own thread: no hand-off to the worker and back, and the CPU's thread pool stays
with the caller's thread. ``max_wait_ms`` (default 0) adds an optional wait for peers after the
first item (and then every item goes through the worker).

Closing is clean: every item accepted before `MicroBatcher.close` is run (finished); an item
submitted after it raises `SessionClosedError`; no caller is ever left waiting on a worker that
has gone (an item cannot be queued behind the stop marker, and a worker that stops for any
reason fails whatever is still queued with `SessionClosedError`).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from ..core.errors import ConfigurationError, SessionClosedError

__all__ = ["MicroBatcher"]

T = TypeVar("T")
R = TypeVar("R")

_STOP = object()


class MicroBatcher(Generic[T, R]):
    """Runs ``fn`` over batches of submitted items on a single daemon worker thread.

    ``fn`` takes a list of items and returns one result per item, in order; a result that is an
    exception instance is raised to that item's caller alone. If ``fn`` itself raises, every item
    of that batch gets the error. A batch is everything queued when the worker picks it up (at
    most ``max_batch`` items); with ``max_wait_ms > 0`` the worker also waits that long after the
    first item for more.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R | BaseException]],
        *,
        max_batch: int = 16,
        max_wait_ms: float = 0.0,
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
        self._running = threading.Lock()  # held while ``fn`` runs (worker or inline caller)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._name = name
        self.batches_run = 0  #: how many calls of ``fn`` were made (for tests and stats)

    @property
    def closed(self) -> bool:
        """True after `close`."""
        return self._closed

    def submit(self, item: T) -> Future[R]:
        """Queue ``item``; the returned future resolves with its result.

        Raises `SessionClosedError` once the batcher is closed."""
        fut: Future[R] = Future()
        # checking, starting the worker and queueing under one lock: `close` cannot slip its
        # stop marker in between, so an accepted item is always ahead of the marker
        with self._lock:
            if self._closed:
                raise SessionClosedError("the guard's micro-batcher is closed")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._queue.put((item, fut))
        return fut

    def call(self, item: T) -> R:
        """Run ``item`` and return its result (raise its error), blocking the calling thread.

        When nothing runs and nothing is queued (and ``max_wait_ms`` is 0), the item runs at
        once in this thread; otherwise it queues like `submit` and shares the next batch.
        Raises `SessionClosedError` once the batcher is closed."""
        with self._lock:
            if self._closed:
                raise SessionClosedError("the guard's micro-batcher is closed")
            inline = (
                not self.max_wait and self._queue.empty() and self._running.acquire(blocking=False)
            )
        if not inline:
            return self.submit(item).result()
        fut: Future[R] = Future()
        try:
            self._run_batch([(item, fut)])
        finally:
            self._running.release()
        return fut.result()

    async def asubmit(self, item: T) -> R:
        """Queue ``item`` and await its result without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(item))

    def _collect(self, first: tuple[T, Future[R]]) -> tuple[list[tuple[T, Future[R]]], bool]:
        """The batch starting with ``first``: what is queued now (and, with ``max_wait``, what
        arrives in time). The flag tells that the stop marker was reached."""
        batch = [first]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            timeout = deadline - time.monotonic()
            try:
                nxt = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is _STOP:
                return batch, True
            batch.append(nxt)  # type: ignore[arg-type]
        return batch, False

    def _run(self) -> None:
        try:
            stop = False
            while not stop:
                first = self._queue.get()
                if first is _STOP:
                    return
                with self._running:  # an inline caller's item runs first
                    collected, stop = self._collect(first)  # type: ignore[arg-type]
                    self._run_batch(collected)
        finally:
            self._fail_queued()

    def _run_batch(self, collected: list[tuple[T, Future[R]]]) -> None:
        batch = [(item, fut) for item, fut in collected if fut.set_running_or_notify_cancel()]
        if not batch:  # every caller gave up
            return
        try:
            results = list(self._fn([item for item, _ in batch]))
            if len(results) != len(batch):
                raise RuntimeError(
                    f"batch function returned {len(results)} results for {len(batch)} items"
                )
        except BaseException as exc:
            for _, fut in batch:
                fut.set_exception(exc)
            return
        finally:
            self.batches_run += 1
        for (_, fut), res in zip(batch, results):
            if isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                fut.set_result(res)

    def _fail_queued(self) -> None:
        """The worker is stopping: nothing still queued may wait forever."""
        while True:
            try:
                got: Any = self._queue.get_nowait()
            except queue.Empty:
                return
            if got is not _STOP and got[1].set_running_or_notify_cancel():
                got[1].set_exception(
                    SessionClosedError("the guard was closed before this check could run")
                )

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the worker once the items accepted so far have run; later submits raise
        `SessionClosedError`. Waits up to ``timeout`` seconds for the worker."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self._queue.put(_STOP)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
