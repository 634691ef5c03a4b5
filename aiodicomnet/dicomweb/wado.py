"""WADO-RS: what a query names, retrieved as a stream of instances into a :class:`Storage`.

A retrieve first asks QIDO-RS what there is (the series of each study with
their instance counts, or the instances named), then fetches each series (or
instance) with WADO-RS, several at once up to the node's ``concurrency``.
Each multipart/related response is read part by part
(:func:`~aiodicomnet.dicomweb.multipart.iter_parts`); each part, one
Part 10 instance, goes through the same receive path as a C-STORE
sub-operation: an :class:`~aiodicomnet.IncomingInstance` walked to its end
and handed to the storage, in a worker thread, and the
:class:`~aiodicomnet.ReceivedInstance` is yielded.  At the end the count is
checked against what QIDO-RS reported: fewer (or refused parts) raise
:class:`~aiodicomnet.errors.IncompleteRetrieve`, as an incomplete C-MOVE does.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from pydicom.dataset import Dataset

# pydicom reads File Meta from a stream only through these two (its public
# read_file_meta_info opens a path); both are in pydicom 2 and 3 alike.
from pydicom.filereader import _read_file_meta_info, read_preamble

from .. import status as _status
from .._dimse.bridge import Closed, Outbox, OwnerThread, outbox, run_in_thread
from ..errors import (
    AuthError,
    DicomError,
    HttpError,
    IncompleteRetrieve,
    NotFound,
    ProtocolError,
)
from ..query import Query, QueryLike
from ..results import Progress
from ..storage import IncomingInstance, InvalidDataset, ReceivedInstance, Storage
from . import qido
from .dicom_json import datasets_from_json
from .multipart import MultipartReader, boundary_of
from .session import Session, raise_for_status, translate

__all__ = ["Fetch", "metadata", "plan", "retrieve", "thumbnail"]

ProgressCallback = Callable[[Progress], object]

_DICOM = "application/dicom"


@dataclass(frozen=True)
class Fetch:
    """One WADO-RS request: a series (or one instance) and how many instances it holds."""

    study: str
    series: str
    instance: str | None
    expected: int

    def path(self) -> str:
        """The resource, relative to the WADO-RS base URL."""
        path = f"studies/{self.study}/series/{self.series}"
        return f"{path}/instances/{self.instance}" if self.instance else path


def _uids(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if not value:
        raise ProtocolError(f"a QIDO-RS result has no {keyword}")
    return str(value)


async def plan(session: Session, query: QueryLike) -> list[Fetch]:
    """The WADO-RS requests that retrieve what ``query`` names (QIDO-RS finds them).

    Raises:
        QueryError: the query does not name what to retrieve (no unique key).
    """
    q = qido.as_query(query).for_retrieve()
    keys: dict[str, object] = dict(q.keys)
    keys.pop("SpecificCharacterSet", None)
    if q.level == "IMAGE":
        search = Query("IMAGE", keys, defaults=False)
        fetches = []
        async for ds in qido.pages(session, qido.search_for(search)):
            study, series = _uids(ds, "StudyInstanceUID"), _uids(ds, "SeriesInstanceUID")
            fetches.append(Fetch(study, series, _uids(ds, "SOPInstanceUID"), 1))
        return fetches
    if q.level == "PATIENT":
        studies = Query("STUDY", keys, defaults=False)
        found = [
            _uids(ds, "StudyInstanceUID")
            async for ds in qido.pages(session, qido.search_for(studies))
        ]
        if not found:
            return []
        keys = {"StudyInstanceUID": found}
    series_query = Query("SERIES", keys, defaults=False).returning("NumberOfSeriesRelatedInstances")
    fetches = []
    async for ds in qido.pages(session, qido.search_for(series_query)):
        study, series = _uids(ds, "StudyInstanceUID"), _uids(ds, "SeriesInstanceUID")
        count = ds.get("NumberOfSeriesRelatedInstances")
        if count in (None, ""):
            count = await _count_instances(session, study, series)
        fetches.append(Fetch(study, series, None, int(count)))
    return fetches


async def _count_instances(session: Session, study: str, series: str) -> int:
    """Instances of a series, for a server whose series results carry no count."""
    search = Query("IMAGE", {"StudyInstanceUID": study, "SeriesInstanceUID": series})
    return sum([1 async for _ in qido.pages(session, qido.search_for(search))])


def accept_header(transfer_syntax: str) -> str:
    """The Accept of a WADO-RS instance request: as stored (``*``) or one transfer syntax."""
    return f'multipart/related; type="{_DICOM}"; transfer-syntax={transfer_syntax}'


@dataclass
class _Failed:
    """A part that could not be stored: its instance (if known) and why."""

    sop_instance_uid: str
    reason: str


def _receive_in_thread(
    content: bytes, storage: Storage, peer: tuple[str, int]
) -> ReceivedInstance | _Failed:
    """One WADO-RS part (a Part 10 file) through the receive path, in a worker thread."""
    fp = io.BytesIO(content)
    try:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
        sop_class = str(meta.MediaStorageSOPClassUID)
        sop_instance = str(meta.MediaStorageSOPInstanceUID)
        syntax = str(meta.TransferSyntaxUID)
    except Exception as exc:
        return _Failed("", f"not a DICOM Part 10 instance: {exc}")
    incoming = IncomingInstance(
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        transfer_syntax_uid=syntax,
        encoded=content[fp.tell() :],
        peer=peer,
    )
    try:
        incoming.validate()
        return storage.store(incoming)
    except InvalidDataset as exc:
        return _Failed(sop_instance, f"0x{exc.status:04X}: {exc}")
    except (OSError, MemoryError) as exc:
        return _Failed(sop_instance, f"storage failed: {exc}")


@dataclass
class _Ended:
    """A request is over: all its parts were handed over, or ``error`` stopped it."""

    item: Fetch
    error: DicomError | None = None


#: Parts read and not yet stored, at most: the network is read while earlier
#: parts are written (a reading and a storing thread), memory stays bounded.
PIPELINE = 4


_FINISH = object()  # ends the storing thread's loop


@dataclass
class _Pipeline:
    """What the reading threads of one retrieve share: a bounded queue of parts to
    the storing thread, which stores each and delivers it to the loop in order."""

    storage: Storage
    box: Outbox[Any]
    stop: threading.Event
    peer: tuple[str, int]
    queue: queue.Queue[Any]

    def hand_over(self, content: bytes) -> bool:
        """Queue a part for the storing thread (blocks while :data:`PIPELINE` wait);
        false once the retrieve is over."""
        if self.stop.is_set():
            return False
        self.queue.put(content)
        return True

    def end(self, item: Fetch, error: DicomError | None) -> None:
        """After the request's parts (in order, through the storing thread): it is over."""
        self.queue.put(_Ended(item, error))

    def finish(self) -> None:
        """End the storing thread's loop (after what is queued)."""
        self.queue.put(_FINISH)

    def store_in_thread(self) -> None:
        """The storing thread: until :meth:`finish`, store each part and hand it over."""
        while True:
            got = self.queue.get()
            if got is _FINISH:
                return
            if self.stop.is_set() and not isinstance(got, _Ended):
                continue  # the retrieve is over: parts still queued are not stored
            try:
                if isinstance(got, _Ended):
                    self.box.put(got)
                else:
                    self.box.put(_receive_in_thread(got, self.storage, self.peer))
            except Closed:
                self.stop.set()  # nobody reads any more: drain the queue


