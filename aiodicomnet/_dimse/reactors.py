"""Event-driven reactors: pynetdicom's two threads per association wake on events, not a clock.

pynetdicom runs two loops per association, and both poll:

* the DUL reactor (``DULServiceProvider.run_reactor``, the reader/writer
  thread) sleeps 1 ms whenever it finds nothing to do, then looks again at
  its socket and its queue of primitives to send;
* the association reactor (``Association._run_reactor``) sleeps 1 ms before
  every look at its DIMSE queue (requests from the peer) and its ACSE state.

So a response waits up to 1 ms for the DUL to notice a queued message, a
request up to 1 ms for the reactor to take it, and an idle association wakes
2,000 times a second (measured: C-ECHO on an open association ~2.5 ms, where
DCMTK takes ~0.3 ms; docs/benchmarks.md).

Here both loops keep pynetdicom's logic, step by step, and replace the sleep
with a wait that ends when something happens:

* :class:`_EventedDUL` waits in a selector on its socket (readable: a PDU, or
  the connection closed) and on a :class:`Waker` (a socket pair) that is
  poked whenever a primitive is queued to send, an event is queued, or the
  thread is told to stop (``_kill_thread`` is a property whose setter wakes);
  the ARTIM timer bounds the wait.
* :class:`EventedAssociation`'s reactor waits on a :class:`threading.Event`
  set when a DIMSE message or an ACSE primitive is queued for it, when the
  DUL thread ends, or when the association is killed; the network (idle)
  timer bounds the wait.

Every wait is also bounded by :data:`SAFETY_WAKE`, so a wake-up source this
module did not know of (a pynetdicom upgrade) costs latency, never a hang.

:func:`make_event_driven` installs both on one association before its threads
start (the requestor from :class:`~.patches.RequestorAE`, the acceptor from
:func:`~.patches.tune_association`).  Tested in
``tests/test_pynetdicom_patches.py``: no reactor calls ``time.sleep``.

On a pynetdicom upgrade: compare :func:`_dul_loop` with
``DULServiceProvider.run_reactor`` and :meth:`EventedAssociation._run_reactor`
with ``Association._run_reactor``; the steps are in the same order, with the
same names.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import selectors
import socket
import ssl
import threading
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association as _PynetAssociation
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.utils import make_target

from .wire import read_p_data

__all__ = ["SAFETY_WAKE", "EventedAssociation", "Waker", "make_event_driven"]

LOGGER = logging.getLogger("aiodicomnet._dimse.reactors")

#: The longest a reactor waits without an event (seconds): a safety net only.
SAFETY_WAKE = 0.25


class Waker:
    """A socket pair one thread waits on in a selector and others poke."""

    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)

    def fileno(self) -> int:
        return self._r.fileno()

    def wake(self) -> None:
        """Make the waiting thread's selector return (a no-op once closed)."""
        with contextlib.suppress(OSError):  # full (already poked) or closed
            self._w.send(b"\0")

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            while self._r.recv(4096):
                pass

    def close(self) -> None:
        self._r.close()
        self._w.close()


def _waking_put(q: queue.Queue[Any], wake: Any) -> None:
    """Make ``q.put`` (on this queue instance only) call ``wake()`` after putting."""
    put = q.put

    def put_and_wake(item: Any, block: bool = True, timeout: float | None = None) -> None:
        put(item, block, timeout)
        wake()

    q.put = put_and_wake  # type: ignore[method-assign]


class _EventedDUL(DULServiceProvider):
    """pynetdicom's DUL whose stop request (``_kill_thread = True``) wakes its thread,
    and which reads P-DATA-TF PDUs in the data transfer state through
    :func:`.wire.read_p_data` (everything else as pynetdicom does)."""

    def _read_pdu_data(self) -> None:
        """``DULServiceProvider._read_pdu_data``, with P-DATA-TF in Sta6 read by :mod:`.wire`."""
        if (
            self.state_machine.current_state != "Sta6"
            or not self.event_queue.empty()
            or not hasattr(self.socket, "_adn_unread")  # not our receive (TLS)
        ):
            super()._read_pdu_data()
            return
        sock: Any = self.socket
        try:
            header = sock.recv(6)
        except (OSError, TimeoutError) as exc:
            LOGGER.error("Connection closed before the entire PDU was received: %s", exc)
            self.event_queue.put("Evt17")
            return
        if len(header) == 6 and header[0] == 0x04:
            read_p_data(self, header)
            return
        # Any other PDU: as pynetdicom, its header already read.
        sock._adn_unread(header)
        super()._read_pdu_data()

    @property
    def _kill_thread(self) -> bool:
        return bool(self.__dict__.get("_kill_thread", False))

    @_kill_thread.setter
    def _kill_thread(self, value: bool) -> None:
        self.__dict__["_kill_thread"] = value
        waker = self.__dict__.get("_adn_waker")
        if value and waker is not None:
            waker.wake()


