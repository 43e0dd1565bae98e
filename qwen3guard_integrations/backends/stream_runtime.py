"""The cached forward of the Stream model, and the per-token results it produces.

:class:`StreamRunner` runs only *new* token ids through the backbone, reusing a per-session KV
cache (O(1) model work per token), and turns head logits into :class:`TokenResult` rows. It holds
no per-session state and is safe to call from several threads at once (each call runs under
``torch.inference_mode()``, a stricter ``no_grad``, and touches only the cache it is given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.deps import require
from ..core.errors import InvalidInputError
from ..core.labels import Category, Level
from .loading import cache_keyword
from .stream_loading import LoadedStreamModel

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

    def forward(self, ids: list[int], cache: Any) -> tuple[Any, Any, Any, Any]:
        """Run ``ids`` after what ``cache`` holds; return the four logits tensors ``[T, n]``
        (float32, on the CPU) and extend ``cache`` in place."""
        torch = self._torch
        with torch.inference_mode():
            if len(ids) == 1 and self._lean and cache.get_seq_length() > 0:
                hidden = self._one_token(ids[0], cache)
            else:
                x = torch.tensor([ids], dtype=torch.long, device=self.loaded.device)
                out = self.model.model(input_ids=x, use_cache=True, **{self._kw: cache})
                hidden = out.last_hidden_state[0]
            heads = self.model.heads(hidden)
        return tuple(h.float().cpu() for h in heads)  # type: ignore[return-value]

    def _one_token(self, token: int, cache: Any) -> Any:
        """The backbone for one new token, without the generic forward's per-call machinery.

        Streams feed one token at a time, and at small sizes the generic forward's Python work
        (mask building, wrappers, module dispatch) costs more than the arithmetic. This does the
        same arithmetic as ``Qwen3Model`` (same weights, RMSNorm in float32, the module's own
        rotary embedding, the same cache object), so the multi-token path can continue from it.
        Returns the final hidden state ``[1, hidden]``.
        """
        torch = self._torch
        F = torch.nn.functional
        m = self.model.model
        dev = m.embed_tokens.weight.device
        pos = torch.tensor([[cache.get_seq_length()]], device=dev)
        h = F.embedding(torch.tensor([[token]], device=dev), m.embed_tokens.weight)
        cos, sin = m.rotary_emb(h, pos)
        for i, layer in enumerate(m.layers):
            attn = layer.self_attn
            x = _rms(F, layer.input_layernorm, h)
            q = F.linear(x, attn.q_proj.weight, attn.q_proj.bias).view(1, 1, -1, attn.head_dim)
            k = F.linear(x, attn.k_proj.weight, attn.k_proj.bias).view(1, 1, -1, attn.head_dim)
            v = F.linear(x, attn.v_proj.weight, attn.v_proj.bias).view(1, 1, -1, attn.head_dim)
            q = _rms(F, attn.q_norm, q).transpose(1, 2)
            k = _rms(F, attn.k_norm, k).transpose(1, 2)
            q, k = _rope(q, k, cos, sin)
            keys, values = cache.update(k, v.transpose(1, 2), i)
            o = F.scaled_dot_product_attention(q, keys, values, scale=attn.scaling, enable_gqa=True)
            h = h + F.linear(
                o.transpose(1, 2).reshape(1, 1, -1), attn.o_proj.weight, attn.o_proj.bias
            )
            x = _rms(F, layer.post_attention_layernorm, h)
            mlp = layer.mlp
            gate = F.linear(x, mlp.gate_proj.weight)
            h = h + F.linear(
                mlp.act_fn(gate) * F.linear(x, mlp.up_proj.weight), mlp.down_proj.weight
            )
        return _rms(F, m.norm, h)[0]

    def rows(
        self,
        risk_logits: Any,
        cat_logits: Any,
        levels: tuple[Level, ...],
        cats: tuple[Category, ...],
    ) -> HeadRows:
        """Softmax and arg-max of one head path's logits ``[T, n]``."""
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
        """The response head's rows of a :meth:`forward` result."""
        lab = self.loaded.labels
        return self.rows(logits[0], logits[1], lab.risk, lab.category)

    def query_rows(self, logits: tuple[Any, Any, Any, Any]) -> HeadRows:
        """The query (prompt) head's rows of a :meth:`forward` result."""
        lab = self.loaded.labels
        return self.rows(logits[2], logits[3], lab.query_risk, lab.query_category)


def _rms(F: Any, norm: Any, x: Any) -> Any:
    """Qwen3RMSNorm's arithmetic: normalise in float32, cast back, scale by the weight."""
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)
    if x.dtype == norm.weight.dtype == require("torch").float32:
        return F.rms_norm(x, (x.shape[-1],), norm.weight, eps)  # one fused op
    y = F.rms_norm(x.float(), (x.shape[-1],), eps=eps)
    return norm.weight * y.to(x.dtype)


def _rope(q: Any, k: Any, cos: Any, sin: Any) -> Any:
    """Rotary embedding, as ``apply_rotary_pos_emb`` with heads on dim 1."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)

    def rot(x: Any) -> Any:
        half = x.shape[-1] // 2
        return require("torch").cat((-x[..., half:], x[..., :half]), dim=-1)

    return q * cos + rot(q) * sin, k * cos + rot(k) * sin
