"""A cohort job: a list of studies in, de-identified files and a manifest out, resumable.

::

    from aiodicomnet.research import cohort, deid

    settings = cohort.CohortSettings(
        output="cohort-out", deid=deid.DeidSettings(key=secret), per_node=2
    )
    reports = await cohort.run_cohort("cohort.csv", [pacs_a, pacs_b], settings)

The cohort list is a CSV file with a header (:func:`read_cohort`); each row names
studies by ``AccessionNumber``, ``StudyInstanceUID``, or ``PatientID`` with an
optional ``StudyDateFrom``/``StudyDateTo`` range, and may narrow them to series
with ``Modality`` and ``SeriesDescription`` (wildcards ``*`` and ``?``).

For each row: C-FIND on every node (:func:`~aiodicomnet.find_all`; a study held by
several nodes is taken from the first node listed that has it, and a study named
by several rows is retrieved once); then for each study, under a per-node limit,
a retrieve through the public :class:`~aiodicomnet.Client` (C-GET, or C-MOVE to a
running :class:`~aiodicomnet.StorageServer`), each instance de-identified before it
is written (:class:`~aiodicomnet.research.deid.DeidentifyingStorage`) into a
staging directory; then the study is verified (as many files as instances
received) and committed: moved into ``<output>/<patient>/<study>/<series>/`` and
marked done, with the size and SHA-256 of every file, in the job's state
(:mod:`~aiodicomnet.research.manifest`). Transient failures (connection,
association, timeout, an incomplete retrieve, a PACS out of resources) are tried
again with exponential backoff; the others fail the study with the reason.

Stopped at any point (a crash, Ctrl-C, a killed process), the job run again with
the same output resumes: studies done whose files are still there with their
recorded sizes and hashes are not fetched again; the rest are found and fetched.
At the end, ``<output>/manifest.csv`` has one line per row of the cohort list.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import anyio

from .._dimse.bridge import run_in_thread
from ..client import Client
from ..errors import (
    AssociationError,
    BurnedInAnnotationRefused,
    CohortInputError,
    DicomError,
    DicomTimeout,
    IncompleteRetrieve,
    QueryError,
    StatusError,
    StorageError,
)
from ..fanout import find_all
from ..nodes import AnyNode
from ..query import DateRange, Query, Wildcard
from ..server import StorageServer
from ..storage import DiskStorage, IncomingInstance, InvalidDataset, ReceivedInstance
from .deid import BurnedInPolicy, Deidentifier, DeidentifyingStorage, MappingTable
from .manifest import STATE_DIR, FileRecord, JobState, RowReport, write_manifest

__all__ = [
    "CohortRow",
    "CohortSettings",
    "DeidSettings",
    "StudyOutcome",
    "StudyTask",
    "plan_cohort",
    "read_cohort",
    "retrieve_study",
    "rows_of",
    "run_cohort",
]

log = logging.getLogger("aiodicomnet.research.cohort")

#: Where files go, under the output root (and, while a study is fetched, under
#: its staging directory): the de-identified values, so nothing names a patient.
LAYOUT = "{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"

_COLUMNS = {
    "accessionnumber": "accession",
    "studyinstanceuid": "study_uid",
    "patientid": "patient_id",
    "studydatefrom": "date_from",
    "studydateto": "date_to",
    "modality": "modality",
    "seriesdescription": "series_description",
}


# -- the cohort list ------------------------------------------------------------------


@dataclass(frozen=True)
class CohortRow:
    """One row of the cohort list (empty strings for columns not given).

    Attributes:
        line: its line number in the file (the header is line 1).
    """

    line: int
    accession: str = ""
    study_uid: str = ""
    patient_id: str = ""
    date_from: str = ""
    date_to: str = ""
    modality: str = ""
    series_description: str = ""

    @property
    def filtered(self) -> bool:
        """Whether the row narrows its studies to some series."""
        return bool(self.modality or self.series_description)

    def digest(self) -> str:
        """A hash of the row's values: a resumed job checks that its list did not change."""
        text = "\x00".join(
            (
                self.accession,
                self.study_uid,
                self.patient_id,
                self.date_from,
                self.date_to,
                self.modality,
                self.series_description,
            )
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def study_query(self) -> Query:
        """The STUDY-level C-FIND for this row."""
        keys: dict[str, object] = {"NumberOfStudyRelatedInstances": ""}
        if self.accession:
            keys["AccessionNumber"] = self.accession
        if self.study_uid:
            keys["StudyInstanceUID"] = self.study_uid
        if self.patient_id:
            keys["PatientID"] = self.patient_id
        if self.date_from or self.date_to:
            keys["StudyDate"] = DateRange(self.date_from or None, self.date_to or None)
        return Query("STUDY", keys)

    def series_query(self, study_uid: str) -> Query:
        """The SERIES-level C-FIND of one study's series this row wants."""
        keys: dict[str, object] = {"StudyInstanceUID": study_uid}
        if self.modality:
            keys["Modality"] = self.modality
        if self.series_description:
            keys["SeriesDescription"] = _matcher(self.series_description)
        return Query("SERIES", keys)


def _matcher(value: str) -> object:
    return Wildcard(value) if any(c in value for c in "*?") else value


def read_cohort(path: str | os.PathLike[str]) -> list[CohortRow]:
    """Read and check a cohort list (CSV, UTF-8, with a header); nothing is sent.

    Columns (any case, any order; others are ignored): ``AccessionNumber``,
    ``StudyInstanceUID``, ``PatientID``, ``StudyDateFrom``, ``StudyDateTo``
    (``YYYYMMDD`` or ``YYYY-MM-DD``), ``Modality``, ``SeriesDescription``. A
    row needs an accession number, a study UID or a patient ID. Blank lines
    are skipped.

    Raises:
        CohortInputError: no known column, or a row that cannot be queried
            (with its line number).
    """
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise CohortInputError("the cohort list is empty") from None
        fields = [_COLUMNS.get(h.strip().lower().replace(" ", "").replace("_", "")) for h in header]
        if not any(fields):
            raise CohortInputError(
                f"no known column in the header {header!r}; expected some of "
                "AccessionNumber, StudyInstanceUID, PatientID, StudyDateFrom, StudyDateTo, "
                "Modality, SeriesDescription",
                line=1,
            )
        rows = []
        for number, values in enumerate(reader, start=2):
            if not any(v.strip() for v in values):
                continue
            given = {f: v.strip() for f, v in zip(fields, values, strict=False) if f}
            for key in ("date_from", "date_to"):
                if given.get(key):
                    given[key] = given[key].replace("-", "")
            row = CohortRow(line=number, **given)
            if not (row.accession or row.study_uid or row.patient_id):
                raise CohortInputError(
                    "a row needs an AccessionNumber, a StudyInstanceUID or a PatientID",
                    line=number,
                )
            try:
                row.study_query()
                if row.filtered:
                    row.series_query("1.2.3")
            except QueryError as exc:
                raise CohortInputError(str(exc), line=number) from exc
            rows.append(row)
    if not rows:
        raise CohortInputError("the cohort list has no rows")
    return rows


# -- settings -------------------------------------------------------------------------


@dataclass(frozen=True)
class DeidSettings:
    """How a cohort is de-identified (see :class:`~aiodicomnet.research.deid.Deidentifier`).

    Attributes:
        key: the secret pseudonyms derive from (same key, same pseudonyms).
        shift_dates: shift dates per patient (``False``: keep them).
        burned_in: ``"refuse"`` (withhold the instance, counted in the
            manifest) or ``"flag"`` (keep it, listed in the log).
        keep: keywords left as they are.
        mapping: where to keep the original -> pseudonym table (an SQLite
            file outside the output tree), or ``None`` for none.
    """

    key: str = field(repr=False)  # never in a log, a traceback or a task's repr
    shift_dates: bool = True
    burned_in: BurnedInPolicy = "refuse"
    keep: tuple[str, ...] = ()
    mapping: Path | None = None

    def deidentifier(self) -> Deidentifier:
        """A :class:`Deidentifier` with these settings."""
        table = MappingTable(self.mapping) if self.mapping is not None else None
        return Deidentifier(
            self.key,
            shift_dates=self.shift_dates,
            burned_in=self.burned_in,
            keep=self.keep,
            mapping=table,
        )


@dataclass(frozen=True)
class CohortSettings:
    """Everything a cohort job needs besides its list and its nodes (picklable).

    Attributes:
        output: the output root (the tree, ``manifest.csv`` and ``.cohort/``).
        deid: the de-identification settings.
        ae_title: our AE title.
        method: ``"get"`` (C-GET) or ``"move"`` (C-MOVE to ``move_server``
            given to :func:`retrieve_study`, whose AE title the PACS knows).
        per_node: studies retrieved at once from one node.
        attempts: tries per study (and per row's find) before it fails.
        backoff: the first wait between tries, in seconds; doubled each time.
        verify: on resume, check the SHA-256 of done studies' files (not only
            their presence and size).
    """

    output: Path
    deid: DeidSettings
    ae_title: str = "ADNCOHORT"
    method: Literal["get", "move"] = "get"
    per_node: int = 2
    attempts: int = 3
    backoff: float = 1.0
    verify: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", Path(self.output).resolve())
        if self.per_node < 1 or self.attempts < 1:
            raise ValueError("per_node and attempts must be at least 1")
        if self.method not in ("get", "move"):
            raise ValueError(f"method must be 'get' or 'move', not {self.method!r}")
        mapping = self.deid.mapping
        if mapping is not None:
            resolved = Path(mapping).resolve()
            if resolved == self.output or self.output in resolved.parents:
                raise ValueError(
                    f"the mapping table {resolved} would sit inside the output tree "
                    f"{self.output}: keep it apart from the de-identified data"
                )

    def study_key(self, study_uid: str) -> str:
        """The keyed hash a study is known by in the job's state."""
        return hmac.new(
            self.deid.key.encode(), f"study\x00{study_uid}".encode(), "sha256"
        ).hexdigest()[:32]


# -- planning -------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyTask:
    """One study to retrieve: where it is, and what of it (picklable).

    Attributes:
        key: its keyed hash (how the state knows it).
        line: the row that found it.
        node: the node it is taken from.
        study_uid: its original Study Instance UID.
        series_uids: the series to take (``None``: the whole study).
    """

    key: str
    line: int
    node: AnyNode
    study_uid: str
    series_uids: tuple[str, ...] | None = None


async def _with_retries(settings: CohortSettings, what: str, fn: Callable[[], object]) -> object:
    delay = settings.backoff
    for attempt in range(1, settings.attempts + 1):
        try:
            return await fn()  # type: ignore[misc]
        except Exception as exc:
            if attempt == settings.attempts or not _transient(exc):
                raise
            log.warning("%s: %s; trying again in %.1f s", what, exc, delay)
            await anyio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, BurnedInAnnotationRefused):
        return False
    if isinstance(exc, StatusError):
        return (exc.status & 0xFF00) == 0xA700  # out of resources: the PACS is busy
    return isinstance(
        exc, (AssociationError, DicomTimeout, IncompleteRetrieve, StorageError, OSError)
    )


