"""Qt (PySide6, offscreen): real C-FIND and retrieve from a widget, and a cancel from its button.

Run by test_toolkits.py in a child process (see conftest.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aiodicomnet.gui import QtRunner
from tests.gui import scenario
from tests.gui.conftest import Pacs

pytestmark = pytest.mark.timeout(60)


class QtUi(scenario.Ui):
    def __init__(self) -> None:
        super().__init__()
        from PySide6 import QtCore, QtWidgets

        self.QtCore = QtCore
        self.window = QtWidgets.QWidget()
        layout = QtWidgets.QVBoxLayout(self.window)
        self.list = QtWidgets.QListWidget()
        self.bar = QtWidgets.QProgressBar()
        self.cancel = QtWidgets.QPushButton("Cancel")
        self.cancel.clicked.connect(lambda checked=False: self.on_cancel_clicked())
        for widget in (self.list, self.bar, self.cancel):
            layout.addWidget(widget)
        self.window.show()
        self.timer = QtCore.QTimer()
        self.timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self.tick)
        self.runner = QtRunner()

    def pump_until(self, condition: Callable[[], bool], timeout: float) -> None:
        QtCore = self.QtCore
        deadline = time.monotonic() + timeout
        loop = QtCore.QEventLoop()
        checker = QtCore.QTimer()

        def check() -> None:
            if condition() or time.monotonic() > deadline:
                loop.quit()

        checker.timeout.connect(check)
        checker.start(5)
        try:
            if not condition():
                loop.exec()
        finally:
            checker.stop()
        assert condition(), f"condition not met within {timeout} s"

    def start_timer(self, ms: int) -> None:
        self.timer.start(ms)

    def stop_timer(self) -> None:
        self.timer.stop()

    def add_rows(self, rows: list[tuple[str, str]]) -> None:
        self.list.addItems([f"{number} {uid}" for number, uid in rows])

    def row_count(self) -> int:
        return int(self.list.count())

    def set_progress(self, value: int, maximum: int) -> None:
        self.bar.setMaximum(maximum)
        self.bar.setValue(value)

    def progress(self) -> tuple[int, int]:
        return int(self.bar.value()), int(self.bar.maximum())

    def click_cancel(self) -> None:
        self.QtCore.QTimer.singleShot(0, self.cancel.click)

    def destroy(self) -> None:
        self.runner.close()
        self.timer.stop()
        self.window.close()
        self.window.deleteLater()


@pytest.fixture
def ui(qt_app: Any, no_leaks: Any) -> Iterator[QtUi]:
    window = QtUi()
    yield window
    window.destroy()


def test_find_then_retrieve_keeps_the_gui_responsive(ui: QtUi, pacs: Pacs) -> None:
    scenario.find_then_retrieve(ui, pacs)


def test_cancel_button_stops_a_long_retrieve(ui: QtUi, pacs: Pacs) -> None:
    scenario.cancel_long_retrieve(ui, pacs)


def test_cancel_button_stops_a_long_c_get(ui: QtUi, pacs: Pacs) -> None:
    scenario.cancel_long_retrieve(ui, pacs, via="get")
