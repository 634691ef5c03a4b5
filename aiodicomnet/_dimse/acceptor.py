"""The acceptor side of pynetdicom: listening, and the door before an association.

:class:`Acceptor` runs pynetdicom's association server (its
``AssociationServer``, for the request handler, the handlers it binds and its
``active_associations``) from an accept loop of our own, in one thread that
waits on a selector.  It keeps each new connection to itself until a whole
A-ASSOCIATE-RQ has arrived, and only then hands the socket, with those bytes,
to pynetdicom, which starts the association's two threads.  Why:

* pynetdicom starts two threads per *connection*, which then wait up to the
  ACSE timeout for an A-ASSOCIATE-RQ and count against
  ``maximum_associations`` meanwhile: 20 connections that closed without a
  byte refused legitimate peers for 27.8 s, and 200 idle sockets took a
  server from 4 to 349 threads.  Here a connection costs a selector entry
  until its request is complete; one that closes is forgotten at once; at
  most :data:`MAX_WAITING` wait (the oldest is closed to make room) and each
  for at most the ACSE timeout.
* the request's PDU header is checked before its body is read: a header that
  claims more than :data:`~.patches.MAX_CONTROL_PDU`, or is not an
  A-ASSOCIATE-RQ, is answered with A-ABORT and the connection closed; the
  body is read as it arrives, never allocated as claimed.
* a request that pynetdicom cannot decode would leave its acceptor thread
  waiting for the ACSE timeout (its state machine aborts without telling
  it): it is decoded once here and refused the same way.

DICOM over TLS (``tls``, an :class:`ssl.SSLContext`): the handshake runs here
too, non-blocking in the same selector (``SSLWantRead``/``SSLWantWrite``
choose what to wait for), under the same deadline, the ACSE timeout, for
handshake and request together; the request is then read through the TLS
layer, and the wrapped socket handed over.  A handshake that fails (no
certificate, an unknown CA, no common version, a peer speaking plain DICOM)
is logged with its reason and the connection closed (a client that spoke
plain DICOM first gets a TLS alert in clear, so that it can tell why); one
that stalls is closed at the deadline.  Neither costs more than a waiting
connection.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import AE
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import AssociationServer, AssociationSocket, RequestHandler

from ..tls import describe_error as describe_tls_error
from .patches import (
    ABORT_INVALID_PARAMETER,
    MAX_CONTROL_PDU,
    SharedContexts,
    stop_dul,
    tune_association,
    wake_acceptor,
)

__all__ = ["MAX_WAITING", "Acceptor"]

LOGGER = logging.getLogger("aiodicomnet.server")

#: Connections that may wait for their A-ASSOCIATE-RQ at once; beyond, the oldest is closed.
MAX_WAITING = 64

#: The fixed part of an A-ASSOCIATE-RQ after its header (PS3.8 9.3.2): shorter is not one.
_MIN_RQ_BODY = 68

#: A-ABORT from the service provider (source 2), reason 2: unexpected-PDU (PS3.8 9.3.8).
_ABORT_UNEXPECTED = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x02])

#: A TLS alert record, fatal protocol_version (RFC 8446 6.2), sent in clear to a
#: client that spoke plain DICOM to a TLS port: OpenSSL closes without a word,
#: and a client (ours) that reads a TLS record can say "this port wants TLS".
_ALERT_PROTOCOL_VERSION = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46])

#: Time given to the associations aborted at shutdown to end, beyond their grace period.
_ABORT_BOUND = 3.0


class _AcceptedSocket(AssociationSocket):
    """pynetdicom's socket wrapper, reporting "data ready" while the pre-read request waits.

    pynetdicom's reader only reads when ``ready`` (a ``select`` on the socket)
    says so; the request we read ourselves is no longer in the socket.
    """

    @property
    def ready(self) -> bool:
        if getattr(self, "_adn_pending", None):
            return True
        return bool(AssociationSocket.ready.fget(self))  # type: ignore[attr-defined]


class _Handler(RequestHandler):
    """pynetdicom's request handler, for a socket whose A-ASSOCIATE-RQ we already read."""

    def __init__(self, request: socket.socket, address: Any, server: Any, preread: bytes) -> None:
        self._preread = preread
        super().__init__(request, address, server)  # creates and starts the association

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        assoc.dul.socket.__class__ = _AcceptedSocket
        tune_association(assoc, self._preread)
        return assoc


