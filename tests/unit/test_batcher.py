"""The micro-batcher: batching, per-item errors, whole-batch errors, cancellation, close."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

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
    with pytest.raises(RuntimeError, match="closed"):
        b.submit(1)
    with pytest.raises(ValueError):
        MicroBatcher(_square_or_error, max_batch=0)
    start = time.monotonic()
    b.close()  # idempotent
    assert time.monotonic() - start < 1
