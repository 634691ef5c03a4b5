"""The real-toolkit GUI tests: each toolkit's ``cases_*.py`` in a child pytest process.

wxPython and Tk run under a private Xvfb (the ``xvfb`` fixture), Qt on its
offscreen platform. Why child processes: see conftest.py. A toolkit that
cannot be imported skips its test, or fails it under CI=true.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.peers.util import missing

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# toolkit: (modules that must be importable, case files, needs an X display, how to get it)
TOOLKITS: dict[str, tuple[tuple[str, ...], tuple[str, ...], bool, str]] = {
    "wx": (
        ("wx",),
        ("cases_wx.py", "cases_wx_browser.py"),
        True,
        "Debian package python3-wxgtk4.0, in a .venv made by scripts/setup",
    ),
    "tk": (("tkinter", "_tkinter"), ("cases_tk.py",), True, "Debian package python3-tk"),
    "qt": (("PySide6",), ("cases_qt.py",), False, "pip install PySide6-Essentials"),
}

# The child runs a handful of tests against an embedded PACS: well under this.
CHILD_TIMEOUT = 150

# What a toolkit says when it cannot connect to the display at all.


@pytest.mark.timeout(2 * CHILD_TIMEOUT + 30)
@pytest.mark.parametrize("toolkit", list(TOOLKITS))
def test_toolkit(toolkit: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    modules, files, needs_x, how = TOOLKITS[toolkit]
    for module in modules:
        if importlib.util.find_spec(module) is None:
            missing(f"{module} cannot be imported by {sys.executable} ({how})")
    env = dict(os.environ)
    env.pop("WAYLAND_DISPLAY", None)  # never a developer's real desktop
    env["GDK_BACKEND"] = "x11"
    env["NO_AT_BRIDGE"] = "1"  # no accessibility bus to wait for
    if needs_x:
        env["DISPLAY"] = request.getfixturevalue("xvfb")
    else:
        env.pop("DISPLAY", None)
        env["QT_QPA_PLATFORM"] = "offscreen"
    junit = tmp_path / "junit.xml"
    command = [
        sys.executable,
        "-m",
        "pytest",
        *(str(HERE / name) for name in files),
        "-p",
        "no:cacheprovider",
        "-q",
        "-rs",
        f"--junitxml={junit}",
    ]
    try:
        child = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=CHILD_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.output if isinstance(exc.output, str) else (exc.output or b"").decode()
        pytest.fail(f"{toolkit} GUI tests did not finish in {CHILD_TIMEOUT} s:\n{output}")
    print(child.stdout)  # shown by pytest when this test fails
    if child.returncode != 0:
        pytest.fail(
            f"{toolkit} GUI tests failed (exit {child.returncode}):\n{child.stdout[-12000:]}",
            pytrace=False,
        )
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    tests, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
    if tests == 0:
        pytest.fail(f"the {toolkit} child ran no test:\n{child.stdout}", pytrace=False)
    if skipped:
        reasons = sorted({s.get("message", "") for s in suite.iter("skipped")})
        missing(f"{skipped} of {tests} {toolkit} GUI tests skipped: {'; '.join(reasons)}")