class _Server(AssociationServer):
    """pynetdicom's association server, run by :class:`Acceptor` (never ``serve_forever``)."""

    #: The listen backlog: room for a burst of connections between two accepts.
    request_queue_size = 128

    def service_actions(self) -> None:
        """Nothing: pynetdicom calls ``gc.collect()`` here every 60 polls."""


@dataclass
class _Waiting:
    """A connection whose A-ASSOCIATE-RQ has not fully arrived."""

    sock: socket.socket
    address: Any
    deadline: float
    data: bytearray = field(default_factory=bytearray)
    need: int = 6  # the header, then the whole PDU
    handshaking: bool = False  # TLS: the handshake is not done yet


def _valid_request(pdu: bytes) -> bool:
    """Whether pynetdicom can decode ``pdu`` as an A-ASSOCIATE-RQ."""
    try:
        A_ASSOCIATE_RQ().decode(pdu)
    except Exception:
        return False
    return True


class Acceptor:
    """Listen on ``address`` for ``ae`` and hand complete association requests to pynetdicom.

    Args:
        ae: the AE (its timeouts, limits and AE title apply).
        address: ``(host, port)``; port 0 picks a free one (see :attr:`port`).
        contexts: the presentation contexts to accept (shared, never deep-copied).
        handlers: pynetdicom event handlers bound to every association.
        name: the accept thread's name.
        handoff: take connections from this Unix socket (file descriptors
            another process accepted and sent, :mod:`.receivers`) instead of
            listening on ``address`` (then only the label of :attr:`port`).
        tls: DICOM over TLS: every connection is wrapped with this server-side
            context and its handshake done before the request is read.
    """

    def __init__(
        self,
        ae: AE,
        address: tuple[str, int],
        contexts: Sequence[PresentationContext],
        handlers: Sequence[Any],
        *,
        name: str,
        handoff: socket.socket | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._ae = ae
        self._tls = tls
        server: Any = ae.make_server(
            address if handoff is None else ("127.0.0.1", 0),
            contexts=SharedContexts(contexts),
            evt_handlers=list(handlers),
            server_class=_Server,
        )
        self._server = server
        self._handoff = handoff
        self._waiting: dict[socket.socket, _Waiting] = {}
        self._stopping = False
        self._warned_full = False
        try:
            server.socket.setblocking(False)  # accept only when the selector says so
            self.port = int(server.server_address[1])
            if handoff is not None:
                server.socket.close()  # connections come through the handoff socket
                handoff.setblocking(False)
                self.port = address[1]
            self._wake_r, self._wake_w = socket.socketpair()
        except BaseException:
            server.server_close()
            raise
        self._thread = threading.Thread(target=self._serve, name=f"{name}:{self.port}", daemon=True)

    def start(self) -> None:
        """Start the accept loop."""
        try:
            self._thread.start()
        except BaseException:
            self._close()
            raise

    # -- the accept loop (its own thread) -----------------------------------------------

    def _serve(self) -> None:
        try:
            with selectors.DefaultSelector() as selector:
                if self._handoff is None:
                    selector.register(self._server.socket, selectors.EVENT_READ)
                else:
                    selector.register(self._handoff, selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                while not self._stopping:
                    for key, _ in selector.select(self._until_next_deadline()):
                        if key.fileobj is self._server.socket:
                            self._accept(selector)
                        elif key.fileobj is self._handoff:
                            self._adopt(selector)
                        elif isinstance(key.data, _Waiting):
                            self._receive(selector, key.data)
                    self._expire(selector)
        except Exception:  # pragma: no cover - defensive
            LOGGER.exception("the accept loop on port %d failed", self.port)
        finally:
            for waiting in list(self._waiting.values()):
                self._drop(None, waiting)

    def _until_next_deadline(self) -> float | None:
        if not self._waiting:
            return None
        first = min(w.deadline for w in self._waiting.values())
        return max(0.0, first - time.monotonic())

    def _accept(self, selector: selectors.BaseSelector) -> None:
        """Accept every pending connection; each waits for its request."""
        acse = self._ae.acse_timeout
        while True:
            try:
                sock, address = self._server.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: try again later
                LOGGER.warning("accept failed on port %d: %s", self.port, exc)
                return
            self._wait_for_request(selector, sock, address, acse)

    def _wait_for_request(
        self, selector: selectors.BaseSelector, sock: socket.socket, address: Any, acse: Any
    ) -> None:
        if len(self._waiting) >= MAX_WAITING:
            self._make_room(selector)
        sock.setblocking(False)
        deadline = time.monotonic() + (acse if acse is not None else float("inf"))
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except (OSError, ValueError) as exc:  # e.g. closed by its peer already
                LOGGER.info("%s: TLS not started: %s", address, exc)
                sock.close()
                return
        waiting = _Waiting(sock, address, deadline, handshaking=self._tls is not None)
        self._waiting[sock] = waiting
        selector.register(sock, selectors.EVENT_READ, waiting)

    def _adopt(self, selector: selectors.BaseSelector) -> None:
        """Take the connections another process accepted and sent (one per byte)."""
        assert self._handoff is not None
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self._handoff, 1, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, fds = b"", []
            if not data and not fds:  # the sending process is gone: no more connections
                selector.unregister(self._handoff)
                return
            for fd in fds:
                sock = socket.socket(fileno=fd)
                try:
                    address = sock.getpeername()
                except OSError:  # closed by its peer on the way
                    sock.close()
                    continue
                self._wait_for_request(selector, sock, address, self._ae.acse_timeout)

    def _make_room(self, selector: selectors.BaseSelector) -> None:
        oldest = next(iter(self._waiting.values()))  # dicts keep insertion order
        log = LOGGER.debug if self._warned_full else LOGGER.warning
        self._warned_full = True
        log(
            "%d connections on port %d are waiting to send an A-ASSOCIATE-RQ: "
            "closing the oldest (%s)",
            MAX_WAITING,
            self.port,
            oldest.address,
        )
        self._drop(selector, oldest)

    def _handshake(self, selector: selectors.BaseSelector, waiting: _Waiting) -> bool:
        """Go on with a TLS handshake; return whether it is done."""
        sock = waiting.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            selector.modify(sock, selectors.EVENT_READ, waiting)
            return False
        except ssl.SSLWantWriteError:
            selector.modify(sock, selectors.EVENT_WRITE, waiting)
            return False
        except OSError as exc:
            LOGGER.warning("%s: %s: closed", waiting.address, describe_tls_error(exc))
            if isinstance(exc, ssl.SSLError) and exc.reason == "WRONG_VERSION_NUMBER":
                _answer_in_clear(sock, _ALERT_PROTOCOL_VERSION)
            self._drop(selector, waiting)
            return False
        waiting.handshaking = False
        selector.modify(sock, selectors.EVENT_READ, waiting)
        return True

    def _receive(self, selector: selectors.BaseSelector, waiting: _Waiting) -> None:
        """Read what arrived of the request; hand it over once complete."""
        if waiting.handshaking and not self._handshake(selector, waiting):
            return
        sock = waiting.sock
        while True:
            try:
                chunk = sock.recv(min(waiting.need - len(waiting.data), 65536))
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                return
            except ssl.SSLWantWriteError:  # pragma: no cover - a renegotiation
                return
            except OSError:
                chunk = b""
            if not chunk:  # closed before its request was complete: forget it
                self._drop(selector, waiting)
                return
            waiting.data += chunk
            if waiting.need == 6 == len(waiting.data) and not self._check_header(selector, waiting):
                return
            if len(waiting.data) == waiting.need:
                self._hand_over(selector, waiting)
                return
            # Decrypted bytes held in the TLS layer wake no selector: read them now.
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                return

    def _check_header(self, selector: selectors.BaseSelector, waiting: _Waiting) -> bool:
        pdu_type, length = waiting.data[0], int.from_bytes(waiting.data[2:6], "big")
        if pdu_type in (0x16, 0x80) and self._tls is None:  # TLS / SSLv2 ClientHello
            LOGGER.warning(
                "%s opened a TLS handshake on a port without TLS: aborted", waiting.address
            )
            self._drop(selector, waiting, abort=_ABORT_UNEXPECTED)
            return False
        if pdu_type != 0x01 or length < _MIN_RQ_BODY:
            LOGGER.info(
                "%s sent PDU type 0x%02X (%d bytes) instead of an A-ASSOCIATE-RQ: aborted",
                waiting.address,
                pdu_type,
                length,
            )
            self._drop(selector, waiting, abort=_ABORT_UNEXPECTED)
            return False
        if length > MAX_CONTROL_PDU:
            LOGGER.error(
                "%s sent an A-ASSOCIATE-RQ of %d bytes, more than the %d we accept: aborted",
                waiting.address,
                length,
                MAX_CONTROL_PDU,
            )
            self._drop(selector, waiting, abort=ABORT_INVALID_PARAMETER)
            return False
        waiting.need = 6 + length
        return True

    def _hand_over(self, selector: selectors.BaseSelector, waiting: _Waiting) -> None:
        """Give the socket and its request to pynetdicom, which starts the association."""
        request = bytes(waiting.data)
        if not _valid_request(request):
            LOGGER.info(
                "%s sent an A-ASSOCIATE-RQ that cannot be decoded: aborted", waiting.address
            )
            self._drop(selector, waiting, abort=ABORT_INVALID_PARAMETER)
            return
        selector.unregister(waiting.sock)
        del self._waiting[waiting.sock]
        sock = waiting.sock
        try:
            sock.setblocking(True)
            _Handler(sock, waiting.address, self._server, request)
        except Exception:
            LOGGER.exception("could not start an association for %s", waiting.address)
            self._server.shutdown_request(sock)

    def _expire(self, selector: selectors.BaseSelector) -> None:
        now = time.monotonic()
        for waiting in [w for w in self._waiting.values() if w.deadline <= now]:
            LOGGER.info(
                "%s %s within the ACSE timeout (%s s): closed",
                waiting.address,
                "did not finish the TLS handshake"
                if waiting.handshaking
                else "sent no complete A-ASSOCIATE-RQ",
                self._ae.acse_timeout,
            )
            self._drop(selector, waiting)

    def _drop(
        self, selector: selectors.BaseSelector | None, waiting: _Waiting, abort: bytes = b""
    ) -> None:
        self._waiting.pop(waiting.sock, None)
        if selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(waiting.sock)
        if abort:
            with contextlib.suppress(OSError):
                waiting.sock.send(abort)
        waiting.sock.close()

    # -- stopping (any thread but the accept loop) ------------------------------------------

    def stop(self) -> None:
        """Stop accepting, close the listening socket and every waiting connection."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if self._thread.is_alive():
            self._thread.join()
        self._close()

    def _close(self) -> None:
        self._server.server_close()
        self._wake_r.close()
        self._wake_w.close()

    def associations(self) -> list[Any]:
        """The associations accepted and still running."""
        return list(self._server.active_associations)

    def finish(self, deadline: float, grace: float) -> None:
        """Let open associations end until ``deadline`` (monotonic), then abort the rest.

        The aborts run in parallel and are bounded (see :func:`.patches.stop_dul`),
        so this returns within ``deadline`` plus a few seconds whatever the peers do.
        """
        associations = self.associations()
        for assoc in associations:
            assoc.join(max(0.0, deadline - time.monotonic()))
        remaining = [a for a in associations if a.is_alive()]
        if not remaining:
            return
        LOGGER.warning("aborting %d association(s) still open after %.1f s", len(remaining), grace)
        _run_all([functools.partial(_abort, a) for a in remaining], name="aiodicomnet-abort")
        limit = time.monotonic() + _ABORT_BOUND
        for assoc in remaining:
            assoc.join(max(0.0, limit - time.monotonic()))
            if assoc.is_alive():  # pragma: no cover - a handler that does not return
                LOGGER.error("association thread %s did not stop", assoc.name)


def _answer_in_clear(sock: socket.socket, data: bytes) -> None:
    """Send ``data`` on the TCP connection under a TLS socket, bypassing TLS.

    What the client sent and TLS left unread is read first (a few non-blocking
    reads): closing a socket with unread data resets the connection, and the
    client may lose ``data`` with it.
    """
    fd = sock.fileno()
    with contextlib.suppress(OSError):
        for _ in range(4):
            if not os.read(fd, 65536):
                break
    with contextlib.suppress(OSError):
        os.write(fd, data)


def _abort(assoc: Any) -> None:
    """Abort an accepted association from another thread, whatever state it is in."""
    try:
        if assoc.is_established:
            assoc.abort()
        else:
            # Not (or no longer) established, e.g. waiting for its request or
            # in a handler: wake a wait for the request as the ACSE timeout
            # would, and stop its reader.
            wake_acceptor(assoc)
            stop_dul(assoc.dul)
    except Exception:  # pragma: no cover - defensive
        LOGGER.exception("aborting an association failed")


def _run_all(calls: Sequence[Callable[[], None]], *, name: str) -> None:
    """Run ``calls`` in parallel threads and join them all."""
    threads = [threading.Thread(target=call, name=name, daemon=True) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
