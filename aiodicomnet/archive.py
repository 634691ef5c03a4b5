"""An embedded Query/Retrieve SCP: :class:`Archive`.

::

    async with Archive("ARCHIVE", "data/archive", port=11112,
                       destinations={"VIEWER": ("127.0.0.1", 11113)}) as archive:
        await archive.add(["study1/", "mask.dcm"])      # import files without the network
        print(await archive.count(), archive.node)

An :class:`Archive` is a :class:`~aiodicomnet.server.StorageServer` that keeps
what it receives: every instance is written under ``directory/"files"``
(:class:`~aiodicomnet.storage.DiskStorage`) and indexed in the SQLite database
``directory/"index.sqlite"`` before its C-STORE is acknowledged. It answers

* C-FIND in the Patient Root and Study Root models, at every level (matching
  as documented in :mod:`aiodicomnet._index`: PS3.4 C.2.2.2, PN
  case-insensitive like Orthanc, relational keys above the query level);
* C-MOVE to the AE titles of its ``destinations`` table (an unknown
  destination gets ``0xA801`` "Refused: Move destination unknown"); the
  C-STORE sub-operations carry the Move Originator AE Title and Message ID;
* C-GET, sending on the requestor's own association (the requestor must have
  proposed the storage SOP classes with the SCP role).

C-MOVE and C-GET read each file from disk when its sub-operation comes, so a
large study never sits in memory; a file gone missing (or unreadable) counts
as a failed sub-operation and is listed in the Failed SOP Instance UID List.
A C-CANCEL is honoured between two responses (``0xFE00``). A C-MOVE/C-GET
identifier must carry the unique key of its level (for instance
StudyInstanceUID at STUDY level, possibly a list of UIDs); without it a C-GET
fails with ``0xA900`` and a C-MOVE with ``0xC514`` (pynetdicom's "unable to
process": the first answer of a C-MOVE handler can only be the destination).

Everything blocking (SQLite, files) runs in the association threads or in
worker threads, never on the event loop. The same directory reopened later
gives the same archive.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import ssl
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import build_context, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from . import status as _status
from . import transfer_syntaxes as _ts
from ._dimse import contexts as _cx
from ._dimse.association import ReportSender, commitment_report
from ._dimse.bridge import run_in_thread
from ._dimse.patches import CONN_OPEN_HANDLER, move_originator_handler
from ._dimse.transcode import for_contexts
from ._files import atomic_write
from ._index import Counts, IdentifierError, Index, IndexedInstance
from .commitment import STORAGE_COMMITMENT

if TYPE_CHECKING:
    from .archive_web import DicomWebServer
from .errors import StorageError, TranscodeError
from .mpps import MPPS_SOP_CLASS
from .nodes import Node, validate_ae_title
from .server import StorageServer
from .status import status_dataset
from .storage import DiskStorage, ReceivedInstance, commit_instance

__all__ = ["DEFAULT_LAYOUT", "Archive", "Counts"]

LOGGER = logging.getLogger("aiodicomnet.archive")

#: Where the archive puts each file, under ``directory/"files"``.
DEFAULT_LAYOUT = "{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"

_FIND_MODELS = {
    PatientRootQueryRetrieveInformationModelFind: "PATIENT",
    StudyRootQueryRetrieveInformationModelFind: "STUDY",
}
_MOVE_MODELS = {
    PatientRootQueryRetrieveInformationModelMove: "PATIENT",
    StudyRootQueryRetrieveInformationModelMove: "STUDY",
}
_GET_MODELS = {
    PatientRootQueryRetrieveInformationModelGet: "PATIENT",
    StudyRootQueryRetrieveInformationModelGet: "STUDY",
}
_NATIVE = frozenset(_ts.NATIVE)
_MAX_CONTEXTS = 128
_IMPORT_BATCH = 64

ImportItem = str | os.PathLike[str] | Dataset


def _tls_args(context: ssl.SSLContext | None, host: str) -> tuple[ssl.SSLContext, str] | None:
    """pynetdicom's ``tls_args`` for a sub-association: the context and the host to check."""
    return None if context is None else (context, host)


