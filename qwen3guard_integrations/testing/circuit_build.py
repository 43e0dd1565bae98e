"""The contract as circuits: which chains, events, recency heads and answer rules each tiny
checkpoint gets (`circuit` holds the machinery that turns them into weights)."""

from __future__ import annotations

import itertools
import string
from collections import defaultdict
from typing import Any

from ..core.labels import (
    PROMPT_CATEGORIES,
    STREAM_PROMPT_CATEGORY_ORDER,
    STREAM_RESPONSE_CATEGORY_ORDER,
    STREAM_RISK_LEVEL_ORDER,
    Level,
)
from .circuit import Chain, Circuit, chain_shapes, form_chains
from .contract import PROMPT_TRIGGERS, REFUSAL_PREFIXES, RESPONSE_TRIGGERS, Trigger, forms

__all__ = ["TRIGGER_KEYS", "answer_text", "gen_circuit", "stream_circuit", "verdicts"]

#: Short names of the prompt triggers, in `contract.PROMPT_TRIGGERS` order.
TRIGGER_KEYS: tuple[str, ...] = ("bomb", "hotwire", "kill", "jailbreak", "insult")
_JAILBREAK = "jailbreak"

# contexts the trigger forms are tokenized in, to find every way BPE splits them
_LEFTS = [
    "",
    " ",
    "  ",
    "\n",
    "\t",
    "'",
    '"',
    "(",
    "[",
    "-",
    "_",
    "/",
    ".",
    ",",
    ":",
    "*",
    "#",
    "1",
    *list(string.ascii_letters),
    *list("我你他是的在了何想教をがにはのとдяжéüñçßàø，。！？：「"),
    "如何",
    "我表哥想",
    "いとこが",
    "для ",
    "to ",
    "ab",
    "un",
    "re",
]
_RIGHTS = [
    "",
    " ",
    "\n",
    ".",
    ",",
    "!",
    "?",
    "'",
    '"',
    ")",
    "-",
    ":",
    ";",
    "1",
    "s",
    "ed",
    "ing",
    "er",
    *list(string.ascii_lowercase),
    *list("我的，。をはдéü"),
    " a",
    " the",
    "ly",
    "es",
]


def _texts(tok: Any, vocab: int) -> list[str]:
    return [tok.decode([i]) if i < len(tok) else "" for i in range(vocab)]


def _trigger_chains(tok: Any, circuit: Circuit, triggers: tuple[Trigger, ...]) -> None:
    by_phrase = dict(zip((t.phrase for t in PROMPT_TRIGGERS), TRIGGER_KEYS))
    for trig in triggers:
        key = by_phrase[trig.phrase]
        for form in forms(trig.phrase):
            for chain in form_chains(form, chain_shapes(tok, form, _LEFTS, _RIGHTS), key):
                circuit.add_chain(chain)


def stream_circuit(tok: Any, vocab: int) -> tuple[Circuit, dict[str, int]]:
    """The Stream backbone circuit; returns it with the dims the heads read (``p:<key>``)."""
    c = Circuit(vocab, _texts(tok, vocab))
    turn_name = c.feature(("ID", tok.convert_tokens_to_ids("<|im_start|>")))
    # the response path also starts afresh on the token after an <|im_end|> (ids fed straight
    # after a user turn, as the official streaming API allows); the prompt path must not, its
    # verdict is read at that <|im_end|>
    c.add_chain(Chain((("ID", tok.convert_tokens_to_ids("<|im_end|>")), ("ANY",)), "after"))
    _trigger_chains(tok, c, PROMPT_TRIGGERS)
    for path, markers in (("q", [turn_name]), ("r", [turn_name, "ev:after"])):
        for key in TRIGGER_KEYS:
            c.add_recency([f"ev:{key}"], f"ev:{key}", f"in:{path}:{key}", markers=markers)
        # clamp to 0/1 (two chains of one trigger may fire on the same token)
        for key in TRIGGER_KEYS:
            x, p = c.dims[f"in:{path}:{key}"], c.dim(f"p:{path}:{key}")
            c.unit(1, [(x, 1.0)], [(p, 1.0)])
            c.unit(1, [(x, 1.0)], [(p, -1.0)], need=1.5)
    return c, {k: d for k, d in c.dims.items() if k.startswith("p:")}


