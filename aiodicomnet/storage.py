"""Where received instances go: :class:`IncomingInstance`, :class:`ReceivedInstance`
and the storage policies.

A C-STORE request received by the :class:`~aiodicomnet.server.StorageServer`
(or the :class:`~aiodicomnet.archive.Archive`), or a C-STORE sub-operation
received on a client's own association during a C-GET, arrives as an
:class:`IncomingInstance`: the data set as received, its File Meta
Information, and who sent it. A :class:`Storage` puts it somewhere and
describes the result as a :class:`ReceivedInstance`; this runs in the
association's thread, before the instance is acknowledged:

* :class:`MemoryStorage` keeps the encoded data set in memory.
* :class:`DiskStorage` writes a DICOM Part 10 file under a root directory,
  laid out by a template such as ``{PatientID}/{StudyInstanceUID}/...``.
* :class:`CallbackStorage` keeps the instance in memory and calls a function
  (plain or ``async``) with it.
* a subclass of :class:`Storage` puts it anywhere else::

      class BucketStorage(Storage):
          def store(self, incoming: IncomingInstance) -> ReceivedInstance:
              bucket.put(f"{incoming.sop_instance_uid}.dcm", incoming.read())
              return incoming.received()

Nothing here decodes pixel data. The encoded data set is kept (or written
after the File Meta Information) byte for byte; before any storage sees it,
it is walked to its end (every element header and length, into sequences and
encapsulated pixel data, without decoding a value) so that a data set cut
short or not DICOM at all is refused, never acknowledged; a deflated data set
is inflated for that walk as a stream, a chunk at a time, and refused once it
inflates past a limit (see :mod:`aiodicomnet._dataset`). Only the few header
attributes needed for naming and routing are decoded.

:func:`store_instance` is the whole C-STORE SCP step (check, store, deliver,
failures mapped to a DIMSE status), shared by the servers and by C-GET.

Status codes (PS3.4 Table B.2-1, named in :mod:`aiodicomnet.status`):

=========  ==============================================================
``0x0000`` stored (and delivered)
``0xA700`` Refused, out of resources: the storage raised :class:`OSError`
           (disk full, quota, permission, I/O error) or
           :class:`MemoryError`; or another instance already holds the
           file name this one would get (:class:`NameCollision`); or the
           instance could not be delivered because its consumer is gone
           or the server is closing (:class:`DeliveryRefused`); or a
           deflated data set inflates past the limit (the data may be
           well formed: it is refused for what it would cost, not
           misunderstood). What was stored is removed.
``0xA900`` Error, data set does not match SOP class: the data set's SOP
           Class UID differs from the request's Affected SOP Class UID.
``0xC000`` Error, cannot understand: the data set is empty, cut short, not
           a DICOM data set, or has no SOP Instance UID.
``0xC001`` Error, cannot understand: the application's callback or a
           post-store hook raised (anything but :class:`OSError`, which
           gives ``0xA700``). What was stored is removed.
=========  ==============================================================
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import inspect
import io
import logging
import os
import re
import shutil
import string
import threading
import zlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from pydicom import __version_info__, dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filereader import read_dataset, read_file_meta_info
from pydicom.multival import MultiValue
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from . import _dataset
from . import status as _status
from ._dimse.bridge import run_in_thread
from ._dimse.portal import LoopPortal
from ._files import atomic_write
from .errors import StorageError

__all__ = [
    "CallbackStorage",
    "DeliveryRefused",
    "DiskStorage",
    "IncomingInstance",
    "InvalidDataset",
    "MemoryStorage",
    "NameCollision",
    "ReceivedInstance",
    "Storage",
    "store_instance",
]

LOGGER = logging.getLogger("aiodicomnet.storage")

_PREAMBLE = b"\x00" * 128 + b"DICM"
#: Implementation Class UID and Version Name written to File Meta by default
#: (the receiving path passes pynetdicom's: the software that received it).
_PYDICOM_IMPLEMENTATION = (PYDICOM_IMPLEMENTATION_UID, f"PYDICOM {'.'.join(__version_info__)}")

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
        status: the C-STORE status to answer (``0xC000``, ``0xA900``, or
            ``0xA700`` for a deflated data set that inflates past the limit).
    """

    def __init__(self, message: str, *, status: int = _status.CANNOT_UNDERSTAND) -> None:
        super().__init__(message)
        self.status = status


class DeliveryRefused(StorageError):
    """A stored instance could not be handed to anyone (consumer gone, server closing)."""


