"""Qwen3Guard-Gen behind Text Generation Inference (TGI): raw ``/generate`` over ``httpx``.

The prompt is rendered on the client (TGI's chat route would cut a response check's prompt short)
and sent to ``/generate`` with explicit greedy parameters; level scores come from the
``top_n_tokens`` details. ``/info`` gives the input limit and ``max_client_batch_size`` (which
bounds the concurrent requests); `TGIGenBackend.health` reads ``/health`` and ``/info`` through
the same client as the checks, so what health reports is what checks meet.

What goes where: redirects are never followed (a 3xx is an error, so the user's text, the
headers and the verdict never involve another host); the token stored by
``huggingface-cli login`` is sent only to Hugging Face's own ``https`` endpoints (an explicit
``token=`` goes to the URL given); ``HF_HUB_OFFLINE`` (which is about the Hub, not about your
server) changes nothing.
"""

from __future__ import annotations

from typing import Any

from ...core.deps import require
from ...core.errors import BackendError, BackendProtocolError
from ...core.gen_answer import GenAnswer
from .answers import Ask
from .engine import RemoteGenBackend
from .http import HttpResult, apost_json, deadline_scope, get, post_json, raise_for_status
from .protocol import RetryPolicy, tgi_answer, tgi_body
from .secrets import check_headers, check_secret, is_hugging_face_host, redact_url, route

__all__ = ["DEFAULT_INPUT_TOKENS", "TGIGenBackend", "tgi_limits"]

#: The input budget when the server does not say (TGI's own default ``max_input_tokens``).
DEFAULT_INPUT_TOKENS = 4095


def tgi_limits(info: Any, max_new_tokens: int) -> tuple[int | None, int | None]:
    """From a ``/info`` answer: the prompt budget and ``max_client_batch_size`` (None if absent)."""
    if not isinstance(info, dict):
        return None, None
    limits = [
        v
        for v in (info.get("max_input_tokens"), info.get("max_input_length"))
        if isinstance(v, int) and v > 0
    ]
    total = info.get("max_total_tokens")
    if isinstance(total, int) and total > max_new_tokens:
        limits.append(total - max_new_tokens)
    batch = info.get("max_client_batch_size")
    return (min(limits) if limits else None), (
        batch if isinstance(batch, int) and batch > 0 else None
    )


class TGIGenBackend(RemoteGenBackend):
    """A Gen model served by TGI at ``url``; ``tokenizer`` is the model's tokenizer (loaded)."""

    name = "tgi"

    def __init__(
        self,
        url: str,
        tokenizer: Any,
        *,
        model_id: str | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        top_n_tokens: int = 5,
        **kwargs: Any,
    ) -> None:
        self.httpx = require("httpx", "tgi")
        self.url = url.rstrip("/")
        shown = redact_url(self.url)
        super().__init__(tokenizer, model_id=model_id or shown, endpoint=shown, **kwargs)
        self.headers = check_headers(headers)
        self.token = check_secret(token, what="token")
        if self.token is None and is_hugging_face_host(self.url):
            self.token = _stored_hf_token()
        self.top_n_tokens = top_n_tokens
        if not top_n_tokens:  # no log-probabilities: no level scores, so no forced steps
            self.plan.forced = None
        body = tgi_body("", max_new_tokens=self.max_new_tokens, top_n_tokens=top_n_tokens)
        #: the /generate parameters, the same for every request
        self._params = {k: v for k, v in body["parameters"].items() if v is not None}
        self._http = self.httpx.Client(
            headers=self._auth_headers(), timeout=self.timeout, follow_redirects=False
        )

    @classmethod
    def connect(
        cls,
        url: str,
        tokenizer: Any,
        *,
        max_input_tokens: int | None = None,
        max_concurrency: int = 16,
        max_retries: int = 3,
        max_new_tokens: int = 64,
        **kwargs: Any,
    ) -> TGIGenBackend:
        """Build the backend, reading the input limit and ``max_client_batch_size`` from ``/info``
        when the server answers (a server that is down now is not an error yet: checks will
        fail closed until it is back)."""
        limit, batch = None, None
        if max_input_tokens is None or max_concurrency > 1:
            probe = cls(url, tokenizer, max_new_tokens=max_new_tokens, **kwargs)
            try:
                limit, batch = tgi_limits(probe.info(), max_new_tokens)
            except BackendError:
                pass
            finally:
                probe.close()
        return cls(
            url,
            tokenizer,
            max_input_tokens=max_input_tokens or limit or DEFAULT_INPUT_TOKENS,
            max_concurrency=min(max_concurrency, batch or max_concurrency),
            retry=RetryPolicy(max_retries=max_retries),
            max_new_tokens=max_new_tokens,
            **kwargs,
        )

    def _auth_headers(self) -> dict[str, str]:
        out = dict(self.headers)
        if self.token and not any(k.lower() == "authorization" for k in out):
            out["Authorization"] = f"Bearer {self.token}"
        return out

    # --- one request -------------------------------------------------------------------------

    def _body(self, ask: Ask) -> dict[str, Any]:
        params = self._params
        if ask.max_new_tokens is not None:
            params = {**params, "max_new_tokens": ask.max_new_tokens}
        return {"inputs": self.renderer.text(ask.ids, fast=False), "parameters": params}

    def _answer(self, res: HttpResult, head: str) -> GenAnswer:
        raise_for_status(res, **self._where)
        return tgi_answer(res.json(**self._where), head=head, labels=self.labels)

    def _send(self, ask: Ask) -> GenAnswer:
        res = post_json(self._http, route(self.url, "/generate"), self._body(ask), **self._where)
        return self._answer(res, ask.head)

    async def _asend(self, ask: Ask, state: dict[str, Any]) -> GenAnswer:
        url = route(self.url, "/generate")
        res = await apost_json(state["http"], url, self._body(ask), **self._where)
        return self._answer(res, ask.head)

    def _new_loop_state(self) -> dict[str, Any]:
        http = self.httpx.AsyncClient(
            headers=self._auth_headers(), timeout=self.timeout, follow_redirects=False
        )
        return {"http": http}

    async def _close_loop_state(self, state: dict[str, Any]) -> None:
        await state["http"].aclose()

    # --- health ------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """``GET /info`` (raises a typed error when it fails)."""
        where = {"backend": self.name, "endpoint": self.endpoint or ""}
        with deadline_scope(self.timeout):
            res = get(self._http, route(self.url, "/info"), **where)
        raise_for_status(res, **where)
        data = res.json(**where)
        if not isinstance(data, dict):
            raise BackendProtocolError("tgi /info is not a JSON object", backend=self.name)
        return data

    def _health_routes(self) -> tuple[str, str]:
        return route(self.url, "/health"), route(self.url, "/info")

    def _health_info(self, data: Any) -> tuple[dict[str, Any], str | None]:
        if not isinstance(data, dict):
            return {}, "/info is not a JSON object"
        return data, None

    def close(self) -> None:
        """Close the sync HTTP clients and workers."""
        super().close()
        self._http.close()


def _stored_hf_token() -> str | None:
    """The token ``huggingface-cli login`` stored (or ``HF_TOKEN``), when ``huggingface_hub`` is
    installed; only ever asked for Hugging Face's own hosts."""
    try:
        from huggingface_hub import get_token
    except ImportError:
        return None
    token = get_token()
    return check_secret(token, what="the stored Hugging Face token") if token else None
