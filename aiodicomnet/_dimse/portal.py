"""The event loop as seen from an association thread: :class:`LoopPortal`.

A storage whose application callback is ``async`` must run it on the event
loop of the server or C-GET it serves, from pynetdicom's association thread,
and wait for it (the sender waits for its acknowledgement meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio.from_thread
import anyio.lowlevel

__all__ = ["LoopPortal"]

T = TypeVar("T")


class LoopPortal:
    """The event loop that made it (create it on the loop), reachable from other threads."""

    def __init__(self) -> None:
        self._token = anyio.lowlevel.current_token()

    def run(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``await fn(*args)`` on the loop from another thread; wait for its result.

        Raises:
            RuntimeError: the event loop is gone (or this is its own thread).
        """
        return anyio.from_thread.run(fn, *args, token=self._token)