class NameCollision(StorageError):
    """Another instance already holds the file this one would be written to.

    Never resolved by replacing the other one, which was acknowledged: the
    new instance is refused (``0xA700``). It happens when a layout maps two
    instances to one path (one without ``{SOPInstanceUID}``, or a name cut
    by a format spec such as ``{SOPInstanceUID:.8}``).

    Attributes:
        path: the file in question.
        holder: the SOP Instance UID of the instance already there.
    """

    def __init__(self, path: Path, holder: str, incoming: str) -> None:
        super().__init__(f"{path} already holds instance {holder}, not {incoming}")
        self.path = path
        self.holder = holder


def _header_until(keywords: Iterable[str]) -> int:
    tags = [tag_for_keyword(k) for k in keywords]
    return max(t for t in tags if t is not None)


_BASE_LAST_TAG = _header_until(_BASE_KEYWORDS)


# -- IncomingInstance -----------------------------------------------------------------


class IncomingInstance:
    """One instance arriving by C-STORE, before it is stored: what a :class:`Storage` gets.

    Made by the library from the C-STORE request (in the association's
    thread); a storage reads it and returns :meth:`received`. The data set
    has been checked to its end before a storage sees it.

    Attributes:
        sop_class_uid: Affected SOP Class UID of the C-STORE request.
        sop_instance_uid: Affected SOP Instance UID of the C-STORE request.
        transfer_syntax_uid: the transfer syntax of the presentation context used.
        encoded: the data set exactly as received (no preamble, no File
            Meta); deflated if the transfer syntax is. See also :meth:`open`.
        calling_ae: the association requestor's AE title.
        called_ae: the AE title the requestor called.
        remote_ae: the AE title of the peer that sent the instance (the
            calling AE on a Storage SCP, the called AE during a C-GET).
        peer: ``(host, port)`` of the sender.
        association_id: a process-wide unique number of the association
            (instances sent on one association share it).
        message_id: the C-STORE request's Message ID.
        move_originator_ae: Move Originator AE Title, for C-MOVE sub-operations.
        move_originator_message_id: Move Originator Message ID, likewise.
    """

    __slots__ = (
        "_checked",
        "_headers",
        "_implementation",
        "_meta",
        "association_id",
        "called_ae",
        "calling_ae",
        "encoded",
        "message_id",
        "move_originator_ae",
        "move_originator_message_id",
        "peer",
        "remote_ae",
        "sop_class_uid",
        "sop_instance_uid",
        "transfer_syntax_uid",
    )

    def __init__(
        self,
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        encoded: bytes,
        calling_ae: str = "",
        called_ae: str = "",
        remote_ae: str = "",
        peer: tuple[str, int] = ("", 0),
        association_id: int = 0,
        message_id: int | None = None,
        move_originator_ae: str | None = None,
        move_originator_message_id: int | None = None,
        implementation: tuple[str, str] = _PYDICOM_IMPLEMENTATION,
    ) -> None:
        self.sop_class_uid = UID(sop_class_uid)
        self.sop_instance_uid = UID(sop_instance_uid)
        self.transfer_syntax_uid = UID(transfer_syntax_uid)
        self.encoded = encoded
        self.calling_ae = calling_ae
        self.called_ae = called_ae
        self.remote_ae = remote_ae
        self.peer = peer
        self.association_id = association_id
        self.message_id = message_id
        self.move_originator_ae = move_originator_ae
        self.move_originator_message_id = move_originator_message_id
        self._implementation = implementation
        self._checked: _dataset.Checked | None = None
        self._meta: bytes | None = None
        self._headers: dict[int | None, Dataset] = {}

    @property
    def size(self) -> int:
        """Size in bytes of the encoded data set (without File Meta)."""
        return len(self.encoded)

    def open(self) -> BinaryIO:
        """The encoded data set as a readable binary stream."""
        return io.BytesIO(self.encoded)

    @property
    def encoded_meta(self) -> bytes:
        """The File Meta Information (group 0002) to write before the data set, encoded."""
        if self._meta is None:
            self._meta = _dataset.encode_file_meta(
                self.sop_class_uid,
                self.sop_instance_uid,
                self.transfer_syntax_uid,
                self.remote_ae,
                self._implementation,
            )
        return self._meta

    @property
    def file_meta(self) -> FileMetaDataset:
        """The File Meta Information, decoded."""
        return _decode_meta(self.encoded_meta)

    def header(self, *keywords: str) -> Dataset:
        """The data set's top-level elements before Pixel Data, decoded lazily.

        With ``keywords``, parsing stops after the last of them (cheaper when
        only a few attributes are needed). Nothing is ever decoded past the
        header, and pixel data are never read.

        Raises:
            InvalidDataset: the data set cannot be parsed.
        """
        return self._header_until(_header_until(keywords) if keywords else None)

    def _header_until(self, last_tag: int | None) -> Dataset:
        header = self._headers.get(last_tag)
        if header is None:
            checked = self.check()
            ts = self.transfer_syntax_uid
            try:
                header = _dataset.parse_header(
                    checked.header,
                    implicit=ts.is_implicit_VR,
                    little=ts.is_little_endian,
                    last_tag=last_tag,
                )
            except Exception as exc:
                raise InvalidDataset(f"the data set header cannot be parsed: {exc}") from exc
            self._headers[last_tag] = header
        return header

    def check(self) -> _dataset.Checked:
        """Walk the data set to its end without decoding it (once; see the module doc).

        Raises:
            InvalidDataset: empty, cut short, not DICOM (``0xC000``), or a
                deflated data set inflating past the limit (``0xA700``).
        """
        if self._checked is None:
            ts = self.transfer_syntax_uid
            try:
                self._checked = _dataset.check(
                    self.encoded,
                    implicit=ts.is_implicit_VR,
                    little=ts.is_little_endian,
                    deflated=ts.is_deflated,
                )
            except _dataset.TooLarge as exc:
                raise InvalidDataset(str(exc), status=_status.OUT_OF_RESOURCES) from exc
            except _dataset.Malformed as exc:
                raise InvalidDataset(f"the data set cannot be parsed: {exc}") from exc
        return self._checked

    def validate(self) -> None:
        """Check what a C-STORE SCP checks before storing (the library calls it).

        Raises:
            InvalidDataset: the data set cannot be parsed or has no SOP
                Instance UID (``0xC000``), its SOP Class differs from the
                request's (``0xA900``), or it inflates past the limit (``0xA700``).
        """
        header = self._header_until(_BASE_LAST_TAG)
        try:
            uid = header.get("SOPInstanceUID")
            sop_class = header.get("SOPClassUID")
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
                status=_status.DATA_SET_MISMATCH,
            )

    def write_part10(self, f: BinaryIO) -> None:
        """Write the instance as a DICOM Part 10 file to ``f`` (preamble, File Meta, data set)."""
        f.write(_PREAMBLE + self.encoded_meta)
        f.write(self.encoded)

    def read(self) -> bytes:
        """The instance as a DICOM Part 10 file (preamble, File Meta, data set)."""
        return b"".join((_PREAMBLE, self.encoded_meta, self.encoded))

    def received(
        self, path: str | os.PathLike[str] | None = None, *, header: Dataset | None = None
    ) -> ReceivedInstance:
        """The :class:`ReceivedInstance` a :meth:`Storage.store` returns.

        Args:
            path: the Part 10 file the instance was written to, as
                :meth:`write_part10` writes it; ``None`` keeps the encoded
                data set in memory.
            header: the header to carry (default: up to Series Instance UID).
        """
        if header is None:
            header = self._header_until(_BASE_LAST_TAG)
        where: dict[str, Any] = (
            {"encoded": self.encoded}
            if path is None
            else {"path": Path(path), "data_offset": len(_PREAMBLE) + len(self.encoded_meta)}
        )
        return ReceivedInstance(
            sop_class_uid=self.sop_class_uid,
            sop_instance_uid=self.sop_instance_uid,
            transfer_syntax_uid=self.transfer_syntax_uid,
            encoded_meta=self.encoded_meta,
            header=header,
            calling_ae=self.calling_ae,
            called_ae=self.called_ae,
            remote_ae=self.remote_ae,
            peer=self.peer,
            association_id=self.association_id,
            size=self.size,
            move_originator_ae=self.move_originator_ae,
            move_originator_message_id=self.move_originator_message_id,
            **where,
        )

    def __repr__(self) -> str:
        return (
            f"<IncomingInstance {self.sop_instance_uid} ({self.sop_class_uid.name}) "
            f"from {self.remote_ae} {self.size} bytes>"
        )


