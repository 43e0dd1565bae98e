"""One backbone forward over the new tokens of many sessions at once (the engine's step).

The rows of a step are sessions, each with a run of new ids (one token for a live stream, a
chunk of a prompt being prefilled) after the positions its slot already holds. The projections
and the MLP run on all new tokens flattened (``[N, hidden]``, no padding); only attention is per
row: queries padded to the longest run, keys and values read from the `SlotPool`, and a mask
that stops every row at its own length (causal inside the run). The arithmetic is that of
`LeanStep` (fused weights, the same RMSNorm and rotary), so a row's logits equal those of the
session run alone up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .lean import LeanStep, _rms, attention_inputs, finish_layer
from .slots import SlotPool

__all__ = ["SlotCache", "batched_hidden", "forward_rows"]


class SlotCache:
    """One slot seen as the cache `LeanStep` expects, for a lone one-token step (the
    fastest path: it is the lean step itself, reading the slot's rows as views)."""

    def __init__(self, pool: SlotPool, slot: int) -> None:
        self.pool, self.slot, self.length = pool, slot, pool.lengths[slot]

    def get_seq_length(self) -> int:
        """The positions held before this step."""
        return self.length

    def update(self, key: Any, value: Any, layer: int) -> tuple[Any, Any]:
        """Write one position's ``[1, kv, 1, hd]`` key and value; the slot's rows so far."""
        s, n = self.slot, self.length
        kc = self.pool.keys[layer].narrow(0, s, 1)
        vc = self.pool.values[layer].narrow(0, s, 1)
        kc.narrow(2, n, 1).copy_(key)
        vc.narrow(2, n, 1).copy_(value)
        return kc.narrow(2, 0, n + 1), vc.narrow(2, 0, n + 1)


def batched_hidden(
    step: LeanStep, pool: SlotPool, rows: Sequence[tuple[int, Sequence[int]]]
) -> Any:
    """Run each row's ids (``(slot, ids)``, slots distinct) after what its slot holds.

    Writes the new keys and values into ``pool`` (the caller advances ``pool.lengths`` once the
    whole step has succeeded) and returns the final-norm hidden states ``[N, hidden]`` of all
    new tokens, row after row.
    """
    torch = step.torch
    F = torch.nn.functional
    dev = pool.device
    if step.backbone.layers[0].self_attn.q_proj.weight.data_ptr() != step._q_ptr:
        step._build()  # the model's weights were moved or replaced: fuse them again
    b = len(rows)
    if b == 1 and len(rows[0][1]) == 1:
        slot, ids = rows[0]
        pool.reserve(pool.lengths[slot] + 1)
        return step(int(ids[0]), SlotCache(pool, slot))
    lens = [len(ids) for _, ids in rows]
    starts = [pool.lengths[s] for s, _ in rows]
    t_max = max(lens)
    l_max = max(st + n for st, n in zip(starts, lens))
    pool.reserve(l_max)
    flat: list[int] = []
    tok_slot: list[int] = []
    tok_pos: list[int] = []
    tok_row: list[int] = []
    tok_col: list[int] = []
    for r, ((slot, ids), st) in enumerate(zip(rows, starts)):
        flat += ids
        tok_slot += [slot] * len(ids)
        tok_pos += range(st, st + len(ids))
        tok_row += [r] * len(ids)
        tok_col += range(len(ids))
    ids_t = torch.tensor(flat, dtype=torch.long, device=dev)
    pos_t = torch.tensor(tok_pos, dtype=torch.long, device=dev)
    slot_t = torch.tensor(tok_slot, dtype=torch.long, device=dev)
    decode = t_max == 1
    if not decode:
        row_t = torch.tensor(tok_row, dtype=torch.long, device=dev)
        col_t = torch.tensor(tok_col, dtype=torch.long, device=dev)
    slots = [s for s, _ in rows]
    lo = slots[0]
    contiguous = slots == list(range(lo, lo + b))
    sel = None if contiguous else torch.tensor(slots, dtype=torch.long, device=dev)
    mask = None
    if not (decode and len(set(starts)) == 1):
        q_pos = torch.tensor(starts, device=dev)[:, None] + torch.arange(t_max, device=dev)[None]
        keys_at = torch.arange(l_max, device=dev)
        mask = (keys_at[None, None, :] <= q_pos[:, :, None]).unsqueeze(1)  # [B, 1, T, L]
    h = step.backbone.embed_tokens.weight[ids_t]  # [N, H]
    cos, sin = _cos_sin(step, pos_t, h, max(tok_pos))
    for i, L in enumerate(step.layers):
        qk, v = attention_inputs(torch, L, h, cos, sin)  # [N, heads, hd]
        hd = L.qk_w.shape[-1]
        q, k = qk[:, : L.nq], qk[:, L.nq :]
        kc, vc = pool.keys[i], pool.values[i]
        kc[slot_t, :, pos_t] = k
        vc[slot_t, :, pos_t] = v
        if contiguous:
            keys, values = kc[lo : lo + b, :, :l_max], vc[lo : lo + b, :, :l_max]
        else:
            keys = kc[:, :, :l_max].index_select(0, sel)
            values = vc[:, :, :l_max].index_select(0, sel)
        if decode:
            qb = q.unsqueeze(2)  # [B, nq, 1, hd]
        else:
            qb = q.new_zeros((b, t_max, L.nq, hd))
            qb[row_t, col_t] = q
            qb = qb.transpose(1, 2)
        o = F.scaled_dot_product_attention(
            qb, keys, values, attn_mask=mask, scale=L.scaling, enable_gqa=True
        )
        if decode:
            o = o.reshape(b, -1)
        else:
            o = o.transpose(1, 2)[row_t, col_t].reshape(len(flat), -1)
        h = finish_layer(torch, L, h, o)
    return _rms(torch, step.backbone.norm, h, step._final_eps)


def _cos_sin(step: LeanStep, pos_t: Any, h: Any, top: int) -> tuple[Any, Any]:
    """cos and signed sin for each token's position, ``[N, 1, head_dim]``."""
    if step._table_default:
        step._cos_sin(top, h[None])  # builds or grows the table to cover ``top``
        assert step._table is not None
        cos_t, sin_t = step._table
        return cos_t[0, pos_t].unsqueeze(1), sin_t[0, pos_t].unsqueeze(1)
    cos, sin = step.backbone.rotary_emb(h[None], pos_t[None])
    return cos[0].unsqueeze(1), step._signed(sin)[0].unsqueeze(1)


def forward_rows(
    step: LeanStep,
    model: Any,
    pool: SlotPool,
    rows: Sequence[tuple[int, Sequence[int]]],
    *,
    query: bool = False,
) -> list[Any]:
    """`batched_hidden` and the heads: per row the head logits (float32, CPU), the response
    pair, or all four (the model's ``heads``) when ``query``."""
    torch = step.torch
    with torch.inference_mode():
        hidden = batched_hidden(step, pool, rows)
        heads = list(model.heads(hidden)) if query else list(step.response_heads(hidden))
        if len(rows) == 1:
            return [tuple(h.float().cpu() for h in heads)]
        widths = [h.shape[-1] for h in heads]
        both = torch.cat(heads, dim=-1).float().cpu()
    out: list[Any] = []
    at = 0
    for _, ids in rows:
        n = len(ids)
        out.append(both[at : at + n].split(widths, dim=-1))
        at += n
    return out
