"""Qwen3Guard-Gen on a local ``transformers`` model: batched, with a one-forward fast mode.

Fast mode prefills the prompt plus the fixed answer start ``Safety:`` and reads the level from
the logits of the next token (the three levels start with distinct sub-tokens); it decodes the
rest of the answer (categories, refusal) only when needed: when the level is not Safe, or in
response mode where the refusal is asked for. Full mode is plain greedy decoding. Both stop as
soon as the verdict's lines are complete.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Sequence
from typing import Any

from ...core.deps import require
from ...core.errors import InvalidInputError
from ...core.gen_answer import GenAnswer, verdict_from_answers
from ...core.labels import Level, Role
from ...core.messages import Message
from ...core.verdict import Verdict
from ..base import BackendHealth
from ..loading import cache_keyword, dtype_kwarg, load_or_explain, resolve_device, resolve_dtype
from .forced import ForcedAnswers, continue_answers, shared_prefix
from .prompt import GenPrompt, GenPromptEncoder, check_gen_config

__all__ = ["TransformersGenBackend"]

_LEVELS = (Level.SAFE, Level.UNSAFE, Level.CONTROVERSIAL)


class TransformersGenBackend:
    """A Gen checkpoint loaded with ``transformers``; thread-safe (one forward at a time)."""

    name = "transformers"
    endpoint: str | None = None
    coalesce = True  # the guard's micro-batcher feeds it batches

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str,
        max_new_tokens: int = 64,
        max_input_tokens: int | None = None,
        batch_size: int = 8,
        window_overlap: int = 64,
    ) -> None:
        self.torch = require("torch")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        context = int(getattr(model.config, "max_position_embeddings", 32768))
        self.encoder = GenPromptEncoder(
            tokenizer,
            max_input_tokens=max_input_tokens or context - max_new_tokens - 8,
            window_overlap=window_overlap,
        )
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        eos = model.generation_config.eos_token_id or tokenizer.eos_token_id
        self.eos_ids = [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]
        self._label_ids = [self.encoder.level_first_token[lv] for lv in _LEVELS]
        self._lock = threading.Lock()
        self._prefixes: dict[Role, tuple[tuple[int, ...], Any]] = {}
        self._forced = ForcedAnswers(tokenizer, self.encoder.safety_prefix)

    @classmethod
    def from_pretrained(
        cls,
        model_id: str,
        *,
        device: Any = None,
        dtype: Any = None,
        revision: str | None = None,
        local_files_only: bool | None = None,
        **kwargs: Any,
    ) -> TransformersGenBackend:
        """Load a Gen checkpoint (Hub id or local folder); device/dtype chosen automatically."""
        transformers = require("transformers")
        dev = resolve_device(device)
        opts: dict[str, Any] = {"revision": revision}
        if local_files_only is not None:
            opts["local_files_only"] = local_files_only
        tokenizer = load_or_explain(transformers.AutoTokenizer, model_id, "tokenizer of", **opts)
        config = load_or_explain(transformers.AutoConfig, model_id, "config of", **opts)
        check_gen_config(config, str(model_id))
        model = load_or_explain(
            transformers.AutoModelForCausalLM,
            model_id,
            "Gen model",
            **{dtype_kwarg(): resolve_dtype(dtype, dev, config)},
            **opts,
        )
        return cls(model.to(dev), tokenizer, model_id=str(model_id), **kwargs)

    # --- the protocol ------------------------------------------------------------------------

    def encode(self, messages: Sequence[Message]) -> GenPrompt:
        """Encode a checked conversation (windows, mode)."""
        return self.encoder.encode(messages)

    def check_batch(
        self, conversations: Sequence[Sequence[Message]], *, fast: bool = True
    ) -> list[Verdict | Exception]:
        """One verdict (or the error for that item) per conversation, in order."""
        start = time.perf_counter()
        prompts: list[GenPrompt | Exception] = []
        for convo in conversations:
            try:
                prompts.append(self.encode(convo))
            except InvalidInputError as exc:
                prompts.append(exc)
        flat = [
            (i, w) for i, p in enumerate(prompts) if isinstance(p, GenPrompt) for w in p.windows
        ]
        roles = [prompts[i].role for i, _ in flat]  # type: ignore[union-attr]
        answers = self.generate_answers([w for _, w in flat], roles, fast=fast)
        per_item: dict[int, list[GenAnswer]] = {}
        for (i, _), ans in zip(flat, answers):
            per_item.setdefault(i, []).append(ans)
        latency = (time.perf_counter() - start) * 1000
        out: list[Verdict | Exception] = []
        for i, p in enumerate(prompts):
            if isinstance(p, Exception):
                out.append(p)
                continue
            try:
                out.append(
                    verdict_from_answers(
                        per_item[i],
                        role=p.role,
                        model=self.model_id,
                        backend=self.name,
                        latency_ms=latency,
                    )
                )
            except Exception as exc:  # a parse failure belongs to its item alone
                out.append(exc)
        return out

    async def acheck_batch(
        self, conversations: Sequence[Sequence[Message]], *, fast: bool = True
    ) -> list[Verdict | Exception]:
        """`check_batch` in a worker thread."""
        return await asyncio.to_thread(self.check_batch, conversations, fast=fast)

    def health(self) -> BackendHealth:
        """A loaded local model is always ready."""
        info = {"model_id": self.model_id, "device": str(self.device)}
        return BackendHealth(True, self.name, None, info=info)

    async def ahealth(self) -> BackendHealth:
        """Async twin of `health`."""
        return self.health()

    def close(self) -> None:
        """Nothing to release (the model is freed with the object)."""

    # --- inference ---------------------------------------------------------------------------

    def generate_answers(
        self, windows: Sequence[Sequence[int]], roles: Sequence[Role], *, fast: bool
    ) -> list[GenAnswer]:
        """The answer text (and level scores) for each encoded window, in batches."""
        out: list[GenAnswer] = []
        with self._lock, self.torch.inference_mode():
            for lo in range(0, len(windows), self.batch_size):
                chunk = [list(w) for w in windows[lo : lo + self.batch_size]]
                chunk_roles = list(roles[lo : lo + self.batch_size])
                out += self._fast(chunk, chunk_roles) if fast else self._full(chunk, chunk_roles)
        return out

    def _left_pad(self, rows: list[list[int]]) -> tuple[Any, Any]:
        torch = self.torch
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _scores(self, logits: Any) -> list[dict[Level, float]]:
        probs = logits.float().softmax(-1)[:, self._label_ids]
        probs = probs / probs.sum(-1, keepdim=True).clamp_min(1e-12)
        return [{lv: float(p[k]) for k, lv in enumerate(_LEVELS)} for p in probs.cpu()]

    def _template_prefix(self, role: Role) -> tuple[tuple[int, ...], Any]:
        """The ids every conversation of this mode starts with, and their KV cache (computed once).

        The template's preamble (task, policy, categories) is the same for every check: it runs
        through the model once, and each batch starts from a copy of its cache.
        """
        if role not in self._prefixes:
            transformers = require("transformers")
            a, b = (("a",), ("b",)) if role is Role.PROMPT else (("q", "a"), ("r", "b"))
            x = self.encoder.encode(_conversation(*a)).windows[0]
            y = self.encoder.encode(_conversation(*b)).windows[0]
            ids = tuple(
                x[: max(shared_prefix(x, y) - 1, 0)]
            )  # keep the last shared token in the suffix
            cache = transformers.DynamicCache(config=self.model.config)
            if ids:
                self.model(
                    input_ids=self.torch.tensor([ids], device=self.device),
                    use_cache=True,
                    logits_to_keep=1,
                    **{cache_keyword(): cache},
                )
            self._prefixes[role] = (ids, cache)
        return self._prefixes[role]

    def _fast(self, rows: list[list[int]], roles: list[Role]) -> list[GenAnswer]:
        out: list[GenAnswer | None] = [None] * len(rows)
        groups: dict[Role, list[int]] = {}
        for i, role in enumerate(roles):
            groups.setdefault(role, []).append(i)
        for role, members in groups.items():
            answers = self._fast_group([rows[i] for i in members], role)
            for i, ans in zip(members, answers):
                out[i] = ans
        return [a for a in out if a is not None]

    def _fast_group(self, rows: list[list[int]], role: Role) -> list[GenAnswer]:
        torch = self.torch
        prefix_ids, prefix_cache = self._template_prefix(role)
        plen = len(prefix_ids)
        if any(tuple(r[:plen]) != prefix_ids for r in rows):  # an unusual template: no sharing
            plen, prefix_cache = 0, None
        safety = list(self.encoder.safety_prefix)
        ids, smask = self._left_pad([r[plen:] + safety for r in rows])
        n = len(rows)
        mask = torch.cat([torch.ones((n, plen), dtype=smask.dtype, device=smask.device), smask], 1)
        pos = plen + (smask.cumsum(-1) - 1).clamp_min(0)
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(n)
        else:
            cache = require("transformers").DynamicCache(config=self.model.config)
        logits = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            use_cache=True,
            logits_to_keep=1,
            **{cache_keyword(): cache},
        ).logits[:, -1]
        scores = self._scores(logits)
        levels = [max(sc, key=sc.__getitem__) for sc in scores]
        # a Safe prompt needs nothing more: its answer is "Safety: Safe" (categories: none)
        texts = [f"Safety: {lv.value}" for lv in levels]
        more = [i for i, lv in enumerate(levels) if lv is not Level.SAFE or role is Role.RESPONSE]
        if more:
            # continue those rows from the prefill's cache: no second prefill
            keep = torch.tensor(more, device=ids.device)
            cache.batch_select_indices(keep)
            first = [self.encoder.level_first_token[levels[i]] for i in more]
            for i, text in zip(more, self._continue(cache, first, mask[keep], pos[keep, -1], role)):
                texts[i] = text
        return [GenAnswer(t, sc) for t, sc in zip(texts, scores)]

    def _continue(
        self, cache: Any, first: list[int], mask: Any, last_pos: Any, role: Role
    ) -> list[str]:
        """The answers of rows whose level token is ``first`` (`continue_answers`)."""
        return continue_answers(self, cache, first, mask, last_pos, role)

    def _decode_loop(
        self,
        cache: Any,
        first: list[int],
        mask: Any,
        last_pos: Any,
        roles: list[Role],
        heads: list[str],
    ) -> list[str]:
        """Greedy decoding from a filled cache, feeding ``first`` first; stops per row at EOS or
        once the verdict's lines are complete."""
        torch = self.torch
        n = len(first)
        last_field = ["refusal:" if r is Role.RESPONSE else "categories:" for r in roles]
        out: list[list[int]] = [[] for _ in range(n)]
        done = [False] * n
        cur = torch.tensor(first, device=mask.device)[:, None]
        pos = last_pos
        for _ in range(self.max_new_tokens):
            mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=mask.device)], 1)
            pos = pos + 1
            logits = self.model(
                input_ids=cur,
                attention_mask=mask,
                position_ids=pos[:, None],
                use_cache=True,
                **{cache_keyword(): cache},
            ).logits[:, -1]
            nxt = logits.argmax(-1)
            for b in range(n):
                if done[b]:
                    continue
                t = int(nxt[b])
                if t in self.eos_ids:
                    done[b] = True
                    continue
                out[b].append(t)
                piece = self.tokenizer.decode([t])
                # a line can only be complete once a newline or a Yes/No has been written
                if "\n" in piece or piece.strip().lower() in ("yes", "no"):
                    done[b] = _line_done(heads[b] + self.tokenizer.decode(out[b]), last_field[b])
            if all(done):
                break
            cur = nxt[:, None]
        return [self.tokenizer.decode(o, skip_special_tokens=True) for o in out]

    def _full(self, rows: list[list[int]], roles: list[Role]) -> list[GenAnswer]:
        results = self._greedy(rows, roles, want_scores=True)
        return [GenAnswer(text, scores) for text, scores in results]

    def _greedy(
        self,
        rows: list[list[int]],
        roles: list[Role],
        *,
        want_scores: bool = False,
    ) -> list[tuple[str, dict[Level, float] | None]]:
        transformers = require("transformers")
        ids, mask = self._left_pad(rows)
        width = ids.shape[1]
        stop = _LinesComplete(self.tokenizer, width, roles)
        gen = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids,
            stopping_criteria=transformers.StoppingCriteriaList([stop]),
            return_dict_in_generate=True,
            output_scores=want_scores,
        )
        out: list[tuple[str, dict[Level, float] | None]] = []
        for b in range(len(rows)):
            new = [int(t) for t in gen.sequences[b, width:]]
            cut = next((k for k, t in enumerate(new) if t in self.eos_ids), len(new))
            new = new[:cut]
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            scores = None
            if want_scores:
                step = self._level_step(new)
                if step is not None and step < len(gen.scores):
                    scores = self._scores(gen.scores[step][b : b + 1])[0]
            out.append((text, scores))
        return out

    def _level_step(self, new: list[int]) -> int | None:
        """The generation step whose token is the level (the one after ``Safety:``)."""
        for k in range(1, len(new) + 1):
            if self.tokenizer.decode(new[:k]).rstrip().endswith("Safety:"):
                return k
        return None


def _line_done(text: str, last_field: str) -> bool:
    """Whether the answer ``text`` has completed the line of ``last_field`` (lower case)."""
    text = text.lower()
    at = text.rfind(last_field)
    tail = text[at + len(last_field) :] if at >= 0 else ""
    return at >= 0 and ("\n" in tail or tail.strip() in ("yes", "no"))


def _conversation(*texts: str) -> list[Message]:
    return [
        Message(role="user" if k % 2 == 0 else "assistant", content=t) for k, t in enumerate(texts)
    ]


class _LinesComplete:
    """Stops generation per row once the verdict's last needed line is complete."""

    def __init__(self, tokenizer: Any, start: int, roles: list[Role]) -> None:
        self.tokenizer = tokenizer
        self.start = start
        self.last_field = ["refusal:" if r is Role.RESPONSE else "categories:" for r in roles]

    def row_done(self, b: int, new_ids: Any) -> bool:
        """Whether row ``b``, having generated ``new_ids``, has completed its last line."""
        return _line_done(self.tokenizer.decode(new_ids), self.last_field[b])

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        torch = require("torch")
        done = [self.row_done(b, input_ids[b, self.start :]) for b in range(input_ids.shape[0])]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