def _decode_meta(encoded_meta: bytes) -> FileMetaDataset:
    # encoded_meta starts with the group length element; pydicom reads it all
    return FileMetaDataset(read_dataset(io.BytesIO(encoded_meta), False, True))


# -- ReceivedInstance -----------------------------------------------------------------


class ReceivedInstance:
    """One instance received by C-STORE, in memory or on disk.

    The encoded data set is kept exactly as received; :attr:`dataset` decodes
    it on first access (pixel data stays encoded bytes until you ask pydicom
    for ``pixel_array``). Decoding is CPU work, and :attr:`encoded`,
    :meth:`read` and :meth:`save` read or write files for an instance on disk:
    from the event loop prefer ``await instance.load_dataset()`` (decodes in a
    thread of its own), and call the others from a thread.

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

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (a receiver process hands instances to its server): the
        lock and the decoded caches stay behind."""
        state = {name: getattr(self, name) for name in self.__slots__}
        state.update(_lock=None, _dataset=None, _file_meta=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)
        self._lock = threading.Lock()

    @property
    def file_meta(self) -> FileMetaDataset:
        """The File Meta Information (group 0002) of the Part 10 file."""
        meta = self._file_meta
        if meta is None:
            meta = self._file_meta = _decode_meta(self.encoded_meta)
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
        return await run_in_thread(lambda: self.dataset)

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

            def write(f: BinaryIO) -> None:
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 20)

        else:
            head = _PREAMBLE + self.encoded_meta
            encoded = self._encoded

            def write(f: BinaryIO) -> None:
                f.write(head)
                f.write(encoded)

        atomic_write(target, write)
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
    """Inflate a deflated data set (already walked: it fits within the limit)."""
    try:
        return zlib.decompress(data, -zlib.MAX_WBITS)
    except zlib.error as exc:
        raise InvalidDataset(f"cannot inflate the deflated data set: {exc}") from exc


