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
from ..core.labels import STREAM_RISK_LEVEL_ORDER, Level
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

__all__ = [
    "EvalReport",
    "Prediction",
    "evaluate",
    "official_rows",
    "predict_gen",
    "predict_stream",
    "result_rows",
]


@dataclass(frozen=True)
class Prediction:
    """A model's prediction for one record.

    ``index`` is the absolute token position where the Stream decision fired (None: no
    detection, or a Gen / prompt prediction); ``split`` the position of the first scored token;
    ``levels`` / ``level_probs`` / ``token_categories`` the per-token head outputs from ``split``
    on (Stream: the response tokens, or for prompts the last user turn's content through its
    ``<|im_end|>``, as the official script writes them); ``input_ids`` the rendered
    conversation (Stream). ``raw`` is the Gen model's answer text. ``error`` says why the record
    could not be scored (its ``level`` is then Safe, as the official scripts count an output
    without a ``Safety:`` line).
    """

    level: Level
    categories: tuple[str, ...] = ()
    index: int | None = None
    split: int | None = None
    levels: tuple[str, ...] = ()
    level_probs: tuple[float, ...] = ()
    token_categories: tuple[str, ...] = ()
    input_ids: tuple[int, ...] = ()
    raw: str | None = None
    error: str | None = None


@contextmanager
def _progress(total: int, desc: str, enabled: bool) -> Iterator[Any]:
    tqdm = require("tqdm", "eval")
    bar = tqdm.tqdm(total=total, desc=desc, unit="rec", file=sys.stderr, disable=not enabled)
    try:
        yield bar
    finally:
        bar.close()


def _gen_prediction(verdict: Any) -> Prediction:
    return Prediction(verdict.level, tuple(c.value for c in verdict.categories), raw=verdict.raw)


def _failed(exc: Exception) -> Prediction:
    raw = getattr(exc, "raw", None)
    return Prediction(Level.SAFE, raw=raw, error=f"{type(exc).__name__}: {exc}")


def predict_gen(
    guard: Any,
    records: Sequence[EvalRecord],
    *,
    batch_size: int = 8,
    progress: bool = True,
    data_type: str | None = None,
) -> list[Prediction]:
    """Check every record with a Gen guard, ``batch_size`` conversations per batch.

    ``data_type`` (``"prompt"`` / ``"response"``) forces the mode (`EvalRecord.conversation`);
    by default the last message decides. A record whose check fails (an answer that does not
    parse, a backend error) becomes an error row instead of stopping the run.
    """
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    out: list[Prediction] = []
    with _progress(len(records), "Gen", progress) as bar:
        for lo in range(0, len(records), batch_size):
            chunk = [r.conversation(data_type) for r in records[lo : lo + batch_size]]
            try:
                out += [_gen_prediction(v) for v in guard.check_batch(chunk)]
            except InvalidInputError:
                raise
            except Exception:  # find the records that failed, one by one
                for convo in chunk:
                    try:
                        out.append(_gen_prediction(guard.check(convo)))
                    except InvalidInputError:
                        raise
                    except Exception as exc:
                        out.append(_failed(exc))
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


def _prompt_span(tok: Any, ids: list[int]) -> tuple[int, int]:
    """First content position and closing ``<|im_end|>`` of the last ``<|im_start|>user`` turn."""
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    header = tok("user\n", add_special_tokens=False)["input_ids"]
    for i in range(len(ids) - 1, -1, -1):
        if ids[i] == im_start and ids[i + 1 : i + 1 + len(header)] == header:
            start = i + 1 + len(header)
            end = next((j for j in range(start, len(ids)) if ids[j] == im_end), None)
            if end is not None:
                return start, end
    raise InvalidInputError("the rendered conversation has no closed user turn")


def _stream_one(
    guard: Any, record: EvalRecord, thinking: bool, data_type: str | None = None
) -> Prediction:
    tok, runner = guard.tokenizer, guard.runner
    msgs = list(record.messages)
    mode = record.mode_for(data_type)
    text = _render(tok, msgs, add_generation_prompt=False, enable_thinking=False)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = runner.check_ids(list(enc["input_ids"]))
    logits = runner.forward(ids, runner.new_cache())
    if mode == "prompt":
        start, at = _prompt_span(tok, ids)
        rows = runner.query_rows(logits)
        level = rows.levels[at]
        cats = () if level is Level.SAFE else (rows.categories[at].value,)
        return Prediction(
            level,
            cats,
            split=start,
            levels=tuple(lv.value for lv in rows.levels[start : at + 1]),
            level_probs=tuple(rows.level_probs[start : at + 1]),
            token_categories=tuple(c.value for c in rows.categories[start : at + 1]),
            input_ids=tuple(ids),
        )
    start_char = _response_start(tok, record, text, thinking)
    split = next((i for i, (s, _) in enumerate(enc["offset_mapping"]) if s >= start_char), None)
    if split is None:
        raise InvalidInputError("the rendered response holds no tokens")
    rows = runner.response_rows(logits)
    levels = rows.levels[split:]
    level, i = consecutive_decision(levels)
    per_token = {
        "levels": tuple(lv.value for lv in levels),
        "level_probs": tuple(rows.level_probs[split:]),
        "token_categories": tuple(c.value for c in rows.categories[split:]),
        "input_ids": tuple(ids),
    }
    if level is Level.SAFE:
        return Prediction(level, (), None, split, **per_token)  # type: ignore[arg-type]
    cat = (rows.categories[split + i].value,)
    return Prediction(level, cat, split + i, split, **per_token)  # type: ignore[arg-type]


