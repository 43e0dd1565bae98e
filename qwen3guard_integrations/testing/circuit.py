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
    "Recency",
    "Unit",
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
    """Features of the tokens at offsets ``len-1 ... 0`` (oldest first); where all hold, the
    last token gets 1 added to dimension ``ev:<event>``."""

    features: tuple[Feature, ...]
    event: str


def _covering(offsets: Sequence[tuple[int, int]], start: int, end: int) -> list[int]:
    return [k for k, (s, e) in enumerate(offsets) if e > start and s < end and e > s]


def chain_shapes(
    tok: Any, form: str, lefts: Iterable[str], rights: Iterable[str]
) -> set[tuple[int, ...]]:
    """Token boundaries (inside ``form``) of every tokenization of ``left + form + right``."""
    pairs = [(left, right) for left in lefts for right in rights]
    batch = tok(
        [left + form + right for left, right in pairs],
        add_special_tokens=False,
        return_offsets_mapping=True,
    )
    shapes: set[tuple[int, ...]] = set()
    for (left, _), offsets in zip(pairs, batch["offset_mapping"]):
        start, end = len(left), len(left) + len(form)
        ks = _covering(offsets, start, end)
        shapes.add(tuple(offsets[k][0] - start for k in ks[1:] if start < offsets[k][0] < end))
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


@dataclass(frozen=True)
class Unit:
    """An AND unit: fires when ``sum(w * x for x, w in ins) >= need``; then adds ``outs``."""

    ins: tuple[tuple[int, float], ...]
    outs: tuple[tuple[int, float], ...]
    need: float


@dataclass(frozen=True)
class Recency:
    """A head: ``into`` = feature ``copy`` of the latest ``events`` or ``markers`` token."""

    events: tuple[str, ...]
    copy: str
    into: str
    markers: tuple[str, ...]


