"""``guard_chain``: one Runnable that guards a whole chain - prompt before, response after, stream
during.

```python
safe = guard_chain(prompt | model, guard=guard, stream_guard=stream_guard)
msg = safe.invoke({"input": "..."})          # msg.response_metadata["qwen3guard"]
for chunk in safe.stream({"input": "..."}):  # only text the Stream head cleared
    ...
```

``invoke``: the prompt is checked (a blocked prompt never reaches the chain), the chain runs, and
its answer is checked in the context of the prompt (Gen; the Stream head when no Gen guard is
given). ``stream``: the prompt is checked first; with a ``stream_guard`` the answer streams through
`StreamGuard` (released as the Stream head clears it, stopped when the
debounced decision blocks); without one the answer is gathered, checked by the Gen guard and
released whole. Verdicts come back in ``response_metadata["qwen3guard"]`` of the (last) message
(``"prompt"``, ``"response"`` and/or ``"stream"``) and as custom events in every mode.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import BaseModel

from ..core.errors import InvalidInputError, UnsafeContentError
from ..core.verdict import Verdict
from ..guards.gen import Qwen3Guard
from ..guards.stream import Qwen3StreamGuard
from .convert import output_text as _message_text
from .convert import prompt_of
from .guard_runnables import DEFAULT_REFUSAL, OnBlock, refusal_message
from .reporting import adispatch_verdict, dispatch_verdict, with_verdicts
from .stream_stage import StreamGuard

__all__ = ["GuardedChain", "guard_chain"]


def guard_chain(
    chain: Runnable[Any, Any],
    *,
    guard: Qwen3Guard | None = None,
    stream_guard: Qwen3StreamGuard | None = None,
    key: str = "input",
    on_block: OnBlock = "raise",
    refusal: str = DEFAULT_REFUSAL,
) -> GuardedChain:
    """Guard ``chain``; see the module docstring and `GuardedChain`."""
    return GuardedChain(
        chain, guard=guard, stream_guard=stream_guard, key=key, on_block=on_block, refusal=refusal
    )


def _convo(prompt: Any) -> list[dict[str, Any]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return _prompt_conversation_dicts(prompt)


def _prompt_conversation_dicts(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    last = max((i for i, m in enumerate(msgs) if m["role"] == "user"), default=None)
    if last is None:
        raise InvalidInputError("the chain's input has no user message to moderate")
    return msgs[: last + 1]


class GuardedChain(Runnable[Any, Any]):
    """A chain with its prompt, response and stream guarded (build it with `guard_chain`).

    Args:
        chain: any Runnable whose output is a message or a string.
        guard: the Gen `Qwen3Guard` (prompt and final response).
        stream_guard: the `Qwen3StreamGuard` (moderates while
            streaming; checks prompt and response itself when no ``guard`` is given).
        key: the input dict key that holds the prompt.
        on_block: ``"raise"`` `UnsafeContentError` or ``"refuse"``: answer with a refusal
            ``AIMessage`` (a string for string chains); a stream blocked midway ends with a chunk
            carrying the verdict.
        refusal: the refusal text.
    """

    def __init__(
        self,
        chain: Runnable[Any, Any],
        *,
        guard: Qwen3Guard | None = None,
        stream_guard: Qwen3StreamGuard | None = None,
        key: str = "input",
        on_block: OnBlock = "raise",
        refusal: str = DEFAULT_REFUSAL,
    ) -> None:
        if guard is None and stream_guard is None:
            raise InvalidInputError("guard_chain needs a guard, a stream_guard or both")
        if on_block not in ("raise", "refuse"):
            raise InvalidInputError(f"on_block must be 'raise' or 'refuse', got {on_block!r}")
        self.chain = chain
        self.guard = guard
        self.stream_guard = stream_guard
        self.key = key
        self.on_block = on_block
        self.refusal = refusal
        self.name = f"Guarded{chain.get_name()}"
        self._stage = (
            StreamGuard(stream_guard, on_block="raise" if on_block == "raise" else "end")
            if stream_guard is not None
            else None
        )

    # --- shared pieces ------------------------------------------------------------------------
    def _blocks(self, verdict: Verdict) -> bool:
        if self.guard is not None:
            return self.guard.blocks(verdict)
        assert self.stream_guard is not None
        return self.stream_guard.policy.blocks(verdict)

    def _refuse(self, verdicts: dict[str, Verdict], like: Any = None) -> Any:
        if self.on_block == "raise":
            raise UnsafeContentError(list(verdicts.values())[-1])
        if isinstance(like, str) or (like is None and self._outputs_str()):
            return self.refusal
        return refusal_message(self.refusal, verdicts)

    def _outputs_str(self) -> bool:
        """Whether the chain says it outputs strings (for a refusal before it has run)."""
        try:
            return self.chain.OutputType is str
        except Exception:  # a Runnable that cannot tell
            return False

    def _finish(self, out: Any, verdicts: dict[str, Verdict]) -> Any:
        """The chain's output annotated, or the block's answer."""
        last = list(verdicts.values())[-1]
        if self._blocks(last):
            return self._refuse(verdicts, out)
        return with_verdicts(out, verdicts) if isinstance(out, BaseMessage) else out

    def _session_response(self, session: Any, text: str) -> Verdict:
        """The Stream head's verdict on a whole answer (no Gen guard)."""
        session.feed(text)
        session.finish()
        assert self._stage is not None
        verdict: Verdict = self._stage._final_verdict(session)
        return verdict

    # --- invoke -------------------------------------------------------------------------------
    def _run(
        self, value: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> Any:
        prompt = prompt_of(value, self.key)
        session = None
        try:
            if self.guard is not None:
                pv = self.guard.check_prompt(prompt)
            else:
                assert self.stream_guard is not None
                session = self.stream_guard.session(_convo(prompt))
                pv = session.prompt_verdict
            dispatch_verdict("prompt", pv, self._blocks(pv), config)
            if self._blocks(pv):
                return self._refuse({"prompt": pv})
            out = self.chain.invoke(value, config)
            text = output_text(out)
            if not text.strip():
                return out
            if self.guard is not None:
                rv = self.guard.check_response(prompt, text)
            else:
                rv = self._session_response(session, text)
            dispatch_verdict("response", rv, self._blocks(rv), config)
            return self._finish(out, {"prompt": pv, "response": rv})
        finally:
            if session is not None:
                session.close()

    async def _arun(
        self, value: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> Any:
        prompt = prompt_of(value, self.key)
        session = None
        try:
            if self.guard is not None:
                pv = await self.guard.acheck_prompt(prompt)
            else:
                assert self.stream_guard is not None
                session = await asyncio.to_thread(self.stream_guard.session, _convo(prompt))
                pv = session.prompt_verdict
            await adispatch_verdict("prompt", pv, self._blocks(pv), config)
            if self._blocks(pv):
                return self._refuse({"prompt": pv})
            out = await self.chain.ainvoke(value, config)
            text = output_text(out)
            if not text.strip():
                return out
            if self.guard is not None:
                rv = await self.guard.acheck_response(prompt, text)
            else:
                rv = await asyncio.to_thread(self._session_response, session, text)
            await adispatch_verdict("response", rv, self._blocks(rv), config)
            return self._finish(out, {"prompt": pv, "response": rv})
        finally:
            if session is not None:
                await asyncio.to_thread(session.close)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Check the prompt, run the chain, check its answer."""
        return self._call_with_config(self._run, input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Async twin of `invoke`."""
        return await self._acall_with_config(self._arun, input, config, **kwargs)

    # --- stream -------------------------------------------------------------------------------
    def _stream(
        self, inputs: Iterator[Any], run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> Iterator[Any]:
        value = next(iter(inputs))
        prompt = prompt_of(value, self.key)
        session = None
        if self._stage is not None:
            assert self.stream_guard is not None
            session = self.stream_guard.session(_convo(prompt))
        try:
            pv = (
                self.guard.check_prompt(prompt)
                if self.guard is not None
                else session.prompt_verdict  # type: ignore[union-attr]
            )
            dispatch_verdict("prompt", pv, self._blocks(pv), config)
            if self._blocks(pv):
                yield self._refuse({"prompt": pv})
                return
            chunks: Iterator[Any] = iter(self.chain.stream(value, config))
            first = list(itertools.islice(chunks, 1))
            if first and _structured(first[0]) and self.guard is None:
                out = _merge([*first, *chunks])
                assert session is not None
                rv = self._session_response(session, output_text(out))
                dispatch_verdict("response", rv, self._blocks(rv), config)
                yield self._finish(out, {"prompt": pv, "response": rv})
                return
            chunks = itertools.chain(first, chunks)
            if self._stage is not None and not (first and _structured(first[0])):
                moderated, session = (
                    self._stage._moderate(session, chunks, config, {"prompt": pv}),
                    None,
                )
                yield from moderated
                return
            out = _merge(list(chunks))
            if out is None:
                return
            if not output_text(out).strip():  # nothing to moderate: as invoke does
                yield out
                return
            assert self.guard is not None
            rv = self.guard.check_response(prompt, output_text(out))
            dispatch_verdict("response", rv, self._blocks(rv), config)
            yield self._finish(out, {"prompt": pv, "response": rv})
        finally:
            if session is not None:
                session.close()

    async def _astream(
        self,
        inputs: AsyncIterator[Any],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> AsyncIterator[Any]:
        value = await anext(aiter(inputs))
        prompt = prompt_of(value, self.key)
        session = None
        if self._stage is not None:
            assert self.stream_guard is not None
            session = await asyncio.to_thread(self.stream_guard.session, _convo(prompt))
        try:
            pv = (
                await self.guard.acheck_prompt(prompt)
                if self.guard is not None
                else session.prompt_verdict  # type: ignore[union-attr]
            )
            await adispatch_verdict("prompt", pv, self._blocks(pv), config)
            if self._blocks(pv):
                yield self._refuse({"prompt": pv})
                return
            achunks = aiter(self.chain.astream(value, config))
            head = [item async for item in _take_one(achunks)]
            structured = bool(head) and _structured(head[0])
            if structured and self.guard is None:
                out = _merge([*head, *[c async for c in achunks]])
                assert session is not None
                rv = await asyncio.to_thread(self._session_response, session, output_text(out))
                await adispatch_verdict("response", rv, self._blocks(rv), config)
                yield self._finish(out, {"prompt": pv, "response": rv})
                return
            chunks = _prepend(head, achunks)
            if self._stage is not None and not structured:
                moderated = self._stage._amoderate(session, chunks, config, {"prompt": pv})
                session = None
                try:
                    async for item in moderated:
                        yield item
                finally:  # a consumer that stops early: close the stage (and its session) now
                    await moderated.aclose()
                return
            out = _merge([c async for c in chunks])
            if out is None:
                return
            if not output_text(out).strip():  # nothing to moderate: as ainvoke does
                yield out
                return
            assert self.guard is not None
            rv = await self.guard.acheck_response(prompt, output_text(out))
            await adispatch_verdict("response", rv, self._blocks(rv), config)
            yield self._finish(out, {"prompt": pv, "response": rv})
        finally:
            if session is not None:
                await asyncio.to_thread(session.close)

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """Check the prompt, then stream the chain's answer as it is cleared."""
        yield from self._transform_stream_with_config(iter([input]), self._stream, config, **kwargs)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Async twin of `stream`."""

        async def one() -> AsyncIterator[Any]:
            yield input

        inner = self._atransform_stream_with_config(one(), self._astream, config, **kwargs)
        try:
            async for item in inner:
                yield item
        finally:  # a consumer that stops early: close the run (and its session) now
            aclose = getattr(inner, "aclose", None)
            if aclose is not None:
                await aclose()


def output_text(out: Any) -> str:
    """The text to check of a chain's output: a message's or string's text, and for structured
    outputs (``JsonOutputParser`` dicts and lists, pydantic objects) their JSON serialisation."""
    if isinstance(out, BaseModel) and not isinstance(out, BaseMessage):
        return out.model_dump_json()
    if isinstance(out, (dict, list, tuple, int, float, bool)) and not (
        isinstance(out, (list, tuple)) and out and isinstance(out[-1], BaseMessage)
    ):
        return json.dumps(out, ensure_ascii=False, default=str)
    return _message_text(out)


async def _take_one(items: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for item in items:
        yield item
        return


async def _prepend(head: list[Any], rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    for item in head:
        yield item
    async for item in rest:
        yield item


def _structured(item: Any) -> bool:
    return not isinstance(item, (str, BaseMessage))


def _merge(chunks: list[Any]) -> Any:
    if not chunks:
        return None
    if _structured(chunks[-1]):  # parsers stream growing whole objects: the last is complete
        return chunks[-1]
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    return merged
