"""wxPython adapter: :class:`WxRunner`.

Callbacks reach the GUI thread through ``wx.CallAfter``, which posts an event
to the application object; it is thread-safe, and the events are handled in
the order they were posted. wxPython is imported when a :class:`WxRunner` is
created, not when this module is.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ._runner import Runner

__all__ = ["WxRunner"]


class WxRunner(Runner):
    """A :class:`~aiodicomnet.gui.Runner` whose callbacks run on wxPython's main thread.

    Create it on the GUI thread once the ``wx.App`` exists, and close it
    before the application ends, for instance when the main frame closes::

        app = wx.App()
        runner = WxRunner()
        frame.Bind(wx.EVT_CLOSE, lambda event: (runner.close(), event.Skip()))

    Args:
        **kwargs: see :class:`~aiodicomnet.gui.Runner` (``backend``, ``thread_name``).

    Raises:
        RuntimeError: no ``wx.App`` has been created.
        ImportError: wxPython is not installed.
    """

    def __init__(self, **kwargs: Any) -> None:
        wx: Any = importlib.import_module("wx")
        if wx.GetApp() is None:
            raise RuntimeError("create the wx.App before the WxRunner")
        self._wx = wx
        # wx.CallAfter sets up its event type on first use; do that here, on
        # the GUI thread, rather than racing from the loop thread.
        wx.CallAfter(_nothing)
        super().__init__(**kwargs)

    def call_soon_in_gui(self, fn: Callable[[], object]) -> None:
        """Schedule ``fn`` with ``wx.CallAfter`` (thread-safe, FIFO)."""
        self._wx.CallAfter(fn)


def _nothing() -> None:
    pass
