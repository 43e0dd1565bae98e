"""Hand-set weights for the tiny checkpoints: the behaviour contract written as a Qwen3 circuit.

No training: every weight is computed, so the tiny models follow `contract` on any text, not
on 90% of it. The building blocks, shared by the Gen and the Stream builder:

* **Residual layout.** Dimension 0 of the residual stream holds a large constant ``BIAS`` in
  every position (the embedding writes it, nothing else touches it), so each RMSNorm divides by
  almost the same number everywhere and the norm weights can undo it: after a norm, dimension 0
  reads 1 and every other dimension reads its raw value. All other dimensions are named 0/1
  features.
* **Token features** (the embedding): predicates over a token's text, e.g. "ends with ``ho``",
  "equals ``twi``", "starts with ``re``" for the written forms of each trigger.
* **Chains**: a trigger written over several tokens is a chain of features at offsets
  ``n-1 ... 0`` before the current token. The shapes are enumerated at build time by tokenizing
  every form of the phrase in many contexts (`chain_shapes`).
* **Offset heads** (layer 0) attend to exactly ``j`` tokens back (a RoPE phase in the query) and
  add the features found there into one accumulator per chain; a gated MLP unit per chain fires
  when its accumulator plus its own end feature is complete and writes the chain's event.
* **Recency heads** (layer 1) attend to the most recent of a set of events (a slow RoPE pair
  whose score falls with distance) and copy one of its features: "the last event among {turn
  markers, completions of ``bomb``} was a completion" means "``bomb`` occurs in the current
  turn".
* **Units**: ``silu(gate) * up`` with ``up`` = 1 and a steep gate is a clean AND of 0/1 inputs
  (and their negations): 0.5 * ``SLOPE`` when all hold, ~1e-12 otherwise.

The circuit runs in float32 (its attention scores reach ~1e6; bfloat16 would blur them).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.deps import require

__all__ = [
    "BIAS",
    "Chain",
    "Circuit",
    "Feature",
    "chain_shapes",
    "form_chains",
]

BIAS = 1000.0
SLOPE = 60.0
HEAD_DIM = 32
ROPE_THETA = 100_000.0
OFFSET_AMPLITUDE = 50.0  # per RoPE pair: >= 30 logits between offset j and any other offset
RECENCY_SCALE = 1.8e6  # score of an event; falls ~26 logits per position of distance
MAX_POSITIONS = 8192

#: A token predicate: ("F", form) contains; ("S", form, b) ends with form[:b]; ("M", form, a, b)
#: equals form[a:b]; ("E", form, a) starts with form[a:]; ("A", form, b) is whitespace then
#: form[:b]; ("ID", token_id); ("NL",) ends with a blank line; ("WS",) only whitespace; ("ANY",).
Feature = tuple[Any, ...]


def holds(feature: Feature, text: str, token_id: int) -> bool:
    kind = feature[0]
    if kind == "ID":
        return bool(token_id == feature[1])
    if kind == "NL":
        return text.endswith("\n\n")
    if kind == "WS":
        return bool(text) and text.isspace()
    if kind == "ANY":
        return True
    form: str = feature[1]
    if kind == "F":
        return form in text
    if kind == "S":
        return text.endswith(form[: feature[2]])
    if kind == "M":
        return text == form[feature[2] : feature[3]]
    if kind == "E":
        return text.startswith(form[feature[2] :])
    if kind == "A":
        head = form[: feature[2]]
        return text.endswith(head) and (text[: len(text) - len(head)].isspace() or text == head)
    raise ValueError(f"unknown feature {feature!r}")


@dataclass(frozen=True)
class Chain:
    """Features of the tokens at offsets ``len-1 ... 0`` (oldest first); fires ``event``."""

    features: tuple[Feature, ...]
    event: str


def _covering(offsets: Sequence[tuple[int, int]], start: int, end: int) -> list[int]:
    return [k for k, (s, e) in enumerate(offsets) if e > start and s < end and e > s]


def chain_shapes(
    tok: Any, form: str, lefts: Iterable[str], rights: Iterable[str]
) -> set[tuple[int, ...]]:
    """Token boundaries (inside ``form``) of every tokenization of ``left + form + right``."""
    shapes: set[tuple[int, ...]] = set()
    rights = list(rights)
    for left in lefts:
        for right in rights:
            enc = tok(left + form + right, add_special_tokens=False, return_offsets_mapping=True)
            start, end = len(left), len(left) + len(form)
            ks = _covering(enc["offset_mapping"], start, end)
            bounds = tuple(
                enc["offset_mapping"][k][0] - start
                for k in ks[1:]
                if start < enc["offset_mapping"][k][0] < end
            )
            shapes.add(bounds)
    return shapes


def form_chains(
    form: str, shapes: Iterable[tuple[int, ...]], event: str, *, anchored: bool = False
) -> list[Chain]:
    """The chains that spell ``form`` for the given boundary shapes."""
    out = []
    for shape in shapes:
        if not shape:
            out.append(Chain((("A", form, len(form)) if anchored else ("F", form),), event))
            continue
        feats: list[Feature] = [("A", form, shape[0]) if anchored else ("S", form, shape[0])]
        feats += [("M", form, a, b) for a, b in itertools.pairwise(shape)]
        feats.append(("E", form, shape[-1]))
        out.append(Chain(tuple(feats), event))
    return out


@dataclass
class Circuit:
    """Weights of a two-layer Qwen3 backbone, filled in by name."""

    vocab_size: int
    texts: list[str]
    dims: dict[str, int] = field(default_factory=lambda: {"bias": 0})
    token_features: dict[Feature, int] = field(default_factory=dict)
    chains: list[tuple[Chain, int]] = field(default_factory=list)  # (chain, accumulator dim)
    offset_reads: dict[int, list[Feature]] = field(default_factory=dict)  # offset -> features
    offset_writes: list[tuple[int, Feature, int]] = field(default_factory=list)  # (j, f, dim)
    units: list[list[tuple[tuple[str, int, float, float], ...]]] = field(
        default_factory=lambda: [[], []]
    )
    recency: list[tuple[tuple[str, ...], str, str, tuple[str, ...]]] = field(default_factory=list)

    def dim(self, name: str) -> int:
        if name not in self.dims:
            self.dims[name] = len(self.dims)
        return self.dims[name]

    def feature(self, f: Feature) -> int:
        if f not in self.token_features:
            self.token_features[f] = self.dim(f"feat:{f!r}")
        return self.token_features[f]

    # ---- layer 0: chains over offsets -------------------------------------------------------
    def add_chain(self, chain: Chain, event_dim: int) -> None:
        """A chain whose completion at a token adds 1 to ``event_dim`` there."""
        n = len(chain.features)
        own = self.feature(chain.features[-1])
        if n == 1:
            self.unit(0, [(own, 1.0)], [(event_dim, 1.0)])
            return
        acc = self.dim(f"acc:{len(self.chains)}")
        self.chains.append((chain, acc))
        for back, f in enumerate(reversed(chain.features[:-1]), start=1):
            self.link(back, f, acc)
        # acc counts the n-1 earlier tokens that match; the unit also needs the own (end) feature
        self.unit(0, [(acc, 1.0), (own, 1.0)], [(event_dim, 1.0)], need=float(n))

    def link(self, back: int, f: Feature, acc: int) -> None:
        """Add 1 to ``acc`` at each token whose ``back``-th predecessor has feature ``f``."""
        self.feature(f)
        reads = self.offset_reads.setdefault(back, [])
        if f not in reads:
            reads.append(f)
        self.offset_writes.append((back, f, acc))

    def unit(
        self,
        layer: int,
        ins: Sequence[tuple[int, float]],
        outs: Sequence[tuple[int, float]],
        *,
        need: float | None = None,
    ) -> None:
        """An AND unit: fires when ``sum(w * x) >= need`` (default: the sum of positive ``w``)."""
        total = sum(w for _, w in ins if w > 0) if need is None else need
        self.units[layer].append(
            (
                *(("in", d, w, total) for d, w in ins),
                *(("out", d, w, total) for d, w in outs),
            )
        )

    # ---- layer 1: most recent event --------------------------------------------------------
    def add_recency(
        self, events: Sequence[str], copy: str, into: str, markers: Sequence[str] = ()
    ) -> None:
        """A head: at each position, ``into`` = feature ``copy`` of the latest ``events`` or
        ``markers`` token. A marker counts as half a position older than it is: on a token that
        is both, the event wins."""
        for name in (*events, *markers, copy):
            if name not in self.dims:
                raise KeyError(f"no dimension {name!r}")
        self.dim(into)
        self.recency.append((tuple(events), copy, into, tuple(markers)))

    # ---- weights ---------------------------------------------------------------------------
    def heads_needed(self) -> int:
        offs = sum(math.ceil(len(fs) / HEAD_DIM) for fs in self.offset_reads.values())
        return max(offs, len(self.recency))

    def intermediate_needed(self) -> int:
        return max(len(u) for u in self.units)

    def weights(self, hidden: int, heads: int, inter: int) -> dict[str, Any]:
        torch = require("torch")
        H, D = hidden, HEAD_DIM
        if len(self.dims) > H:
            raise ValueError(f"the circuit needs {len(self.dims)} dims, hidden_size is {H}")

        def t(*shape: int) -> Any:
            return torch.zeros(*shape, dtype=torch.float32)

        w: dict[str, Any] = {}
        emb = t(self.vocab_size, H)
        emb[:, 0] = BIAS
        for f, d in self.token_features.items():
            ids = [i for i, text in enumerate(self.texts) if holds(f, text, i)]
            emb[ids, d] = 1.0
        w["model.embed_tokens.weight"] = emb
        unit_norm = torch.full((H,), BIAS / math.sqrt(H))
        unit_norm[0] = 1.0 / math.sqrt(H)
        half = D // 2
        freqs = ROPE_THETA ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
        for layer in range(2):
            p = f"model.layers.{layer}."
            w[p + "input_layernorm.weight"] = unit_norm.clone()
            w[p + "post_attention_layernorm.weight"] = unit_norm.clone()
            q, k, v, o = t(heads * D, H), t(heads * D, H), t(heads * D, H), t(H, heads * D)
            qn, kn = t(D), t(D)
            if layer == 0:
                # every head: q = phase -j*w per pair, k = phase 0; score peaks at distance j
                amp = math.sqrt(OFFSET_AMPLITUDE * math.sqrt(D) / 2.0)
                qn[:], kn[:] = amp, amp
                hh = 0
                for back in sorted(self.offset_reads):
                    feats = self.offset_reads[back]
                    for lo in range(0, len(feats), D):
                        chunk = feats[lo : lo + D]
                        rows = slice(hh * D, (hh + 1) * D)
                        q[rows, 0] = torch.cat(
                            [torch.cos(-back * freqs), torch.sin(-back * freqs)]
                        ).float()
                        k[rows, 0] = torch.cat([torch.ones(half), torch.zeros(half)])
                        for c, f in enumerate(chunk):
                            v[hh * D + c, self.token_features[f]] = 1.0
                            for j, g, acc in self.offset_writes:
                                if j == back and g == f:
                                    o[acc, hh * D + c] += 1.0
                        hh += 1
            else:
                # every head: q in the slowest pair; events' keys there at -pi/4, others elsewhere
                slow = half - 1
                amp = math.sqrt(RECENCY_SCALE * math.sqrt(D) / D)
                qn[:], kn[:] = amp, amp
                for hh, (events, copy, into, markers) in enumerate(self.recency):
                    base = hh * D
                    q[base + slow, 0] = 1.0
                    k[base + 0, 0] = 1.0  # the null direction: q is 0 there
                    older = 0.5 * float(freqs[slow])
                    for names, angle in ((events, -math.pi / 4), (markers, -math.pi / 4 - older)):
                        for e in names:
                            k[base + slow, self.dims[e]] = 1000.0 * math.cos(angle)
                            k[base + slow + half, self.dims[e]] = 1000.0 * math.sin(angle)
                    v[base, self.dims[copy]] = 1.0
                    o[self.dims[into], base] = 1.0
            w[p + "self_attn.q_proj.weight"] = q
            w[p + "self_attn.k_proj.weight"] = k
            w[p + "self_attn.v_proj.weight"] = v
            w[p + "self_attn.o_proj.weight"] = o
            w[p + "self_attn.q_norm.weight"] = qn
            w[p + "self_attn.k_norm.weight"] = kn
            gate, up, down = t(inter, H), t(inter, H), t(H, inter)
            for u, parts in enumerate(self.units[layer]):
                total = parts[0][3]
                up[u, 0] = 1.0
                gate[u, 0] = -SLOPE * (total - 0.5)
                for kind, d, wt, _ in parts:
                    if kind == "in":
                        gate[u, d] += SLOPE * wt
                    else:
                        down[d, u] += wt / (0.5 * SLOPE)
            w[p + "mlp.gate_proj.weight"] = gate
            w[p + "mlp.up_proj.weight"] = up
            w[p + "mlp.down_proj.weight"] = down
        w["model.norm.weight"] = unit_norm.clone()
        return w
