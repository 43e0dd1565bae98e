"""Build (train) the tiny Qwen3Guard-Gen and -Stream checkpoints, with an on-disk cache."""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.deps import require
from .build_stream import build_stream_checkpoint
from .contract import expected_prompt, expected_response
from .corpus import Sampler
from .templates import GEN_CHAT_TEMPLATE
from .tokenizer import qwen3_tokenizer
from .training import (
    BuildOptions,
    neutralize_unseen,
    pad,
    qwen3_config,
    random_token_text,
    save_tokenizer,
    schedule,
    shared_prefix_hidden,
)

__all__ = [
    "BuildOptions",
    "TinyCheckpoints",
    "build_gen_checkpoint",
    "build_stream_checkpoint",
    "build_tiny_checkpoints",
    "cache_dir",
    "gen_answer",
]

_BUILDER_VERSION = "1"
_SOURCES = (
    "build.py",
    "build_stream.py",
    "contract.py",
    "corpus.py",
    "templates.py",
    "tokenizer.py",
    "training.py",
)


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


def gen_answer(messages: list[dict[str, str]]) -> str:
    """The answer the tiny Gen model is trained to write for ``messages`` (contract)."""
    turns = [m for m in messages if m["role"] != "system"]
    if turns[-1]["role"] == "assistant":
        exp = expected_response(turns[-1]["content"])
        cats = ", ".join(c.value for c in exp.categories) or "None"
        refusal = "Yes" if exp.refusal else "No"
        return f"Safety: {exp.level.value}\nCategories: {cats}\nRefusal: {refusal}"
    last_user = next(m for m in reversed(turns) if m["role"] == "user")
    exp = expected_prompt(last_user["content"])
    cats = ", ".join(c.value for c in exp.categories) or "None"
    return f"Safety: {exp.level.value}\nCategories: {cats}"


def _refusal_drill(model: Any, tok: Any, sampler: Sampler, n: int, pad_id: int) -> Any:
    """An auxiliary loss on short ``ASSISTANT: ...\nRefusal:`` texts (not the template).

    In the full template the refusal line sits far from the response, after the other answer
    lines, and a small model settles on the prior there before its attention finds "I can't";
    on these short texts it learns at once what a refusal looks like, and the skill carries over
    to the ``Refusal:`` line of the real answer.
    """
    torch = require("torch")
    rows: list[list[int]] = []
    labels: list[int] = []
    for _ in range(n):
        answer = sampler.response_text(0.0)  # no triggers: this drill is about refusals only
        rows.append(tok(f"ASSISTANT: {answer}\nRefusal:", add_special_tokens=False)["input_ids"])
        word = " Yes" if expected_response(answer).refusal else " No"
        labels.append(tok(word, add_special_tokens=False)["input_ids"][0])
    ids, mask = pad(rows, pad_id)
    last = mask.sum(dim=1) - 1
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    logits = model.lm_head(hidden[torch.arange(n), last])
    return torch.nn.functional.cross_entropy(logits, torch.tensor(labels))


def _answer_parts(answer: str) -> list[tuple[str, float]]:
    """Split an answer on pre-token boundaries into (piece, loss weight); 0 marks format pieces."""
    parts: list[tuple[str, float]] = []
    for i, line in enumerate(answer.split("\n")):
        key, _, value = line.partition(":")
        parts.append((("\n" if i else "") + key + ":", 0.0))
        parts.append((value, 1.0))
    parts.append(("<|im_end|>", 0.0))
    return parts


def build_gen_checkpoint(path: Path, options: BuildOptions, log: Callable[[str], None]) -> None:
    """Train the tiny Gen model and write it in the Qwen3Guard-Gen on-disk format."""
    torch = require("torch")
    transformers = require("transformers")
    tok = qwen3_tokenizer(options.vocab_limit, chat_template=GEN_CHAT_TEMPLATE)
    config = qwen3_config(options, tok, architectures=["Qwen3ForCausalLM"])
    torch.manual_seed(options.seed)
    model = transformers.Qwen3ForCausalLM(config)
    model.train()
    sampler = Sampler(options.seed, random_token_text(tok, options.vocab_limit))
    drill = Sampler(options.seed + 2, random_token_text(tok, options.vocab_limit))
    opt = torch.optim.AdamW(model.parameters(), lr=options.gen_lr, weight_decay=0.0)
    pad_id = tok.pad_token_id
    seen: set[int] = set()
    start = time.monotonic()
    total = options.gen_steps
    rng = random.Random(options.seed)
    for step in range(total):
        rows: list[list[int]] = []
        targets: list[tuple[int, int, int, float]] = []  # (row, position, target id, weight)
        batch = options.gen_batch
        half = batch // 2
        for b in range(batch):
            convo = sampler.prompt_conversation() if b < half else sampler.response_conversation()
            prefix = tok.apply_chat_template(convo, tokenize=False, add_generation_prompt=True)
            p_ids = tok(prefix, add_special_tokens=False)["input_ids"]
            ids = list(p_ids)
            for part, weight in _answer_parts(gen_answer(convo)):
                part_ids = tok(part, add_special_tokens=False)["input_ids"]
                for t in part_ids:
                    # format tokens are trivial to learn: train on a quarter of them per step
                    if weight or rng.random() < 0.25:
                        targets.append((b, len(ids) - 1, t, weight or 1.0))
                    ids.append(t)
            rows.append(ids)
            seen.update(ids)
        for group in opt.param_groups:
            group["lr"] = schedule(step, total, options.gen_lr)
        hiddens = [
            shared_prefix_hidden(model.model, rows[:half], pad_id),
            shared_prefix_hidden(model.model, rows[half:], pad_id),
        ]
        picked = []
        for second, (h, shared) in enumerate(hiddens):
            sel = [
                (t[0] - second * half, t[1] - shared) for t in targets if (t[0] >= half) == second
            ]
            picked.append(h[[x[0] for x in sel], [x[1] for x in sel]])
        ordered = [t for t in targets if t[0] < half] + [t for t in targets if t[0] >= half]
        y = torch.tensor([t[2] for t in ordered])
        w = torch.tensor([t[3] for t in ordered])
        logits = model.lm_head(torch.cat(picked))
        loss = (torch.nn.functional.cross_entropy(logits, y, reduction="none") * w).sum() / w.sum()
        loss = loss + _refusal_drill(model, tok, drill, options.gen_batch // 4, pad_id)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == total - 1:
            log(f"gen step {step:4d} loss {loss.item():.4f} ({time.monotonic() - start:.0f}s)")
    neutralize_unseen(model.model.embed_tokens.weight, seen)
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
    save_tokenizer(tok, path, GEN_CHAT_TEMPLATE)


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
    torch = require("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir()))
    try:
        say(f"building tiny checkpoints into {cached}")
        build_gen_checkpoint(tmp / "gen", options, say)
        build_stream_checkpoint(tmp / "stream", options, say)
        if cached.exists():
            shutil.rmtree(cached)
        os.replace(tmp, cached)
    finally:
        torch.set_num_threads(threads)
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
