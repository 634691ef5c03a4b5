"""Every adaptation of pynetdicom (3.0) aiodicomnet needs, each a named function saying why.

With :mod:`.acceptor` (the server side of the same ideas), this is the one
module that reaches into pynetdicom's internals.  Each patch changes one
*instance* (a socket, an association), never a pynetdicom class or module,
so other pynetdicom users in the host process are untouched; and each has a
test in ``tests/test_pynetdicom_patches.py`` that runs it on real pynetdicom
and fails without it.

Speed (figures measured on loopback, see docs/benchmarks.md)
    * :func:`tune_association` / :class:`RequestorSocket`: ``TCP_NODELAY`` on
      every association socket (pynetdicom leaves Nagle on, and a DIMSE message
      written as several small ``send()`` calls then waits ~40 ms for the peer's
      delayed ACK); ``TCP_QUICKACK`` re-armed after every receive (a peer that
      keeps Nagle on, such as Debian's DCMTK, otherwise waits for *our* delayed
      ACK: C-ECHO ~44 ms -> ~2.6 ms); and a receive into one buffer with
      ``recv_into`` instead of 4 KiB ``recv`` calls appended to a bytearray.
    * :func:`lock_reactor`: the reactor thread can no longer steal a response
      (pynetdicom issue #875) and no request spins waiting for it.
    * :class:`SharedContexts`, :func:`copy_context`: no deep copy of ~170
      presentation contexts per accepted association (~35 ms of CPU each).
    * :func:`drop_unread_log_handlers`: pynetdicom's log handlers describe
      every PDU and message even when the logger drops the text.
    * Two modules beside this one, installed from here on every association:
      :mod:`.reactors` (pynetdicom's two reactor threads wait for events
      instead of sleeping 1 ms between looks) and :mod:`.wire` (DIMSE
      messages framed into PDUs by the sending thread and written straight
      to the socket; files sent as they are, never decoded).

Never hang
    * :func:`set_network_timeout`: pynetdicom clears the socket timeout once
      connected, so its reader blocks in ``recv`` forever when a peer stops
      mid-PDU; we keep ``Timeouts.network`` on the socket (one setting, no
      per-call cost beyond the ``poll`` CPython makes for a timed socket).
    * :func:`stop_dul` (:class:`_BoundedKillAssociation`): pynetdicom's
      ``Association.kill()`` waits, without limit, for its reader thread to
      reach the idle state; a reader blocked mid-PDU (or in ``send`` to a peer
      that stopped reading) never does.  We shut the socket down under it
      (at once when it is inside a read, else after a short grace) and stop
      waiting after a bound.
    * :func:`release_unconnected`, :func:`wake_negotiation`,
      :func:`wake_dimse_waiter`, :func:`wake_acceptor`: cancellation (or a
      server's shutdown) wakes the thread that waits for
      a TCP connect, an A-ASSOCIATE reply or a DIMSE response, instead of
      letting it sit out its timeout.
    * :func:`close_transport`: a socket is closed when its association ends,
      not when the garbage collector finds the reference cycle holding it.

Never allocate what a peer claims
    * The fast receive reads a PDU header first and refuses (A-ABORT, then
      closes) a PDU longer than we accept: :func:`pdu_limit` (the maximum
      PDU length we announced for P-DATA-TF, :data:`MAX_CONTROL_PDU` for any
      other PDU); what it does read goes into a buffer that grows with the
      bytes that actually arrive (a 6-byte header claiming 4 GiB costs 1 MiB,
      not 4 GiB).  :func:`refusal` says why, for the error raised.

Reading pynetdicom's state
    * :func:`queued_reply`: an A-ASSOCIATE-RJ pynetdicom queued but never read.

DICOM over TLS
    * :class:`RequestorSocket` wraps pynetdicom's ``tls_args`` context so the
      TLS socket records why ``connect`` failed, and whether in the TCP
      connect or the handshake (:attr:`RequestorSocket.tls_failed`):
      pynetdicom only logs it.  :func:`tls_failure`: a TLS 1.3 server's
      refusal of our certificate, which arrives on the first read.
    * :data:`TLS_ANSWER`: a plain association answered with a TLS record (the
      peer wants TLS) is told apart from a garbled reply.
    * :func:`tune_association` gives an accepted TLS socket the same bounded
      receive (``SSLSocket.recv_into`` reads decrypted bytes), handing out
      first the request the acceptor read through TLS; the writer of
      :mod:`.wire` is left out (no ``sendmsg`` on a TLS socket).

Standard conformance
    * :func:`move_originator_handler`: pynetdicom 3.0 names the Move SCP itself,
      not the C-MOVE requestor, as Move Originator of C-STORE sub-operations
      (PS3.7 Table 9.1-1); the Archive's sub-associations name the requestor.

On a pynetdicom upgrade
    Run ``tests/test_pynetdicom_patches.py`` (and ``tests/test_hostile_peers.py``)
    against the new version.  A failing test names the patch whose assumption
    broke; read that patch's docstring, then the new pynetdicom's code it
    names (``transport.AssociationSocket``, ``dul.DULServiceProvider.
    _read_pdu_data``, ``association.Association.kill``, ``acse`` negotiation,
    ``transport.RequestHandler``), and either adapt the patch or delete it if
    pynetdicom now does the right thing itself (then delete its test too).
    Check also whether the new version fixed issue #875 or keeps its socket
    timeout after connecting: each such fix retires a patch.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import queue
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from pynetdicom import AE, evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.association import Association as _PynetAssociation
from pynetdicom.pdu_primitives import A_ASSOCIATE, A_P_ABORT
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import AddressInformation, AssociationSocket

from .reactors import EventedAssociation, make_event_driven
from .wire import install_writer

__all__ = [
    "CONN_OPEN_HANDLER",
    "MAX_CONTROL_PDU",
    "TLS_ANSWER",
    "RequestorAE",
    "RequestorSocket",
    "SharedContexts",
    "bound_kill",
    "close_transport",
    "copy_context",
    "drop_unread_log_handlers",
    "lock_reactor",
    "move_originator_handler",
    "pdu_limit",
    "queued_reply",
    "refusal",
    "release_unconnected",
    "set_network_timeout",
    "stop_dul",
    "tls_failure",
    "tune_association",
    "wake_acceptor",
    "wake_dimse_waiter",
    "wake_negotiation",
]

LOGGER = logging.getLogger("aiodicomnet._dimse.patches")

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None) if sys.platform == "linux" else None

#: The largest PDU other than P-DATA-TF we read (A-ASSOCIATE-RQ/AC above all).
#: A request proposing 128 contexts with 40 transfer syntaxes each, plus user
#: identity, stays under 0.6 MiB; anything longer is refused before it is read.
MAX_CONTROL_PDU = 2 * 1024 * 1024

#: P-DATA-TF PDUs may exceed the maximum length we announced by this much:
#: peers disagree on whether the limit counts the PDV item headers.
_PDATA_SLACK = 1024

#: Buffers up to this size are allocated at once; longer PDUs grow by this much
#: as their bytes arrive, so a length field that lies costs at most this.
_GROW = 1024 * 1024
_ZEROS = memoryview(bytes(_GROW))  # calloc'd: no memory touched until copied

_P_DATA_TF = 0x04
_PDU_NAMES = {
    0x01: "A-ASSOCIATE-RQ",
    0x02: "A-ASSOCIATE-AC",
    0x03: "A-ASSOCIATE-RJ",
    0x04: "P-DATA-TF",
    0x05: "A-RELEASE-RQ",
    0x06: "A-RELEASE-RP",
    0x07: "A-ABORT",
}

#: TLS record types (alert, handshake) a TLS server may send to a plain TCP client.
_TLS_RECORDS = (0x15, 0x16)
#: What :func:`refusal` gives when a peer answered our plain A-ASSOCIATE-RQ with TLS.
TLS_ANSWER = (
    "the peer answered with TLS: it expects DICOM over TLS on this port "
    "(give the node a tls context)"
)

#: A-ABORT PDU from the service provider (source 2), reason 6:
#: invalid-PDU-parameter-value (PS3.8 9.3.8).
ABORT_INVALID_PARAMETER = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x06])

#: How long :func:`stop_dul` lets pynetdicom's reader finish by itself before
#: shutting its socket down, and how long it then waits for the thread.
_KILL_GRACE = 0.25
_KILL_LIMIT = 2.0


# -- the fast, bounded receive ------------------------------------------------------


def _read(sock: socket.socket, nr_bytes: int) -> bytearray:
    """Up to ``nr_bytes`` from ``sock`` (fewer if it closes), in a buffer grown as they come."""
    buf = bytearray(min(nr_bytes, _GROW))
    nr_read = 0
    view = memoryview(buf)
    try:
        while nr_read < nr_bytes:
            if nr_read == len(buf):  # more is due than arrived so far: grow
                view.release()
                buf += _ZEROS[: min(nr_bytes - nr_read, _GROW)]
                view = memoryview(buf)
            n = sock.recv_into(view[nr_read:])
            if n == 0:
                break  # connection closed: return what we have, as pynetdicom does
            nr_read += n
            if _QUICKACK is not None:
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
    finally:
        view.release()
    if nr_read < len(buf):
        del buf[nr_read:]
    return buf


def pdu_limit(assoc: Any, pdu_type: int) -> int | None:
    """The longest PDU of ``pdu_type`` we read on ``assoc`` (``None``: no limit).

    P-DATA-TF: the maximum length *we* announced (plus a little slack), or no
    limit when we announced 0 (unlimited: such PDUs are read as they arrive,
    never allocated up front).  Any other PDU: :data:`MAX_CONTROL_PDU`.
    """
    if pdu_type != _P_DATA_TF:
        return MAX_CONTROL_PDU
    local = assoc.acceptor if assoc.is_acceptor else assoc.requestor
    ours = int(local.maximum_length or 0)
    return ours + _PDATA_SLACK if ours else None


def _refuse(assoc_sock: Any, sock: socket.socket, pdu_type: int, length: int, limit: int) -> None:
    """Abort on an over-long PDU: A-ABORT, then shut the connection down."""
    message = (
        f"the peer sent a {_PDU_NAMES[pdu_type]} PDU of {length} bytes, "
        f"more than the {limit} we accept"
    )
    try:
        peer = sock.getpeername()
    except OSError:
        peer = "?"
    LOGGER.error("%s: %s; association aborted", peer, message)
    assoc_sock._adn_refusal = message
    with contextlib.suppress(OSError):
        sock.send(ABORT_INVALID_PARAMETER)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _fast_recv_factory(assoc_sock: Any, preread: bytes = b"") -> Any:
    """Return a ``recv(nr_bytes)`` for one AssociationSocket instance.

    pynetdicom's reader (``DULServiceProvider._read_pdu_data``) calls it twice
    per PDU: 6 bytes of header, then the length the header gives.  We check
    that length against :func:`pdu_limit` when we read the header; a PDU that
    is too long is refused there (an empty header makes pynetdicom see a
    closed connection).  ``preread``: bytes read from the socket before
    pynetdicom took it over (a whole A-ASSOCIATE-RQ, see :mod:`.acceptor`),
    handed out first.
    """
    pending = bytearray(preread)
    if preread:
        assoc_sock._adn_pending = pending  # see acceptor._AcceptedSocket.ready

    def unread(data: bytes) -> None:
        """Give back bytes read ahead (a PDU header, :mod:`.reactors`): handed out first."""
        pending[:0] = data
        assoc_sock._adn_pending = pending

    assoc_sock._adn_unread = unread
    body_due: int | None = None  # the length the header just read announced
    data_limit: list[int | None] = []  # our P-DATA-TF limit, computed once

    def recv(nr_bytes: int) -> bytearray:
        nonlocal body_due
        if pending:
            chunk = pending[:nr_bytes]
            del pending[:nr_bytes]
            return chunk
        is_header = nr_bytes != body_due
        body_due = None
        sock: socket.socket = assoc_sock.socket
        assoc_sock._adn_reading = True
        try:
            buf = _read(sock, nr_bytes)
        except OSError as exc:  # a timeout (the network timeout) or a reset: the connection is dead
            if isinstance(exc, ssl.SSLError):  # e.g. a TLS 1.3 peer refusing our certificate
                assoc_sock._adn_tls_error = exc
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            raise
        finally:
            assoc_sock._adn_reading = False
        if (
            is_header
            and len(buf) >= 2
            and buf[0] in _TLS_RECORDS
            and buf[1] == 0x03
            and not isinstance(sock, ssl.SSLSocket)  # a TLS alert or handshake in clear
        ):
            assoc_sock._adn_refusal = TLS_ANSWER
            LOGGER.error("%s", TLS_ANSWER)
        if is_header and len(buf) == 6 and 0x01 <= buf[0] <= 0x07:
            pdu_type, length = buf[0], int.from_bytes(buf[2:6], "big")
            if pdu_type == _P_DATA_TF:
                if not data_limit:
                    data_limit.append(pdu_limit(assoc_sock.assoc, pdu_type))
                limit = data_limit[0]
            else:
                limit = MAX_CONTROL_PDU
            if limit is not None and length > limit:
                _refuse(assoc_sock, sock, pdu_type, length, limit)
                return bytearray()
            body_due = length
        return buf

    return recv


def tls_failure(assoc: Any) -> ssl.SSLError | None:
    """The TLS error our receive met on ``assoc``, if any.

    With TLS 1.3 a server checks the client's certificate after the client
    has finished its handshake: a refusal (no certificate, an unknown CA)
    arrives as an alert on the first read, here, not in ``connect``.
    """
    assoc_sock = getattr(getattr(assoc, "dul", None), "socket", None)
    error = getattr(assoc_sock, "_adn_tls_error", None)
    return error if isinstance(error, ssl.SSLError) else None


def refusal(assoc: Any) -> str | None:
    """Why our receive refused a PDU on ``assoc`` (too long), if it did."""
    assoc_sock = getattr(getattr(assoc, "dul", None), "socket", None)
    message = getattr(assoc_sock, "_adn_refusal", None)
    return message if isinstance(message, str) else None


# -- TCP options ----------------------------------------------------------------------


def _tune_socket(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if _QUICKACK is not None:
        sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)


def set_network_timeout(assoc: Any, sock: socket.socket) -> None:
    """Keep the association's network timeout on its connected socket.

    pynetdicom sets it on a requestor's socket, then clears it after
    ``connect`` (``AssociationSocket.connect``), and never sets one on an
    accepted socket; its reader then blocks in ``recv`` without limit when a
    peer stops mid-PDU, and its writer in ``send`` when a peer stops reading.
    With the timeout, such a call fails after ``Timeouts.network`` seconds
    without a byte, which pynetdicom treats as a closed connection.

    Where it matters: pynetdicom's own idle timer (the network timeout, run
    by its reactor) and :func:`stop_dul` already end most stalls; but while a
    request waits for its response pynetdicom pauses that reactor, so a peer
    that stops mid-response would hold the reader until the DIMSE timeout.
    """
    timeout = assoc.network_timeout
    if timeout is not None:
        sock.settimeout(timeout)


class _RecordingSocket(socket.socket):
    """A TCP socket that remembers the error of a failed ``connect``."""

    connect_error: OSError | None = None

    def connect(self, address: Any) -> None:
        try:
            super().connect(address)
        except OSError as exc:
            self.connect_error = exc
            raise
        _tune_socket(self)


class _RecordingTlsSocket(ssl.SSLSocket):
    """A TLS socket that remembers why ``connect`` (TCP connect, then handshake) failed.

    ``handshaking``: the TCP connection was made and the handshake had begun,
    so the failure is TLS's, not TCP's.
    """

    connect_error: OSError | None = None
    handshaking = False

    def connect(self, address: Any) -> None:
        try:
            super().connect(address)
        except OSError as exc:
            self.connect_error = exc
            raise
        _tune_socket(self)

    def do_handshake(self, block: bool = False) -> None:
        self.handshaking = True
        super().do_handshake(block)


class _TlsWrapper:
    """Stands for the SSLContext in pynetdicom's ``tls_args``: wraps with the real
    context, as pynetdicom would, into a :class:`_RecordingTlsSocket`."""

    def __init__(self, context: ssl.SSLContext, owner: RequestorSocket) -> None:
        self._context = context
        self._owner = owner

    def wrap_socket(self, sock: socket.socket, **kwargs: Any) -> ssl.SSLSocket:
        wrapped = self._context.wrap_socket(sock, **kwargs)
        wrapped.__class__ = _RecordingTlsSocket
        self._owner._tls_socket = cast(_RecordingTlsSocket, wrapped)
        return wrapped


class RequestorSocket(AssociationSocket):
    """pynetdicom's AssociationSocket, tuned, bounded, and recording connect failures.

    With TLS (``tls_args``, given to ``AE.associate``), pynetdicom wraps the
    socket before connecting; the TCP connect and the handshake then both run
    under the connect timeout, and :attr:`connect_error` / :attr:`tls_failed`
    say which failed and why.
    """

    connect_error: OSError | None = None
    #: The connect failed in the TLS handshake (connect_error says why).
    tls_failed = False
    _tls_socket: _RecordingTlsSocket | None = None

    def __init__(self, assoc: Any, address: AddressInformation) -> None:
        super().__init__(assoc, address=address)
        self.recv = _fast_recv_factory(self)  # type: ignore[method-assign]

    def _create_socket(self, address: AddressInformation) -> socket.socket:
        family = socket.AF_INET if address.is_ipv4 else socket.AF_INET6
        sock = _RecordingSocket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.assoc.network_timeout is not None:
            sock.settimeout(self.assoc.network_timeout)
        sock.bind(address.as_tuple)
        self._raw = sock
        self._is_connected = False
        return sock

    def connect(self, primitive: Any) -> None:
        tls = self.tls_args
        if tls is not None and isinstance(tls[0], ssl.SSLContext):
            self.tls_args = (_TlsWrapper(tls[0], self), tls[1])  # type: ignore[assignment]
        super().connect(primitive)  # clears the socket timeout once connected
        self.connect_error = self._raw.connect_error
        wrapped = self._tls_socket
        if wrapped is not None and self.connect_error is None:
            self.connect_error = wrapped.connect_error
            self.tls_failed = wrapped.connect_error is not None and (
                wrapped.handshaking or isinstance(wrapped.connect_error, ssl.SSLError)
            )
        if self._is_connected and self.socket is not None:
            set_network_timeout(self.assoc, self.socket)

    def close_unconnected(self) -> None:
        """Close the raw socket: pynetdicom skips it when negotiation ends before
        the connection was made (its ``close()`` returns early then)."""
        self._raw.close()
        if self._tls_socket is not None:
            self._tls_socket.close()


class RequestorAE(AE):
    """An AE whose requested associations use :class:`RequestorSocket`.

    ``last_socket`` is the socket of the latest association request, so the
    association can be aborted (cancellation) before ``associate`` returns.
    """

    last_socket: RequestorSocket | None = None

    def _create_socket(
        self, assoc: Any, address: AddressInformation, tls_args: Any
    ) -> AssociationSocket:
        sock = RequestorSocket(assoc, address)
        install_writer(assoc, sock)  # before its threads start
        lock_reactor(assoc)
        drop_unread_log_handlers(assoc)
        make_event_driven(assoc)
        sock.tls_args = tls_args
        self.last_socket = sock
        return sock


def tune_association(assoc: Any, preread: bytes = b"") -> None:
    """TCP_NODELAY, TCP_QUICKACK re-arming, the fast bounded receive, the network
    timeout and the bounded kill, on one association (accepted or requested).

    ``preread``: bytes already read from its socket (see :func:`_fast_recv_factory`).
    """
    assoc_sock = assoc.dul.socket
    if assoc_sock is None or getattr(assoc_sock, "_adn_tuned", False):
        return
    sock = assoc_sock.socket
    if sock is None:
        return
    bound_kill(assoc)
    drop_unread_log_handlers(assoc)
    make_event_driven(assoc)  # an accepted association (not started yet)
    if not isinstance(sock, ssl.SSLSocket):
        install_writer(assoc, assoc_sock)
    try:
        _tune_socket(sock)
        set_network_timeout(assoc, sock)
    except OSError:  # pragma: no cover - socket already closed
        return
    if not hasattr(sock, "recv_into"):
        return
    # A TLS socket too: its recv_into reads decrypted bytes, and the request
    # the acceptor read through TLS is ``preread``.
    assoc_sock.recv = _fast_recv_factory(assoc_sock, preread)
    assoc_sock._adn_tuned = True


#: pynetdicom's log handlers, bound to every association ("standard" level).
_LOG_HANDLERS = (
    (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
    (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
)


def drop_unread_log_handlers(assoc: Any) -> None:
    """Unbind pynetdicom's log handlers from ``assoc`` while its logger would drop their lines.

    pynetdicom binds them to every association (``_config.LOG_HANDLER_LEVEL``,
    process-wide, left alone); they describe every PDU and DIMSE message
    received or sent, building the text before the logger decides to keep it:
    ~9% of a C-MOVE retrieve's CPU (py-spy). Kept when the ``pynetdicom``
    logger is enabled for INFO, so a host application that logs pynetdicom
    still sees everything.
    """
    if logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):
        return
    for event, handler in _LOG_HANDLERS:
        with contextlib.suppress(Exception):
            assoc.unbind(event, handler)


def _on_conn_open(event: evt.Event) -> None:
    tune_association(event.assoc)


#: Pass in ``evt_handlers`` of ``AE.associate`` / ``AE.start_server``.
CONN_OPEN_HANDLER = (evt.EVT_CONN_OPEN, _on_conn_open)


# -- stopping pynetdicom's threads ----------------------------------------------------


def _wake_reader(dul: Any) -> None:
    """Shut the socket down under pynetdicom's reader: a blocked ``recv``/``send``
    returns at once and the reader sees a closed connection.  Only ``shutdown``:
    closing the descriptor under a thread that uses it could let a new socket
    reuse its number; the reader closes it itself (pynetdicom's AA-4)."""
    raw = getattr(dul.socket, "socket", None)
    if raw is not None:
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_RDWR)


