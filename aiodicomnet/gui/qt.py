"""Qt adapter: :class:`QtRunner` (PySide6, PyQt6, PySide2 or PyQt5).

Callbacks reach the GUI thread through a signal of a small QObject that lives
in the GUI thread, connected to its slot with ``Qt.QueuedConnection``:
emitting it from the loop thread is thread-safe and never blocks, and Qt
delivers the calls through the GUI thread's event queue, in order.
(``QTimer.singleShot(0, fn)`` called from a thread without a Qt event loop
would attach the timer to that thread, where it never fires.) The Qt binding
is imported when a :class:`QtRunner` is created, not when this module is.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ._runner import Runner

__all__ = ["BINDINGS", "QtRunner"]

#: Qt bindings tried in this order when none is named.
BINDINGS = ("PySide6", "PyQt6", "PySide2", "PyQt5")

_invoker_classes: dict[str, Any] = {}


def _qt_core(binding: str | None) -> tuple[str, Any]:
    names = (binding,) if binding else BINDINGS
    errors = []
    for name in names:
        try:
            return name, importlib.import_module(f"{name}.QtCore")
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise ImportError("no Qt binding could be imported (" + "; ".join(errors) + ")")


def _invoker_class(binding: str, qt_core: Any) -> Any:
    """A QObject subclass with a queued ``call(object)`` signal (made once per binding)."""
    cls = _invoker_classes.get(binding)
    if cls is not None:
        return cls
    signal = getattr(qt_core, "Signal", None) or qt_core.pyqtSignal
    connection = getattr(qt_core.Qt, "ConnectionType", qt_core.Qt).QueuedConnection

    class _Invoker(qt_core.QObject):  # type: ignore[misc]
        call = signal(object)

        def __init__(self) -> None:
            super().__init__()
            self.call.connect(self._invoke, connection)

        def _invoke(self, fn: Callable[[], object]) -> None:
            fn()

    _invoker_classes[binding] = _Invoker
    return _Invoker


class QtRunner(Runner):
    """A :class:`~aiodicomnet.gui.Runner` whose callbacks run on Qt's GUI thread.

    Create it once the ``QApplication`` exists and close it before the
    application quits::

        app = QApplication(sys.argv)
        runner = QtRunner()
        app.aboutToQuit.connect(runner.close)

    Args:
        binding: ``"PySide6"``, ``"PyQt6"``, ``"PySide2"`` or ``"PyQt5"``;
            default: the first of :data:`BINDINGS` that imports.
        **kwargs: see :class:`~aiodicomnet.gui.Runner` (``backend``, ``thread_name``).

    Raises:
        RuntimeError: no ``QCoreApplication`` has been created.
        ImportError: no Qt binding is installed.
    """

    def __init__(self, *, binding: str | None = None, **kwargs: Any) -> None:
        self.binding, qt_core = _qt_core(binding)
        app = qt_core.QCoreApplication.instance()
        if app is None:
            raise RuntimeError("create the QApplication before the QtRunner")
        invoker = _invoker_class(self.binding, qt_core)()
        # Make sure the slot runs in the GUI thread whichever thread made us.
        if invoker.thread() is not app.thread():
            invoker.moveToThread(app.thread())
        self._invoker: Any = invoker
        super().__init__(**kwargs)

    def call_soon_in_gui(self, fn: Callable[[], object]) -> None:
        """Emit the queued signal (thread-safe, FIFO, never blocks)."""
        self._invoker.call.emit(fn)

    def _on_close(self) -> None:
        self._invoker.deleteLater()
