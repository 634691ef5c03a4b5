"""The toolkit-neutral Runner, driven by a plain queue standing in for a GUI thread."""

from __future__ import annotations

import contextlib
import logging
import queue
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from aiodicomnet.gui import Job, JobCancelled, Runner

pytestmark = pytest.mark.timeout(60)


class QueueRunner(Runner):
    """A Runner whose "GUI thread" is whoever calls :meth:`pump_until`."""

    def __init__(self, **kwargs: Any) -> None:
        self.queue: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self.gui_thread = threading.current_thread()
        super().__init__(**kwargs)

    def call_soon_in_gui(self, fn: Callable[[], object]) -> None:
        self.queue.put(fn)

    def pump_until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        """Run queued callbacks until ``condition()`` holds; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            try:
                fn = self.queue.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                raise AssertionError(f"condition not met within {timeout} s") from None
            fn()

    def settle(self) -> None:
        """Wait until every task on the loop is blocked (nothing left to run there)."""
        self.call(anyio.wait_all_tasks_blocked)


@pytest.fixture
def runner(no_leaks: object) -> Any:
    r = QueueRunner()
    yield r
    r.close()


class Recorder:
    """Callbacks that note what they got and on which thread."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.threads: set[threading.Thread] = set()

    def __getattr__(self, kind: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            self.threads.add(threading.current_thread())
            self.events.append((kind, args[0] if args else None))

        return record

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]

    def ended(self) -> bool:
        return any(k in ("done", "error", "cancelled") for k in self.kinds())


def job_callbacks(rec: Recorder) -> dict[str, Any]:
    return {"on_done": rec.done, "on_error": rec.error, "on_cancelled": rec.cancelled}


def test_submit_delivers_result_on_gui_thread(runner: QueueRunner) -> None:
    rec = Recorder()
    loop_threads: list[threading.Thread] = []

    async def work(a: int, b: int) -> int:
        loop_threads.append(threading.current_thread())
        await anyio.lowlevel.checkpoint()
        return a + b

    job = runner.submit(work, 2, 3, **job_callbacks(rec))
    runner.pump_until(rec.ended)
    assert rec.events == [("done", 5)]
    assert rec.threads == {runner.gui_thread}
    assert loop_threads == [runner.thread]
    assert job.done and job.state == "done" and job.result() == 5
    assert job.exception() is None
    assert not job.cancel()  # already finished
    assert runner.jobs == []


