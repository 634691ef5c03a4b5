"""Where received instances go: :class:`ReceivedInstance` and the storage policies.

A C-STORE request received by the :class:`~aiodicomnet.server.StorageServer`,
or a C-STORE sub-operation received on a client's own association during a
C-GET, is handed to a :class:`Storage` from pynetdicom's ``EVT_C_STORE``
handler, in the association's thread:

* :class:`MemoryStorage` keeps the encoded data set in memory.
* :class:`DiskStorage` writes a DICOM Part 10 file under a root directory,
  laid out by a template such as ``{PatientID}/{StudyInstanceUID}/...``.
* :class:`CallbackStorage` keeps the instance in memory and calls a function
  (plain or ``async``) with it.

Nothing here decodes pixel data. The encoded data set pynetdicom received is
kept (or written after the File Meta Information) byte for byte; only the few
header attributes needed for naming and routing are parsed, stopping before
the first element past the last one needed. ``pynetdicom._config`` is not
touched: in particular ``STORE_RECV_CHUNKED_DATASET`` stays as the host
application set it.

:func:`handle_store` is the whole C-STORE SCP step (store, then deliver,
failures mapped to a DIMSE status), shared by the server and by C-GET.

Status codes (PS3.4 Table B.2-1) answered by :func:`handle_store`:

=========  ==============================================================
``0x0000`` stored (and delivered)
``0xA700`` Refused, out of resources: the storage raised :class:`OSError`
           (disk full, quota, permission, I/O error) or
           :class:`MemoryError`, or the instance could not be delivered
           because its consumer is gone or the server is closing
           (:class:`DeliveryRefused`). What was stored is removed.
``0xA900`` Error, data set does not match SOP class: the data set's SOP
           Class UID differs from the request's Affected SOP Class UID.
``0xC000`` Error, cannot understand: the data set cannot be parsed or has
           no SOP Instance UID.
``0xC001`` Error, cannot understand: the application's callback or a
           post-store hook raised (anything but :class:`OSError`, which
           gives ``0xA700``). What was stored is removed.
=========  ==============================================================
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import io
import itertools
import logging
import os
import re
import secrets
import shutil
import string
import struct
import threading
import zlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import anyio.from_thread
from anyio.lowlevel import EventLoopToken
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from .errors import StorageError

__all__ = [
    "STATUS_BAD_SOP_CLASS",
    "STATUS_CALLBACK_FAILED",
    "STATUS_CANNOT_UNDERSTAND",
    "STATUS_OUT_OF_RESOURCES",
    "STATUS_SUCCESS",
    "CallbackStorage",
    "DeliveryRefused",
    "DiskStorage",
    "InvalidDataset",
    "MemoryStorage",
    "ReceivedInstance",
    "Storage",
    "association_id",
    "handle_store",
]

LOGGER = logging.getLogger("aiodicomnet.storage")

STATUS_SUCCESS = 0x0000
#: Refused: out of resources (storage failed, or consumer gone / server closing).
STATUS_OUT_OF_RESOURCES = 0xA700
#: Error: data set does not match SOP class.
STATUS_BAD_SOP_CLASS = 0xA900
#: Error: cannot understand (the data set cannot be parsed or has no SOP Instance UID).
STATUS_CANNOT_UNDERSTAND = 0xC000
#: Error: cannot understand, used when the application's callback or hook raised.
STATUS_CALLBACK_FAILED = 0xC001

_PREAMBLE = b"\x00" * 128 + b"DICM"

# Header attributes parsed for every instance (routing and naming).
_BASE_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
)
_INT_VRS = frozenset({"IS", "US", "UL", "SS", "SL", "UV", "SV"})


class InvalidDataset(StorageError, ValueError):
    """The received data set cannot be stored as it is.

    Attributes:
        status: the C-STORE status to answer (``0xC000`` or ``0xA900``).
    """

    def __init__(self, message: str, *, status: int = STATUS_CANNOT_UNDERSTAND) -> None:
        super().__init__(message)
        self.status = status


class DeliveryRefused(StorageError):
    """A stored instance could not be handed to anyone (consumer gone, server closing)."""


# -- association ids -------------------------------------------------------------

_ASSOC_ID_ATTR = "_adn_association_id"
_assoc_ids = itertools.count(1)
_assoc_id_lock = threading.Lock()


def association_id(assoc: Any) -> int:
    """A process-wide unique number for a pynetdicom association (1, 2, ...)."""
    value = getattr(assoc, _ASSOC_ID_ATTR, None)
    if value is None:
        with _assoc_id_lock:
            value = getattr(assoc, _ASSOC_ID_ATTR, None)
            if value is None:
                value = next(_assoc_ids)
                setattr(assoc, _ASSOC_ID_ATTR, value)
    return int(value)


# -- ReceivedInstance -----------------------------------------------------------------


class ReceivedInstance:
    """One instance received by C-STORE, in memory or on disk.

    The encoded data set is kept exactly as received; :attr:`dataset` decodes
    it on first access (pixel data stays encoded bytes until you ask pydicom
    for ``pixel_array``). Decoding is CPU work, and :attr:`encoded`,
    :meth:`read` and :meth:`save` read or write files for an instance on disk:
    from the event loop prefer ``await instance.load_dataset()`` (decodes in a
    worker thread) or wrap them in ``anyio.to_thread.run_sync``.

    Attributes:
        sop_class_uid: Affected SOP Class UID of the C-STORE request.
        sop_instance_uid: Affected SOP Instance UID of the C-STORE request.
        transfer_syntax_uid: the transfer syntax of the presentation context used.
        file_meta: the File Meta Information written before the data set
            (decoded on first access from ``encoded_meta``, its bytes).
        patient_id, study_instance_uid, series_instance_uid: from the data set
            header (``None`` when absent).
        header: the top-level header elements that were parsed (at least up
            to Series Instance UID); cheap to read, no pixel data.
        calling_ae: the association requestor's AE title.
        called_ae: the AE title the requestor called.
        remote_ae: the AE title of the peer that sent the instance (the
            calling AE on a Storage SCP, the called AE during a C-GET).
        peer: ``(host, port)`` of the sender.
        association_id: a process-wide unique number of the association.
        path: the Part 10 file, when stored on disk; else ``None``.
        move_originator_ae: Move Originator AE Title, for C-MOVE sub-operations.
        move_originator_message_id: Move Originator Message ID, likewise.
        size: size in bytes of the encoded data set (without File Meta).
    """

    __slots__ = (
        "_dataset",
        "_encoded",
        "_file_meta",
        "_lock",
        "_offset",
        "association_id",
        "called_ae",
        "calling_ae",
        "encoded_meta",
        "header",
        "move_originator_ae",
        "move_originator_message_id",
        "path",
        "patient_id",
        "peer",
        "remote_ae",
        "series_instance_uid",
        "size",
        "sop_class_uid",
        "sop_instance_uid",
        "study_instance_uid",
        "transfer_syntax_uid",
    )

    def __init__(
        self,
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        encoded_meta: bytes,
        header: Dataset,
        calling_ae: str,
        called_ae: str,
        remote_ae: str,
        peer: tuple[str, int],
        association_id: int,
        size: int,
        encoded: bytes | None = None,
        path: Path | None = None,
        data_offset: int = 0,
        move_originator_ae: str | None = None,
        move_originator_message_id: int | None = None,
    ) -> None:
        if encoded is None and path is None:
            raise ValueError("a ReceivedInstance needs its encoded bytes or a path")
        self.sop_class_uid = UID(sop_class_uid)
        self.sop_instance_uid = UID(sop_instance_uid)
        self.transfer_syntax_uid = UID(transfer_syntax_uid)
        self.encoded_meta = encoded_meta
        self.header = header
        self.patient_id: str | None = _text(header, "PatientID")
        self.study_instance_uid: str | None = _text(header, "StudyInstanceUID")
        self.series_instance_uid: str | None = _text(header, "SeriesInstanceUID")
        self.calling_ae = calling_ae
        self.called_ae = called_ae
        self.remote_ae = remote_ae
        self.peer = peer
        self.association_id = association_id
        self.size = size
        self.path = path
        self.move_originator_ae = move_originator_ae
        self.move_originator_message_id = move_originator_message_id
        self._encoded = encoded
        self._offset = data_offset
        self._dataset: FileDataset | None = None
        self._file_meta: FileMetaDataset | None = None
        self._lock = threading.Lock()

    @property
    def file_meta(self) -> FileMetaDataset:
        """The File Meta Information (group 0002) of the Part 10 file."""
        meta = self._file_meta
        if meta is None:
            # encoded_meta starts with the group length element; pydicom reads it all
            raw = read_dataset(io.BytesIO(self.encoded_meta), False, True)
            meta = self._file_meta = FileMetaDataset(raw)
        return meta

    @property
    def in_memory(self) -> bool:
        """Whether the encoded data set is held in memory."""
        return self._encoded is not None

    @property
    def encoded(self) -> bytes:
        """The encoded data set as received (no preamble, no File Meta)."""
        if self._encoded is not None:
            return self._encoded
        assert self.path is not None
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            return f.read()

    @property
    def dataset(self) -> FileDataset:
        """The decoded data set with its File Meta (decoded once, then cached)."""
        ds = self._dataset
        if ds is not None:
            return ds
        with self._lock:
            if self._dataset is None:
                self._dataset = self._decode()
            return self._dataset

    async def load_dataset(self) -> FileDataset:
        """:attr:`dataset`, decoded in a worker thread so the event loop stays free."""
        if self._dataset is not None:
            return self._dataset
        return await anyio.to_thread.run_sync(lambda: self.dataset)

    def _decode(self) -> FileDataset:
        if self._encoded is None:
            assert self.path is not None
            return dcmread(self.path)
        ts = self.transfer_syntax_uid
        data = _inflate(self._encoded) if ts.is_deflated else self._encoded
        ds = read_dataset(io.BytesIO(data), ts.is_implicit_VR, ts.is_little_endian)
        fds = FileDataset(
            "",
            ds,
            preamble=b"\x00" * 128,
            file_meta=self.file_meta,
            is_implicit_VR=ts.is_implicit_VR,
            is_little_endian=ts.is_little_endian,
        )
        return fds

    def read(self) -> bytes:
        """The instance as a DICOM Part 10 file (preamble, File Meta, data set)."""
        if self._encoded is None:
            assert self.path is not None
            return self.path.read_bytes()
        return b"".join((_PREAMBLE, self.encoded_meta, self._encoded))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the instance as a Part 10 file at ``path`` (atomically) and return it."""
        target = Path(path)
        if self._encoded is None:
            assert self.path is not None
            source = self.path

            def write(f: Any) -> None:
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 20)

        else:
            head = _PREAMBLE + self.encoded_meta
            encoded = self._encoded

            def write(f: Any) -> None:
                f.write(head)
                f.write(encoded)

        _atomic_write(target, write, fsync=False)
        return target

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else "memory"
        return (
            f"<ReceivedInstance {self.sop_instance_uid} ({self.sop_class_uid.name}) "
            f"from {self.remote_ae} {self.size} bytes in {where}>"
        )


