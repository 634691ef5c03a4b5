"""Tkinter adapter: :class:`TkRunner`.

Tk is not called from the loop thread at all. Callbacks go into a
thread-safe :class:`queue.SimpleQueue`, which the Tk thread drains from a
timer it re-arms with ``widget.after(poll_ms, ...)``.

Why not ``widget.after(0, fn)`` or ``event_generate`` from the loop thread?
Tkinter lets other threads call Tk only by marshalling the call to the
thread running ``mainloop`` and *waiting* for it: the loop thread would block
on the GUI (and deadlock if the GUI thread is waiting for the loop, as in
:meth:`~aiodicomnet.gui.Runner.close`), it fails with "main thread is not in
main loop" when ``mainloop`` is not running, and with a Tcl built without
threads it is not safe at all. A queue and a poll cost one timer tick every
``poll_ms`` milliseconds (10 by default: the latency a callback may wait) and
work with every Tcl build.
"""

from __future__ import annotations

import contextlib
import logging
import queue
from collections.abc import Callable
from typing import Any

from ._runner import Runner

__all__ = ["TkRunner"]

log = logging.getLogger("aiodicomnet.gui")


class TkRunner(Runner):
    """A :class:`~aiodicomnet.gui.Runner` whose callbacks run on Tk's thread.

    Create it on the Tk thread (the one that calls ``mainloop``) and close it
    before destroying the root window::

        root = tkinter.Tk()
        runner = TkRunner(root)
        root.protocol("WM_DELETE_WINDOW", lambda: (runner.close(), root.destroy()))

    Args:
        widget: any Tk widget (usually the root); its ``after`` drives the polling.
        poll_ms: milliseconds between two looks at the callback queue.
        **kwargs: see :class:`~aiodicomnet.gui.Runner` (``backend``, ``thread_name``).
    """

    def __init__(self, widget: Any, *, poll_ms: int = 10, **kwargs: Any) -> None:
        if poll_ms < 1:
            raise ValueError("poll_ms must be at least 1")
        self._widget = widget
        self._poll_ms = poll_ms
        self._queue: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._after_id: str | None = None
        super().__init__(**kwargs)
        self._after_id = widget.after(poll_ms, self._poll)

    def call_soon_in_gui(self, fn: Callable[[], object]) -> None:
        """Queue ``fn`` for the Tk thread (thread-safe, FIFO; never touches Tk)."""
        self._queue.put(fn)

    def _poll(self) -> None:
        """Run what is queued (Tk thread), then re-arm the timer."""
        self._after_id = None
        # Only what is there now: callbacks queued meanwhile wait for the next tick.
        for _ in range(self._queue.qsize()):
            try:
                fn = self._queue.get_nowait()
            except queue.Empty:  # pragma: no cover - single consumer
                break
            fn()
        if not self.closed:
            try:
                self._after_id = self._widget.after(self._poll_ms, self._poll)
            except Exception:  # the widget was destroyed
                log.warning("Tk widget gone: TkRunner stops delivering callbacks")

    def _on_close(self) -> None:
        if self._after_id is not None:
            with contextlib.suppress(Exception):  # the widget was destroyed
                self._widget.after_cancel(self._after_id)
            self._after_id = None
