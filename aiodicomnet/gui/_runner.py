"""The toolkit-neutral core of :mod:`aiodicomnet.gui`: :class:`Runner` and :class:`Job`.

A :class:`Runner` owns one event loop running in a background thread (anyio,
asyncio backend by default). The GUI thread hands it work with
:meth:`Runner.submit` (one coroutine, one result) or :meth:`Runner.stream`
(an async iterable delivered in batches) and gets a :class:`Job` back at
once. Everything the job reports -- its result, its error, its progress, its
batches -- reaches the application through callbacks that run **on the GUI
thread**, scheduled by the toolkit adapter's :meth:`Runner.call_soon_in_gui`.

Nothing the GUI thread calls here blocks on the event loop: ``submit``,
``stream`` and ``Job.cancel`` post a request to the loop thread and return
(only :meth:`Runner.close` and :meth:`Runner.call` wait, by design). Requests
travel through the loop's own thread-safe scheduling
(``loop.call_soon_threadsafe`` on asyncio, ``TrioToken.run_sync_soon`` on
trio) into one dispatcher task that starts and cancels jobs.

Flow control towards the GUI:

* progress reports are coalesced: whatever the rate at which the coroutine
  reports, at most one delivery per job is queued on the GUI thread, and it
  carries the latest value;
* a stream's batches are bounded in number: at most ``max_in_flight``
  batches wait in the GUI's queue; the next one waits until the GUI has
  handled one, and meanwhile the source is not read (so a Storage SCP, a
  C-FIND or a C-GET slows down through TCP instead of piling up rows).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

import anyio
from anyio.abc import TaskGroup
from anyio.from_thread import BlockingPortal
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["Job", "JobCancelled", "JobState", "Runner"]

log = logging.getLogger("aiodicomnet.gui")

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - an item of a stream

JobState = Literal["pending", "running", "done", "failed", "cancelled"]

_Outcome = tuple[Literal["done", "failed", "cancelled"], Any]


class JobCancelled(Exception):
    """Raised by :meth:`Job.result` for a job that was cancelled."""


def _native_call_soon(backend: str) -> Callable[..., object]:
    """The running loop's non-blocking, thread-safe "call this soon" (loop thread only)."""
    if backend == "asyncio":
        import asyncio

        return asyncio.get_running_loop().call_soon_threadsafe
    if backend == "trio":
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon
    raise ValueError(f"unsupported backend {backend!r}")  # pragma: no cover - checked earlier