def stop_dul(dul: Any) -> None:
    """Stop pynetdicom's reader thread (its DUL), waiting a bounded time.

    pynetdicom's ``Association.kill()`` loops until ``DUL.stop_dul()``
    succeeds, which needs the state machine back in Sta1: a reader blocked in
    ``recv`` mid-PDU (or in ``send`` to a peer that stopped reading) never
    gets there, and the abort that called ``kill()`` hangs for ever.  Here:
    shut the socket down at once if the reader is inside our receive, else
    after :data:`_KILL_GRACE` (time for it to send the A-ABORT and close by
    itself, a few ms normally); then give up after :data:`_KILL_LIMIT`.
    """
    if not dul.is_alive() or dul is threading.current_thread():
        return
    start = time.monotonic()
    woken = False
    while dul.is_alive():
        if dul.state_machine.current_state == "Sta1":
            dul.kill_dul()
        waited = time.monotonic() - start
        if not woken and (waited >= _KILL_GRACE or getattr(dul.socket, "_adn_reading", False)):
            _wake_reader(dul)
            woken = True
        if waited >= _KILL_GRACE + _KILL_LIMIT:  # pragma: no cover - pynetdicom stuck elsewhere
            LOGGER.error("pynetdicom's reader thread %s did not stop; not waiting", dul.name)
            dul.kill_dul()
            return
        dul.join(0.002)


