"""The fast data path: DIMSE messages framed into P-DATA-TF PDUs and written straight to the socket.

pynetdicom sends a DIMSE message by cutting it into P-DATA primitives (the
data set first copied out of its buffer, then sliced, each slice copied
again), queueing each one for its DUL thread, which runs the state machine
and encodes the PDU (another copy) before ``send``: per 16 KiB PDU, two
thread hand-offs and three copies.  A file is first decoded by pydicom and
encoded again.  Measured on a store of 200 CT slices to DCMTK: ~120 MB/s,
with ~40% of the CPU in pydicom's read and write and most of the rest in
the per-PDU path (DCMTK: ~700 MB/s).

Nothing in a P-DATA-TF PDU needs a decoded data set: 6 bytes of PDU header
and 6 of PDV item header before each fragment (PS3.8 9.3.5, E.2).  Here the
thread that sends a message (the association's owner thread, or the reactor
thread of an accepted association answering a request) frames it itself:

* a data set in memory (pynetdicom's encoded ``BytesIO``) is sent from its
  buffer through ``memoryview`` slices, never copied;
* a file (:func:`send_c_store_file`) is never decoded: its File Meta
  Information is read to learn the SOP class, instance and transfer syntax
  and where the data set starts, then fragments are read with ``readinto``
  into one reused buffer;
* many PDUs go out in one ``sendmsg`` (header and fragment buffers side by
  side), so a 1 MiB block costs one read and one write system call.

What stays pynetdicom's: negotiation, the command set (encoded by its DIMSE
message classes), responses and their decoding, service semantics, and
every PDU other than P-DATA-TF.  A message is only framed here while the
association is in the data transfer state (Sta6); otherwise pynetdicom
sends it as usual.  One lock per association serialises writers (this
path, the DUL thread's own sends, a C-CANCEL from another thread), so PDUs
never interleave and a message's fragments are never split by another's.
A failed write is what pynetdicom's transport makes of it: "Evt17, transport
closed", so the association ends and a waiting request gets no response.

Not triggered for messages sent here: ``EVT_PDU_SENT`` and ``EVT_DATA_SENT``
(pynetdicom's per-PDU notifications); ``EVT_DIMSE_SENT`` still is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from io import BufferedReader, BytesIO
from pathlib import Path
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse import _RQ_TO_MESSAGE, _RSP_TO_MESSAGE
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode, split_dataset
from pynetdicom.pdu_primitives import P_DATA

__all__ = [
    "BLOCK",
    "FileToSend",
    "install_writer",
    "read_file_to_send",
    "read_p_data",
    "send_c_store_file",
    "write_stalled",
]

LOGGER = logging.getLogger("aiodicomnet._dimse.wire")

#: Bytes of fragments read and written per system call.
BLOCK = 1024 * 1024

#: The fragment length used when the peer announced no maximum PDU length.
UNLIMITED_FRAGMENT = BLOCK

#: PDU type 04H, reserved, PDU length; PDV item length, presentation context ID,
#: message control header (PS3.8 9.3.5 and E.2).
_HEADER = struct.Struct(">BBIIBB")

#: Message control header bits: bit 0 command (1) or data set (0); bit 1 last fragment.
_COMMAND, _LAST = 0x01, 0x02

#: sendmsg() takes at most IOV_MAX (1024 on Linux) buffers: a header and a fragment each.
_MAX_PDUS_PER_CALL = 256


def _frame_headers(context_id: int, control: int, sizes: list[int], last: bool) -> list[bytes]:
    n = len(sizes)
    return [
        _HEADER.pack(
            0x04, 0, size + 6, size + 2, context_id, control | (_LAST if last and i == n - 1 else 0)
        )
        for i, size in enumerate(sizes)
    ]


def _wait_writable(sock: socket.socket, stall: float | None) -> None:
    """Wait until ``sock`` takes more bytes; raise TimeoutError after ``stall`` s without."""
    if stall is None:
        return  # the socket's own (network) timeout bounds each call
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLOUT)
        ready = bool(poller.poll(max(0.0, stall) * 1000))
    else:  # pragma: no cover - not Linux
        ready = bool(select.select([], [sock], [], max(0.0, stall))[1])
    if not ready:
        raise TimeoutError(f"the peer took no data for {stall} s (DIMSE timeout)")


def _sendmsg_all(sock: socket.socket, buffers: list[Any], stall: float | None) -> None:
    """``sendmsg`` until every byte of ``buffers`` is written.

    ``stall``: the longest wait for the peer to take more bytes (the DIMSE
    timeout: a peer that stops reading ends a request as one that does not
    answer would).
    """
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        _wait_writable(sock, stall)  # then sendmsg() takes what fits without blocking
        try:
            sent = sock.sendmsg(views)
        except BlockingIOError:  # pragma: no cover - a socket without timeout mode
            sent = 0
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if sent:
            views[0] = views[0][sent:]


def _sizes(total: int, fragment: int) -> list[int]:
    full, rest = divmod(total, fragment)
    return [fragment] * full + ([rest] if rest else [])


def _write_memory(
    sock: socket.socket,
    context_id: int,
    control: int,
    data: memoryview,
    fragment: int,
    stall: float | None,
) -> None:
    """Frame ``data`` (one command or data set) into PDUs and write them."""
    sizes = _sizes(len(data), fragment) or [0]
    pos = 0
    for start in range(0, len(sizes), _MAX_PDUS_PER_CALL):
        batch = sizes[start : start + _MAX_PDUS_PER_CALL]
        last = start + len(batch) == len(sizes)
        buffers: list[Any] = []
        for header, size in zip(
            _frame_headers(context_id, control, batch, last), batch, strict=True
        ):
            buffers += (header, data[pos : pos + size])
            pos += size
        _sendmsg_all(sock, buffers, stall)


def _write_file(
    sock: socket.socket,
    context_id: int,
    f: BufferedReader,
    length: int,
    fragment: int,
    buffer: bytearray,
    stall: float | None,
) -> None:
    """Frame ``length`` bytes read from ``f`` into data set PDUs and write them.

    A data set of odd length (a deflated one: its compressed stream may end
    on any byte, and files are not always padded) gets the trailing 00H byte
    PS3.5 A.5 asks for: PDV fragments have even lengths, and DCMTK aborts on
    an odd one.

    Raises:
        OSError: the file ended early (it changed while being sent).
    """
    pad = length % 2
    sizes = _sizes(length + pad, fragment)
    per_call = max(1, min(_MAX_PDUS_PER_CALL, len(buffer) // fragment))
    view = memoryview(buffer)
    try:
        for start in range(0, len(sizes), per_call):
            batch = sizes[start : start + per_call]
            last = start + len(batch) == len(sizes)
            headers = _frame_headers(context_id, 0, batch, last)
            padding = pad if last else 0
            if len(batch) == 1 and batch[0] > len(buffer):  # one fragment larger than a block
                _sendmsg_all(sock, headers, stall)
                _copy_file(sock, f, batch[0] - padding, view, stall)
                if padding:
                    _sendmsg_all(sock, [b"\0"], stall)
                continue
            want = sum(batch)
            got = f.readinto(view[: want - padding])
            if got != want - padding:
                raise OSError(f"file ended {length - (got or 0)} bytes early: changed while sent")
            if padding:
                view[want - 1] = 0
            buffers: list[Any] = []
            pos = 0
            for header, size in zip(headers, batch, strict=True):
                buffers += (header, view[pos : pos + size])
                pos += size
            _sendmsg_all(sock, buffers, stall)
    finally:
        view.release()


def _copy_file(
    sock: socket.socket, f: BufferedReader, length: int, view: memoryview, stall: float | None
) -> None:
    while length:
        got = f.readinto(view[: min(length, len(view))])
        if not got:
            raise OSError("file ended early: changed while sent")
        _sendmsg_all(sock, [view[:got]], stall)
        length -= got


class _Writer:
    """The send lock and reused buffer of one association; ``send_msg`` is its DIMSE send."""

    def __init__(self, assoc: Any, assoc_sock: Any) -> None:
        self.assoc = assoc
        self.assoc_sock = assoc_sock
        self.lock = threading.RLock()
        self.slow_send_msg = assoc.dimse.send_msg
        self._buffer: bytearray | None = None
        #: A write waited the DIMSE timeout for the peer to read: the association ended.
        self.stalled = False
        socket_send = assoc_sock.send

        def locked_send(bytestream: bytes) -> None:  # the DUL thread's own PDUs
            with self.lock:
                socket_send(bytestream)

        assoc_sock.send = locked_send

    def buffer(self) -> bytearray:
        if self._buffer is None:
            self._buffer = bytearray(BLOCK)
        return self._buffer

    def send_msg(self, primitive: Any, context_id: int) -> None:
        """``DIMSEServiceProvider.send_msg``, framing the message here in the transfer state."""
        assoc = self.assoc
        dul = assoc.dul
        raw = getattr(self.assoc_sock, "socket", None)
        if (
            raw is None
            or isinstance(raw, ssl.SSLSocket)  # no sendmsg(): pynetdicom sends
            or dul.state_machine.current_state != "Sta6"
            or not dul.to_provider_queue.empty()
        ):
            self.slow_send_msg(primitive, context_id)
            return
        if primitive.MessageIDBeingRespondedTo is None:
            message = _RQ_TO_MESSAGE[primitive.__class__]()
        else:
            message = _RSP_TO_MESSAGE[primitive.__class__]()
        message.primitive_to_message(primitive)
        message.context_id = context_id
        evt.trigger(assoc, evt.EVT_DIMSE_SENT, {"message": message})

        peer_max = int(assoc.dimse.maximum_pdu_size or 0)
        fragment = max(1, peer_max - 6) if peer_max else UNLIMITED_FRAGMENT
        command = cast(bytes, encode(message.command_set, True, True))
        stall: float | None = assoc.dimse_timeout
        data_set: BytesIO | None = message.data_set
        path: tuple[Path, int] | None = message._data_set_path  # type: ignore[assignment]
        with self.lock:
            try:
                _write_memory(raw, context_id, _COMMAND, memoryview(command), fragment, stall)
                if data_set is not None:
                    with data_set.getbuffer() as data:
                        if data.nbytes:
                            _write_memory(raw, context_id, 0, data, fragment, stall)
                elif path is not None:
                    fpath, offset = path
                    with open(fpath, "rb") as f:
                        length = f.seek(0, os.SEEK_END) - f.seek(offset)
                        _write_file(raw, context_id, f, length, fragment, self.buffer(), stall)
            except OSError as exc:
                if isinstance(exc, TimeoutError):
                    self.stalled = True
                # As pynetdicom's transport does: the connection is lost (Evt17).
                LOGGER.warning("%s: sending failed, association ends: %s", _peer(raw), exc)
                with contextlib.suppress(OSError):
                    raw.shutdown(socket.SHUT_RDWR)
                dul.event_queue.put("Evt17")


def _peer(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"


# -- receiving ---------------------------------------------------------------------------


def read_p_data(dul: Any, header: bytearray) -> None:
    """Read the body of a P-DATA-TF PDU whose ``header`` was read, and hand its PDVs
    to the DIMSE provider, as pynetdicom's state machine does (DT-2), without its PDU
    objects, copies and event queue: called by the reader thread in the data
    transfer state (:class:`.reactors._EventedDUL`).

    pynetdicom copies each fragment five times and moves it through two queues
    and the state machine (~50 us per PDU; Orthanc sends 16 KiB PDUs: 32 for
    a 512 KiB slice); here the PDVs are memoryview slices of the one buffer
    the body was read into, copied once, into the message being assembled.
    A body that ends early is a closed connection (Evt17), PDV items that do
    not add up an invalid PDU (Evt19), as in pynetdicom.
    """
    length = int.from_bytes(header[2:6], "big")
    try:
        body = dul.socket.recv(length)
    except (OSError, TimeoutError) as exc:
        LOGGER.error("Connection closed before the entire PDU was received: %s", exc)
        dul.event_queue.put("Evt17")
        return
    if len(body) != length:
        LOGGER.error(
            "The received PDU is shorter than expected (%d of %d bytes)", len(body), length
        )
        dul.event_queue.put("Evt17")
        return
    view = memoryview(body)
    pdvs: list[tuple[int, memoryview]] = []
    pos = 0
    while pos < length:
        if pos + 6 > length:
            break
        item = int.from_bytes(view[pos : pos + 4], "big")
        if item < 2 or pos + 4 + item > length:
            break
        pdvs.append((view[pos + 4], view[pos + 5 : pos + 4 + item]))
        pos += 4 + item
    if pos != length or not pdvs:
        LOGGER.error("Unable to decode the received P-DATA-TF PDU: PDV items do not add up")
        dul.event_queue.put("Evt19")
        return
    primitive = P_DATA()
    # The setter insists on bytes; decode_msg reads data[0] and data[1:], as a memoryview has.
    primitive._presentation_data_value_list = pdvs  # type: ignore[assignment]
    dul.assoc.dimse.receive_primitive(primitive)


def write_stalled(assoc: Any) -> bool:
    """Whether ``assoc`` ended because the peer stopped reading what we sent."""
    writer = getattr(getattr(getattr(assoc, "dul", None), "socket", None), "_adn_writer", None)
    return bool(getattr(writer, "stalled", False))


def install_writer(assoc: Any, assoc_sock: Any) -> None:
    """Send every DIMSE message of ``assoc`` through the fast path (before its threads start)."""
    if getattr(assoc_sock, "_adn_writer", None) is not None:
        return
    writer = _Writer(assoc, assoc_sock)
    assoc_sock._adn_writer = writer
    assoc.dimse.send_msg = writer.send_msg


@dataclass(frozen=True, slots=True)
class FileToSend:
    """A Part 10 file's identity and where its data set starts; nothing decoded."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    offset: int


