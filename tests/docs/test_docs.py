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


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs site, built once with ``mkdocs build --strict`` for every test here."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    out_dir = tmp_path_factory.mktemp("docs") / "site"
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out_dir


def test_mkdocs_build_strict(site: Path) -> None:
    for page in ("index.html", "evaluation/index.html", "api/guards/index.html"):
        assert (site / page).is_file(), page
    # the API reference is generated from the docstrings
    api = (site / "api/eval/index.html").read_text(encoding="utf-8")
    assert "consecutive_decision" in api and "Unsafe-class scores" in api


#: A Sphinx cross-reference role as it shows up on a page built from a docstring that used one:
#: ``:class:`Verdict``` renders as ``:class:<code>Verdict</code>`` (or with the backquotes).
SPHINX_ROLE = re.compile(
    r":(?:py:)?(?:class|meth|func|attr|mod|exc|obj|data|const|ref|doc|term|any)"
    r":(?:`|<code>|&lt;code&gt;)"
)


def test_built_html_has_no_literal_sphinx_roles(site: Path) -> None:
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 10
    found = {
        str(page.relative_to(site)): sorted(set(SPHINX_ROLE.findall(text)))[:5]
        for page in pages
        if SPHINX_ROLE.search(text := page.read_text(encoding="utf-8"))
    }
    assert not found, f"literal Sphinx roles on the built pages (write `Name` instead): {found}"


def test_architecture_page_is_in_the_site_and_names_real_modules(site: Path) -> None:
    import importlib

    assert (site / "architecture/index.html").is_file()
    text = (ROOT / "docs/architecture.md").read_text(encoding="utf-8")
    paths = set(
        re.findall(r"`((?:core|backends|guards|langchain|llama_index|cli)/[\w/]+\.py)`", text)
    )
    assert len(paths) > 10
    for rel in paths:  # every file the page walks through exists
        assert (ROOT / "qwen3guard_integrations" / rel).is_file(), rel
    for name in (
        "Qwen3Guard.check_prompt",
        "StreamSession.feed",
        "HoldBack.push",
        "Debouncer.push",
    ):
        owner, attr = name.split(".")
        assert f"`{name}`" in text
        mods = {
            "Qwen3Guard": "guards.gen",
            "StreamSession": "guards.session",
            "HoldBack": "guards.holdback",
            "Debouncer": "core.stream_rule",
        }
        mod = importlib.import_module(f"qwen3guard_integrations.{mods[owner]}")
        assert hasattr(getattr(mod, owner), attr), name


def test_readme_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci/run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert f"```bash\n{ci}\n```" in readme  # CI runs the README's test command verbatim
    demo = "python -m qwen3guard_integrations.testing .tiny && qwen3guard demo --gen-model .tiny/gen --stream-model .tiny/stream"
    assert demo in readme
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link
