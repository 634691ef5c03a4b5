"""Thread <-> event loop: the only place where the two worlds meet.

pynetdicom is blocking and its associations are not safe for concurrent
DIMSE calls from several threads, so each association is owned by one
:class:`OwnerThread` (as aiosqlite owns one sqlite3 connection per thread).
The event loop submits calls to it and awaits their results; a call that
produces many results (pending C-FIND responses, received instances) pushes
them through a bounded anyio memory stream with :meth:`Outbox.put`, which
blocks the owner thread while the stream is full: backpressure, not
buffering.

Everything here works on both anyio backends (asyncio and trio): the thread
reaches the loop through ``anyio.from_thread`` with the loop's token.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

T = TypeVar("T")

__all__ = ["Call", "Closed", "Inlet", "Outbox", "OwnerThread", "outbox", "run_in_thread"]

_STOP = object()
_WAKE = object()


class Closed(Exception):
    """The loop side has stopped listening (stream closed or loop gone)."""


async def run_in_thread(fn: Callable[..., T], *args: Any, name: str | None = None) -> T:
    """Run blocking ``fn(*args)`` in a new thread of our own; await its result.

    Not anyio's worker pool: its idle threads outlive the call (until the event
    loop ends), and the library promises to leave no thread behind once a
    client or server is closed.  The thread is joined before this returns.
    Cancellation is deferred until ``fn`` returns: a blocking call cannot be
    interrupted, and abandoning it would leave it running on behalf of nobody.
    Starting a thread costs ~50 us, nothing next to the calls made here.
    """
    token = anyio.lowlevel.current_token()
    done = anyio.Event()
    outcome: list[tuple[bool, Any]] = []

    def main() -> None:
        try:
            outcome.append((True, fn(*args)))
        except BaseException as exc:
            outcome.append((False, exc))
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is gone
                anyio.from_thread.run_sync(done.set, token=token)

    thread = threading.Thread(
        target=main, name=name or f"aiodicomnet-{getattr(fn, '__name__', 'call')}", daemon=True
    )
    thread.start()
    with anyio.CancelScope(shield=True):
        await done.wait()
    thread.join()
    ok, value = outcome[0]
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


class OwnerThread:
    """A daemon thread that runs submitted calls one at a time, in order.

    Args:
        name: the thread's name (shows in debuggers and leak reports).
    """

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # (seconds, on_idle, armed at): the idle timer (see set_idle_timer).
        self._idle: tuple[float, Callable[[], bool] | None, float] = (0.0, None, 0.0)
        self._timed = False  # the thread waits with a timeout: it will see a new timer
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        """The underlying thread."""
        return self._thread

    def _run(self) -> None:
        period: float | None = None  # once a timer was armed: how often to look again
        while True:
            self._timed = period is not None  # before reading the timer (set_idle_timer)
            seconds, on_idle, since = self._idle
            if on_idle is not None:
                period = seconds
                timeout: float | None = max(0.0, since + seconds - time.monotonic())
            else:
                timeout = period
            try:
                call = self._calls.get(timeout=timeout)
            except queue.Empty:
                seconds, on_idle, since = self._idle
                if on_idle is not None and time.monotonic() >= since + seconds and on_idle():
                    return
                continue
            if call is _STOP:
                return
            if call is not _WAKE:
                call()

    def set_idle_timer(self, seconds: float | None, on_idle: Callable[[], bool] | None) -> None:
        """Run ``on_idle()`` in the thread after ``seconds`` without calls.

        If ``on_idle`` returns true the thread ends (an idle pooled association
        releasing itself); ``set_idle_timer(None, None)`` disarms the timer.

        Neither wakes the thread once it has had a timer: it then always waits
        with a timeout and reads the timer when that ends (a pooled operation
        arms and disarms it every time; waking the thread for each cost two
        thread switches per operation). A timer is therefore late by at most
        its own length; ``on_idle`` checks that it still applies.
        """
        self._idle = (seconds or 0.0, on_idle, time.monotonic())
        if on_idle is not None and not self._timed:  # after writing the timer (see _run)
            self._calls.put(_WAKE)

    @property
    def alive(self) -> bool:
        """Whether the thread is still running."""
        return self._thread.is_alive()

    def submit(self, fn: Callable[..., T], *args: Any) -> Call[T]:
        """Queue ``fn(*args)`` for the owner thread; must be called on the event loop.

        Raises:
            RuntimeError: the thread has ended.
        """
        if not self._thread.is_alive():
            raise RuntimeError(f"{self._thread.name} has ended")
        call: Call[T] = Call(fn, args)
        self._calls.put(call)
        return call

    async def run(
        self, fn: Callable[..., T], *args: Any, on_cancel: Callable[[], None] | None = None
    ) -> T:
        """Run ``fn(*args)`` in the owner thread and return its result.

        If the awaiting task is cancelled, ``on_cancel`` is called (in a helper
        thread, to make ``fn`` return early, e.g. by aborting the association)
        and the call is still awaited, shielded, so the thread is never left
        working on behalf of nobody.
        """
        call = self.submit(fn, *args)
        try:
            return await call.wait()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                if on_cancel is not None and not call.done:
                    await run_in_thread(on_cancel)
                await call.finished()
            raise

    async def stop(self) -> None:
        """Let queued calls finish, end the thread and wait for it (shielded)."""
        self._calls.put(_STOP)
        with anyio.CancelScope(shield=True):
            await run_in_thread(self._thread.join, name=f"{self._thread.name} (join)")


class Call(Generic[T]):
    """A call queued on an :class:`OwnerThread`; await it with :meth:`wait`."""

    def __init__(self, fn: Callable[..., T], args: tuple[Any, ...]) -> None:
        self._fn = fn
        self._args = args
        self._token = anyio.lowlevel.current_token()
        self._event = anyio.Event()
        self._outcome: tuple[bool, Any] | None = None

    @property
    def done(self) -> bool:
        """Whether the call has returned or raised."""
        return self._outcome is not None

    def __call__(self) -> None:  # runs in the owner thread
        try:
            self._outcome = (True, self._fn(*self._args))
        except BaseException as exc:
            self._outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # RuntimeError: the loop is gone
            anyio.from_thread.run_sync(self._event.set, token=self._token)

    async def finished(self) -> None:
        """Wait until the call is done, without raising its error."""
        await self._event.wait()

    async def wait(self) -> T:
        """Wait for the call and return its result (or raise its exception)."""
        await self._event.wait()
        assert self._outcome is not None
        ok, value = self._outcome
        if ok:
            return value  # type: ignore[no-any-return]
        raise value


def _soon(token: Any) -> Callable[[Callable[[], None]], None]:
    """Schedule a callback on the token's event loop without waiting for it."""
    native = token.native_token
    for name in ("call_soon_threadsafe", "run_sync_soon"):  # asyncio, trio
        schedule = getattr(native, name, None)
        if schedule is not None:
            return cast(Callable[[Callable[[], None]], None], schedule)
    return lambda fn: anyio.from_thread.run_sync(fn, token=token)


