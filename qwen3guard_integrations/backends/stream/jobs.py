"""The engine's per-session handle and per-feed job (plain records; the engine's lock guards them)."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ...core.errors import SessionClosedError, SessionEvictedError

__all__ = ["EngineSession", "Job", "closed_error", "finish_job"]


@dataclass(eq=False)
class EngineSession:
    """One session's place in a `StreamEngine`: its slot and how many positions it holds.

    ``state`` is ``"open"``, ``"closed"`` (by its owner), ``"evicted"`` (by the engine) or
    ``"failed"`` (a step it was in failed for it alone).
    """

    id: int
    slot: int = -1
    length: int = 0
    reserved: int = 0
    state: str = "open"
    busy: bool = False
    last_used: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class Job:
    """The ids of one feed, run in chunks over one or more steps."""

    handle: EngineSession
    ids: list[int]
    query: bool
    sync: bool = False
    event: threading.Event | None = None  # a sync caller that waits (not one that leads)
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[Any] | None = None
    lead: bool = False
    pos: int = 0
    chunks: list[Any] = field(default_factory=list)
    done: bool = False
    error: BaseException | None = None
    result: Any = None


def _assemble(job: Job, torch: Any) -> tuple[Any, Any, Any, Any]:
    n = 4 if job.query else 2
    parts = [
        torch.cat([c[k] for c in job.chunks]) if len(job.chunks) > 1 else job.chunks[0][k]
        for k in range(n)
    ]
    return tuple(parts + [None] * (4 - n))


def finish_job(job: Job, error: BaseException | None) -> None:
    """Mark ``job`` done (its result assembled, or ``error``) and wake whoever waits on it."""
    if error is None:
        import torch

        job.result = _assemble(job, torch)
    job.error = error
    job.done = True
    job.chunks = []
    if job.event is not None:
        job.event.set()
    elif job.loop is not None and job.future is not None:
        fut, result = job.future, job.result

        def settle() -> None:
            if fut.done():
                return
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)

        try:
            job.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


def closed_error(handle: EngineSession) -> SessionClosedError:
    """The error a feed on a session that is no longer open raises."""
    if handle.state == "evicted":
        return SessionEvictedError(
            "the Stream engine evicted this session (idle too long, or the engine closed); "
            "its cache is gone: start a new session"
        )
    return SessionClosedError(f"this engine session is {handle.state}")
