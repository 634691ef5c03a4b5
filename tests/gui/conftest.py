"""Fixtures for the GUI tests: Xvfb, the toolkits' application objects, a PACS.

The real-toolkit tests live in ``cases_*.py`` files, which pytest does not
collect by itself: ``test_toolkits.py`` runs each toolkit's cases in a child
pytest process, with its own ``DISPLAY`` on an Xvfb this session started.
One process per toolkit because a toolkit is process-wide state (one
``wx.App``, one ``QApplication``, GTK and Qt sharing GLib's main context),
and because GTK ends the process when its X server goes away: a child is
finished before its Xvfb is stopped. A ``cases_*.py`` file also runs on its
own (``pytest tests/gui/cases_wx.py``) where ``DISPLAY`` is set.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aiodicomnet import Node
from tests.gui.pacs_process import BIG_SERIES_SIZE
from tests.peers.util import free_port, missing

__all__ = ["BIG_SERIES_SIZE", "Pacs"]


def start_xvfb(log_path: Path, timeout: float = 30.0) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``Xvfb`` on a display number it picks (``-displayfd``); return it and ``:N``."""
    binary = shutil.which("Xvfb")
    if binary is None:
        missing("Xvfb not found (Debian package xvfb; run scripts/setup)")
    read_fd, write_fd = os.pipe()
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    binary,
                    "-displayfd",
                    str(write_fd),
                    "-nolisten",
                    "tcp",
                    "-noreset",
                    "-screen",
                    "0",
                    "1280x1024x24",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
                start_new_session=True,
            )
        os.close(write_fd)
        write_fd = -1
        text = b""
        deadline = time.monotonic() + timeout
        while not text.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([read_fd], [], [], max(remaining, 0))
            chunk = os.read(read_fd, 64) if ready else b""
            if not chunk:
                proc.kill()
                proc.wait()
                raise RuntimeError(
                    f"Xvfb did not report a display: {log_path.read_text(errors='replace')}"
                )
            text += chunk
        return proc, f":{int(text)}"
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


@pytest.fixture(scope="session")
def xvfb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Xvfb for the session; yields its DISPLAY (``:N``)."""
    proc, display = start_xvfb(tmp_path_factory.mktemp("xvfb") / "xvfb.log")
    try:
        yield display
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def need_display() -> None:
    if not os.environ.get("DISPLAY"):
        missing("no DISPLAY: run tests/gui/test_toolkits.py, which starts Xvfb")


# -- toolkits (in the child processes) ----------------------------------------------


@pytest.fixture(scope="session")
def wx_app() -> Iterator[Any]:
    """The process's ``wx.App``."""
    need_display()
    try:
        import wx
    except ImportError as exc:
        missing(f"wxPython is not importable ({exc}); scripts/setup makes .venv with it")
    app = wx.App(False)
    yield app
    for window in wx.GetTopLevelWindows():
        window.Destroy()


@pytest.fixture(scope="session")
def qt_app() -> Iterator[Any]:
    """The process's ``QApplication`` (offscreen platform unless one is set)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        from PySide6.QtWidgets import QApplication
    except ImportError as exc:
        missing(f"PySide6 is not importable ({exc}); install the test extra")
    app = QApplication.instance() or QApplication([])
    yield app


@pytest.fixture
def tk_root() -> Iterator[Any]:
    """A fresh Tk root window."""
    need_display()
    try:
        import tkinter
    except ImportError as exc:
        missing(f"tkinter is not importable ({exc}); Debian package python3-tk")
    root = tkinter.Tk()
    yield root
    with contextlib.suppress(tkinter.TclError):
        root.destroy()


# -- a PACS -------------------------------------------------------------------------------


@dataclass
class Pacs:
    """The PACS process: an Archive with the sample corpus and a big CT series.

    Attributes:
        node: where it listens.
        viewer: the C-MOVE destination it knows (``VIEWER`` at a port kept for it).
    """

    node: Node
    viewer: Node
    instances: int
    big_study_uid: str
    big_series_uid: str


@pytest.fixture(scope="session")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    """The PACS, started once per (child) session in a process of its own."""
    viewer = Node("VIEWER", "127.0.0.1", free_port())
    directory = tmp_path_factory.mktemp("pacs")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.gui.pacs_process",
            str(directory),
            "--destination",
            f"{viewer.ae_title}={viewer.host}:{viewer.port}",
        ],
        cwd=Path(__file__).resolve().parents[2],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else b""
        if not line:
            raise RuntimeError(f"the PACS process did not start (exit code {proc.poll()})")
        info = json.loads(line)
        yield Pacs(
            Node(info["ae_title"], "127.0.0.1", info["port"]),
            viewer,
            info["instances"],
            info["big_study_uid"],
            info["big_series_uid"],
        )
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the PACS stops when its standard input closes
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
