"""examples/wx_browser.py with images: preview the selected series (retrieved into
memory as a volume, its middle slice drawn) and "Save mask to PACS" (the volume
thresholded, sent as a DICOM SEG), driven through its handlers in demo mode.

Real wxPython under a private Xvfb, in a child pytest process (a toolkit is
process-wide state, see tests/gui/conftest.py): the parent test starts Xvfb
and runs this same file with ``ADN_IMAGING_WX_CHILD=1``, where the child test runs.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.peers.util import missing

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "wx_browser.py"
CHILD = os.environ.get("ADN_IMAGING_WX_CHILD") == "1"


@pytest.mark.timeout(200)
@pytest.mark.skipif(CHILD, reason="the parent runs in the main test process")
def test_wx_browser_preview_and_save_mask(tmp_path: Path) -> None:
    if importlib.util.find_spec("wx") is None:
        missing(f"wx cannot be imported by {sys.executable} (Debian python3-wxgtk4.0)")
    from tests.gui.conftest import start_xvfb

    xvfb, display = start_xvfb(tmp_path / "xvfb.log")
    try:
        env = dict(os.environ)
        env.pop("WAYLAND_DISPLAY", None)
        env.update(DISPLAY=display, GDK_BACKEND="x11", NO_AT_BRIDGE="1", ADN_IMAGING_WX_CHILD="1")
        child = subprocess.run(
            [sys.executable, "-m", "pytest", __file__, "-p", "no:cacheprovider", "-q", "-rs"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=150,
        )
    finally:
        xvfb.terminate()
        xvfb.wait(10)
    assert child.returncode == 0, child.stdout[-8000:]
    assert "1 passed" in child.stdout, child.stdout[-8000:]


@pytest.mark.timeout(120)
@pytest.mark.skipif(not CHILD, reason="runs in the child process, under Xvfb")
def test_child_preview_and_save_mask(tmp_path: Path, no_leaks: Any) -> None:
    import wx

    from tests.gui.cases_wx import pump_until
    from tests.gui.cases_wx_browser import children

    spec = importlib.util.spec_from_file_location("wx_browser", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["wx_browser"] = module
    spec.loader.exec_module(module)

    app = wx.App(False)
    frame = module.BrowserFrame(ae_title="WXIMG", port=0, storage=tmp_path / "local", demo=True)
    frame.Show()

    def status() -> str:
        return f"status bar: {frame.last_result!r}"

    try:
        pump_until(lambda: bool(frame.nodes) and frame.local is not None, 30, status)
        frame.node_list.Select(0)
        frame.on_save_mask(None)
        assert frame.last_result == "Preview a series first"

        frame.patient_id_field.SetValue("PAT004")
        frame.on_search(None)
        pump_until(lambda: frame.search_job.done and "found" in frame.last_result, 30, status)
        tree = frame.tree
        studies = [s for p in children(tree, frame.root) for s in children(tree, p)]
        series = [s for study in studies for s in children(tree, study)]
        assert len(series) == 1
        tree.UnselectAll()
        tree.SelectItem(series[0])

        frame.on_preview(None)
        pump_until(lambda: frame.image_job.done and frame.volume is not None, 30, status)
        volume = frame.volume
        assert volume.shape == (40, 64, 64)
        bitmap = frame.preview_bitmap.GetBitmap()
        assert bitmap.IsOk() and bitmap.GetWidth() == module.PREVIEW_SIZE
        assert frame.last_result == "Loaded a volume of 40 slices; showing slice 21"
        # The drawn slice is the volume's middle one, windowed.
        width, height, rgb = module.middle_slice(volume)
        assert (width, height) == (64, 64) and len(rgb) == 64 * 64 * 3
        assert len(set(rgb)) > 2  # not a blank picture

        before = frame.runner.call(frame.demo.count)
        frame.threshold_field.SetValue(0)
        frame.on_save_mask(None)
        ended = ("Saved the mask", "Saving the mask failed", "DEMOPACS refused")
        pump_until(lambda: frame.last_result.startswith(ended), 30, status)
        assert frame.last_result.startswith("Saved the mask as SEG"), frame.last_result
        assert frame.runner.call(frame.demo.count) == before + 1
        seg_uid = frame.last_result.split()[5]
        from pydicom.dataset import Dataset

        identifier = Dataset()
        identifier.QueryRetrieveLevel = "IMAGE"
        identifier.SOPInstanceUID = seg_uid
        identifier.SOPClassUID = ""
        found = frame.runner.call(frame.demo.find, identifier)
        assert [str(ds.SOPClassUID) for ds in found] == ["1.2.840.10008.5.1.4.1.1.66.4"]
    finally:
        frame.Close()
        pump_until(lambda: not frame, 10)
        app.Destroy()
    assert frame.runner.closed and not frame.runner.thread.is_alive()