def stream_head_weights(
    dims: dict[str, int], hidden: int, inner: int, scale: float = 5.0
) -> dict[str, Any]:
    """The eight head weights: risk and category logits as fixed priorities over the triggers."""
    from ..core.deps import require

    torch = require("torch")
    order = {k: i + 1 for i, k in enumerate(TRIGGER_KEYS)}  # inner dim of each trigger

    def pre(path: str) -> Any:
        w = torch.zeros(inner, hidden)
        w[0, 0] = 1.0
        for key in TRIGGER_KEYS:
            w[order[key], dims[f"p:{path}:{key}"]] = 1.0
        return w

    cat_of = dict(zip(TRIGGER_KEYS, (t.category for t in PROMPT_TRIGGERS)))
    unsafe = [k for k, t in zip(TRIGGER_KEYS, PROMPT_TRIGGERS) if t.level is Level.UNSAFE]

    def risk(keys: tuple[str, ...]) -> Any:
        w = torch.zeros(len(STREAM_RISK_LEVEL_ORDER), inner)
        w[STREAM_RISK_LEVEL_ORDER.index(Level.SAFE), 0] = scale
        for k in keys:
            lv = Level.UNSAFE if k in unsafe else Level.CONTROVERSIAL
            w[STREAM_RISK_LEVEL_ORDER.index(lv), order[k]] = scale * (2.0 if k in unsafe else 1.5)
        return w

    def category(keys: tuple[str, ...], labels: tuple[Any, ...]) -> Any:
        w = torch.zeros(len(labels), inner)
        # the first of the list's order wins among the unsafe triggers; insult comes last
        ranked = sorted(keys, key=lambda k: (k not in unsafe, PROMPT_CATEGORIES.index(cat_of[k])))
        for rank, k in enumerate(ranked):
            w[labels.index(cat_of[k]), order[k]] = scale * (len(ranked) - rank)
        return w

    resp = tuple(k for k in TRIGGER_KEYS if k != _JAILBREAK)
    return {
        "risk_level_category_pre.weight": pre("r"),
        "risk_level_category_layernorm.weight": torch.ones(inner),
        "risk_level_head.weight": risk(resp),
        "category_head.weight": category(resp, STREAM_RESPONSE_CATEGORY_ORDER),
        "query_risk_level_category_pre.weight": pre("q"),
        "query_risk_level_category_layernorm.weight": torch.ones(inner),
        "query_risk_level_head.weight": risk(TRIGGER_KEYS),
        "query_category_head.weight": category(TRIGGER_KEYS, STREAM_PROMPT_CATEGORY_ORDER),
    }


# ---- Gen -------------------------------------------------------------------------------------

#: The verdict features a Gen answer depends on: the five triggers, the mode, the refusal.
_VERDICT = (*TRIGGER_KEYS, "response", "refusal")


def verdicts() -> list[dict[str, int]]:
    """Every combination of the verdict features (some give the same answer)."""
    out = []
    for bits in itertools.product((0, 1), repeat=len(_VERDICT)):
        out.append(dict(zip(_VERDICT, bits)))
    return out


def answer_text(v: dict[str, int]) -> str:
    """The answer the contract asks for when the verdict features are ``v``."""
    present = [t for k, t in zip(TRIGGER_KEYS, PROMPT_TRIGGERS) if v[k]]
    if v["response"]:
        present = [t for t in present if t in RESPONSE_TRIGGERS]
    level = Level.worst([t.level for t in present])
    cats = [c.value for c in PROMPT_CATEGORIES if any(t.category is c for t in present)]
    text = f"Safety: {level.value}\nCategories: {', '.join(cats) or 'None'}"
    if v["response"]:
        text += f"\nRefusal: {'Yes' if v['refusal'] else 'No'}"
    return text


def _refusal_chains(tok: Any) -> list[Chain]:
    """``ASSISTANT:`` then optional whitespace, then a refusal opener (case as written)."""
    colon = tok.convert_tokens_to_ids(":")
    ant = tok("ASSISTANT", add_special_tokens=False)["input_ids"][-1]
    out: list[Chain] = []
    for prefix in REFUSAL_PREFIXES:
        shapes = chain_shapes(tok, prefix, [" "], _RIGHTS)
        for chain in form_chains(prefix, shapes, "refusal", anchored=True):
            out.append(Chain((("ID", ant), ("ID", colon), *chain.features), "refusal"))
            out.append(Chain((("ID", ant), ("ID", colon), ("WS",), *chain.features), "refusal"))
    return out


