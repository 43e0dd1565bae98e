"""The official call paths on a checkpoint folder, for tests that measure the tiny models the
way the official README and eval scripts run the real ones: Gen with plain ``transformers``
(``apply_chat_template`` and greedy ``generate``), Stream with a plain forward of the network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "forward_padded",
    "generate",
    "load_gen",
    "load_stream",
    "prompt_head_reading",
    "response_head_readings",
    "token_pieces",
]


def load_gen(path: Path) -> tuple[Any, Any]:
    """The Gen tokenizer (left padding, for batched ``generate``) and model."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(path, padding_side="left")
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    return tok, model


def generate(
    gen: tuple[Any, Any],
    convos: list[list[dict[str, str]]],
    *,
    batch: int,
    max_new_tokens: int,
    **template_kw: Any,
) -> list[str]:
    """Each conversation rendered with the checkpoint's template (``template_kw`` passed on),
    decoded greedily in batches; the new text of each."""
    import torch

    tok, model = gen
    outs: list[str] = []
    for i in range(0, len(convos), batch):
        texts = [
            tok.apply_chat_template(c, tokenize=False, **template_kw) for c in convos[i : i + batch]
        ]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        width = enc["input_ids"].shape[1]
        outs += [tok.decode(o[width:], skip_special_tokens=True) for o in out]
    return outs


def load_stream(path: Path) -> tuple[Any, Any]:
    """The Stream tokenizer and network, its weights loaded as they are on disk."""
    import transformers
    from safetensors.torch import load_file

    from qwen3guard_integrations.backends.stream.model import Qwen3GuardStreamModel

    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = Qwen3GuardStreamModel(transformers.AutoConfig.from_pretrained(path))
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return tok, model.eval()


def forward_padded(model: Any, rows: list[list[int]], pad: int) -> Any:
    """One right-padded forward of the Stream network over ``rows``."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    with torch.no_grad():
        return model(ids, attention_mask=mask)


def token_pieces(tok: Any, ids: list[int]) -> list[str]:
    """The text each id adds to the decoded response (what a stream hands out token by token)."""
    pieces, prev = [], ""
    for i in range(len(ids)):
        cur = tok.decode(ids[: i + 1])
        pieces.append(cur[len(prev) :])
        prev = cur
    return pieces


def prompt_head_reading(out: Any, row: int, at: int) -> tuple[Any, Any]:
    """The prompt head's (level, category) at position ``at`` of ``row`` (argmax, in the
    official label orders)."""
    from qwen3guard_integrations.core.labels import (
        STREAM_PROMPT_CATEGORY_ORDER,
        STREAM_RISK_LEVEL_ORDER,
    )

    level = STREAM_RISK_LEVEL_ORDER[int(out.query_risk_level_logits[row, at].argmax())]
    return level, STREAM_PROMPT_CATEGORY_ORDER[int(out.query_category_logits[row, at].argmax())]


def response_head_readings(
    out: Any, row: int, start: int, stop: int
) -> tuple[list[Any], list[Any]]:
    """The response head's levels and categories at positions ``start:stop`` of ``row``."""
    from qwen3guard_integrations.core.labels import (
        STREAM_RESPONSE_CATEGORY_ORDER,
        STREAM_RISK_LEVEL_ORDER,
    )

    levels = [
        STREAM_RISK_LEVEL_ORDER[int(x)] for x in out.risk_level_logits[row, start:stop].argmax(-1)
    ]
    cats = [
        STREAM_RESPONSE_CATEGORY_ORDER[int(x)]
        for x in out.category_logits[row, start:stop].argmax(-1)
    ]
    return levels, cats
