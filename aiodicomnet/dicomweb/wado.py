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
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from pydicom.dataset import Dataset

# pydicom reads File Meta from a stream only through these two (its public
# read_file_meta_info opens a path); both are in pydicom 2 and 3 alike.
from pydicom.filereader import _read_file_meta_info, read_preamble

from .. import status as _status
from .._dimse.bridge import run_in_thread
from ..errors import HttpError, IncompleteRetrieve, NotFound, ProtocolError
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


async def fetch(
    session: Session, item: Fetch, storage: Storage
) -> AsyncGenerator[ReceivedInstance | _Failed, None]:
    """One WADO-RS request, its parts stored one by one as they arrive."""
    node = session.node
    url = f"{node.service_url('wado')}/{item.path()}"
    peer = (node.host, 0)
    async with session.stream(
        "GET", url, headers={"Accept": accept_header(node.transfer_syntax)}
    ) as response:
        boundary = boundary_of(response.headers.get("content-type", ""))
        async for part in iter_parts(response.aiter_bytes(), boundary):
            if part.content_type not in ("", _DICOM):
                raise ProtocolError(
                    f"WADO-RS {url}: a part of type {part.content_type!r}, not {_DICOM}",
                    node=node,
                )
            yield await run_in_thread(_receive_in_thread, part.content, storage, peer)


async def retrieve(
    session: Session,
    query: QueryLike,
    storage: Storage,
    on_progress: ProgressCallback | None = None,
    *,
    buffer: int = 16,
) -> AsyncGenerator[ReceivedInstance, None]:
    """Retrieve what ``query`` names from the session's node (see the module documentation).

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

    async with _merged(session, fetches, storage, buffer) as items:
        async for item in items:
            if isinstance(item, _Failed):
                failed.append(item)
            else:
                received += 1
                report(False)
                yield item
                continue
            report(False)
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


class _merged:
    """The items of several fetches as one stream: one fetch read directly, more
    read at once (each holding one of the node's slots) into a bounded stream."""

    def __init__(
        self, session: Session, fetches: list[Fetch], storage: Storage, buffer: int
    ) -> None:
        self._session = session
        self._fetches = fetches
        self._storage = storage
        self._buffer = buffer
        self._tg: Any = None
        self._gen: AsyncGenerator[Any, None] | None = None

    async def __aenter__(self) -> AsyncGenerator[Any, None]:
        if len(self._fetches) <= 1:
            self._gen = self._one()
            return self._gen
        send, receive = anyio.create_memory_object_stream[Any](self._buffer)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()

        async def run(item: Fetch, out: Any) -> None:
            async with out:
                gen = fetch(self._session, item, self._storage)
                try:
                    async for got in gen:
                        await out.send(got)
                finally:
                    await gen.aclose()

        async with send:
            for item in self._fetches:
                self._tg.start_soon(run, item, send.clone())
        self._gen = _drain(receive)
        return self._gen

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._gen is not None:
            await self._gen.aclose()
        if self._tg is None:
            return
        error = exc_info[1]
        if error is not None:  # left early, cancelled, or a fetch failed: stop the others
            self._tg.cancel_scope.cancel()
        try:
            await self._tg.__aexit__(*exc_info)
        except BaseException as raised:
            if isinstance(error, GeneratorExit):
                return  # the consumer left: what the cancelled fetches raised is moot
            for leaf in _leaves(raised):
                if isinstance(leaf, Exception):
                    raise leaf from None  # a fetch's own error, not wrapped in a group
            if error is not None:
                return  # the original exception (a cancellation) goes on
            raise

    async def _one(self) -> AsyncGenerator[Any, None]:
        for item in self._fetches:
            gen = fetch(self._session, item, self._storage)
            try:
                async for got in gen:
                    yield got
            finally:
                await gen.aclose()


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or ``exc`` itself."""
    inner = getattr(exc, "exceptions", None)
    if not isinstance(inner, tuple):
        return [exc]
    return [leaf for sub in inner for leaf in _leaves(sub)]


async def _drain(receive: Any) -> AsyncGenerator[Any, None]:
    async with receive:
        async for item in receive:
            yield item


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