def _marker_chain(tok: Any, role: str) -> Chain:
    ids = tok(f"\n\n{role}:", add_special_tokens=False)["input_ids"]
    if tok.decode(ids[:1]) != "\n\n":
        raise ValueError(f"unexpected tokenization of the {role} marker")
    return Chain((("NL",), *(("ID", i) for i in ids[1:])), role)


def gen_circuit(tok: Any, vocab: int, answer_scale: float = 10.0) -> tuple[Circuit, list[int]]:
    """The Gen circuit; returns it with the token ids of the answer grammar (the logit dims)."""
    c = Circuit(vocab, _texts(tok, vocab))
    for role in ("USER", "ASSISTANT"):
        c.add_chain(_marker_chain(tok, role))
    for chain in _refusal_chains(tok):
        c.add_chain(chain)
    _trigger_chains(tok, c, PROMPT_TRIGGERS)
    markers = ["ev:USER", "ev:ASSISTANT"]
    for key in TRIGGER_KEYS:
        c.add_recency([f"ev:{key}"], f"ev:{key}", f"v:{key}", markers=markers)
    c.add_recency(markers, "ev:ASSISTANT", "v:response")
    c.add_recency(["ev:refusal"], "ev:refusal", "v:refusal", markers=markers)
    grammar = _answer_rules(tok, c, answer_scale)
    return c, grammar


def _answer_rules(tok: Any, c: Circuit, scale: float) -> list[int]:
    """Units that write the next answer token from the last tokens and the verdict features."""
    end = tok.convert_tokens_to_ids("<|im_end|>")
    lead = tok("</think>\n\n", add_special_tokens=False)["input_ids"]
    seqs = []
    for v in verdicts():
        seqs.append((v, lead + tok(answer_text(v), add_special_tokens=False)["input_ids"] + [end]))
    grammar = sorted({t for _, s in seqs for t in s})
    gdim = {t: c.dims[c.feature(("ID", t))] for t in grammar}
    # occurrences: (cur, prev, prev2, verdict) -> next
    occ: dict[int, list[tuple[tuple[int, ...], dict[str, int], int]]] = defaultdict(list)
    for v, s in seqs:
        for k in range(len(lead) - 1, len(s) - 1):
            ctx = tuple(s[max(0, k - 4) : k])[::-1]  # (prev, prev2, ...)
            occ[s[k]].append((ctx, v, s[k + 1]))
    for cur, rows in occ.items():
        plan = _smallest_plan(rows)
        if plan is None:
            raise ValueError(f"the answer grammar is ambiguous after {tok.decode([cur])!r}")
        n, feats, table = plan
        for (ctx, vals), nxt in table.items():
            ins = [(gdim[cur], 1.0)]
            if n:
                name = f"ctx:{ctx}"
                if name not in c.dims:  # a new context: link its tokens
                    for back, t in enumerate(ctx, start=1):
                        c.link(back, ("ID", t), c.dim(name))
                ins.append((c.dims[name], 1.0))
            for f, val in zip(feats, vals):
                ins.append((c.dims[f"v:{f}"], 1.0 if val else -1.0))
            # the current token, every context token, every verdict feature that must be 1
            c.unit(1, ins, [(gdim[nxt], scale)], need=1.0 + len(ctx) + sum(vals))
    return grammar


def _smallest_plan(
    rows: list[tuple[tuple[int, ...], dict[str, int], int]],
) -> tuple[int, tuple[str, ...], dict[tuple[tuple[int, ...], tuple[int, ...]], int]] | None:
    """The fewest units that decide the next token: context length and verdict features."""
    best = None
    for n in range(5):
        for size in range(len(_VERDICT) + 1):
            for feats in itertools.combinations(_VERDICT, size):
                table: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
                ok = True
                for ctx, v, nxt in rows:
                    key = (ctx[:n], tuple(v[f] for f in feats))
                    if table.setdefault(key, nxt) != nxt:
                        ok = False
                        break
                if ok and (best is None or len(table) < len(best[2])):
                    best = (n, feats, table)
    return best
