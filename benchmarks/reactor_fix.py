"""A prototype fix for a race in pynetdicom 3.0's association reactor (benchmarks only).

The race
    Each pynetdicom ``Association`` runs a reactor thread that polls the DIMSE
    queue for incoming *requests*. Before sending a request and waiting for
    its response, ``send_c_echo()`` / ``send_c_store()`` / ... pause it::

        # send_*() (our thread)                # reactor thread, every ~1 ms
        self._reactor_checkpoint.clear()       self._is_paused = True
        while not self._is_paused:             self._reactor_checkpoint.wait()
            time.sleep(0.0001)                 self._is_paused = False
        self.dimse.send_msg(request)           msg = self.dimse.get_msg(block=False)
        rsp = self.dimse.get_msg(block=True)   if msg: self._serve_request(msg)

    ``_is_paused`` is set *before* ``wait()``, and ``wait()`` may already have
    returned (the checkpoint was set by the previous ``send_*()``) when the
    sender clears it and reads ``_is_paused`` as True. The reactor then goes on
    to ``get_msg(block=False)``; if the response has arrived by then (a fast
    peer, Nagle off) the reactor takes it, logs "Received unexpected C-ECHO
    service message" and drops it, and the sender waits for the DIMSE timeout
    and aborts the association. The same handshake costs the sender up to one
    reactor period (~1 ms) of ``sleep(0.0001)`` polling when the reactor is
    in its ``sleep(0.001)`` at that moment, which it is whenever the next
    request comes a little later than immediately (as after a hop through an
    event loop).

The fix prototyped here
    A lock makes "is a send_*() waiting?" and "take a message" one step for
    the reactor, and ``_is_paused`` always reads True so the sender never
    spins: the reactor takes a message only while the checkpoint is set,
    holding the lock; the sender, having cleared the checkpoint, takes the
    lock once before sending its request. So no response to a request can
    reach the reactor, and no sender waits for the reactor.

It is applied per association, before its threads start, from the
requestor AE's ``_create_socket`` (the hook aiodicomnet's ``RequestorAE``
already uses). Used by the ``race`` benchmark to measure the effect; it is a
suggestion for ``aiodicomnet.association``, not something the library does.
"""

from __future__ import annotations

import threading
from typing import Any

from pynetdicom.association import Association as _PynetAssociation

from aiodicomnet._tcp import RequestorAE


class _NeverWaitingAssociation(_PynetAssociation):  # type: ignore[misc]
    """``_is_paused`` always True: the lock below does the reactor's exclusion."""

    @property
    def _is_paused(self) -> bool:
        return True

    @_is_paused.setter
    def _is_paused(self, value: bool) -> None:
        pass


def apply(assoc: Any) -> None:
    """Make ``assoc``'s reactor and its ``send_*()`` calls exclude each other properly."""
    lock = threading.Lock()
    dimse = assoc.dimse
    get_msg, send_msg = dimse.get_msg, dimse.send_msg

    def guarded_get_msg(block: bool = False) -> Any:
        if block:  # send_*() waiting for its response
            return get_msg(True)
        with lock:  # the reactor, polling
            # looked up each time: the checkpoint object may be replaced later
            if not assoc._reactor_checkpoint.is_set():
                return None, None
            return get_msg(False)

    def guarded_send_msg(*args: Any, **kwargs: Any) -> Any:
        with lock:  # a reactor poll that started before clear() has finished
            pass
        return send_msg(*args, **kwargs)

    dimse.get_msg = guarded_get_msg
    dimse.send_msg = guarded_send_msg
    assoc.__class__ = _NeverWaitingAssociation


class FixedRequestorAE(RequestorAE):  # type: ignore[misc]
    """aiodicomnet's RequestorAE with :func:`apply` on every association it requests."""

    def _create_socket(self, assoc: Any, address: Any, tls_args: Any) -> Any:
        apply(assoc)
        return super()._create_socket(assoc, address, tls_args)


def install() -> None:
    """Use the fix for every association aiodicomnet requests in this process."""
    import aiodicomnet.association as association_module

    association_module.RequestorAE = FixedRequestorAE  # type: ignore[misc]