# -- Storage ------------------------------------------------------------------------


class Storage(ABC):
    """Where received instances go. Subclass it to store them elsewhere.

    :meth:`store` runs in the association's thread (never on the event loop)
    and may block: a slow store slows the sender, which is the point. It gets
    an :class:`IncomingInstance` whose data set was already checked to its
    end, and returns :meth:`IncomingInstance.received` (with the file it
    wrote, if any). The instance is acknowledged only after it returns.
    """

    @abstractmethod
    def store(self, incoming: IncomingInstance) -> ReceivedInstance:
        """Store ``incoming`` and describe where it went.

        Raises:
            InvalidDataset: the data set cannot be understood (``0xC000``/``0xA900``).
            OSError: the instance could not be written (``0xA700``).
            NameCollision: another instance holds its name (``0xA700``).
        """

    def bind(self) -> Storage:
        """The storage to use for one server or C-GET; called on its event loop as it starts.

        The default returns ``self``. :class:`CallbackStorage` returns a copy
        that can run an ``async`` callback on that event loop.
        """
        return self

    def discard(self, instance: ReceivedInstance) -> None:  # noqa: B027 - optional hook
        """Undo :meth:`store` for an instance that will not be acknowledged."""

    def describe(self) -> str:
        """A short description for logs."""
        return type(self).__name__


class MemoryStorage(Storage):
    """Keep each instance's encoded data set in memory (in the ReceivedInstance)."""

    def store(self, incoming: IncomingInstance) -> ReceivedInstance:
        """Return an in-memory :class:`ReceivedInstance`."""
        return incoming.received()

    def describe(self) -> str:
        """``"memory"``."""
        return "memory"


# -- file names -----------------------------------------------------------------------

# Characters never kept in a name: path separators, reserved on Windows, control
# characters, and "~", which marks the hash suffix (so that no kept value can look
# like a hashed one).
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|~]')
_UID_TEXT = re.compile(r"[0-9.]{1,64}")
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{i}" for i in range(1, 10)}
    | {f"LPT{i}" for i in range(1, 10)}
)
_MAX_KEPT_BYTES = 96  # longer values are cut and hashed: name components stay < 128 bytes
_MISSING = "UNKNOWN"


def _value_text(value: object) -> str:
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(str(v) for v in value)  # "\\" is unsafe: multi-values get hashed
    return "" if value is None else str(value)


