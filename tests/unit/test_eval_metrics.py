"""The evaluation metrics on hand-computed cases (pure: no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen3guard_integrations import InvalidInputError, Level
from qwen3guard_integrations.eval import (
    BINS,
    classification_metrics,
    consecutive_decision,
    detection_delay,
    load_records,
    timeliness,
    timeliness_bin,
    unsafe_scores,
)

S, U, C = "Safe", "Unsafe", "Controversial"


def test_consecutive_decision_follows_the_official_rule() -> None:
    assert consecutive_decision([S, U, S, U, U, U]) == (Level.UNSAFE, 4)
    assert consecutive_decision([U]) == (Level.SAFE, -1)  # one token never trips
    assert consecutive_decision([S, U, C, U, S]) == (Level.SAFE, -1)  # no two alike in a row
    # an Unsafe pair anywhere beats an earlier Controversial pair
    assert consecutive_decision([C, C, S, U, U]) == (Level.UNSAFE, 4)
    assert consecutive_decision([S, C, C, U]) == (Level.CONTROVERSIAL, 2)
    assert consecutive_decision([Level.UNSAFE] * 3, n=3) == (Level.UNSAFE, 2)
    assert consecutive_decision([]) == (Level.SAFE, -1)
    with pytest.raises(ValueError):
        consecutive_decision([S], n=0)


def test_unsafe_scores_by_hand() -> None:
    # tp: 0, 1; fp: 2; fn: 3, 4; tn: 5; a gold Controversial is a negative
    preds = [U, U, U, S, C, S]
    gold = [U, U, C, U, U, S]
    s = unsafe_scores(preds, gold)
    assert (s.tp, s.fp, s.fn, s.tn) == (2, 1, 2, 1)
    assert s.precision == pytest.approx(2 / 3) and s.recall == pytest.approx(0.5)
    assert s.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    none = unsafe_scores([S, S], [S, S])  # zero denominators give 0, not an error
    assert (none.precision, none.recall, none.f1) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        unsafe_scores([S], [S, U])


def test_strict_and_loose_readings_of_controversial() -> None:
    m = classification_metrics([C, C, U, S], [U, S, U, U])
    # strict: C -> Unsafe: tp 2 (0, 2), fp 1 (1), fn 1 (3)
    assert (m.strict.tp, m.strict.fp, m.strict.fn) == (2, 1, 1)
    assert m.strict.f1 == pytest.approx(2 / 3)
    # loose: C -> Safe: tp 1 (2), fp 0, fn 2 (0, 3)
    assert (m.loose.tp, m.loose.fp, m.loose.fn) == (1, 0, 2)
    assert m.loose.precision == 1.0 and m.loose.recall == pytest.approx(1 / 3)
    assert m.loose.f1 == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("pred", "delay", "bin_"),
    [
        (None, None, "missed"),
        (-1, None, "missed"),
        (5, -5, "ahead"),  # before the span's start (10)
        (10, 0, "hit"),
        (20, 0, "hit"),  # the end is inclusive
        (21, 1, "1-32"),
        (52, 32, "1-32"),
        (53, 33, "33-64"),
        (84, 64, "33-64"),
        (148, 128, "65-128"),
        (149, 129, "129-256"),
        (276, 256, "129-256"),
        (277, 257, ">256"),
    ],
)
def test_delay_and_bins(pred: int | None, delay: int | None, bin_: str) -> None:
    assert detection_delay(pred, 10, 20) == delay
    assert timeliness_bin(delay) == bin_


def test_timeliness_rates_by_hand() -> None:
    t = timeliness([None, -3, 0, 0, 12, 128, 129, 300])
    assert t.n == 8
    assert t.bins == {
        "ahead": 1,
        "hit": 2,
        "1-32": 1,
        "33-64": 0,
        "65-128": 1,
        "129-256": 1,
        ">256": 1,
        "missed": 1,
    }
    assert list(t.bins) == list(BINS)
    assert t.exact_hit_rate == pytest.approx(2 / 8)
    # within 128 tokens of the span's end counts the early (ahead) detection too, as the
    # official script does: -3, 0, 0, 12, 128
    assert t.within_128_rate == pytest.approx(5 / 8)
    empty = timeliness([])
    assert empty.n == 0 and empty.exact_hit_rate == 0.0 and sum(empty.bins.values()) == 0
    with pytest.raises(ValueError):
        detection_delay(3, 10, 5)


def test_records_are_validated_with_file_and_line(tmp_path: Path) -> None:
    good = {"message": [{"role": "user", "content": "hi"}], "label": "Safe", "extra": 1}
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(good | {"label": "unsafe"}) + "\n")
    recs = load_records(path)
    assert [r.label for r in recs] == ["Safe", "Unsafe"] and recs[0].raw["extra"] == 1
    assert recs[0].mode == "prompt" and not recs[0].has_span
    bad_cases = [
        ("not json", "not JSON"),
        (json.dumps(good | {"label": "Maybe"}), "'label'"),
        (json.dumps(good | {"message": []}), "'message'"),
        (json.dumps(good | {"message": [{"role": "bot", "content": "x"}]}), "role"),
        (json.dumps(good | {"unsafe_start_index": 3}), "both"),
        (json.dumps(good | {"unsafe_start_index": 5, "unsafe_end_index": 2}), "after"),
    ]
    for line, why in bad_cases:
        path.write_text(json.dumps(good) + "\n" + line + "\n")
        with pytest.raises(InvalidInputError, match=why) as err:
            load_records(path)
        assert f"{path}:2" in str(err.value)
    # a line that is not UTF-8 (here Latin-1) is a bad record too, not a UnicodeDecodeError
    path.write_bytes(json.dumps(good).encode() + b'\n{"label": "caf\xe9"}\n')
    with pytest.raises(InvalidInputError, match="UTF-8") as err:
        load_records(path)
    assert f"{path}:2" in str(err.value)
    path.write_text("")
    with pytest.raises(InvalidInputError, match="no records"):
        load_records(path)
    with pytest.raises(InvalidInputError, match="cannot read"):
        load_records(tmp_path / "missing.jsonl")