def _text(ds: Dataset, keyword: str) -> str | None:
    try:
        value = ds.get(keyword)
    except Exception:
        return None
    if value is None or value == "":
        return None
    return str(value)


def _inflate(data: bytes) -> bytes:
    try:
        return zlib.decompress(data, -zlib.MAX_WBITS)
    except zlib.error as exc:
        raise InvalidDataset(f"cannot inflate the deflated data set: {exc}") from exc


# -- reading what pynetdicom received -------------------------------------------------


def _last_tag(keywords: Iterable[str]) -> int:
    tags = [tag_for_keyword(k) for k in keywords]
    return max(t for t in tags if t is not None)


_BASE_LAST_TAG = _last_tag(_BASE_KEYWORDS)


class _Received:
    """What an EVT_C_STORE event carries, read without decoding the data set."""

    __slots__ = (
        "assoc_id",
        "called_ae",
        "calling_ae",
        "data",
        "header",
        "move_ae",
        "move_id",
        "peer",
        "remote_ae",
        "sop_class_uid",
        "sop_instance_uid",
        "transfer_syntax",
    )

    def __init__(self, event: Any, last_tag: int) -> None:
        request = event.request
        assoc = event.assoc
        self.transfer_syntax = UID(event.context.transfer_syntax)
        self.sop_class_uid = UID(request.AffectedSOPClassUID)
        self.sop_instance_uid = UID(request.AffectedSOPInstanceUID)
        data_set = request.DataSet
        self.data: bytes = data_set.getvalue() if data_set is not None else b""
        self.move_ae: str | None = (
            request.MoveOriginatorApplicationEntityTitle or ""
        ).strip() or None
        self.move_id: int | None = request.MoveOriginatorMessageID
        self.assoc_id = association_id(assoc)
        requestor, acceptor = assoc.requestor, assoc.acceptor
        self.calling_ae = str(requestor.ae_title).strip()
        called = getattr(getattr(requestor, "primitive", None), "called_ae_title", None)
        self.called_ae = str(called or acceptor.ae_title).strip()
        remote = requestor if assoc.is_acceptor else acceptor
        self.remote_ae = self.calling_ae if assoc.is_acceptor else self.called_ae
        try:
            self.peer: tuple[str, int] = (str(remote.address), int(remote.port))
        except (ValueError, TypeError):
            self.peer = ("", 0)
        self.header = _read_header(self.data, self.transfer_syntax, last_tag)
        self._check()

    def _check(self) -> None:
        try:
            uid = self.header.get("SOPInstanceUID")
            sop_class = self.header.get("SOPClassUID")
        except Exception as exc:
            raise InvalidDataset(f"the data set header cannot be decoded: {exc}") from exc
        if not uid:
            raise InvalidDataset("the data set has no SOP Instance UID")
        if uid != self.sop_instance_uid:
            LOGGER.warning(
                "data set SOP Instance UID %s differs from the request's %s",
                uid,
                self.sop_instance_uid,
            )
        if sop_class and sop_class != self.sop_class_uid:
            raise InvalidDataset(
                f"data set SOP Class {sop_class} does not match the request's {self.sop_class_uid}",
                status=STATUS_BAD_SOP_CLASS,
            )

    def encoded_meta(self) -> bytes:
        return _encode_meta(
            self.sop_class_uid, self.sop_instance_uid, self.transfer_syntax, self.remote_ae
        )

    def instance(self, meta: bytes, **where: Any) -> ReceivedInstance:
        return ReceivedInstance(
            sop_class_uid=self.sop_class_uid,
            sop_instance_uid=self.sop_instance_uid,
            transfer_syntax_uid=self.transfer_syntax,
            encoded_meta=meta,
            header=self.header,
            calling_ae=self.calling_ae,
            called_ae=self.called_ae,
            remote_ae=self.remote_ae,
            peer=self.peer,
            association_id=self.assoc_id,
            size=len(self.data),
            move_originator_ae=self.move_ae,
            move_originator_message_id=self.move_id,
            **where,
        )


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element (group 0002 has no long-form VRs but OB)."""
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    if vr == b"OB":
        return struct.pack("<HH2s2xI", tag >> 16, tag & 0xFFFF, vr, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def _encode_meta(sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str) -> bytes:
    """The File Meta Information group, encoded (what pydicom would write, quicker)."""
    body = b"".join(
        (
            _element(0x00020001, b"OB", b"\x00\x01"),
            _element(0x00020002, b"UI", sop_class.encode("ascii")),
            _element(0x00020003, b"UI", sop_instance.encode("ascii")),
            _element(0x00020010, b"UI", transfer_syntax.encode("ascii")),
            _element(0x00020012, b"UI", PYNETDICOM_IMPLEMENTATION_UID.encode("ascii")),
            _element(0x00020013, b"SH", PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii")),
            _element(0x00020016, b"AE", source_ae.encode("ascii")) if source_ae else b"",
        )
    )
    return _element(0x00020000, b"UL", struct.pack("<I", len(body))) + body


def _read_header(data: bytes, ts: UID, last_tag: int) -> Dataset:
    """Parse the top-level elements up to ``last_tag``, and nothing after."""
    if not data:
        raise InvalidDataset("the C-STORE request has an empty data set")
    try:
        if ts.is_deflated:
            # Inflate only a prefix: the header sits at the start of the data set.
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            head = inflater.decompress(data, 1 << 16)
            stream = io.BytesIO(head if len(head) < (1 << 16) else _inflate(data))
        else:
            stream = io.BytesIO(data)
        return read_dataset(
            stream,
            ts.is_implicit_VR,
            ts.is_little_endian,
            stop_when=lambda tag, vr, length: tag > last_tag,
        )
    except InvalidDataset:
        raise
    except Exception as exc:
        raise InvalidDataset(f"the data set cannot be parsed: {exc}") from exc


# -- Storage ------------------------------------------------------------------------


class Storage(ABC):
    """Where received instances go. Subclass it to store them elsewhere.

    :meth:`store` runs in pynetdicom's association thread (never on the event
    loop) and may block: a slow store slows the sender, which is the point.
    """

    @abstractmethod
    def store(self, event: Any) -> ReceivedInstance:
        """Store the instance of an ``EVT_C_STORE`` event and describe it.

        Raises:
            InvalidDataset: the data set cannot be understood (``0xC000``/``0xA900``).
            OSError: the instance could not be written (``0xA700``).
        """

    def bind(self, token: EventLoopToken | None) -> Storage:
        """A storage for one server or operation running on the event loop of ``token``.

        Called on the event loop when a server starts or a C-GET begins; the
        default returns ``self``. :class:`CallbackStorage` uses the token to
        run ``async`` callbacks on that loop.
        """
        return self

    def discard(self, instance: ReceivedInstance) -> None:  # noqa: B027 - optional hook
        """Undo :meth:`store` for an instance that will not be acknowledged."""

    def describe(self) -> str:
        """A short description for logs."""
        return type(self).__name__


class MemoryStorage(Storage):
    """Keep each instance's encoded data set in memory (in the ReceivedInstance)."""

    def store(self, event: Any) -> ReceivedInstance:
        """Parse the header and return an in-memory :class:`ReceivedInstance`."""
        received = _Received(event, _BASE_LAST_TAG)
        return received.instance(received.encoded_meta(), encoded=received.data)

    def describe(self) -> str:
        """``"memory"``."""
        return "memory"


