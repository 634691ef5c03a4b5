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
import functools
import logging
import os
import pickle
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

import anyio
import anyio.lowlevel
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, build_context, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from . import transfer_syntaxes as _ts
from ._dimse.acceptor import Acceptor
from ._dimse.association import check_identity, handle_report
from ._dimse.bridge import Closed, Inlet, Outbox, outbox, run_in_thread
from ._dimse.contexts import commitment_report_context
from ._dimse.incoming import handle_store
from ._dimse.patches import CONN_OPEN_HANDLER, RequestorAE
from ._dimse.patches import copy_context as _copy_context
from ._dimse.receivers import HANDOFF, ReceiverPool, ReceiverSpec, make_acceptor_ae
from .identity import IdentityOffer
from .nodes import Node, validate_ae_title
from .storage import (
    CallbackStorage,
    DeliveryRefused,
    DiskStorage,
    MemoryStorage,
    ReceivedInstance,
    Storage,
    _resource_error,
)
from .timeouts import Timeouts

__all__ = ["STORAGE_TRANSFER_SYNTAXES", "StorageServer", "Subscription"]

LOGGER = logging.getLogger("aiodicomnet.server")

#: Transfer syntaxes accepted for every storage SOP class, in order of
#: preference (:data:`aiodicomnet.transfer_syntaxes.STORAGE`): every
#: compressed syntax pydicom knows first (a requestor proposing one holds
#: data in it), then the uncompressed ones; stored as received.
STORAGE_TRANSFER_SYNTAXES: tuple[str, ...] = _ts.STORAGE

DEFAULT_MAX_PDU = 256 * 1024


@functools.cache
def _storage_contexts() -> tuple[PresentationContext, ...]:
    """Verification and every storage SOP class, built once per process (~35 ms).

    Never handed out as such: :meth:`StorageServer._contexts` returns copies.
    """
    contexts = [build_context(Verification, list(_ts.NATIVE))]
    syntaxes = list(STORAGE_TRANSFER_SYNTAXES)
    for cx in AllStoragePresentationContexts:
        assert cx.abstract_syntax is not None
        contexts.append(build_context(cx.abstract_syntax, syntaxes))
    return tuple(contexts)


class Subscription:
    """Instances matching a predicate, routed away from the main stream.

    Made by :meth:`StorageServer.subscribe`; a context manager. Either it has
    its own bounded stream (iterate the subscription on the event loop), or it
    hands each instance to a ``deliver`` callable in the association thread.
    Closing unsubscribes and closes the stream (instances still queued in it
    are dropped, so drain it first).

    Attributes:
        match: the predicate, called in the association thread.
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
        self._box: Outbox[ReceivedInstance] | None = None
        self._inlet: Inlet[ReceivedInstance] | None = None
        if deliver is None:
            self._box, self._inlet = outbox(buffer)

    def close(self) -> None:
        """Unsubscribe and close the stream (call on the event loop)."""
        self.closed = True
        self._server._unsubscribe(self)
        if self._inlet is not None:
            self._inlet.close()

    def __enter__(self) -> Subscription:
        """The subscription itself; it is closed on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """Instances queued in the subscription's stream, not yet read."""
        return 0 if self._inlet is None else self._inlet.pending

    def __aiter__(self) -> Subscription:
        """Iterate the subscription's stream."""
        self._stream()
        return self

    async def __anext__(self) -> ReceivedInstance:
        """The next instance routed to this subscription."""
        return await self._stream().__anext__()

    def _stream(self) -> Inlet[ReceivedInstance]:
        if self._inlet is None:
            raise TypeError("this subscription delivers to a callable; it has no stream")
        return self._inlet


