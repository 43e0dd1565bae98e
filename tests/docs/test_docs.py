"""The docs site builds with ``mkdocs build --strict`` (broken links, missing pages and docstring
errors fail it), and the README's commands are the ones the docs and CI use."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    site = tmp_path / "site"
    for page in ("index.html", "evaluation/index.html", "api/guards/index.html"):
        assert (site / page).is_file(), page
    # the API reference is generated from the docstrings
    api = (site / "api/eval/index.html").read_text(encoding="utf-8")
    assert "consecutive_decision" in api and "Unsafe-class scores" in api


def test_readme_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci/run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert f"```bash\n{ci}\n```" in readme  # CI runs the README's test command verbatim
    demo = "python -m qwen3guard_integrations.testing .tiny && qwen3guard demo --gen-model .tiny/gen --stream-model .tiny/stream"
    assert demo in readme
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link
