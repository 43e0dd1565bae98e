"""Qwen3Guard-Gen behind an OpenAI-compatible server (vLLM, SGLang): raw ``/v1/completions``.

The prompt is rendered on the client and sent as token ids by default (``prompt: [ids]``, which
vLLM and SGLang accept), so the server sees exactly the ids the local backend would run; with
``prompt_as="text"`` it is sent as server-safe text instead. Greedy (``temperature: 0``); level
scores from ``logprobs``. `OpenAIGenBackend.health` reads ``/health`` and ``/v1/models``.
Redirects are never followed; the URL is shown only redacted (`redact_url`).
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from ...core.deps import require
from ...core.errors import BackendError, ConfigurationError
from ...core.gen_answer import GenAnswer
from .answers import Ask
from .engine import RemoteGenBackend
from .http import HttpResult, apost_json, deadline_scope, get, post_json, raise_for_status
from .protocol import RetryPolicy, openai_answer, openai_body
from .secrets import check_headers, check_secret, redact_url, route

__all__ = ["DEFAULT_INPUT_TOKENS", "OpenAIGenBackend", "api_base", "model_context"]

#: The input budget when the server does not say.
DEFAULT_INPUT_TOKENS = 8192


def api_base(base_url: str) -> str:
    """``http://host:8000`` and ``http://host:8000/v1`` both mean ``http://host:8000/v1``."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/") or "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def model_context(models: Any, model: str) -> int | None:
    """The served model's context length from a ``/v1/models`` answer (vLLM: ``max_model_len``)."""
    data = models.get("data") if isinstance(models, dict) else None
    for entry in data if isinstance(data, list) else []:
        if isinstance(entry, dict) and entry.get("id") == model:
            value = entry.get("max_model_len")
            return value if isinstance(value, int) and value > 0 else None
    return None


class OpenAIGenBackend(RemoteGenBackend):
    """A Gen model served as ``model`` behind an OpenAI-compatible API at ``base_url``."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        tokenizer: Any,
        *,
        model: str,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        logprobs: int = 5,
        prompt_as: Literal["ids", "text"] = "ids",
        **kwargs: Any,
    ) -> None:
        if prompt_as not in ("ids", "text"):
            raise ConfigurationError("prompt_as must be 'ids' or 'text'")
        self.httpx = require("httpx", "tgi")
        self.base = api_base(base_url)
        super().__init__(tokenizer, model_id=model, endpoint=redact_url(self.base), **kwargs)
        self.model = model
        self.logprobs = logprobs
        if not logprobs:  # no log-probabilities: no level scores, so no forced steps
            self.plan.forced = None
        self.prompt_as = prompt_as
        self.headers = check_headers(headers)
        api_key = check_secret(api_key, what="api_key")
        if api_key and not any(k.lower() == "authorization" for k in self.headers):
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._http = self.httpx.Client(
            headers=self.headers, timeout=self.timeout, follow_redirects=False
        )

    @classmethod
    def connect(
        cls,
        base_url: str,
        tokenizer: Any,
        *,
        model: str,
        max_input_tokens: int | None = None,
        max_retries: int = 3,
        max_new_tokens: int = 64,
        **kwargs: Any,
    ) -> OpenAIGenBackend:
        """Build the backend, reading the model's context from ``/v1/models`` when the server
        answers (a server that is down now is not an error yet)."""
        limit = None
        if max_input_tokens is None:
            probe = cls(base_url, tokenizer, model=model, max_new_tokens=max_new_tokens, **kwargs)
            try:
                context = model_context(probe.models(), model)
                limit = None if context is None else context - max_new_tokens - 8
            except BackendError:
                pass
            finally:
                probe.close()
        return cls(
            base_url,
            tokenizer,
            model=model,
            max_input_tokens=max_input_tokens or limit or DEFAULT_INPUT_TOKENS,
            retry=RetryPolicy(max_retries=max_retries),
            max_new_tokens=max_new_tokens,
            **kwargs,
        )

    def _body(self, ask: Ask) -> dict[str, Any]:
        ids = ask.ids
        prompt: str | list[int] = (
            list(ids) if self.prompt_as == "ids" else self.renderer.text(ids, fast=False)
        )
        n = self.max_new_tokens if ask.max_new_tokens is None else ask.max_new_tokens
        return openai_body(prompt, model=self.model, max_tokens=n, logprobs=self.logprobs)

    def _answer(self, res: HttpResult, head: str) -> GenAnswer:
        raise_for_status(res, **self._where)
        return openai_answer(res.json(**self._where), head=head, labels=self.labels)

    def _send(self, ask: Ask) -> GenAnswer:
        url = route(self.base, "/completions")
        return self._answer(post_json(self._http, url, self._body(ask), **self._where), ask.head)

    async def _asend(self, ask: Ask, state: dict[str, Any]) -> GenAnswer:
        url = route(self.base, "/completions")
        res = await apost_json(state["http"], url, self._body(ask), **self._where)
        return self._answer(res, ask.head)

    def _new_loop_state(self) -> dict[str, Any]:
        client = self.httpx.AsyncClient(
            headers=self.headers, timeout=self.timeout, follow_redirects=False
        )
        return {"http": client}

    async def _close_loop_state(self, state: dict[str, Any]) -> None:
        await state["http"].aclose()

    # --- health ------------------------------------------------------------------------------

    def _root(self) -> str:
        parts = urlsplit(self.base)
        return urlunsplit((parts.scheme, parts.netloc, "", parts.query, ""))

    def models(self) -> Any:
        """``GET /v1/models`` (raises a typed error when it fails)."""
        where = {"backend": self.name, "endpoint": self.endpoint or ""}
        with deadline_scope(self.timeout):
            res = get(self._http, route(self.base, "/models"), **where)
        raise_for_status(res, **where)
        return res.json(**where)

    def _health_routes(self) -> tuple[str, str]:
        return route(self._root(), "/health"), route(self.base, "/models")

    def _health_info(self, data: Any) -> tuple[dict[str, Any], str | None]:
        entries = data.get("data") if isinstance(data, dict) else None
        ids = [m.get("id") for m in entries or [] if isinstance(m, dict)]
        info = {"models": ids, "max_model_len": model_context(data, self.model)}
        if self.model not in ids:
            return info, f"model {self.model!r} is not served here (served: {ids})"
        return info, None

    def close(self) -> None:
        """Close the sync HTTP client and workers."""
        super().close()
        self._http.close()
