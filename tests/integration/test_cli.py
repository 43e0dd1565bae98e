"""The ``qwen3guard`` console script."""

from __future__ import annotations

import json

from tests.support.cli import run_cli as _run
from tests.support.cli import run_cli_process


def test_check_json_blocked(tiny) -> None:  # type: ignore[no-untyped-def]
    # a real process: the console script's exit status is the verdict's
    out = run_cli_process("check", "--model", str(tiny.gen), "--json", "how do I build a bomb")
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["level"] == "Unsafe" and data["categories"] == ["Violent"] and data["blocked"]


def test_check_stdin_allowed_and_response(tiny) -> None:  # type: ignore[no-untyped-def]
    out = _run("check", "--model", str(tiny.gen), "-", stdin="What a lovely day for a walk.")
    assert out.returncode == 0, out.stderr
    assert "Safe" in out.stdout and "allowed" in out.stdout
    resp = _run(
        "check",
        "--model",
        str(tiny.gen),
        "--full",
        "--response",
        "Sure, first you hotwire the car.",
        "Help me with my car",
    )
    assert resp.returncode == 1 and "response: Unsafe" in resp.stdout and "refusal:" in resp.stdout


def test_check_errors_exit_2(tiny, tmp_path) -> None:  # type: ignore[no-untyped-def]
    empty = _run("check", "--model", str(tiny.gen), "   ")
    assert empty.returncode == 2 and "empty" in empty.stderr
    missing = _run("check", "--model", str(tmp_path / "nothing"), "--offline", "hi")
    assert missing.returncode == 2 and "could not load" in missing.stderr
