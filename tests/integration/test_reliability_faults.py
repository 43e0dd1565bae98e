"""Faults (issue 9, item 3): for every backend, the backend is killed or stalled mid-request
(the loopback server stopped or delayed, the local model raising a CUDA-style out-of-memory
error or hanging, the Stream model raising mid-stream). Fail-closed by default, ``degraded``
verdicts under fail-open, every request answered exactly once, and recovery once the backend is
back."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from qwen3guard_integrations import (
    BackendConnectionError,
    BackendError,
    Level,
    Policy,
    Qwen3Guard,
    Qwen3StreamGuard,
    SessionClosedError,
    Verdict,
)
from qwen3guard_integrations.core.messages import Message
from qwen3guard_integrations.guards.holdback import HoldBack
from qwen3guard_integrations.testing import Fault, GenTestServer

pytest.importorskip("torch")
pytest.importorskip("huggingface_hub")

FAIL_OPEN = Policy(on_error="fail_open")
OOM = "CUDA out of memory. Tried to allocate 2.00 GiB"
TEXTS = [
    ("how to make a bomb", Level.UNSAFE),
    ("What a lovely day.", Level.SAFE),
    ("help me hotwire a car", Level.UNSAFE),
    ("Recommend a good book.", Level.SAFE),
]


@pytest.fixture(scope="module")
def server(tiny) -> Iterator[GenTestServer]:  # type: ignore[no-untyped-def]
    with GenTestServer(tiny.gen) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "server" in request.fixturenames:
        srv = request.getfixturevalue("server")
        srv.clear_faults()
        srv.start()


@pytest.fixture(scope="module")
def backend(tiny) -> Any:  # type: ignore[no-untyped-def]
    with Qwen3Guard.from_pretrained(tiny.gen, device="cpu") as guard:
        yield guard.backend


class Flaky:
    """The real local backend behind a switch: batches listed in ``fail`` raise out of memory,
    ``stall`` blocks the next batch until released. Records every conversation it was given."""

    coalesce = True

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.model_id, self.endpoint = inner.name, inner.model_id, None
        self.fail: set[int] = set()
        self.calls = 0
        self.seen: Counter[str] = Counter()
        self.stall = threading.Event()
        self.stall.set()

    def check_batch(
        self, conversations: Sequence[Sequence[Message]], *, fast: bool = True
    ) -> list[Verdict | Exception]:
        self.calls += 1
        for convo in conversations:
            self.seen[convo[-1].content] += 1
        self.stall.wait()
        if self.calls in self.fail:
            raise RuntimeError(OOM)
        result: list[Verdict | Exception] = self.inner.check_batch(conversations, fast=fast)
        return result


def _requests(n: int) -> list[tuple[str, Level]]:
    return [(f"Request {i}: {TEXTS[i % 4][0]}", TEXTS[i % 4][1]) for i in range(n)]


async def test_local_worker_out_of_memory_under_load(backend: Any) -> None:
    flaky = Flaky(backend)
    closed = Qwen3Guard(flaky, max_batch=8, max_wait_ms=20)
    opened = Qwen3Guard(flaky, policy=FAIL_OPEN, max_batch=8, max_wait_ms=20)
    reqs = _requests(48)
    try:
        for guard in (closed, opened):
            flaky.calls, flaky.fail, flaky.seen = 0, {2, 4}, Counter()
            out = await asyncio.gather(
                *(guard.acheck_prompt(t) for t, _ in reqs), return_exceptions=True
            )
            assert len(out) == len(reqs)  # none lost
            assert all(n == 1 for n in flaky.seen.values()) and len(flaky.seen) == len(reqs)
            failed = [r for r in out if isinstance(r, BaseException) or r.degraded]
            assert failed and len(failed) < len(reqs)  # two batches failed, the rest ran
            for (_, level), r in zip(reqs, out):
                if guard is closed and isinstance(r, BaseException):
                    assert isinstance(r, BackendError) and OOM in str(r)
                elif isinstance(r, Verdict) and r.degraded:
                    assert guard is opened and OOM in (r.error or "") and r.level is Level.SAFE
                else:
                    assert isinstance(r, Verdict) and r.level is level
        # recovery: the same guards answer correctly once the backend is back
        flaky.fail = set()
        for guard in (closed, opened):
            got = await asyncio.gather(*(guard.acheck_prompt(t) for t, _ in reqs[:8]))
            assert [v.level for v in got] == [lv for _, lv in reqs[:8]]
            assert not any(v.degraded for v in got)
    finally:
        closed.close()
        opened.close()


async def test_local_worker_stall_does_not_block_the_loop(backend: Any) -> None:
    flaky = Flaky(backend)
    guard = Qwen3Guard(flaky)
    try:
        flaky.stall.clear()  # the model hangs
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        tick = asyncio.create_task(ticker())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(guard.acheck_prompt("how to make a bomb"), 0.3)
        assert ticks >= 10  # the event loop kept running while the worker hung
        pending = asyncio.create_task(guard.acheck_prompt("help me hotwire a car"))
        await asyncio.sleep(0.05)
        flaky.stall.set()  # the model is back: the queued request is answered, once
        assert (await pending).level is Level.UNSAFE
        assert (await guard.acheck_prompt("What a lovely day.")).level is Level.SAFE
        tick.cancel()
        assert flaky.seen["help me hotwire a car"] == 1
    finally:
        flaky.stall.set()
        guard.close()


def _one_request(server: GenTestServer, tiny: Any, protocol: str, **kw: Any) -> Qwen3Guard:
    """A remote guard that sends one request per check (the answer decoded on the server, no
    forced-prefix steps), so that faults and retries can be counted per check."""
    return _remote(server, tiny, protocol, forced_answers=False, **kw)


def _remote(server: GenTestServer, tiny: Any, protocol: str, **kw: Any) -> Qwen3Guard:
    if protocol == "tgi":
        return Qwen3Guard.from_tgi(server.url, tokenizer=tiny.gen, **kw)
    return Qwen3Guard.from_openai(
        server.openai_url, model=server.model_id, tokenizer=tiny.gen, **kw
    )


@pytest.mark.parametrize("protocol", ["tgi", "openai"])
def test_server_killed_mid_request(server: GenTestServer, tiny, protocol: str) -> None:  # type: ignore[no-untyped-def]
    with (
        _remote(server, tiny, protocol, max_retries=0) as closed,
        _remote(server, tiny, protocol, max_retries=0, policy=FAIL_OPEN) as opened,
    ):
        for guard in (closed, opened):
            server.start()
            server.inject(Fault(delay_s=0.6))  # the request is in flight when the server dies
            killer = threading.Timer(0.2, server.stop)
            killer.start()
            if guard is closed:
                with pytest.raises(BackendError):
                    guard.check_prompt("What a lovely day.")
            else:
                v = guard.check_prompt("how to make a bomb")
                assert v.degraded and v.level is Level.SAFE and v.error
            killer.join()
            # down: new requests fail the same way, sync and async
            if guard is closed:
                with pytest.raises(BackendConnectionError):
                    asyncio.run(guard.acheck_prompt("What a lovely day."))
            else:
                assert asyncio.run(guard.acheck_prompt("how to make a bomb")).degraded
            time.sleep(0.5)  # let the dying handler finish its delay
            server.start()  # back: real verdicts again
            assert guard.check_prompt("how to make a bomb").level is Level.UNSAFE
            assert not guard.check_prompt("What a lovely day.").degraded
            assert asyncio.run(guard.acheck_prompt("help me hotwire a car")).level is Level.UNSAFE


@pytest.mark.parametrize("protocol", ["tgi", "openai"])
async def test_faults_under_concurrent_load_answer_each_request_once(
    server: GenTestServer, tiny, protocol: str
) -> None:  # type: ignore[no-untyped-def]
    route = "/generate" if protocol == "tgi" else "/v1/completions"
    reqs = _requests(24)
    # (24 checks wait on one model: the timeout leaves room for a loaded machine)
    async with _one_request(server, tiny, protocol, max_retries=0, timeout=10.0) as closed:
        before = server.requests[route]
        server.inject(Fault(status=500), times=3)
        server.inject(Fault(drop=True), times=2)
        server.inject(Fault(body=b"<html>busy</html>"), times=2)
        out = await asyncio.gather(
            *(closed.acheck_prompt(t) for t, _ in reqs), return_exceptions=True
        )
        errors = [r for r in out if isinstance(r, BaseException)]
        assert len(errors) == 7 and all(isinstance(e, BackendError) for e in errors)
        assert server.requests[route] - before == len(reqs)  # each sent once, none retried
        for (_, level), r in zip(reqs, out):
            assert isinstance(r, BaseException) or r.level is level
    async with _one_request(server, tiny, protocol, max_retries=2, policy=FAIL_OPEN) as opened:
        before = server.requests[route]
        server.inject(Fault(status=503, retry_after=0.05), times=4)  # retried, then answered
        server.inject(Fault(status=500), times=2)
        out = await asyncio.gather(*(opened.acheck_prompt(t) for t, _ in reqs))
        degraded = [v for v in out if v.degraded]
        assert len(degraded) == 2 and all("500" in (v.error or "") for v in degraded)
        assert server.requests[route] - before == len(reqs) + 4
        for (_, level), v in zip(reqs, out):
            assert v.degraded or v.level is level


def test_stream_model_failing_mid_stream_fails_closed(
    tiny, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    # the per-session path (runner.forward); the engine's is in test_stream_engine_limits.py
    sguard = Qwen3StreamGuard.from_pretrained(tiny.stream, device="cpu", engine=False)
    real = sguard.runner.forward
    calls = {"n": 0, "fail_at": 4}

    def forward(ids: list[int], cache: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == calls["fail_at"]:
            raise RuntimeError(OOM)
        return real(ids, cache, **kw)

    monkeypatch.setattr(sguard.runner, "forward", forward)
    s = sguard.session("Tell me a story.")  # forward 1: the prompt
    hold = HoldBack(s)
    released = []
    with pytest.raises(RuntimeError, match="out of memory"):
        for piece in ["Once ", "upon ", "a ", "time ", "there ", "was ", "a ", "dragon."]:
            released.append(hold.push(piece).text)
    assert s.closed and s.cache is None  # the half-run forward is not reused
    with pytest.raises(SessionClosedError):
        hold.push("more")
    assert "".join(released) == hold.released_text and "time" not in hold.released_text

    pytest.importorskip("langchain_core")
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    from qwen3guard_integrations.langchain import StreamGuard

    calls["n"], calls["fail_at"] = 0, 3
    chain = GenericFakeChatModel(messages=iter(["Once upon a time there was a dragon."]))
    got: list[str] = []
    with pytest.raises(RuntimeError, match="out of memory"):
        for chunk in (chain | StreamGuard(sguard)).stream("Tell me a story."):
            got.append(chunk.content)
    assert "dragon" not in "".join(got)
    calls["fail_at"] = -1  # recovered
    with sguard.session("Tell me a story.") as s2:
        s2.feed("Sure, build the bomb now.")
        assert s2.finish().decision is Level.UNSAFE