async def _find_row(
    client: Client, nodes: Sequence[AnyNode], row: CohortRow, settings: CohortSettings
) -> list[StudyTask]:
    async def find() -> list[StudyTask]:
        result = await find_all(client, nodes, row.study_query())
        for error in result.errors.values():
            raise error
        tasks: dict[str, StudyTask] = {}
        for per_node in result:
            for ds in per_node.value or []:
                uid = str(ds.get("StudyInstanceUID", "") or "")
                if uid and uid not in tasks:
                    tasks[uid] = StudyTask(settings.study_key(uid), row.line, per_node.node, uid)
        if row.filtered:
            for uid, task in list(tasks.items()):
                series = await client.find(task.node, row.series_query(uid))
                chosen = tuple(sorted({str(s.SeriesInstanceUID) for s in series}))
                if chosen:
                    tasks[uid] = StudyTask(task.key, task.line, task.node, uid, chosen)
                else:
                    del tasks[uid]
        return list(tasks.values())

    found = await _with_retries(settings, f"line {row.line}: C-FIND", find)
    assert isinstance(found, list)
    return found


async def _verified(state: JobState, settings: CohortSettings) -> set[str]:
    """Keys of done studies whose files are all there as recorded; the others reopened."""

    def check() -> set[str]:
        good = set()
        for record in state.studies():
            if record.status != "done":
                continue
            problem = _check_files(settings.output, record.files, hashes=settings.verify)
            if problem is None:
                good.add(record.key)
            else:
                log.warning("study %s: %s; fetching it again", record.key, problem)
                state.reopen(record.key, problem)
        return good

    return await run_in_thread(check, name="aiodicomnet-cohort-verify")