def predict_stream(
    guard: Any,
    records: Sequence[EvalRecord],
    *,
    thinking: bool = False,
    progress: bool = True,
    data_type: str | None = None,
) -> list[Prediction]:
    """Run a Stream guard over every record (one full forward each; see the module docstring).

    ``data_type`` forces the mode as the official script's ``--data_type`` does (prompt: the query
    head at the last user turn's ``<|im_end|>``, whatever follows it).
    """
    out: list[Prediction] = []
    with _progress(len(records), "Stream", progress) as bar:
        for n, record in enumerate(records, 1):
            try:
                out.append(_stream_one(guard, record, thinking, data_type))
            except InvalidInputError as exc:
                raise InvalidInputError(f"record {n}: {exc}") from exc
            bar.update(1)
    return out


@dataclass(frozen=True)
class EvalReport:
    """Metrics of one run: counts, strict/loose Unsafe scores, and Stream timeliness.

    ``errors`` counts the records that could not be scored (error rows); they are scored as
    Safe predictions, as the official scripts count an output without a ``Safety:`` line.
    """

    n: int
    labels: dict[str, int]
    classification: ClassificationMetrics
    timeliness: Timeliness | None
    errors: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "n": self.n,
            "labels": dict(self.labels),
            "errors": self.errors,
            **self.classification.to_dict(),
            "timeliness": None if self.timeliness is None else self.timeliness.to_dict(),
        }


def _delay(record: EvalRecord, pred: Prediction) -> int | None:
    assert record.unsafe_start is not None and record.unsafe_end is not None
    return detection_delay(pred.index, record.unsafe_start, record.unsafe_end)


def _timed(record: EvalRecord, data_type: str | None = None) -> bool:
    return record.label == "Unsafe" and record.mode_for(data_type) == "response" and record.has_span


def evaluate(
    records: Sequence[EvalRecord],
    predictions: Sequence[Prediction],
    *,
    stream: bool,
    data_type: str | None = None,
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
        timed = timeliness(
            _delay(r, p) for r, p in zip(records, predictions) if _timed(r, data_type)
        )
    errors = sum(1 for p in predictions if p.error is not None)
    return EvalReport(len(records), labels, cls, timed, errors)


def result_rows(
    records: Sequence[EvalRecord],
    predictions: Sequence[Prediction],
    *,
    stream: bool,
    data_type: str | None = None,
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
        if p.error is not None:
            row.update(error=p.error, raw_output=p.raw)
        if stream and r.mode_for(data_type) == "response":
            row.update(pred_index=p.index, split_idx_eval=p.split, pred_risk_levels=list(p.levels))
            if _timed(r, data_type):
                d = _delay(r, p)
                row.update(delay=d, timeliness_bin=timeliness_bin(d))
        yield row


def official_rows(
    records: Sequence[EvalRecord],
    predictions: Sequence[Prediction],
    *,
    stream: bool,
    data_type: str | None = None,
) -> Iterator[dict[str, Any]]:
    """The ``--out-format official`` lines: each record plus the fields the official scripts
    write and read back.

    Stream (``eval_stream.py``): ``pred_risk_levels`` as integers (0 Safe, 1 Unsafe,
    2 Controversial) per scored token, ``pred_categories`` and ``pred_risk_prob`` (the winning
    class's probability) per token, ``input_ids``, and for responses ``split_idx_eval``. Gen
    (``eval_gen.py``): ``guard_predict``, the model's answer text (empty when there was none).
    An error row also carries ``error``.
    """
    for r, p in zip(records, predictions):
        row = dict(r.raw)
        if stream:
            row.update(
                pred_risk_levels=[
                    STREAM_RISK_LEVEL_ORDER.index(Level.parse(lv)) for lv in p.levels
                ],
                pred_categories=list(p.token_categories),
                pred_risk_prob=[float(x) for x in p.level_probs],
                input_ids=list(p.input_ids),
            )
            if r.mode_for(data_type) == "response":
                row["split_idx_eval"] = p.split
        else:
            row["guard_predict"] = p.raw or ""
        if p.error is not None:
            row["error"] = p.error
        yield row
