"""The Archive's DICOMweb face: QIDO-RS, WADO-RS and STOW-RS on the same index.

::

    async with Archive("ARCHIVE", "data/archive") as archive, archive.dicomweb() as web:
        print(web.url)                       # http://127.0.0.1:PORT/dicom-web
        async with Client() as client:
            studies = await client.find(web.node, Query.study(PatientID="123"))

:class:`DicomWebApp` is a plain ASGI application over an
:class:`~aiodicomnet.archive.Archive`; :func:`serve` runs it on hypercorn
(an ASGI server for both anyio backends, asyncio and trio) on a loopback port
for the duration of an ``async with``.  What it serves, under ``/dicom-web``:

=====================================================  ==============================
request                                                answer
=====================================================  ==============================
``GET /studies``, ``/series``, ``/instances``, and     QIDO-RS: ``application/dicom+json``;
``/studies/{study}/series``,                           matching as the Archive's C-FIND
``/studies/{study}/series/{series}/instances``         (wildcards, ranges, UID lists,
                                                       ``{seq}.{attr}``), ``includefield``,
                                                       ``limit``, ``offset``
``GET /studies/{study}[/series/{series}                WADO-RS: ``multipart/related;
[/instances/{instance}]]``                             type="application/dicom"``, each
                                                       file as stored (transfer syntax ``*``
                                                       or the stored one; another: 406)
``GET .../metadata``                                   DICOM JSON, pixel data by BulkDataURI
``POST /studies``                                      STOW-RS: each part indexed as a
                                                       C-STORE would be; 200 (all), 202
                                                       (some), 409 (none) with
                                                       Referenced/FailedSOPSequence
=====================================================  ==============================

The multipart bodies are streamed both ways: files are read one at a time
(in a worker thread) as the response is sent, and an upload is parsed part by
part as it arrives.  Nothing blocking runs on the event loop.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

import anyio
from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

# pydicom reads File Meta from a stream only through these two (its public
# read_file_meta_info opens a path).
from pydicom.filereader import _read_file_meta_info, read_preamble

from ._dimse.bridge import run_in_thread
from .dicomweb.multipart import boundary_of, closing, iter_parts, part_header
from .errors import DicomError
from .nodes import WebNode
from .query import DEFAULT_RETURN_KEYS
from .status import CANNOT_UNDERSTAND, DATA_SET_MISMATCH, OUT_OF_RESOURCES
from .storage import IncomingInstance, InvalidDataset

if TYPE_CHECKING:
    from .archive import Archive

__all__ = ["DicomWebApp", "DicomWebServer", "serve"]

LOGGER = logging.getLogger("aiodicomnet.archive_web")

ROOT = "/dicom-web"
_JSON = "application/dicom+json"
_DICOM = "application/dicom"
_LEVELS = {"studies": "STUDY", "series": "SERIES", "instances": "IMAGE"}
_PARENTS = {
    "STUDY": ("StudyInstanceUID",),
    "SERIES": ("StudyInstanceUID", "SeriesInstanceUID"),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"),
}
#: PS3.18 Table 6.7.1-2: returned whether asked for or not (with the Query defaults).
_QIDO_DEFAULTS = {
    "STUDY": ("PatientBirthDate", "PatientSex", "StudyID", "ReferringPhysicianName"),
    "SERIES": ("StudyInstanceUID",),
    "IMAGE": ("Rows", "Columns", "NumberOfFrames"),
}

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class _Refused(Exception):
    """A request answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _attribute(name: str) -> tuple[int, str]:
    """``(tag, VR)`` of a QIDO-RS attribute ID: 8 hex digits or a keyword."""
    tag: int | None
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        tag = int(name, 16)
    else:
        tag = tag_for_keyword(name)
    if tag is None or not keyword_for_tag(tag):
        raise _Refused(400, f"unknown attribute {name!r}")
    return tag, dictionary_VR(tag).split(" or ")[0]


def _put(ds: Dataset, tag: int, vr: str, value: str | None) -> None:
    if vr == "SQ":
        ds.add(DataElement(tag, vr, []))
        return
    if value is not None and vr == "UI":
        value = value.replace(",", "\\")  # a UID list
    ds.add(DataElement(tag, vr, value, validation_mode=pydicom_config.IGNORE))


