"""A guard server killed or restarted mid-session: a typed error and a closed session (fail-closed),
or degraded verdicts under fail-open; never a silent gap in the moderated stream."""

from __future__ import annotations

import asyncio

import pytest

from qwen3guard_integrations import (
    BackendConnectionError,
    Policy,
    Qwen3StreamGuard,
    SessionClosedError,
)
from qwen3guard_integrations.guards.holdback import HoldBack
from tests.support.serving_support import ServerProcess

pytest.importorskip("torch")
pytest.importorskip("uvicorn")

TEXT = "Sure! Here is what you asked for, step by step, with every detail you wanted today."


def _pieces(text: str) -> list[str]:
    return [text[i : i + 4] for i in range(0, len(text), 4)]


def test_killed_server_mid_session_fails_closed_and_restart_does_not_resume(tiny) -> None:  # type: ignore[no-untyped-def]
    proc = ServerProcess("--stream-model", str(tiny.stream))
    port = proc.port
    try:
        guard = Qwen3StreamGuard.from_server(proc.url)
        s = guard.session("Can you help me?")
        hb_session = guard.session("Can you help me?")
        a = guard.asession("Can you help me?")

        async def start():  # type: ignore[no-untyped-def]
            await a.start()
            await a.afeed("Sure")

        asyncio.run(start())
        s.feed("Sure! Here")
        seen = len(s.response_ids)
        hb = HoldBack(hb_session)
        released = [hb.push(p).text for p in _pieces(TEXT)[:6]]
        proc.kill()
        with pytest.raises(BackendConnectionError, match="mid-session"):
            s.feed(" is how")
        assert s.closed and len(s.response_ids) == seen
        with pytest.raises(SessionClosedError):
            s.feed(" more")
        with pytest.raises(SessionClosedError):
            s.finish()
        with pytest.raises(BackendConnectionError):  # hold-back stops: nothing unmoderated leaks
            for p in _pieces(TEXT)[6:]:
                released.append(hb.push(p).text)
        assert "".join(released) == hb.released_text and TEXT.startswith(hb.released_text)
        with pytest.raises(BackendConnectionError):
            asyncio.run(a.afeed(" there"))
        s.close()  # closing a failed session is fine
        # the same address comes back: the old session is not silently resumed
        proc = ServerProcess("--stream-model", str(tiny.stream), port=port)
        with pytest.raises(SessionClosedError):
            s.feed(" again")
        with guard.session("Can you help me?") as fresh:
            assert fresh.feed("Hello there, friend.").start_index == 0
    finally:
        proc.stop()


def test_fail_open_session_is_degraded_after_the_server_dies(tiny) -> None:  # type: ignore[no-untyped-def]
    proc = ServerProcess("--stream-model", str(tiny.stream))
    try:
        guard = Qwen3StreamGuard.from_server(proc.url, policy=Policy(on_error="fail_open"))
        s = guard.session("Can you help me?")
        assert not s.feed("Sure! Here").blocked
    finally:
        proc.kill()
        proc.stop()
    u = s.feed(" is how")
    assert u.verdict is not None and u.verdict.degraded and u.verdict.error
    assert not u.blocked and s.degraded and s.verdict is u.verdict
    assert s.feed(" more").verdict is u.verdict  # every later call says so, without I/O
    assert s.finish().verdict is u.verdict
    s.close()
    # opening on a dead server: a degraded prompt verdict under fail-open, an error otherwise
    opened = guard.session("Hello?")
    assert opened.prompt_verdict.degraded and opened.feed("x").verdict.degraded  # type: ignore[union-attr]
    closed_guard = type(guard)(proc.url)  # fail-closed default
    with pytest.raises(BackendConnectionError):
        closed_guard.session("Hello?")
