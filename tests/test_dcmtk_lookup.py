"""The fixtures and benchmarks run DCMTK's tools, never pynetdicom's namesakes.

pynetdicom installs console scripts called ``storescu``, ``storescp``,
``echoscu``, ``findscu``, ``getscu`` and ``movescu`` into the virtualenv's
``bin``; an activated virtualenv puts that directory first on PATH, where a
plain PATH lookup finds them instead of DCMTK's tools, whose options and output
differ.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import common as bench
from tests.peers import util
from tests.peers.dcmtk import dcmtk_tool

pytestmark = pytest.mark.dcmtk

VENV_BIN = Path(sys.prefix) / "bin"


def _version(binary: str) -> str:
    result = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    return result.stdout + result.stderr


@pytest.fixture
def venv_first(monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH as an activated virtualenv has it: its ``bin``, with pynetdicom's storescu, first."""
    shadow = VENV_BIN / "storescu"
    if sys.prefix == sys.base_prefix or not shadow.exists():
        pytest.skip("needs a virtualenv holding pynetdicom's storescu script")
    assert "$dcmtk" not in _version(str(shadow))  # it is the namesake, not DCMTK
    monkeypatch.setenv("PATH", os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]))
    return VENV_BIN


def test_dcmtk_storescu_with_the_venv_bin_first_on_path(venv_first: Path) -> None:
    found = util.dcmtk_binary("storescu")
    if found is None:
        util.missing("DCMTK's storescu not installed")
    assert Path(found).parent != venv_first
    assert "$dcmtk: storescu" in _version(found)
    # Every way the tests and benchmarks reach a DCMTK tool finds the same one.
    assert util.find_dcmtk("storescu") == found
    assert util.find_binary("storescu") == found
    assert bench.find_binary("storescu") == found
    assert "$dcmtk: storescu" in dcmtk_tool("storescu", "--version").stdout


def test_an_impostor_first_on_path_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only a virtualenv's namesake: anything whose --version is not DCMTK's."""
    impostor = tmp_path / "echoscu"
    impostor.write_text("#!/bin/sh\necho 'usage: echoscu [options] addr port'\nexit 2\n")
    impostor.chmod(impostor.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", os.pathsep.join([str(tmp_path), os.environ.get("PATH", "")]))
    found = util.dcmtk_binary("echoscu")
    if found is None:
        util.missing("DCMTK's echoscu not installed")
    assert found != str(impostor)
    assert "$dcmtk: echoscu" in _version(found)
