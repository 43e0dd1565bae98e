"""Building the guard server from model paths, and running it under uvicorn."""

from __future__ import annotations

from typing import Any

from ..core.deps import require
from ..core.errors import ConfigurationError
from .app import create_app
from .limits import ServerLimits

__all__ = ["build_app", "load_guards", "serve"]


def load_guards(
    gen_model: str | None = None,
    stream_model: str | None = None,
    *,
    device: Any = None,
    gen_url: str | None = None,
    gen_backend: str = "openai",
    gen_tokenizer: str | None = None,
) -> tuple[Any, Any]:
    """The Gen guard (local, or in front of a vLLM / TGI cluster at ``gen_url``) and the Stream
    guard the server runs."""
    from ..guards.gen import Qwen3Guard
    from ..guards.stream import Qwen3StreamGuard

    if gen_model is None and stream_model is None:
        raise ConfigurationError("give --gen-model, --stream-model or both")
    gen = None
    if gen_model is not None and gen_url is not None:
        if gen_backend == "tgi":
            gen = Qwen3Guard.from_tgi(gen_url, tokenizer=gen_tokenizer or gen_model)
        else:
            gen = Qwen3Guard.from_openai(gen_url, model=gen_model, tokenizer=gen_tokenizer)
    elif gen_model is not None:
        gen = Qwen3Guard.from_pretrained(gen_model, device=device)
    stream = (
        Qwen3StreamGuard.from_pretrained(stream_model, device=device)
        if stream_model is not None
        else None
    )
    return gen, stream


def build_app(
    gen_model: str | None = None,
    stream_model: str | None = None,
    *,
    device: Any = None,
    gen_url: str | None = None,
    gen_backend: str = "openai",
    gen_tokenizer: str | None = None,
    auth_token: str | None = None,
    limits: ServerLimits | None = None,
    replica: str | None = None,
) -> Any:
    """Load the models and return the app (`create_app`)."""
    gen, stream = load_guards(
        gen_model,
        stream_model,
        device=device,
        gen_url=gen_url,
        gen_backend=gen_backend,
        gen_tokenizer=gen_tokenizer,
    )
    return create_app(gen, stream, auth_token=auth_token, limits=limits, replica=replica)


def serve(app: Any, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run ``app`` under uvicorn until interrupted (WebSockets through the ``websockets``
    library)."""
    uvicorn = require("uvicorn", "serve")
    max_size = app.state.guard.limits.max_message_bytes
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        ws="websockets-sansio",
        ws_max_size=4 * max_size + 1024,  # bigger frames get a typed error from the app
        lifespan="off",
    )
