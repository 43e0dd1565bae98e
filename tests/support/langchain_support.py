"""LangChain test helpers: a paced scripted chat model that counts what it generated, a user
callback handler that collects every token and verdict event, and text collectors for every
channel, shared by the LangChain channel, parallel and middleware tests."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field

from qwen3guard_integrations.langchain import VERDICT_EVENT

__all__ = ["Collector", "Paced", "everything", "shown"]


class Paced(BaseChatModel):
    """Streams scripted answers word by word (a ``(name, args)`` entry as tool-call chunks of
    six characters), after ``prefill`` seconds and ``delay`` seconds before every chunk but the
    first; ``forever`` repeats the answer without end. ``generated`` counts the chunks made in
    each call (sync and async ``_stream`` alike)."""

    script: list[Any]
    generated: list[int] = Field(default_factory=list)
    turn: int = 0
    prefill: float = 0.0
    delay: float = 0.0
    forever: bool = False

    @property
    def _llm_type(self) -> str:
        return "paced"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Paced:  # type: ignore[override]
        return self

    def _next(self) -> Any:
        answer = self.script[min(self.turn, len(self.script) - 1)]
        self.turn += 1
        self.generated.append(0)
        return answer

    def _pieces(self, answer: Any) -> Iterator[AIMessageChunk]:
        while True:
            if isinstance(answer, str):
                for word in re.split(r"(\s)", answer):
                    yield AIMessageChunk(content=word)
            else:
                name, args = answer
                text = json.dumps(args)
                for i in range(0, len(text), 6):
                    yield AIMessageChunk(
                        content="",
                        tool_call_chunks=[
                            {
                                "name": name if i == 0 else None,
                                "args": text[i : i + 6],
                                "id": "call_1" if i == 0 else None,
                                "index": 0,
                                "type": "tool_call_chunk",
                            }
                        ],
                    )
            if not self.forever:
                return

    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):  # type: ignore[no-untyped-def]
        time.sleep(self.prefill)
        for n, chunk in enumerate(self._pieces(self._next())):
            if n:
                time.sleep(self.delay)
            self.generated[-1] += 1
            yield ChatGenerationChunk(message=chunk)

    async def _astream(  # type: ignore[override]
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        await asyncio.sleep(self.prefill)
        for n, chunk in enumerate(self._pieces(self._next())):
            if n:
                await asyncio.sleep(self.delay)
            self.generated[-1] += 1
            yield ChatGenerationChunk(message=chunk)

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):  # type: ignore[no-untyped-def]
        merged = None
        for chunk in self._stream(messages):
            merged = chunk.message if merged is None else merged + chunk.message
        assert merged is not None
        msg = AIMessage(content=merged.content, tool_calls=merged.tool_calls)
        return ChatResult(generations=[ChatGeneration(message=msg)])

    async def _agenerate(  # type: ignore[override]
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        merged = None
        async for chunk in self._astream(messages):
            merged = chunk.message if merged is None else merged + chunk.message
        assert merged is not None
        msg = AIMessage(content=merged.content, tool_calls=merged.tool_calls)
        return ChatResult(generations=[ChatGeneration(message=msg)])


class Collector(BaseCallbackHandler):
    """A user's callback handler: every token, chunk and verdict event it is shown; ``probe``
    (when given) is called at each verdict event and its value kept in ``probed``."""

    def __init__(self, probe: Callable[[], Any] | None = None) -> None:
        self.tokens: list[str] = []
        self.chunks: list[Any] = []
        self.events: list[dict[str, Any]] = []
        self.probed: list[Any] = []
        self.probe = probe

    def on_llm_new_token(self, token: Any, *, chunk: Any = None, **kw: Any) -> None:
        self.tokens.append(str(token))
        if chunk is not None:
            self.chunks.append(chunk.message)

    def on_custom_event(self, name: str, data: Any, **kw: Any) -> None:
        if name == VERDICT_EVENT:
            self.events.append(data)
            if self.probe is not None:
                self.probed.append(self.probe())


def everything(obj: Any) -> str:
    """All text inside ``obj`` (messages, chunks, their tool calls and metadata, dicts)."""
    if isinstance(obj, BaseMessage):
        return json.dumps(obj.model_dump(), default=str, ensure_ascii=False)
    if isinstance(obj, (list, tuple)):
        return " ".join(everything(o) for o in obj)
    if isinstance(obj, dict):
        return " ".join(f"{k} {everything(v)}" for k, v in obj.items())
    return str(obj)


def shown(events: list[dict[str, Any]]) -> str:
    """The text of ``astream_events`` output except the verdict events (which keep flagged
    text for audit)."""
    return everything(
        [
            e["data"]
            for e in events
            if not (e["event"] == "on_custom_event" and e["name"] == VERDICT_EVENT)
        ]
    )
