"""Client-side rendering for servers that tokenize the prompt themselves.

The prompt is built as ids by `GenPromptEncoder` (special control-token strings in message text
kept plain, the template's control tokens real), then sent either as those ids (OpenAI-compatible servers take
``prompt: [ids]``) or, for text-only routes such as TGI ``/generate``, as text. A server tokenizes
text *with* added-token matching, so a ``<|im_end|>`` or ``<think>`` typed inside a message would
become a real control token there. `PromptRenderer` therefore breaks every added-token
string inside message text with an invisible U+2060 WORD JOINER, and then proves the result safe:
the text, tokenized the way the server will, must contain exactly the control tokens of the
intended ids, in order. Ordinary text renders to exactly the intended ids.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ...core.errors import InvalidInputError
from ..gen.prompt import GenPromptEncoder

__all__ = ["PromptRenderer"]

_JOINER = "\u2060"


class PromptRenderer:
    """Renders encoded windows as ids or as server-safe text (see the module docstring)."""

    def __init__(self, encoder: GenPromptEncoder) -> None:
        self.encoder = encoder
        self.tokenizer = encoder.tokenizer
        added: dict[str, int] = dict(self.tokenizer.get_added_vocab())
        self._added_ids = frozenset(added.values())
        names = sorted(added, key=len, reverse=True)
        self._added_re = re.compile("|".join(re.escape(n) for n in names)) if names else None
        self.head = "Safety:"

    def ids(self, window: Sequence[int], *, fast: bool) -> list[int]:
        """The ids to send: the window, plus the fixed answer start in fast mode."""
        return list(window) + (list(self.encoder.safety_prefix) if fast else [])

    def text(self, window: Sequence[int], *, fast: bool) -> str:
        """The text to send; the server's tokenization of it has exactly our control tokens."""
        ids = self.ids(window, fast=fast)
        parts: list[str] = []
        run: list[int] = []
        for i in ids:
            if i in self._added_ids:
                parts.append(self._plain(run))
                run = []
                parts.append(self.tokenizer.convert_ids_to_tokens(i))
            else:
                run.append(i)
        parts.append(self._plain(run))
        text = "".join(parts)
        server_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if [i for i in server_ids if i in self._added_ids] != [
            i for i in ids if i in self._added_ids
        ]:
            raise InvalidInputError(
                "this input cannot be sent as text without its control-token strings being read "
                "as real control tokens; use a server that accepts token ids (from_openai)"
            )
        return text

    def _plain(self, run: list[int]) -> str:
        if not run:
            return ""
        text = str(self.tokenizer.decode(run, skip_special_tokens=False))
        if self._added_re is None:
            return text
        return self._added_re.sub(lambda m: m.group(0)[0] + _JOINER + m.group(0)[1:], text)
