"""Device and dtype defaults, and friendly errors when a checkpoint cannot be loaded.

Misuse fails before anything is downloaded or loaded, with what to do about it: a device that
is not there is a `ConfigurationError` at once (torch would raise a bare ``AssertionError`` when
the weights move), and a Hub id on a machine that cannot reach the Hub is looked up in the local
cache only (one TCP probe, at most ``HUB_PROBE_TIMEOUT`` seconds) instead of after ~46 s of
retried requests.
"""

from __future__ import annotations

import inspect
import os
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..core.deps import require
from ..core.errors import ConfigurationError, ModelLoadError

__all__ = [
    "HUB_PROBE_TIMEOUT",
    "cache_keyword",
    "dtype_kwarg",
    "hub_offline_reason",
    "hub_options",
    "load_or_explain",
    "resolve_device",
    "resolve_dtype",
]

#: Seconds the one TCP probe of the Hub endpoint may take before the Hub counts as unreachable.
HUB_PROBE_TIMEOUT = 1.5
_TRUE = {"1", "true", "yes", "on"}
_PROBE: tuple[float, str | None] | None = None  # (when, reason) of the last probe
_PROBE_TTL_S = 30.0


def resolve_device(device: Any = None) -> Any:
    """``device`` as a ``torch.device``; by default cuda when available, else cpu.

    Raises:
        ConfigurationError: ``device`` is not a device name, or names a device this machine
            does not have (``"cuda"`` without CUDA, ``"cuda:3"`` on a one-GPU machine, ``"mps"``
            off Apple silicon).
    """
    torch = require("torch")
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"device={device!r} is not a device: pass 'cpu', 'cuda', 'cuda:N', 'mps', a "
            "torch.device, or None to choose cuda when available"
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigurationError(
                f"device={device!r} but this machine has no usable CUDA device (torch "
                f"{torch.__version__}, built {'with' if torch.version.cuda else 'without'} CUDA): "
                "pass device='cpu', or device=None to choose cuda only when it is there"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigurationError(
                f"device={device!r} but this machine has {count} CUDA device(s): "
                f"pass cuda:0..cuda:{count - 1}"
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigurationError(
                f"device={device!r} but MPS is not available here: pass device='cpu' or None"
            )
    return dev


_DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32"}


def resolve_dtype(dtype: Any, device: Any, config: Any = None) -> Any:
    """``dtype`` as a ``torch.dtype`` (a dtype, its name, or bf16 / fp16 / half / fp32).

    ``None`` or ``"auto"``: fp32 on the CPU; on a GPU bf16 (what the real checkpoints declare),
    unless ``config`` declares float32, which is then kept (the tiny checkpoints need it: bf16
    blurs their circuits' large attention scores).
    """
    torch = require("torch")
    if dtype is None or dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        declared = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        return (
            torch.float32 if str(declared).removeprefix("torch.") == "float32" else torch.bfloat16
        )
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
        value = getattr(torch, _DTYPE_ALIASES.get(name, name), None)
        if not isinstance(value, torch.dtype):
            raise ConfigurationError(f"unknown dtype {dtype!r}")
        return value
    return dtype


def dtype_kwarg() -> str:
    """The ``from_pretrained`` keyword for the dtype in the installed transformers."""
    transformers = require("transformers")
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def hub_offline_reason() -> str | None:
    """Why the Hugging Face Hub cannot be used now, or None when it may be reachable.

    ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` say so at no cost; otherwise one TCP connect
    to the Hub endpoint (``HF_ENDPOINT``, default huggingface.co) decides, remembered for 30 s.
    Behind an HTTP(S) proxy the probe is skipped (a direct connect proves nothing there).
    """
    global _PROBE
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"{var} is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    now = time.monotonic()
    if _PROBE is not None and now - _PROBE[0] < _PROBE_TTL_S:
        return _PROBE[1]
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    parts = urlsplit(endpoint)
    host = parts.hostname or "huggingface.co"
    port = parts.port or (80 if parts.scheme == "http" else 443)
    reason: str | None = None
    try:
        socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT).close()
    except OSError as exc:
        reason = f"the Hub at {endpoint} cannot be reached from this machine ({exc})"
    _PROBE = (now, reason)
    return reason


def hub_options(model_id: str | os.PathLike[str], kwargs: dict[str, Any]) -> str | None:
    """Make ``kwargs`` (``from_pretrained`` / ``snapshot_download`` options) read only the local
    cache when ``model_id`` is a Hub id and the Hub cannot be reached; returns why, or None.

    A local folder, or an explicit ``local_files_only``, is left as it is.
    """
    if "local_files_only" in kwargs or Path(model_id).expanduser().is_dir():
        return None
    reason = hub_offline_reason()
    if reason is not None:
        kwargs["local_files_only"] = True
    return reason


def load_or_explain(loader: Any, model_id: str, what: str, **kwargs: Any) -> Any:
    """Call ``loader.from_pretrained(model_id, **kwargs)``, turning "not found" into
    `ModelLoadError` with what to do about it.

    A Hub id on a machine without access to the Hub is looked up in the local cache only, so
    that a missing one fails in about a second (`hub_options`), not after the Hub client's
    retries.
    """
    offline = hub_options(model_id, kwargs)
    try:
        return loader.from_pretrained(model_id, **kwargs)
    except (OSError, ValueError) as exc:
        if offline is not None:
            raise ModelLoadError(
                f"could not load the {what} {model_id!r}: it is not a local folder, it is not in "
                f"the local Hugging Face cache, and {offline}. Pass a local folder that holds the "
                "checkpoint, download it once with network access (huggingface-cli download "
                f"{model_id}), or fix the network."
            ) from exc
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
