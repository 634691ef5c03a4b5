"""Shared fixtures. Real peers live in tests/peers/ (pytest plugins)."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import anyio.to_thread
import psutil
import pytest

pytest_plugins = [
    "tests.peers.orthanc",
    "tests.peers.dcmtk",
    "tests.peers.inprocess",
]


# Idle worker-pool threads of anyio and asyncio are reused infrastructure, not leaks.
_POOLED = ("AnyIO worker thread", "asyncio_")


def _connections() -> set[tuple[object, object, str]]:
    conns = psutil.Process().net_connections(kind="inet")
    return {
        (c.laddr, c.raddr, c.status)
        for c in conns
        if c.status not in (psutil.CONN_TIME_WAIT, psutil.CONN_LISTEN, psutil.CONN_NONE)
    }


@dataclass
class LeakCheck:
    """Threads and sockets of this process at the start of a test."""

    threads: set[threading.Thread]
    connections: set[tuple[object, object, str]]

    def _new(self) -> list[threading.Thread]:
        return [
            t
            for t in threading.enumerate()
            if t not in self.threads
            and t is not threading.current_thread()
            and not t.name.startswith(_POOLED)
        ]

    def new_threads(self, join_timeout: float = 15.0) -> list[threading.Thread]:
        """Threads started since the baseline still alive after joining them (bounded).

        Joined until none is left, since clean-up still running (an abandoned async
        generator finalized in a task of its own) may start a thread (a join) while
        the first ones are joined.
        """
        deadline = time.monotonic() + join_timeout
        while True:
            alive = [t for t in self._new() if t.is_alive()]
            if not alive or time.monotonic() >= deadline:
                return alive
            for t in alive:
                t.join(max(0.0, deadline - time.monotonic()))

    def new_connections(self) -> set[tuple[object, object, str]]:
        return _connections() - self.connections

    def assert_clean(self) -> None:
        threads = self.new_threads()
        assert not threads, f"threads left behind: {[t.name for t in threads]}"
        conns = self.new_connections()
        assert not conns, f"sockets left open: {conns}"


@pytest.fixture
async def no_leaks() -> AsyncIterator[LeakCheck]:
    """Assert that a test leaves no thread and no TCP connection behind.

    The check runs in a worker thread so the event loop keeps running while
    it joins threads: clean-up still in flight (an async generator finalized
    after a bare ``break``) gets to finish, as it would in an application.
    """
    check = LeakCheck(set(threading.enumerate()), _connections())
    yield check
    await anyio.to_thread.run_sync(check.assert_clean)
