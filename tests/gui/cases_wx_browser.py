"""Smoke test of examples/wx_browser.py in demo mode, driven through its handlers.

Run by test_toolkits.py in the wx child process under Xvfb (see conftest.py).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from aiodicomnet.samples import make_corpus, make_series, write_files
from tests.gui.cases_wx import pump_until

pytestmark = pytest.mark.timeout(60)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "wx_browser.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wx_browser", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["wx_browser"] = module
    spec.loader.exec_module(module)
    return module


def children(tree: Any, item: Any) -> list[Any]:
    found = []
    child, cookie = tree.GetFirstChild(item)
    while child.IsOk():
        found.append(child)
        child, cookie = tree.GetNextChild(item, cookie)
    return found


@pytest.fixture
def browser(wx_app: Any, no_leaks: Any, tmp_path: Path) -> Iterator[Any]:
    module = load_example()
    frame = module.BrowserFrame(ae_title="WXTEST", port=0, storage=tmp_path / "local", demo=True)
    frame.Show()
    yield frame
    if frame:  # still open: a failed test
        frame.Close()
        pump_until(lambda: not frame, 10)


def test_demo_search_download_send_close(browser: Any, tmp_path: Path) -> None:
    frame = browser

    def status() -> str:
        return f"status bar: {frame.last_result!r}"

    pump_until(lambda: bool(frame.nodes) and frame.local is not None, 30, status)
    frame.node_list.Select(0)

    frame.on_echo(None)
    pump_until(lambda: frame.node_list.GetItemText(0, 3).startswith(("ok", "failed")), 10, status)
    assert frame.node_list.GetItemText(0, 3).startswith("ok"), frame.last_result

    # Search: CT studies of every patient, with their CT series.
    frame.modality_field.SetSelection(frame.modality_field.FindString("CT"))
    frame.on_search(None)
    pump_until(lambda: frame.search_job.done and "found" in frame.last_result, 30, status)
    tree = frame.tree
    patients = children(tree, frame.root)
    labels = sorted(tree.GetItemText(p) for p in patients)
    assert len(patients) == 4, labels
    assert any("PAT004" in label for label in labels)
    studies = [s for p in patients for s in children(tree, p)]
    assert len(studies) == 4
    series = [s for study in studies for s in children(tree, study)]
    assert len(series) == 3 * 2 + 1
    assert all(" CT " in tree.GetItemText(s) for s in series)

    # Download the 40-image demo study into the local archive.
    chest = next(s for s in studies if "CT CHEST" in tree.GetItemText(s))
    tree.UnselectAll()
    tree.SelectItem(chest)
    frame.on_download(None)
    pump_until(lambda: frame.transfer_job.done and frame.local_count == 40, 30, status)
    assert frame.last_result == "Downloaded 40 instance(s)"
    assert frame.gauge.GetValue() == frame.gauge.GetRange() == 40

    # Send three new files to the demo PACS.
    paths = write_files(tmp_path / "send", make_series(3, patient_id="PAT005"))
    frame.send_files(paths, frame.nodes[0])
    pump_until(lambda: frame.transfer_job.done and frame.last_result.startswith("Sent"), 30, status)
    assert frame.last_result == "Sent 3 file(s), 0 failed"
    assert frame.runner.call(frame.demo.count) == len(make_corpus().datasets) + 40 + 3

    frame.Close()
    pump_until(lambda: not frame, 10)
    assert frame.runner.closed and not frame.runner.thread.is_alive()


def test_demo_dicomweb_node(browser: Any, tmp_path: Path) -> None:
    """A DICOMweb node added in the node dialog (the demo PACS's own DICOMweb face),
    then echo, search, download into the local archive, send, preview and save a
    mask through the same handlers as a DICOM node."""
    import wx

    frame = browser
    module = sys.modules[type(frame).__module__]

    def status() -> str:
        return f"status bar: {frame.last_result!r}"

    pump_until(lambda: len(frame.nodes) == 2 and frame.local is not None, 30, status)
    demo_web = frame.nodes[1]
    assert isinstance(demo_web, module.WebNode) and demo_web.name == module.DEMO_WEB
    assert frame.node_list.GetItemText(1, 1) == demo_web.url

    # The node dialog: a DICOMweb node with a user and password; mistakes stay in the dialog.
    seen: dict[str, Any] = {}

    def fill() -> None:
        dialogs = [w for w in wx.GetTopLevelWindows() if isinstance(w, module.NodeDialog)]
        try:
            (dialog,) = dialogs
            assert dialog.IsModal()
            dialog.kind.SetSelection(1)
            dialog.on_kind(None)
            assert dialog.url_field.IsEnabled() and not dialog.ae_field.IsEnabled()
            dialog.url_field.SetValue("pacs.example.org/dicom-web")
            dialog.on_ok(None)
            seen["url error"] = dialog.error_label.GetLabel()
            dialog.url_field.SetValue(demo_web.url)
            dialog.user_field.SetValue("alice")
            dialog.password_field.SetValue("secret")
            dialog.token_field.SetValue("a-token")
            dialog.on_ok(None)
            seen["auth error"] = dialog.error_label.GetLabel()
            assert dialog.IsModal()
            dialog.token_field.SetValue("")
            dialog.on_ok(None)  # closes the dialog with OK
        except BaseException as exc:
            seen["failed"] = exc
            for dialog in dialogs:
                dialog.EndModal(wx.ID_CANCEL)

    wx.CallAfter(fill)
    frame.on_add_node(None)  # returns when the dialog is closed
    assert "failed" not in seen, seen
    assert "is not an http:// or https:// URL" in seen["url error"]
    assert seen["auth error"] == "give a user and password, or a token, not both"
    node = frame.nodes[-1]
    assert len(frame.nodes) == 3 and isinstance(node, module.WebNode)
    assert node.url == demo_web.url and node.auth == ("alice", "secret")
    assert frame.node_list.GetItemText(2, 1) == node.url
    frame.node_list.Select(2)

    frame.on_echo(None)
    pump_until(lambda: frame.node_list.GetItemText(2, 3).startswith(("ok", "failed")), 10, status)
    assert frame.node_list.GetItemText(2, 3).startswith("ok"), frame.last_result
    assert frame.last_result.startswith(f"QIDO-RS {node.url}: ok")

    # Search (QIDO-RS): the same tree as over DIMSE.
    frame.modality_field.SetSelection(frame.modality_field.FindString("CT"))
    frame.on_search(None)
    pump_until(lambda: frame.search_job.done and "found" in frame.last_result, 30, status)
    tree = frame.tree
    patients = children(tree, frame.root)
    assert len(patients) == 4
    studies = [s for p in patients for s in children(tree, p)]
    series = [s for study in studies for s in children(tree, study)]
    assert len(studies) == 4 and len(series) == 3 * 2 + 1
    assert all(" CT " in tree.GetItemText(s) for s in series)

    # Download (WADO-RS) the 40-image demo study into the local archive.
    chest = next(s for s in studies if "CT CHEST" in tree.GetItemText(s))
    tree.UnselectAll()
    tree.SelectItem(chest)
    frame.on_download(None)
    pump_until(lambda: frame.transfer_job.done and frame.local_count == 40, 30, status)
    assert frame.last_result == "Downloaded 40 instance(s)"
    assert frame.gauge.GetValue() == frame.gauge.GetRange() == 40

    # Send (STOW-RS) three new files.
    before = frame.runner.call(frame.demo.count)
    paths = write_files(tmp_path / "send", make_series(3, patient_id="PAT006"))
    frame.send_files(paths, node)
    pump_until(lambda: frame.transfer_job.done and frame.last_result.startswith("Sent"), 30, status)
    assert frame.last_result == "Sent 3 file(s), 0 failed"
    assert frame.runner.call(frame.demo.count) == before + 3

    # Preview (QIDO-RS, then WADO-RS into memory) and save a mask (STOW-RS).
    (chest_series,) = children(tree, chest)
    tree.UnselectAll()
    tree.SelectItem(chest_series)
    frame.on_preview(None)
    pump_until(lambda: frame.image_job.done and frame.volume is not None, 30, status)
    assert frame.volume.shape == (40, 64, 64) and frame.volume_node is node
    assert frame.last_result == "Loaded a volume of 40 slices; showing slice 21"
    frame.threshold_field.SetValue(0)
    frame.on_save_mask(None)
    ended = ("Saved the mask", "Saving the mask failed", f"{node.url} refused")
    pump_until(lambda: frame.last_result.startswith(ended), 30, status)
    assert frame.last_result.startswith("Saved the mask as SEG"), frame.last_result
    assert frame.last_result.endswith(f"to {node.url}")
    assert frame.runner.call(frame.demo.count) == before + 3 + 1

    frame.Close()
    pump_until(lambda: not frame, 10)
    assert frame.runner.closed and not frame.runner.thread.is_alive()
