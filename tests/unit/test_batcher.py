"""The micro-batcher: batching, per-item errors, whole-batch errors, cancellation, close."""

from __future__ import annotations

import asyncio
import queue
import threading
import time

import pytest

from qwen3guard_integrations import SessionClosedError
from qwen3guard_integrations.guards.batcher import MicroBatcher


def _square_or_error(items: list[int]) -> list[int | Exception]:
    return [ValueError(f"bad {x}") if x < 0 else x * x for x in items]


async def test_concurrent_items_share_batches() -> None:
    seen: list[int] = []

    def fn(items: list[int]) -> list[int | Exception]:
        seen.append(len(items))
        return _square_or_error(items)

    b = MicroBatcher(fn, max_batch=8, max_wait_ms=30)
    try:
        out = await asyncio.gather(*(b.asubmit(i) for i in range(20)))
        assert out == [i * i for i in range(20)]
        assert max(seen) <= 8 and len(seen) < 20
    finally:
        b.close()


async def test_errors_stay_with_their_item_or_batch() -> None:
    b = MicroBatcher(_square_or_error, max_batch=4, max_wait_ms=20)
    try:
        res = await asyncio.gather(
            b.asubmit(2), b.asubmit(-1), b.asubmit(3), return_exceptions=True
        )
        assert res[0] == 4 and isinstance(res[1], ValueError) and res[2] == 9
    finally:
        b.close()

    def boom(items: list[int]) -> list[int]:
        raise RuntimeError("worker died")

    b2 = MicroBatcher(boom, max_batch=4, max_wait_ms=1)
    try:
        with pytest.raises(RuntimeError, match="worker died"):
            await b2.asubmit(1)
        with pytest.raises(RuntimeError):  # the worker survives and keeps answering
            b2.submit(2).result(timeout=5)
    finally:
        b2.close()


def test_wrong_result_count_is_an_error() -> None:
    b = MicroBatcher(lambda items: [], max_batch=2, max_wait_ms=1)
    try:
        with pytest.raises(RuntimeError, match="0 results for 1"):
            b.submit(1).result(timeout=5)
    finally:
        b.close()


async def test_cancelled_callers_are_skipped() -> None:
    gate = threading.Event()
    calls: list[list[int]] = []

    def slow(items: list[int]) -> list[int]:
        calls.append(items)
        gate.wait(5)
        return items

    b = MicroBatcher(slow, max_batch=1, max_wait_ms=0)
    try:
        first = asyncio.ensure_future(b.asubmit(1))
        await asyncio.sleep(0.05)  # the worker is busy with item 1
        second = asyncio.ensure_future(b.asubmit(2))
        await asyncio.sleep(0.01)
        second.cancel()
        await asyncio.sleep(0.01)  # let the cancellation reach the queued item
        gate.set()
        assert await first == 1
        await asyncio.sleep(0.05)
        assert [2] not in calls
    finally:
        b.close()


def test_close_rejects_new_work() -> None:
    b = MicroBatcher(_square_or_error)
    assert b.submit(3).result(timeout=5) == 9
    b.close()
    with pytest.raises(SessionClosedError, match="closed"):
        b.submit(1)
    with pytest.raises(ValueError):
        MicroBatcher(_square_or_error, max_batch=0)
    start = time.monotonic()
    b.close()  # idempotent
    assert time.monotonic() - start < 1


def test_lone_item_goes_at_once_and_items_queued_during_a_forward_share_the_next() -> None:
    gate = threading.Event()
    sizes: list[int] = []

    def fn(items: list[int]) -> list[int]:
        sizes.append(len(items))
        if len(sizes) == 1:
            gate.wait(5)
        return items

    b = MicroBatcher(fn, max_batch=8)  # no max_wait: nobody waits for peers
    try:
        first = b.submit(0)
        deadline = time.monotonic() + 5
        while not sizes and time.monotonic() < deadline:
            time.sleep(0.001)
        assert sizes == [1]  # dispatched alone, at once
        rest = [b.submit(i) for i in range(1, 6)]  # queued while the forward runs
        gate.set()
        assert first.result(timeout=5) == 0
        assert [f.result(timeout=5) for f in rest] == [1, 2, 3, 4, 5]
        assert sizes == [1, 5]
    finally:
        b.close()