def _fetch_in_thread(
    http: httpx.Client,
    session: Session,
    item: Fetch,
    headers: dict[str, str],
    pipeline: _Pipeline,
) -> None:
    """One WADO-RS request, in a reading thread: parts parsed as they arrive and
    handed to the storing thread.

    Each stored instance (or refused part) goes to the loop through the
    pipeline's outbox, which blocks while the consumer is behind
    (backpressure).  The request ends with an :class:`_Ended` item, carrying
    its error if it failed, after the parts that came before it: none is lost.
    """
    node = session.node
    url = f"{node.service_url('wado')}/{item.path()}"
    error: DicomError | None = None
    try:
        with (
            translate(node, url, session.timeouts),
            http.stream("GET", url, headers=headers) as rsp,
        ):
            if rsp.status_code >= 400:
                raise_for_status(node, rsp, rsp.read()[:300])
            reader = MultipartReader(boundary_of(rsp.headers.get("content-type", "")))
            for chunk in rsp.iter_bytes():
                for part in reader.feed(chunk):
                    if part.content_type not in ("", _DICOM):
                        raise ProtocolError(
                            f"WADO-RS {url}: a part of type {part.content_type!r}, not {_DICOM}"
                        )
                    if not pipeline.hand_over(part.content):
                        break
                if pipeline.stop.is_set():
                    break  # the retrieve is over (left, cancelled, or a request failed)
            else:
                reader.close()
    except DicomError as exc:
        if exc.node is None:
            exc.node = node
        error = exc
    pipeline.end(item, error)


