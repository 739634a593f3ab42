"""The code stays lint- and type-clean: ruff and mypy as configured in pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, in_ci


def _tool(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_is_clean() -> None:
    if shutil.which("ruff") is None:
        if in_ci():
            pytest.fail("ruff is not installed (the toolchain root has it)")
        pytest.skip("ruff is not installed")
    proc = _tool(["ruff", "check", "--output-format", "concise", "."])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_is_clean() -> None:
    if _tool([sys.executable, "-m", "mypy", "--version"]).returncode != 0:
        if in_ci():
            pytest.fail("mypy is not installed (the toolchain root has it)")
        pytest.skip("mypy is not installed")
    proc = _tool([sys.executable, "-m", "mypy"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
