"""Load an official Qwen3Guard-Stream checkpoint into `Qwen3GuardStreamModel`.

No remote code runs: the config is read as a plain Qwen3 config (its extra keys kept), the weights
are read with safetensors (single file or sharded with ``model.safetensors.index.json``) and must
match the network's names exactly: the backbone under ``model.``, the eight head weights at top
level, and ``lm_head.weight`` (unused) tolerated. Any other missing or unexpected key is a
`CheckpointError`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...core.deps import require
from ...core.errors import CheckpointError
from ...core.labels import (
    STREAM_PROMPT_CATEGORY_ORDER,
    STREAM_RESPONSE_CATEGORY_ORDER,
    STREAM_RISK_LEVEL_ORDER,
    Category,
    Level,
)
from ..loading import hub_options, resolve_device, resolve_dtype

__all__ = [
    "IGNORED_WEIGHT_NAMES",
    "LoadedStreamModel",
    "StreamLabels",
    "load_stream_model",
    "read_state_dict",
    "resolve_checkpoint",
]

#: Weights an official checkpoint may hold that the Stream network does not use.
IGNORED_WEIGHT_NAMES: frozenset[str] = frozenset({"lm_head.weight"})


@dataclass(frozen=True)
class StreamLabels:
    """Label order of each head, as the checkpoint's config maps give it (SPEC as fallback)."""

    risk: tuple[Level, ...] = STREAM_RISK_LEVEL_ORDER
    category: tuple[Category, ...] = STREAM_RESPONSE_CATEGORY_ORDER
    query_risk: tuple[Level, ...] = STREAM_RISK_LEVEL_ORDER
    query_category: tuple[Category, ...] = STREAM_PROMPT_CATEGORY_ORDER

    @classmethod
    def from_config(cls, config: Any) -> StreamLabels:
        """Read ``response_risk_level_map`` etc. from ``config``; fall back to SPEC's orders."""

        def read(key: str, size_key: str, parse: Any, fallback: tuple[Any, ...]) -> tuple[Any, ...]:
            raw = getattr(config, key, None)
            size = getattr(config, size_key, None)
            if not raw:
                out = fallback
            else:
                if not isinstance(raw, dict):
                    raise CheckpointError(f"config {key} must be a JSON object, got {raw!r}")
                try:
                    ordered = sorted(raw.items(), key=lambda kv: int(kv[0]))
                    if [int(k) for k, _ in ordered] != list(range(len(ordered))):
                        raise ValueError("keys are not 0..n-1")
                    out = tuple(parse(str(v)) for _, v in ordered)
                except ValueError as exc:
                    raise CheckpointError(f"config {key} is not a label map: {exc}") from None
            if size is not None and int(size) != len(out):
                raise CheckpointError(f"config {size_key}={size} but {key} has {len(out)} labels")
            return out

        return cls(
            risk=read(
                "response_risk_level_map", "num_risk_level", Level.parse, STREAM_RISK_LEVEL_ORDER
            ),
            category=read(
                "response_category_map",
                "num_category",
                Category.parse,
                STREAM_RESPONSE_CATEGORY_ORDER,
            ),
            query_risk=read(
                "query_risk_level_map",
                "num_query_risk_level",
                Level.parse,
                STREAM_RISK_LEVEL_ORDER,
            ),
            query_category=read(
                "query_category_map",
                "num_query_category",
                Category.parse,
                STREAM_PROMPT_CATEGORY_ORDER,
            ),
        )


@dataclass
class LoadedStreamModel:
    """A loaded network with its config, labels, device, dtype and where it came from."""

    model: Any
    config: Any
    labels: StreamLabels
    path: Path
    name: str
    device: Any
    dtype: Any