@dataclass
class Circuit:
    """Weights of a two-layer Qwen3 backbone, filled in by name."""

    vocab_size: int
    texts: list[str]
    dims: dict[str, int] = field(default_factory=lambda: {"bias": 0})
    token_features: dict[Feature, int] = field(default_factory=dict)
    #: offset -> feature read there -> the accumulators it adds 1 to (in reading order)
    links: dict[int, dict[Feature, list[int]]] = field(default_factory=dict)
    units: tuple[list[Unit], list[Unit]] = field(default_factory=lambda: ([], []))
    recency: list[Recency] = field(default_factory=list)

    def dim(self, name: str) -> int:
        if name not in self.dims:
            self.dims[name] = len(self.dims)
        return self.dims[name]

    def feature(self, f: Feature) -> str:
        """The name of the dimension holding token feature ``f`` (registered on first use)."""
        name = f"feat:{f!r}"
        self.token_features.setdefault(f, self.dim(name))
        return name

    # ---- layer 0: chains over offsets -------------------------------------------------------
    def add_chain(self, chain: Chain) -> None:
        """A chain whose completion at a token adds 1 to its event dimension there."""
        event_dim = self.dim(f"ev:{chain.event}")
        n = len(chain.features)
        own = self.dims[self.feature(chain.features[-1])]
        if n == 1:
            self.unit(0, [(own, 1.0)], [(event_dim, 1.0)])
            return
        acc = self.dim(f"acc:{sum(name.startswith('acc:') for name in self.dims)}")
        for back, f in enumerate(reversed(chain.features[:-1]), start=1):
            self.link(back, f, acc)
        # acc counts the n-1 earlier tokens that match; the unit also needs the own (end) feature
        self.unit(0, [(acc, 1.0), (own, 1.0)], [(event_dim, 1.0)], need=float(n))

    def link(self, back: int, f: Feature, acc: int) -> None:
        """Add 1 to ``acc`` at each token whose ``back``-th predecessor has feature ``f``."""
        self.feature(f)
        self.links.setdefault(back, {}).setdefault(f, []).append(acc)

    def unit(
        self,
        layer: int,
        ins: Sequence[tuple[int, float]],
        outs: Sequence[tuple[int, float]],
        *,
        need: float | None = None,
    ) -> None:
        """An AND unit in ``layer`` (``need`` defaults to the sum of the positive weights)."""
        total = sum(w for _, w in ins if w > 0) if need is None else need
        self.units[layer].append(Unit(tuple(ins), tuple(outs), total))

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
        self.recency.append(Recency(tuple(events), copy, into, tuple(markers)))

    # ---- weights ---------------------------------------------------------------------------
    def heads_needed(self) -> int:
        offs = sum(math.ceil(len(fs) / HEAD_DIM) for fs in self.links.values())
        return max(offs, len(self.recency))

    def intermediate_needed(self) -> int:
        return max(len(u) for u in self.units)

    def readout_norm(self, hidden: int, names: Sequence[str], gain: float) -> Any:
        """Final-norm weights that keep only ``names`` (each read as ``gain`` times its value)."""
        torch = require("torch")
        unit = torch.full((hidden,), BIAS / math.sqrt(hidden))  # reads a dim as its value
        norm = torch.zeros(hidden)
        for name in names:
            norm[self.dims[name]] = gain * unit[self.dims[name]]
        return norm

    def weights(self, hidden: int, heads: int, inter: int) -> dict[str, Any]:
        """Every backbone weight, under the official names."""
        torch = require("torch")
        if len(self.dims) > hidden:
            raise ValueError(f"the circuit needs {len(self.dims)} dims, hidden_size is {hidden}")
        emb = torch.zeros(self.vocab_size, hidden)
        emb[:, 0] = BIAS
        for f, d in self.token_features.items():
            emb[[i for i, text in enumerate(self.texts) if holds(f, text, i)], d] = 1.0
        w: dict[str, Any] = {"model.embed_tokens.weight": emb}
        unit_norm = torch.full((hidden,), BIAS / math.sqrt(hidden))
        unit_norm[0] = 1.0 / math.sqrt(hidden)
        for layer, attention in enumerate((self._offset_heads, self._recency_heads)):
            p = f"model.layers.{layer}."
            w[p + "input_layernorm.weight"] = unit_norm.clone()
            w[p + "post_attention_layernorm.weight"] = unit_norm.clone()
            for name, value in attention(hidden, heads).items():
                w[p + "self_attn." + name] = value
            for name, value in self._mlp(self.units[layer], hidden, inter).items():
                w[p + "mlp." + name] = value
        w["model.norm.weight"] = unit_norm.clone()
        return w

    @staticmethod
    def _projections(hidden: int, heads: int) -> dict[str, Any]:
        torch = require("torch")
        rows = heads * HEAD_DIM
        return {
            "q_proj.weight": torch.zeros(rows, hidden),
            "k_proj.weight": torch.zeros(rows, hidden),
            "v_proj.weight": torch.zeros(rows, hidden),
            "o_proj.weight": torch.zeros(hidden, rows),
        }

    def _offset_heads(self, hidden: int, heads: int) -> dict[str, Any]:
        """Layer 0: q = phase -j*w per RoPE pair, k = phase 0, so a head's score peaks at
        distance j; its value carries up to HEAD_DIM features of that token to accumulators."""
        torch = require("torch")
        D, half = HEAD_DIM, HEAD_DIM // 2
        out = self._projections(hidden, heads)
        q, k, v, o = (out[f"{x}_proj.weight"] for x in "qkvo")
        amp = math.sqrt(OFFSET_AMPLITUDE * math.sqrt(D) / 2.0)
        out["q_norm.weight"] = torch.full((D,), amp)
        out["k_norm.weight"] = torch.full((D,), amp)
        freqs = _freqs()
        hh = 0
        for back in sorted(self.links):
            feats = list(self.links[back].items())
            for lo in range(0, len(feats), D):
                base = hh * D
                q[base : base + D, 0] = torch.cat(
                    [torch.cos(-back * freqs), torch.sin(-back * freqs)]
                )
                k[base : base + D, 0] = torch.cat([torch.ones(half), torch.zeros(half)])
                for c, (f, accs) in enumerate(feats[lo : lo + D]):
                    v[base + c, self.token_features[f]] = 1.0
                    for acc in accs:
                        o[acc, base + c] += 1.0
                hh += 1
        return out

    def _recency_heads(self, hidden: int, heads: int) -> dict[str, Any]:
        """Layer 1: q in the slowest RoPE pair; the keys of events there at -pi/4 (markers half
        a position older), every other key in a direction q does not read."""
        torch = require("torch")
        D, half = HEAD_DIM, HEAD_DIM // 2
        out = self._projections(hidden, heads)
        q, k, v, o = (out[f"{x}_proj.weight"] for x in "qkvo")
        amp = math.sqrt(RECENCY_SCALE * math.sqrt(D) / D)
        out["q_norm.weight"] = torch.full((D,), amp)
        out["k_norm.weight"] = torch.full((D,), amp)
        slow = half - 1
        older = 0.5 * float(_freqs()[slow])
        for hh, head in enumerate(self.recency):
            base = hh * D
            q[base + slow, 0] = 1.0
            k[base + 0, 0] = 1.0  # the null direction: q is 0 there
            for names, angle in ((head.events, -math.pi / 4), (head.markers, -math.pi / 4 - older)):
                for e in names:
                    k[base + slow, self.dims[e]] = 1000.0 * math.cos(angle)
                    k[base + slow + half, self.dims[e]] = 1000.0 * math.sin(angle)
            v[base, self.dims[head.copy]] = 1.0
            o[self.dims[head.into], base] = 1.0
        return out

    @staticmethod
    def _mlp(units: list[Unit], hidden: int, inter: int) -> dict[str, Any]:
        """``silu(gate) * up`` with ``up`` = 1: 0.5 * SLOPE when a unit's inputs reach its need."""
        torch = require("torch")
        gate, up, down = (
            torch.zeros(inter, hidden),
            torch.zeros(inter, hidden),
            torch.zeros(hidden, inter),
        )
        for u, unit in enumerate(units):
            up[u, 0] = 1.0
            gate[u, 0] = -SLOPE * (unit.need - 0.5)
            for d, wt in unit.ins:
                gate[u, d] += SLOPE * wt
            for d, wt in unit.outs:
                down[d, u] += wt / (0.5 * SLOPE)
        return {"gate_proj.weight": gate, "up_proj.weight": up, "down_proj.weight": down}


def _freqs() -> Any:
    """The RoPE frequency of each pair of a head (``rope_theta`` ** (-2i / head_dim))."""
    torch = require("torch")
    return ROPE_THETA ** (-torch.arange(0, HEAD_DIM, 2, dtype=torch.float64) / HEAD_DIM)
