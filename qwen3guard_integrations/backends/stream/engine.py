"""`StreamEngine`: one loaded Stream model serving many live sessions with batched steps.

Each session owns a slot of a shared KV cache (`SlotPool`). A feed becomes a job; a scheduler
step gathers the pending jobs of all sessions and runs their new ids through the backbone in one
forward (`batched_hidden`): live streams give one token each, a prompt being prefilled gives a
chunk of at most ``prefill_chunk`` ids, so a long prompt never stalls the streams beside it.

Who runs a step: a caller that finds the engine idle runs its own job at once, in its own thread
(a lone session pays no hand-off and never waits for peers). Jobs that arrive while a step runs
queue up; when the running caller's job is done, a worker thread takes over and runs steps until
the queue is empty, each step taking everything that queued meanwhile. Async callers
(`StreamEngine.arun`) await a future that the step resolves: no thread per call.

Bounded: at most ``max_sessions`` live sessions and ``max_cached_tokens`` cached positions;
when full, `EngineFullError` at once (``on_full="error"``) or after waiting up to
``full_timeout_s`` (``"wait"``). A session idle for ``idle_timeout_s`` is evicted: its slot is
freed and its next feed raises `SessionEvictedError`. A step that fails is retried row by row;
the rows that fail alone close their sessions with the error, the others go on.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Literal

from ...core.errors import (
    ConfigurationError,
    EngineFullError,
    InvalidInputError,
    SessionClosedError,
    SessionEvictedError,
)
from .batched import batched_hidden
from .jobs import EngineSession, Job, finish_job
from .runtime import StreamRunner
from .slots import SlotPool

__all__ = ["EngineSession", "StreamEngine"]

_SHORT = 4  # a job with at most this many ids left is a live stream's step: taken first


class StreamEngine:
    """Batched Stream moderation for many sessions (see the module docstring).

    Args:
        runner: the `StreamRunner` of the loaded model (plain Qwen3 layout, `supports`).
        max_sessions: live sessions at most.
        max_cached_tokens: cached positions (prompt and response) over all sessions at most;
            default ``max_sessions`` times 4,096.
        on_full: ``"error"`` raises `EngineFullError` at once; ``"wait"`` waits up to
            ``full_timeout_s`` for room first.
        idle_timeout_s: evict a session not fed for this long (None: never).
        prefill_chunk: prompt ids one session contributes to one step at most.
        max_step_tokens: ids in one step at most (live streams' tokens always go in).
        gather_us: after a step of several sessions, how long the worker waits for those
            sessions to send their next token before it steps without them (a lone session never
            waits: it runs its own step).
    """

    def __init__(
        self,
        runner: StreamRunner,
        *,
        max_sessions: int = 64,
        max_cached_tokens: int | None = None,
        on_full: Literal["error", "wait"] = "error",
        full_timeout_s: float = 10.0,
        idle_timeout_s: float | None = None,
        prefill_chunk: int = 256,
        max_step_tokens: int = 1024,
        gather_us: float = 1000.0,
    ) -> None:
        step = runner._lean_step()
        if step is None:
            raise ConfigurationError("StreamEngine needs the plain Qwen3 layout (see `supports`)")
        for name, value in (
            ("max_sessions", max_sessions),
            ("prefill_chunk", prefill_chunk),
            ("max_step_tokens", max_step_tokens),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a positive int, got {value!r}")
        if on_full not in ("error", "wait"):
            raise ConfigurationError(f"on_full must be 'error' or 'wait', got {on_full!r}")
        if idle_timeout_s is not None and not idle_timeout_s > 0:
            raise ConfigurationError(f"idle_timeout_s must be > 0 or None, got {idle_timeout_s}")
        cfg = runner.loaded.config
        context = int(getattr(cfg, "max_position_embeddings", 0) or 32768)
        self.runner = runner
        self.max_sessions = max_sessions
        self.max_cached_tokens = max_cached_tokens or max_sessions * min(context, 4096)
        if self.max_cached_tokens < 1:
            raise ConfigurationError("max_cached_tokens must be positive")
        self.on_full = on_full
        self.full_timeout_s = float(full_timeout_s)
        self.idle_timeout_s = idle_timeout_s
        self.prefill_chunk = min(prefill_chunk, max_step_tokens)
        self.max_step_tokens = max_step_tokens
        self.gather_s = max(0.0, gather_us) / 1e6
        self._step = step
        self._torch = runner._torch
        attn = runner.model.model.layers[0].self_attn
        self.pool = SlotPool(
            self._torch,
            layers=len(runner.model.model.layers),
            kv_heads=int(attn.k_proj.weight.shape[0] // attn.head_dim),
            head_dim=int(attn.head_dim),
            dtype=runner.loaded.dtype,
            device=runner.loaded.device,
            max_slots=max_sessions,
            max_len=context,
        )
        self._pool_lock = threading.Lock()  # taken before _cond, never after
        self._cond = threading.Condition()
        self._queue: list[Job] = []
        self._deferred: deque[EngineSession] = deque()  # closed by finalizers, freed later
        self._busy = False
        self._worker: threading.Thread | None = None
        self._worker_go = False
        self._closed = False
        self._live: dict[int, EngineSession] = {}
        self._ids = itertools.count(1)
        self._tokens = 0  # cached plus reserved positions of live sessions
        self._last_batch = 0
        self._batches: deque[int] = deque(maxlen=2048)
        self._latency: deque[float] = deque(maxlen=2048)
        self._counts = dict.fromkeys(("steps", "evicted", "failed", "opened", "chunks", "mixed"), 0)

    @staticmethod
    def supports(runner: StreamRunner) -> bool:
        """Whether ``runner``'s model has the layout the batched step covers."""
        return runner._lean_step() is not None

    # -- sessions ----------------------------------------------------------------------------
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
                    self._counts["opened"] += 1
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

    # -- feeding -----------------------------------------------------------------------------
    def run(self, handle: EngineSession, ids: Sequence[int], *, query: bool = False) -> Any:
        """Run ``ids`` after what ``handle`` holds; the four logits tensors ``[T, n]`` as
        `StreamRunner.forward` returns them (the query pair None unless ``query``)."""
        job = Job(handle, list(ids), query, sync=True)
        deadline = time.monotonic() + self.full_timeout_s
        while not self._submit(job, deadline):
            with self._cond:
                self._cond.wait(0.05)
        if job.lead:
            self._lead(job)
        else:
            assert job.event is not None
            job.event.wait()
        if job.error is not None:
            raise job.error
        return job.result

    async def arun(self, handle: EngineSession, ids: Sequence[int], *, query: bool = False) -> Any:
        """Async twin of `run`: awaits the step that runs the job (no thread per call)."""
        loop = asyncio.get_running_loop()
        job = Job(handle, list(ids), query, loop=loop, future=loop.create_future())
        deadline = time.monotonic() + self.full_timeout_s
        while not self._submit(job, deadline):
            await asyncio.sleep(0.005)
        assert job.future is not None
        return await job.future

    def _submit(self, job: Job, deadline: float) -> bool:
        """Queue ``job``; False when the token budget is full and waiting is allowed."""
        handle, n = job.handle, len(job.ids)
        if n == 0:
            raise InvalidInputError("nothing to run: no ids")
        if self.idle_timeout_s is not None and handle.state == "open" and not handle.busy:
            if time.monotonic() - handle.last_used > self.idle_timeout_s:
                self._evict(handle)
        with self._cond:
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
            self._queue.append(job)
            if not self._busy:
                self._busy = True
                if job.sync:
                    job.lead = True  # idle: the caller runs its own step at once
                else:
                    self._handoff_locked()
            else:
                if job.sync:
                    job.event = threading.Event()
                self._cond.notify_all()
        return True

    # -- scheduling --------------------------------------------------------------------------
    def _handoff_locked(self) -> None:
        """Let the worker thread run steps (``_busy`` stays True: it owns them now)."""
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(
                target=self._work, name="qwen3guard-stream-engine", daemon=True
            )
            self._worker.start()
        self._worker_go = True
        self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._worker_go:
                    self._cond.wait()
                self._worker_go = False
                if self._closed and not self._queue:
                    self._busy = False
                    return
            self._lead(None)

    def _lead(self, own: Job | None) -> None:
        """Run steps; a caller (``own``) stops once its job is done, the worker when idle."""
        while True:
            if own is None and self._last_batch > 1 and self.gather_s:
                with self._cond:
                    self._cond.wait_for(self._gathered, self.gather_s)
            with self._pool_lock, self._cond:
                batch = self._take_locked()
                if not batch:
                    self._busy = False
                    self._last_batch = 0
                    return
            self._run_step(batch)
            if own is not None and own.done:
                with self._cond:
                    if self._queue:
                        self._handoff_locked()
                    else:
                        self._busy = False
                        self._last_batch = 0
                return

    def _gathered(self) -> bool:
        return len(self._queue) >= self._last_batch

    def _take_locked(self) -> list[tuple[Job, int]]:
        self._reap_locked()
        for job in [j for j in self._queue if j.handle.state != "open"]:
            self._fail_locked(job, _closed_error(job.handle))
        budget = self.max_step_tokens
        batch: list[tuple[Job, int]] = []
        long: list[Job] = []
        for job in self._queue:
            left = len(job.ids) - job.pos
            if left <= _SHORT:
                batch.append((job, left))
                budget -= left
            else:
                long.append(job)
        for job in long:
            n = min(len(job.ids) - job.pos, self.prefill_chunk, budget)
            if n <= 0 and batch:
                break
            n = max(n, 1)
            batch.append((job, n))
            budget -= n
        return batch

    def _run_step(self, batch: list[tuple[Job, int]]) -> None:
        batch.sort(key=lambda jn: jn[0].handle.slot)
        with self._pool_lock:
            started = time.perf_counter()
            outs: list[Any] = [None] * len(batch)
            errors: list[BaseException | None] = [None] * len(batch)
            try:
                outs = self._forward(batch)
            except Exception as exc:
                if len(batch) == 1:
                    errors[0] = exc
                else:  # find the rows that fail alone; the others go on
                    for k, row in enumerate(batch):
                        try:
                            outs[k] = self._forward([row])[0]
                        except Exception as one:
                            errors[k] = one
            elapsed = time.perf_counter() - started
            with self._cond:
                self._counts["steps"] += 1
                chunks = sum(len(job.ids) > _SHORT for job, _ in batch)
                self._counts["chunks"] += chunks
                self._counts["mixed"] += 0 < chunks < len(batch)
                self._batches.append(len(batch))
                self._latency.append(elapsed)
                self._last_batch = len(batch)
                for (job, n), out, err in zip(batch, outs, errors):
                    if err is not None:
                        self._counts["failed"] += 1
                        self._fail_locked(job, err)
                        continue
                    job.chunks.append(out)
                    job.pos += n
                    self.pool.lengths[job.handle.slot] += n
                    if job.pos == len(job.ids):
                        self._complete_locked(job)
                self._cond.notify_all()

    def _forward(self, batch: list[tuple[Job, int]]) -> list[Any]:
        """The batched forward and heads; per row the head logits (float32, CPU)."""
        torch = self._torch
        rows = [(job.handle.slot, job.ids[job.pos : job.pos + n]) for job, n in batch]
        with torch.inference_mode():
            hidden = batched_hidden(self._step, self.pool, rows)
            if any(job.query for job, _ in batch):
                heads = list(self.runner.model.heads(hidden))
            else:
                heads = list(self._step.response_heads(hidden))
            if len(batch) == 1:
                return [tuple(h.float().cpu() for h in heads)]
            widths = [h.shape[-1] for h in heads]
            both = torch.cat(heads, dim=-1).float().cpu()
        out: list[Any] = []
        at = 0
        for _, n in batch:
            part = both[at : at + n]
            at += n
            out.append(part.split(widths, dim=-1))
        return out

    # -- bookkeeping (under _cond; _drop also under _pool_lock) -------------------------------
    def _complete_locked(self, job: Job) -> None:
        handle = job.handle
        self._queue.remove(job)
        handle.length += len(job.ids)
        handle.reserved = 0
        handle.busy = False
        handle.last_used = time.monotonic()
        if handle.state != "open":
            self._drop_locked(handle)
        finish_job(job, None)

    def _fail_locked(self, job: Job, err: BaseException) -> None:
        handle = job.handle
        if job in self._queue:
            self._queue.remove(job)
        handle.busy = False
        if handle.state == "open":
            handle.state = "failed"
        self._drop_locked(handle)  # a failed or closed session's slot is freed at once
        finish_job(job, err)

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
                self._counts["evicted"] += 1
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
            raise _closed_error(handle)

    # -- observability -----------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Live sessions, cached tokens, batch sizes and step latency percentiles (ms)."""
        with self._cond:
            lat = sorted(self._latency)
            sizes = list(self._batches)
            live = list(self._live.values())
            counts = dict(self._counts)
            queued = len(self._queue)

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 4) if lat else None

        return {
            "live_sessions": len(live),
            "max_sessions": self.max_sessions,
            "cached_tokens": sum(h.length for h in live),
            "max_cached_tokens": self.max_cached_tokens,
            "allocated_tokens": self.pool.allocated_tokens,
            "queued_jobs": queued,
            "steps": counts["steps"],
            "sessions_opened": counts["opened"],
            "sessions_evicted": counts["evicted"],
            "sessions_failed": counts["failed"],
            "prefill_chunks": counts["chunks"],
            "mixed_steps": counts["mixed"],
            "batch_size_mean": round(sum(sizes) / len(sizes), 3) if sizes else None,
            "batch_size_max": max(sizes) if sizes else None,
            "step_ms_p50": pct(0.5),
            "step_ms_p90": pct(0.9),
            "step_ms_p99": pct(0.99),
        }


def _closed_error(handle: EngineSession) -> SessionClosedError:
    if handle.state == "evicted":
        return SessionEvictedError(
            "the Stream engine evicted this session (idle too long, or the engine closed); "
            "its cache is gone: start a new session"
        )
    return SessionClosedError(f"this engine session is {handle.state}")