def _check_files(root: Path, files: Sequence[FileRecord], *, hashes: bool) -> str | None:
    for f in files:
        path = root / f.path
        try:
            size = path.stat().st_size
        except OSError:
            return f"{f.path} is missing"
        if size != f.size:
            return f"{f.path} has {size} bytes, not {f.size}"
        if hashes and _sha256(path) != f.sha256:
            return f"{f.path} does not match its recorded SHA-256"
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


async def plan_cohort(
    client: Client, rows: Sequence[CohortRow], nodes: Sequence[AnyNode], settings: CohortSettings
) -> list[StudyTask]:
    """Record the rows, find their studies, return those still to retrieve.

    Rows all of whose studies are done and verified are not queried again. A
    row whose find fails (after its tries) is marked failed with the reason.
    Staging directories a killed run left behind are removed first: run one
    job per output directory at a time.

    Raises:
        CohortInputError: the list differs from the one the job started with.
    """

    # the state is an SQLite file: every call on it runs in a worker thread
    def start() -> JobState:
        state = JobState(settings.output)
        for row in rows:
            stored = state.start_row(row.line, row.digest())
            if stored is not None:
                raise CohortInputError(
                    f"the row differs from the one this job started with in {settings.output} "
                    "(use another output directory for another cohort list)",
                    line=row.line,
                )
        # staging directories left by a run that was killed hold nothing committed
        shutil.rmtree(settings.output / STATE_DIR / "staging", ignore_errors=True)
        return state

    state = await run_in_thread(start, name="aiodicomnet-cohort-state")
    good = await _verified(state, settings)

    def progress() -> tuple[set[int], set[int]]:
        pending = {s.line for s in state.studies() if s.key not in good}
        return pending, {r.line for r in state.report() if r.status == "done"}

    pending_lines, done_rows = await run_in_thread(progress, name="aiodicomnet-cohort-state")
    tasks: dict[str, StudyTask] = {}
    for row in rows:
        if row.line in done_rows and row.line not in pending_lines:
            continue
        try:
            found = await _find_row(client, nodes, row, settings)
        except DicomError as exc:
            detail = f"C-FIND failed: {exc}"
            await run_in_thread(
                lambda line=row.line, detail=detail: state.set_row(line, "failed", detail=detail)
            )
            continue

        def record(row: CohortRow = row, found: list[StudyTask] = found) -> None:
            state.set_row(row.line, "found" if found else "not found", found=len(found))
            for task in found:
                state.add_study(task.key, row.line, str(task.node))

        await run_in_thread(record, name="aiodicomnet-cohort-state")
        for task in found:
            if task.key not in good and task.key not in tasks:
                tasks[task.key] = task
    return list(tasks.values())


