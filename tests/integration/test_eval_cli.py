"""``qwen3guard eval`` end to end on the tiny checkpoints: a small generated file whose metrics are
computed by hand from the behaviour contract (tests/eval_cases.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tqdm")
pytest.importorskip("matplotlib")

from tests.support.eval_cases import CASES, EXPECTED, write_cases


def _eval(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qwen3guard_integrations.cli", "eval", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def cases(tiny, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny.stream))
    return write_cases(tmp_path_factory.mktemp("eval") / "cases.jsonl", tok)


def _check_scores(got: dict[str, Any]) -> None:
    for reading in ("strict", "loose"):
        for key, want in EXPECTED[reading].items():
            assert got[reading][key] == pytest.approx(want), (reading, key)


@pytest.mark.slow
def test_stream_eval_reproduces_the_hand_computed_metrics(tiny, cases, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out, plot = tmp_path / "results.jsonl", tmp_path / "timeliness.png"
    run = _eval(
        "--stream",
        "--model",
        str(tiny.stream),
        str(cases),
        "--out",
        str(out),
        "--plot",
        str(plot),
        "--json",
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    _check_scores(report)
    t = report["timeliness"]
    assert t["n"] == 4 and t["bins"] == EXPECTED["bins"]
    assert t["exact_hit_rate"] == EXPECTED["exact_hit_rate"]
    assert t["within_128_rate"] == EXPECTED["within_128_rate"]
    assert "Stream" in run.stderr and "8/8" in run.stderr  # the progress bar ran
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert list(rows) == [name for name, *_ in CASES]
    # the detection is the token after the one that completes "bomb" (two Unsafe in a row)
    late = rows["late"]
    assert late["timeliness_bin"] == "1-32"
    assert late["delay"] == late["pred_index"] - late["unsafe_end_index"] > 0
    assert rows["hit"]["pred_index"] == rows["hit"]["unsafe_end_index"]  # the closing "."
    assert rows["missed"]["pred_index"] is None and rows["missed"]["delay"] is None
    assert rows["controversial"]["pred_strict"] == "Unsafe"
    assert rows["controversial"]["pred_loose"] == "Safe"
    assert rows["prompt_unsafe"]["pred_categories"] == ["Non-violent Illegal Acts"]


@pytest.mark.slow
def test_gen_eval_and_the_text_report(tiny, cases) -> None:  # type: ignore[no-untyped-def]
    run = _eval("--model", str(tiny.gen), str(cases), "--json", "--quiet")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    _check_scores(report)
    assert report["timeliness"] is None and "Gen" not in run.stderr  # --quiet: no bar
    text = _eval("--model", str(tiny.gen), str(cases), "--quiet")
    assert text.returncode == 0
    assert "strict        80.00  80.00  80.00" in text.stdout
    assert "loose         88.89 100.00  80.00" in text.stdout


def test_eval_errors_exit_2(tiny, cases, tmp_path) -> None:  # type: ignore[no-untyped-def]
    no_stream = _eval("--model", str(tiny.gen), str(cases), "--plot", str(tmp_path / "p.png"))
    assert no_stream.returncode == 2 and "--stream" in no_stream.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"message": [{"role": "user", "content": "hi"}]}\n')
    run = _eval("--model", str(tiny.gen), str(bad))
    assert run.returncode == 2 and f"{bad}:1" in run.stderr and "label" in run.stderr
    missing = _eval("--model", str(tmp_path / "nothing"), str(cases))
    assert missing.returncode == 2 and "--model" in missing.stderr
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(b'{"message": [{"role": "user", "content": "caf\xe9"}], "label": "Safe"}\n')
    run = _eval("--model", str(tiny.gen), str(latin1))
    assert run.returncode == 2 and f"{latin1}:1" in run.stderr and "UTF-8" in run.stderr


def test_a_plot_matplotlib_cannot_write_is_refused_before_the_run(tiny, cases, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # matplotlib only finds out when saving, after every record has been run: check first
    out = tmp_path / "results.jsonl"
    for name in ("timeliness.xyz", "timeliness"):  # no suffix: matplotlib would add ".png"
        plot = tmp_path / name
        run = _eval(
            "--stream",
            "--model",
            str(tiny.stream),
            str(cases),
            "--plot",
            str(plot),
            "--out",
            str(out),
            "--quiet",
        )
        assert run.returncode == 2, run.stderr
        assert "--plot" in run.stderr and "png" in run.stderr and "Traceback" not in run.stderr
        assert not out.exists() and not list(tmp_path.glob("timeliness*"))


def test_an_out_path_in_a_missing_folder_is_refused_before_the_run(tiny, cases, tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nope" / "results.jsonl"
    run = _eval("--model", str(tiny.gen), str(cases), "--out", str(missing), "--quiet")
    assert run.returncode == 2 and "--out" in run.stderr and "does not exist" in run.stderr
    assert "Traceback" not in run.stderr and not missing.parent.exists()
