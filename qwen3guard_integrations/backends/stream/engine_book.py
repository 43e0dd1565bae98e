"""The session side of a `StreamEngine`: opening, closing, eviction, the token budget, stats.

`SessionBook` is the engine's base class: it keeps the table of live sessions and their cached
positions under the engine's locks (``_pool_lock`` taken before ``_cond``, never after); the
scheduler in `StreamEngine` runs the steps.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from typing import Any

from ...core.errors import EngineFullError, InvalidInputError, SessionEvictedError
from .engine_stats import EngineCounters
from .jobs import EngineSession, Job, closed_error
from .slots import SlotPool

__all__ = ["SessionBook"]


class SessionBook:
    """Live sessions, their slots and the token budget of one engine (see the module
    docstring); `StreamEngine` sets every attribute in its constructor."""

    pool: SlotPool
    max_sessions: int
    max_cached_tokens: int
    on_full: str
    full_timeout_s: float
    idle_timeout_s: float | None
    counters: EngineCounters
    _pool_lock: threading.Lock
    _cond: threading.Condition
    _queue: list[Job]
    _deferred: deque[EngineSession]
    _live: dict[int, EngineSession]
    _ids: itertools.count[int]
    _tokens: int
    _closed: bool
    _worker_go: bool

    def open(self) -> EngineSession:
        """A new session (a free slot); `EngineFullError` when ``max_sessions`` are live."""
        deadline = time.monotonic() + self.full_timeout_s
        while True:
            self._evict_idle()
            with self._pool_lock, self._cond:
                self._reap_locked()  # sessions dropped without close() count no more
            with self._cond:
                self._check_engine()
                if len(self._live) < self.max_sessions:
                    handle = EngineSession(next(self._ids))
                    self._live[handle.id] = handle
                    self.counters.counts["opened"] += 1
                    break
                left = deadline - time.monotonic()
                if self.on_full == "error" or left <= 0:
                    raise EngineFullError(
                        f"the Stream engine has {self.max_sessions} live sessions, its limit"
                    )
                self._cond.wait(min(left, 0.05))
        with self._pool_lock:
            handle.slot = self.pool.acquire()
        return handle

    def close_session(self, handle: EngineSession) -> None:
        """Free ``handle``'s slot (a running job finishes first). Idempotent."""
        with self._pool_lock, self._cond:
            self._close_locked(handle)

    def close_later(self, handle: EngineSession) -> None:
        """`close_session` for garbage-collector finalizers: takes no lock (a finalizer can run
        on any thread, the engine's own worker in the middle of a step included); the slot is
        freed before the next step or open."""
        self._deferred.append(handle)

    def _close_locked(self, handle: EngineSession) -> None:
        if handle.state == "open":
            handle.state = "closed"
        if not handle.busy:
            self._drop_locked(handle)

    def _reap_locked(self) -> None:
        while self._deferred:
            self._close_locked(self._deferred.popleft())

    def truncate(self, handle: EngineSession, length: int) -> None:
        """Cut ``handle``'s cached positions back to ``length`` (a rollback)."""
        with self._pool_lock, self._cond:
            if handle.busy:
                raise InvalidInputError("cannot roll back a session while it is being fed")
            if handle.state == "open" and 0 <= length < handle.length:
                self._tokens -= handle.length - length
                handle.length = length
                self.pool.lengths[handle.slot] = length
                self._cond.notify_all()

    def close(self) -> None:
        """Evict every session and stop the worker; later calls raise `SessionEvictedError`."""
        with self._pool_lock, self._cond:
            self._closed = True
            for handle in list(self._live.values()):
                if handle.state == "open":
                    handle.state = "evicted"
                if not handle.busy:
                    self._drop_locked(handle)
            self._worker_go = True
            self._cond.notify_all()

    def _evict_if_idle(self, handle: EngineSession) -> None:
        if self.idle_timeout_s is not None and handle.state == "open" and not handle.busy:
            if time.monotonic() - handle.last_used > self.idle_timeout_s:
                self._evict(handle)

    def _admit_locked(self, handle: EngineSession, n: int, deadline: float) -> bool:
        """Reserve ``n`` positions for ``handle`` (marking it busy); False when the token budget
        is full and waiting is allowed (and ``deadline`` not passed)."""
        self._check_handle(handle)
        if handle.busy:
            raise InvalidInputError("a session runs one feed at a time")
        if handle.length + n > self.pool.max_len:
            raise InvalidInputError(
                f"{handle.length + n} positions exceed the model's {self.pool.max_len}"
            )
        if self._tokens + n > self.max_cached_tokens:
            if self.on_full == "wait" and time.monotonic() < deadline:
                return False
            raise EngineFullError(
                f"the Stream engine holds {self._tokens} of its {self.max_cached_tokens} "
                f"cached tokens; {n} more do not fit"
            )
        self._tokens += n
        handle.reserved = n
        handle.busy = True
        handle.last_used = time.monotonic()
        return True

    def _settle_locked(self, handle: EngineSession, n: int) -> None:
        """``handle``'s feed of ``n`` ids ran: they are cached now."""
        handle.length += n
        handle.reserved = 0
        handle.busy = False
        handle.last_used = time.monotonic()
        if handle.state != "open":
            self._drop_locked(handle)

    def _fail_handle_locked(self, handle: EngineSession, err: BaseException) -> None:
        handle.busy = False
        if handle.state == "open":
            handle.state = "failed"
        self._drop_locked(handle)  # a failed or closed session's slot is freed at once

    def _drop_locked(self, handle: EngineSession) -> None:
        if self._live.pop(handle.id, None) is None:
            return
        self._tokens -= handle.length + handle.reserved
        handle.length = handle.reserved = 0
        if handle.slot >= 0:
            self.pool.release(handle.slot)
        self._cond.notify_all()

    def _evict(self, handle: EngineSession) -> None:
        with self._pool_lock, self._cond:
            if handle.state == "open" and not handle.busy:
                handle.state = "evicted"
                self.counters.counts["evicted"] += 1
                self._drop_locked(handle)

    def _evict_idle(self) -> None:
        if self.idle_timeout_s is None:
            return
        limit = time.monotonic() - self.idle_timeout_s
        with self._cond:
            stale = [h for h in self._live.values() if not h.busy and h.last_used < limit]
        for handle in stale:
            self._evict(handle)

    def _check_engine(self) -> None:
        if self._closed:
            raise SessionEvictedError("this Stream engine was closed")

    def _check_handle(self, handle: EngineSession) -> None:
        if handle.state != "open" or self._closed:
            raise closed_error(handle)

    def stats(self) -> dict[str, Any]:
        """Live sessions, cached tokens, batch sizes and step latency percentiles (ms)."""
        with self._cond:
            view = self.counters.view(list(self._live.values()), len(self._queue))
        limits = {
            "max_sessions": self.max_sessions,
            "max_cached_tokens": self.max_cached_tokens,
            "allocated_tokens": self.pool.allocated_tokens,
        }
        order = ["live_sessions", "max_sessions", "cached_tokens", "max_cached_tokens"]
        out = {k: (limits | view)[k] for k in [*order, "allocated_tokens"]}
        return out | {k: v for k, v in view.items() if k not in out}