def _address(value: tuple[str, int] | Node) -> tuple[str, int]:
    if isinstance(value, Node):
        return value.address
    host, port = value
    if not isinstance(host, str) or isinstance(port, bool) or not isinstance(port, int):
        raise ValueError(f"a move destination is (host, port), not {value!r}")
    if not 1 <= port <= 65535:
        raise ValueError(f"move destination port {port} is outside 1-65535")
    return host, port


def _sub_operation_contexts(instances: Iterable[IndexedInstance]) -> list[PresentationContext]:
    """Presentation contexts to propose for C-STORE sub-operations of these instances.

    So that each can be sent as it is held: per SOP class, one native context
    (Explicit and Implicit VR Little Endian, then any other native syntax
    held: we convert between them) and one context per compressed syntax
    held. Then, as room remains in the 128 contexts, a native context for the
    classes held only compressed, to decompress to if the destination accepts
    none of their syntaxes (:mod:`._dimse.transcode`).
    """
    by_class: dict[str, list[str]] = {}
    for inst in instances:
        syntaxes = by_class.setdefault(inst.sop_class_uid, [])
        if inst.transfer_syntax_uid not in syntaxes:
            syntaxes.append(inst.transfer_syntax_uid)
    contexts: list[PresentationContext] = []
    fallbacks: list[PresentationContext] = []
    for sop_class, syntaxes in by_class.items():
        native = [ts for ts in syntaxes if UID(ts) in _NATIVE]
        offered: list[str | UID] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        offered += [ts for ts in native if ts not in offered]
        (contexts if native else fallbacks).append(build_context(sop_class, offered))
        contexts.extend(build_context(sop_class, [ts]) for ts in syntaxes if ts not in native)
    if len(contexts) > _MAX_CONTEXTS:
        LOGGER.warning(
            "%d presentation contexts needed, only %d can be proposed: the rest will fail",
            len(contexts),
            _MAX_CONTEXTS,
        )
    return [*contexts, *fallbacks][:_MAX_CONTEXTS]


class _IndexedStorage(DiskStorage):
    """The archive's files: a :class:`DiskStorage` whose instances carry their whole header.

    Every top-level element before Pixel Data is parsed when the instance
    arrives (from the bytes received, inflated as a stream if deflated), so
    indexing it needs no second read of the file.
    """

    def __init__(self, root: Path, layout: str, *, fsync: bool) -> None:
        super().__init__(root, layout, fsync=fsync)
        self._last_tag = None


def _load(inst: IndexedInstance, contexts: Iterable[Any]) -> Dataset:
    """Read one stored instance for a C-STORE sub-operation, as the peer can take it.

    ``contexts`` are the presentation contexts accepted on the association
    that carries the sub-operation; the instance is converted when its own
    transfer syntax is not among them (:func:`._dimse.transcode.for_contexts`:
    between native syntaxes, or decompressed when nothing else was accepted).

    If the file cannot be read or converted, return a stand-in without File
    Meta Information: pynetdicom then fails that sub-operation (it cannot pick
    a presentation context) and lists its SOP Instance UID as failed; the
    reason is logged (logger ``aiodicomnet.archive``).
    """
    try:
        return for_contexts(dcmread(inst.path), contexts)
    except TranscodeError as exc:
        LOGGER.error("cannot send %s: %s", inst.sop_instance_uid, exc.message)
    except Exception as exc:
        LOGGER.error("cannot read %s for %s: %s", inst.path, inst.sop_instance_uid, exc)
    stand_in = Dataset()
    stand_in.SOPClassUID = inst.sop_class_uid
    stand_in.SOPInstanceUID = inst.sop_instance_uid
    return stand_in