# -- retrieving one study ---------------------------------------------------------------


@dataclass
class StudyOutcome:
    """What became of one :class:`StudyTask`.

    Attributes:
        status: ``"done"`` (committed now), ``"already done"`` (committed by
            another run or process), or ``"failed"``.
        instances: instances written.
        withheld: instances refused by the burned-in policy.
        detail: why it failed.
    """

    key: str
    line: int
    status: str
    instances: int = 0
    withheld: int = 0
    detail: str = ""
    flagged: dict[str, str] = field(default_factory=dict)


async def retrieve_study(
    client: Client,
    task: StudyTask,
    settings: CohortSettings,
    deidentifier: Deidentifier,
    *,
    move_server: StorageServer | None = None,
) -> StudyOutcome:
    """Retrieve, de-identify, verify and commit one study, with retries.

    Never raises for a DICOM or storage failure: the study is marked failed
    in the state, with the reason, and the outcome says so.
    """
    state = await run_in_thread(JobState, settings.output)
    record = await run_in_thread(state.study, task.key)
    if record is not None and record.status == "done":
        return StudyOutcome(task.key, task.line, "already done", record.instances, record.withheld)
    try:
        outcome = await _with_retries(
            settings,
            f"study of line {task.line} from {task.node}",
            lambda: _attempt(client, task, settings, deidentifier, state, move_server),
        )
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}"
        await run_in_thread(state.fail, task.key, detail)
        return StudyOutcome(task.key, task.line, "failed", detail=detail)
    assert isinstance(outcome, StudyOutcome)
    return outcome


