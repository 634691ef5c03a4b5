"""The Storage SCP: :class:`StorageServer` and its receive stream.

::

    async with StorageServer("INVESALIUS", port=11112, storage=DiskStorage("incoming")) as scp:
        async for instance in scp:          # ReceivedInstance, as they arrive
            print(instance.path)

Threads and backpressure
    pynetdicom runs each association in its own thread. Our ``EVT_C_STORE``
    handler, in that thread, stores the instance (:class:`~.storage.Storage`),
    runs the :meth:`StorageServer._on_stored` hook, then hands the instance to
    the event loop through a bounded anyio memory object stream. While the
    stream is full the handler waits, the C-STORE response is not sent, and a
    sender (which waits for each response) slows down: nothing is buffered
    without bound and nothing is acknowledged that was not stored and queued.
    How long a sender is willing to wait is its own DIMSE timeout. The event
    loop itself never touches a socket or a file; start-up (building ~170
    presentation contexts, binding) and shutdown run in threads of our own.

Status codes
    See :mod:`aiodicomnet.storage`: ``0xA700`` when storing fails for lack of
    resources (disk full, permission, I/O) or the instance cannot be queued
    because the server is closing; ``0xC000`` for a data set that cannot be
    parsed or has no SOP Instance UID; ``0xA900`` when its SOP Class differs
    from the request's; ``0xC001`` when the application's callback or hook
    raised. In every failure case the stored file is removed and the server
    goes on serving.

At the door
    The calling AE title allowlist rejects with result 1 (permanent), source
    1 (service-user), reason 3 (calling-AE-title-not-recognized); a wrong
    called AE title with reason 7 (called-AE-title-not-recognized); more than
    ``max_associations`` at once with result 2 (transient), source 3
    (presentation provider), reason 2 (local-limit-exceeded).

Shutdown
    Leaving the ``async with`` block stops accepting at once and closes the
    receive stream (the consumer is gone): instances arriving from then on are
    refused with ``0xA700``, or with ``stream=False`` stored and acknowledged
    as usual. Associations still open may finish for ``grace`` seconds; the
    rest are aborted. Instances already queued but never read were stored and
    acknowledged: on disk they stay; in memory they are dropped (and logged).
    No thread, socket or file descriptor of the server outlives the block.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydicom.dataset import Dataset
from pydicom.uid import (
    AllTransferSyntaxes,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, AllStoragePresentationContexts, build_context, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from ._dimse.bridge import run_in_thread
from ._dimse.patches import CONN_OPEN_HANDLER, RequestorAE
from .nodes import Node, validate_ae_title
from .storage import (
    CallbackStorage,
    DeliveryRefused,
    MemoryStorage,
    ReceivedInstance,
    Storage,
    handle_store,
)
from .timeouts import Timeouts

__all__ = ["STORAGE_TRANSFER_SYNTAXES", "StorageServer", "Subscription"]

LOGGER = logging.getLogger("aiodicomnet.server")

_UNCOMPRESSED = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)
# JPIP HTJ2K Referenced Deflate has a deflated data set that pydicom does not
# flag as deflated; we could not parse its header, so we do not accept it.
_NOT_ACCEPTED = frozenset({"1.2.840.10008.1.2.4.205"})

#: Transfer syntaxes accepted for every storage SOP class, in order of
#: preference when a requestor proposes several in one presentation context:
#: uncompressed first, then every compressed syntax pydicom knows (stored as
#: received, never transcoded).
STORAGE_TRANSFER_SYNTAXES: tuple[str, ...] = (
    *_UNCOMPRESSED,
    *(ts for ts in AllTransferSyntaxes if ts not in _UNCOMPRESSED and ts not in _NOT_ACCEPTED),
)

DEFAULT_MAX_PDU = 256 * 1024


@functools.cache
def _storage_contexts() -> tuple[PresentationContext, ...]:
    """Verification and every storage SOP class, built once per process (~35 ms).

    Never handed out as such: :meth:`StorageServer._contexts` returns copies.
    """
    contexts = [build_context(Verification, list(_UNCOMPRESSED))]
    syntaxes = list(STORAGE_TRANSFER_SYNTAXES)
    for cx in AllStoragePresentationContexts:
        assert cx.abstract_syntax is not None
        contexts.append(build_context(cx.abstract_syntax, syntaxes))
    return tuple(contexts)


def _copy_context(cx: PresentationContext) -> PresentationContext:
    """A copy of a context that can be modified without touching the original.

    (A deep copy of all ~170 takes ~30 ms; their UIDs are immutable strings.)
    """
    new = copy.copy(cx)
    syntaxes = getattr(cx, "_transfer_syntax", None)
    if not isinstance(syntaxes, list):  # pragma: no cover - another pynetdicom
        return copy.deepcopy(cx)
    new._transfer_syntax = list(syntaxes)
    return new


def _offer(stream: MemoryObjectSendStream[ReceivedInstance], instance: ReceivedInstance) -> bool:
    """Queue ``instance`` if there is room now (runs on the event loop)."""
    try:
        stream.send_nowait(instance)
    except anyio.WouldBlock:
        return False
    return True


class _SharedContexts(list[PresentationContext]):
    """The server's supported contexts, shared (not copied) by its associations.

    pynetdicom deep-copies the acceptor's supported contexts for every new
    association: with ~170 storage SOP classes times ~40 transfer syntaxes
    that is ~35 ms of CPU (holding the GIL) per association. Negotiation only
    reads them (``negotiate_as_acceptor`` builds new result contexts), so a
    shallow copy is enough.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        return list(self)


