"""The tour: the library at work against an embedded PACS, in a few seconds.

``aiodicomnet demo`` (or ``await tour()``) runs, on loopback:

1. generates sample studies (:func:`aiodicomnet.samples.make_corpus`);
2. starts an embedded :class:`~aiodicomnet.archive.Archive`, the "PACS",
   holding them, serving DICOMweb too (:meth:`~aiodicomnet.archive.Archive.dicomweb`);
3. starts our own :class:`~aiodicomnet.server.StorageServer` and makes it a
   C-MOVE destination of the PACS (as a PACS administrator would);
4. C-ECHO;
5. C-FIND at patient, study and series level (printed as a tree);
6. retrieves a series by C-MOVE to our Storage SCP, with progress;
7. retrieves another series by C-GET, into memory;
8. derives a new series from it (new Series and SOP Instance UIDs);
9. sends it back with C-STORE;
10. finds it on the PACS;
11. searches the PACS's studies over DICOMweb (QIDO-RS), the same ones C-FIND found;
12. retrieves the new series over DICOMweb (WADO-RS), into memory: the
    instances stored by C-STORE, read back over HTTP.

Each step prints what happened and how long it took. Everything stops
cleanly at the end (no thread or socket left). Nothing is downloaded.
The DICOMweb steps need hypercorn (``pip install 'aiodicomnet[web]'``,
installed by ``scripts/setup``); without it they are left out, and the tour
says so.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydicom.dataset import Dataset

from ._dimse.bridge import run_in_thread
from .archive import Archive
from .client import Client
from .query import Query
from .results import Progress
from .samples import make_corpus, uid
from .server import StorageServer
from .storage import DiskStorage, ReceivedInstance

if TYPE_CHECKING:
    from .archive_web import DicomWebServer

__all__ = ["TourReport", "TourStep", "tour"]

PACS_AE = "ADNPACS"
OUR_AE = "ADNVIEWER"
#: What the DICOMweb steps need, and how to get it.
WEB_MISSING = (
    "DICOMweb steps (QIDO-RS, WADO-RS) left out: the Archive's DICOMweb face "
    "needs hypercorn (pip install 'aiodicomnet[web]')"
)

T = TypeVar("T")


@dataclass
class TourStep:
    """One step of the tour: its name, whether it worked, how long it took, what it did."""

    name: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass
class TourReport:
    """What :func:`tour` did.

    Attributes:
        steps: every step run, in order (the failed one last, if any).
        error: the exception that stopped the tour, or ``None``.
        directory: where the PACS and received files are, when kept.
    """

    steps: list[TourStep] = field(default_factory=list)
    error: BaseException | None = None
    directory: Path | None = None

    @property
    def ok(self) -> bool:
        """Every step worked."""
        return self.error is None and all(step.ok for step in self.steps)

    @property
    def seconds(self) -> float:
        """Time spent in the steps."""
        return sum(step.seconds for step in self.steps)


class _Tour:
    def __init__(self, out: Callable[[str], object], report: TourReport, total: int) -> None:
        self.out = out
        self.report = report
        self.total = total

    def say(self, line: str) -> None:
        """A line of the running step, printed at once."""
        self.out(f"      {line}")

    async def step(self, name: str, run: Callable[[], Awaitable[tuple[T, str]]]) -> T:
        number = len(self.report.steps) + 1
        self.out(f"[{number}/{self.total}] {name}")
        started = time.perf_counter()
        try:
            value, detail = await run()
        except Exception as exc:
            seconds = time.perf_counter() - started
            self.report.steps.append(TourStep(name, False, seconds, str(exc)))
            self.out(f"      FAILED after {_ms(seconds)}: {exc}")
            raise
        seconds = time.perf_counter() - started
        self.report.steps.append(TourStep(name, True, seconds, detail))
        for line in detail.splitlines():
            self.out(f"      {line}")
        self.out(f"      ok ({_ms(seconds)})")
        return value


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value)


async def tour(
    out: Callable[[str], object] = print,
    directory: str | os.PathLike[str] | None = None,
    *,
    instances_per_series: int = 3,
) -> TourReport:
    """Run the tour, printing with ``out``; return what happened.

    Args:
        out: called with each line of text.
        directory: where the PACS and received files go (kept); default a
            temporary directory, removed at the end.
        instances_per_series: size of the generated series.

    A failing step ends the tour; its exception is in :attr:`TourReport.error`
    (it is not raised). Without hypercorn the two DICOMweb steps are left
    out (10 steps instead of 12) and a line says so.
    """
    report = TourReport()
    web = _web_available()
    tour_ = _Tour(out, report, total=12 if web else 10)
    async with AsyncExitStack() as stack:
        if directory is None:
            root = Path(await run_in_thread(tempfile.mkdtemp, "", "aiodicomnet-tour-"))

            async def remove() -> None:  # run_in_thread finishes when cancelled too
                await run_in_thread(lambda: shutil.rmtree(root, ignore_errors=True))

            stack.push_async_callback(remove)
        else:
            root = await run_in_thread(_make_directory, directory)
            report.directory = root
        try:
            await _steps(tour_, stack, root, instances_per_series, web)
        except Exception as exc:
            report.error = exc
    if report.error is None:
        if not web:
            out(WEB_MISSING)
        where = f"files kept in {root}" if directory is not None else "temporary files removed"
        out(f"Tour done: {len(report.steps)} steps in {_ms(report.seconds)}; {where}.")
    return report


def _web_available() -> bool:
    """Whether the Archive can serve DICOMweb here (hypercorn is installed)."""
    return importlib.util.find_spec("hypercorn") is not None


async def _steps(
    tour: _Tour, stack: AsyncExitStack, root: Path, per_series: int, web: bool
) -> None:
    # 1. sample data
    async def generate() -> tuple[list[Dataset], str]:
        corpus = await run_in_thread(make_corpus, per_series)
        datasets = corpus.datasets
        detail = (
            f"{len(corpus.patients())} patients, {len(corpus.studies())} studies, "
            f"{len(corpus.series())} series, {len(datasets)} instances (CT and MR, generated)"
        )
        return datasets, detail

    datasets = await tour.step("Generate sample studies", generate)

    # 2. the PACS, with its DICOMweb face (entered before the client, so that the
    # client's connections are closed before the HTTP server stops)
    async def start_pacs() -> tuple[tuple[Archive, DicomWebServer | None], str]:
        archive = await stack.enter_async_context(Archive(PACS_AE, root / "pacs"))
        await archive.add(datasets)
        counts = await archive.counts()
        served = await _serve_web(stack, archive) if web else None
        also = f"\nDICOMweb (QIDO-RS, WADO-RS, STOW-RS) at {served.url}" if served else ""
        return (archive, served), (
            f"embedded Archive {archive.node} holding {counts.studies} studies, "
            f"{counts.instances} instances{also}\n(index and files under {archive.directory})"
        )

    pacs, web_server = await tour.step("Start the PACS (embedded Q/R SCP)", start_pacs)
    node = pacs.node

    # 3. our Storage SCP, known to the PACS as a C-MOVE destination
    async def start_scp() -> tuple[StorageServer, str]:
        storage = DiskStorage(root / "received")
        server = StorageServer(OUR_AE, port=0, storage=storage, stream=False)
        await stack.enter_async_context(server)
        pacs.add_destination(OUR_AE, server.node)
        return server, (
            f"our Storage SCP {server.node}, files into {storage.root}\n"
            f"the PACS knows {OUR_AE} as a C-MOVE destination"
        )

    server = await tour.step("Start our Storage SCP", start_scp)
    client = await stack.enter_async_context(Client(OUR_AE))

    # 4. C-ECHO
    async def echo() -> tuple[None, str]:
        rtt = await client.echo(node)
        return None, f"{node} answered C-ECHO in {rtt * 1000:.1f} ms"

    await tour.step("C-ECHO the PACS", echo)

    # 5. C-FIND, three levels
    async def find() -> tuple[dict[str, Any], str]:
        lines: list[str] = []
        patients = await client.find(node, Query.patient())
        tree: dict[str, Any] = {}
        finds = 1
        for patient in sorted(patients, key=lambda ds: _text(ds, "PatientID")):
            pid = _text(patient, "PatientID")
            lines.append(f"{pid}  {_text(patient, 'PatientName')}")
            studies = await client.find(node, Query.study(PatientID=pid))
            finds += 1
            ordered = sorted(studies, key=lambda ds: _text(ds, "StudyDate"))
            for i, study in enumerate(ordered):
                last_study = i == len(ordered) - 1
                study_uid = _text(study, "StudyInstanceUID")
                lines.append(
                    f"{'└─' if last_study else '├─'} {_text(study, 'StudyDate')}  "
                    f"{_text(study, 'StudyDescription')}  "
                    f"({_text(study, 'NumberOfStudyRelatedInstances')} instances)"
                )
                series = await client.find(node, Query.series(StudyInstanceUID=study_uid))
                finds += 1
                tree[study_uid] = {"patient": pid, "series": series}
                ordered_series = sorted(series, key=lambda ds: _text(ds, "SeriesNumber"))
                for j, one in enumerate(ordered_series):
                    branch = "└─" if j == len(ordered_series) - 1 else "├─"
                    lines.append(
                        f"{'   ' if last_study else '│  '}{branch} #{_text(one, 'SeriesNumber')} "
                        f"{_text(one, 'Modality')}  {_text(one, 'SeriesDescription')}  "
                        f"({_text(one, 'NumberOfSeriesRelatedInstances')} instances)"
                    )
        lines.append(f"({finds} C-FINDs: patients, then studies, then series)")
        return tree, "\n".join(lines)

    tree = await tour.step("C-FIND patients, studies and series", find)
    studies = sorted(tree, key=lambda uid_: (tree[uid_]["patient"], uid_))
    first_study, second_study = studies[0], studies[-1]
    move_series = sorted(_text(ds, "SeriesInstanceUID") for ds in tree[first_study]["series"])[0]
    get_series = sorted(_text(ds, "SeriesInstanceUID") for ds in tree[second_study]["series"])[0]

    # 6. C-MOVE a series to our Storage SCP
    async def move() -> tuple[list[ReceivedInstance], str]:
        def progress(p: Progress) -> None:
            state = "final" if p.done else "pending"
            remaining = "" if p.remaining is None else f", {p.remaining} remaining"
            tour.say(f"C-MOVE {state}: {p.completed} completed{remaining}, {p.failed} failed")

        query = Query.series(StudyInstanceUID=first_study, SeriesInstanceUID=move_series)
        received = await client.retrieve(node, query, via=server, on_progress=progress)
        path = received[0].path if received else None
        where = path.parent.relative_to(root) if path is not None else "?"
        return received, f"{len(received)} instances arrived at {OUR_AE}, in {where}/"

    await tour.step("Retrieve a series by C-MOVE to our Storage SCP", move)

    # 7. C-GET a series into memory
    async def get() -> tuple[list[ReceivedInstance], str]:
        query = Query.series(StudyInstanceUID=second_study, SeriesInstanceUID=get_series)
        received = await client.retrieve(node, query, via="get")
        size = sum(inst.size for inst in received)
        first = await received[0].load_dataset()
        return received, (
            f"{len(received)} instances ({size} bytes) received on our own association, "
            f"kept in memory\nfirst: {first.Modality} {first.Rows}x{first.Columns}, "
            f"{first.PatientName}, {first.SeriesDescription}"
        )

    got = await tour.step("Retrieve another series by C-GET, into memory", get)

    # 8. derive a new series from it
    async def derive() -> tuple[list[Dataset], str]:
        originals: list[Dataset] = [await inst.load_dataset() for inst in got]
        derived = await run_in_thread(_derive, originals)
        return derived, (
            f"{len(derived)} new instances: inverted pixels, series "
            f"{derived[0].SeriesInstanceUID} ({derived[0].SeriesDescription})"
        )

    derived = await tour.step("Derive a new series from it", derive)
    new_series = str(derived[0].SeriesInstanceUID)

    # 9. C-STORE it back
    async def store() -> tuple[None, str]:
        result = await client.store(node, derived)
        if not result.ok:
            failed = "; ".join(f"{o.sop_instance_uid}: {o.meaning}" for o in result.failed)
            raise RuntimeError(f"{len(result.failed)} instances not stored: {failed}")
        return None, f"{len(result.succeeded)} instances stored on {node}"

    await tour.step("Send it back with C-STORE", store)

    # 10. find it again
    async def find_again() -> tuple[None, str]:
        query = Query.series(StudyInstanceUID=second_study, SeriesInstanceUID=new_series)
        found = await client.find(node, query)
        if len(found) != 1:
            raise RuntimeError(f"expected the new series once on the PACS, found {len(found)}")
        count = _text(found[0], "NumberOfSeriesRelatedInstances")
        if count != str(len(derived)):
            raise RuntimeError(f"the PACS holds {count} instances of it, not {len(derived)}")
        series = await client.find(node, Query.series(StudyInstanceUID=second_study))
        return None, (
            f"{_text(found[0], 'SeriesDescription')}: {count} instances on the PACS; "
            f"the study now has {len(series)} series"
        )

    await tour.step("C-FIND the new series on the PACS", find_again)
    if web_server is None:
        return
    web_node = web_server.node

    # 11. QIDO-RS: the same studies as C-FIND found
    async def qido() -> tuple[None, str]:
        studies = await client.find(web_node, Query.study())
        lines = []
        for study in sorted(
            studies, key=lambda ds: (_text(ds, "PatientID"), _text(ds, "StudyDate"))
        ):
            lines.append(
                f"{_text(study, 'PatientID')}  {_text(study, 'PatientName')}  "
                f"{_text(study, 'StudyDate')}  {_text(study, 'StudyDescription')}  "
                f"({_text(study, 'NumberOfStudyRelatedInstances')} instances)"
            )
        found = {_text(ds, "StudyInstanceUID") for ds in studies}
        if found != set(tree):
            raise RuntimeError(
                f"QIDO-RS found {len(found)} studies, C-FIND {len(tree)}: not the same ones"
            )
        lines.append(
            f"(1 QIDO-RS search: GET {web_server.url}/studies; the same "
            f"{len(found)} studies as C-FIND)"
        )
        return None, "\n".join(lines)

    await tour.step("Find the studies over DICOMweb (QIDO-RS)", qido)

    # 12. WADO-RS: the series stored by C-STORE, read back over HTTP
    async def wado() -> tuple[None, str]:
        def progress(p: Progress) -> None:
            if p.done:
                tour.say(f"WADO-RS final: {p.completed} received, {p.failed} failed")
            else:
                tour.say(f"WADO-RS: {p.completed} received, {p.remaining} remaining")

        query = Query.series(StudyInstanceUID=second_study, SeriesInstanceUID=new_series)
        received = await client.retrieve(web_node, query, on_progress=progress)
        sent = {str(ds.SOPInstanceUID): ds for ds in derived}
        got = {inst.sop_instance_uid for inst in received}
        if got != set(sent):
            raise RuntimeError(
                f"WADO-RS brought {len(got)} instances, {len(got & set(sent))} of the "
                f"{len(sent)} stored"
            )
        first = await received[0].load_dataset()
        if first.PixelData != sent[str(first.SOPInstanceUID)].PixelData:
            raise RuntimeError(f"{first.SOPInstanceUID}: other pixels than were stored")
        size = sum(inst.size for inst in received)
        return None, (
            f"{len(received)} instances ({size} bytes) in one multipart/related response, "
            f"kept in memory\nthe series sent with C-STORE, read back over HTTP: "
            f"same SOP Instance UIDs, same pixels"
        )

    await tour.step("Retrieve the new series over DICOMweb (WADO-RS), into memory", wado)


async def _serve_web(stack: AsyncExitStack, archive: Archive) -> DicomWebServer:
    """Start ``archive``'s DICOMweb face, stopped when ``stack`` closes.

    It is always left through its normal exit, even when the tour is
    cancelled: the error path of :func:`aiodicomnet.archive_web.serve` leaves
    its task group from inside a new cancel scope, which anyio refuses
    (``RuntimeError``: not the current cancel scope).
    """
    face = archive.dicomweb()
    served = await face.__aenter__()
    stack.push_async_callback(face.__aexit__, None, None, None)
    return served


def _make_directory(directory: str | os.PathLike[str]) -> Path:
    root = Path(directory).absolute()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _derive(originals: list[Dataset]) -> list[Dataset]:
    """A new series from ``originals``: new UIDs, inverted pixel data, marked DERIVED."""
    series_uid = uid()
    derived = []
    for original in originals:
        ds = copy.deepcopy(original)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = uid()
        ds.SeriesNumber = 100
        ds.SeriesDescription = f"DERIVED {original.get('SeriesDescription', '')}".strip()[:64]
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.PixelData = bytes(b ^ 0xFF for b in original.PixelData)
        ds.file_meta = copy.deepcopy(original.file_meta)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        derived.append(ds)
    return derived
