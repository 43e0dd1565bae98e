"""What both tiny-checkpoint builders share: the options, the Qwen3 config, batching and the
learning-rate schedule (part of the build cache key, like every builder module)."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends.loading import cache_keyword
from ..core.deps import require

__all__ = [
    "BuildOptions",
    "neutralize_unseen",
    "pad",
    "qwen3_config",
    "random_token_text",
    "save_tokenizer",
    "schedule",
    "shared_prefix_hidden",
]


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


def qwen3_config(options: BuildOptions, tok: Any, **extra: Any) -> Any:
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


def random_token_text(tok: Any, limit: int) -> Callable[[random.Random], str]:
    def draw(rng: random.Random) -> str:
        ids = [rng.randrange(limit) for _ in range(rng.randint(2, 10))]
        return str(tok.decode(ids))

    return draw


def schedule(step: int, steps: int, base: float) -> float:
    warm = max(1, steps // 15)
    if step < warm:
        return base * (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def neutralize_unseen(embedding: Any, seen: set[int]) -> None:
    """Give every embedding row that training never saw the mean of the rows it did see.

    An untrained row keeps its random init, and after the input RMSNorm that random direction is as
    loud as any real token: in fresh text it can fire a trigger detector. The mean row is neutral.
    """
    torch = require("torch")
    with torch.no_grad():
        mask = torch.zeros(embedding.shape[0], dtype=torch.bool)
        mask[sorted(seen)] = True
        embedding[~mask] = embedding[mask].mean(dim=0)


def save_tokenizer(tok: Any, path: Path, template: str) -> None:
    tok.chat_template = template
    tok.save_pretrained(str(path))
    cfg_path = path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "Qwen2Tokenizer"
    cfg["chat_template"] = template
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def pad(rows: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    torch = require("torch")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def shared_prefix_hidden(backbone: Any, rows: list[list[int]], pad_id: int) -> tuple[Any, int]:
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
    suffix, smask = pad([r[shared:] for r in rows], pad_id)
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
