"""Reading Qwen3GuardTest-format records (JSON Lines).

One JSON object per line:

- ``message``: the conversation, a list of ``{"role": "user" | "assistant" | "system",
  "content": str}``. The last message decides the mode: user -> prompt moderation,
  assistant -> response moderation.
- ``label``: the gold level, ``"Safe"``, ``"Unsafe"`` or ``"Controversial"`` (only ``"Unsafe"``
  is a positive in the metrics).
- ``unsafe_start_index`` / ``unsafe_end_index`` (optional; Unsafe responses, Stream timeliness):
  the annotated unsafe span as inclusive token positions of the whole conversation rendered with
  the Stream tokenizer's chat template (``add_generation_prompt=False``, ``enable_thinking=False``).

Every other field is kept and copied to the results file. Bad records (a line
that is not UTF-8 JSON included) raise `InvalidInputError` naming
the file and line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from ..core.deps import require
from ..core.errors import InvalidInputError
from ..core.labels import Level

__all__ = ["EvalRecord", "load_dataset_records", "load_records"]

_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class EvalRecord:
    """One benchmark record: the conversation, its gold label and the optional unsafe span."""

    messages: tuple[dict[str, str], ...]
    label: str
    unsafe_start: int | None = None
    unsafe_end: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def mode(self) -> str:
        """``"prompt"`` when the last message is the user's, else ``"response"``."""
        return "prompt" if self.messages[-1]["role"] == "user" else "response"

    def mode_for(self, data_type: str | None) -> str:
        """The mode under a forced ``data_type`` (``"prompt"`` / ``"response"``), else `mode`."""
        if data_type is None:
            return self.mode
        if data_type not in ("prompt", "response"):
            raise InvalidInputError(f"data type must be 'prompt' or 'response', not {data_type!r}")
        if data_type == "response" and self.mode != "response":
            raise InvalidInputError(
                "a response check needs a record that ends with the assistant's answer"
            )
        return data_type

    def conversation(self, data_type: str | None = None) -> list[dict[str, str]]:
        """The messages to check under ``data_type``: forcing ``"prompt"`` on a record that
        ends with an assistant turn keeps the conversation up to its last user turn."""
        msgs = list(self.messages)
        if self.mode_for(data_type) == "prompt":
            last_user = max((i for i, m in enumerate(msgs) if m["role"] == "user"), default=None)
            if last_user is None:
                raise InvalidInputError("a prompt check needs a user message")
            msgs = msgs[: last_user + 1]
        return msgs

    @property
    def has_span(self) -> bool:
        """Whether the record carries an annotated unsafe span."""
        return self.unsafe_start is not None and self.unsafe_end is not None


def _fail(where: str, why: str) -> InvalidInputError:
    return InvalidInputError(f"{where}: {why}")


def _record(obj: Any, where: str) -> EvalRecord:
    if not isinstance(obj, dict):
        raise _fail(where, "each line must be a JSON object")
    msgs = obj.get("message", obj.get("messages"))
    if not isinstance(msgs, list) or not msgs:
        raise _fail(where, "'message' must be a non-empty list of {role, content} objects")
    out: list[dict[str, str]] = []
    for m in msgs:
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise _fail(where, f"bad message {m!r}: role must be one of {_ROLES}")
        if not isinstance(m.get("content"), str):
            raise _fail(where, f"message content must be a string, got {m.get('content')!r}")
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] == "system":
        raise _fail(where, "the last message must be the user's or the assistant's")
    label = obj.get("label")
    try:
        Level.parse(label) if isinstance(label, str) else None
    except ValueError:
        label = None
    if not isinstance(label, str):
        raise _fail(
            where, f"'label' must be Safe, Unsafe or Controversial, got {obj.get('label')!r}"
        )
    start, end = obj.get("unsafe_start_index"), obj.get("unsafe_end_index")
    for name, v in (("unsafe_start_index", start), ("unsafe_end_index", end)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise _fail(where, f"{name} must be a non-negative int, got {v!r}")
    if (start is None) != (end is None):
        raise _fail(where, "give both unsafe_start_index and unsafe_end_index, or neither")
    if start is not None and end is not None and start > end:
        raise _fail(where, f"unsafe_start_index {start} is after unsafe_end_index {end}")
    return EvalRecord(tuple(out), Level.parse(label).value, start, end, raw=obj)


def load_records(path: str | os.PathLike[str]) -> list[EvalRecord]:
    """Read and validate every record of a JSON Lines file (blank lines are skipped)."""
    records: list[EvalRecord] = []
    try:
        # bytes, decoded line by line: a line that is not UTF-8 is reported with its number
        with open(path, "rb") as fh:
            for n, raw in enumerate(fh, 1):
                where = f"{path}:{n}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise _fail(where, f"not UTF-8 text (byte {exc.start + 1})") from exc
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise _fail(where, f"not JSON ({exc.msg})") from exc
                records.append(_record(obj, where))
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not records:
        raise InvalidInputError(f"{path}: no records")
    return records


def load_dataset_records(name: str, split: str) -> list[EvalRecord]:
    """Read and validate one split of a dataset with ``datasets.load_dataset(name, split=...)``.

    ``name`` is a Hub id (``Qwen/Qwen3GuardTest``) or a local dataset folder; the records have
    the same fields as the JSON Lines form. Needs the ``datasets`` package (the ``eval`` extra).
    """
    datasets = require("datasets", "eval")
    try:
        data = datasets.load_dataset(name, split=split)
    except Exception as exc:  # datasets raises many types; all mean "cannot read this split"
        raise InvalidInputError(f"cannot load split {split!r} of dataset {name!r}: {exc}") from exc
    records = [_record(dict(obj), f"{name}[{split}] record {n}") for n, obj in enumerate(data, 1)]
    if not records:
        raise InvalidInputError(f"{name}[{split}]: no records")
    return records
