"""Build (train) the tiny Qwen3Guard-Gen and -Stream checkpoints, with an on-disk cache."""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..backends.loading import cache_keyword
from ..core.deps import require
from ..core.labels import (
    STREAM_PROMPT_CATEGORY_ORDER,
    STREAM_RESPONSE_CATEGORY_ORDER,
    STREAM_RISK_LEVEL_ORDER,
    Level,
)
from .contract import expected_prompt, expected_response, expected_stream_levels
from .corpus import Sampler
from .templates import GEN_CHAT_TEMPLATE, STREAM_CHAT_TEMPLATE
from .tokenizer import qwen3_tokenizer

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
_SOURCES = ("build.py", "contract.py", "corpus.py", "templates.py", "tokenizer.py")


@dataclass(frozen=True)
class BuildOptions:
    """Everything the builder's output depends on (besides its source code and library versions)."""

    seed: int = 0
    vocab_limit: int = 16384
    hidden_size: int = 64
    intermediate_size: int = 192
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 16
    max_position_embeddings: int = 4096
    guard_inner_size: int = 32
    rope_theta: float = 1_000_000.0
    gen_steps: int = 460
    gen_batch: int = 32
    gen_lr: float = 6e-3
    stream_steps: int = 330
    stream_batch: int = 24
    stream_lr: float = 4e-3
    threads: int = 2


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
    ids, mask = _pad(rows, pad_id)
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


def _qwen3_config(options: BuildOptions, tok: Any, **extra: Any) -> Any:
    transformers = require("transformers")
    vocab = int(math.ceil(len(tok) / 64) * 64)
    return transformers.Qwen3Config(
        vocab_size=vocab,
        hidden_size=options.hidden_size,
        intermediate_size=options.intermediate_size,
        num_hidden_layers=options.num_layers,
        num_attention_heads=options.num_heads,
        num_key_value_heads=options.num_kv_heads,
        head_dim=options.head_dim,
        max_position_embeddings=options.max_position_embeddings,
        rope_theta=options.rope_theta,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        use_cache=True,
        **extra,
    )


def _random_token_text(tok: Any, limit: int) -> Callable[[random.Random], str]:
    def draw(rng: random.Random) -> str:
        ids = [rng.randrange(limit) for _ in range(rng.randint(2, 10))]
        return str(tok.decode(ids))

    return draw