def _kept_as_is(text: str, vr: str) -> bool:
    """Whether ``text`` can name a file or directory as it is, on every platform."""
    if vr == "UI":
        # Digits and dots only: a conformant UID (PS3.5 9.1), and never two that
        # differ by case only, so also safe on case-insensitive file systems.
        return bool(_UID_TEXT.fullmatch(text)) and not text.startswith(".") and ".." not in text
    return (
        text != _MISSING
        and not _UNSAFE.search(text)
        and text == text.strip(" ")
        and not text.startswith(".")
        and not text.endswith(".")
        and ".." not in text
        and text.split(".")[0].upper() not in _WINDOWS_RESERVED
        and len(text.encode("utf-8", "surrogatepass")) <= _MAX_KEPT_BYTES
    )


def _cleaned(text: str) -> str:
    """``text`` with what cannot be in a name replaced by ``_``, cut to a length."""
    text = _UNSAFE.sub("_", text).strip(" ")
    text = re.sub(r"^\.+|\.{2,}", lambda m: "_" * len(m.group()), text).rstrip(". ")
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) > _MAX_KEPT_BYTES:
        text = encoded[:_MAX_KEPT_BYTES].decode("utf-8", "ignore").rstrip(". ")
    if text.split(".")[0].upper() in _WINDOWS_RESERVED:
        text = "_" + text
    return text


def _name(value: object, vr: str = "") -> str:
    """A value as (part of) a path component, injectively.

    A value that can stand as it is stays as it is (every conformant UID does);
    any other one is cleaned *and* gets ``~`` and 24 hex digits of the SHA-256
    of the original, so two values never share a name: ``1.2/3`` gives
    ``1.2_3~…`` while ``1.2_3`` stays ``1.2_3``; ``..`` gives ``__~…`` while
    ``__`` stays ``__``. No kept value contains ``~``. A missing or empty
    value gives ``UNKNOWN``.
    """
    text = _value_text(value)
    if text == "":
        return _MISSING
    if _kept_as_is(text, vr):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return f"{_cleaned(text)}~{digest}"


def _holder(path: Path) -> str | None:
    """The SOP Instance UID in the File Meta of the file at ``path``; None if no file.

    ``""`` for a file that cannot be read as DICOM (not one of ours: ours are
    always complete).
    """
    try:
        meta = read_file_meta_info(path)
    except FileNotFoundError:
        return None
    except Exception:
        return ""
    return str(meta.get("MediaStorageSOPInstanceUID", "")).rstrip("\0 ")


# One lock for every DiskStorage of the process: "is the name free, then take it"
# must be one step, or two associations could both find a name free.
_NAMES = threading.Lock()


def commit_instance(sop_instance_uid: str) -> Callable[[Path, Path], None]:
    """An :func:`~aiodicomnet._files.atomic_write` commit that never replaces another instance.

    The finished file takes the name if the name is free, or holds the same
    instance (received again: it replaces its earlier copy), or holds a file
    that is not DICOM; otherwise :class:`NameCollision` is raised and the
    instance already there stays.
    """

    def commit(tmp: Path, final: Path) -> None:
        with _NAMES:
            holder = _holder(final)
            if holder and holder != sop_instance_uid:
                raise NameCollision(final, holder, sop_instance_uid)
            if holder == "":
                LOGGER.warning("replacing %s, which is not a DICOM file", final)
            os.replace(tmp, final)

    return commit


