"""`StreamEngine`: one loaded Stream model serving many live sessions with batched steps.

Each session owns a slot of a shared KV cache (`SlotPool`). A feed becomes a job; a scheduler
step gathers the pending jobs of all sessions and runs their new ids through the backbone in one
forward (`batched_hidden`): live streams give one token each, a prompt being prefilled gives a
chunk of at most ``prefill_chunk`` ids, so a long prompt never stalls the streams beside it.

Who runs a step: a caller that finds the engine idle runs its own job at once, in its own thread
(a lone session pays no hand-off and never waits for peers; its one-token feed is the lean step
on its slot, with none of the scheduler's bookkeeping). Jobs that arrive while a step runs
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
    InvalidInputError,
)
from .batched import forward_rows
from .engine_book import SessionBook
from .engine_stats import EngineCounters
from .jobs import EngineSession, Job, closed_error, finish_job
from .runtime import StreamRunner
from .slots import SlotPool

__all__ = ["EngineSession", "StreamEngine"]

_SHORT = 4  # a job with at most this many ids left is a live stream's step: taken first


class StreamEngine(SessionBook):
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
        self.counters = EngineCounters()

    @staticmethod
    def supports(runner: StreamRunner) -> bool:
        """Whether ``runner``'s model has the layout the batched step covers."""
        return runner._lean_step() is not None

    # -- feeding -----------------------------------------------------------------------------
    def run(self, handle: EngineSession, ids: Sequence[int], *, query: bool = False) -> Any:
        """Run ``ids`` after what ``handle`` holds; the four logits tensors ``[T, n]`` as
        `StreamRunner.forward` returns them (the query pair None unless ``query``)."""
        if len(ids) == 1 and not query:
            alone = self._run_alone(handle, int(ids[0]))
            if alone is not None:
                return alone
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
        self._evict_if_idle(handle)
        with self._cond:
            if not self._admit_locked(handle, n, deadline):
                return False
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

    def _run_alone(self, handle: EngineSession, token: int) -> Any:
        """One token of a session that finds the engine idle: the lean step on its slot, run
        in the caller's thread (None: the engine is not idle, or the budget is full and waiting
        is allowed; the caller then takes the scheduled path)."""
        self._evict_if_idle(handle)
        with self._pool_lock:
            with self._cond:
                if self._busy or self._queue or self._deferred:
                    return None
                waiting_allowed = time.monotonic() + self.full_timeout_s
                if not self._admit_locked(handle, 1, waiting_allowed):
                    return None  # full, and waiting is allowed: the scheduled path waits
                self._busy = True
            started = time.perf_counter()
            try:
                out = self._forward([(Job(handle, [token], False), 1)])[0]
            except Exception as exc:
                with self._cond:
                    self.counters.counts["failed"] += 1
                    self._fail_handle_locked(handle, exc)
                    self._release_locked()
                raise
            with self._cond:
                self.counters.step(1, 0, time.perf_counter() - started)
                self._last_batch = 1
                self.pool.lengths[handle.slot] += 1
                self._settle_locked(handle, 1)
                self._release_locked()
        return out[0], out[1], None, None

    def _release_locked(self) -> None:
        """The running caller is done: hand what queued meanwhile to the worker, or go idle."""
        if self._queue:
            self._handoff_locked()
        else:
            self._busy = False
            self._last_batch = 0
        self._cond.notify_all()

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
                    self._release_locked()
                return

    def _gathered(self) -> bool:
        return len(self._queue) >= self._last_batch

    def _take_locked(self) -> list[tuple[Job, int]]:
        self._reap_locked()
        for job in [j for j in self._queue if j.handle.state != "open"]:
            self._fail_locked(job, closed_error(job.handle))
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
                chunks = sum(len(job.ids) > _SHORT for job, _ in batch)
                self.counters.step(len(batch), chunks, elapsed)
                self._last_batch = len(batch)
                for (job, n), out, err in zip(batch, outs, errors):
                    if err is not None:
                        self.counters.counts["failed"] += 1
                        self._fail_locked(job, err)
                        continue
                    job.chunks.append(out)
                    job.pos += n
                    self.pool.lengths[job.handle.slot] += n
                    if job.pos == len(job.ids):
                        self._complete_locked(job)
                self._cond.notify_all()

    def _forward(self, batch: list[tuple[Job, int]]) -> list[Any]:
        rows = [(job.handle.slot, job.ids[job.pos : job.pos + n]) for job, n in batch]
        query = any(job.query for job, _ in batch)
        return forward_rows(self._step, self.runner.model, self.pool, rows, query=query)

    # -- bookkeeping (under _cond; _drop also under _pool_lock) -------------------------------
    def _complete_locked(self, job: Job) -> None:
        self._queue.remove(job)
        self._settle_locked(job.handle, len(job.ids))
        finish_job(job, None)

    def _fail_locked(self, job: Job, err: BaseException) -> None:
        if job in self._queue:
            self._queue.remove(job)
        self._fail_handle_locked(job.handle, err)
        finish_job(job, err)
