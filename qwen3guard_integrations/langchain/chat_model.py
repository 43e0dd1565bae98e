"""``guard_model``: a chat model whose output is released in one place, after the guards.

```python
safe = guard_model(model, guard=guard, stream_guard=stream_guard)
for chunk in safe.stream("..."):          # only text the Stream head cleared
    print(chunk.content, end="")
agent = create_agent(safe, tools)         # or Qwen3GuardMiddleware, which uses it
```

The result is a real ``BaseChatModel`` (`GuardedChatModel`) around any chat model (or a
``Runnable`` of one: ``model.with_retry()``, ``model.bind_tools(...)``). For every call:

1. the prompt is checked before the inner model runs (when the conversation ends with the
   user's turn): Gen with ``guard``, else the Stream head's prompt verdict;
   ``prompt_check="parallel"`` starts the inner model meanwhile and releases nothing before
   the verdict (a blocked prompt stops it at once; see `prompt_check`);
2. with a ``stream_guard`` the inner model streams and each chunk's text (and its reasoning,
   ``reasoning="moderate"``, the default) is fed to the Stream head through the one hold-back
   loop (`HoldBack.run`) and a chunk is released only once all its text is cleared; without
   one the inner model is invoked and its whole answer checked by Gen (`buffer_and_check`);
3. at the end the answer is checked by Gen (``guard``) and every tool call - its name and
   arguments, those that did not parse too - is checked before it is released: tool-call
   chunks never stream before that, they come out in the last chunk;
4. on a block the inner stream is closed at once (it stops generating), a `VERDICT_EVENT`
   with ``blocked=True`` (and ``token_index`` for the Stream head) is dispatched, and the caller
   sees one ending: `UnsafeContentError` (``on_block="raise"``, the default) or one last
   chunk with the refusal text (``on_block="refuse"``), on a new paragraph after the text
   released before.

Released chunks are the inner model's own, unchanged (tool calls taken out). Only the guarded
model's run reports tokens: the inner model runs with the caller's tracers only (LangSmith,
the console; ``trace_inner=False``: none) and LangGraph's ``nostream`` tag, so its unchecked
tokens never reach ``stream_mode="messages"``, ``astream_events`` or the caller's callback
handlers. Verdicts go on the last chunk's ``response_metadata["qwen3guard"]`` without the
flagged text (``metadata_text=True`` keeps it); the events carry the whole verdict.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Sequence
from contextlib import aclosing, closing
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from pydantic import ConfigDict

from ..core.actions import DEFAULT_REFUSAL, BlockAction
from ..core.verdict import Verdict
from ..guards.gen import Qwen3Guard
from ..guards.stream import Qwen3StreamGuard
from .chat_flow import Flow
from .chat_parts import NOSTREAM_TAG, keeps_inner_events
from .chat_run import (
    RunStart,
    bind_inner_tools,
    chat_result,
    check_options,
    child_manager,
    generation_chunk,
    llm_result,
    name_of,
    one,
    partial_result,
    token_of,
)

__all__ = ["GuardedChatModel", "guard_model"]


def guard_model(
    model: Runnable[Any, Any],
    *,
    guard: Qwen3Guard | None = None,
    stream_guard: Qwen3StreamGuard | None = None,
    on_block: BlockAction | str = BlockAction.RAISE,
    refusal: str = DEFAULT_REFUSAL,
    reasoning: str = "moderate",
    check_prompt: bool = True,
    check_response: bool = True,
    check_tool_calls: bool = True,
    metadata_text: bool = False,
    trace_inner: bool = True,
    prompt_check: str = "before",
) -> GuardedChatModel:
    """``model`` guarded; see the module docstring and `GuardedChatModel`."""
    return GuardedChatModel(
        model=model,
        guard=guard,
        stream_guard=stream_guard,
        on_block=on_block,
        refusal=refusal,
        reasoning=reasoning,
        check_prompt=check_prompt,
        check_response=check_response,
        check_tool_calls=check_tool_calls,
        metadata_text=metadata_text,
        trace_inner=trace_inner,
        prompt_check=prompt_check,
    )


class GuardedChatModel(BaseChatModel):
    """A chat model released only after the guards; build it with `guard_model`.

    Args:
        model: the inner chat model (or a ``Runnable`` around one).
        guard: the Gen `Qwen3Guard` (prompt, final answer, tool calls).
        stream_guard: the `Qwen3StreamGuard` (holds the stream back until cleared; checks the
            prompt, answer and tool calls itself when no ``guard`` is given).
        on_block: ``"raise"`` `UnsafeContentError` or ``"refuse"`` (a refusal chunk ends it).
        refusal: the refusal template (``{level}``, ``{categories}``, ``{stage}``).
        reasoning: ``"moderate"`` (default) or ``"skip"`` the model's reasoning blocks.
        check_prompt, check_response, check_tool_calls: what to check.
        metadata_text: keep the flagged text (``text_until``) in message metadata.
        trace_inner: let the caller's tracers record the inner model's run.
        prompt_check: ``"before"`` (default): check the prompt, then start the inner model;
            ``"parallel"``: start both at once and release nothing before the prompt verdict
            (see `prompt_check` and docs/latency.md).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: Any
    guard: Any = None
    stream_guard: Any = None
    on_block: BlockAction = BlockAction.RAISE
    refusal: str = DEFAULT_REFUSAL
    reasoning: str = "moderate"
    check_prompt: bool = True
    check_response: bool = True
    check_tool_calls: bool = True
    metadata_text: bool = False
    trace_inner: bool = True
    prompt_check: str = "before"

    def __init__(self, **data: Any) -> None:
        check_options(data)
        super().__init__(**data)

    @property
    def _llm_type(self) -> str:
        return "qwen3guard-guarded"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"inner": name_of(self.model), "on_block": self.on_block.value}

    # --- delegation: the guarded model stays the release point ---------------------------------
    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> GuardedChatModel:
        """The inner model's ``bind_tools``, guarded the same way."""
        return self.model_copy(update={"model": bind_inner_tools(self.model, tools, kwargs)})

    def blocks(self, verdict: Verdict) -> bool:
        """Whether the guards' policy blocks ``verdict``."""
        if self.guard is not None:
            return bool(self.guard.blocks(verdict))
        return bool(self.stream_guard.policy.blocks(verdict))

    # --- the inner call's callbacks ------------------------------------------------------------
    def _inner_config(
        self, run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun
    ) -> RunnableConfig:
        child = child_manager(run_manager)
        keep = keeps_inner_events if self.trace_inner else (lambda h: False)
        child.handlers = [h for h in child.handlers if keep(h)]
        child.inheritable_handlers = [h for h in child.inheritable_handlers if keep(h)]
        child.add_tags([NOSTREAM_TAG], inherit=False)
        return {"callbacks": child}

    def _flow(self, run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun) -> Flow:
        return Flow(self, events={"callbacks": child_manager(run_manager)})

    # --- invoke / batch (BaseChatModel calls these with the run manager) -----------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        assert run_manager is not None
        chunks: list[AIMessageChunk] = []
        for chunk in self._guarded(messages, run_manager, stop, kwargs):
            run_manager.on_llm_new_token(token_of(chunk), chunk=generation_chunk(chunk))
            chunks.append(chunk)
        return chat_result(chunks)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        assert run_manager is not None
        chunks: list[AIMessageChunk] = []
        async for chunk in self._aguarded(messages, run_manager, stop, kwargs):
            await run_manager.on_llm_new_token(token_of(chunk), chunk=generation_chunk(chunk))
            chunks.append(chunk)
        return chat_result(chunks)

    # --- stream (the run is opened here: BaseChatModel does not hand ``_stream`` its manager) -
    def _run_start(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None,
        stop: list[str] | None,
        kwargs: dict[str, Any],
    ) -> RunStart:
        """The plan of a streamed run: its messages and how its callback run opens."""
        config = ensure_config(config)
        kwargs.pop("ls_structured_output_format", None)
        return RunStart(
            messages=self._convert_input(input).to_messages(),
            configure=(
                config.get("callbacks"),
                self.callbacks,
                self.verbose,
                config.get("tags"),
                self.tags,
                config.get("metadata"),
                self.metadata,
            ),
            start={
                "invocation_params": self._get_invocation_params(stop=stop, **kwargs),
                "options": {"stop": stop},
                "name": config.get("run_name"),
                "run_id": config.pop("run_id", None),
                "batch_size": 1,
            },
        )

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        """Stream the answer as the guards release it."""
        run = self._run_start(input, config, stop, kwargs)
        manager = CallbackManager.configure(*run.configure)
        (run_manager,) = manager.on_chat_model_start(self._serialized, [run.messages], **run.start)
        chunks: list[AIMessageChunk] = []
        try:
            with closing(self._guarded(run.messages, run_manager, stop, kwargs)) as guarded:
                for chunk in guarded:
                    run_manager.on_llm_new_token(token_of(chunk), chunk=generation_chunk(chunk))
                    chunks.append(chunk)
                    yield chunk
        except BaseException as exc:
            run_manager.on_llm_error(exc, response=partial_result(chunks))
            raise
        run_manager.on_llm_end(llm_result(chunks))

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        """Async twin of `stream`."""
        run = self._run_start(input, config, stop, kwargs)
        manager = AsyncCallbackManager.configure(*run.configure)
        (run_manager,) = await manager.on_chat_model_start(
            self._serialized, [run.messages], **run.start
        )
        chunks: list[AIMessageChunk] = []
        try:
            async with aclosing(self._aguarded(run.messages, run_manager, stop, kwargs)) as guarded:
                async for chunk in guarded:
                    await run_manager.on_llm_new_token(
                        token_of(chunk), chunk=generation_chunk(chunk)
                    )
                    chunks.append(chunk)
                    yield chunk
        except BaseException as exc:
            await run_manager.on_llm_error(exc, response=partial_result(chunks))
            raise
        await run_manager.on_llm_end(llm_result(chunks))

    # --- the guarded call ----------------------------------------------------------------------
    def _guarded(
        self,
        messages: list[BaseMessage],
        run_manager: CallbackManagerForLLMRun,
        stop: list[str] | None,
        kwargs: dict[str, Any],
    ) -> Generator[AIMessageChunk, None, None]:
        flow = self._flow(run_manager)

        def inner() -> Iterator[Any]:
            config = self._inner_config(run_manager)
            if self.stream_guard is None and self.check_response:  # buffered anyway: one message
                return iter([self.model.invoke(messages, config, stop=stop, **kwargs)])
            stream: Iterator[Any] = self.model.stream(messages, config, stop=stop, **kwargs)
            return stream

        return flow.run(messages, inner)

    def _aguarded(
        self,
        messages: list[BaseMessage],
        run_manager: AsyncCallbackManagerForLLMRun,
        stop: list[str] | None,
        kwargs: dict[str, Any],
    ) -> AsyncGenerator[AIMessageChunk, None]:
        flow = self._flow(run_manager)

        def inner() -> AsyncIterator[Any]:
            config = self._inner_config(run_manager)
            if self.stream_guard is None and self.check_response:
                return one(self.model.ainvoke(messages, config, stop=stop, **kwargs))
            return self.model.astream(messages, config, stop=stop, **kwargs)  # type: ignore[no-any-return]

        return flow.arun(messages, inner)
