"""The Stream backbone for one new token, with as few tensor operations as the arithmetic allows.

Streams feed one token at a time, and at small and medium sizes the per-operation overhead of
eager PyTorch (dispatch, module calls, the generic forward's mask building) costs more than the
arithmetic. `LeanStep` does exactly ``Qwen3Model``'s arithmetic for one token on the
session's own KV cache (so the generic multi-token forward can continue from it), with:

* the q/k/v projections fused into one matmul, and gate/up into another. The fused weight is one
  tensor and the modules' own weights are re-pointed at slices of it: no extra memory;
* q-norm and k-norm as one RMSNorm over the q and k heads together, and rotary embedding applied
  to both at once;
* cos/sin read from a table built once with the model's own rotary module (for the default rope
  type; other types call the module every step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["LeanStep", "attention_inputs", "finish_layer"]


@dataclass
class _Layer:
    wqkv: Any
    wgu: Any
    wo: Any
    wdown: Any
    qk_w: Any
    qk_eps: float
    in_norm: Any
    in_eps: float
    post_norm: Any
    post_eps: float
    nq: int
    nk: int
    inter: int
    scaling: float
    act: Any


class LeanStep:
    """One-token backbone step for a plain Qwen3 layout (see the module docstring)."""

    def __init__(self, model: Any, torch: Any) -> None:
        self.torch = torch
        self.model = model
        self.backbone = model.model
        self._table: tuple[Any, Any] | None = None
        self._table_default = getattr(self.backbone.rotary_emb, "rope_type", "default") == "default"
        self._build()

    def _build(self) -> None:
        torch = self.torch
        self.layers: list[_Layer] = []
        with torch.no_grad():
            for layer in self.backbone.layers:
                attn, mlp = layer.self_attn, layer.mlp
                hd = attn.head_dim
                nq = attn.q_proj.weight.shape[0] // hd
                nk = attn.k_proj.weight.shape[0] // hd
                qk_w = torch.cat(
                    [attn.q_norm.weight.expand(nq, hd), attn.k_norm.weight.expand(nk, hd)]
                )
                self.layers.append(
                    _Layer(
                        wqkv=_fuse(torch, [attn.q_proj, attn.k_proj, attn.v_proj]),
                        wgu=_fuse(torch, [mlp.gate_proj, mlp.up_proj]),
                        wo=attn.o_proj.weight,
                        wdown=mlp.down_proj.weight,
                        qk_w=qk_w,
                        qk_eps=_eps(attn.q_norm),
                        in_norm=layer.input_layernorm,
                        in_eps=_eps(layer.input_layernorm),
                        post_norm=layer.post_attention_layernorm,
                        post_eps=_eps(layer.post_attention_layernorm),
                        nq=nq,
                        nk=nk,
                        inter=mlp.gate_proj.weight.shape[0],
                        scaling=float(attn.scaling),
                        act=mlp.act_fn,
                    )
                )
        self._q_ptr = self.backbone.layers[0].self_attn.q_proj.weight.data_ptr()
        m = self.model
        with torch.no_grad():
            self._heads = _fuse(torch, [m.risk_level_head, m.category_head])
        self._n_risk = m.risk_level_head.weight.shape[0]
        self._final_eps = _eps(self.backbone.norm)
        self._head_eps = _eps(m.risk_level_category_layernorm)

    def response_heads(self, hidden: Any) -> tuple[Any, Any]:
        """The response head path (risk and category logits) for hidden states ``[T, H]``."""
        F = self.torch.nn.functional
        m = self.model
        r = _rms(
            self.torch,
            m.risk_level_category_layernorm,
            F.linear(hidden, m.risk_level_category_pre.weight),
            self._head_eps,
        )
        both = F.linear(r, self._heads)
        return both[..., : self._n_risk], both[..., self._n_risk :]

    def _cos_sin(self, pos: int, h: Any) -> tuple[Any, Any]:
        """cos and the signed sin for ``pos`` (see `_signed`), ``[1, 1, head_dim]``."""
        torch = self.torch
        rotary = self.backbone.rotary_emb
        if not self._table_default:
            cos, sin = rotary(h, torch.tensor([[pos]], device=h.device))
            return cos, self._signed(sin)
        if self._table is None or pos >= self._table[0].shape[1]:
            n = max(1024, 2 * (pos + 1))
            cos, sin = rotary(h, torch.arange(n, device=h.device)[None])
            self._table = (cos, self._signed(sin))
        cos_t, sin_t = self._table
        return cos_t[:, pos : pos + 1], sin_t[:, pos : pos + 1]

    def _signed(self, sin: Any) -> Any:
        """``rotate_half(x) * sin`` equals ``x.roll(half) * s``, ``s`` = sin with its first half
        negated."""
        half = sin.shape[-1] // 2
        return self.torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)

    def __call__(self, token: int, cache: Any) -> Any:
        """Run ``token`` after what ``cache`` holds (extending it); the final hidden ``[1, H]``."""
        torch = self.torch
        F = torch.nn.functional
        if self.backbone.layers[0].self_attn.q_proj.weight.data_ptr() != self._q_ptr:
            self._build()  # the model's weights were moved or replaced: fuse them again
        emb = self.backbone.embed_tokens.weight
        pos = int(cache.get_seq_length())
        h = emb[token].view(1, -1)  # [1, H]: one position, batch folded
        cos, sin = self._cos_sin(pos, h[None])
        for i, L in enumerate(self.layers):
            qk, v = attention_inputs(torch, L, h, cos, sin)  # [1, heads, hd] (one position)
            q = qk[:, : L.nq].unsqueeze(2)
            keys, values = cache.update(qk[:, L.nq :].unsqueeze(2), v.unsqueeze(2), i)
            o = F.scaled_dot_product_attention(q, keys, values, scale=L.scaling, enable_gqa=True)
            h = finish_layer(torch, L, h, o.reshape(1, -1))
        return _rms(torch, self.backbone.norm, h, self._final_eps)


def attention_inputs(torch: Any, L: _Layer, h: Any, cos: Any, sin: Any) -> tuple[Any, Any]:
    """A layer's normed and rotated q and k heads, and its v heads, for hidden states ``h``
    ``[N, H]`` (cos/sin broadcast over ``[N, 1, hd]``): ``[N, nq + nk, hd]`` and ``[N, nv, hd]``."""
    F = torch.nn.functional
    x = _rms(torch, L.in_norm, h, L.in_eps)
    hd = L.qk_w.shape[-1]
    qkv = F.linear(x, L.wqkv).view(h.shape[0], -1, hd)
    n_qk = L.nq + L.nk
    qk, v = qkv[:, :n_qk], qkv[:, n_qk:]
    if qk.dtype == torch.float32:
        qk = F.rms_norm(qk, (hd,), None, L.qk_eps) * L.qk_w
    else:
        y = F.rms_norm(qk.float(), (hd,), None, L.qk_eps)
        qk = L.qk_w * y.to(qk.dtype)
    return torch.addcmul(qk * cos, qk.roll(hd // 2, -1), sin), v


def finish_layer(torch: Any, L: _Layer, h: Any, o: Any) -> Any:
    """The rest of a layer after attention: the output projection and the MLP, both residual."""
    F = torch.nn.functional
    h = torch.addmm(h, o, L.wo.t())
    x = _rms(torch, L.post_norm, h, L.post_eps)
    gate, up = F.linear(x, L.wgu).split(L.inter, dim=-1)
    return torch.addmm(h, L.act(gate) * up, L.wdown.t())


def _fuse(torch: Any, modules: list[Any]) -> Any:
    """One weight for several linears on the same input; the modules keep views of it."""
    fused = torch.cat([m.weight.data for m in modules])
    start = 0
    for m in modules:
        n = m.weight.shape[0]
        m.weight.data = fused[start : start + n]
        start += n
    return fused


def _eps(norm: Any) -> float:
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", None) or 1e-6
    return float(eps)


def _rms(torch: Any, norm: Any, x: Any, eps: float) -> Any:
    """Qwen3RMSNorm's arithmetic: normalise in float32, cast back, scale by the weight."""
    F = torch.nn.functional
    if x.dtype == norm.weight.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), norm.weight, eps)
    y = F.rms_norm(x.float(), (x.shape[-1],), eps=eps)
    return norm.weight * y.to(x.dtype)