def qido_identifier(
    level: str, params: list[tuple[str, str]], fixed: Mapping[str, str]
) -> tuple[Dataset, int, int | None]:
    """A C-FIND identifier, offset and limit from QIDO-RS query parameters."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.SpecificCharacterSet = "ISO_IR 192"
    offset, limit = 0, None
    wanted = [*DEFAULT_RETURN_KEYS[level], *_PARENTS[level], *_QIDO_DEFAULTS[level]]  # type: ignore[index]
    for keyword in wanted:
        tag = tag_for_keyword(keyword)
        assert tag is not None
        if tag not in ds:
            _put(ds, tag, dictionary_VR(tag), None)
    for name, value in params:
        key = name.lower()
        if key in ("limit", "offset"):
            if not value.isdigit():
                raise _Refused(400, f"{name} must be a non-negative integer, not {value!r}")
            if key == "limit":
                limit = int(value)
            else:
                offset = int(value)
        elif key == "fuzzymatching":
            continue  # matching is already case-insensitive for names
        elif key == "includefield":
            for field in value.split(","):
                if field.strip().lower() == "all":
                    continue
                tag, vr = _attribute(field.strip())
                if tag not in ds:
                    _put(ds, tag, vr, None)
        elif "." in name:
            outer, inner = name.split(".", 1)
            seq_tag, seq_vr = _attribute(outer)
            tag, vr = _attribute(inner)
            if seq_vr != "SQ" or "." in inner:
                raise _Refused(400, f"{name}: one sequence level only")
            item = Dataset()
            _put(item, tag, vr, value)
            ds.add(DataElement(seq_tag, "SQ", [item]))
        else:
            tag, vr = _attribute(name)
            if tag in ds and ds[tag].value not in (None, "", []):
                raise _Refused(400, f"{name} is given twice")
            if tag in ds:
                del ds[tag]
            _put(ds, tag, vr, value)
    for keyword, uid in fixed.items():
        ds[keyword] = DataElement(keyword, "UI", uid)
    return ds, offset, limit


@dataclass
class DicomWebApp:
    """An ASGI application serving an :class:`~aiodicomnet.archive.Archive` as DICOMweb.

    Args:
        archive: the archive (entered: its index open).
        root: the path the services are under.
    """

    archive: Archive
    root: str = ROOT

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            await self._route(scope, receive, send)
        except _Refused as exc:
            await _error(send, exc.status, str(exc))
        except DicomError as exc:
            LOGGER.warning("DICOMweb request refused: %s", exc)
            await _error(send, 400, str(exc))

    async def _route(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        path = unquote(scope["path"])
        if not path.startswith(self.root + "/"):
            raise _Refused(404, f"not under {self.root}")
        parts = [p for p in path[len(self.root) :].split("/") if p]
        method = scope["method"]
        params = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        base = _base_url(scope, headers, self.root)
        if method == "POST" and parts[:1] == ["studies"] and len(parts) <= 2:
            await self._stow(headers, receive, send, base, parts[1] if len(parts) == 2 else None)
            return
        if method not in ("GET", "HEAD"):
            raise _Refused(405, f"{method} is not served here")
        metadata = parts[-1:] == ["metadata"]
        if metadata:
            parts = parts[:-1]
        # /studies, /series, /instances, /studies/{s}/series, /studies/{s}/series/{r}/instances
        if parts and parts[-1] in _LEVELS and len(parts) in (1, 3, 5) and not metadata:
            fixed = dict(zip(("StudyInstanceUID", "SeriesInstanceUID"), parts[1::2], strict=False))
            await self._qido(_LEVELS[parts[-1]], params, fixed, send)
            return
        # /studies/{s}[/series/{r}[/instances/{i}]]
        names = ("studies", "series", "instances")
        if len(parts) in (2, 4, 6) and tuple(parts[0::2]) == names[: len(parts) // 2]:
            uids = parts[1::2]
            if metadata:
                await self._metadata(uids, send, base)
            else:
                await self._wado(uids, headers.get("accept", "*/*"), send)
            return
        raise _Refused(404, f"no such resource: {path}")

    # -- QIDO-RS -----------------------------------------------------------------------

    async def _qido(
        self, level: str, params: list[tuple[str, str]], fixed: dict[str, str], send: Send
    ) -> None:
        identifier, offset, limit = qido_identifier(level, params, fixed)
        try:
            found = await self.archive.find(identifier, "STUDY")
        except ValueError as exc:
            raise _Refused(400, str(exc)) from None
        page = found[offset : None if limit is None else offset + limit]

        def encode() -> bytes:
            docs = []
            for ds in page:
                for keyword in ("QueryRetrieveLevel", "RetrieveAETitle"):
                    if keyword in ds:
                        del ds[keyword]
                docs.append(ds.to_json_dict())
            return json.dumps(docs).encode()

        body = await run_in_thread(encode)
        if not page:
            await _respond(send, 204, b"", None)
            return
        await _respond(send, 200, body, _JSON)

    # -- WADO-RS -----------------------------------------------------------------------

    async def _instances(self, uids: list[str]) -> list[Any]:
        keywords = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
        identifier = Dataset()
        identifier.QueryRetrieveLevel = ("STUDY", "SERIES", "IMAGE")[len(uids) - 1]
        for keyword, uid in zip(keywords, uids, strict=False):
            identifier.add(DataElement(keyword, "UI", uid, validation_mode=pydicom_config.IGNORE))
        try:
            instances = await self.archive.instances(identifier)
        except ValueError as exc:
            raise _Refused(400, str(exc)) from None
        if not instances:
            raise _Refused(404, "no such study, series or instance")
        return instances

    async def _wado(self, uids: list[str], accept: str, send: Send) -> None:
        wanted = _accepted_syntax(accept)
        instances = await self._instances(uids)
        if wanted not in ("*", None):
            other = [i for i in instances if i.transfer_syntax_uid != wanted]
            if other:
                raise _Refused(406, f"held in {other[0].transfer_syntax_uid}, not {wanted}")
        boundary = f"adn-{secrets.token_hex(12)}".encode()
        content_type = f'multipart/related; type="{_DICOM}"; boundary={boundary.decode()}'
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", content_type.encode())],
            }
        )
        for i, instance in enumerate(instances):
            try:
                data = await run_in_thread(Path(instance.path).read_bytes)
            except OSError as exc:  # gone from disk: the response cannot be completed
                LOGGER.error("WADO-RS: %s unreadable: %s", instance.path, exc)
                raise
            kind = f"{_DICOM}; transfer-syntax={instance.transfer_syntax_uid}"
            head = part_header(boundary, kind, first=i == 0)
            await send({"type": "http.response.body", "body": head + data, "more_body": True})
        await send({"type": "http.response.body", "body": closing(boundary), "more_body": False})

    async def _metadata(self, uids: list[str], send: Send, base: str) -> None:
        instances = await self._instances(uids)

        def encode() -> bytes:
            docs = []
            for inst in instances:
                ds = dcmread(inst.path, defer_size=1024)
                url = (
                    f"{base}/studies/{inst.study_instance_uid}/series/"
                    f"{inst.series_instance_uid}/instances/{inst.sop_instance_uid}"
                )

                def bulk(elem: DataElement, url: str = url) -> str:
                    return f"{url}/bulk/{elem.tag:08X}"

                docs.append(ds.to_json_dict(bulk_data_threshold=0, bulk_data_element_handler=bulk))
            return json.dumps(docs).encode()

        await _respond(send, 200, await run_in_thread(encode), _JSON)

    # -- STOW-RS -----------------------------------------------------------------------

    async def _stow(
        self,
        headers: dict[str, str],
        receive: Receive,
        send: Send,
        base: str,
        study: str | None,
    ) -> None:
        try:
            boundary = boundary_of(headers.get("content-type", ""))
        except DicomError as exc:
            raise _Refused(415, str(exc)) from None
        stored: list[Dataset] = []
        failed: list[Dataset] = []
        incoming = self.archive.directory / "incoming"
        async for part in iter_parts(_body(receive), boundary):
            outcome = await run_in_thread(_stow_one, self.archive, part.content, incoming, study)
            item = Dataset()
            item.ReferencedSOPClassUID = outcome.sop_class
            item.ReferencedSOPInstanceUID = outcome.sop_instance
            if outcome.failure is None:
                item.RetrieveURL = f"{base}/studies/{outcome.study}"
                stored.append(item)
            else:
                item.FailureReason = outcome.failure
                failed.append(item)
        answer = Dataset()
        answer.ReferencedSOPSequence = stored
        answer.FailedSOPSequence = failed
        status = 200 if not failed else (409 if not stored else 202)
        body = await run_in_thread(lambda: json.dumps(answer.to_json_dict()).encode())
        await _respond(send, status, body, _JSON)


@dataclass
class _StowOutcome:
    sop_class: str
    sop_instance: str
    study: str
    failure: int | None


def _stow_one(archive: Archive, content: bytes, incoming: Path, study: str | None) -> _StowOutcome:
    """One STOW-RS part into the archive (in a worker thread): checked as a received
    C-STORE data set is (walked to its end), then imported."""
    fp = io.BytesIO(content)
    try:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
        sop_class = str(meta.MediaStorageSOPClassUID)
        sop_instance = str(meta.MediaStorageSOPInstanceUID)
        syntax = str(meta.TransferSyntaxUID)
    except Exception as exc:
        LOGGER.warning("STOW-RS: a part that is not a DICOM Part 10 instance: %s", exc)
        return _StowOutcome("", "", "", CANNOT_UNDERSTAND)
    part = IncomingInstance(
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        transfer_syntax_uid=syntax,
        encoded=content[fp.tell() :],
    )
    try:
        part.validate()
        header = part.header("StudyInstanceUID")
    except InvalidDataset as exc:
        LOGGER.warning("STOW-RS: refused %s: %s", sop_instance, exc)
        return _StowOutcome(sop_class, sop_instance, "", exc.status)
    uid = str(header.get("StudyInstanceUID", ""))
    if study is not None and uid != study:
        return _StowOutcome(sop_class, sop_instance, uid, DATA_SET_MISMATCH)
    incoming.mkdir(parents=True, exist_ok=True)
    tmp = incoming / f"{secrets.token_hex(8)}.dcm"
    try:
        tmp.write_bytes(content)
        archive.add_sync([tmp])
        return _StowOutcome(sop_class, sop_instance, uid, None)
    except OSError as exc:
        LOGGER.error("STOW-RS: cannot store %s: %s", sop_instance, exc)
        return _StowOutcome(sop_class, sop_instance, uid, OUT_OF_RESOURCES)
    except Exception as exc:
        LOGGER.warning("STOW-RS: refused %s: %s", sop_instance, exc)
        return _StowOutcome(sop_class, sop_instance, uid, CANNOT_UNDERSTAND)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


def _accepted_syntax(accept: str) -> str | None:
    """The transfer syntax an Accept asks of a WADO-RS retrieve (``*``, a UID, or None)."""
    for media in accept.split(","):
        kind, _, rest = media.partition(";")
        kind = kind.strip().lower()
        if kind not in ("multipart/related", "*/*", "multipart/*"):
            continue
        for param in rest.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "transfer-syntax":
                return value.strip().strip('"') or "*"
        return "*"
    raise _Refused(406, f"cannot answer {accept!r}: multipart/related of {_DICOM} only")


def _base_url(scope: dict[str, Any], headers: dict[str, str], root: str) -> str:
    host = headers.get("host") or "{}:{}".format(*scope.get("server", ("127.0.0.1", 80)))
    return f"{scope.get('scheme', 'http')}://{host}{root}"


async def _respond(send: Send, status: int, body: bytes, content_type: str | None) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if content_type:
        headers.append((b"content-type", content_type.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _error(send: Send, status: int, message: str) -> None:
    with contextlib.suppress(Exception):  # the response may have started already
        await _respond(send, status, message.encode(), "text/plain; charset=utf-8")


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# -- the server ---------------------------------------------------------------------------


@dataclass
class DicomWebServer:
    """A running DICOMweb server (what :func:`serve` yields)."""

    url: str
    port: int

    @property
    def node(self) -> WebNode:
        """A :class:`~aiodicomnet.WebNode` for this server."""
        return WebNode(self.url, name="archive")


@contextlib.asynccontextmanager
async def serve(
    archive: Archive, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[DicomWebServer]:
    """Serve ``archive`` as DICOMweb on hypercorn at ``host:port`` (0: a free port).

    The socket is bound before this yields, so the URL is usable at once;
    leaving the block stops the server (open connections closed).

    Raises:
        ImportError: hypercorn is not installed (``pip install aiodicomnet[web]``).
    """
    import sniffio
    from hypercorn.config import Config

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
        bound = sock.getsockname()[1]
    except BaseException:
        sock.close()
        raise
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = LOGGER
    config.graceful_timeout = 1.0
    # An idle keep-alive connection is closed after this (the client reconnects at will).
    config.keep_alive_timeout = 0.5
    shown = f"[{host}]" if ":" in host else host
    app = DicomWebApp(archive)
    stop = anyio.Event()
    run_server: Any
    if sniffio.current_async_library() == "trio":
        from hypercorn.trio import serve as run_server
    else:
        from hypercorn.asyncio import serve as run_server

    async def shutdown() -> None:
        await stop.wait()

    # The task group is entered by hand so that an exception of the ``async with``
    # body leaves it as itself, not wrapped in an exception group.
    stopped = anyio.Event()
    # hypercorn closes its listening socket only when it shuts down by its trigger
    # (cancelled, it leaves the socket open): the server task is shielded from the
    # cancellation of the block around it, and stopped by ``stop`` (or, should it
    # hang, by cancelling its own scope).
    server_scope = anyio.CancelScope(shield=True)

    async def run() -> None:
        try:
            with server_scope:
                await run_server(app, config, shutdown_trigger=shutdown)
        finally:
            stopped.set()

    tg = anyio.create_task_group()
    await tg.__aenter__()
    tg.start_soon(run)
    try:
        yield DicomWebServer(f"http://{shown}:{bound}{ROOT}", bound)
    except BaseException:
        stop.set()
        with anyio.CancelScope(shield=True), anyio.move_on_after(config.graceful_timeout + 4):
            await stopped.wait()
        server_scope.cancel()
        # Not inside a new scope: the task group was entered outside it, and anyio
        # refuses to leave a scope from inside another.
        with contextlib.suppress(BaseException):
            await tg.__aexit__(None, None, None)
        raise
    stop.set()
    await tg.__aexit__(None, None, None)
