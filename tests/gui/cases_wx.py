"""wxPython: real C-FIND and retrieve from a wx.Frame, and a cancel from its button.

Run by test_toolkits.py in a child process under Xvfb (see conftest.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aiodicomnet.gui import WxRunner
from tests.gui import scenario
from tests.gui.conftest import Pacs

pytestmark = pytest.mark.timeout(60)


def pump_until(
    condition: Callable[[], bool], timeout: float, describe: Callable[[], str] | None = None
) -> None:
    """Run a wx event loop until ``condition()`` holds; AssertionError after ``timeout``
    (with ``describe()`` in its message)."""
    import wx

    deadline = time.monotonic() + timeout
    loop = wx.GUIEventLoop()
    checker = wx.Timer()

    def check(event: Any = None) -> None:
        if condition() or time.monotonic() > deadline:
            loop.Exit()

    checker.Bind(wx.EVT_TIMER, check)
    checker.Start(5)
    activator = wx.EventLoopActivator(loop)
    try:
        if not condition():
            loop.Run()
    finally:
        del activator
        checker.Stop()
    if not condition():
        state = f": {describe()}" if describe is not None else ""
        raise AssertionError(f"condition not met within {timeout} s{state}")


class WxUi(scenario.Ui):
    def __init__(self, wx: Any) -> None:
        super().__init__()
        self.wx = wx
        self.frame = wx.Frame(None, title="aiodicomnet", size=(640, 480))
        panel = wx.Panel(self.frame)
        self.list = wx.ListCtrl(panel, style=wx.LC_REPORT)
        self.list.InsertColumn(0, "Number")
        self.list.InsertColumn(1, "SOP Instance UID", width=400)
        self.gauge = wx.Gauge(panel, range=100)
        self.cancel = wx.Button(panel, label="Cancel")
        self.cancel.Bind(wx.EVT_BUTTON, lambda event: self.on_cancel_clicked())
        sizer = wx.BoxSizer(wx.VERTICAL)
        sizer.Add(self.list, 1, wx.EXPAND)
        sizer.Add(self.gauge, 0, wx.EXPAND)
        sizer.Add(self.cancel, 0)
        panel.SetSizer(sizer)
        self.frame.Show()
        self.timer = wx.Timer(self.frame)
        self.frame.Bind(wx.EVT_TIMER, lambda event: self.tick(), self.timer)
        self.runner = WxRunner()

    def pump_until(self, condition: Callable[[], bool], timeout: float) -> None:
        pump_until(condition, timeout)

    def start_timer(self, ms: int) -> None:
        self.timer.Start(ms)

    def stop_timer(self) -> None:
        self.timer.Stop()

    def add_rows(self, rows: list[tuple[str, str]]) -> None:
        for number, uid in rows:
            index = self.list.InsertItem(self.list.GetItemCount(), number)
            self.list.SetItem(index, 1, uid)

    def row_count(self) -> int:
        return int(self.list.GetItemCount())

    def set_progress(self, value: int, maximum: int) -> None:
        if self.gauge.GetRange() != maximum:
            self.gauge.SetRange(maximum)
        self.gauge.SetValue(value)

    def progress(self) -> tuple[int, int]:
        return int(self.gauge.GetValue()), int(self.gauge.GetRange())

    def click_cancel(self) -> None:
        event = self.wx.CommandEvent(self.wx.wxEVT_BUTTON, self.cancel.GetId())
        event.SetEventObject(self.cancel)
        self.wx.PostEvent(self.cancel, event)

    def destroy(self) -> None:
        self.runner.close()
        self.timer.Stop()
        self.frame.Destroy()


@pytest.fixture
def ui(wx_app: Any, no_leaks: Any) -> Iterator[WxUi]:
    import wx

    window = WxUi(wx)
    yield window
    window.destroy()


def test_find_then_retrieve_keeps_the_gui_responsive(ui: WxUi, pacs: Pacs) -> None:
    scenario.find_then_retrieve(ui, pacs)


def test_cancel_button_stops_a_long_retrieve(ui: WxUi, pacs: Pacs) -> None:
    scenario.cancel_long_retrieve(ui, pacs)