class DiskStorage(Storage):
    """Write each instance as a DICOM Part 10 file under ``root``.

    Args:
        root: the directory files go under (created when needed).
        layout: a :meth:`str.format` template of DICOM keywords giving the
            path relative to ``root``, ``/`` separating directories; a format
            spec works on integer values (``{InstanceNumber:05d}``).
        fsync: flush the file and its directory to stable storage before
            acknowledging (slower, survives power loss).

    Names are injective: two different values never give the same name, so
    two instances never share a file. A value that can name a file as it is
    stays as it is (every conformant UID does); any other value (path
    separators, NUL, control or reserved characters, leading dots, ``..``,
    ``~``, a name Windows reserves, more than 96 bytes, a UID with other
    characters than digits and dots) is cleaned (``_`` for what cannot stay)
    and gets ``~`` and 24 hex digits of a SHA-256 of the original: ``..``
    becomes ``__~3c0f…``, while ``__`` stays ``__``. A missing or empty value
    becomes ``UNKNOWN``.

    The file is written to a hidden temporary file in its target directory and
    renamed into place: no partial file ever sits under a final name, and the
    temporary file is removed if writing fails. An instance received again
    replaces its earlier file; a *different* instance is never written over
    one already stored: it is refused (:class:`NameCollision`, ``0xA700``),
    as happens when the layout itself maps two instances to one path (no
    ``{SOPInstanceUID}``).
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
        self._last_tag: int | None = _header_until([*_BASE_KEYWORDS, *self._keywords])

    def path_for(self, header: Dataset) -> Path:
        """The final path of an instance with these header attributes."""
        pieces: list[str] = []
        for literal, keyword, spec, _conversion in self._parsed:
            pieces.append(literal)
            if keyword is None:
                continue
            pieces.append(self._piece(header, keyword, spec or ""))
        parts = [p for p in "".join(pieces).split("/") if p not in ("", ".")]
        final = self.root.joinpath(*parts)
        if (
            ".." in parts
            or os.path.commonpath([self.root, final]) != str(self.root)
            or final == self.root
        ):
            raise InvalidDataset(f"layout puts the instance outside the storage root: {final}")
        return final

    @staticmethod
    def _piece(header: Dataset, keyword: str, spec: str) -> str:
        try:
            value = header.get(keyword)
        except Exception:
            value = None
        vr = dictionary_VR(keyword)
        if isinstance(value, int) and vr in _INT_VRS:
            with contextlib.suppress(ValueError):
                return _name(format(int(value), spec))
        if spec and value not in (None, ""):
            with contextlib.suppress(ValueError, TypeError):
                return _name(format(_value_text(value), spec), vr)
        return _name(value, vr)

    def store(self, incoming: IncomingInstance) -> ReceivedInstance:
        """Write the received data set after its File Meta, atomically, under a name of its own."""
        header = incoming._header_until(self._last_tag)
        final = self.path_for(header)
        atomic_write(
            final,
            incoming.write_part10,
            fsync=self.fsync,
            commit=commit_instance(incoming.sop_instance_uid),
        )
        return incoming.received(final, header=header)

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
            "layout %r has no {SOPInstanceUID}: instances that would share a file are refused",
            layout,
        )
    return keywords


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

    def __init__(self, fn: Callable[[ReceivedInstance], Awaitable[object]] | _SyncCallback) -> None:
        self.fn = fn
        self.is_async = _is_async_callable(fn)
        self._portal: LoopPortal | None = None

    def bind(self) -> CallbackStorage:
        """A copy that runs an async ``fn`` on the running event loop."""
        bound = CallbackStorage(self.fn)
        bound._portal = LoopPortal()
        return bound

    def store(self, incoming: IncomingInstance) -> ReceivedInstance:
        """Keep the instance in memory, then call ``fn`` with it."""
        instance = incoming.received()
        if self.is_async:
            if self._portal is None:
                raise RuntimeError("an async callback needs a storage bound to an event loop")
            self._portal.run(_call_async, self.fn, instance)
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


def _resource_error(exc: BaseException) -> bool:
    return isinstance(exc, (OSError, MemoryError, DeliveryRefused, NameCollision))


def store_instance(
    incoming: IncomingInstance,
    storage: Storage,
    deliver: Callable[[ReceivedInstance], None] | None = None,
    *,
    logger: logging.Logger = LOGGER,
) -> Dataset:
    """Check, store and deliver one incoming instance; return the C-STORE status to answer.

    The whole C-STORE SCP step: :meth:`IncomingInstance.validate` (the data
    set walked to its end), ``storage.store``, then ``deliver(instance)``
    (hooks, routing to a stream; it may block for backpressure). Success is
    answered only after all three returned. A failure in ``deliver`` removes
    what was stored (``storage.discard``). The status codes are those of the
    table in this module's documentation.

    Returns:
        a status Dataset (Status, and Error Comment on failure).
    """
    uid = incoming.sop_instance_uid
    try:
        incoming.validate()
        instance = storage.store(incoming)
    except InvalidDataset as exc:
        logger.warning("C-STORE %s refused (0x%04X): %s", uid, exc.status, exc)
        return _status.status_dataset(exc.status, str(exc))
    except Exception as exc:
        if _resource_error(exc):
            logger.error("C-STORE %s: storage failed: %s", uid, exc)
            return _status.status_dataset(_status.OUT_OF_RESOURCES, _describe(exc))
        logger.exception("C-STORE %s: storage callback failed", uid)
        return _status.status_dataset(_status.CALLBACK_FAILED, _describe(exc))
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
                return _status.status_dataset(_status.OUT_OF_RESOURCES, _describe(exc))
            logger.exception("C-STORE %s: post-store hook failed", uid)
            return _status.status_dataset(_status.CALLBACK_FAILED, _describe(exc))
    return _status.status_dataset(_status.SUCCESS)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{name}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"