class _BoundedKillAssociation(EventedAssociation):
    """pynetdicom's Association whose ``kill()`` always returns: see :func:`stop_dul`."""

    def kill(self) -> None:
        self._reactor_checkpoint.set()
        self._kill = True
        self.is_established = False
        self._is_paused = True
        stop_dul(self.dul)


def bound_kill(assoc: Any) -> None:
    """Give one association the bounded ``kill()`` of :class:`_BoundedKillAssociation`."""
    if type(assoc) is _PynetAssociation:
        assoc.__class__ = _BoundedKillAssociation


def close_transport(assoc: Any) -> None:
    """Close the socket of an association whose threads have ended.

    pynetdicom leaves it open on some paths (a peer's A-P-ABORT, an abort
    during negotiation); the reference cycles between an association, its
    DUL and its socket then keep it open until the garbage collector runs,
    so a storm of cancelled requests leaves sockets behind for a while.
    """
    raw = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if raw is not None:
        raw.close()


# -- waking a thread that waits for pynetdicom ----------------------------------------


def release_unconnected(sock: Any) -> bool:
    """If ``sock`` is not connected yet, let its requesting thread go; return whether it was.

    pynetdicom's requesting thread waits for the transport (``_ready``) with
    no timeout of its own while the reader thread connects.  Setting it with
    the socket still unconnected makes the requestor see "not connected": it
    aborts and cleans up by itself (cancellation during connect).
    """
    if sock._is_connected:
        return False
    sock._ready.set()
    return True