def _dul_loop(dul: Any) -> None:
    """``DULServiceProvider.run_reactor``, waiting for events instead of sleeping."""
    waker: Waker = dul._adn_waker
    selector = selectors.DefaultSelector()
    selector.register(waker, selectors.EVENT_READ)
    watched: list[socket.socket] = []  # the connection's socket, once registered
    assoc = dul.assoc
    dul._idle_timer.start()
    try:
        while True:
            if not assoc._dul_ready.is_set():
                assoc._dul_ready.set()
            if dul._kill_thread:
                break
            # The ARTIM timer first, so its event is queued ahead of others.
            if dul.artim_timer.expired:
                dul.event_queue.put("Evt18")
            try:
                # Encode and send one primitive, or receive and decode one PDU.
                if dul._process_recv_primitive():
                    pass
                elif dul._is_transport_event():
                    dul._idle_timer.restart()
            except Exception as exc:
                _abort_on_error(dul, exc)
                return
            try:
                event = dul.event_queue.get(block=False)
            except queue.Empty:
                _wait(dul, selector, waker, watched)
                continue
            dul.state_machine.do_action(event)
    finally:
        selector.close()
        waker.close()
        wake = assoc.__dict__.get("_adn_wake")
        if wake is not None:
            wake.set()  # the association reactor checks dul.is_alive()


def _abort_on_error(dul: Any, exc: Exception) -> None:
    """What pynetdicom's reactor does on an exception: A-ABORT, bypassing the state machine."""
    LOGGER.error("Exception in DUL.run(), aborting association")
    LOGGER.exception(exc)
    abort_pdu = A_ABORT_RQ()
    abort_pdu.source = 0x02
    abort_pdu.reason_diagnostic = 0x00
    with contextlib.suppress(OSError):
        dul.socket.send(abort_pdu.encode())
    dul.assoc.is_aborted = True
    dul.assoc.is_established = False
    dul.assoc._kill = True
    dul._kill_thread = True


def _wait(
    dul: Any, selector: selectors.BaseSelector, waker: Waker, watched: list[socket.socket]
) -> None:
    """Block until the socket is readable, the waker is poked, or the ARTIM timer is due."""
    assoc_sock = dul.socket
    if getattr(assoc_sock, "_adn_pending", None):
        return  # bytes read before pynetdicom took the socket over: not in the kernel
    raw: socket.socket | None = getattr(assoc_sock, "socket", None)
    if isinstance(raw, ssl.SSLSocket) and raw.pending():
        return  # decrypted bytes waiting in the TLS layer, not in the kernel
    usable = raw is not None and getattr(assoc_sock, "_is_connected", False) and raw.fileno() >= 0
    if watched and (not usable or watched[0] is not raw):
        with contextlib.suppress(KeyError, ValueError, OSError):
            selector.unregister(watched[0])
        watched.clear()
    if usable and raw is not None and not watched:
        try:
            selector.register(raw, selectors.EVENT_READ)
            watched.append(raw)
        except (KeyError, ValueError, OSError):
            return  # closed under us: the next look at it says so
    timeout = SAFETY_WAKE
    artim = dul.artim_timer
    if artim.timeout is not None:
        timeout = max(0.0, min(timeout, artim.remaining))
    try:
        selector.select(timeout)
    except (OSError, ValueError):  # pragma: no cover - the socket closed under the selector
        return
    waker.drain()


class EventedAssociation(_PynetAssociation):
    """pynetdicom's Association whose reactor waits on an event instead of sleeping 1 ms.

    The event-driven reactor runs when :func:`make_event_driven` prepared the
    association before its threads started; otherwise pynetdicom's own.
    Setting ``_kill`` (the association is ending) wakes the reactor.
    """

    @property
    def _kill(self) -> bool:
        return bool(self.__dict__.get("_kill", False))

    @_kill.setter
    def _kill(self, value: bool) -> None:
        self.__dict__["_kill"] = value
        wake = self.__dict__.get("_adn_wake")
        if value and wake is not None:
            wake.set()

    def _run_reactor(self) -> None:
        """``Association._run_reactor``, step by step, with the sleep replaced by a wait."""
        wake: threading.Event | None = self.__dict__.get("_adn_wake")
        if wake is None:
            super()._run_reactor()
            return
        self._is_paused = False
        busy = False
        while not self._kill:
            if not busy:
                idle = self.dul._idle_timer
                timeout = SAFETY_WAKE
                if idle.timeout is not None:
                    timeout = max(0.0, min(timeout, idle.remaining))
                wake.wait(timeout)
            wake.clear()  # anything queued from here on sets it again

            # Paused while a send_c_*() of ours waits for its response.
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            context_id, msg = self.dimse.get_msg(block=False)
            busy = msg is not None
            if msg:
                self._serve_request(msg, context_id)  # type: ignore[arg-type]

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                LOGGER.info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                log_msg = "Association Aborted"
                if self.acse.is_aborted("a-p-abort"):
                    log_msg += " (A-P-ABORT)"
                LOGGER.info(log_msg)
                self.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                LOGGER.error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


def make_event_driven(assoc: Any) -> None:
    """Make one association's reactors event-driven, if its threads have not started yet.

    The association must be an :class:`EventedAssociation` (the classes of
    :mod:`.patches` derive from it); one whose DUL already runs (the reader
    thread connects a requestor's socket, so ``EVT_CONN_OPEN`` comes too late)
    keeps pynetdicom's polling reactors.
    """
    dul = assoc.dul
    if dul.is_alive() or dul.ident is not None or isinstance(dul, _EventedDUL):
        return
    waker = Waker()
    dul.__class__ = _EventedDUL
    dul.__dict__["_adn_waker"] = waker
    _waking_put(dul.to_provider_queue, waker.wake)
    _waking_put(dul.event_queue, waker.wake)
    # threading.Thread bound its target to the original run_reactor in __init__.
    dul._target = make_target(lambda: _dul_loop(dul))

    wake = threading.Event()
    _waking_put(assoc.dimse.msg_queue, wake.set)
    _waking_put(dul.to_user_queue, wake.set)
    assoc.__dict__["_adn_wake"] = wake
