"""The cached forward of the Stream model, and the per-token results it produces.

`StreamRunner` runs only *new* token ids through the backbone, reusing a per-session KV
cache (O(1) model work per token), and turns head logits into `TokenResult` rows. It holds
no per-session state and is safe to call from several threads at once (each call runs under
``torch.inference_mode()``, a stricter ``no_grad``, and touches only the cache it is given).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from ...core.deps import require
from ...core.errors import InvalidInputError
from ...core.labels import Category, Level
from ..loading import cache_keyword
from .loading import LoadedStreamModel

__all__ = ["HeadRows", "StreamRunner", "TokenResult", "cache_keyword"]


@dataclass(frozen=True)
class TokenResult:
    """One moderated token: its id, level and category with their probabilities.

    ``category`` is the arg-max category; it is only meaningful when ``level`` is not Safe.
    ``scores`` gives the probability of each level.
    """

    token_id: int
    level: Level
    probability: float
    category: Category
    category_probability: float
    scores: dict[Level, float]


@dataclass(frozen=True)
class HeadRows:
    """Per-position results of one head path (risk and category) for a run of positions."""

    levels: tuple[Level, ...]
    level_probs: tuple[float, ...]
    categories: tuple[Category, ...]
    category_probs: tuple[float, ...]
    scores: tuple[dict[Level, float], ...]


class StreamRunner:
    """Cached forward passes of a loaded Stream model (see module docstring)."""

    def __init__(self, loaded: LoadedStreamModel) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.vocab_size = int(loaded.config.vocab_size)
        self._torch = require("torch")
        self._transformers = require("transformers")
        self._kw = cache_keyword()
        cfg = loaded.config
        # the lean one-token path covers the plain Qwen3 layout; anything else takes the
        # generic forward
        self._lean = (
            not getattr(cfg, "use_sliding_window", False)
            and getattr(cfg, "hidden_act", "silu") == "silu"
            and not getattr(cfg, "attention_bias", False)
            and all(t == "full_attention" for t in (getattr(cfg, "layer_types", None) or []))
            and hasattr(self._torch.nn.functional, "rms_norm")
        )
        self._step: Any = None
        self._step_lock = threading.Lock()

    def new_cache(self) -> Any:
        """An empty KV cache for one session."""
        return self._transformers.DynamicCache(config=self.loaded.config)

    def check_ids(self, ids: list[int]) -> list[int]:
        """``ids`` as plain ints, each in the model's vocabulary; typed error otherwise."""
        out: list[int] = []
        for t in ids:
            if isinstance(t, bool) or not isinstance(t, int):
                if hasattr(t, "__index__") and not isinstance(t, bool):
                    t = int(t.__index__())
                else:
                    raise InvalidInputError(f"token ids must be ints, got {type(t).__name__}")
            if not 0 <= t < self.vocab_size:
                raise InvalidInputError(
                    f"token id {t} is outside the vocabulary [0, {self.vocab_size})"
                )
            out.append(t)
        return out

    def forward(
        self, ids: list[int], cache: Any, *, query: bool = True
    ) -> tuple[Any, Any, Any, Any]:
        """Run ``ids`` after what ``cache`` holds; return the four logits tensors ``[T, n]``
        (float32, on the CPU) and extend ``cache`` in place. With ``query=False`` only the
        response head path runs (the last two entries are None): response tokens need no more.
        """
        torch = self._torch
        with torch.inference_mode():
            step = self._lean_step()
            if len(ids) == 1 and step is not None and cache.get_seq_length() > 0:
                hidden = step(ids[0], cache)
            else:
                x = torch.tensor([ids], dtype=torch.long, device=self.loaded.device)
                out = self.model.model(input_ids=x, use_cache=True, **{self._kw: cache})
                hidden = out.last_hidden_state[0]
            if query:
                heads = self.model.heads(hidden)
            elif step is not None:
                heads = step.response_heads(hidden)
            else:
                m = self.model
                r = m.risk_level_category_layernorm(m.risk_level_category_pre(hidden))
                heads = (m.risk_level_head(r), m.category_head(r))
        out4 = [h.float().cpu() for h in heads] + [None] * (4 - len(heads))
        return tuple(out4)

    def _lean_step(self) -> Any:
        if self._lean and self._step is None:
            from .lean import LeanStep

            with self._step_lock:
                if self._step is None:
                    self._step = LeanStep(self.model, self._torch)
        return self._step

    def rows(
        self,
        risk_logits: Any,
        cat_logits: Any,
        levels: tuple[Level, ...],
        cats: tuple[Category, ...],
    ) -> HeadRows:
        """Softmax and arg-max of one head path's logits ``[T, n]``."""
        if risk_logits.shape[0] <= 32:  # a few rows: plain Python beats a dozen tensor ops
            return _rows_py(risk_logits.tolist(), cat_logits.tolist(), levels, cats)
        torch = self._torch
        rp = torch.softmax(risk_logits, dim=-1)
        cp = torch.softmax(cat_logits, dim=-1)
        r_val, r_idx = rp.max(dim=-1)
        c_val, c_idx = cp.max(dim=-1)
        rp_list = rp.tolist()
        return HeadRows(
            levels=tuple(levels[i] for i in r_idx.tolist()),
            level_probs=tuple(r_val.tolist()),
            categories=tuple(cats[i] for i in c_idx.tolist()),
            category_probs=tuple(c_val.tolist()),
            scores=tuple({lv: float(p[k]) for k, lv in enumerate(levels)} for p in rp_list),
        )

    def response_rows(self, logits: tuple[Any, Any, Any, Any]) -> HeadRows:
        """The response head's rows of a `forward` result."""
        lab = self.loaded.labels
        return self.rows(logits[0], logits[1], lab.risk, lab.category)

    def query_rows(self, logits: tuple[Any, Any, Any, Any]) -> HeadRows:
        """The query (prompt) head's rows of a `forward` result."""
        lab = self.loaded.labels
        return self.rows(logits[2], logits[3], lab.query_risk, lab.query_category)


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def _rows_py(
    risk: list[list[float]],
    cat: list[list[float]],
    levels: tuple[Level, ...],
    cats: tuple[Category, ...],
) -> HeadRows:
    rps = [_softmax(r) for r in risk]
    cps = [_softmax(c) for c in cat]
    r_idx = [max(range(len(p)), key=p.__getitem__) for p in rps]
    c_idx = [max(range(len(p)), key=p.__getitem__) for p in cps]
    return HeadRows(
        levels=tuple(levels[i] for i in r_idx),
        level_probs=tuple(p[i] for p, i in zip(rps, r_idx)),
        categories=tuple(cats[i] for i in c_idx),
        category_probs=tuple(p[i] for p, i in zip(cps, c_idx)),
        scores=tuple({lv: p[k] for k, lv in enumerate(levels)} for p in rps),
    )