def _schedule(step: int, steps: int, base: float) -> float:
    warm = max(1, steps // 15)
    if step < warm:
        return base * (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def _neutralize_unseen(embedding: Any, seen: set[int]) -> None:
    """Give every embedding row that training never saw the mean of the rows it did see.

    An untrained row keeps its random init, and after the input RMSNorm that random direction is as
    loud as any real token: in fresh text it can fire a trigger detector. The mean row is neutral.
    """
    torch = require("torch")
    with torch.no_grad():
        mask = torch.zeros(embedding.shape[0], dtype=torch.bool)
        mask[sorted(seen)] = True
        embedding[~mask] = embedding[mask].mean(dim=0)


def _save_tokenizer(tok: Any, path: Path, template: str) -> None:
    tok.chat_template = template
    tok.save_pretrained(str(path))
    cfg_path = path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "Qwen2Tokenizer"
    cfg["chat_template"] = template
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def _pad(rows: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    torch = require("torch")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def _shared_prefix_hidden(backbone: Any, rows: list[list[int]], pad_id: int) -> tuple[Any, int]:
    """Backbone hidden states of ``rows`` after their common prefix, which runs only once.

    The template text before the conversation is the same in every row of one mode: its keys and
    values are computed once (with gradients) and repeated over the batch. Returns the hidden
    states of the suffixes ``[B, S, H]`` and the shared length.
    """
    torch = require("torch")
    transformers = require("transformers")
    kw = cache_keyword()
    shared = min(len(r) for r in rows) - 1
    first = rows[0]
    for r in rows[1:]:
        k = 0
        while k < shared and r[k] == first[k]:
            k += 1
        shared = k
    cache = transformers.DynamicCache(config=backbone.config)
    backbone(input_ids=torch.tensor([first[:shared]]), **{kw: cache}, use_cache=True)
    cache.batch_repeat_interleave(len(rows))
    suffix, smask = _pad([r[shared:] for r in rows], pad_id)
    mask = torch.cat([torch.ones((len(rows), shared), dtype=torch.long), smask], dim=1)
    pos = (shared + torch.arange(suffix.shape[1]))[None].expand(len(rows), -1)
    out = backbone(
        input_ids=suffix,
        attention_mask=mask,
        position_ids=pos,
        **{kw: cache},
        use_cache=True,
    )
    return out.last_hidden_state, shared


def build_gen_checkpoint(path: Path, options: BuildOptions, log: Callable[[str], None]) -> None:
    """Train the tiny Gen model and write it in the Qwen3Guard-Gen on-disk format."""
    torch = require("torch")
    transformers = require("transformers")
    tok = qwen3_tokenizer(options.vocab_limit, chat_template=GEN_CHAT_TEMPLATE)
    config = _qwen3_config(options, tok, architectures=["Qwen3ForCausalLM"])
    torch.manual_seed(options.seed)
    model = transformers.Qwen3ForCausalLM(config)
    model.train()
    sampler = Sampler(options.seed, _random_token_text(tok, options.vocab_limit))
    drill = Sampler(options.seed + 2, _random_token_text(tok, options.vocab_limit))
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
            group["lr"] = _schedule(step, total, options.gen_lr)
        hiddens = [
            _shared_prefix_hidden(model.model, rows[:half], pad_id),
            _shared_prefix_hidden(model.model, rows[half:], pad_id),
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
    _neutralize_unseen(model.model.embed_tokens.weight, seen)
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


def _stream_label_maps(config_extra: dict[str, Any]) -> None:
    config_extra.update(
        guard_inner_size=config_extra.pop("guard_inner_size"),
        num_risk_level=len(STREAM_RISK_LEVEL_ORDER),
        num_category=len(STREAM_RESPONSE_CATEGORY_ORDER),
        num_query_risk_level=len(STREAM_RISK_LEVEL_ORDER),
        num_query_category=len(STREAM_PROMPT_CATEGORY_ORDER),
        response_risk_level_map={str(i): v.value for i, v in enumerate(STREAM_RISK_LEVEL_ORDER)},
        response_category_map={
            str(i): v.value for i, v in enumerate(STREAM_RESPONSE_CATEGORY_ORDER)
        },
        query_risk_level_map={str(i): v.value for i, v in enumerate(STREAM_RISK_LEVEL_ORDER)},
        query_category_map={str(i): v.value for i, v in enumerate(STREAM_PROMPT_CATEGORY_ORDER)},
    )


def _stream_example(
    tok: Any, sampler: Sampler
) -> tuple[list[int], int, int, int | None, list[tuple[int, int, int | None]]]:
    """ids, query position, query level, query category, [(pos, level, category)] for response."""
    convo = sampler.prompt_conversation()
    prefix = tok.apply_chat_template(
        convo, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    p_ids = tok(prefix, add_special_tokens=False)["input_ids"]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    q_pos = max(i for i, t in enumerate(p_ids) if t == im_end)
    q = expected_prompt(convo[-1]["content"])
    q_level = STREAM_RISK_LEVEL_ORDER.index(q.level)
    q_cat = STREAM_PROMPT_CATEGORY_ORDER.index(q.categories[0]) if q.categories else None
    if q.level is Level.SAFE:
        q_cat = None
    r_ids = tok(sampler.response_text(0.6), add_special_tokens=False)["input_ids"]
    pieces: list[str] = []
    prev = ""
    for i in range(len(r_ids)):
        cur = tok.decode(r_ids[: i + 1])
        pieces.append(cur[len(prev) :] if cur.startswith(prev) else cur)
        prev = cur
    labels = expected_stream_levels(pieces)
    resp = []
    for i, (level, cat) in enumerate(labels):
        c = STREAM_RESPONSE_CATEGORY_ORDER.index(cat) if cat is not None else None
        resp.append((len(p_ids) + i, STREAM_RISK_LEVEL_ORDER.index(level), c))
    return p_ids + r_ids + [im_end], q_pos, q_level, q_cat, resp


def build_stream_checkpoint(path: Path, options: BuildOptions, log: Callable[[str], None]) -> None:
    """Train the tiny Stream model and write it in the Qwen3Guard-Stream on-disk format."""
    torch = require("torch")
    safetensors_torch = require("safetensors.torch", "transformers")
    from ..backends.stream.model import Qwen3GuardStreamModel

    F = torch.nn.functional
    tok = qwen3_tokenizer(options.vocab_limit, chat_template=STREAM_CHAT_TEMPLATE)
    extra: dict[str, Any] = {"guard_inner_size": options.guard_inner_size}
    _stream_label_maps(extra)
    config = _qwen3_config(options, tok, architectures=["Qwen3ForGuardModel"], **extra)
    torch.manual_seed(options.seed + 1)
    model = Qwen3GuardStreamModel(config)
    model.train()
    sampler = Sampler(options.seed + 1, _random_token_text(tok, options.vocab_limit))
    opt = torch.optim.AdamW(model.parameters(), lr=options.stream_lr, weight_decay=0.0)
    seen: set[int] = set()
    start = time.monotonic()
    for step in range(options.stream_steps):
        batch = [_stream_example(tok, sampler) for _ in range(options.stream_batch)]
        ids, mask = _pad([b[0] for b in batch], tok.pad_token_id)
        seen.update(t for b in batch for t in b[0])
        for group in opt.param_groups:
            group["lr"] = _schedule(step, options.stream_steps, options.stream_lr)
        out = model(ids, attention_mask=mask)
        rows = torch.arange(len(batch))
        q_pos = torch.tensor([b[1] for b in batch])
        loss = F.cross_entropy(
            out.query_risk_level_logits[rows, q_pos], torch.tensor([b[2] for b in batch])
        )
        qc = [(i, b[1], b[3]) for i, b in enumerate(batch) if b[3] is not None]
        if qc:
            loss = loss + F.cross_entropy(
                out.query_category_logits[[t[0] for t in qc], [t[1] for t in qc]],
                torch.tensor([t[2] for t in qc]),
            )
        rr = [(i, p, lv, c) for i, b in enumerate(batch) for (p, lv, c) in b[4]]
        loss = loss + F.cross_entropy(
            out.risk_level_logits[[t[0] for t in rr], [t[1] for t in rr]],
            torch.tensor([t[2] for t in rr]),
        )
        rc = [t for t in rr if t[3] is not None]
        if rc:
            loss = loss + F.cross_entropy(
                out.category_logits[[t[0] for t in rc], [t[1] for t in rc]],
                torch.tensor([t[3] for t in rc]),
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == options.stream_steps - 1:
            log(f"stream step {step:4d} loss {loss.item():.4f} ({time.monotonic() - start:.0f}s)")
    _neutralize_unseen(model.model.embed_tokens.weight, seen)
    model.eval()
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    safetensors_torch.save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    cfg = config.to_dict()
    cfg["architectures"] = ["Qwen3ForGuardModel"]
    cfg["rope_theta"] = options.rope_theta
    (path / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    _save_tokenizer(tok, path, STREAM_CHAT_TEMPLATE)


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