async def _attempt(
    client: Client,
    task: StudyTask,
    settings: CohortSettings,
    deidentifier: Deidentifier,
    state: JobState,
    move_server: StorageServer | None,
) -> StudyOutcome:
    await run_in_thread(state.attempt, task.key)
    staging = settings.output / STATE_DIR / "staging" / f"{task.key}-{secrets.token_hex(4)}"
    storage = DeidentifyingStorage(deidentifier, DiskStorage(staging, LAYOUT))
    try:
        received = 0
        queries = (
            [Query.study(StudyInstanceUID=task.study_uid)]
            if task.series_uids is None
            else [
                Query.series(StudyInstanceUID=task.study_uid, SeriesInstanceUID=s)
                for s in task.series_uids
            ]
        )
        for query in queries:
            received += await _retrieve_one(
                client, task.node, query, settings, storage, move_server
            )
        withheld = len(storage.refused)
        flagged = dict(storage.flagged)
        return await run_in_thread(
            lambda: _commit(
                task, settings, state, staging, received, withheld, flagged, deidentifier
            ),
            name="aiodicomnet-cohort-commit",
        )
    finally:
        await run_in_thread(lambda: shutil.rmtree(staging, ignore_errors=True))


async def _retrieve_one(
    client: Client,
    node: AnyNode,
    query: Query,
    settings: CohortSettings,
    storage: DeidentifyingStorage,
    move_server: StorageServer | None,
) -> int:
    """Retrieve what one query names into ``storage``; the number of instances written."""
    before = len(storage.refused)
    received = 0
    try:
        if settings.method == "get":
            async with client.retrieve(node, query, via="get", storage=storage) as instances:
                async for _ in instances:
                    received += 1
        else:
            if move_server is None:
                raise ValueError("method 'move' needs a running StorageServer (move_server)")
            async with client.retrieve(node, query, via=move_server) as instances:
                async for instance in instances:
                    try:
                        await run_in_thread(lambda i=instance: storage.store(_incoming(i)))
                        received += 1
                    except InvalidDataset as exc:
                        if not isinstance(exc.__cause__, BurnedInAnnotationRefused):
                            raise  # withheld by the policy (counted in storage.refused)
    except IncompleteRetrieve as exc:
        refused_now = len(storage.refused) - before
        missing = exc.expected - exc.received
        if settings.method != "get" or exc.failed != refused_now or missing != refused_now:
            raise
    return received


def _incoming(instance: ReceivedInstance) -> IncomingInstance:
    return IncomingInstance(
        sop_class_uid=instance.sop_class_uid,
        sop_instance_uid=instance.sop_instance_uid,
        transfer_syntax_uid=instance.transfer_syntax_uid,
        encoded=instance.encoded,
        calling_ae=instance.calling_ae,
        called_ae=instance.called_ae,
        remote_ae=instance.remote_ae,
        peer=instance.peer,
        association_id=instance.association_id,
        move_originator_ae=instance.move_originator_ae,
        move_originator_message_id=instance.move_originator_message_id,
    )


