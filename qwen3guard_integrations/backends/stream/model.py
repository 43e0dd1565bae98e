"""The Qwen3Guard-Stream network: a Qwen3 backbone with token-level risk and category heads.

Weight names follow the official checkpoints exactly (SPEC section 3): the backbone lives under
``model.`` and the eight head weights are top-level keys. Each head path is
``Linear(hidden -> guard_inner_size, no bias) -> RMSNorm -> Linear(-> labels, no bias)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...core.deps import require
from ..loading import cache_keyword

torch = require("torch")
nn = torch.nn
_qwen3 = require("transformers.models.qwen3.modeling_qwen3", "transformers")

__all__ = ["HEAD_WEIGHT_NAMES", "Qwen3GuardStreamModel", "StreamModelOutput"]

#: The top-level head weights of an official Stream checkpoint.
HEAD_WEIGHT_NAMES: tuple[str, ...] = (
    "risk_level_category_pre.weight",
    "risk_level_category_layernorm.weight",
    "risk_level_head.weight",
    "category_head.weight",
    "query_risk_level_category_pre.weight",
    "query_risk_level_category_layernorm.weight",
    "query_risk_level_head.weight",
    "query_category_head.weight",
)


@dataclass
class StreamModelOutput:
    """Per-position logits of both head paths, and the backbone's KV cache."""

    risk_level_logits: Any
    category_logits: Any
    query_risk_level_logits: Any
    query_category_logits: Any
    past_key_values: Any = None


class Qwen3GuardStreamModel(nn.Module):  # type: ignore[misc,name-defined]
    """Backbone (``transformers`` ``Qwen3Model``) plus the response and query head paths."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        hidden = config.hidden_size
        inner = config.guard_inner_size
        eps = config.rms_norm_eps
        self.model = _qwen3.Qwen3Model(config)
        self.risk_level_category_pre = nn.Linear(hidden, inner, bias=False)
        self.risk_level_category_layernorm = _qwen3.Qwen3RMSNorm(inner, eps=eps)
        self.risk_level_head = nn.Linear(inner, config.num_risk_level, bias=False)
        self.category_head = nn.Linear(inner, config.num_category, bias=False)
        self.query_risk_level_category_pre = nn.Linear(hidden, inner, bias=False)
        self.query_risk_level_category_layernorm = _qwen3.Qwen3RMSNorm(inner, eps=eps)
        self.query_risk_level_head = nn.Linear(inner, config.num_query_risk_level, bias=False)
        self.query_category_head = nn.Linear(inner, config.num_query_category, bias=False)

    def heads(self, hidden_states: Any) -> tuple[Any, Any, Any, Any]:
        """Apply both head paths to backbone hidden states ``[..., hidden]``."""
        r = self.risk_level_category_layernorm(self.risk_level_category_pre(hidden_states))
        q = self.query_risk_level_category_layernorm(
            self.query_risk_level_category_pre(hidden_states)
        )
        return (
            self.risk_level_head(r),
            self.category_head(r),
            self.query_risk_level_head(q),
            self.query_category_head(q),
        )

    def forward(
        self,
        input_ids: Any,
        attention_mask: Any = None,
        position_ids: Any = None,
        past_key_values: Any = None,
        use_cache: bool = False,
    ) -> StreamModelOutput:
        """Run the backbone over ``input_ids`` and both heads at every position.

        ``past_key_values`` (the official forward's name) reaches the backbone under the keyword
        the installed transformers takes (``cache`` from 5.24 on), and only when given."""
        cache = {} if past_key_values is None else {cache_keyword(): past_key_values}
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            **cache,
        )
        risk, cat, qrisk, qcat = self.heads(out.last_hidden_state)
        return StreamModelOutput(risk, cat, qrisk, qcat, out.past_key_values if use_cache else None)
