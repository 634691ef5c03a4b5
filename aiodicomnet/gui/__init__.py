"""Run aiodicomnet from a desktop GUI: wxPython, Qt or Tk.

A GUI toolkit owns the main thread and its event loop; aiodicomnet needs an
async event loop. A :class:`Runner` runs that loop in a background thread and
lets the GUI thread start work there without ever blocking::

    from aiodicomnet.gui import WxRunner

    runner = WxRunner()                               # after wx.App()
    job = runner.submit(client.echo, node,
                        on_done=lambda rtt: status.SetLabel(f"{rtt * 1000:.1f} ms"),
                        on_error=lambda exc: status.SetLabel(str(exc)))
    rows = runner.stream(lambda: client.find(node, query),
                         on_batch=table.append_rows)  # results in batches
    cancel_button.Bind(wx.EVT_BUTTON, lambda e: rows.cancel())   # sends C-CANCEL
    ...
    runner.close()                                    # cancels jobs, joins the thread

Every callback runs on the GUI thread. :class:`WxRunner` (``wx.CallAfter``),
:class:`QtRunner` (a queued signal) and :class:`TkRunner` (a queue polled with
``after``) import their toolkit only when created: importing this package
imports no toolkit. For another toolkit, subclass :class:`Runner` and
implement :meth:`Runner.call_soon_in_gui`. See ``docs/gui.md``.
"""

from __future__ import annotations

from ._runner import Job, JobCancelled, JobState, Runner
from .qt import QtRunner
from .tk import TkRunner
from .wx import WxRunner

__all__ = ["Job", "JobCancelled", "JobState", "QtRunner", "Runner", "TkRunner", "WxRunner"]
