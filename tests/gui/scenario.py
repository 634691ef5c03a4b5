"""The GUI scenarios, written once for every toolkit.

A toolkit's test module provides a :class:`Ui`: a real window with a results
list, a progress bar and a Cancel button, a 10 ms timer that notes when it
fires, and a way to run the toolkit's own event loop until a condition holds.
The scenarios drive real DICOM operations against the PACS fixture through
the toolkit's :class:`~aiodicomnet.gui.Runner`.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import anyio
from pydicom.uid import CTImageStorage

from aiodicomnet.client import Client
from aiodicomnet.gui import Job, Runner
from aiodicomnet.query import Query
from aiodicomnet.results import Progress
from aiodicomnet.server import StorageServer
from tests.gui.conftest import BIG_SERIES_SIZE, Pacs

#: The largest gap allowed between two ticks of the 10 ms timer during a transfer.
MAX_GAP = 0.100


class Ui(ABC):
    """A small window of one toolkit, and its runner."""

    runner: Runner

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.cancel_action: Callable[[], object] | None = None

    # -- provided by each toolkit -----------------------------------------------------

    @abstractmethod
    def pump_until(self, condition: Callable[[], bool], timeout: float) -> None:
        """Run the toolkit's event loop until ``condition()``; AssertionError after ``timeout``."""

    @abstractmethod
    def start_timer(self, ms: int) -> None:
        """Start a repeating timer that calls :meth:`tick`."""

    @abstractmethod
    def stop_timer(self) -> None: ...

    @abstractmethod
    def add_rows(self, rows: list[tuple[str, str]]) -> None: ...

    @abstractmethod
    def row_count(self) -> int: ...

    @abstractmethod
    def set_progress(self, value: int, maximum: int) -> None: ...

    @abstractmethod
    def progress(self) -> tuple[int, int]:
        """The progress bar's (value, maximum), read back from the widget."""

    @abstractmethod
    def click_cancel(self) -> None:
        """Post a click on the Cancel button through the toolkit's event queue."""

    @abstractmethod
    def destroy(self) -> None:
        """Close the runner, then the window."""

    # -- shared ---------------------------------------------------------------------------

    def tick(self) -> None:
        self.ticks.append(time.monotonic())

    def on_cancel_clicked(self) -> None:
        if self.cancel_action is not None:
            self.cancel_action()

    def show_progress(self, progress: Progress) -> None:
        total = progress.total or BIG_SERIES_SIZE
        self.set_progress(progress.completed + progress.warning, total)


def largest_gap(ticks: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(ticks)), default=float("inf"))


class Outcome:
    """Collects a job's outcome on the GUI thread."""

    def __init__(self) -> None:
        self.kind: str | None = None
        self.value: Any = None

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_done": lambda value: self._set("done", value),
            "on_error": lambda exc: self._set("error", exc),
            "on_cancelled": lambda: self._set("cancelled", None),
        }

    def _set(self, kind: str, value: Any) -> None:
        assert self.kind is None, f"second outcome {kind} after {self.kind}"
        self.kind, self.value = kind, value

    def ended(self) -> bool:
        return self.kind is not None

    def expect(self, kind: str) -> Any:
        if self.kind == "error" and kind != "error":
            raise AssertionError(f"the job failed: {self.value!r}") from self.value
        assert self.kind == kind, f"expected {kind}, got {self.kind} ({self.value!r})"
        return self.value


def series_query(pacs: Pacs) -> Query:
    return Query.series(StudyInstanceUID=pacs.big_study_uid, SeriesInstanceUID=pacs.big_series_uid)


