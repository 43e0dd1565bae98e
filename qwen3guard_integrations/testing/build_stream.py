"""Train the tiny Qwen3Guard-Stream checkpoint (its two heads on a Qwen3 backbone) and write it
in the official on-disk format."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.deps import require
from ..core.labels import (
    STREAM_PROMPT_CATEGORY_ORDER,
    STREAM_RESPONSE_CATEGORY_ORDER,
    STREAM_RISK_LEVEL_ORDER,
    Level,
)
from .contract import expected_prompt, expected_stream_levels
from .corpus import Sampler
from .templates import STREAM_CHAT_TEMPLATE
from .tokenizer import qwen3_tokenizer
from .training import (
    BuildOptions,
    neutralize_unseen,
    pad,
    qwen3_config,
    random_token_text,
    save_tokenizer,
    schedule,
)

__all__ = ["build_stream_checkpoint"]


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
    config = qwen3_config(options, tok, architectures=["Qwen3ForGuardModel"], **extra)
    torch.manual_seed(options.seed + 1)
    model = Qwen3GuardStreamModel(config)
    model.train()
    sampler = Sampler(options.seed + 1, random_token_text(tok, options.vocab_limit))
    opt = torch.optim.AdamW(model.parameters(), lr=options.stream_lr, weight_decay=0.0)
    seen: set[int] = set()
    start = time.monotonic()
    for step in range(options.stream_steps):
        batch = [_stream_example(tok, sampler) for _ in range(options.stream_batch)]
        ids, mask = pad([b[0] for b in batch], tok.pad_token_id)
        seen.update(t for b in batch for t in b[0])
        for group in opt.param_groups:
            group["lr"] = schedule(step, options.stream_steps, options.stream_lr)
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
    neutralize_unseen(model.model.embed_tokens.weight, seen)
    model.eval()
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    safetensors_torch.save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    cfg = config.to_dict()
    cfg["architectures"] = ["Qwen3ForGuardModel"]
    cfg["rope_theta"] = options.rope_theta
    (path / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    save_tokenizer(tok, path, STREAM_CHAT_TEMPLATE)
