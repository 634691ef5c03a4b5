"""TCP tuning for pynetdicom associations, and the one other pynetdicom patch we need.

This is the one module that reaches into pynetdicom's internals.

Why this exists (figures measured on loopback, see docs/benchmarks.md):

* pynetdicom leaves Nagle's algorithm on.  A DIMSE message is often written
  as several small ``send()`` calls (PDU header, command set, data set), so
  with Nagle on each message can wait for the peer's delayed ACK (~40 ms).
  We set ``TCP_NODELAY`` on every association socket.
* When the *peer* keeps Nagle on (Debian's DCMTK does unless started with
  ``TCP_NODELAY=1``), its small writes wait for *our* ACK, which Linux delays.
  ``TCP_QUICKACK`` turns delayed ACKs off, but Linux clears it again after
  some receives, so it is re-armed after every ``recv``.  This took C-ECHO
  from ~44 ms to ~2.6 ms against such a peer.
* pynetdicom's ``AssociationSocket.recv`` reads 4 KiB at a time into a
  growing bytearray.  :func:`_fast_recv` reads into one preallocated buffer
  with ``recv_into``, which is what lets a C-GET or a Storage SCP keep up
  with a fast sender.

pynetdicom offers no option for these.  For associations we *accept*, its
``EVT_CONN_OPEN`` event hands us the association, whose ``dul.socket`` is the
``AssociationSocket``: :func:`tune_association` replaces ``recv`` on that one
*instance* (never on the class), so other pynetdicom users in the host process
are untouched.  For associations we *request*, :class:`RequestorAE` (an ``AE``
subclass, used only by aiodicomnet) creates a :class:`RequestorSocket`, which
applies the same options and also remembers why a TCP connect failed
(pynetdicom only logs it), so we can raise ``ConnectError`` or
``ConnectTimeout`` instead of guessing.
"""

from __future__ import annotations

import socket
import sys
import threading
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.association import Association as _PynetAssociation
from pynetdicom.transport import AddressInformation, AssociationSocket

__all__ = [
    "CONN_OPEN_HANDLER",
    "RequestorAE",
    "RequestorSocket",
    "tune_association",
]

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None) if sys.platform == "linux" else None


def _fast_recv_factory(assoc_sock: Any) -> Any:
    """Return a ``recv(nr_bytes)`` for one AssociationSocket instance."""

    def recv(nr_bytes: int) -> bytearray:
        sock: socket.socket = assoc_sock.socket
        buf = bytearray(nr_bytes)
        nr_read = 0
        with memoryview(buf) as view:
            while nr_read < nr_bytes:
                n = sock.recv_into(view[nr_read:], nr_bytes - nr_read)
                if n == 0:
                    break  # connection closed: return what we have, as pynetdicom does
                nr_read += n
                if _QUICKACK is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        if nr_read < nr_bytes:
            del buf[nr_read:]
        return buf

    return recv


def _tune_socket(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if _QUICKACK is not None:
        sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)


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


class RequestorSocket(AssociationSocket):
    """pynetdicom's AssociationSocket, tuned, and recording connect failures."""

    connect_error: OSError | None = None

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
        super().connect(primitive)
        self.connect_error = self._raw.connect_error


class RequestorAE(AE):
    """An AE whose requested associations use :class:`RequestorSocket`.

    ``last_socket`` is the socket of the latest association request, so the
    association can be aborted (cancellation) before ``associate`` returns.
    """

    last_socket: RequestorSocket | None = None

    def _create_socket(
        self, assoc: Any, address: AddressInformation, tls_args: Any
    ) -> AssociationSocket:
        _lock_reactor(assoc)  # before its threads start
        sock = RequestorSocket(assoc, address)
        sock.tls_args = tls_args
        self.last_socket = sock
        return sock


def tune_association(assoc: Any) -> None:
    """Apply TCP_NODELAY, TCP_QUICKACK re-arming and the fast recv to an association."""
    assoc_sock = assoc.dul.socket
    if assoc_sock is None or getattr(assoc_sock, "_adn_tuned", False):
        return
    sock = assoc_sock.socket
    if sock is None:
        return
    try:
        _tune_socket(sock)
    except OSError:  # pragma: no cover - socket already closed
        return
    if not hasattr(sock, "recv_into") or sock.__class__.__name__ == "SSLSocket":
        return
    assoc_sock.recv = _fast_recv_factory(assoc_sock)
    assoc_sock._adn_tuned = True


def _on_conn_open(event: evt.Event) -> None:
    tune_association(event.assoc)


#: Pass in ``evt_handlers`` of ``AE.associate`` / ``AE.start_server``.
CONN_OPEN_HANDLER = (evt.EVT_CONN_OPEN, _on_conn_open)


class _LockedReactorAssociation(_PynetAssociation):
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

    :func:`_lock_reactor` makes "the checkpoint is set, take a message" one
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


def _lock_reactor(assoc: Any) -> None:
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