def test_close_finishes_accepted_work_and_never_strands_a_caller() -> None:
    gate = threading.Event()

    def slow(items: list[int]) -> list[int]:
        gate.wait(5)
        return [i * 10 for i in items]

    b = MicroBatcher(slow, max_batch=2)
    futures = [b.submit(i) for i in range(5)]
    closer = threading.Thread(target=b.close)
    closer.start()
    time.sleep(0.05)
    with pytest.raises(SessionClosedError):
        b.submit(99)
    gate.set()
    closer.join(5)
    assert [f.result(timeout=5) for f in futures] == [0, 10, 20, 30, 40]  # finished, not lost


class _RacyQueue(queue.Queue):  # type: ignore[type-arg]
    """Holds each item's put until ``close`` has had a chance to run (at most 0.3 s): the
    interleaving submit-checks, close-stops-the-worker, submit-queues."""

    def __init__(self, closed: threading.Event) -> None:
        super().__init__()
        self.closed = closed

    def put(self, item: object, block: bool = True, timeout: float | None = None) -> None:
        if isinstance(item, tuple):
            self.closed.wait(0.3)
        super().put(item, block, timeout)


def test_close_racing_a_submit_never_leaves_it_waiting() -> None:
    for _ in range(3):
        closing = threading.Event()
        b = MicroBatcher(_square_or_error)
        b._queue = _RacyQueue(closing)  # type: ignore[assignment]
        assert b.submit(2).result(timeout=5) == 4  # the worker runs
        out: list[object] = []

        def check(b: MicroBatcher[int, int] = b, out: list[object] = out) -> None:
            try:
                out.append(b.submit(3).result(timeout=3))
            except Exception as exc:
                out.append(exc)

        caller = threading.Thread(target=check)
        caller.start()
        time.sleep(0.05)  # the caller is inside submit
        closing.set()
        b.close()
        caller.join(5)
        assert len(out) == 1
        assert out[0] == 9 or isinstance(out[0], SessionClosedError), out[0]


def test_a_sync_call_on_an_idle_batcher_runs_in_the_callers_thread() -> None:
    threads: list[threading.Thread] = []

    def fn(items: list[int]) -> list[int | Exception]:
        threads.append(threading.current_thread())
        return _square_or_error(items)

    b = MicroBatcher(fn, max_batch=8)
    try:
        assert b.call(3) == 9
        assert threads == [threading.current_thread()]  # no hand-off to the worker
        with pytest.raises(ValueError, match="bad -2"):  # its own error, raised to it
            b.call(-2)
        assert b.batches_run == 2
    finally:
        b.close()
    with pytest.raises(SessionClosedError):
        b.call(1)


def test_sync_calls_while_a_batch_runs_queue_and_share_the_next_one() -> None:
    gate = threading.Event()
    sizes: list[int] = []
    threads: list[threading.Thread] = []

    def fn(items: list[int]) -> list[int]:
        sizes.append(len(items))
        threads.append(threading.current_thread())
        if len(sizes) == 1:
            gate.wait(5)
        return [i * 10 for i in items]

    b = MicroBatcher(fn, max_batch=8)
    results: dict[int, int] = {}
    try:
        first = threading.Thread(target=lambda: results.__setitem__(0, b.call(0)))
        first.start()
        deadline = time.monotonic() + 5
        while not sizes and time.monotonic() < deadline:
            time.sleep(0.001)
        assert threads == [first]  # the first caller runs its own item
        peers = [
            threading.Thread(target=lambda i=i: results.__setitem__(i, b.call(i)))
            for i in range(1, 5)
        ]
        for t in peers:
            t.start()
        while b._queue.qsize() < 4 and time.monotonic() < deadline:
            time.sleep(0.001)
        gate.set()
        for t in [first, *peers]:
            t.join(5)
        assert results == {i: i * 10 for i in range(5)}
        assert sizes == [1, 4]  # the four that queued went together, once
        assert threads[1] not in (first, *peers)  # on the worker, not a caller
    finally:
        gate.set()
        b.close()


def test_a_sync_call_waits_for_peers_through_the_worker_when_max_wait_is_set() -> None:
    threads: list[threading.Thread] = []

    def fn(items: list[int]) -> list[int]:
        threads.append(threading.current_thread())
        return items

    b = MicroBatcher(fn, max_batch=8, max_wait_ms=5)
    try:
        assert b.call(7) == 7
        assert threads and threads[0] is not threading.current_thread()
    finally:
        b.close()