class Job(Generic[T]):
    """A coroutine (or stream) running on a :class:`Runner`'s event loop.

    Made by :meth:`Runner.submit` and :meth:`Runner.stream`. Exactly one of
    the job's ``on_done(result)``, ``on_error(exception)`` and
    ``on_cancelled()`` callbacks is called, on the GUI thread, after the work
    has completely stopped (for a DICOM operation: after its association was
    released, or aborted). Callbacks are delivered in the order they were
    posted, so a job's last progress report and last batch always come before
    its outcome.

    Attributes:
        name: a label for logs.
    """

    def __init__(
        self,
        runner: Runner,
        name: str,
        on_done: Callable[[T], object] | None,
        on_error: Callable[[Exception], object] | None,
        on_cancelled: Callable[[], object] | None,
    ) -> None:
        self.name = name
        self._runner = runner
        self._on_done = on_done
        self._on_error = on_error
        self._on_cancelled = on_cancelled
        self._cancel_requested = False
        self._started = False
        self._scope: anyio.CancelScope | None = None
        self._outcome: _Outcome | None = None
        self._finished = threading.Event()

    def __repr__(self) -> str:
        return f"<Job {self.name!r} {self.state}>"

    # -- any thread ------------------------------------------------------------------

    def cancel(self) -> bool:
        """Ask the job to stop; return at once (call it from any thread, typically the GUI).

        The coroutine is cancelled in the loop thread: a running C-FIND,
        C-MOVE or C-GET sends C-CANCEL and releases its association (see
        :class:`~aiodicomnet.client.Client`). From this call on, the job's
        ``on_progress`` and ``on_batch`` callbacks are not called any more;
        ``on_cancelled`` comes once everything has stopped -- or ``on_done``
        / ``on_error``, if the work ended on its own before the cancellation
        reached it.

        Returns:
            ``False`` if the job had already finished, else ``True``.
        """
        if self._finished.is_set():
            return False
        if not self._cancel_requested:
            self._cancel_requested = True
            # RuntimeError: the loop has stopped, and the job was cancelled with it.
            with contextlib.suppress(RuntimeError):
                self._runner._call_in_loop(self._cancel_in_loop)
        return True

    @property
    def cancel_requested(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancel_requested

    @property
    def done(self) -> bool:
        """Whether the work has ended (finished, failed or cancelled).

        The outcome callback may still be on its way to the GUI thread.
        """
        return self._finished.is_set()

    @property
    def cancelled(self) -> bool:
        """Whether the job ended by cancellation."""
        return self._outcome is not None and self._outcome[0] == "cancelled"

    @property
    def state(self) -> JobState:
        """``"pending"``, ``"running"``, ``"done"``, ``"failed"`` or ``"cancelled"``."""
        if self._outcome is not None:
            return self._outcome[0]
        return "running" if self._started else "pending"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the work has ended; return whether it has.

        For scripts and tests: never call it on the GUI thread while the job
        still needs the GUI (a stream waiting for its batches to be handled).
        """
        return self._finished.wait(timeout)

    def result(self) -> T:
        """The coroutine's return value.

        Raises:
            RuntimeError: the job has not finished.
            JobCancelled: the job was cancelled.
            Exception: the coroutine's own exception, if it failed.
        """
        if self._outcome is None:
            raise RuntimeError(f"{self!r} has not finished")
        kind, value = self._outcome
        if kind == "failed":
            raise value
        if kind == "cancelled":
            raise JobCancelled(self.name)
        return value  # type: ignore[no-any-return]

    def exception(self) -> Exception | None:
        """The coroutine's exception if it failed, else ``None``.

        Raises:
            RuntimeError: the job has not finished.
        """
        if self._outcome is None:
            raise RuntimeError(f"{self!r} has not finished")
        kind, value = self._outcome
        return value if kind == "failed" else None

    # -- loop thread -----------------------------------------------------------------

    def _cancel_in_loop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def _run(self, work: Callable[[], Awaitable[T]]) -> None:
        outcome: _Outcome = ("cancelled", None)
        try:
            if not self._cancel_requested:
                self._started = True
                with anyio.CancelScope() as scope:
                    self._scope = scope
                    try:
                        value = await work()
                    except Exception as exc:
                        outcome = ("failed", exc)
                    else:
                        outcome = ("done", value)
        finally:
            self._scope = None
            self._outcome = outcome
            self._finished.set()
            self._runner._forget(self)
            self._runner._post_to_gui(self._deliver_outcome)

    # -- GUI thread --------------------------------------------------------------------

    def _deliver_outcome(self) -> None:
        assert self._outcome is not None
        kind, value = self._outcome
        if kind == "done":
            if self._on_done is not None:
                self._on_done(value)
        elif kind == "failed":
            if self._on_error is not None:
                self._on_error(value)
            else:
                log.error("job %s failed", self.name, exc_info=value)
        elif self._on_cancelled is not None:
            self._on_cancelled()


class _Progress:
    """The ``progress`` callable handed to a job: coalesces reports for the GUI thread."""

    def __init__(self, runner: Runner, job: Job[Any], callback: Callable[[Any], object]) -> None:
        self._runner = runner
        self._job = job
        self._callback = callback
        self._lock = threading.Lock()
        self._pending = False
        self._value: Any = None

    def __call__(self, value: Any) -> None:
        """Report ``value`` (any thread); only the latest pending value is delivered."""
        with self._lock:
            self._value = value
            if self._pending:
                return
            self._pending = True
        if not self._runner._post_to_gui(self._deliver):
            with self._lock:
                self._pending = False

    def _deliver(self) -> None:  # GUI thread
        with self._lock:
            value, self._value = self._value, None
            self._pending = False
        if not self._job._cancel_requested:
            self._callback(value)


class _Buffer(Generic[I]):
    """Items read from a stream's source, waiting to be batched (loop thread only)."""

    def __init__(self) -> None:
        self.items: deque[I] = deque()
        self.closed = False
        self.oldest = 0.0
        self._changed = anyio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _wait(self) -> None:
        await self._changed.wait()

    async def put(self, item: I, limit: int) -> None:
        while len(self.items) >= limit:
            await self._wait()
        if not self.items:
            self.oldest = anyio.current_time()
        self.items.append(item)
        self._notify()

    def close(self) -> None:
        self.closed = True
        self._notify()

    async def take(self, size: int, max_interval: float) -> list[I]:
        """Up to ``size`` items: once ``size`` are there, the source has ended, or
        ``max_interval`` has passed since the oldest arrived. Empty: the end."""
        while not self.items and not self.closed:
            await self._wait()
        while len(self.items) < size and not self.closed:
            remaining = self.oldest + max_interval - anyio.current_time()
            if remaining <= 0:
                break
            # Waiting on an event is safe to time out: no item can be lost.
            with anyio.move_on_after(remaining):
                await self._wait()
        batch = [self.items.popleft() for _ in range(min(size, len(self.items)))]
        if self.items:
            self.oldest = anyio.current_time()
        self._notify()
        return batch


class Runner(ABC):
    """An event loop in a background thread, driven from a GUI thread.

    Subclasses say how to run a function on the GUI thread
    (:meth:`call_soon_in_gui`); :class:`~aiodicomnet.gui.WxRunner`,
    :class:`~aiodicomnet.gui.QtRunner` and :class:`~aiodicomnet.gui.TkRunner`
    are ready-made. Create the runner on the GUI thread, after the toolkit's
    application object; close it (:meth:`close`, or use it as a context
    manager) before the application ends.

    Args:
        backend: the anyio backend of the loop, ``"asyncio"`` (default) or ``"trio"``.
        thread_name: the name of the loop thread.

    Raises:
        ValueError: an unknown backend.
    """

    def __init__(
        self, *, backend: str = "asyncio", thread_name: str = "aiodicomnet-gui-loop"
    ) -> None:
        if backend not in ("asyncio", "trio"):
            raise ValueError(f"backend must be 'asyncio' or 'trio', not {backend!r}")
        self.backend = backend
        self._lock = threading.Lock()
        self._jobs: set[Job[Any]] = set()
        self._closed = False
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._call_soon: Callable[..., object] | None = None
        self._inbox: MemoryObjectSendStream[Callable[[], object]] | None = None
        self._portal: BlockingPortal | None = None
        self._tg: TaskGroup | None = None
        self._thread = threading.Thread(target=self._thread_main, name=thread_name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            raise RuntimeError("the event loop thread did not start") from self._startup_error

    # -- what a toolkit adapter provides ----------------------------------------------

    @abstractmethod
    def call_soon_in_gui(self, fn: Callable[[], object]) -> None:
        """Schedule ``fn()`` to run on the GUI thread, soon, in FIFO order.

        Called from the loop thread (and sometimes the GUI thread). Must not
        block and must be thread-safe.
        """

    def _on_close(self) -> None:  # noqa: B027 - an optional hook
        """Adapter hook, called by :meth:`close` on the GUI thread after the loop stopped."""

    # -- public API ---------------------------------------------------------------------

    @property
    def thread(self) -> threading.Thread:
        """The loop thread."""
        return self._thread

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def portal(self) -> BlockingPortal:
        """An anyio :class:`~anyio.from_thread.BlockingPortal` into the loop.

        Its calls block the calling thread until the loop has done the work:
        use it for setup and teardown, never for DICOM operations on the GUI
        thread (that is what :meth:`submit` is for). A context manager
        entered with ``portal.wrap_async_context_manager`` that is still open
        when the runner closes is cancelled.
        """
        if self._portal is None:  # pragma: no cover - set before __init__ returns
            raise RuntimeError("the runner is not running")
        return self._portal

    @property
    def jobs(self) -> list[Job[Any]]:
        """The jobs that have not ended yet."""
        with self._lock:
            return list(self._jobs)

    def submit(
        self,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        on_done: Callable[[T], object] | None = None,
        on_error: Callable[[Exception], object] | None = None,
        on_cancelled: Callable[[], object] | None = None,
        on_progress: Callable[[Any], object] | None = None,
        name: str | None = None,
    ) -> Job[T]:
        """Run ``await fn(*args)`` on the loop; return its :class:`Job` at once.

        ``fn`` is called in the loop thread (so an
        :class:`~aiodicomnet.client.Operation` or a coroutine is created
        there). If ``on_progress`` is given, ``fn`` also gets a keyword
        argument ``progress``: a thread-safe callable whose values reach
        ``on_progress`` on the GUI thread, coalesced (when reports come
        faster than the GUI takes them, only the latest is delivered)::

            job = runner.submit(
                lambda progress: client.retrieve(node, query, via=scp, on_progress=progress),
                on_progress=lambda p: gauge.SetValue(p.completed),
                on_done=show_series,
            )

        The callbacks run on the GUI thread; an exception they raise is
        logged (logger ``aiodicomnet.gui``) and otherwise ignored. A failure
        with no ``on_error`` is logged.

        Raises:
            RuntimeError: the runner is closed.
        """
        job: Job[T] = Job(self, name or _describe(fn), on_done, on_error, on_cancelled)
        kwargs: dict[str, Any] = {}
        if on_progress is not None:
            kwargs["progress"] = _Progress(self, job, on_progress)
        work = functools.partial(fn, *args, **kwargs)
        self._start(job, work)
        return job

    def stream(
        self,
        source: Callable[[], AsyncIterable[I]],
        on_batch: Callable[[list[I]], object],
        *,
        batch_size: int = 100,
        max_interval: float = 0.1,
        max_in_flight: int = 2,
        on_done: Callable[[int], object] | None = None,
        on_error: Callable[[Exception], object] | None = None,
        on_cancelled: Callable[[], object] | None = None,
        name: str | None = None,
    ) -> Job[int]:
        """Iterate ``source()`` on the loop; hand its items to ``on_batch`` in batches.

        ``source`` is called in the loop thread and returns an async
        iterable: a :class:`~aiodicomnet.client.Operation` (``client.find``,
        ``client.get``, ``client.retrieve``), a
        :class:`~aiodicomnet.server.StorageServer`, an async generator... If
        it is also an async context manager it is entered, and what
        ``__aenter__`` returns is iterated (so a StorageServer is started and
        stopped, an Operation closed deterministically); otherwise it is
        iterated and ``aclose()``-d at the end if it has that method.

        A batch (a list) goes to the GUI when it holds ``batch_size`` items,
        or ``max_interval`` seconds after its first item arrived, or when the
        source ends. At most ``max_in_flight`` batches wait for the GUI
        thread: while they do, the source is not read (backpressure). The
        job's result, given to ``on_done``, is the number of items delivered.
        If the source fails, the items before the failure are delivered, then
        ``on_error`` is called.

        Raises:
            ValueError: a size, interval or window out of range.
            RuntimeError: the runner is closed.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if not max_interval >= 0:
            raise ValueError("max_interval must be 0 or more")
        job: Job[int] = Job(self, name or _describe(source), on_done, on_error, on_cancelled)
        work = functools.partial(
            self._pump, job, source, on_batch, batch_size, max_interval, max_in_flight
        )
        self._start(job, work)
        return job

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await fn(*args)`` on the loop and wait for its result (blocking).

        For setup and teardown (and tests); see :attr:`portal`. Not from the
        loop thread.
        """
        return self.portal.call(fn, *args)

    def close(self, timeout: float = 30.0) -> None:
        """Cancel every job, stop the loop and join its thread (call from the GUI thread).

        Blocks until the jobs have stopped -- cancelled DICOM operations send
        C-CANCEL and release or abort their associations -- or ``timeout``
        seconds have passed (then a warning is logged and the daemon thread
        is left to finish). No callback is delivered to the GUI any more once
        ``close`` has been called. Calling it again does nothing.

        Raises:
            RuntimeError: called from the loop thread (it cannot join itself).
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("Runner.close() cannot be called from the loop thread")
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(RuntimeError):  # the loop is already gone
            self._call_in_loop(self._stop_in_loop)
        self._thread.join(timeout)
        if self._thread.is_alive():  # pragma: no cover - a job ignoring cancellation
            log.warning("the event loop thread did not stop within %.1f s", timeout)
        self._on_close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------

    def _start(self, job: Job[Any], work: Callable[[], Awaitable[Any]]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the runner is closed")
            self._jobs.add(job)
        self._call_in_loop(functools.partial(self._spawn, job, work))

    def _spawn(self, job: Job[Any], work: Callable[[], Awaitable[Any]]) -> None:
        assert self._tg is not None
        self._tg.start_soon(job._run, work, name=f"aiodicomnet.gui job {job.name}")

    def _forget(self, job: Job[Any]) -> None:
        with self._lock:
            self._jobs.discard(job)

    def _call_in_loop(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` in the dispatcher task on the loop (any thread; never blocks).

        Raises:
            RuntimeError: the loop has stopped.
        """
        call_soon, inbox = self._call_soon, self._inbox
        if call_soon is None or inbox is None:
            raise RuntimeError("the event loop is not running")
        call_soon(inbox.send_nowait, fn)

    def _post_to_gui(self, fn: Callable[[], object]) -> bool:
        """Schedule ``fn`` on the GUI thread, guarded; ``False`` if dropped (closing)."""
        if self._closed:
            return False
        guarded = functools.partial(self._run_in_gui, fn)
        try:
            self.call_soon_in_gui(guarded)
        except Exception:
            log.exception("cannot schedule a callback on the GUI thread")
            return False
        return True

    def _run_in_gui(self, fn: Callable[[], object]) -> None:
        if self._closed:
            return
        try:
            fn()
        except Exception:
            log.exception("a GUI callback raised")

    def _release_from_gui(self, slots: anyio.Semaphore) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            self._call_in_loop(slots.release)

    def _thread_main(self) -> None:
        try:
            anyio.run(self._main, backend=self.backend)
        except BaseException as exc:
            if not self._ready.is_set():
                self._startup_error = exc
                self._ready.set()
            else:  # pragma: no cover - the loop crashed
                log.exception("the event loop thread crashed")
        finally:
            self._call_soon = None
            self._inbox = None

    async def _main(self) -> None:
        send, receive = anyio.create_memory_object_stream[Callable[[], object]](math.inf)
        self._stop = anyio.Event()
        async with BlockingPortal() as portal, anyio.create_task_group() as tg:
            self._portal = portal
            self._tg = tg
            self._inbox = send
            self._call_soon = _native_call_soon(self.backend)
            tg.start_soon(self._dispatch, receive)
            self._ready.set()
            await self._stop.wait()
            tg.cancel_scope.cancel()
            await portal.stop(cancel_remaining=True)

    async def _dispatch(self, receive: MemoryObjectReceiveStream[Callable[[], object]]) -> None:
        async for fn in receive:
            try:
                fn()
            except Exception:  # pragma: no cover - internal callables do not raise
                log.exception("runner request failed")

    def _stop_in_loop(self) -> None:
        self._stop.set()

    async def _pump(
        self,
        job: Job[int],
        source: Callable[[], AsyncIterable[I]],
        on_batch: Callable[[list[I]], object],
        batch_size: int,
        max_interval: float,
        max_in_flight: int,
    ) -> int:
        buffer: _Buffer[I] = _Buffer()
        slots = anyio.Semaphore(max_in_flight)
        failure: list[Exception] = []

        async def read() -> None:
            try:
                async with AsyncExitStack() as stack:
                    iterable: Any = source()
                    if hasattr(iterable, "__aenter__") and hasattr(iterable, "__aexit__"):
                        entered = await stack.enter_async_context(iterable)
                        if entered is not None and hasattr(entered, "__aiter__"):
                            iterable = entered
                    iterator = iterable.__aiter__()
                    if hasattr(iterator, "aclose"):
                        stack.push_async_callback(iterator.aclose)
                    async for item in iterator:
                        await buffer.put(item, batch_size)
            except Exception as exc:
                failure.append(exc)
            finally:
                buffer.close()

        delivered = 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            while True:
                # A slot first: while the GUI is behind, no batch is even taken,
                # so at most max_in_flight batches plus one buffer are held.
                await slots.acquire()
                batch = await buffer.take(batch_size, max_interval)
                if not batch:
                    break
                deliver = functools.partial(self._deliver, job, on_batch, batch, slots)
                if not self._post_to_gui(deliver):
                    slots.release()
                delivered += len(batch)
        if failure:
            raise failure[0]
        return delivered

    def _deliver(
        self,
        job: Job[Any],
        on_batch: Callable[[list[I]], object],
        batch: list[I],
        slots: anyio.Semaphore,
    ) -> None:  # GUI thread
        try:
            if not job._cancel_requested:
                on_batch(batch)
        finally:
            self._release_from_gui(slots)


def _describe(fn: object) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return str(name) if name else repr(fn)
