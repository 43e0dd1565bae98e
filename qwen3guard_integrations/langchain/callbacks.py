"""Stream callbacks: moderate a chat model's tokens with the Stream head and stop on a block.

Attach to any chat model or chain with ``config={"callbacks": [Qwen3GuardStreamCallback(sg)]}``.
Per run (``run_id``) the handler opens a Stream session at ``on_chat_model_start`` /
``on_llm_start`` (the prompt verdict: a blocked prompt raises before the model runs), feeds every
``on_llm_new_token`` (strings or content-block lists) and raises
`UnsafeContentError` at the token whose feed trips the debounced
decision. LangChain calls ``on_llm_new_token`` before it yields the chunk, so that chunk never
reaches the consumer; ``raise_error = True`` makes the error propagate instead of being logged.

A callback cannot hold text back, only stop the stream, so it never waits for later tokens: it
blocks at the first token the policy blocks (``debounce=1`` by default), and after each piece it
also moderates, speculatively, the text the re-tokenizer still holds back (a word that may still
grow; `StreamSession.peek`). So the chunk that carries the first unsafe token is the one
that raises, and it never reaches the consumer. (With ``debounce > 1`` the chunks before the
tripping one, which may hold the first flagged tokens, are already out; the hold-back
`StreamGuard` debounces without releasing anything unchecked.)

Without streaming (``invoke``) no tokens arrive: the whole answer is moderated at
``on_llm_end``, and a block raises there, before ``invoke`` returns. The session is closed on
end, on error and on cancellation (LangChain reports both as ``on_llm_error``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.callbacks import manager as _manager
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from ..core.errors import ConfigurationError, InvalidInputError, UnsafeContentError
from ..core.policy import Policy
from ..core.verdict import Verdict
from ..guards.stream import Qwen3StreamGuard
from .convert import message_to_dict, text_of_content

__all__ = ["AsyncQwen3GuardStreamCallback", "Qwen3GuardStreamCallback", "VerdictHook"]

#: Called with ``(run_id, stage, verdict)`` for each verdict: ``"prompt"`` at the start, then
#: ``"stream"`` when the response trips (or is found Safe at the end: ``None`` is not reported).
VerdictHook = Callable[[UUID, str, Verdict], None]


class _QuietBlocks(logging.Filter):
    """Drops LangChain's "Error in <handler>.<event> callback" warning when the error is one of
    our handlers stopping a stream on purpose (a block is not a crash; other errors still log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not (isinstance(args, tuple) and len(args) == 3 and "callback" in str(record.msg)):
            return True
        handler, _, error = args
        ours = handler in ("Qwen3GuardStreamCallback", "AsyncQwen3GuardStreamCallback")
        return not (ours and str(error).startswith("UnsafeContentError("))


_QUIET = _QuietBlocks()
if _QUIET not in logging.getLogger(_manager.__name__).filters:
    logging.getLogger(_manager.__name__).addFilter(_QUIET)

#: The function LangChain runs handlers with in a sync run (async handlers go to the side there).
_SYNC_HANDLE_EVENT = getattr(getattr(_manager, "handle_event", None), "__code__", None)


def _prompt_conversation(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """The conversation up to its last user turn (what a Stream session needs to start)."""
    msgs = [message_to_dict(m) for m in messages]
    last = max((i for i, m in enumerate(msgs) if m["role"] == "user"), default=None)
    if last is None:
        raise InvalidInputError("the chat model's input has no user message to moderate")
    return msgs[: last + 1]


def _generation_text(response: LLMResult) -> str:
    try:
        return response.generations[0][0].text
    except IndexError:
        return ""


@dataclass
class _Run:
    session: Any
    fed: bool = False


class _Base:
    """What both twins share: the options and the run table."""

    raise_error = True

    def __init__(
        self,
        stream_guard: Qwen3StreamGuard,
        *,
        check_prompt: bool = True,
        policy: Policy | None = None,
        debounce: int | None = 1,
        on_verdict: VerdictHook | None = None,
    ) -> None:
        self.stream_guard = stream_guard
        self.check_prompt = check_prompt
        self.policy = policy
        self.debounce = debounce
        self.on_verdict = on_verdict
        self._runs: dict[UUID, _Run] = {}
        self._lock = threading.Lock()

    @property
    def active_runs(self) -> int:
        """How many runs have an open session."""
        return len(self._runs)

    def _open_kwargs(self) -> dict[str, Any]:
        return {"policy": self.policy, "debounce": self.debounce}

    def _report(self, run_id: UUID, stage: str, verdict: Verdict | None) -> None:
        if verdict is not None and self.on_verdict is not None:
            self.on_verdict(run_id, stage, verdict)

    def _started(self, run_id: UUID, session: Any, prompt_verdict: Verdict) -> bool:
        """Record the run; False when the prompt is blocked (the caller closes and raises)."""
        self._report(run_id, "prompt", prompt_verdict)
        policy = getattr(session, "session", session).policy  # the async twin wraps one
        if self.check_prompt and policy.blocks(prompt_verdict):
            return False
        with self._lock:
            self._runs[run_id] = _Run(session)
        return True

    @staticmethod
    def _feed_ahead(session: Any, text: str) -> Any:
        """Feed ``text``; unless that blocks, also moderate the held-back tail (no commit)."""
        update = session.feed(text)
        if update.blocked:
            return update
        ahead = session.peek()
        return ahead if ahead.blocked else update

    def _get(self, run_id: UUID) -> _Run | None:
        with self._lock:
            return self._runs.get(run_id)

    def _pop(self, run_id: UUID) -> _Run | None:
        with self._lock:
            return self._runs.pop(run_id, None)


class Qwen3GuardStreamCallback(_Base, BaseCallbackHandler):
    """Sync callback handler; see the module docstring.

    Args:
        stream_guard: the `Qwen3StreamGuard`.
        check_prompt: raise when the prompt verdict is blocked (before the model runs).
        policy: overrides the stream guard's policy for these sessions.
        debounce: consecutive flagged tokens that block (default 1: see the module docstring).
        on_verdict: called with ``(run_id, stage, verdict)`` for the prompt verdict and a
            response trip.
    """

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        **kwargs: Any,
    ) -> None:
        """Open the run's session (runs the prompt); raise when the prompt is blocked."""
        self._start(run_id, _prompt_conversation(messages[0]))

    def on_llm_start(
        self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID, **kwargs: Any
    ) -> None:
        """Text-completion models: the prompt string is the user turn."""
        self._start(run_id, [{"role": "user", "content": prompts[0]}])

    def _start(self, run_id: UUID, convo: list[dict[str, Any]]) -> None:
        session = self.stream_guard.session(convo, **self._open_kwargs())
        if not self._started(run_id, session, session.prompt_verdict):
            session.close()
            raise UnsafeContentError(session.prompt_verdict)

    def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Feed the token's text; raise at the token that trips a blocking decision."""
        text = text_of_content(token)
        run = self._get(run_id)
        if run is None or not text:
            return
        update = self._feed_ahead(run.session, text)
        run.fed = True
        if update.blocked:
            self._stop(run_id, update.verdict)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """Flush the held-back tail (or moderate the whole answer when nothing streamed)."""
        run = self._get(run_id)
        if run is None:
            return
        if not run.fed and (text := _generation_text(response)):
            run.session.feed(text)
        update = run.session.finish()
        if update.blocked:
            self._stop(run_id, update.verdict)
        self._close(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Close the run's session (errors, our own block and cancellation end here)."""
        self._close(run_id)

    def _stop(self, run_id: UUID, verdict: Verdict) -> None:
        self._report(run_id, "stream", verdict)
        self._close(run_id)
        raise UnsafeContentError(verdict)

    def _close(self, run_id: UUID) -> None:
        run = self._pop(run_id)
        if run is not None:
            run.session.close()


class AsyncQwen3GuardStreamCallback(_Base, AsyncCallbackHandler):
    """Async twin of `Qwen3GuardStreamCallback`: every model call runs in a worker thread,
    so the event loop never waits on the Stream model.

    Only for async runs (``astream``, ``ainvoke``). In a sync run (``stream``, ``invoke``)
    LangChain runs async handlers on the side and logs their errors instead of raising them, so
    this handler could not stop the stream there: it refuses such a run with a
    `ConfigurationError` before the model starts. `Qwen3GuardStreamCallback` stops both
    sync and async runs; use it when one handler must serve both.
    """

    def _refuse_sync_run(self) -> bool:
        caller = sys._getframe(2)  # handle_event reads the ignore flag: 0 here, 1 the property
        if _SYNC_HANDLE_EVENT is not None and caller.f_code is _SYNC_HANDLE_EVENT:
            raise ConfigurationError(
                "AsyncQwen3GuardStreamCallback cannot stop a sync run (stream/invoke): LangChain "
                "runs async handlers on the side there and swallows their errors. Use "
                "Qwen3GuardStreamCallback, which stops sync and async runs, or guard_model."
            )
        return False

    @property
    def ignore_chat_model(self) -> bool:
        """Never ignored; raises in a sync run (see the class docstring)."""
        return self._refuse_sync_run()

    @property
    def ignore_llm(self) -> bool:
        """Never ignored; raises in a sync run (see the class docstring)."""
        return self._refuse_sync_run()

    async def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        **kwargs: Any,
    ) -> None:
        """Open the run's session (runs the prompt); raise when the prompt is blocked."""
        await self._start(run_id, _prompt_conversation(messages[0]))

    async def on_llm_start(
        self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID, **kwargs: Any
    ) -> None:
        """Text-completion models: the prompt string is the user turn."""
        await self._start(run_id, [{"role": "user", "content": prompts[0]}])

    async def _start(self, run_id: UUID, convo: list[dict[str, Any]]) -> None:
        session = await self.stream_guard.asession(convo, **self._open_kwargs()).start()
        if not self._started(run_id, session, session.prompt_verdict):
            await session.aclose()
            raise UnsafeContentError(session.prompt_verdict)

    async def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Feed the token's text; raise at the token that trips a blocking decision."""
        text = text_of_content(token)
        run = self._get(run_id)
        if run is None or not text:
            return
        update = await asyncio.to_thread(self._feed_ahead, run.session.session, text)
        run.fed = True
        if update.blocked:
            await self._stop(run_id, update.verdict)

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """Flush the held-back tail (or moderate the whole answer when nothing streamed)."""
        run = self._get(run_id)
        if run is None:
            return
        if not run.fed and (text := _generation_text(response)):
            await run.session.afeed(text)
        update = await run.session.afinish()
        if update.blocked:
            await self._stop(run_id, update.verdict)
        await self._close(run_id)

    async def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Close the run's session (errors, our own block and cancellation end here)."""
        await self._close(run_id)

    async def _stop(self, run_id: UUID, verdict: Verdict) -> None:
        self._report(run_id, "stream", verdict)
        await self._close(run_id)
        raise UnsafeContentError(verdict)

    async def _close(self, run_id: UUID) -> None:
        run = self._pop(run_id)
        if run is not None:
            await run.session.aclose()
