"""The documentation: it builds, its examples compile (or run), it covers the API.

* ``mkdocs build --strict`` must succeed (skipped when mkdocs is not
  installed, except under ``CI=true``, where it fails: install the ``docs``
  extra).
* Every fenced ``python`` block in README.md and docs/ must compile. Blocks
  may be snippets: top-level ``await``, ``async for`` and ``async with`` are
  allowed, and names may be defined elsewhere on the page.
* A block preceded by the line ``<!-- test: run -->`` is a complete program
  that needs nothing but loopback (an embedded Archive, generated data): it
  is run, and must exit with status 0.
* Every name in ``aiodicomnet.__all__`` has an entry (``::: module.Name``) in
  docs/api/.
* The conformance statement lists every storage SOP class and transfer
  syntax the Storage SCP accepts.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import aiodicomnet
from tests.peers.util import missing

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RUN_MARKER = "<!-- test: run -->"
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^\s`]*)")


@dataclass(frozen=True)
class Block:
    """A fenced code block of a Markdown file."""

    path: Path
    line: int  # of the opening fence, 1-based
    info: str
    source: str
    runnable: bool

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of ``path``, with their info strings."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, info, start = match["fence"], match["info"].lower(), i
        previous = next((s.strip() for s in reversed(lines[:start]) if s.strip()), "")
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        blocks.append(Block(path, start + 1, info, "\n".join(body) + "\n", previous == RUN_MARKER))
    return blocks


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


PYTHON_BLOCKS = [b for p in doc_files() for b in fenced_blocks(p) if b.info in ("python", "py")]
RUNNABLE = [b for b in PYTHON_BLOCKS if b.runnable]


def test_there_are_examples() -> None:
    assert len(PYTHON_BLOCKS) > 20
    assert RUNNABLE, f"no block is marked {RUN_MARKER!r}"


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.name)
def test_python_example_compiles(block: Block) -> None:
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    compile(block.source, block.name, "exec", flags=flags, dont_inherit=True)


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.name)
def test_runnable_example_runs(block: Block, tmp_path: Path) -> None:
    compile(block.source, block.name, "exec", dont_inherit=True)  # a program: no top-level await
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", block.source],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, f"{block.name} failed:\n{proc.stdout}\n{proc.stderr}"


def test_public_api_is_documented() -> None:
    entries = set()
    for page in (DOCS / "api").glob("*.md"):
        for line in page.read_text(encoding="utf-8").splitlines():
            if line.startswith("::: "):
                entries.add(line[4:].strip().rsplit(".", 1)[-1])
    undocumented = sorted(set(aiodicomnet.__all__) - entries)
    assert not undocumented, f"not in docs/api/*.md: {undocumented}"


def test_conformance_lists_what_the_storage_scp_accepts() -> None:
    from pynetdicom import AllStoragePresentationContexts

    from aiodicomnet.server import STORAGE_TRANSFER_SYNTAXES

    text = (DOCS / "conformance.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`(1\.2\.840\.10008\.[0-9.]+)`", text))
    accepted = {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts}
    accepted |= set(STORAGE_TRANSFER_SYNTAXES)
    assert not accepted - listed, f"missing from docs/conformance.md: {sorted(accepted - listed)}"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    if not (_installed("mkdocs") and _installed("mkdocstrings_handlers.python")):
        missing("mkdocs and mkdocstrings-python are not installed (the docs extra)")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / "site" / "index.html").is_file()