class _Server(ThreadedAssociationServer):
    """pynetdicom's threaded server, run by our own accept loop."""

    def service_actions(self) -> None:
        """Nothing: pynetdicom calls ``gc.collect()`` here every 60 polls."""

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept, and make the new socket blocking whatever the platform inherits."""
        sock, address = super().get_request()
        sock.setblocking(True)
        return sock, address


class Subscription:
    """Instances matching a predicate, routed away from the main stream.

    Made by :meth:`StorageServer._subscribe`; a context manager. Either it has
    its own bounded stream (``receive``, iterate it on the event loop), or it
    hands each instance to a ``deliver`` callable in the association thread.
    Closing unsubscribes and closes the stream (instances still queued in it
    are dropped, so drain it first).

    Attributes:
        match: the predicate, called in the association thread.
        receive: the receive end of the subscription's stream; ``None`` when
            made with ``deliver``.
        closed: whether it was closed (or its ``deliver`` refused an instance).
    """

    def __init__(
        self,
        server: StorageServer,
        match: Callable[[ReceivedInstance], bool],
        buffer: int,
        deliver: Callable[[ReceivedInstance], None] | None = None,
    ) -> None:
        self.match = match
        self.closed = False
        self._server = server
        self._deliver = deliver
        self._send: MemoryObjectSendStream[ReceivedInstance] | None = None
        self.receive: MemoryObjectReceiveStream[ReceivedInstance] | None = None
        if deliver is None:
            self._send, self.receive = anyio.create_memory_object_stream[ReceivedInstance](buffer)

    def close(self) -> None:
        """Unsubscribe and close the stream (call on the event loop)."""
        self.closed = True
        self._server._unsubscribe(self)
        if self._send is not None:
            self._send.close()
        if self.receive is not None:
            self.receive.close()

    def __enter__(self) -> Subscription:
        """The subscription itself; it is closed on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __aiter__(self) -> MemoryObjectReceiveStream[ReceivedInstance]:
        """Iterate the subscription's stream."""
        if self.receive is None:
            raise TypeError("this subscription delivers to a callable; it has no stream")
        return self.receive