def resolve_checkpoint(model_id_or_path: str | os.PathLike[str], **hub_kwargs: Any) -> Path:
    """A local folder holding the checkpoint: ``model_id_or_path`` itself or a Hub download.

    Local folders are used as they are. Anything else is taken as a Hub id and resolved with
    ``huggingface_hub.snapshot_download`` (the local cache answers when offline).
    """
    local = Path(model_id_or_path).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise CheckpointError(f"{local} has no config.json", path=str(local))
        return local
    name = str(model_id_or_path)
    if local.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise CheckpointError(
            f"no Stream checkpoint at {name!r}: not a folder and not a Hub id (owner/name)",
            path=name,
        )
    hub = require("huggingface_hub", "transformers")
    patterns = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken"]
    offline = hub_options(name, hub_kwargs)  # no Hub: the local cache only, no retries
    try:
        folder = hub.snapshot_download(name, allow_patterns=patterns, **hub_kwargs)
    except Exception as exc:  # the hub raises many types (offline, 404, gated, auth)
        raise CheckpointError(
            f"cannot find the Stream checkpoint {name!r} locally or on the Hub: "
            f"{type(exc).__name__}: {exc}" + (f" ({offline})" if offline else ""),
            path=name,
        ) from exc
    return Path(folder)


def read_state_dict(path: Path) -> dict[str, Any]:
    """All tensors of the checkpoint in ``path`` (single file or shards listed by the index)."""
    st = require("safetensors.torch", "transformers")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"unreadable shard index {index}: {exc}", path=str(path)
            ) from None
        files = sorted(set(weight_map.values()))
    elif (path / "model.safetensors").is_file():
        weight_map = None
        files = ["model.safetensors"]
    else:
        raise CheckpointError(
            f"{path} has no model.safetensors or model.safetensors.index.json", path=str(path)
        )
    state: dict[str, Any] = {}
    for name in files:
        try:
            part = st.load_file(str(path / name))
        except Exception as exc:
            raise CheckpointError(f"cannot read {path / name}: {exc}", path=str(path)) from exc
        clash = state.keys() & part.keys()
        if clash:
            raise CheckpointError(f"weights stored twice: {sorted(clash)[:5]}", path=str(path))
        state.update(part)
    if weight_map is not None and set(weight_map) != set(state):
        raise CheckpointError(
            "the shard index and the shards disagree on the weight names", path=str(path)
        )
    return state


def _check_keys(expected: set[str], got: set[str], path: Path) -> None:
    missing = sorted(expected - got)
    unexpected = sorted(got - expected - IGNORED_WEIGHT_NAMES)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {missing[:8]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {unexpected[:8]}")
        raise CheckpointError(
            f"{path} is not a Qwen3Guard-Stream checkpoint ({'; '.join(parts)})", path=str(path)
        )


def load_stream_model(
    model_id_or_path: str | os.PathLike[str],
    *,
    device: Any = None,
    dtype: Any = None,
    **hub_kwargs: Any,
) -> LoadedStreamModel:
    """Load a Stream checkpoint (Hub id or folder) strictly, in eval mode, on ``device``."""
    torch = require("torch")
    transformers = require("transformers")
    from .model import Qwen3GuardStreamModel

    path = resolve_checkpoint(model_id_or_path, **hub_kwargs)
    try:
        config = transformers.AutoConfig.from_pretrained(str(path))
    except Exception as exc:
        raise CheckpointError(f"cannot read {path / 'config.json'}: {exc}", path=str(path)) from exc
    for key in ("guard_inner_size", "num_risk_level", "num_category"):
        if getattr(config, key, None) is None:
            raise CheckpointError(f"config has no {key!r}: not a Stream checkpoint", path=str(path))
    labels = StreamLabels.from_config(config)
    dev = resolve_device(device)  # a device that is not there: ConfigurationError, at once
    dt = resolve_dtype(dtype, dev, config)
    state = read_state_dict(path)
    with torch.device(dev):
        model = Qwen3GuardStreamModel(config)
    _check_keys(set(model.state_dict()), set(state), path)
    for name in IGNORED_WEIGHT_NAMES:
        state.pop(name, None)
    for p in model.parameters():  # parameters only: rotary buffers stay fp32
        p.data = p.data.to(dt)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"{path}: {exc}", path=str(path)) from None
    model.eval()
    return LoadedStreamModel(model, config, labels, path, str(model_id_or_path), dev, dt)
