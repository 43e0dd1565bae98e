"""The ``qwen3guard`` console script, run the way the tests need it.

`run_cli` calls ``main(argv)`` in this process, with stdin, stdout and stderr swapped for
strings; it returns what `subprocess.run` would (exit code, the two outputs). A fresh
interpreter costs about 4 s of imports (torch, transformers) per call, and the CLI tests make
dozens; `run_cli_process` runs the real ``python -m qwen3guard_integrations.cli`` and is kept for
the tests that check the process itself (the ``__main__`` shim and its exit status).
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from unittest import mock

__all__ = ["run_cli", "run_cli_process"]


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``qwen3guard ARGS`` in this process: exit code and the captured outputs."""
    from qwen3guard_integrations.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.object(sys, "stdin", io.StringIO(stdin or "")),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse errors and --help exit like the script does
            if isinstance(exc.code, int) or exc.code is None:
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def run_cli_process(
    *args: str, stdin: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m qwen3guard_integrations.cli ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "qwen3guard_integrations.cli", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
    )
