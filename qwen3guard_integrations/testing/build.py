"""Build the tiny Qwen3Guard-Gen and -Stream checkpoints (weights computed, not trained), with
an on-disk cache."""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.deps import require
from ..core.labels import (
    STREAM_PROMPT_CATEGORY_ORDER,
    STREAM_RESPONSE_CATEGORY_ORDER,
    STREAM_RISK_LEVEL_ORDER,
)
from .circuit import HEAD_DIM, MAX_POSITIONS, ROPE_THETA, Circuit
from .circuit_build import gen_circuit, stream_circuit, stream_head_weights
from .templates import GEN_CHAT_TEMPLATE, STREAM_CHAT_TEMPLATE
from .tokenizer import qwen3_tokenizer

__all__ = [
    "BuildOptions",
    "TinyCheckpoints",
    "build_gen_checkpoint",
    "build_stream_checkpoint",
    "build_tiny_checkpoints",
    "cache_dir",
]

_BUILDER_VERSION = "2"
_SOURCES = (
    "build.py",
    "circuit.py",
    "circuit_build.py",
    "contract.py",
    "templates.py",
    "tokenizer.py",
)


@dataclass(frozen=True)
class BuildOptions:
    """Everything the builder's output depends on (besides its source code and library versions)."""

    vocab_limit: int = 16384
    guard_inner_size: int = 32


@dataclass(frozen=True)
class TinyCheckpoints:
    """Paths of a built pair of checkpoints."""

    root: Path
    gen: Path
    stream: Path


def cache_dir() -> Path:
    """Where built checkpoints are cached (``QWEN3GUARD_TINY_CACHE`` overrides)."""
    env = os.environ.get("QWEN3GUARD_TINY_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qwen3guard_integrations" / "tiny-checkpoints"


def _cache_key(options: BuildOptions) -> str:
    torch = require("torch")
    transformers = require("transformers")
    h = hashlib.sha256()
    h.update(_BUILDER_VERSION.encode())
    h.update(json.dumps(asdict(options), sort_keys=True).encode())
    h.update(torch.__version__.split("+")[0].encode())
    h.update(transformers.__version__.encode())
    here = Path(__file__).parent
    for path in [*(here / name for name in _SOURCES), here.parent / "backends/stream/model.py"]:
        h.update(_code_fingerprint(path.read_text(encoding="utf-8")).encode())
    return h.hexdigest()[:16]


def _code_fingerprint(source: str) -> str:
    """The code of a module without its docstrings, comments, layout or import lines.

    Only what can change the trained weights goes into the cache key: a moved file, a
    reformatted line or an edited docstring keeps the cached checkpoints.
    """
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body[0] = ast.Pass()
    tree.body = [n for n in tree.body if not isinstance(n, (ast.Import, ast.ImportFrom))]
    return ast.dump(tree, annotate_fields=False)


def _sizes(circuit: Circuit) -> tuple[int, int, int]:
    """hidden, heads, intermediate sizes that fit the circuit (rounded up)."""
    hidden = int(math.ceil((len(circuit.dims) + 1) / 32) * 32)
    heads = max(4, circuit.heads_needed())
    inter = int(math.ceil(max(1, circuit.intermediate_needed()) / 32) * 32)
    return hidden, heads, inter


def _vocab_size(tok: Any) -> int:
    """The embedding rows: the tokenizer's ids rounded up to a multiple of 64."""
    return int(math.ceil(len(tok) / 64) * 64)


def _config(tok: Any, hidden: int, heads: int, inter: int, **extra: Any) -> Any:
    transformers = require("transformers")
    return transformers.Qwen3Config(
        vocab_size=_vocab_size(tok),
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=HEAD_DIM,
        max_position_embeddings=MAX_POSITIONS,
        rope_theta=ROPE_THETA,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        use_cache=True,
        torch_dtype="float32",
        **extra,
    )


def _save_tokenizer(tok: Any, path: Path, template: str) -> None:
    tok.chat_template = template
    tok.save_pretrained(str(path))
    cfg_path = path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "Qwen2Tokenizer"
    cfg["chat_template"] = template
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def build_gen_checkpoint(path: Path, options: BuildOptions, log: Callable[[str], None]) -> None:
    """Compute the tiny Gen model and write it in the Qwen3Guard-Gen on-disk format."""
    transformers = require("transformers")
    start = time.monotonic()
    tok = qwen3_tokenizer(options.vocab_limit, chat_template=GEN_CHAT_TEMPLATE)
    circuit, grammar = gen_circuit(tok, _vocab_size(tok))
    hidden, heads, inter = _sizes(circuit)
    config = _config(tok, hidden, heads, inter, architectures=["Qwen3ForCausalLM"])
    weights = circuit.weights(hidden, heads, inter)
    # the logits read only the answer-grammar dims (tied embeddings: token t's own id feature)
    weights["model.norm.weight"] = circuit.readout_norm(
        hidden, [circuit.feature(("ID", t)) for t in grammar], gain=3.0
    )
    weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    model = transformers.Qwen3ForCausalLM(config)
    model.load_state_dict(weights, strict=True)
    model.eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path), safe_serialization=True)
    transformers.GenerationConfig(
        eos_token_id=[tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id],
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.pad_token_id,
        do_sample=False,
        max_new_tokens=128,
    ).save_pretrained(str(path))
    _save_tokenizer(tok, path, GEN_CHAT_TEMPLATE)
    log(
        f"gen: {len(circuit.dims)} dims, {heads} heads, {inter} units "
        f"({time.monotonic() - start:.1f}s)"
    )


