"""A node postprocessor that screens the query and the retrieved context with a Qwen3Guard-Gen model.

A postprocessor runs after retrieval and before synthesis: it sees the query and the retrieved
nodes, never the answer (guard the answer with `GuardedQueryEngine`).

```python
post = Qwen3GuardNodePostprocessor(guard)                 # drop unsafe nodes, raise on an unsafe query
engine = index.as_query_engine(node_postprocessors=[post])
```
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llama_index.core.bridge.pydantic import Field
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from ..core.actions import BlockAction, check_action
from ..core.errors import ConfigurationError, UnsafeContentError
from ..core.verdict import Verdict
from ..guards.gen import Qwen3Guard
from .events import Qwen3GuardVerdictEvent, aemit, emit

__all__ = ["METADATA_KEY", "Qwen3GuardNodePostprocessor", "flag_node"]

#: The metadata key under which verdicts are stored (nodes and responses).
METADATA_KEY = "qwen3guard"

#: What a blocked node may become: left out, or passed on flagged.
NODE_ACTIONS = (BlockAction.DROP, BlockAction.FLAG)
#: What a blocked query may become: an error, or no nodes at all (``"drop"``).
QUERY_ACTIONS = (BlockAction.RAISE, BlockAction.DROP)


def flag_node(node: NodeWithScore, verdict: Verdict, key: str = METADATA_KEY) -> NodeWithScore:
    """A copy of ``node`` whose node carries ``verdict.to_dict()`` under ``metadata[key]``.

    The key is added to the copy's excluded embedding and LLM metadata keys, so the verdict never
    reaches an embedding model or the LLM prompt. ``node`` itself is left untouched.
    """
    inner = node.node
    metadata = {**inner.metadata, key: verdict.to_dict()}
    excl_embed = list(inner.excluded_embed_metadata_keys)
    excl_llm = list(inner.excluded_llm_metadata_keys)
    if key not in excl_embed:
        excl_embed.append(key)
    if key not in excl_llm:
        excl_llm.append(key)
    copy = inner.model_copy(
        update={
            "metadata": metadata,
            "excluded_embed_metadata_keys": excl_embed,
            "excluded_llm_metadata_keys": excl_llm,
        }
    )
    return node.model_copy(update={"node": copy})


@dataclass(frozen=True)
class _Plan:
    """What to check: the query (index 0 when present) and the nodes with text."""

    items: list[str]
    query_at: int | None
    node_at: dict[int, int]  # position in nodes -> position in items


class Qwen3GuardNodePostprocessor(BaseNodePostprocessor):
    """Screens the query and each retrieved node (prompt mode, one batched check).

    Node texts are checked in prompt mode, so instructions injected into a document count as
    Jailbreak. The nodes received are never mutated.

    Args:
        guard: the `Qwen3Guard` (its policy decides what blocks).
        check_query: check the query string (prompt mode).
        check_nodes: check each node's content as the LLM would see it (``metadata_mode``).
        on_unsafe_node: `BlockAction` ``"drop"`` blocked nodes, or ``"flag"`` them: pass a copy
            carrying the verdict under ``metadata[metadata_key]`` (excluded from embedding and
            LLM metadata).
        on_unsafe_query: `BlockAction` ``"raise"`` `UnsafeContentError`, or ``"drop"`` every
            node (none reaches synthesis; ``"empty"``, its old name, still works and warns).
        metadata_key: the metadata key of flagged copies.
        metadata_mode: which node content is checked (default: what the LLM sees).

    Bad options or a guard that is not a `Qwen3Guard` raise `ConfigurationError` at
    construction. Nodes whose content is blank are passed on unchecked (they hold no text; the guard reads text
    only, so the images of multimodal nodes are not checked). Every verdict is also sent as a
    `Qwen3GuardVerdictEvent`.
    """

    guard: Qwen3Guard = Field(exclude=True, description="The Qwen3Guard Gen guard.")
    check_query: bool = True
    check_nodes: bool = True
    on_unsafe_node: BlockAction = BlockAction.DROP
    on_unsafe_query: BlockAction = BlockAction.RAISE
    metadata_key: str = METADATA_KEY
    metadata_mode: MetadataMode = MetadataMode.LLM

    def __init__(self, guard: Qwen3Guard, **kwargs: Any) -> None:
        if not isinstance(guard, Qwen3Guard):
            raise ConfigurationError(
                "Qwen3GuardNodePostprocessor needs a Qwen3Guard (the Gen guard), got "
                f"{type(guard).__name__}"
            )
        if "on_unsafe_node" in kwargs:
            kwargs["on_unsafe_node"] = check_action(
                kwargs["on_unsafe_node"], allowed=NODE_ACTIONS, option="on_unsafe_node"
            )
        if kwargs.get("on_unsafe_query") == "empty":
            warnings.warn(
                'on_unsafe_query="empty" is deprecated; use "drop"',
                DeprecationWarning,
                stacklevel=2,
            )
            kwargs["on_unsafe_query"] = BlockAction.DROP
        if "on_unsafe_query" in kwargs:
            kwargs["on_unsafe_query"] = check_action(
                kwargs["on_unsafe_query"], allowed=QUERY_ACTIONS, option="on_unsafe_query"
            )
        super().__init__(guard=guard, **kwargs)  # type: ignore[call-arg]

    @classmethod
    def class_name(cls) -> str:
        """The class name LlamaIndex serialises."""
        return "Qwen3GuardNodePostprocessor"

    # -- the pure halves -----------------------------------------------------------------------
    def _plan(self, nodes: Sequence[NodeWithScore], query_bundle: QueryBundle | None) -> _Plan:
        items: list[str] = []
        query_at = None
        if self.check_query and query_bundle is not None:
            query_at = 0
            items.append(query_bundle.query_str)
        node_at: dict[int, int] = {}
        if self.check_nodes:
            for i, n in enumerate(nodes):
                text = n.node.get_content(metadata_mode=self.metadata_mode)
                if text.strip():
                    node_at[i] = len(items)
                    items.append(text)
        return _Plan(items, query_at, node_at)

    def _apply(
        self, nodes: Sequence[NodeWithScore], plan: _Plan, verdicts: Sequence[Verdict]
    ) -> tuple[list[NodeWithScore], list[Qwen3GuardVerdictEvent], UnsafeContentError | None]:
        """The nodes to pass on, the events to send, and the error to raise (if any)."""
        events: list[Qwen3GuardVerdictEvent] = []
        if plan.query_at is not None:
            qv = verdicts[plan.query_at]
            blocked = self.guard.blocks(qv)
            action: str = BlockAction(self.on_unsafe_query).value if blocked else "allow"
            events.append(
                Qwen3GuardVerdictEvent(verdict=qv, stage="query", blocked=blocked, action=action)
            )
            if blocked:
                error = (
                    UnsafeContentError(qv) if self.on_unsafe_query == BlockAction.RAISE else None
                )
                return [], events, error
        out: list[NodeWithScore] = []
        for i, node in enumerate(nodes):
            at = plan.node_at.get(i)
            if at is None:
                out.append(node)
                continue
            v = verdicts[at]
            blocked = self.guard.blocks(v)
            action = BlockAction(self.on_unsafe_node).value if blocked else "allow"
            events.append(
                Qwen3GuardVerdictEvent(
                    verdict=v, stage="node", blocked=blocked, action=action, node_id=node.node_id
                )
            )
            if not blocked:
                out.append(node)
            elif self.on_unsafe_node == BlockAction.FLAG:
                out.append(flag_node(node, v, self.metadata_key))
        return out, events, None

    # -- LlamaIndex hooks ----------------------------------------------------------------------
    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        plan = self._plan(nodes, query_bundle)
        verdicts = self.guard.check_batch(plan.items) if plan.items else []
        out, events, error = self._apply(nodes, plan, verdicts)
        for e in events:
            emit(e)
        if error is not None:
            raise error
        return out

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        plan = self._plan(nodes, query_bundle)
        verdicts = await self.guard.acheck_batch(plan.items) if plan.items else []
        out, events, error = self._apply(nodes, plan, verdicts)
        for e in events:
            await aemit(e)
        if error is not None:
            raise error
        return out
