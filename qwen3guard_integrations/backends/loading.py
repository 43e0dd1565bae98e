"""Device and dtype defaults, and friendly errors when a checkpoint cannot be loaded."""

from __future__ import annotations

import inspect
from typing import Any

from ..core.deps import require
from ..core.errors import ModelLoadError

__all__ = [
    "cache_keyword",
    "dtype_kwarg",
    "load_or_explain",
    "resolve_device",
    "resolve_dtype",
]


def resolve_device(device: Any = None) -> Any:
    """``device`` as a ``torch.device``; by default cuda when available, else cpu."""
    torch = require("torch")
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: Any, device: Any) -> Any:
    """``dtype`` as a ``torch.dtype``; by default bf16 on GPU and fp32 on CPU."""
    torch = require("torch")
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        value = getattr(torch, dtype.replace("torch.", ""), None)
        if not isinstance(value, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}")
        return value
    return dtype


def dtype_kwarg() -> str:
    """The ``from_pretrained`` keyword for the dtype in the installed transformers."""
    transformers = require("transformers")
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def load_or_explain(loader: Any, model_id: str, what: str, **kwargs: Any) -> Any:
    """Call ``loader.from_pretrained(model_id, **kwargs)``, turning "not found" into
    `ModelLoadError` with what to do about it."""
    try:
        return loader.from_pretrained(model_id, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"could not load the {what} {model_id!r}: {exc}. Pass a local folder that holds the "
            "checkpoint, or a Hub id with network access (set HF_HUB_OFFLINE=1 to use only the "
            "local cache)."
        ) from exc


_CACHE_KW: str | None = None


def cache_keyword() -> str:
    """The keyword ``Qwen3Model.forward`` takes the KV cache under (``cache`` in transformers
    5.24+, ``past_key_values`` before)."""
    global _CACHE_KW
    if _CACHE_KW is None:
        transformers = require("transformers")
        params = inspect.signature(transformers.Qwen3Model.forward).parameters
        _CACHE_KW = "cache" if "cache" in params else "past_key_values"
    return _CACHE_KW
