"""Each notebook runs top to bottom (one kernel each) against the tiny checkpoints, and is stored
without outputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_there_are_four_notebooks() -> None:
    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_"]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, tiny, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # stored clean
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, path.name
    # the kernel inherits the environment: the tiny checkpoints (already built by the fixture),
    # one thread, and the package from this checkout
    monkeypatch.delenv("QWEN3GUARD_REAL_MODELS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    root = str(path.parents[2])
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )
    client = nbclient.NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()  # raises CellExecutionError with the cell and its traceback on failure
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "Traceback" not in text