class Archive(StorageServer):
    """A Storage SCP that keeps, indexes and serves what it receives (Q/R SCP).

    Args:
        ae_title: our AE title.
        directory: the archive's home: files under ``directory/"files"``, the
            index in ``directory/"index.sqlite"`` (created when missing).
        host, port: where to listen (port 0 picks a free one).
        destinations: C-MOVE destinations, AE title -> ``(host, port)`` (or a
            :class:`~aiodicomnet.nodes.Node`, whose ``tls`` context, if any,
            its sub-associations use); also :meth:`add_destination`.
        layout: the file layout under ``files`` (see :class:`~.storage.DiskStorage`).
        fsync: flush each received file to stable storage before acknowledging it.
        **server_kwargs: the other :class:`~aiodicomnet.server.StorageServer`
            arguments (``allowed_calling_aets``, ``timeouts``, ...).
            ``stream`` defaults to ``False``: received instances are stored
            and acknowledged without waiting for a consumer; pass
            ``stream=True`` to also read them with ``async for``.
    """

    def __init__(
        self,
        ae_title: str,
        directory: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        destinations: Mapping[str, tuple[str, int] | Node] | None = None,
        layout: str = DEFAULT_LAYOUT,
        fsync: bool = False,
        **server_kwargs: Any,
    ) -> None:
        if "storage" in server_kwargs:
            raise TypeError("an Archive stores into its own directory; do not pass storage")
        server_kwargs.setdefault("stream", False)
        self.directory = Path(os.path.abspath(directory))
        self.disk: DiskStorage = _IndexedStorage(self.directory / "files", layout, fsync=fsync)
        super().__init__(ae_title, host, port, storage=self.disk, **server_kwargs)
        self.destinations: dict[str, tuple[str, int]] = {}
        #: The TLS context of each destination reached over TLS (AE title -> context).
        self.destination_tls: dict[str, ssl.SSLContext] = {}
        for aet, address in (destinations or {}).items():
            self.add_destination(aet, address)
        self._index: Index | None = None
        self._index_lock = threading.Lock()
        # What is held, per SOP class and transfer syntax, and the accepted
        # storage contexts whose order follows it (see _prefer_held).
        self._held: dict[str, Counter[str]] = {}
        self._accepting: dict[str, PresentationContext] = {}
        self._held_lock = threading.Lock()
        # A C-MOVE's sub-association, under the requestor's association (see _sub_operations).
        self._move_carriers: dict[Any, list[Any]] = {}
        # Storage Commitment results, each sent on an association of its own.
        self._reporter = ReportSender(self.ae_title, self.timeouts)
        # Modality Performed Procedure Steps received (N-CREATE, N-SET), by SOP Instance UID.
        self._steps: dict[str, Dataset] = {}
        self._steps_lock = threading.Lock()

    @property
    def index_path(self) -> Path:
        """The SQLite index file."""
        return self.directory / "index.sqlite"

    def add_destination(self, ae_title: str, address: tuple[str, int] | Node) -> None:
        """Make ``ae_title`` a C-MOVE destination at ``(host, port)`` (takes effect at once).

        A :class:`~aiodicomnet.nodes.Node` with ``tls`` makes the sub-associations
        to it use DICOM over TLS with that context.
        """
        aet = validate_ae_title(ae_title)
        self.destinations[aet] = _address(address)
        tls = address.tls if isinstance(address, Node) else None
        if tls is None:
            self.destination_tls.pop(aet, None)
        else:
            self.destination_tls[aet] = tls

    # -- lifecycle ---------------------------------------------------------------

    def _open_index(self) -> Index:
        with self._index_lock:
            if self._index is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._index = Index(self.index_path)
            return self._index

    def close(self) -> None:
        """Close the index (blocking). ``async with`` does it on exit; call this
        only after using :meth:`add_sync` without entering the archive."""
        with self._index_lock:
            index, self._index = self._index, None
        if index is not None:
            index.close()

    async def __aenter__(self) -> Archive:
        await run_in_thread(self._open_index)
        try:
            await super().__aenter__()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await run_in_thread(self.close)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await super().__aexit__(exc_type, exc, tb)
        finally:
            with anyio.CancelScope(shield=True):
                await run_in_thread(self._reporter.join)
                await run_in_thread(self.close)

    # -- async API -----------------------------------------------------------------

    async def add(self, items: ImportItem | Iterable[ImportItem]) -> list[str]:
        """Import files, directories (recursively) and datasets without the network.

        Each instance is written into the archive's storage and indexed, in a
        worker thread, in batches (cancelling stops after the current batch).
        Files found in directories that are not DICOM are skipped (logged).

        Returns:
            the SOP Instance UIDs imported, in order.

        Raises:
            StorageError: an explicitly named file is not DICOM or lacks the
                UIDs the index needs, or writing failed.
        """
        pending = _expand(items)
        imported: list[str] = []
        while True:
            batch, done = await run_in_thread(self._import_batch, pending)
            imported.extend(batch)
            if done:
                return imported

    async def count(self, level: str = "IMAGE") -> int:
        """How many patients, studies, series or instances (``level``) the archive holds."""
        counts = await self.counts()
        return {
            "PATIENT": counts.patients,
            "STUDY": counts.studies,
            "SERIES": counts.series,
            "IMAGE": counts.instances,
        }[level.upper()]

    async def counts(self) -> Counts:
        """Numbers of patients, studies, series and instances."""
        return await run_in_thread(lambda: self._open_index().counts())

    async def find(self, identifier: Dataset, model: str = "STUDY") -> list[Dataset]:
        """Answer a C-FIND identifier locally (``model``: ``"PATIENT"`` or ``"STUDY"``).

        Raises:
            IdentifierError: the identifier has no valid Query/Retrieve Level.
        """

        def run() -> list[Dataset]:
            index = self._open_index()
            return list(index.find(identifier, model.upper(), retrieve_ae_title=self.ae_title))

        return await run_in_thread(run)

    async def instances(self, identifier: Dataset, model: str = "STUDY") -> list[IndexedInstance]:
        """The instances a C-MOVE/C-GET identifier selects (files, UIDs, transfer syntaxes).

        Raises:
            IdentifierError: no valid level, or no unique key at that level.
        """
        return await run_in_thread(lambda: self._open_index().retrieve(identifier, model.upper()))

    def dicomweb(
        self, host: str = "127.0.0.1", port: int = 0
    ) -> contextlib.AbstractAsyncContextManager[DicomWebServer]:
        """Serve this archive as DICOMweb too (QIDO-RS, WADO-RS, STOW-RS) while in
        ``async with archive.dicomweb() as web:``; see :mod:`aiodicomnet.archive_web`
        (needs hypercorn: ``pip install aiodicomnet[web]``)."""
        from .archive_web import serve

        return serve(self, host, port)

    def add_sync(self, items: ImportItem | Iterable[ImportItem]) -> list[str]:
        """:meth:`add`, blocking: for scripts and tests (never on the event loop)."""
        pending = _expand(items)
        imported: list[str] = []
        while True:
            batch, done = self._import_batch(pending)
            imported.extend(batch)
            if done:
                return imported

    # -- import --------------------------------------------------------------------

    def _import_batch(self, pending: Iterator[tuple[ImportItem, bool]]) -> tuple[list[str], bool]:
        index = self._open_index()
        rows: list[tuple[Dataset, str | os.PathLike[str], int | None, str | None, str | None]] = []
        done = False
        while len(rows) < _IMPORT_BATCH:
            try:
                item, explicit = next(pending)
            except StopIteration:
                done = True
                break
            try:
                header, path = self._write(item)
            except Exception as exc:
                if explicit:
                    raise StorageError(f"cannot import {_describe_item(item)}: {exc}") from exc
                LOGGER.warning("skipping %s: %s", _describe_item(item), exc)
                continue
            rows.append((header, path, None, None, None))
        if not rows:
            return [], done
        try:
            previous = index.add_many(rows)
        except ValueError as exc:
            raise StorageError(f"cannot index: {exc}") from exc
        for row, old in zip(rows, previous, strict=True):
            if old is not None and os.path.abspath(old) != os.path.abspath(row[1]):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(old)
            header = row[0]
            self._prefer_held(str(header.SOPClassUID), _syntax_of(header))
        return [str(header.SOPInstanceUID) for header, *_ in rows], done

    def _write(self, item: ImportItem) -> tuple[Dataset, Path]:
        """Put one item into storage; return its header (no pixel data) and path."""
        if isinstance(item, Dataset):
            ds = item
            meta = getattr(ds, "file_meta", None)
            if meta is None or "TransferSyntaxUID" not in meta:
                ds = copy.copy(ds)
                ds.file_meta = FileMetaDataset(copy.copy(meta)) if meta else FileMetaDataset()
                ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
                raise ValueError("the dataset has no SOP Class UID or SOP Instance UID")
            final = self.disk.path_for(ds)
            _atomic(final, ds.SOPInstanceUID, lambda f: dcmwrite(f, ds, enforce_file_format=True))
            return ds, final
        source = Path(item)
        header = dcmread(source, stop_before_pixels=True)
        if "SOPInstanceUID" not in header or "SOPClassUID" not in header:
            raise ValueError("not a DICOM instance (no SOP Class/Instance UID)")
        final = self.disk.path_for(header)
        has_meta = "TransferSyntaxUID" in getattr(header, "file_meta", {})
        if has_meta and getattr(header, "preamble", None) is not None:
            if os.path.abspath(source) != os.path.abspath(final):
                _atomic(final, header.SOPInstanceUID, lambda f: _copy_file(source, f))
        else:
            full = dcmread(source)
            if not has_meta:
                full.file_meta = FileMetaDataset()
                full.file_meta.TransferSyntaxUID = (
                    ImplicitVRLittleEndian if full.is_implicit_VR else ExplicitVRLittleEndian
                )
            full.file_meta.setdefault("ImplementationClassUID", PYDICOM_IMPLEMENTATION_UID)
            _atomic(
                final, full.SOPInstanceUID, lambda f: dcmwrite(f, full, enforce_file_format=True)
            )
            header = full
        return header, final

    # -- StorageServer hooks -----------------------------------------------------

    def _contexts(self) -> list[PresentationContext]:
        """The storage contexts (with the SCU role granted for C-GET) plus Q/R.

        Each storage context lists the transfer syntaxes held for its SOP
        class first (:func:`._dimse.contexts.accept_order`), and follows what
        arrives later: a C-GET requestor that proposes the held compressed
        syntax beside native ones in one context (DCMTK ``getscu +xs``) gets
        it, and the files are sent as they are.
        """
        contexts = super()._contexts()
        held = _held_syntaxes(self._open_index())
        with self._held_lock:
            self._held = held
            self._accepting = {}
            for cx in contexts:
                if cx.abstract_syntax == Verification:
                    continue
                # Accept whatever roles the requestor proposes: the C-STORE SCU
                # role (plain C-STORE to us) and the SCP role (C-GET).
                cx.scu_role = True
                cx.scp_role = True
                sop_class = str(cx.abstract_syntax)
                self._accepting[sop_class] = cx
                if sop_class in held:
                    _cx.set_transfer_syntaxes(cx, _cx.accept_order(held[sop_class], _ts.STORAGE))
        for uid in (*_FIND_MODELS, *_MOVE_MODELS, *_GET_MODELS, MPPS_SOP_CLASS):
            contexts.append(build_context(uid, list(_ts.NATIVE)))
        return contexts

    def _prefer_held(self, sop_class: str, transfer_syntax: str) -> None:
        """Count one more instance held; reorder its class's accepted syntaxes if that changes."""
        with self._held_lock:
            counts = self._held.setdefault(sop_class, Counter())
            before = _cx.accept_order(counts, _ts.STORAGE)
            counts[transfer_syntax] += 1
            after = _cx.accept_order(counts, _ts.STORAGE)
            cx = self._accepting.get(sop_class)
            if cx is not None and after != before:
                _cx.set_transfer_syntaxes(cx, after)

    def _handlers(self) -> list[tuple[Any, Callable[..., Any]]]:
        return [
            *super()._handlers(),
            (evt.EVT_C_FIND, self._on_c_find),
            (evt.EVT_C_MOVE, self._on_c_move),
            (evt.EVT_C_GET, self._on_c_get),
            (evt.EVT_N_ACTION, self._on_n_action),
            (evt.EVT_N_CREATE, self._on_n_create),
            (evt.EVT_N_SET, self._on_n_set),
        ]

    def _make_ae(self) -> Any:
        ae = super()._make_ae()
        # The AE also opens the C-MOVE sub-associations.
        ae.connection_timeout = self.timeouts.connect
        return ae

    def _on_stored(self, instance: ReceivedInstance) -> None:
        """Index a received instance (association thread, before the C-STORE response)."""
        index = self._open_index()
        path = instance.path
        if path is None:  # pragma: no cover - DiskStorage always gives a path
            raise StorageError("the archive's storage returned no file")
        try:
            old = index.add(
                instance.header,
                path,
                size=path.stat().st_size,
                transfer_syntax_uid=str(instance.transfer_syntax_uid),
                calling_ae=instance.calling_ae,
            )
        except Exception:
            # The file is about to be removed: do not leave the index pointing at it.
            with contextlib.suppress(Exception):
                index.remove(str(instance.sop_instance_uid))
            raise
        if old is not None and os.path.abspath(old) != os.path.abspath(path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(old)
        self._prefer_held(str(instance.sop_class_uid), str(instance.transfer_syntax_uid))

    def _on_discarded(self, instance: ReceivedInstance) -> None:
        """The file of an indexed instance was removed: forget it."""
        if self._index is not None:
            self._index.remove(str(instance.sop_instance_uid))

    # -- Q/R handlers (association threads) ------------------------------------------

    def _on_c_find(self, event: Any) -> Iterator[tuple[Any, Dataset | None]]:
        model = _FIND_MODELS.get(str(event.request.AffectedSOPClassUID), "STUDY")
        try:
            responses = self._open_index().find(
                event.identifier, model, retrieve_ae_title=self.ae_title
            )
        except IdentifierError as exc:
            LOGGER.warning("C-FIND refused (0x%04X): %s", exc.status, exc)
            yield status_dataset(exc.status, str(exc)), None
            return
        except Exception as exc:
            LOGGER.exception("C-FIND failed")
            yield status_dataset(_status.UNABLE_TO_PROCESS, f"{type(exc).__name__}: {exc}"), None
            return
        count = 0
        while True:
            if event.is_cancelled:
                LOGGER.info("C-FIND cancelled after %d responses", count)
                yield _status.CANCEL, None
                return
            try:
                response = next(responses)
            except StopIteration:
                return
            except Exception as exc:
                LOGGER.exception("C-FIND failed after %d responses", count)
                yield (
                    status_dataset(_status.UNABLE_TO_PROCESS, f"{type(exc).__name__}: {exc}"),
                    None,
                )
                return
            count += 1
            yield _status.CONTINUING, response

    def _retrieve(self, event: Any, models: Mapping[str, str]) -> list[IndexedInstance]:
        model = models.get(str(event.request.AffectedSOPClassUID), "STUDY")
        instances = self._open_index().retrieve(event.identifier, model)
        LOGGER.info(
            "%s retrieve of %d instance(s) for %s",
            model,
            len(instances),
            event.assoc.requestor.ae_title,
        )
        return instances

    def _sub_operations(
        self, event: Any, instances: list[IndexedInstance]
    ) -> Iterator[tuple[Any, Dataset | None]]:
        """The sub-operations' data sets, each as the association carrying it can take it.

        That association is the requestor's own for a C-GET, the
        sub-association pynetdicom opened for a C-MOVE (recorded by
        :meth:`_on_c_move` under the requestor's association: one DIMSE
        request at a time runs on an association).
        """
        for inst in instances:
            if event.is_cancelled:
                LOGGER.info("retrieve cancelled")
                yield _status.CANCEL, None
                return
            carriers = self._move_carriers.get(event.assoc)
            assoc = event.assoc if carriers is None else (carriers[-1] if carriers else None)
            yield _status.CONTINUING, _load(inst, assoc.accepted_contexts if assoc else ())

    def _on_c_move(self, event: Any) -> Iterator[Any]:
        destination = (event.move_destination or "").strip()
        address = self.destinations.get(destination)
        if address is None:
            LOGGER.warning("C-MOVE to unknown destination %r refused (0xA801)", destination)
            yield None, None
            return
        # An IdentifierError raised here is answered by pynetdicom with 0xC514.
        instances = self._retrieve(event, _MOVE_MODELS)
        originator = str(event.assoc.requestor.ae_title).strip()
        # pynetdicom opens the sub-association after this yield; what it negotiated
        # decides the syntax of each sub-operation.
        sub_association: list[Any] = []
        yield (
            address[0],
            address[1],
            {
                "contexts": _sub_operation_contexts(instances),
                "evt_handlers": [
                    CONN_OPEN_HANDLER,
                    move_originator_handler(originator),
                    (evt.EVT_ACCEPTED, lambda e: sub_association.append(e.assoc)),
                ],
                "max_pdu": self.max_pdu,
                "tls_args": _tls_args(self.destination_tls.get(destination), address[0]),
            },
        )
        yield len(instances)
        self._move_carriers[event.assoc] = sub_association
        try:
            yield from self._sub_operations(event, instances)
        finally:
            self._move_carriers.pop(event.assoc, None)

    # -- Storage Commitment SCP, MPPS SCP ---------------------------------------------

    @property
    def performed_steps(self) -> dict[str, Dataset]:
        """The Modality Performed Procedure Steps received, by SOP Instance UID (copies)."""
        with self._steps_lock:
            return {uid: copy.deepcopy(ds) for uid, ds in self._steps.items()}

    def _on_n_action(self, event: Any) -> tuple[Any, Dataset | None]:
        """Storage Commitment (PS3.4 J.3): answer at once, report on a new association.

        The result goes to the requestor's AE title as a destination of this
        archive (``destinations``, as for C-MOVE); an AE without one is
        answered Processing Failure, as nothing could reach it.  An instance
        is committed when the index holds it, its file exists and its SOP
        class is the one named; else it fails with 0x0112 (no such object
        instance) or 0x0119 (class/instance conflict).
        """
        calling = str(event.assoc.requestor.ae_title).strip()
        if str(event.request.RequestedSOPClassUID) != STORAGE_COMMITMENT:
            return status_dataset(0x0118, "only Storage Commitment takes N-ACTION here"), None
        if event.action_type != 1:
            return status_dataset(0x0123, "no such action type"), None
        address = self.destinations.get(calling)
        if address is None:
            LOGGER.warning("Storage Commitment for %s refused: no address to report to", calling)
            return status_dataset(0x0110, f"{calling} is not a destination of this archive"), None
        try:
            request = event.action_information
            transaction_uid = str(request.TransactionUID)
        except Exception as exc:
            return status_dataset(0x0110, f"cannot read the request: {exc}"), None
        event_type, report = commitment_report(request, self._commitment_failure)
        LOGGER.info(
            "Storage Commitment %s for %s: event type %d", transaction_uid, calling, event_type
        )
        tls = _tls_args(self.destination_tls.get(calling), address[0])
        self._reporter.send(address, calling, event_type, report, tls)
        return _status.SUCCESS, None

    def _commitment_failure(self, sop_class: str, sop_instance: str) -> int | None:
        held = self._open_index().get(sop_instance)
        if held is None or not held.path.exists():
            return 0x0112
        if held.sop_class_uid != sop_class:
            return 0x0119
        return None

    def _on_n_create(self, event: Any) -> tuple[Any, Dataset | None]:
        """MPPS N-CREATE (PS3.4 F.7.2.1): a new step, which must be IN PROGRESS."""
        uid = event.request.AffectedSOPInstanceUID
        if str(event.request.AffectedSOPClassUID) != MPPS_SOP_CLASS or not uid:
            return status_dataset(0x0106, "an MPPS with its SOP Instance UID"), None
        attrs = event.attribute_list
        if attrs.get("PerformedProcedureStepStatus") != "IN PROGRESS":
            return status_dataset(0x0106, "a new step is IN PROGRESS"), None
        with self._steps_lock:
            if str(uid) in self._steps:
                return 0x0111, None  # duplicate SOP instance
            self._steps[str(uid)] = attrs
        return _status.SUCCESS, attrs

    def _on_n_set(self, event: Any) -> tuple[Any, Dataset | None]:
        """MPPS N-SET (PS3.4 F.7.2.2): once COMPLETED or DISCONTINUED, a step is final."""
        uid = str(event.request.RequestedSOPInstanceUID)
        modifications = event.modification_list
        with self._steps_lock:
            step = self._steps.get(uid)
            if step is None:
                return 0x0112, None  # no such SOP instance
            if step.get("PerformedProcedureStepStatus") != "IN PROGRESS":
                rsp = status_dataset(
                    0x0110, "Performed Procedure Step Object may no longer be updated"
                )
                rsp.ErrorID = 0xA710
                return rsp, None
            for elem in modifications:
                step[elem.tag] = elem
        return _status.SUCCESS, None

    def _on_c_get(self, event: Any) -> Iterator[Any]:
        try:
            instances = self._retrieve(event, _GET_MODELS)
        except IdentifierError as exc:
            LOGGER.warning("C-GET refused (0x%04X): %s", exc.status, exc)
            yield 1
            yield status_dataset(exc.status, str(exc)), None
            return
        yield len(instances)
        yield from self._sub_operations(event, instances)


# -- helpers ----------------------------------------------------------------------------


def _held_syntaxes(index: Index) -> dict[str, Counter[str]]:
    """How many instances the index holds per SOP class and transfer syntax."""
    with index._connection() as conn:
        rows = conn.execute(
            "SELECT sop_class, transfer_syntax, COUNT(*) FROM instance"
            " GROUP BY sop_class, transfer_syntax"
        ).fetchall()
    held: dict[str, Counter[str]] = {}
    for sop_class, transfer_syntax, count in rows:
        held.setdefault(str(sop_class), Counter())[str(transfer_syntax)] = int(count)
    return held


def _syntax_of(header: Dataset) -> str:
    """The transfer syntax of an imported instance, as the index records it."""
    meta = getattr(header, "file_meta", None)
    return str(getattr(meta, "TransferSyntaxUID", "") or ExplicitVRLittleEndian)


def _expand(items: ImportItem | Iterable[ImportItem]) -> Iterator[tuple[ImportItem, bool]]:
    """``(item, explicit)``: datasets and files as given, directories walked (sorted)."""
    if isinstance(items, (str, os.PathLike, Dataset)):
        items = [items]
    for item in items:
        if isinstance(item, Dataset):
            yield item, True
            continue
        path = Path(item)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name, False
        else:
            yield path, True


def _describe_item(item: ImportItem) -> str:
    if isinstance(item, Dataset):
        return f"dataset {item.get('SOPInstanceUID', '(no SOP Instance UID)')}"
    return os.fspath(item)


def _copy_file(source: Path, target: Any) -> None:
    with open(source, "rb") as f:
        while chunk := f.read(1 << 20):
            target.write(chunk)


def _atomic(final: Path, sop_instance_uid: str, write: Callable[[Any], None]) -> None:
    """Write an imported instance like a received one: atomically, never over another."""
    atomic_write(final, write, commit=commit_instance(str(sop_instance_uid)))
