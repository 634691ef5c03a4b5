"""Tkinter: real C-FIND and retrieve from a Tk window, and a cancel from its button.

Run by test_toolkits.py in a child process under Xvfb (see conftest.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aiodicomnet.gui import TkRunner
from tests.gui import scenario
from tests.gui.conftest import Pacs

pytestmark = pytest.mark.timeout(60)


class TkUi(scenario.Ui):
    def __init__(self, root: Any) -> None:
        super().__init__()
        from tkinter import ttk

        self.root = root
        self.tree = ttk.Treeview(root, columns=("uid",))
        self.bar = ttk.Progressbar(root, maximum=100, length=400)
        self.cancel = ttk.Button(root, text="Cancel", command=self.on_cancel_clicked)
        self.tree.pack(fill="both", expand=True)
        self.bar.pack(fill="x")
        self.cancel.pack()
        self._timer: str | None = None
        self.runner = TkRunner(root)

    def pump_until(self, condition: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout

        def check() -> None:
            if condition() or time.monotonic() > deadline:
                self.root.quit()
            else:
                self.root.after(5, check)

        if not condition():
            self.root.after(5, check)
            self.root.mainloop()
        assert condition(), f"condition not met within {timeout} s"

    def start_timer(self, ms: int) -> None:
        def fire() -> None:
            self.tick()
            self._timer = self.root.after(ms, fire)

        self._timer = self.root.after(ms, fire)

    def stop_timer(self) -> None:
        if self._timer is not None:
            self.root.after_cancel(self._timer)
            self._timer = None

    def add_rows(self, rows: list[tuple[str, str]]) -> None:
        for number, uid in rows:
            self.tree.insert("", "end", text=number, values=(uid,))

    def row_count(self) -> int:
        return len(self.tree.get_children())

    def set_progress(self, value: int, maximum: int) -> None:
        self.bar.configure(maximum=maximum, value=value)

    def progress(self) -> tuple[int, int]:
        return int(float(self.bar.cget("value"))), int(float(self.bar.cget("maximum")))

    def click_cancel(self) -> None:
        self.root.after_idle(self.cancel.invoke)

    def destroy(self) -> None:
        self.runner.close()
        self.stop_timer()


@pytest.fixture
def ui(tk_root: Any, no_leaks: Any) -> Iterator[TkUi]:
    window = TkUi(tk_root)
    yield window
    window.destroy()


def test_find_then_retrieve_keeps_the_gui_responsive(ui: TkUi, pacs: Pacs) -> None:
    scenario.find_then_retrieve(ui, pacs)


def test_cancel_button_stops_a_long_retrieve(ui: TkUi, pacs: Pacs) -> None:
    scenario.cancel_long_retrieve(ui, pacs)


def test_callbacks_do_not_touch_tk_from_the_loop_thread(tk_root: Any, no_leaks: Any) -> None:
    """Tk is only called from its own thread: a callback posted while the Tk loop is
    not running waits in the queue (nothing blocks), and runs once Tk pumps again."""
    import threading

    runner = TkRunner(tk_root, poll_ms=5)
    try:
        seen: list[threading.Thread] = []

        async def work() -> int:
            return 42

        job = runner.submit(work, on_done=lambda value: seen.append(threading.current_thread()))
        assert job.wait(10)  # the loop finished while Tk was not running
        deadline = time.monotonic() + 10

        def check() -> None:
            if seen or time.monotonic() > deadline:
                tk_root.quit()
            else:
                tk_root.after(5, check)

        tk_root.after(5, check)
        tk_root.mainloop()
        assert seen == [threading.main_thread()]
    finally:
        runner.close()