def read_file_to_send(path: Path) -> FileToSend:
    """Read only the File Meta Information of ``path``.

    Raises:
        ValueError: not a Part 10 file, or its meta lacks the SOP class,
            instance or transfer syntax.
    """
    try:
        meta, offset = split_dataset(path)
    except Exception as exc:
        raise ValueError(f"not a DICOM Part 10 file: {exc}") from exc
    missing = [
        kw
        for kw in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")
        if kw not in meta
    ]
    if missing:
        raise ValueError(f"file meta information lacks {', '.join(missing)}")
    return FileToSend(
        path,
        str(meta.MediaStorageSOPClassUID),
        str(meta.MediaStorageSOPInstanceUID),
        str(meta.TransferSyntaxUID),
        offset,
    )


def send_c_store_file(
    assoc: Any,
    item: FileToSend,
    context_id: int,
    msg_id: int,
    *,
    originator: tuple[str, int] | None = None,
) -> Dataset:
    """Send a C-STORE-RQ whose data set is the file's bytes as they are; return the status.

    ``assoc``: an established pynetdicom association (requestor, or an
    acceptor sending sub-operations) whose context ``context_id`` has the
    file's SOP class and transfer syntax.  ``originator``: Move Originator
    AE title and message ID.  Returns what ``send_c_store`` returns: the
    response's status data set, empty when no response came (the
    association is then aborted).
    """
    req = C_STORE()
    req.MessageID = msg_id
    req.Priority = 2
    req.AffectedSOPClassUID = item.sop_class_uid
    req.AffectedSOPInstanceUID = item.sop_instance_uid
    if originator is not None:
        req.MoveOriginatorApplicationEntityTitle, req.MoveOriginatorMessageID = originator
    req._dataset_path = (item.path, item.offset)
    # As send_c_store(): pause the reactor, send, wait for the response.
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:  # pragma: no cover - never spins with patches.lock_reactor
        time.sleep(0.0001)
    try:
        assoc.dimse.send_msg(req, context_id)
        _, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    if rsp is None:
        assoc._handle_no_response()
        return Dataset()
    status: Dataset = assoc._check_received_status(rsp)
    return status