_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{i}" for i in range(1, 10)}
    | {f"LPT{i}" for i in range(1, 10)}
)
_MAX_COMPONENT_BYTES = 128


def _safe_component(value: object) -> str:
    """Neutralise a value for use as one path component."""
    if isinstance(value, (MultiValue, list, tuple)):
        text = "_".join(str(v) for v in value)
    else:
        text = "" if value is None else str(value)
    text = _UNSAFE.sub("_", text).strip(" ")
    # ".." anywhere and leading dots (hidden files) become underscores
    text = re.sub(r"^\.+|\.{2,}", lambda m: "_" * len(m.group()), text).rstrip(". ")
    encoded = text.encode("utf-8")
    if len(encoded) > _MAX_COMPONENT_BYTES:
        text = encoded[:_MAX_COMPONENT_BYTES].decode("utf-8", "ignore").rstrip(". ")
    if not text:
        return "UNKNOWN"
    if text.split(".")[0].upper() in _WINDOWS_RESERVED:
        text = "_" + text
    return text


class DiskStorage(Storage):
    """Write each instance as a DICOM Part 10 file under ``root``.

    Args:
        root: the directory files go under (created when needed).
        layout: a :meth:`str.format` template of DICOM keywords giving the
            path relative to ``root``, ``/`` separating directories; a format
            spec works on integer values (``{InstanceNumber:05d}``). Each
            value is neutralised first: path separators, NUL, control and
            reserved characters become ``_``, leading dots become ``_``, an
            empty or missing value becomes ``UNKNOWN``; ``..`` becomes ``__``.
        fsync: flush the file and its directory to stable storage before
            acknowledging (slower, survives power loss).

    The file is written to a hidden temporary file in its target directory and
    renamed into place with :func:`os.replace`: no partial file ever sits under
    a final name, and the temporary file is removed if writing fails. An
    instance received again replaces the earlier file.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        layout: str = "{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm",
        *,
        fsync: bool = False,
    ) -> None:
        self.root = Path(os.path.abspath(root))
        self.layout = layout
        self.fsync = fsync
        self._keywords = _layout_keywords(layout)
        self._parsed = list(string.Formatter().parse(layout))
        self._last_tag = _last_tag([*_BASE_KEYWORDS, *self._keywords])

    def path_for(self, header: Dataset) -> Path:
        """The final path of an instance with these header attributes."""
        pieces: list[str] = []
        for literal, keyword, spec, _conversion in self._parsed:
            pieces.append(literal)
            if keyword is None:
                continue
            try:
                value = header.get(keyword)
            except Exception:
                value = None
            if isinstance(value, int) and dictionary_VR(keyword) in _INT_VRS:
                try:
                    pieces.append(_safe_component(format(int(value), spec or "")))
                    continue
                except ValueError:
                    pass
            text = _safe_component(value)
            if spec:
                with contextlib.suppress(ValueError, TypeError):
                    text = _safe_component(format(text, spec))
            pieces.append(text)
        relative = "".join(pieces)
        parts = [_safe_component(p) for p in relative.split("/") if p not in ("", ".")]
        final = self.root.joinpath(*parts)
        if os.path.commonpath([self.root, final]) != str(self.root) or final == self.root:
            raise InvalidDataset(f"layout puts the instance outside the storage root: {final}")
        return final

    def store(self, event: Any) -> ReceivedInstance:
        """Write the received data set after its File Meta, atomically."""
        received = _Received(event, self._last_tag)
        final = self.path_for(received.header)
        meta = received.encoded_meta()
        head = _PREAMBLE + meta
        data = received.data

        def write(f: Any) -> None:
            f.write(head)
            f.write(data)

        _atomic_write(final, write, fsync=self.fsync)
        return received.instance(meta, path=final, data_offset=len(head))

    def discard(self, instance: ReceivedInstance) -> None:
        """Remove the file written for ``instance``."""
        if instance.path is not None:
            with contextlib.suppress(FileNotFoundError):
                instance.path.unlink()

    def describe(self) -> str:
        """``"disk <root>"``."""
        return f"disk {self.root}"


def _layout_keywords(layout: str) -> list[str]:
    if os.path.isabs(layout) or layout.startswith(("/", "\\")):
        raise ValueError(f"layout {layout!r} must be a relative path")
    keywords: list[str] = []
    sample: dict[str, object] = {}
    for literal, field, _spec, _conv in string.Formatter().parse(layout):
        if any(p == ".." for p in re.split(r"[/\\]", literal)):
            raise ValueError(f"layout {layout!r} must not contain '..'")
        if field is None:
            continue
        if not field or tag_for_keyword(field) is None:
            raise ValueError(f"layout {layout!r}: {field!r} is not a DICOM keyword")
        if field not in keywords:
            keywords.append(field)
            sample[field] = 1 if dictionary_VR(field) in _INT_VRS else "X"
    try:
        layout.format_map(sample)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ValueError(f"layout {layout!r} cannot be formatted: {exc}") from exc
    if "SOPInstanceUID" not in keywords:
        LOGGER.warning(
            "layout %r has no {SOPInstanceUID}: instances may overwrite each other", layout
        )
    return keywords


def _atomic_write(final: Path, write: Callable[[Any], None], *, fsync: bool) -> None:
    """Write via a hidden temporary file in the same directory, then rename."""
    directory = final.parent
    directory.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = directory / f".{final.name}.{secrets.token_hex(4)}.part"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
    try:
        with open(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync and hasattr(os, "O_DIRECTORY"):
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class _SyncCallback(Protocol):
    def __call__(self, instance: ReceivedInstance, /) -> object: ...


class CallbackStorage(Storage):
    """Keep the instance in memory and call ``fn(instance)`` before acknowledging it.

    ``fn`` may be a plain function, run in the association's thread (it may
    block; the sender waits), or an ``async`` function, run on the event loop
    of the server or operation it is bound to. Its return value is ignored.
    If it raises :class:`OSError` the sender gets ``0xA700``, anything else
    ``0xC001``; either way the instance is not acknowledged.
    """

    def __init__(
        self,
        fn: Callable[[ReceivedInstance], Awaitable[object]] | _SyncCallback,
        *,
        _token: EventLoopToken | None = None,
    ) -> None:
        self.fn = fn
        self.is_async = _is_async_callable(fn)
        self._token = _token

    def bind(self, token: EventLoopToken | None) -> CallbackStorage:
        """A copy that runs an async ``fn`` on the event loop of ``token``."""
        return CallbackStorage(self.fn, _token=token)

    def store(self, event: Any) -> ReceivedInstance:
        """Keep the instance in memory, then call ``fn`` with it."""
        received = _Received(event, _BASE_LAST_TAG)
        instance = received.instance(received.encoded_meta(), encoded=received.data)
        if self.is_async:
            if self._token is None:
                raise RuntimeError("an async callback needs a storage bound to an event loop")
            fn = self.fn
            anyio.from_thread.run(_call_async, fn, instance, token=self._token)
        else:
            self.fn(instance)
        return instance

    def describe(self) -> str:
        """``"callback <name>"``."""
        return f"callback {getattr(self.fn, '__qualname__', repr(self.fn))}"


async def _call_async(fn: Any, instance: ReceivedInstance) -> None:
    await fn(instance)


def _is_async_callable(fn: object) -> bool:
    while hasattr(fn, "func") and hasattr(fn, "args"):  # functools.partial
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async __call__ of an object
    )


# -- the C-STORE SCP step -------------------------------------------------------------


def _status(code: int, comment: str | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        # Error Comment is LO: at most 64 characters, no backslash or control characters.
        ds.ErrorComment = re.sub(r"[\x00-\x1f\\]", " ", comment)[:64]
    return ds


def _resource_error(exc: BaseException) -> bool:
    return isinstance(exc, (OSError, MemoryError, DeliveryRefused))


def handle_store(
    event: Any,
    storage: Storage,
    deliver: Callable[[ReceivedInstance], None] | None = None,
    *,
    logger: logging.Logger = LOGGER,
) -> Dataset:
    """Store the instance of an ``EVT_C_STORE`` event, deliver it, return the status.

    The whole C-STORE SCP step, for an ``EVT_C_STORE`` handler: ``storage.store``,
    then ``deliver(instance)`` (hooks, routing to a stream; it may block for
    backpressure). Success is answered only after both returned. A failure in
    ``deliver`` removes what was stored (``storage.discard``). The status
    codes are those of the table in this module's documentation.

    Returns:
        a status Dataset (Status, and Error Comment on failure) for pynetdicom.
    """
    request = event.request
    uid = getattr(request, "AffectedSOPInstanceUID", None)
    try:
        instance = storage.store(event)
    except InvalidDataset as exc:
        logger.warning("C-STORE %s refused (0x%04X): %s", uid, exc.status, exc)
        return _status(exc.status, str(exc))
    except Exception as exc:
        if _resource_error(exc):
            logger.error("C-STORE %s: storage failed: %s", uid, exc)
            return _status(STATUS_OUT_OF_RESOURCES, _describe(exc))
        logger.exception("C-STORE %s: storage callback failed", uid)
        return _status(STATUS_CALLBACK_FAILED, _describe(exc))
    if deliver is not None:
        try:
            deliver(instance)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                storage.discard(instance)
            if not isinstance(exc, Exception):
                raise
            if _resource_error(exc):
                logger.warning("C-STORE %s not delivered: %s", uid, exc)
                return _status(STATUS_OUT_OF_RESOURCES, _describe(exc))
            logger.exception("C-STORE %s: post-store hook failed", uid)
            return _status(STATUS_CALLBACK_FAILED, _describe(exc))
    return _status(STATUS_SUCCESS)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{name}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"