def test_error_goes_to_on_error_or_the_log(
    runner: QueueRunner, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()

    async def fail() -> None:
        raise ValueError("boom")

    job = runner.submit(fail, **job_callbacks(rec))
    runner.pump_until(rec.ended)
    assert rec.kinds() == ["error"] and isinstance(rec.events[0][1], ValueError)
    assert job.state == "failed" and isinstance(job.exception(), ValueError)
    with pytest.raises(ValueError, match="boom"):
        job.result()

    caplog.set_level(logging.ERROR, logger="aiodicomnet.gui")
    unhandled = runner.submit(fail, name="unhandled")
    runner.pump_until(lambda: unhandled.done and runner.queue.empty())
    assert "job unhandled failed" in caplog.text


def test_progress_is_coalesced_and_precedes_the_outcome(runner: QueueRunner) -> None:
    rec = Recorder()

    async def count(n: int, *, progress: Callable[[int], None]) -> str:
        for i in range(1, n + 1):
            progress(i)
        return "counted"

    job = runner.submit(count, 1000, on_progress=rec.progress, **job_callbacks(rec))
    assert job.wait(10)
    runner.pump_until(rec.ended)
    # The GUI thread did not pump meanwhile: one delivery, with the latest value.
    assert rec.events == [("progress", 1000), ("done", "counted")]


def test_cancel_stops_the_coroutine(runner: QueueRunner) -> None:
    rec = Recorder()
    started = threading.Event()
    cleaned_up = threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cleaned_up.set()

    job = runner.submit(forever, **job_callbacks(rec))
    assert started.wait(10)
    assert job.state == "running" and runner.jobs == [job]
    assert job.cancel()
    assert job.cancel_requested
    runner.pump_until(rec.ended)
    assert rec.kinds() == ["cancelled"]
    assert cleaned_up.is_set()
    assert job.cancelled and job.state == "cancelled"
    with pytest.raises(JobCancelled):
        job.result()


def test_no_progress_after_cancel(runner: QueueRunner) -> None:
    rec = Recorder()
    reported = threading.Event()

    async def report(*, progress: Callable[[int], None]) -> None:
        progress(1)
        reported.set()
        await anyio.sleep_forever()

    job = runner.submit(report, on_progress=rec.progress, **job_callbacks(rec))
    assert reported.wait(10)
    job.cancel()  # before the GUI took the pending progress report
    runner.pump_until(rec.ended)
    assert rec.kinds() == ["cancelled"]


async def numbers(n: int, log: list[int] | None = None) -> AsyncIterator[int]:
    for i in range(n):
        if log is not None:
            log.append(i)
        yield i


def test_stream_batches_by_size_with_backpressure(runner: QueueRunner) -> None:
    rec = Recorder()
    read: list[int] = []
    job = runner.stream(
        lambda: numbers(1000, read),
        rec.batch,
        batch_size=100,
        max_interval=60,
        max_in_flight=2,
        **job_callbacks(rec),
    )
    runner.settle()
    # Nothing handled by the GUI yet: two batches wait in its queue, one more
    # fills the buffer, and the reader is stuck on the item after that.
    assert runner.queue.qsize() == 2
    assert len(read) == 2 * 100 + 100 + 1
    assert not job.done
    runner.pump_until(rec.ended)
    batches = [value for kind, value in rec.events if kind == "batch"]
    assert [len(b) for b in batches] == [100] * 10
    assert [i for b in batches for i in b] == list(range(1000))
    assert rec.events[-1] == ("done", 1000)


def test_stream_flushes_a_partial_batch_after_max_interval(runner: QueueRunner) -> None:
    rec = Recorder()
    gate = threading.Event()
    release = anyio.Event()

    async def slow() -> AsyncIterator[str]:
        for item in "abc":
            yield item
        gate.set()
        await release.wait()
        yield "d"

    runner.stream(slow, rec.batch, batch_size=100, max_interval=0.05, **job_callbacks(rec))
    runner.pump_until(lambda: rec.events != [])
    assert gate.is_set()
    assert rec.events == [("batch", ["a", "b", "c"])]
    runner.call(_set, release)
    runner.pump_until(rec.ended)
    assert rec.events[1:] == [("batch", ["d"]), ("done", 4)]


async def _set(event: anyio.Event) -> None:
    event.set()


def test_stream_delivers_items_before_a_failure(runner: QueueRunner) -> None:
    rec = Recorder()

    async def failing() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise OSError("connection lost")

    runner.stream(failing, rec.batch, batch_size=10, **job_callbacks(rec))
    runner.pump_until(rec.ended)
    assert rec.kinds() == ["batch", "error"]
    assert rec.events[0][1] == [1, 2]
    assert isinstance(rec.events[1][1], OSError)


class Source:
    """An async context manager that is also async-iterable (like StorageServer)."""

    def __init__(self) -> None:
        self.entered = self.exited = False

    async def __aenter__(self) -> AsyncIterator[int]:
        self.entered = True
        return numbers(5)

    async def __aexit__(self, *exc: object) -> None:
        self.exited = True

    def __aiter__(self) -> AsyncIterator[int]:  # pragma: no cover - not used when entered
        raise AssertionError("the entered value should be iterated")


def test_stream_enters_an_async_context_manager(runner: QueueRunner) -> None:
    rec = Recorder()
    source = Source()
    runner.stream(lambda: source, rec.batch, **job_callbacks(rec))
    runner.pump_until(rec.ended)
    assert source.entered and source.exited
    assert rec.events == [("batch", [0, 1, 2, 3, 4]), ("done", 5)]


def test_stream_cancel_closes_the_source(runner: QueueRunner) -> None:
    rec = Recorder()
    closed = threading.Event()
    first = threading.Event()

    async def endless() -> AsyncIterator[int]:
        try:
            i = 0
            while True:
                yield i
                first.set()
                i += 1
                await anyio.sleep(0.001)
        finally:
            closed.set()

    job = runner.stream(endless, rec.batch, batch_size=1, max_in_flight=1, **job_callbacks(rec))
    assert first.wait(10)
    job.cancel()
    runner.pump_until(rec.ended)
    assert rec.kinds() == ["cancelled"]  # the batch still queued was not delivered
    assert closed.is_set()


def test_callback_errors_are_logged_not_fatal(
    runner: QueueRunner, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()

    def bad_batch(batch: list[int]) -> None:
        raise RuntimeError("bug in the GUI code")

    caplog.set_level(logging.ERROR, logger="aiodicomnet.gui")
    runner.stream(lambda: numbers(3), bad_batch, batch_size=1, **job_callbacks(rec))
    runner.pump_until(rec.ended)
    assert rec.events == [("done", 3)]
    assert caplog.text.count("a GUI callback raised") == 3


def test_close_cancels_jobs_and_leaves_no_thread(no_leaks: Any) -> None:
    r = QueueRunner()
    cleaned_up = threading.Event()

    async def forever() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cleaned_up.set()

    jobs: list[Job[Any]] = [r.submit(forever) for _ in range(3)]
    r.stream(lambda: numbers(10**6), lambda batch: None)
    r.settle()
    r.close()
    assert not r.thread.is_alive()
    assert cleaned_up.is_set()
    assert all(job.cancelled for job in jobs)
    assert r.queue.qsize() >= 0  # posted callbacks are never run after close
    with pytest.raises(RuntimeError, match="closed"):
        r.submit(forever)
    r.close()  # again: nothing


def test_context_manager_and_trio_backend(no_leaks: Any) -> None:
    rec = Recorder()

    async def which() -> str:
        import sniffio

        return sniffio.current_async_library()

    with QueueRunner(backend="trio") as r:
        r.submit(which, **job_callbacks(rec))
        r.pump_until(rec.ended)
    assert rec.events == [("done", "trio")]
    assert not r.thread.is_alive()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="backend"):
        QueueRunner(backend="curio")
    with QueueRunner() as r:
        for kwargs in ({"batch_size": 0}, {"max_in_flight": 0}, {"max_interval": -1}):
            with pytest.raises(ValueError):
                r.stream(lambda: numbers(1), print, **kwargs)


def test_importing_the_package_imports_no_toolkit() -> None:
    code = (
        "import sys, aiodicomnet.gui, aiodicomnet.gui.wx, aiodicomnet.gui.qt, aiodicomnet.gui.tk\n"
        "roots = {'wx', 'PySide6', 'PyQt6', 'PySide2', 'PyQt5', 'tkinter', '_tkinter'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in roots))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_stream_runs_a_storage_server(runner: QueueRunner) -> None:
    """The documented way to receive pushed studies: stream a StorageServer."""
    from aiodicomnet.client import Client
    from aiodicomnet.samples import make_series
    from aiodicomnet.server import StorageServer

    rec = Recorder()
    servers: list[StorageServer] = []
    listening = threading.Event()

    @contextlib.asynccontextmanager
    async def inbox() -> AsyncIterator[StorageServer]:
        async with StorageServer("INBOX") as scp:
            servers.append(scp)
            listening.set()
            yield scp

    job = runner.stream(inbox, rec.batch, batch_size=5, max_interval=0.05, **job_callbacks(rec))
    assert listening.wait(10)
    result = runner.call(Client("MODALITY").store, servers[0].node, make_series(12))
    assert result.ok and len(result) == 12
    runner.pump_until(lambda: sum(len(v) for k, v in rec.events if k == "batch") == 12)
    job.cancel()  # stops the server
    runner.pump_until(rec.ended)
    assert rec.kinds()[-1] == "cancelled"
    with pytest.raises(RuntimeError, match="not running"):
        servers[0].port  # noqa: B018


def test_an_incomplete_download_ends_in_on_error(runner: QueueRunner, peer: Any) -> None:
    """A C-GET that brings 2 of 3 instances: the 2 reach the GUI, then on_error gets
    IncompleteRetrieve; never on_done, so no progress bar shows "complete"."""
    import aiodicomnet as adn
    from tests.data import make_series
    from tests.test_retrieve import CT, _sub_operations

    good = make_series(2)
    bad = make_series(1, modality="MR")[0]  # not among the SOP classes negotiated
    peer.on_get = lambda event: _sub_operations([*good, bad])
    client = adn.Client("ADNGUI", timeouts=adn.Timeouts(dimse=10, acse=5))
    query = adn.Query.series(StudyInstanceUID=good[0].StudyInstanceUID, SeriesInstanceUID="1.2")
    rec = Recorder()
    runner.stream(
        lambda: client.get(peer.node, query, sop_classes=[CT]),
        rec.batch,
        batch_size=10,
        **job_callbacks(rec),
    )
    runner.pump_until(rec.ended)
    runner.call(client.aclose)
    assert rec.kinds() == ["batch", "error"]
    arrived = rec.events[0][1]
    assert {i.sop_instance_uid for i in arrived} == {ds.SOPInstanceUID for ds in good}
    error = rec.events[1][1]
    assert isinstance(error, adn.IncompleteRetrieve)
    assert error.failed_instances == (bad.SOPInstanceUID,)
