"""Before loading: can each model named on the command line be found? (used by the CLI)

A local folder must hold a ``config.json``; a Hub id must be in the local Hugging Face cache, or
the Hub must be reachable (offline mode, ``HF_HUB_OFFLINE=1``, counts as unreachable). Every
missing model is named in one `ModelLoadError`, with what to do,
before anything slow starts (an unreachable Hub would otherwise cost about a minute of retries
per file).
"""

from __future__ import annotations

from pathlib import Path

from ..backends.loading import hub_offline_reason
from ..core.errors import ModelLoadError

__all__ = ["TINY_HINT", "check_models", "hub_reachable", "missing_reason"]

#: How to get checkpoints that need no network (the tiny test models).
TINY_HINT = (
    "python -m qwen3guard_integrations.testing .tiny && "
    "qwen3guard demo --gen-model .tiny/gen --stream-model .tiny/stream"
)


def hub_reachable() -> bool:
    """Whether the Hugging Face Hub (``$HF_ENDPOINT`` or huggingface.co) may be used now.

    False in offline mode (``HF_HUB_OFFLINE=1``) or when one TCP probe fails; True behind a proxy
    (a direct probe says nothing there). The same probe the loaders use
    (`hub_offline_reason`), so the CLI and ``from_pretrained`` agree.
    """
    return hub_offline_reason() is None


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # a malformed id: let the loader say what is wrong
        return False
    return isinstance(found, str)


def missing_reason(model: str, *, hub_ok: bool | None = None) -> str | None:
    """Why ``model`` cannot be loaded here, or None when it can (or may be downloaded).

    ``hub_ok`` short-cuts the Hub reachability probe (None: probe when needed).
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return (
            None if (path / "config.json").is_file() else f"the folder {model} has no config.json"
        )
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        return f"there is no folder {model} (and it is not a Hub id of the form owner/name)"
    if _in_hub_cache(model):
        return None
    if hub_ok is None:
        hub_ok = hub_reachable()
    if hub_ok:
        return None
    why = hub_offline_reason() or "the Hugging Face Hub cannot be reached"
    return f"{model} is not in the local Hugging Face cache and {why}"


def check_models(models: dict[str, str], *, example: str | None = None) -> None:
    """Raise one `ModelLoadError` naming every model of ``{flag: model}`` that is missing.

    ``example`` is a command that works without network, added to the message.
    """
    problems: list[tuple[str, str, str]] = []
    need_hub = any(
        not Path(m).expanduser().exists() and m.count("/") == 1 and not _in_hub_cache(m)
        for m in models.values()
    )
    hub_ok = hub_reachable() if need_hub else True  # probe once, only when a download is needed
    for flag, model in models.items():
        reason = missing_reason(model, hub_ok=hub_ok)
        if reason is not None:
            problems.append((flag, model, reason))
    if not problems:
        return
    lines = ["cannot load " + ", ".join(f"{flag} {model}" for flag, model, _ in problems) + ":"]
    lines += [f"  {flag}: {reason}" for flag, _, reason in problems]
    for flag, model, _ in problems:
        source = model if model.count("/") == 1 else "OWNER/NAME"
        lines.append(
            f"Point {flag} at a local copy: download it where there is network "
            f"(hf download {source} --local-dir DIR), copy DIR here and pass {flag} DIR."
        )
    if example:
        lines.append(f"To try it without network, with the tiny test checkpoints: {example}")
    raise ModelLoadError("\n".join(lines))