def _commit(
    task: StudyTask,
    settings: CohortSettings,
    state: JobState,
    staging: Path,
    received: int,
    withheld: int,
    flagged: dict[str, str],
    deidentifier: Deidentifier,
) -> StudyOutcome:
    files = sorted(p for p in staging.rglob("*.dcm") if not p.name.startswith("."))
    if len(files) != received:
        raise StorageError(f"{received} instances received but {len(files)} files written")
    pseudo_study = deidentifier.pseudonym_uid(task.study_uid)
    studies = sorted(p for p in staging.glob(f"*/{pseudo_study}") if p.is_dir())
    if len(studies) > 1:
        raise StorageError(f"the study's instances name {len(studies)} patients")
    if not studies:  # nothing to keep (every instance withheld): an empty directory
        staged = staging / "_empty" / pseudo_study
        staged.mkdir(parents=True)
        final = settings.output / "_withheld" / pseudo_study
    else:
        staged = studies[0]
        final = settings.output / staged.relative_to(staging)

    def records() -> list[FileRecord]:
        return [
            FileRecord(p.relative_to(settings.output).as_posix(), p.stat().st_size, _sha256(p))
            for p in sorted(final.rglob("*.dcm"))
        ]

    committed = state.commit(
        task.key,
        staged,
        final,
        records,
        instances=received,
        withheld=withheld,
        flagged=len(flagged),
    )
    status = "done" if committed else "already done"
    return StudyOutcome(task.key, task.line, status, received, withheld, flagged=flagged)


# -- the whole job in this process -----------------------------------------------------------


async def run_cohort(
    cohort: str | os.PathLike[str] | Sequence[CohortRow],
    nodes: Sequence[AnyNode],
    settings: CohortSettings,
    *,
    client: Client | None = None,
    move_server: StorageServer | None = None,
    on_study: Callable[[StudyOutcome, int, int], object] | None = None,
    on_planned: Callable[[int], object] | None = None,
) -> list[RowReport]:
    """Run (or resume) a cohort job in this process; return the manifest's rows.

    Args:
        cohort: the cohort list's path, or rows read with :func:`read_cohort`.
        nodes: where to look, in order of preference.
        settings: output, de-identification, method, limits.
        client: the client to use (default: a new one with ``settings.ae_title``).
        move_server: for ``method="move"``, a running server the nodes know.
        on_planned: called with the number of studies to retrieve.
        on_study: called after each study with its outcome, how many are
            finished and how many there are (for a progress display).

    Writes ``<output>/manifest.csv`` at the end (also when cancelled, with the
    rows not finished as ``pending``).
    """
    rows = await rows_of(cohort)
    if not nodes:
        raise ValueError("a cohort job needs at least one node")
    own = client is None
    client = client or Client(settings.ae_title)
    try:
        tasks = await plan_cohort(client, rows, nodes, settings)
        if on_planned is not None:
            on_planned(len(tasks))
        deidentifier = await run_in_thread(settings.deid.deidentifier)
        limits = {node: anyio.CapacityLimiter(settings.per_node) for node in nodes}
        finished = 0

        async def one(task: StudyTask) -> None:
            nonlocal finished
            async with limits[task.node]:
                outcome = await retrieve_study(
                    client, task, settings, deidentifier, move_server=move_server
                )
            finished += 1
            for uid, reason in outcome.flagged.items():
                log.warning("line %d: instance %s flagged: %s", task.line, uid, reason)
            if on_study is not None:
                on_study(outcome, finished, len(tasks))

        async with anyio.create_task_group() as tg:
            for task in tasks:
                tg.start_soon(one, task)
    finally:
        with anyio.CancelScope(shield=True):
            if own:
                await client.aclose()
            reports = await finish(settings)
    return reports


async def rows_of(cohort: str | os.PathLike[str] | Sequence[CohortRow]) -> list[CohortRow]:
    """The rows of a cohort list given as a path (read in a worker thread) or as rows."""
    if isinstance(cohort, (str, os.PathLike)):
        return await run_in_thread(read_cohort, cohort, name="aiodicomnet-cohort-list")
    return list(cohort)


async def finish(settings: CohortSettings) -> list[RowReport]:
    """Write ``manifest.csv`` from the job's state (in a worker thread); return its rows."""

    def work() -> list[RowReport]:
        state = JobState(settings.output)
        reports = state.report()
        write_manifest(settings.output / "manifest.csv", reports)
        return reports

    return await run_in_thread(work, name="aiodicomnet-cohort-manifest")