class Outbox(Generic[T]):
    """A thread's end of a bounded stream to the event loop.

    A semaphore counts the free places of the stream, so the thread blocks
    (backpressure) only when it is full; otherwise :meth:`put` hands the item
    to the loop without waiting for it (``confirm=True`` waits, for items
    whose delivery must be certain before the thread goes on, such as an
    instance about to be acknowledged).  The loop side calls :meth:`taken`
    for each item it receives and :meth:`abandon` when it stops reading
    (:class:`Inlet`, the loop's end made by :func:`outbox`, does both).
    """

    def __init__(self, send: MemoryObjectSendStream[T], token: Any, capacity: int) -> None:
        self._send = send
        self._token = token
        self._soon = _soon(token)
        self._slots = threading.Semaphore(capacity)
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self.closed = False

    @property
    def waiting(self) -> int:
        """Threads blocked in :meth:`put` because the stream is full."""
        return self._waiting

    def put(
        self,
        item: T,
        *,
        confirm: bool = False,
        stalled: Callable[[], None] | None = None,
        stall_after: float = 10.0,
    ) -> None:
        """Deliver ``item`` to the loop, blocking while the stream is full.

        ``stalled()`` is called (in this thread) if the stream is still full
        after ``stall_after`` seconds, once per call: a chance to say that
        nobody reads it, while the wait goes on.

        Raises:
            Closed: the receiving side is closed or the event loop is gone.
        """
        if self.closed:
            raise Closed
        with self._waiting_lock:
            self._waiting += 1
        try:
            if not self._slots.acquire(timeout=stall_after if stalled else None):
                if stalled is not None:
                    stalled()
                self._slots.acquire()
        finally:
            with self._waiting_lock:
                self._waiting -= 1
        if self.closed:
            self._slots.release()  # wake the next thread waiting here, if any
            raise Closed
        try:
            if confirm:
                anyio.from_thread.run_sync(self._send.send_nowait, item, token=self._token)
            else:
                self._soon(functools.partial(self._deliver, item))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, RuntimeError) as exc:
            self.abandon()
            raise Closed from exc

    def _deliver(self, item: T) -> None:  # on the loop
        try:
            self._send.send_nowait(item)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.abandon()

    def taken(self) -> None:
        """On the loop: one item was received, its place is free again."""
        self._slots.release()

    def abandon(self) -> None:
        """The receiver has stopped reading: fail every present and future :meth:`put`.

        One release wakes one waiting thread, which passes it on (see :meth:`put`).
        """
        self.closed = True
        self._slots.release()

    def close(self) -> None:
        """Close the sending side, after the items already handed over."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(RuntimeError):
            self._soon(self._send.close)


class Inlet(Generic[T]):
    """The loop's end of an :class:`Outbox`: receiving an item frees its place.

    Iterate it (``async for``) or call :meth:`receive`; :meth:`close` (or
    leaving ``with``) stops reading and fails the thread's next ``put``.
    """

    def __init__(self, receive: MemoryObjectReceiveStream[T], box: Outbox[T]) -> None:
        self._receive = receive
        self._box = box

    @property
    def pending(self) -> int:
        """Items delivered and not yet received."""
        return self._receive.statistics().current_buffer_used

    async def receive(self) -> T:
        """The next item.

        Raises:
            anyio.EndOfStream: the thread closed its outbox.
            anyio.ClosedResourceError: this inlet was closed.
        """
        item = await self._receive.receive()
        self._box.taken()
        return item

    def __aiter__(self) -> Inlet[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop reading: items still queued are dropped, the thread's next put fails."""
        self._box.abandon()
        self._receive.close()
        # On the loop, so the send side can be closed here too (the thread's own
        # close() is skipped once abandoned): no stream is left for the collector.
        self._box._send.close()

    def __enter__(self) -> Inlet[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def outbox(max_buffer: int) -> tuple[Outbox[Any], Inlet[Any]]:
    """Create a bounded stream: an :class:`Outbox` for a thread and the loop's :class:`Inlet`.

    Must be called on the event loop.  ``max_buffer`` below 1 counts as 1.
    """
    capacity = max(1, max_buffer)
    send, receive = anyio.create_memory_object_stream[Any](capacity)
    box: Outbox[Any] = Outbox(send, anyio.lowlevel.current_token(), capacity)
    return box, Inlet(receive, box)