def wake_dimse_waiter(assoc: Any) -> None:
    """Wake a thread waiting for a DIMSE response, as an abort does in pynetdicom.

    ``send_c_*`` waits on the DIMSE message queue until the DIMSE timeout;
    ``(None, None)`` is what pynetdicom itself queues when the association is
    aborted (fsm AA-2/AA-3/AA-4), so the waiter returns "no response" at once.
    """
    assoc.dimse.msg_queue.put((None, None))


def wake_negotiation(assoc: Any) -> None:
    """Wake the requesting thread waiting for an A-ASSOCIATE-AC/RJ.

    It waits on the DUL's queue to the user until the ACSE timeout; we hand it
    the A-P-ABORT indication it would get if the connection had dropped.
    """
    assoc.dul.to_user_queue.put(A_P_ABORT())


def wake_acceptor(assoc: Any) -> None:
    """Wake an accepted association's thread waiting for the A-ASSOCIATE-RQ.

    It waits on the DUL's queue to the user until the ACSE timeout, and
    pynetdicom cannot abort it in that state; ``None`` is what the queue
    gives when that timeout expires, so it ends as if it had.
    """
    assoc.dul.to_user_queue.put(None)


def queued_reply(assoc: Any) -> Any:
    """An A-ASSOCIATE reply left unread in the DUL's queue to the user, if any.

    A peer that rejects and closes at once can make pynetdicom's requestor
    give up ("failed to connect": the reader saw the rejection and the closed
    connection before the requesting thread looked) with the A-ASSOCIATE-RJ
    still queued: reading it lets us say "rejected" and why.
    """
    while True:
        try:
            primitive = assoc.dul.to_user_queue.get(block=False)
        except queue.Empty:
            return None
        if isinstance(primitive, A_ASSOCIATE):
            return primitive