async def retrieve(
    session: Session,
    query: QueryLike,
    storage: Storage,
    on_progress: ProgressCallback | None = None,
    *,
    buffer: int = 4,
) -> AsyncGenerator[ReceivedInstance, None]:
    """Retrieve what ``query`` names from the session's node (see the module documentation).

    The requests run in worker threads of this retrieve (as many as the
    node's ``concurrency``, a study's series spread over them), each reading
    its response, parsing it and storing each part as it arrives; the
    instances reach the loop through a stream of at most ``buffer`` items.
    When a request fails, the parts that arrived before are still yielded,
    the other requests stop, and the error is raised.  Leaving early,
    cancelling or an abandoned iterator closes the connections (nothing here
    holds a cancel scope across a ``yield``, so an iterator finalized by the
    garbage collector cleans up as well).

    Raises:
        IncompleteRetrieve: fewer instances arrived than QIDO-RS reported, or
            some could not be stored (``failed_instances`` names them).
        ProtocolError: a malformed response (wrong Content-Type, truncated multipart).
        HttpError, ConnectError, DicomTimeout...: as :class:`Session` raises.
    """
    storage = storage.bind()
    fetches = await plan(session, query)
    expected = sum(f.expected for f in fetches)
    received = 0
    failed: list[_Failed] = []

    def report(done: bool) -> None:
        if on_progress is None:
            return
        complete = not failed and received >= expected
        status = _status.SUCCESS if complete else 0xB000  # B000: some did not come
        on_progress(
            Progress(
                remaining=max(expected - received - len(failed), 0),
                completed=received,
                failed=len(failed),
                warning=0,
                status=status if done else 0xFF00,
                done=done,
                failed_instances=tuple(f.sop_instance_uid for f in failed if f.sop_instance_uid),
            )
        )

    if not fetches:
        report(True)
        return
    http = await run_in_thread(session.blocking_client)
    box, inlet = outbox(buffer)
    stop = threading.Event()
    pipeline = _Pipeline(storage, box, stop, (session.node.host, 0), queue.Queue(PIPELINE))
    storer = OwnerThread("aiodicomnet-wado-store")
    storer.submit(pipeline.store_in_thread)
    workers: list[OwnerThread] = []
    slots: list[object] = []
    error: DicomError | None = None
    try:
        # The node's concurrency holds across operations: a slot per reading
        # thread, the first waited for, more taken only if free at once.
        for i in range(min(session.node.concurrency, len(fetches))):
            borrower = object()
            if i == 0:
                await session.limiter.acquire_on_behalf_of(borrower)
            else:
                try:
                    session.limiter.acquire_on_behalf_of_nowait(borrower)
                except anyio.WouldBlock:
                    break
            slots.append(borrower)
            workers.append(OwnerThread(f"aiodicomnet-wado-{i}"))
        headers = {"Accept": accept_header(session.node.transfer_syntax)}
        refreshed = False
        auth = await session.authorization()
        if auth is not None:
            headers["Authorization"] = auth
        for i, item in enumerate(fetches):
            workers[i % len(workers)].submit(
                _fetch_in_thread, http, session, item, headers, pipeline
            )
        pending = len(fetches)
        async for got in inlet:
            if isinstance(got, _Ended):
                err = got.error
                if (
                    isinstance(err, AuthError)
                    and err.status_code == 401
                    and callable(session.node.auth)
                    and not refreshed
                    and error is None
                ):
                    # An expired token: refreshed once, the request sent again.
                    refreshed = True
                    fresh = await session.authorization(True) or ""
                    headers = {**headers, "Authorization": fresh}
                    workers[0].submit(_fetch_in_thread, http, session, got.item, headers, pipeline)
                    continue
                pending -= 1
                if err is not None and error is None:
                    error = err
                    stop.set()  # the other requests end after their current chunk
                if pending == 0:
                    break
                continue
            if isinstance(got, _Failed):
                failed.append(got)
                report(False)
                continue
            received += 1
            report(False)
            yield got
    finally:
        stop.set()
        inlet.close()  # a thread blocked handing over an instance stops
        with anyio.CancelScope(shield=True):
            await run_in_thread(http.close)  # a thread blocked reading the network stops
            for worker in workers:
                await worker.stop()
            await run_in_thread(pipeline.finish)  # the queue may be full: not on the loop
            await storer.stop()
        for borrower in slots:
            session.limiter.release_on_behalf_of(borrower)
    if error is not None:
        raise error
    report(True)
    if failed or received < expected:
        raise IncompleteRetrieve(
            max(expected, received + len(failed)),
            received,
            failed=len(failed),
            failed_instances=tuple(f.sop_instance_uid for f in failed if f.sop_instance_uid),
            node=session.node,
            missing_reason="instance(s) that QIDO-RS listed never came in the WADO-RS responses",
        )