class StorageServer:
    """A Storage SCP (and Verification SCP) as an async context manager.

    Args:
        ae_title: our AE title.
        host: the address to listen on.
        port: the TCP port; 0 picks a free one (see :attr:`port`).
        storage: where instances go; default :class:`~.storage.MemoryStorage`.
        directory: shorthand for ``storage=DiskStorage(directory)`` (as for
            :class:`~aiodicomnet.Archive`); give one of the two, not both.
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
            stored and acknowledged without being queued.  A streaming server
            that nobody reads holds senders back once ``buffer`` instances
            wait (backpressure: nothing is acknowledged that is not queued);
            it says so in the log (warning, logger ``aiodicomnet.server``)
            after ``stall_warning`` seconds.  (An :class:`~aiodicomnet.Archive`
            defaults to ``stream=False``: it keeps what it receives.)
        grace: seconds that open associations may go on after the block exits.
        stall_warning: seconds a full, unread stream may hold a sender before
            the warning.
        workers: receiver processes (default 1: associations run in this
            process). With N > 1, this process accepts and hands each new
            connection to the next of N receiver processes (Unix; elsewhere
            one process is used), which checks and stores what it receives,
            so several senders use several cores; every instance still arrives on this server's
            stream, subscriptions and hooks, and is acknowledged only once
            delivered here. ``storage`` must then be picklable (memory, disk
            or a subclass of them; not a callback) and ``max_associations``
            applies per process. A receiver that dies loses its own
            associations only: see :attr:`lost_workers`.
        tls: DICOM over TLS: a server-side :class:`ssl.SSLContext` (see
            :func:`aiodicomnet.tls.server_context`; mutual TLS when it
            requires client certificates).  Every connection then does its
            handshake before its request is read, both within the ACSE
            timeout; one that fails is logged and closed.  Not with
            ``workers`` > 1 (a context cannot go to another process).
        identify: a hook deciding on the user identity of every association
            request, offered or not: ``identify(offer)`` gets an
            :class:`~aiodicomnet.IdentityOffer` (``kind`` None when the
            request offers none) in the association's thread, before
            negotiation, and returns False to reject (A-ASSOCIATE-RJ,
            permanent, service-user), True to accept, or bytes to accept
            with that server response (a Kerberos server ticket, a SAML
            response, a JWT) when the requestor asked for a confirmation.
            An exception rejects.  Keep it quick: the request waits for it.
            Not with ``workers`` > 1.
    """

    def __init__(
        self,
        ae_title: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        storage: Storage | None = None,
        directory: str | os.PathLike[str] | None = None,
        allowed_calling_aets: list[str] | tuple[str, ...] | set[str] | None = None,
        check_called_aet: bool = True,
        max_associations: int = 16,
        max_pdu: int = DEFAULT_MAX_PDU,
        timeouts: Timeouts = Timeouts(),  # noqa: B008 - immutable value
        buffer: int = 16,
        stream: bool | None = None,
        grace: float = 5.0,
        stall_warning: float = 10.0,
        workers: int = 1,
        tls: ssl.SSLContext | None = None,
        identify: Callable[[IdentityOffer], bool | bytes] | None = None,
    ) -> None:
        self.ae_title = validate_ae_title(ae_title)
        self.host = host
        self._requested_port = port
        if storage is not None and directory is not None:
            raise TypeError("give storage= or directory=, not both")
        if directory is not None:
            storage = DiskStorage(directory)
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
        self.stall_warning = stall_warning
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if workers > 1 and isinstance(self.storage, CallbackStorage):
            raise ValueError(
                "workers > 1 needs a storage that can go to another process "
                "(MemoryStorage, DiskStorage or a subclass), not a CallbackStorage"
            )
        if tls is not None and not isinstance(tls, ssl.SSLContext):
            raise TypeError(f"tls must be an ssl.SSLContext, not {type(tls).__name__}")
        if tls is not None and workers > 1:
            raise ValueError(
                "workers > 1 with tls: an SSLContext cannot go to the receiver "
                "processes; use workers=1 (the default) for DICOM over TLS"
            )
        self.tls = tls
        if identify is not None and workers > 1:
            raise ValueError("identify= needs workers=1: the hook runs in this process")
        self.identify = identify
        if workers > 1 and not HANDOFF:
            LOGGER.warning("workers=%d: receiver processes need Unix; one process used", workers)
            workers = 1
        self.workers = workers

        self._lock = threading.Lock()
        self._subscriptions: list[Subscription] = []
        self._reports: dict[str, Callable[[Any], None]] = {}
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._bound: Storage = self.storage
        self._box: Outbox[ReceivedInstance] | None = None
        self._inlet: Inlet[ReceivedInstance] | None = None
        self._ae: AE | None = None
        self._server: Any = None
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
        self._bound = self.storage.bind()
        self._box, self._inlet = outbox(self.buffer)
        self._stopping = self._closing = False
        try:
            # Building the contexts and binding take CPU time: not on the loop.
            # Shielded: a cancellation must not leave a half-started server.
            with anyio.CancelScope(shield=True):
                await self._in_thread(self._start)
        except BaseException:
            self._close_streams()
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
        if self._inlet is None:
            raise RuntimeError("the server is not running")
        self._check_loop()
        return await self._inlet.__anext__()

    # -- hooks for subclasses and the client ------------------------------------------

    def _contexts(self) -> list[PresentationContext]:
        """The presentation contexts we accept, as SCP.

        Verification, and every storage SOP class pynetdicom knows with
        :data:`STORAGE_TRANSFER_SYNTAXES`. A subclass extends the list (for
        example with Query/Retrieve Find, Move and Get). The 128-context limit
        binds only requestors; an acceptor may support any number.
        """
        return [_copy_context(cx) for cx in _storage_contexts()] + [commitment_report_context()]

    def _handlers(self) -> list[tuple[Any, Callable[..., Any]]]:
        """pynetdicom event handlers bound to every association of the server.

        Includes :data:`~aiodicomnet._dimse.patches.CONN_OPEN_HANDLER` (TCP tuning) and the
        ``EVT_C_STORE`` handler. A subclass extends the list (for example with
        ``EVT_C_FIND``); handlers run in the association's thread. Called once
        when the server starts, in a worker thread.
        """
        return [
            CONN_OPEN_HANDLER,
            *self._identity_handlers(),
            (evt.EVT_C_STORE, self._on_c_store),
            (evt.EVT_N_EVENT_REPORT, self._on_n_event_report),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ABORTED, self._on_aborted),
        ]

    def _identity_handlers(self) -> list[tuple[Any, Callable[..., Any]]]:
        """The ``identify`` hook, when there is one, at the door of every association."""
        hook = self.identify
        if hook is None:
            return []
        return [(evt.EVT_REQUESTED, functools.partial(check_identity, identify=hook))]

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

    def subscribe(
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

    @contextlib.contextmanager
    def expect_report(self, transaction_uid: str, deliver: Callable[[Any], None]) -> Iterator[None]:
        """Route the Storage Commitment result for ``transaction_uid`` to ``deliver``.

        While the block runs, an N-EVENT-REPORT carrying that Transaction
        UID, on any association to this server, is handed to
        ``deliver((event_type, event_information))`` in the association's
        thread, and answered Success once ``deliver`` returns.  A report
        nobody expects is answered Processing Failure (0x0110), so the
        archive keeps it.  :meth:`Client.commit <aiodicomnet.Client.commit>`
        uses it (``via=server``).
        """
        with self._lock:
            self._reports[transaction_uid] = deliver
        try:
            yield
        finally:
            with self._lock:
                self._reports.pop(transaction_uid, None)

    def _report_route(self, transaction_uid: str) -> Callable[[Any], None] | None:
        with self._lock:
            return self._reports.get(transaction_uid)

    def _on_n_event_report(self, event: evt.Event) -> tuple[int, Dataset | None]:
        """A Storage Commitment result (association thread): to whoever expects it."""
        return handle_report(event, self._report_route)

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
        """The C-STORE SCP step (:func:`._dimse.incoming.handle_store`): check, store, deliver."""
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
                    self._queue(self._box, instance)
                return
            try:
                if chosen._deliver is not None:
                    chosen._deliver(instance)
                else:
                    self._queue(chosen._box, instance)
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

    def _queue(self, box: Outbox[ReceivedInstance] | None, instance: ReceivedInstance) -> None:
        """Put ``instance`` in a stream, waiting while it is full (association thread).

        Raises:
            DeliveryRefused: the stream is closed or the event loop is gone.
        """
        if box is None:
            raise DeliveryRefused("the server is closing")
        try:
            box.put(
                instance, confirm=True, stalled=self._warn_stalled, stall_after=self.stall_warning
            )
        except Closed:
            raise DeliveryRefused("the server is closing") from None

    def _warn_stalled(self) -> None:
        LOGGER.warning(
            "%s: the receive stream is full (%d instances) and nobody has read from it for "
            "%.0f s; senders are held back until it is read. Iterate the server "
            "(async for instance in server) or make it with stream=False.",
            self.ae_title,
            max(1, self.buffer),
            self.stall_warning,
        )

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
        return make_acceptor_ae(
            self.ae_title,
            max_associations=self.max_associations,
            max_pdu=self.max_pdu,
            timeouts=self.timeouts,
            check_called_aet=self.check_called_aet,
            allowed_calling_aets=self.allowed_calling_aets,
            ae_class=RequestorAE,
        )

    @property
    def lost_workers(self) -> list[tuple[int, int | None]]:
        """Receiver processes (``workers`` > 1) that ended unexpectedly: (index, exit code)."""
        return list(getattr(self._server, "lost", []))

    def _start(self) -> None:
        """Bind, listen and start the accept loop (in a thread of ours, not on the loop)."""
        if self.workers > 1:
            self._start_receivers()
            return
        ae = self._make_ae()
        acceptor = Acceptor(
            ae,
            (self.host, self._requested_port),
            self._contexts(),
            self._handlers(),
            name=f"aiodicomnet-scp-{self.ae_title}",
            tls=self.tls,
        )
        acceptor.start()
        self._ae, self._server, self._port = ae, acceptor, acceptor.port

    def _start_receivers(self) -> None:
        """Start ``workers`` receiver processes on one port (:mod:`._dimse.receivers`)."""
        if type(self)._handlers is not StorageServer._handlers:
            raise ValueError(f"{type(self).__name__} answers more than C-STORE: one process only")
        try:
            pickle.dumps(self._bound)
        except Exception as exc:
            raise ValueError(
                f"workers > 1: the storage {self._bound.describe()} cannot go to another "
                f"process ({exc})"
            ) from exc
        spec = ReceiverSpec(
            index=0,
            ae_title=self.ae_title,
            host=self.host,
            port=self._requested_port,
            storage=self._bound,
            contexts=self._contexts(),
            allowed_calling_aets=self.allowed_calling_aets,
            check_called_aet=self.check_called_aet,
            max_associations=self.max_associations,
            max_pdu=self.max_pdu,
            timeouts=self.timeouts,
        )
        pool = ReceiverPool(spec, self.workers, self._deliver, _resource_error)
        self._server, self._port = pool, pool.port

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
        self._server = None
        self._ae = None
        LOGGER.info("%s on port %d stopped", self.ae_title, self._port)
        self._port = 0

    def _close_streams(self) -> int:
        """Close the main stream and every subscription; return how many were unread."""
        dropped = 0
        if self._inlet is not None:
            dropped = self._inlet.pending
            self._inlet.close()
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.close()
        return dropped

    def _stop_listening(self) -> None:
        """Stop the accept loop; close the listening socket and the connections that
        never sent a complete A-ASSOCIATE-RQ."""
        self._stopping = True
        self._server.stop()

    def _associations(self) -> list[Any]:
        return [] if self._server is None else self._server.associations()

    def _finish_associations(self, deadline: float) -> None:
        """Let open associations finish until ``deadline``, then abort the rest (bounded)."""
        self._server.finish(deadline, self.grace)

    async def _in_thread(self, fn: Callable[..., None], *args: Any) -> None:
        """Run blocking ``fn`` in a thread of our own (:func:`._dimse.bridge.run_in_thread`)."""
        await run_in_thread(fn, *args)
