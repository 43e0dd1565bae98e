"""The Stream half of the guard server's wire format: `StreamUpdate` and its session state as
JSON (pure functions, shared by the server and `RemoteStreamSession`).

One WebSocket frame per request and one per answer, JSON text:

* ``{"op": "open", "id", "messages", "debounce", "think", "policy", "trace"}`` ->
  ``{"op": "opened", "id", "session", "replica", "prompt_verdict", "prompt_ids", "state"}``
* ``{"op": "feed", "id", "session", "piece"}`` (text, an id or a list of ids),
  ``{"op": "finish" | "peek", "id", "session"}`` ->
  ``{"op": "update", "id", "session", "replica", "update", "state"}``
* ``{"op": "close", "id", "session"}`` -> ``{"op": "closed", "id", "session"}``
* any failure -> ``{"op": "error", "id", "session", "closed", "error": {"type", "message"}}``;
  ``closed`` says whether the server closed the session (a failed feed always does: a piece
  that was not moderated would leave a hole in the moderated stream).

``state`` carries what the client's mirror of the session needs without a tokenizer: the number
of settled ids, the cached length, the decision and the bytes (hex) of every response id the
server received since the previous answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..backends.stream.runtime import TokenResult
from ..core.labels import Category, Level
from ..core.verdict import Verdict
from .session import StreamUpdate

__all__ = ["token_from_wire", "token_to_wire", "update_from_wire", "update_to_wire"]


def token_to_wire(tok: TokenResult) -> dict[str, Any]:
    """One moderated token as JSON."""
    return {
        "token_id": tok.token_id,
        "level": tok.level.value,
        "probability": tok.probability,
        "category": tok.category.value,
        "category_probability": tok.category_probability,
        "scores": {lv.value: p for lv, p in tok.scores.items()},
    }


def token_from_wire(data: Mapping[str, Any]) -> TokenResult:
    """The inverse of `token_to_wire` (``KeyError`` / ``ValueError`` on a malformed token)."""
    return TokenResult(
        token_id=int(data["token_id"]),
        level=Level(data["level"]),
        probability=float(data["probability"]),
        category=Category(data["category"]),
        category_probability=float(data["category_probability"]),
        scores={Level(k): float(v) for k, v in dict(data["scores"]).items()},
    )


def update_to_wire(update: StreamUpdate) -> dict[str, Any]:
    """A `StreamUpdate` as JSON (the verdict as `Verdict.to_dict`)."""
    return {
        "tokens": [token_to_wire(t) for t in update.tokens],
        "start_index": update.start_index,
        "decision": update.decision.value,
        "verdict": None if update.verdict is None else update.verdict.to_dict(),
        "blocked": update.blocked,
        "tripped": update.tripped,
    }


def update_from_wire(data: Mapping[str, Any]) -> StreamUpdate:
    """The inverse of `update_to_wire` (``KeyError`` / ``ValueError`` when malformed)."""
    verdict = data.get("verdict")
    return StreamUpdate(
        tokens=tuple(token_from_wire(t) for t in data["tokens"]),
        start_index=int(data["start_index"]),
        decision=Level(data["decision"]),
        verdict=None if verdict is None else Verdict.from_dict(verdict),
        blocked=bool(data["blocked"]),
        tripped=bool(data["tripped"]),
    )