def _stream_label_maps() -> dict[str, Any]:
    def names(order: Any) -> dict[str, str]:
        return {str(i): v.value for i, v in enumerate(order)}

    return {
        "num_risk_level": len(STREAM_RISK_LEVEL_ORDER),
        "num_category": len(STREAM_RESPONSE_CATEGORY_ORDER),
        "num_query_risk_level": len(STREAM_RISK_LEVEL_ORDER),
        "num_query_category": len(STREAM_PROMPT_CATEGORY_ORDER),
        "response_risk_level_map": names(STREAM_RISK_LEVEL_ORDER),
        "response_category_map": names(STREAM_RESPONSE_CATEGORY_ORDER),
        "query_risk_level_map": names(STREAM_RISK_LEVEL_ORDER),
        "query_category_map": names(STREAM_PROMPT_CATEGORY_ORDER),
    }


def build_stream_checkpoint(path: Path, options: BuildOptions, log: Callable[[str], None]) -> None:
    """Compute the tiny Stream model and write it in the Qwen3Guard-Stream on-disk format."""
    require("torch")
    safetensors_torch = require("safetensors.torch", "transformers")
    from ..backends.stream.model import Qwen3GuardStreamModel

    start = time.monotonic()
    tok = qwen3_tokenizer(options.vocab_limit, chat_template=STREAM_CHAT_TEMPLATE)
    circuit, head_dims = stream_circuit(tok, _vocab_size(tok))
    hidden, heads, inter = _sizes(circuit)
    inner = options.guard_inner_size
    config = _config(
        tok,
        hidden,
        heads,
        inter,
        architectures=["Qwen3ForGuardModel"],
        guard_inner_size=inner,
        **_stream_label_maps(),
    )
    weights = circuit.weights(hidden, heads, inter)
    weights.update(stream_head_weights(head_dims, hidden, inner))
    model = Qwen3GuardStreamModel(config)
    model.load_state_dict(weights, strict=True)  # the shapes are the model's own
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    safetensors_torch.save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    cfg = config.to_dict()
    cfg["architectures"] = ["Qwen3ForGuardModel"]
    cfg["rope_theta"] = ROPE_THETA
    (path / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    _save_tokenizer(tok, path, STREAM_CHAT_TEMPLATE)
    log(
        f"stream: {len(circuit.dims)} dims, {heads} heads, {inter} units "
        f"({time.monotonic() - start:.1f}s)"
    )


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes building the same checkpoints (POSIX; no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_into(cached: Path, key: str, options: BuildOptions, say: Callable[[str], None]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir()))
    try:
        say(f"building tiny checkpoints into {cached}")
        build_gen_checkpoint(tmp / "gen", options, say)
        build_stream_checkpoint(tmp / "stream", options, say)
        if cached.exists():
            shutil.rmtree(cached)
        os.replace(tmp, cached)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def build_tiny_checkpoints(
    root: str | os.PathLike[str] | None = None,
    options: BuildOptions | None = None,
    *,
    use_cache: bool = True,
    log: Callable[[str], None] | None = None,
) -> TinyCheckpoints:
    """Build both tiny checkpoints (or reuse cached ones) and return their paths.

    With ``root`` given, the checkpoints are written (copied from the cache when present) to
    ``root/gen`` and ``root/stream``; otherwise the cache folder itself is returned.
    """
    options = options or BuildOptions()
    say = log or (lambda _msg: None)
    key = _cache_key(options)
    cached = cache_dir() / key

    def ready() -> bool:
        return (cached / "gen").is_dir() and (cached / "stream").is_dir()

    if not (use_cache and ready()):
        cache_dir().mkdir(parents=True, exist_ok=True)
        with _build_lock(cache_dir() / f".{key}.lock"):
            if not (use_cache and ready()):  # another process may have built it meanwhile
                _build_into(cached, key, options, say)
    if root is None:
        return TinyCheckpoints(cached, cached / "gen", cached / "stream")
    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    for part in ("gen", "stream"):
        if (out / part).exists():
            shutil.rmtree(out / part)
        shutil.copytree(cached / part, out / part)
    return TinyCheckpoints(out, out / "gen", out / "stream")
