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

import contextlib
import io
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydicom.dataset import Dataset

# pydicom reads File Meta from a stream only through these two (its public
# read_file_meta_info opens a path); both are in pydicom 2 and 3 alike.
from pydicom.filereader import _read_file_meta_info, read_preamble

from .. import status as _status
from .._dimse.bridge import OwnerThread, run_in_thread
from ..errors import DicomError, HttpError, IncompleteRetrieve, NotFound, ProtocolError
from ..query import Query, QueryLike
from ..results import Progress
from ..storage import IncomingInstance, InvalidDataset, ReceivedInstance, Storage
from . import qido
from .dicom_json import datasets_from_json
from .multipart import boundary_of, iter_parts
from .session import Session

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
class _Stopped:
    """A fetch ended by an error: what the stream carries in place of more parts."""

    error: DicomError


async def _read_parts(session: Session, item: Fetch, out: MemoryObjectSendStream[Any]) -> None:
    """One WADO-RS request: its parts (Part 10 bytes) sent on ``out`` as they arrive.

    An error ends the fetch as a :class:`_Stopped` item after the parts read
    before it, so that none of them is lost.
    """
    node = session.node
    url = f"{node.service_url('wado')}/{item.path()}"
    async with out:
        try:
            async with session.stream(
                "GET", url, headers={"Accept": accept_header(node.transfer_syntax)}
            ) as response:
                boundary = boundary_of(response.headers.get("content-type", ""))
                async for part in iter_parts(response.aiter_bytes(), boundary):
                    if part.content_type not in ("", _DICOM):
                        raise ProtocolError(
                            f"WADO-RS {url}: a part of type {part.content_type!r}, not {_DICOM}"
                        )
                    await out.send(part.content)
        except DicomError as exc:
            if exc.node is None:
                exc.node = node
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await out.send(_Stopped(exc))


async def retrieve(
    session: Session,
    query: QueryLike,
    storage: Storage,
    on_progress: ProgressCallback | None = None,
    *,
    buffer: int = 4,
) -> AsyncGenerator[ReceivedInstance, None]:
    """Retrieve what ``query`` names from the session's node (see the module documentation).

    The responses are read by one task per request (a study's series up to
    the node's ``concurrency`` at once) into a stream of at most ``buffer``
    parts; each part is stored in one worker thread while the next ones are
    read, and yielded once stored.  When a request fails, the parts that
    arrived before are still stored and yielded, then the error is raised.

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
    peer = (session.node.host, 0)

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

    error: DicomError | None = None
    worker = OwnerThread("aiodicomnet-wado-store")
    try:
        async with _Readers(session, fetches, buffer) as parts:
            async for part in parts:
                if isinstance(part, _Stopped):
                    error = error or part.error
                    parts.stop()  # the other requests too; what is buffered is still stored
                    continue
                stored = await worker.run(_receive_in_thread, part, storage, peer)
                if isinstance(stored, _Failed):
                    failed.append(stored)
                    report(False)
                    continue
                received += 1
                report(False)
                yield stored
    finally:
        await worker.stop()  # shielded
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


class _Readers:
    """The parts of several WADO-RS requests as one bounded stream.

    One task per request, each holding one of the node's slots while its
    response is open; :meth:`stop` ends them (their buffered parts stay to be
    read).  Leaving the block (early, by an error or a cancellation) cancels
    them and closes their HTTP streams.
    """

    def __init__(self, session: Session, fetches: list[Fetch], buffer: int) -> None:
        self._session = session
        self._fetches = fetches
        self._buffer = buffer
        self._tg: Any = None
        self._scopes: list[anyio.CancelScope] = []
        self._receive: MemoryObjectReceiveStream[Any] | None = None

    async def __aenter__(self) -> _Readers:
        send, self._receive = anyio.create_memory_object_stream[Any](self._buffer)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()

        async def read(item: Fetch, out: MemoryObjectSendStream[Any]) -> None:
            with anyio.CancelScope() as scope:
                self._scopes.append(scope)
                await _read_parts(self._session, item, out)

        async with send:
            for item in self._fetches:
                self._tg.start_soon(read, item, send.clone())
        return self

    def __aiter__(self) -> MemoryObjectReceiveStream[Any]:
        assert self._receive is not None
        return self._receive

    def stop(self) -> None:
        """End every request (a fetch failed)."""
        for scope in self._scopes:
            scope.cancel()

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._receive is not None
        self._receive.close()
        self.stop()
        error = exc_info[1]
        try:
            await self._tg.__aexit__(*exc_info)
        except BaseException as raised:
            if error is not None:
                return  # the original exception (the consumer left, a cancellation) goes on
            for leaf in _leaves(raised):
                if isinstance(leaf, Exception):
                    raise leaf from None  # a reader's own error, not wrapped in a group
            raise


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or ``exc`` itself."""
    inner = getattr(exc, "exceptions", None)
    if not isinstance(inner, tuple):
        return [exc]
    return [leaf for sub in inner for leaf in _leaves(sub)]


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
