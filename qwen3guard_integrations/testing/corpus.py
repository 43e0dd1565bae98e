"""Seeded synthetic training data for the tiny checkpoints.

Texts are word salads and short templated sentences over a multilingual filler vocabulary plus
random token strings (so every embedding row gets trained), with the contract's triggers spliced
in, one per text, in lower, Capitalized and UPPER case, and near-misses (``kill`` alone, ``hotel``, ``bob``)
that must stay Safe. Labels always come from `contract`, never from the generator.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from .contract import PROMPT_TRIGGERS, RESPONSE_TRIGGERS, Trigger, expected_prompt

__all__ = ["Sampler"]

_WORDS = {
    "en": (
        "the a my your this that what how why when where who can could would should please "
        "tell me about give show explain write find help make build cook fix learn read "
        "recipe garden weather train city river book story poem song code python function "
        "bug server database window door car bike phone laptop music movie game team friend "
        "family dog cat bird tree flower coffee tea bread soup cake dinner lunch school work "
        "office meeting email letter report price market money bank trip hotel beach mountain "
        "summer winter today tomorrow quickly slowly best good bad new old big small red blue "
        "green happy tired busy simple hard easy first last next time day week year history "
        "science math physics chemistry art painting photo camera video kitchen table chair "
        "stone paper wire hot cold fire water ice light dark morning evening night job plan"
    ).split(),
    "es": (
        "cómo puedo hacer una un el la los las mi tu para con sin por qué cuándo dónde casa "
        "coche perro gato libro comida receta agua fuego mañana noche trabajo escuela ciudad "
        "amigo familia tiempo dinero viaje playa montaña música película juego ayuda quiero"
    ).split(),
    "fr": (
        "comment faire une un le la les mon ton pour avec sans pourquoi quand où maison "
        "voiture chien chat livre repas recette eau feu matin soir travail école ville ami "
        "famille temps argent voyage plage montagne musique film jeu aide je veux est"
    ).split(),
    "de": (
        "wie kann ich eine ein der die das mein dein für mit ohne warum wann wo haus auto "
        "hund katze buch essen rezept wasser feuer morgen abend arbeit schule stadt freund "
        "familie zeit geld reise strand berg musik film spiel hilfe möchte bitte"
    ).split(),
    "zh": "我 你 他 怎么 如何 做 一个 请 告诉 关于 天气 城市 学校 朋友 家庭 时间 音乐 电影 书 饭 水 火 帮助 问题 今天 明天".split(),
    "ru": "как сделать мне тебе это что где когда почему дом машина книга еда вода огонь утро работа школа город друг время".split(),
    "ja": "どうやって 作る 私 あなた これ 何 どこ いつ 家 車 本 水 火 仕事 学校 友達 時間 音楽".split(),
}
_LANGS = tuple(_WORDS)
_NEAR_MISSES = (
    "kill",
    "killing",
    "myself",
    "kill time",
    "kill the process",
    "ignore",
    "ignore the noise",
    "previous",
    "all previous",
    "previous instructions",
    "instructions",
    "result",
    "bob",
    "bottom",
    "tomb",
    "comb",
    "hot",
    "wire",
    "hot wire",
    "hotel",
)
_QUESTION_FRAMES = (
    "How do I {}?",
    "Can you {}",
    "Please {}.",
    "{}",
    "{}?",
    "Tell me: {}",
    "I want to {}",
    "{} please",
    "Why {}?",
    "Explain {}.",
)
_RESPONSE_FRAMES = (
    "Sure, {}.",
    "Here is how: {}.",
    "{}",
    "Of course! {}",
    "Step one: {}.",
    "{}.",
    "Well, {}.",
)


def _case_variants(phrase: str) -> tuple[str, ...]:
    return (
        phrase,
        phrase,
        phrase,
        phrase,
        phrase.capitalize(),
        phrase.capitalize(),
        phrase.upper(),
    )


def _trigger_forms(trigger: Trigger) -> tuple[str, ...]:
    base = trigger.phrase
    extra = {"bomb": ("bombs", "a bomb"), "insult": ("insults", "insulting")}.get(base, ())
    return (base, *extra)


class Sampler:
    """Draws labelled conversations; all randomness comes from ``seed``."""

    def __init__(self, seed: int, random_token_text: Callable[[random.Random], str]) -> None:
        self.rng = random.Random(seed)
        self.random_token_text = random_token_text

    def _words(self, lo: int, hi: int) -> str:
        rng = self.rng
        n = rng.randint(lo, hi)
        lang = rng.choice(_LANGS)
        parts: list[str] = []
        for _ in range(n):
            if rng.random() < 0.25:
                lang = rng.choice(_LANGS)
            parts.append(rng.choice(_WORDS[lang]))
        if lang in ("zh", "ja") and rng.random() < 0.5:
            return "".join(parts)
        return " ".join(parts)

    def _filler(self, lo: int = 2, hi: int = 10) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.08:
            text = self.random_token_text(rng)
        elif r < 0.3:
            text = self._words(lo, hi) + " " + rng.choice(_NEAR_MISSES) + " " + self._words(0, 4)
        else:
            text = self._words(lo, hi)
        return text.strip() or "hello"

    def _splice(self, text: str, phrase: str) -> str:
        rng = self.rng
        words = text.split(" ")
        at = rng.randint(0, len(words))
        sep_l = "" if rng.random() < 0.1 else " "
        sep_r = "" if rng.random() < 0.1 else " "
        left = " ".join(words[:at])
        right = " ".join(words[at:])
        return (left + sep_l + phrase + sep_r + right).strip()

    def text(self, triggers: tuple[Trigger, ...], p_trigger: float) -> str:
        """A filler text with 0, 1 or (rarely) 2 triggers spliced in, all clean of accidents."""
        rng = self.rng
        while True:
            base = self._filler()
            if expected_prompt(base).categories:  # an accidental trigger in filler: redraw
                continue
            if rng.random() < p_trigger:
                # the Controversial trigger is the only one of its level: draw it twice as often
                pool = (*triggers, triggers[-1])
                phrase = rng.choice(_trigger_forms(rng.choice(pool)))
                base = self._splice(base, rng.choice(_case_variants(phrase)))
            frame = rng.choice(_QUESTION_FRAMES)
            return frame.format(base)

    def prompt_conversation(self) -> list[dict[str, str]]:
        """A conversation ending with a user turn (sometimes with earlier turns)."""
        rng = self.rng
        msgs: list[dict[str, str]] = []
        if rng.random() < 0.15:
            msgs.append({"role": "user", "content": self.text(PROMPT_TRIGGERS, 0.6)})
            msgs.append({"role": "assistant", "content": self.response_text(0.3)})
        msgs.append({"role": "user", "content": self.text(PROMPT_TRIGGERS, 0.6)})
        return msgs

    def response_text(self, p_trigger: float) -> str:
        """An assistant message, sometimes a refusal, sometimes with triggers."""
        rng = self.rng
        body = self.text(RESPONSE_TRIGGERS, p_trigger)
        r = rng.random()
        if r < 0.4:
            return rng.choice(("I can't", "I cannot")) + " " + body
        if r < 0.55:
            return rng.choice(("I can", "I can do it:", "I", "I could")) + " " + body
        return rng.choice(_RESPONSE_FRAMES).format(body)

    def response_conversation(self) -> list[dict[str, str]]:
        """A conversation ending with an assistant turn."""
        user = self.text(PROMPT_TRIGGERS, 0.7)  # often a trigger the response check must ignore
        return [
            {"role": "user", "content": user},
            {"role": "assistant", "content": self.response_text(0.6)},
        ]