class StorageServer:
    """A Storage SCP (and Verification SCP) as an async context manager.

    Args:
        ae_title: our AE title.
        host: the address to listen on.
        port: the TCP port; 0 picks a free one (see :attr:`port`).
        storage: where instances go; default :class:`~.storage.MemoryStorage`.
        allowed_calling_aets: if given, only these calling AE titles may associate.
        check_called_aet: reject associations that do not call ``ae_title``.
        max_associations: simultaneous associations; more are rejected (transient).
        max_pdu: the largest PDU we accept (0: no limit). Larger PDUs mean
            fewer Python-level round trips per instance.
        timeouts: ``acse``, ``dimse`` and ``network`` apply to every association.
        buffer: how many received instances may wait in the stream.
        stream: queue instances for ``async for``. ``None`` (default) means
            yes, except with a :class:`~.storage.CallbackStorage` (whose
            callback already consumes them). With ``False`` instances are
            stored and acknowledged without being queued.
        grace: seconds that open associations may go on after the block exits.
    """

    def __init__(
        self,
        ae_title: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        storage: Storage | None = None,
        allowed_calling_aets: list[str] | tuple[str, ...] | set[str] | None = None,
        check_called_aet: bool = True,
        max_associations: int = 16,
        max_pdu: int = DEFAULT_MAX_PDU,
        timeouts: Timeouts = Timeouts(),  # noqa: B008 - immutable value
        buffer: int = 16,
        stream: bool | None = None,
        grace: float = 5.0,
    ) -> None:
        self.ae_title = validate_ae_title(ae_title)
        self.host = host
        self._requested_port = port
        self.storage = storage if storage is not None else MemoryStorage()
        self.allowed_calling_aets = (
            None
            if allowed_calling_aets is None
            else sorted({validate_ae_title(t) for t in allowed_calling_aets})
        )
        self.check_called_aet = check_called_aet
        if max_associations < 1:
            raise ValueError("max_associations must be at least 1")
        self.max_associations = max_associations
        if max_pdu < 0:
            raise ValueError("max_pdu must be 0 (no limit) or positive")
        self.max_pdu = max_pdu
        self.timeouts = timeouts
        if buffer < 0:
            raise ValueError("buffer must be 0 or more")
        self.buffer = buffer
        self.stream = not isinstance(self.storage, CallbackStorage) if stream is None else stream
        self.grace = grace

        self._lock = threading.Lock()
        self._subscriptions: list[Subscription] = []
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._bound: Storage = self.storage
        self._send: MemoryObjectSendStream[ReceivedInstance] | None = None
        self._receive: MemoryObjectReceiveStream[ReceivedInstance] | None = None
        self._ae: AE | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._stopping = False
        self._closing = False
        self._port = 0

    # -- public ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port we listen on (the real one when 0 was asked)."""
        if not self._port:
            raise RuntimeError("the server is not running")
        return self._port

    @property
    def node(self) -> Node:
        """A :class:`~.nodes.Node` for reaching this server (AE title, host, port)."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return Node(self.ae_title, host, self.port)

    async def __aenter__(self) -> StorageServer:
        if self._server is not None:
            raise RuntimeError("the server is already running")
        self._token = anyio.lowlevel.current_token()
        self._bound = self.storage.bind(self._token)
        self._send, self._receive = anyio.create_memory_object_stream[ReceivedInstance](self.buffer)
        self._stopping = self._closing = False
        try:
            # Building the contexts and binding take CPU time: not on the loop.
            # Shielded: a cancellation must not leave a half-started server.
            with anyio.CancelScope(shield=True):
                await self._in_thread(self._start)
        except BaseException:
            self._close_streams()
            self._close_wake()
            raise
        LOGGER.info(
            "%s listening on %s:%d (storage: %s)",
            self.ae_title,
            self.host,
            self._port,
            self._bound.describe(),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self._shutdown()

    def __aiter__(self) -> StorageServer:
        return self

    async def __anext__(self) -> ReceivedInstance:
        """The next received instance (waits for one)."""
        if not self.stream:
            raise RuntimeError("this server was made with stream=False: nothing is queued")
        if self._receive is None:
            raise RuntimeError("the server is not running")
        self._check_loop()
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    # -- hooks for subclasses and the client ------------------------------------------

    def _contexts(self) -> list[PresentationContext]:
        """The presentation contexts we accept, as SCP.

        Verification, and every storage SOP class pynetdicom knows with
        :data:`STORAGE_TRANSFER_SYNTAXES`. A subclass extends the list (for
        example with Query/Retrieve Find, Move and Get). The 128-context limit
        binds only requestors; an acceptor may support any number.
        """
        return [_copy_context(cx) for cx in _storage_contexts()]

    def _handlers(self) -> list[tuple[Any, Callable[..., Any]]]:
        """pynetdicom event handlers bound to every association of the server.

        Includes :data:`~aiodicomnet._dimse.patches.CONN_OPEN_HANDLER` (TCP tuning) and the
        ``EVT_C_STORE`` handler. A subclass extends the list (for example with
        ``EVT_C_FIND``); handlers run in the association's thread. Called once
        when the server starts, in a worker thread.
        """
        return [
            CONN_OPEN_HANDLER,
            (evt.EVT_C_STORE, self._on_c_store),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ABORTED, self._on_aborted),
        ]

    def _on_stored(self, instance: ReceivedInstance) -> None:
        """Called in the association thread once ``instance`` is stored.

        Runs before the instance is queued and before the C-STORE response is
        sent. If it raises, the sender gets a failure status (``0xA700`` for
        :class:`OSError`, else ``0xC001``) and the stored file is removed.
        The default does nothing; the archive indexes the instance here.
        """

    def _on_discarded(self, instance: ReceivedInstance) -> None:
        """Called in the association thread when an instance that passed
        :meth:`_on_stored` is removed because it could not be queued (server
        closing). The default does nothing; an index undoes its entry here.
        """

    def _subscribe(
        self,
        match: Callable[[ReceivedInstance], bool],
        buffer: int = 16,
        *,
        deliver: Callable[[ReceivedInstance], None] | None = None,
    ) -> Subscription:
        """Route instances for which ``match(instance)`` is true to a new stream.

        Call on the event loop while the server runs. A matching instance goes
        to the subscription's stream *instead of* the main stream, and is
        queued there (waiting while it is full) *before* its C-STORE response
        is sent; so when a C-MOVE's final response arrives, every instance it
        moved is already in the subscription's stream. ``match`` runs in the
        association thread and should be quick; if it raises, it counts as no
        match. Subscriptions are tried in the order they were made. Once the
        subscription is closed, instances it would have matched go to the main
        stream (or, with ``stream=False``, are only stored).

        With ``deliver``, no stream is made: ``deliver(instance)`` is called
        in the association thread instead (it may block, for backpressure),
        again before the response is sent. If it raises, the subscription is
        closed and the instance goes where it would go without it.
        """
        if self._token is None or self._closing:
            raise RuntimeError("the server is not running")
        self._check_loop()
        subscription = Subscription(self, match, buffer, deliver)
        with self._lock:
            self._subscriptions.append(subscription)
        return subscription

    def _check_loop(self) -> None:
        """Refuse use from another event loop than the one the server runs on.

        The association threads hand instances to the loop the server was
        entered on; from another loop (say, an async test fixture on a
        session-scoped loop and a test on its own) nothing would ever arrive
        while that loop is not running, and senders would time out.
        """
        token = self._token
        if token is not None and (
            anyio.lowlevel.current_token().native_token is not token.native_token
        ):
            raise RuntimeError(
                "the StorageServer runs on another event loop: enter it and use it on the same one"
            )

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

    # -- association thread side -----------------------------------------------------

    def _on_c_store(self, event: evt.Event) -> Dataset:
        return handle_store(event, self._bound, self._deliver, logger=LOGGER)

    def _deliver(self, instance: ReceivedInstance) -> None:
        self._on_stored(instance)
        try:
            self._route(instance)
        except BaseException:
            try:
                self._on_discarded(instance)
            except Exception:
                LOGGER.exception("_on_discarded failed for %s", instance.sop_instance_uid)
            raise

    def _route(self, instance: ReceivedInstance) -> None:
        """Hand ``instance`` to its subscription or the main stream, waiting if full."""
        tried: set[int] = set()
        while True:
            chosen = self._claimant(instance, tried)
            if chosen is None:
                if self.stream:
                    self._queue(self._send, instance)
                return
            try:
                if chosen._deliver is not None:
                    chosen._deliver(instance)
                else:
                    self._queue(chosen._send, instance)
                return
            except Exception as exc:
                LOGGER.debug("subscription gone (%r); routing the instance elsewhere", exc)
                chosen.closed = True
                tried.add(id(chosen))

    def _claimant(self, instance: ReceivedInstance, tried: set[int]) -> Subscription | None:
        """The first open subscription (not in ``tried``) whose predicate matches."""
        with self._lock:
            candidates = [s for s in self._subscriptions if id(s) not in tried and not s.closed]
        for subscription in candidates:
            try:
                if subscription.match(instance):
                    return subscription
            except Exception:
                LOGGER.exception("subscription predicate raised; treated as no match")
        return None

    def _queue(
        self, target: MemoryObjectSendStream[ReceivedInstance] | None, instance: ReceivedInstance
    ) -> None:
        """Put ``instance`` in a stream, waiting while it is full (association thread).

        Raises:
            DeliveryRefused: the stream is closed or the event loop is gone.
        """
        token = self._token
        if target is None or token is None:
            raise DeliveryRefused("the server is closing")
        try:
            # A plain call on the loop when there is room (cheaper than a
            # task); otherwise wait in send() until there is.
            if not anyio.from_thread.run_sync(_offer, target, instance, token=token):
                anyio.from_thread.run(target.send, instance, token=token)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise DeliveryRefused("the server is closing") from None
        except RuntimeError as exc:  # the event loop is gone
            raise DeliveryRefused(f"the event loop is gone: {exc}") from exc

    def _on_accepted(self, event: evt.Event) -> None:
        requestor = event.assoc.requestor
        LOGGER.debug(
            "association accepted from %s (%s:%s)",
            requestor.ae_title,
            requestor.address,
            requestor.port,
        )

    def _on_rejected(self, event: evt.Event) -> None:
        requestor = event.assoc.requestor
        LOGGER.info(
            "association rejected from %s (%s:%s)",
            requestor.ae_title,
            requestor.address,
            requestor.port,
        )

    def _on_aborted(self, event: evt.Event) -> None:
        LOGGER.info("association with %s aborted", event.assoc.requestor.ae_title)

    # -- start and stop --------------------------------------------------------------

    def _make_ae(self) -> AE:
        # A RequestorAE: associations this AE *requests* (an Archive's C-MOVE
        # sub-associations) get the same TCP tuning and reactor lock as the
        # client's; accepted associations are not affected.
        ae = RequestorAE(self.ae_title)
        ae.maximum_associations = self.max_associations
        ae.maximum_pdu_size = self.max_pdu
        ae.acse_timeout = self.timeouts.acse
        ae.dimse_timeout = self.timeouts.dimse
        ae.network_timeout = self.timeouts.network
        ae.require_called_aet = self.check_called_aet
        ae.require_calling_aet = list(self.allowed_calling_aets or [])
        return ae

    def _start(self) -> None:
        """Bind, listen and start the accept loop (in a thread of ours, not on the loop)."""
        ae = self._make_ae()
        contexts = _SharedContexts(self._contexts())
        server = ae.make_server(
            (self.host, self._requested_port),
            contexts=contexts,
            evt_handlers=list(self._handlers()),
            server_class=_Server,
        )
        try:
            assert server.socket is not None
            server.socket.setblocking(False)  # accept only when select() says so
            port = int(server.server_address[1])
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            thread = threading.Thread(
                target=self._serve,
                args=(server,),
                name=f"aiodicomnet-scp-{self.ae_title}:{port}",
                daemon=True,
            )
            thread.start()
        except BaseException:
            server.server_close()
            self._close_wake()
            raise
        self._ae, self._server, self._port, self._thread = ae, server, port, thread

    def _serve(self, server: Any) -> None:
        """The accept loop (our thread): wakes on a connection or on stop."""
        assert self._wake_r is not None
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(server.socket, selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                while not self._stopping:
                    ready = selector.select()
                    if self._stopping:
                        break
                    for key, _ in ready:
                        if key.fileobj is server.socket:
                            # accept (non-blocking listener) and start the association
                            server._handle_request_noblock()
        except Exception:  # pragma: no cover - defensive
            LOGGER.exception("the accept loop of %s failed", self.ae_title)

    async def _shutdown(self) -> None:
        if self._server is None:
            return
        self._closing = True
        dropped = self._close_streams()
        if dropped:
            LOGGER.warning(
                "%d instance(s) stored and acknowledged but never read from the stream", dropped
            )
        deadline = time.monotonic() + self.grace
        await self._in_thread(self._stop_listening)
        await self._in_thread(self._finish_associations, deadline)
        self._close_wake()
        self._server = None
        self._ae = None
        self._thread = None
        LOGGER.info("%s on port %d stopped", self.ae_title, self._port)
        self._port = 0

    def _close_streams(self) -> int:
        """Close the main stream and every subscription; return how many were unread."""
        dropped = 0
        if self._receive is not None:
            dropped = self._receive.statistics().current_buffer_used
            self._receive.close()
        if self._send is not None:
            self._send.close()
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.close()
        return dropped

    def _close_wake(self) -> None:
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._wake_r = self._wake_w = None

    def _stop_listening(self) -> None:
        """Stop the accept loop, close the listening socket, reap request threads."""
        self._stopping = True
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")
        if self._thread is not None:
            self._thread.join()
        # Closes the listening socket and joins the short-lived request threads
        # (each only creates and starts an association thread).
        self._server.server_close()

    def _associations(self) -> list[Any]:
        ae = self._ae
        return [] if ae is None else [a for a in ae.active_associations if a.is_acceptor]

    def _finish_associations(self, deadline: float) -> None:
        """Let open associations finish until ``deadline``, then abort the rest."""
        associations = self._associations()
        for assoc in associations:
            assoc.join(max(0.0, deadline - time.monotonic()))
        remaining = [a for a in associations if a.is_alive()]
        if remaining:
            LOGGER.warning(
                "aborting %d association(s) still open after %.1f s", len(remaining), self.grace
            )
        for assoc in remaining:
            try:
                if assoc.is_established:
                    assoc.abort()
                else:
                    # Still waiting for the A-ASSOCIATE-RQ (a peer that connected
                    # and went quiet): pynetdicom cannot abort from that state;
                    # wake the wait as its ACSE timeout would.
                    assoc.dul.to_user_queue.put(None)
            except Exception:  # pragma: no cover - defensive
                LOGGER.exception("aborting an association failed")
        for assoc in remaining:
            assoc.join(10.0)
            if assoc.is_alive():  # pragma: no cover - pynetdicom stuck
                LOGGER.error("association thread %s did not stop", assoc.name)

    async def _in_thread(self, fn: Callable[..., None], *args: Any) -> None:
        """Run blocking ``fn`` in a thread of our own (:func:`._dimse.bridge.run_in_thread`)."""
        await run_in_thread(fn, *args)
