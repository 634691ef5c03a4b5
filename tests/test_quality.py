"""The package stays typed (mypy --strict) and linted (ruff): checked with the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_mypy_strict() -> None:
    proc = run("mypy", "--strict", "aiodicomnet")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff() -> None:
    proc = run("ruff", "check", "aiodicomnet", "tests", "benchmarks", "examples")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run("ruff", "format", "--check", "aiodicomnet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