async def metadata(session: Session, query: QueryLike) -> AsyncGenerator[Dataset, None]:
    """The metadata (``/metadata``, DICOM JSON) of every instance ``query`` names.

    Bulk data (pixel data first of all) are not sent: their BulkDataURI is in
    each dataset's ``bulk_data_uris``.
    """
    node = session.node
    for item in await plan(session, query):
        url = f"{node.service_url('wado')}/{item.path()}/metadata"
        response, body = await session.request(
            "GET", url, headers={"Accept": "application/dicom+json"}
        )
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("application/dicom+json", "application/json"):
            raise ProtocolError(f"WADO-RS {url}: expected DICOM JSON, got {kind!r}", node=node)
        try:
            found = await run_in_thread(datasets_from_json, body, f"WADO-RS {url}")
        except ProtocolError as exc:
            exc.node = node
            raise
        for ds in found:
            yield ds


async def thumbnail(
    session: Session, query: QueryLike, *, size: int = 128, media_type: str = "image/jpeg"
) -> bytes:
    """A rendered preview (JPEG or PNG) of what ``query`` names, at most ``size`` pixels.

    Rendered from one instance: the one named, else the middle one of the
    first series (as a viewer's series thumbnail does).  Uses ``/thumbnail``
    where the server has it, else ``/rendered`` with a viewport.

    Raises:
        NotFound: the query names nothing.
    """
    node = session.node
    q = qido.as_query(query)
    if q.level == "IMAGE":
        fetches = await plan(session, q)
        chosen = fetches[0] if fetches else None
    else:
        series = await plan(session, q)
        chosen = None
        if series:
            first = series[0]
            instances = Query(
                "IMAGE",
                {"StudyInstanceUID": first.study, "SeriesInstanceUID": first.series},
                defaults=False,
            ).returning("SOPInstanceUID", "InstanceNumber")
            found = [ds async for ds in qido.pages(session, qido.search_for(instances))]
            found.sort(key=lambda ds: int(ds.get("InstanceNumber") or 0))
            if found:
                middle = found[len(found) // 2]
                chosen = Fetch(first.study, first.series, _uids(middle, "SOPInstanceUID"), 1)
    if chosen is None:
        raise NotFound(404, node.url, f"nothing to render for {q!r}", node=node)
    base = f"{node.service_url('wado')}/{chosen.path()}"
    headers = {"Accept": media_type}
    try:
        _, body = await session.request(
            "GET", f"{base}/thumbnail", params=[("viewport", f"{size},{size}")], headers=headers
        )
    except (NotFound, HttpError) as exc:
        if exc.status_code not in (400, 404, 406, 501):
            raise
        _, body = await session.request(
            "GET", f"{base}/rendered", params=[("viewport", f"{size},{size}")], headers=headers
        )
    return body