async def download(
    client: Client,
    pacs: Pacs,
    *,
    via: str = "move",
    progress: Callable[[Progress], None],
    stall_after: int | None = None,
    received: list[str] | None = None,
) -> int:
    """Retrieve the big series by C-MOVE to a Storage SCP of ours (``via="move"``) or by
    C-GET; with ``stall_after``, stop reading after that many instances, like a viewer
    busy elsewhere, so the transfer stalls (backpressure)."""
    async with contextlib.AsyncExitStack() as stack:
        if via == "move":
            # The Storage SCP the PACS knows as VIEWER (it moves there).
            scp = StorageServer(pacs.viewer.ae_title, port=pacs.viewer.port, stream=False)
            await stack.enter_async_context(scp)
            operation = client.retrieve(
                pacs.node, series_query(pacs), via=scp, on_progress=progress
            )
        else:
            operation = client.get(
                pacs.node, series_query(pacs), sop_classes=[CTImageStorage], on_progress=progress
            )
        count = 0
        async with operation as instances:
            async for instance in instances:
                count += 1
                if received is not None:
                    received.append(str(instance.sop_instance_uid))
                if stall_after is not None and count >= stall_after:
                    await anyio.sleep_forever()
        return count


def find_then_retrieve(ui: Ui, pacs: Pacs, via: str = "move") -> None:
    """A C-FIND into the list (in batches), then a retrieve with the progress bar moving,
    while the 10 ms timer keeps firing."""
    client = Client(pacs.viewer.ae_title)
    ui.start_timer(10)
    ui.pump_until(lambda: len(ui.ticks) >= 3, 10)
    start = len(ui.ticks) - 1

    found = Outcome()
    query = Query.image(StudyInstanceUID=pacs.big_study_uid, SeriesInstanceUID=pacs.big_series_uid)
    ui.runner.stream(
        lambda: client.find(pacs.node, query),
        lambda batch: ui.add_rows(
            [(str(ds.InstanceNumber), str(ds.SOPInstanceUID)) for ds in batch]
        ),
        batch_size=25,
        **found.callbacks(),
    )
    ui.pump_until(found.ended, 30)
    assert found.expect("done") == BIG_SERIES_SIZE
    assert ui.row_count() == BIG_SERIES_SIZE

    retrieved = Outcome()
    job: Job[int] = ui.runner.submit(
        functools.partial(download, client, pacs, via=via),
        on_progress=ui.show_progress,
        **retrieved.callbacks(),
    )
    ui.pump_until(retrieved.ended, 30)
    assert retrieved.expect("done") == BIG_SERIES_SIZE
    assert job.state == "done"
    assert ui.progress() == (BIG_SERIES_SIZE, BIG_SERIES_SIZE)

    ui.pump_until(lambda: len(ui.ticks) >= start + 3 + 2, 10)  # a tick after the end
    ui.stop_timer()
    ticks = ui.ticks[start:]
    duration = ticks[-1] - ticks[0]
    assert len(ticks) >= 5, ticks
    assert largest_gap(ticks) < MAX_GAP, (
        f"the GUI stalled: largest gap {largest_gap(ticks) * 1000:.0f} ms "
        f"in {len(ticks)} ticks over {duration:.2f} s"
    )


def cancel_long_retrieve(ui: Ui, pacs: Pacs, via: str = "move") -> None:
    """A retrieve that stalls is cancelled from the Cancel button: on_cancelled comes,
    the association is gone (the no_leaks fixture checks threads and sockets)."""
    client = Client(pacs.viewer.ae_title)
    received: list[str] = []
    outcome = Outcome()
    job: Job[int] = ui.runner.submit(
        functools.partial(download, client, pacs, via=via, stall_after=5, received=received),
        on_progress=ui.show_progress,
        **outcome.callbacks(),
    )
    ui.cancel_action = job.cancel
    # Well under way: the bar has moved and the download has stalled.
    ui.pump_until(lambda: ui.progress()[0] >= 1 and len(received) >= 5, 30)
    assert not job.done
    ui.click_cancel()
    ui.pump_until(outcome.ended, 30)
    outcome.expect("cancelled")
    assert job.cancelled
    assert 5 <= len(received) < BIG_SERIES_SIZE
    assert ui.progress()[0] < BIG_SERIES_SIZE