# -- reactor lock (requestor) -----------------------------------------------------------


class _LockedReactorAssociation(_BoundedKillAssociation):
    """A requestor association whose reactor never steals a response.

    pynetdicom's association reactor thread polls the DIMSE queue for
    incoming *requests*.  Before each request of ours, ``send_c_*`` pauses
    it: ``_reactor_checkpoint.clear()``, then it spins until ``_is_paused``.
    But the reactor sets ``_is_paused`` *before* it blocks, and may already be
    past the checkpoint: it can then take the response off the queue and drop
    it ("Received unexpected C-STORE service message"; the request waits out
    the DIMSE timeout; pynetdicom issue #875; seen here about once in 2,000
    stores and once in 100 echoes).  The spin also costs up to one reactor
    period (~1 ms) per request.

    :func:`lock_reactor` makes "the checkpoint is set, take a message" one
    step under a lock for the reactor, and makes the sender take the lock once
    after clearing the checkpoint and before sending; ``_is_paused`` then
    always reads true, so nobody spins.  Measured (docs/benchmarks.md): no
    lost response in 6,000 echoes, C-ECHO +0.08 ms over raw pynetdicom
    instead of +1.1 ms.
    """

    @property
    def _is_paused(self) -> bool:
        return True

    @_is_paused.setter
    def _is_paused(self, value: bool) -> None:
        pass


