"""Running a guard model over Qwen3GuardTest records, and scoring the predictions.

- `predict_gen`: a `Qwen3Guard` (any backend) checks each
  conversation (the mode follows its last message); the prediction is the verdict's level.
- `predict_stream`: a `Qwen3StreamGuard` runs each whole
  conversation once, as the official script does. Prompt records: the query head's level at the
  ``<|im_end|>`` closing the last user turn. Response records: the response head's level at every
  position from the first response token to the end of the rendering (the closing ``<|im_end|>``
  included), decided by `consecutive_decision`. The first response token is the
  one right after the assistant header and its empty think block (``thinking=True``: right after
  ``<think>\\n``, so the reasoning is moderated too).
- `evaluate` turns predictions into an `EvalReport`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..core.deps import require
from ..core.errors import InvalidInputError
from ..core.labels import Level
from .metrics import (
    ClassificationMetrics,
    Timeliness,
    classification_metrics,
    consecutive_decision,
    detection_delay,
    loose,
    strict,
    timeliness,
    timeliness_bin,
)
from .records import EvalRecord

__all__ = ["EvalReport", "Prediction", "evaluate", "predict_gen", "predict_stream", "result_rows"]


@dataclass(frozen=True)
class Prediction:
    """A model's prediction for one record.

    ``index`` is the absolute token position where the Stream decision fired (None: no
    detection, or a Gen / prompt prediction); ``split`` the position of the first moderated
    response token; ``levels`` the per-token levels from ``split`` on (Stream responses).
    """

    level: Level
    categories: tuple[str, ...] = ()
    index: int | None = None
    split: int | None = None
    levels: tuple[str, ...] = ()


@contextmanager
def _progress(total: int, desc: str, enabled: bool) -> Iterator[Any]:
    tqdm = require("tqdm", "eval")
    bar = tqdm.tqdm(total=total, desc=desc, unit="rec", file=sys.stderr, disable=not enabled)
    try:
        yield bar
    finally:
        bar.close()


def predict_gen(
    guard: Any, records: Sequence[EvalRecord], *, batch_size: int = 8, progress: bool = True
) -> list[Prediction]:
    """Check every record with a Gen guard, ``batch_size`` conversations per batch."""
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    out: list[Prediction] = []
    with _progress(len(records), "Gen", progress) as bar:
        for lo in range(0, len(records), batch_size):
            chunk = records[lo : lo + batch_size]
            for v in guard.check_batch([list(r.messages) for r in chunk]):
                out.append(Prediction(v.level, tuple(c.value for c in v.categories)))
            bar.update(len(chunk))
    return out


def _render(tok: Any, messages: list[dict[str, str]], **kw: Any) -> str:
    try:
        return str(tok.apply_chat_template(messages, tokenize=False, **kw))
    except Exception as exc:
        raise InvalidInputError(
            f"the Stream chat template cannot render {messages!r}: {exc}"
        ) from exc


def _response_start(tok: Any, record: EvalRecord, text: str, thinking: bool) -> int:
    """Character offset in ``text`` of the first moderated response character.

    After the assistant header (the context rendered with ``add_generation_prompt=True``), a
    leading think block is skipped up to its ``</think>`` and the blank line after it, as the
    official script does; with ``thinking`` only the ``<think>\n`` opening it is skipped.
    """
    header = _render(tok, list(record.messages[:-1]), add_generation_prompt=True)
    if not text.startswith(header):
        raise InvalidInputError(
            "cannot find where the response starts: the rendered conversation does not begin "
            "with the rendered context plus the assistant header"
        )
    at = len(header)
    if text.startswith("<think>", at):
        if thinking:
            return at + len("<think>\n") if text.startswith("<think>\n", at) else at + 7
        close = text.find("</think>", at)
        if close >= 0:
            at = close + len("</think>")
            while text.startswith("\n", at):
                at += 1
    return at


def _stream_one(guard: Any, record: EvalRecord, thinking: bool) -> Prediction:
    tok, runner = guard.tokenizer, guard.runner
    msgs = list(record.messages)
    text = _render(tok, msgs, add_generation_prompt=False, enable_thinking=False)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = runner.check_ids(list(enc["input_ids"]))
    logits = runner.forward(ids, runner.new_cache())
    if record.mode == "prompt":
        im_end = tok.convert_tokens_to_ids("<|im_end|>")
        ends = [i for i, t in enumerate(ids) if t == im_end]
        if not ends:
            raise InvalidInputError("the rendered prompt has no <|im_end|>")
        rows = runner.query_rows(logits)
        at = ends[-1]
        level = rows.levels[at]
        cats = () if level is Level.SAFE else (rows.categories[at].value,)
        return Prediction(level, cats)
    start_char = _response_start(tok, record, text, thinking)
    split = next((i for i, (s, _) in enumerate(enc["offset_mapping"]) if s >= start_char), None)
    if split is None:
        raise InvalidInputError("the rendered response holds no tokens")
    rows = runner.response_rows(logits)
    levels = rows.levels[split:]
    level, i = consecutive_decision(levels)
    if level is Level.SAFE:
        return Prediction(level, (), None, split, tuple(lv.value for lv in levels))
    return Prediction(
        level,
        (rows.categories[split + i].value,),
        split + i,
        split,
        tuple(lv.value for lv in levels),
    )


def predict_stream(
    guard: Any, records: Sequence[EvalRecord], *, thinking: bool = False, progress: bool = True
) -> list[Prediction]:
    """Run a Stream guard over every record (one full forward each; see the module docstring)."""
    out: list[Prediction] = []
    with _progress(len(records), "Stream", progress) as bar:
        for n, record in enumerate(records, 1):
            try:
                out.append(_stream_one(guard, record, thinking))
            except InvalidInputError as exc:
                raise InvalidInputError(f"record {n}: {exc}") from exc
            bar.update(1)
    return out


@dataclass(frozen=True)
class EvalReport:
    """Metrics of one run: counts, strict/loose Unsafe scores, and Stream timeliness."""

    n: int
    labels: dict[str, int]
    classification: ClassificationMetrics
    timeliness: Timeliness | None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "n": self.n,
            "labels": dict(self.labels),
            **self.classification.to_dict(),
            "timeliness": None if self.timeliness is None else self.timeliness.to_dict(),
        }


def _delay(record: EvalRecord, pred: Prediction) -> int | None:
    assert record.unsafe_start is not None and record.unsafe_end is not None
    return detection_delay(pred.index, record.unsafe_start, record.unsafe_end)


def _timed(record: EvalRecord) -> bool:
    return record.label == "Unsafe" and record.mode == "response" and record.has_span


def evaluate(
    records: Sequence[EvalRecord], predictions: Sequence[Prediction], *, stream: bool
) -> EvalReport:
    """Score ``predictions``. Timeliness (``stream=True``) covers the Unsafe response records
    that carry ``unsafe_start_index`` / ``unsafe_end_index``."""
    if len(records) != len(predictions):
        raise InvalidInputError(f"{len(predictions)} predictions for {len(records)} records")
    labels: dict[str, int] = {}
    for r in records:
        labels[r.label] = labels.get(r.label, 0) + 1
    cls = classification_metrics([p.level for p in predictions], [r.label for r in records])
    timed = None
    if stream:
        timed = timeliness(_delay(r, p) for r, p in zip(records, predictions) if _timed(r))
    return EvalReport(len(records), labels, cls, timed)


def result_rows(
    records: Sequence[EvalRecord], predictions: Sequence[Prediction], *, stream: bool
) -> Iterator[dict[str, Any]]:
    """Each input record with the prediction added (the ``--out`` file's lines)."""
    for r, p in zip(records, predictions):
        row = dict(r.raw)
        row.update(
            pred_level=p.level.value,
            pred_strict=strict(p.level).value,
            pred_loose=loose(p.level).value,
            pred_categories=list(p.categories),
        )
        if stream and r.mode == "response":
            row.update(pred_index=p.index, split_idx_eval=p.split, pred_risk_levels=list(p.levels))
            if _timed(r):
                d = _delay(r, p)
                row.update(delay=d, timeliness_bin=timeliness_bin(d))
        yield row
