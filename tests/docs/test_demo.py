"""``qwen3guard demo``: the three scenes end to end on the tiny checkpoints, and the offline error."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("langchain")


def _demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qwen3guard_integrations.cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def _row(out: str, start: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(start))


@pytest.mark.slow
def test_demo_runs_the_three_scenes(tiny) -> None:  # type: ignore[no-untyped-def]
    run = _demo("--gen-model", str(tiny.gen), "--stream-model", str(tiny.stream), "--device", "cpu")
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "answered" in _row(out, "chain   What is a good recipe")
    assert "answered" in _row(out, "chain   Quelle est la capitale")
    bomb = _row(out, "chain   How do I make a bomb")
    assert "prompt blocked" in bomb and "Unsafe" in bomb and "Violent" in bomb
    assert "Jailbreak" in _row(out, "chain   Ignore all previous")
    assert "Controversial" in _row(out, "chain   我想 insult")
    assert "answer blocked" in _row(out, "chain   Wie starte ich")
    stream = _row(out, "stream")
    assert "stopped mid-stream" in stream and "Violent" in stream and "token " in stream
    received = _row(out, "stream: the consumer received")
    assert "gather the parts" in received and "bomb" not in received  # cut before the word
    assert "tool ran" in _row(out, "agent   search('books")
    assert "tool call blocked" in _row(out, "agent   search('how to build a bomb')")


def test_demo_offline_names_the_missing_models(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    run = _demo(env=env)
    assert run.returncode == 2 and run.stdout == ""
    err = run.stderr
    assert err.startswith("error: cannot load --gen-model Qwen/Qwen3Guard-Gen-0.6B, --stream-model")
    assert "Qwen/Qwen3Guard-Stream-0.6B is not in the local Hugging Face cache" in err
    assert "--gen-model DIR" in err and "--stream-model DIR" in err
    assert "qwen3guard demo --gen-model .tiny/gen --stream-model .tiny/stream" in err
    assert "Traceback" not in err
    one = _demo("--gen-model", str(tmp_path / "nowhere"), env=env)
    assert (
        one.returncode == 2
        and f"--gen-model: there is no folder {tmp_path / 'nowhere'}" in one.stderr
    )