def lock_reactor(assoc: Any) -> None:
    """Install :class:`_LockedReactorAssociation`'s exclusion on a new requestor association."""
    lock = threading.Lock()
    dimse = assoc.dimse
    get_msg, send_msg = dimse.get_msg, dimse.send_msg

    def guarded_get_msg(block: bool = False) -> Any:
        if block:  # a send_c_*() waiting for its response
            return get_msg(True)
        with lock:  # the reactor polling for requests
            if not assoc._reactor_checkpoint.is_set():
                return None, None
            return get_msg(False)

    def guarded_send_msg(*args: Any, **kwargs: Any) -> Any:
        with lock:  # let a reactor poll that began before clear() finish
            pass
        return send_msg(*args, **kwargs)

    dimse.get_msg = guarded_get_msg
    dimse.send_msg = guarded_send_msg
    assoc.__class__ = _LockedReactorAssociation


# -- presentation contexts of an acceptor -------------------------------------------


class SharedContexts(list[PresentationContext]):
    """A server's supported contexts, shared (not copied) by its associations.

    pynetdicom deep-copies the acceptor's supported contexts for every new
    association (``RequestHandler._create_association``): with ~170 storage
    SOP classes times ~40 transfer syntaxes that is ~35 ms of CPU (holding
    the GIL) per association.  Negotiation only reads them
    (``negotiate_as_acceptor`` builds new result contexts), so a shallow copy
    is enough.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        return list(self)


def copy_context(cx: PresentationContext) -> PresentationContext:
    """A copy of a context whose transfer syntaxes can be changed without touching ``cx``.

    A deep copy of all ~170 storage contexts takes ~30 ms; their UIDs are
    immutable strings, so copying the object and its (private) list of
    transfer syntaxes is enough.
    """
    new = copy.copy(cx)
    syntaxes = getattr(cx, "_transfer_syntax", None)
    if not isinstance(syntaxes, list):  # pragma: no cover - another pynetdicom
        return copy.deepcopy(cx)
    new._transfer_syntax = list(syntaxes)
    return new


def move_originator_handler(originator: str) -> tuple[Any, Callable[[Any], None]]:
    """An ``EVT_CONN_OPEN`` handler making a C-MOVE sub-association name ``originator``.

    PS3.7 Table 9.1-1: the Move Originator Application Entity Title of a C-STORE
    sub-operation is the AE that *invoked* the C-MOVE, the requestor. pynetdicom
    3.0 puts the Move SCP's own AE title there; a receiver that routes
    instances by originator (such as our client's ``retrieve``) would miss
    them. So ``send_c_store`` of that one sub-association (never the class) is
    wrapped to pass the requestor's AE title.
    """

    def on_open(event: Any) -> None:
        assoc = event.assoc
        send_c_store = assoc.send_c_store

        def send(dataset: Any, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("originator_aet"):
                kwargs["originator_aet"] = originator
            return send_c_store(dataset, *args, **kwargs)

        assoc.send_c_store = send

    return (evt.EVT_CONN_OPEN, on_open)
