"""Qwen3Guard-Gen behind Text Generation Inference (TGI), through ``huggingface_hub``.

The prompt is rendered on the client (TGI's chat route would cut a response check's prompt short)
and sent to ``/generate`` with explicit greedy parameters via ``InferenceClient`` /
``AsyncInferenceClient``; level scores come from the ``top_n_tokens`` details. ``/info`` gives the
input limit and ``max_client_batch_size`` (which bounds the concurrent requests);
`TGIGenBackend.health` reads ``/health`` and ``/info``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ...core.deps import require
from ...core.errors import BackendError, BackendProtocolError
from ...core.gen_answer import GenAnswer
from .engine import RemoteGenBackend
from .http import get, raise_for_status
from .protocol import RetryPolicy, error_from_body, tgi_answer, tgi_body, transport_error

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
        self.hub = require("huggingface_hub", "tgi")
        self.httpx = require("httpx", "tgi")
        self.url = url.rstrip("/")
        super().__init__(tokenizer, model_id=model_id or self.url, endpoint=self.url, **kwargs)
        self.headers = dict(headers or {})
        self.token = token
        self.top_n_tokens = top_n_tokens
        body = tgi_body("", max_new_tokens=self.max_new_tokens, top_n_tokens=top_n_tokens)
        #: the /generate parameters, the same for every request
        self._params = {k: v for k, v in body["parameters"].items() if v is not None}
        self._client = self.hub.InferenceClient(
            model=self.url + "/generate", headers=self.headers, token=token, timeout=self.timeout
        )
        self._http = self.httpx.Client(headers=self._auth_headers(), timeout=self.timeout)

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

    def _send(self, ids: Sequence[int], head: str) -> GenAnswer:
        prompt = self.renderer.text(ids, fast=False)
        try:
            out = self._client.text_generation(prompt, **self._params)
        except Exception as exc:
            raise self._error(exc) from exc
        return tgi_answer(_plain(out), head=head, labels=self.labels)

    async def _asend(self, ids: Sequence[int], head: str, state: dict[str, Any]) -> GenAnswer:
        prompt = self.renderer.text(ids, fast=False)
        try:
            out = await state["client"].text_generation(prompt, **self._params)
        except Exception as exc:
            raise self._error(exc) from exc
        return tgi_answer(_plain(out), head=head, labels=self.labels)

    def _new_loop_state(self) -> dict[str, Any]:
        client = self.hub.AsyncInferenceClient(
            model=self.url + "/generate",
            headers=self.headers,
            token=self.token,
            timeout=self.timeout,
        )
        http = self.httpx.AsyncClient(headers=self._auth_headers(), timeout=self.timeout)
        return {"client": client, "http": http}

    async def _close_loop_state(self, state: dict[str, Any]) -> None:
        await state["client"].close()
        await state["http"].aclose()

    def _error(self, exc: Exception) -> BackendError:
        """The typed error for whatever ``huggingface_hub`` raised."""
        http_error = exc if hasattr(exc, "response") else exc.__cause__
        response = getattr(http_error, "response", None)
        if response is not None and getattr(response, "status_code", None) is not None:
            err = error_from_body(
                int(response.status_code), response.content, backend=self.name, endpoint=self.url
            )
            err.retry_headers = dict(response.headers)
            return err
        mapped = transport_error(exc, backend=self.name, endpoint=self.url)
        if mapped is not None:
            return mapped
        if isinstance(exc, ValueError):  # the body was not JSON, or not the TGI shape
            return BackendProtocolError(
                f"tgi endpoint {self.url} answered with a malformed body: {exc}", backend=self.name
            )
        return BackendError(
            f"tgi request to {self.url} failed: {type(exc).__name__}: {exc}", backend=self.name
        )

    # --- health ------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """``GET /info`` (raises a typed error when it fails)."""
        res = get(self._http, self.url + "/info", backend=self.name, endpoint=self.url)
        raise_for_status(res, backend=self.name, endpoint=self.url)
        data = res.json(backend=self.name, endpoint=self.url)
        if not isinstance(data, dict):
            raise BackendProtocolError("tgi /info is not a JSON object", backend=self.name)
        return data

    def _health_routes(self) -> tuple[str, str]:
        return self.url + "/health", self.url + "/info"

    def _health_info(self, data: Any) -> tuple[dict[str, Any], str | None]:
        if not isinstance(data, dict):
            return {}, "/info is not a JSON object"
        return data, None

    def close(self) -> None:
        """Close the sync HTTP clients and workers."""
        super().close()
        self._http.close()


def _plain(obj: Any) -> Any:
    """``huggingface_hub`` output types (dicts or dataclasses, by version) as plain data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return obj
