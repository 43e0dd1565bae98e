"""The wire formats of the serving backends, as pure functions (no I/O).

Request bodies for TGI ``/generate`` and OpenAI-compatible ``/v1/completions``; their answers
turned into `GenAnswer` (text plus level scores from the token
log-probabilities); server error bodies turned into typed `BackendError` s; and the retry
delay for 429 / 503 answers (``Retry-After`` honoured, bounded). The sync and async clients share
all of it and differ only in the line that does the I/O.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...core.errors import (
    BackendConnectionError,
    BackendError,
    BackendHTTPError,
    BackendProtocolError,
    BackendTimeoutError,
)
from ...core.gen_answer import GenAnswer
from ...core.labels import Level

__all__ = [
    "RETRY_STATUSES",
    "LabelTokens",
    "RetryPolicy",
    "error_from_body",
    "logprob",
    "openai_answer",
    "openai_body",
    "tgi_answer",
    "tgi_body",
    "transport_error",
]

#: Statuses retried with backoff: the server is busy, not wrong.
RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class LabelTokens:
    """The first sub-token of each level word after ``Safety:`` (ids and their texts)."""

    ids: Mapping[Level, int]
    texts: Mapping[Level, str]

    def scores_from(self, logprobs: Mapping[Any, Any], *, by: str) -> dict[Level, float] | None:
        """Level distribution from one position's top log-probabilities (keyed ``by`` id or text).

        Levels missing from the top-n get probability 0; None if none of them is there. The
        log-probabilities are checked (`logprob`) and normalised without overflow.
        """
        keys = self.ids if by == "id" else self.texts
        logs = {lv: logprob(logprobs[k]) for lv, k in keys.items() if k in logprobs}
        top = max(logs.values(), default=-math.inf)
        if top == -math.inf:
            return None
        raw = {lv: math.exp(v - top) for lv, v in logs.items()}
        total = sum(raw.values())
        return {lv: raw.get(lv, 0.0) / total for lv in keys}


def logprob(value: Any) -> float:
    """A server's log-probability as a float; `BackendProtocolError` for anything that is not
    one (not a number, NaN, +inf, or clearly above 0: a probability over 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BackendProtocolError(f"a logprob is not a number: {_short(value)}", backend="remote")
    out = float(value)
    if math.isnan(out) or out > 1e-3:
        raise BackendProtocolError(
            f"a logprob is out of range (NaN or above 0): {out!r}", backend="remote"
        )
    return min(out, 0.0)


@dataclass(frozen=True)
class RetryPolicy:
    """How 429 / 503 answers are retried: at most ``max_retries`` times, exponential backoff
    from ``backoff_s`` (doubling), a server's ``Retry-After`` honoured up to ``max_delay_s``."""

    max_retries: int = 3
    backoff_s: float = 0.25
    max_delay_s: float = 8.0

    def delay(self, attempt: int, headers: Mapping[str, str] | None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        wait = self.backoff_s * (2**attempt)
        after = _retry_after(headers)
        if after is not None:
            wait = after
        return max(0.0, min(wait, self.max_delay_s))


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    if not headers:
        return None
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


# --- TGI ----------------------------------------------------------------------------------------


def tgi_body(prompt: str, *, max_new_tokens: int, top_n_tokens: int) -> dict[str, Any]:
    """The ``/generate`` body: explicit greedy decoding, token details with the top-n tokens."""
    return {
        "inputs": prompt,
        "parameters": {
            "do_sample": False,
            "max_new_tokens": max_new_tokens,
            "details": True,
            "decoder_input_details": False,
            "return_full_text": False,
            "top_n_tokens": top_n_tokens or None,
        },
    }


def tgi_answer(data: Any, *, head: str, labels: LabelTokens) -> GenAnswer:
    """A ``/generate`` answer (parsed JSON) as a `GenAnswer`.

    ``head`` is the answer text already in the prompt (``"Safety:"`` in fast mode, else ``""``).
    Level scores come from ``details.top_tokens`` at the token right after ``Safety:``.
    """
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict) or not isinstance(data.get("generated_text"), str):
        raise BackendProtocolError(
            f"TGI answer has no generated_text: {_short(data)}", backend="tgi"
        )
    text = data["generated_text"]
    scores = None
    details = data.get("details")
    if isinstance(details, dict):
        tokens = details.get("tokens") or []
        top = details.get("top_tokens") or []
        at = _position_after_safety(
            head, [t.get("text", "") for t in tokens if isinstance(t, dict)]
        )
        if at is not None and at < len(top) and isinstance(top[at], list):
            by_id = {
                t["id"]: t.get("logprob")
                for t in top[at]
                if isinstance(t, dict) and isinstance(t.get("id"), int)
            }
            scores = labels.scores_from(by_id, by="id")
    return GenAnswer(head + text, scores)


# --- OpenAI-compatible ------------------------------------------------------------------------


def openai_body(
    prompt: str | Sequence[int], *, model: str, max_tokens: int, logprobs: int
) -> dict[str, Any]:
    """The ``/v1/completions`` body: greedy (``temperature: 0``), top log-probabilities."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt if isinstance(prompt, str) else list(prompt),
        "max_tokens": max_tokens,
        "temperature": 0,
        "n": 1,
        "stream": False,
    }
    if logprobs:
        body["logprobs"] = logprobs
    return body


def openai_answer(data: Any, *, head: str, labels: LabelTokens) -> GenAnswer:
    """A ``/v1/completions`` answer as a `GenAnswer` (scores from ``top_logprobs``)."""
    try:
        choice = data["choices"][0]
        text = choice["text"]
    except (KeyError, IndexError, TypeError):
        raise BackendProtocolError(
            f"completions answer has no choices[0].text: {_short(data)}", backend="openai"
        ) from None
    if not isinstance(text, str):
        raise BackendProtocolError("completions choices[0].text is not a string", backend="openai")
    scores = None
    lp = choice.get("logprobs") if isinstance(choice, dict) else None
    if isinstance(lp, dict):
        tokens = lp.get("tokens") or []
        top = lp.get("top_logprobs") or []
        at = _position_after_safety(head, [t if isinstance(t, str) else "" for t in tokens])
        if at is not None and at < len(top) and isinstance(top[at], dict):
            by_text = dict(top[at])
            scores = labels.scores_from(by_text, by="text")
    return GenAnswer(head + text, scores)


# --- shared ----------------------------------------------------------------------------------


def error_from_body(
    status: int, body: bytes | str | None, *, backend: str, endpoint: str
) -> BackendHTTPError:
    """A typed error for an error status, with the server's ``error`` / ``error_type``."""
    error = error_type = None
    try:
        data = json.loads(body) if body else None
    except (ValueError, TypeError):
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):  # OpenAI style: {"error": {"message", "type", "code"}}
            error, error_type = err.get("message"), err.get("type")
        elif isinstance(err, str):  # TGI style: {"error", "error_type"}
            error, error_type = err, data.get("error_type")
        elif isinstance(data.get("message"), str):  # vLLM: {"object": "error", "message", "type"}
            error, error_type = data["message"], data.get("type")
    if error is None and body:
        error = (body.decode("utf-8", "replace") if isinstance(body, bytes) else body)[:300]
    detail = f": {error}" if error else ""
    kind = f" ({error_type})" if error_type else ""
    return BackendHTTPError(
        f"{backend} endpoint {endpoint} answered HTTP {status}{kind}{detail}",
        status=status,
        error=None if error is None else str(error),
        error_type=None if error_type is None else str(error_type),
        backend=backend,
    )


def _position_after_safety(head: str, token_texts: Sequence[str]) -> int | None:
    """Index of the generated token that follows ``Safety:`` (0 when the prompt ends with it)."""
    if head.rstrip().endswith("Safety:"):
        return 0
    text = head
    for k, piece in enumerate(token_texts):
        text += piece
        if text.rstrip().endswith("Safety:"):
            return k + 1
    return None


def _short(data: Any) -> str:
    text = repr(data)
    return text if len(text) <= 200 else text[:200] + "..."


def transport_error(exc: BaseException, *, backend: str, endpoint: str) -> BackendError | None:
    """Map an HTTP client's transport exception (httpx, httpx2, requests) to a typed error."""
    names = {c.__name__ for c in type(exc).__mro__}
    if names & {"TimeoutException", "InferenceTimeoutError", "Timeout", "TimeoutError"}:
        return BackendTimeoutError(
            f"{backend} endpoint {endpoint} did not answer in time: {exc}", backend=backend
        )
    if names & {"TransportError", "NetworkError", "ConnectError", "ConnectionError"}:
        return BackendConnectionError(
            f"{backend} endpoint {endpoint} cannot be reached: {type(exc).__name__}: {exc}",
            backend=backend,
        )
    return None
