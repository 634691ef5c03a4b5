"""One negotiated pynetdicom association, owned by one worker thread.

:class:`Association` is the DIMSE transport under :class:`~aiodicomnet.Client`:
it opens (negotiates) an association in its :class:`~aiodicomnet._dimse.bridge.OwnerThread`,
runs C-ECHO, C-FIND, C-MOVE, C-GET and C-STORE there, and turns what
pynetdicom reports (empty status datasets, ``is_rejected`` flags, log lines)
into typed errors.  Multi-response services are async generators: responses
cross to the loop through a bounded stream as they arrive, and closing the
generator early (``break``, task cancellation, a timeout scope) sends
C-CANCEL, waits ``Timeouts.cancel`` for the peer's final response and aborts
the association if it does not come.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import socket
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any, cast

import anyio
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context, build_role, evt
from pynetdicom.association import Association as _PynetAssociation
from pynetdicom.dimse_primitives import N_EVENT_REPORT
from pynetdicom.pdu_primitives import UserIdentityNegotiation
from pynetdicom.presentation import PresentationContext

from .. import status as _status
from ..commitment import STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
from ..errors import (
    AssociationAborted,
    AssociationRejected,
    AssociationTimeout,
    CommitmentTimeout,
    ConnectError,
    ConnectTimeout,
    DicomError,
    DimseTimeout,
    IdentityNotConfirmed,
    NegotiationError,
    ProtocolError,
    StatusError,
    TlsError,
    TranscodeError,
)
from ..identity import IDENTITY_KINDS, IdentityOffer, UserIdentity
from ..nodes import Node
from ..results import InstanceOutcome, Progress
from ..storage import DeliveryRefused
from ..timeouts import Timeouts
from ..tls import describe_error as describe_tls_error
from .bridge import Closed, Outbox, OwnerThread, outbox, run_in_thread
from .patches import (
    TLS_ANSWER,
    RequestorAE,
    close_transport,
    queued_reply,
    refusal,
    release_unconnected,
    tls_failure,
    wake_dimse_waiter,
    wake_negotiation,
)
from .transcode import for_contexts
from .wire import FileToSend, send_c_store_file, write_stalled

__all__ = [
    "Association",
    "ReportSender",
    "SendItem",
    "StoreItem",
    "check_identity",
    "commitment_report",
    "handle_report",
    "identity_items",
    "next_message_id",
    "not_sent",
]

log = logging.getLogger("aiodicomnet._dimse.association")

#: ``merge(deliver) -> context manager``: see :meth:`Association.move`.
Merge = Callable[[Callable[[Any], None]], contextlib.AbstractContextManager[Any]]

#: What C-STORE sends: a Dataset (with file_meta) or the path of a Part 10 file.
StoreItem = Dataset | Path
#: What an association sends: a data set, or a file whose File Meta Information
#: was read when the store was planned (:func:`.wire.read_file_to_send`).
SendItem = Dataset | FileToSend

#: A C-STORE handler for C-GET sub-operations: ``(event) -> status``.
StoreHandler = Callable[[evt.Event], Any]

_SUBOP_KEYWORDS = (
    "NumberOfRemainingSuboperations",
    "NumberOfCompletedSuboperations",
    "NumberOfFailedSuboperations",
    "NumberOfWarningSuboperations",
)


_MESSAGE_IDS = itertools.count(1)


def next_message_id() -> int:
    """A DIMSE Message ID, unique in this process (modulo 65535).

    Unique across associations so that C-STORE sub-operations arriving at our
    Storage SCP can be matched to the C-MOVE that caused them by their Move
    Originator Message ID.
    """
    return (next(_MESSAGE_IDS) - 1) % 65535 + 1


def _progress(status_ds: Dataset, identifier: Dataset | None, done: bool) -> Progress:
    counts = [status_ds.get(k) for k in _SUBOP_KEYWORDS]
    failed_uids: tuple[str, ...] = ()
    if done and identifier is not None and "FailedSOPInstanceUIDList" in identifier:
        value = identifier.FailedSOPInstanceUIDList
        # One UID is a str; several a pydicom MultiValue (not a list or tuple).
        values = [value] if isinstance(value, str) else list(value)
        failed_uids = tuple(str(u) for u in values if u)
    return Progress(
        remaining=None if counts[0] is None else int(counts[0]),
        completed=int(counts[1] or 0),
        failed=int(counts[2] or 0),
        warning=int(counts[3] or 0),
        status=int(status_ds.Status),
        done=done,
        failed_instances=failed_uids,
    )


def not_sent(
    item: StoreItem | FileToSend, error: str, ds: Dataset | None = None
) -> InstanceOutcome:
    """The outcome of an instance that was not stored: status ``None`` and why."""
    if isinstance(item, FileToSend):
        return InstanceOutcome(
            sop_instance_uid=item.sop_instance_uid,
            sop_class_uid=item.sop_class_uid,
            status=None,
            source=item.path,
            error=error,
        )
    source = item if isinstance(item, Path) else None
    if ds is None and isinstance(item, Dataset):
        ds = item
    return InstanceOutcome(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")) if ds is not None else "",
        sop_class_uid=str(ds.get("SOPClassUID", "")) if ds is not None else "",
        status=None,
        source=source,
        error=error,
    )


class Association:
    """An association from our AE to one node, owned by one worker thread.

    Use :meth:`open` then the service methods, then :meth:`release` (or
    :meth:`abort`); or ``async with``.  Service methods must not be called
    concurrently on one association: the client serialises them.

    Args:
        ae_title: our (calling) AE title.
        node: the peer.
        contexts: presentation contexts to propose (at most 128).
        timeouts: connect, ACSE, DIMSE, network and cancel timeouts.
        max_pdu: our maximum PDU receive length (0: unlimited).
        roles: SCP/SCU role selection items (C-GET); set :attr:`store_handler`
            to handle the C-STORE sub-operations.
        buffer: how many responses may wait on the loop before the worker blocks.
    """

    def __init__(
        self,
        ae_title: str,
        node: Node,
        contexts: Sequence[PresentationContext],
        *,
        timeouts: Timeouts | None = None,
        max_pdu: int = 0,
        roles: Sequence[Any] = (),
        buffer: int = 16,
    ) -> None:
        self.ae_title = ae_title
        self.node = node
        self.timeouts = timeouts or Timeouts()
        self._contexts = list(contexts)
        self._max_pdu = max_pdu
        self._roles = list(roles)
        #: Handles C-STORE sub-operations of the C-GET in progress.
        self.store_handler: StoreHandler | None = None
        #: Whether this association came from the pool (set by the client).
        self.reused = False
        self._buffer = buffer
        self._assoc: _PynetAssociation | None = None
        self._ae: RequestorAE | None = None
        self._owner: OwnerThread | None = None
        self._cancel_lock = threading.Lock()
        self._cancelled: set[int] = set()
        self._get_box: Outbox[Any] | None = None  # the C-GET in progress
        self._get_request: tuple[int, str] | None = None  # its (message ID, model)
        self._abort_requested = False
        self._interrupted = False  # a retrieve on it was left early
        self._dimse_timed_out = False
        self._open_started = time.monotonic()
        self._last_rx = time.monotonic()
        #: The acceptor's User Identity server response (``b""`` for a bare
        #: confirmation), or None when it sent none.
        self.identity_response: bytes | None = None
        #: Storage Commitment results awaited here: Transaction UID -> deliver.
        self._reports: dict[str, Callable[[Any], None]] = {}
        self._reports_lock = threading.Lock()
        self._replied: list[tuple[Callable[[Any], None], Any]] = []  # see _watch_replies

    # ------------------------------------------------------------------ lifecycle

    @property
    def is_established(self) -> bool:
        """Whether the association is up."""
        return self._assoc is not None and bool(self._assoc.is_established)

    @property
    def accepted_contexts(self) -> list[PresentationContext]:
        """The presentation contexts the peer accepted."""
        return [] if self._assoc is None else list(self._assoc.accepted_contexts)

    @property
    def reusable(self) -> bool:
        """Established, never aborted by us, no retrieve left early on it, and its
        thread running: fit for a pool."""
        return (
            self.is_established
            and not self._abort_requested
            and not self._interrupted
            and self._owner is not None
            and self._owner.alive
        )

    def park(self, seconds: float, on_expire: Callable[[Association], bool]) -> None:
        """Arm the idle timer of a pooled association (call on the event loop).

        After ``seconds`` without a call, ``on_expire(self)`` runs in the owner
        thread; if it returns true the association releases itself there and
        its thread ends.
        """

        def expire() -> bool:
            if not on_expire(self):
                return False
            self._release_in_thread()
            return True

        if self._owner is not None:
            self._owner.set_idle_timer(seconds, expire)

    def unpark(self) -> None:
        """Disarm the idle timer (the association is in use again)."""
        if self._owner is not None:
            self._owner.set_idle_timer(None, None)

    async def __aenter__(self) -> Association:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            await self.release()
        else:
            await self.abort()

    async def open(self) -> None:
        """Connect and negotiate; raise a typed error if that fails."""
        self._owner = OwnerThread(f"aiodicomnet {self.ae_title}->{self.node.ae_title}")
        try:
            await self._owner.run(self._open_in_thread, on_cancel=self._abort_now)
        except BaseException:
            # Cancelled just as the association came up: abort it, don't leak it.
            await self._finish(self._abort_in_thread)
            raise

    async def release(self) -> None:
        """Release the association gracefully (abort if the peer does not answer)."""
        await self._finish(self._release_in_thread)

    async def abort(self) -> None:
        """Abort the association (A-ABORT) and stop its thread."""
        await self._finish(self._abort_in_thread)

    async def _finish(self, how: Callable[[], None]) -> None:
        if self._owner is None:
            return
        if not self._owner.alive:  # an idle pooled association that released itself
            self._owner = None
            return
        with anyio.CancelScope(shield=True):
            try:
                await self._owner.run(how)
            finally:
                await self._shutdown_thread()

    async def _shutdown_thread(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            await owner.stop()

    # ------------------------------------------------------------------ services

    async def echo(self) -> float:
        """Send C-ECHO; return the round-trip time in seconds."""
        rtt: float = await self._call(self._echo_in_thread)
        return rtt

    async def store(self, items: Iterable[SendItem]) -> AsyncGenerator[InstanceOutcome, None]:
        """Send each item with C-STORE, yielding one outcome per item as it completes."""
        async with aclosing(self._stream(self._store_in_thread, list(items))) as outcomes:
            async for outcome in outcomes:
                yield outcome

    async def find(self, identifier: Dataset, model: str) -> AsyncGenerator[Dataset, None]:
        """Send C-FIND; yield each pending response's identifier as it arrives."""
        msg_id = self._next_id()
        async with aclosing(
            self._stream(self._find_in_thread, identifier, model, msg_id, cancel=(msg_id, model))
        ) as items:
            async for item in items:
                yield item

    async def move(
        self,
        identifier: Dataset,
        model: str,
        destination: str,
        *,
        msg_id: int | None = None,
        merge: Merge | None = None,
    ) -> AsyncGenerator[Any, None]:
        """Send C-MOVE; yield progress for each response, the last one final (``done``).

        ``merge`` lets the caller merge another producer into what is
        yielded: it is called (on the loop, before the request is sent) with
        a ``deliver(item)`` callable, safe to call from any thread, that
        blocks while the stream is full and returns once ``item`` is in it;
        it returns a context manager that is exited when the move ends.  A
        retrieve passes a Storage SCP subscription, so the instances moved
        arrive in the same stream, each before its C-STORE response and so
        before the final C-MOVE response.
        """
        msg_id = msg_id or self._next_id()
        async with aclosing(
            self._stream(
                self._move_in_thread,
                identifier,
                model,
                destination,
                msg_id,
                cancel=(msg_id, model),
                merge=merge,
                retrieve=True,
            )
        ) as items:
            async for item in items:
                yield item

    async def get(self, identifier: Dataset, model: str) -> AsyncGenerator[Any, None]:
        """Send C-GET; yield progress, interleaved with what :attr:`store_handler` delivers.

        The store handler runs in the owner thread for each C-STORE
        sub-operation and hands received instances over with :meth:`deliver`.
        """
        msg_id = self._next_id()
        async with aclosing(
            self._stream(
                self._get_in_thread,
                identifier,
                model,
                msg_id,
                cancel=(msg_id, model),
                retrieve=True,
            )
        ) as items:
            async for item in items:
                yield item

    def deliver(self, item: Any) -> None:
        """In a C-GET's store handler: hand ``item`` to the loop before acknowledging it.

        Raises:
            DeliveryRefused: nobody reads the C-GET any more (C-CANCEL is sent).
        """
        box, request = self._get_box, self._get_request
        try:
            if box is None:
                raise Closed
            box.put(item, confirm=True)
        except Closed:
            if request is not None:
                self._send_cancel(*request)
            raise DeliveryRefused("the C-GET consumer has stopped reading") from None

    async def commit(
        self,
        action_info: Dataset,
        transaction_uid: str,
        *,
        within: float,
        merge: Merge | None = None,
    ) -> AsyncGenerator[tuple[int, Dataset] | None, None]:
        """Storage Commitment: N-ACTION, then the N-EVENT-REPORT with ``transaction_uid``.

        Yields None once the N-ACTION is accepted (from then on the request
        must not be sent again: a retry on a fresh association would repeat
        the Transaction UID), then the report's (Event Type ID, Event
        Information).  The report
        may come on this association (the association stays open while it is
        awaited) or, with ``merge`` (as for :meth:`move`: a Storage SCP's
        ``expect_report``), on an association the peer opens to us; the first
        report with the Transaction UID wins.

        Raises:
            StatusError: the N-ACTION failed (status and Error Comment).
            CommitmentTimeout: no report within ``within`` seconds.
            AssociationAborted: the association ended while the report could
                only come on it (no ``merge``).
        """
        box, inlet = outbox(1)
        deliver = functools.partial(box.put, confirm=True)
        with contextlib.ExitStack() as stack, inlet:
            if merge is not None:
                stack.enter_context(merge(deliver))
            with self._reports_lock:
                self._reports[transaction_uid] = deliver
            stack.callback(self._forget_report, transaction_uid)
            await self._call(self._n_action_in_thread, action_info)
            yield None
            report: tuple[int, Dataset] | None = None
            with anyio.move_on_after(within):
                while report is None:
                    item = await inlet.receive()
                    if isinstance(item, tuple):
                        report = item
                        continue
                    if merge is None:  # the association is gone, and the report with it
                        raise AssociationAborted(
                            f"association ended before the Storage Commitment result "
                            f"(transaction {transaction_uid})",
                            node=self.node,
                        )
            if report is not None:
                yield report
                return
        raise CommitmentTimeout(
            f"no Storage Commitment result (N-EVENT-REPORT) within {within} s "
            f"for transaction {transaction_uid}",
            transaction_uid=transaction_uid,
            seconds=within,
            node=self.node,
        )

    async def n_create(self, sop_class: str, instance_uid: str, attributes: Dataset) -> Dataset:
        """N-CREATE an instance of ``sop_class``; return the attribute list answered (may be empty).

        Raises:
            StatusError: a failure status (a warning is not one).
        """
        reply: Dataset = await self._call(
            self._dimse_n_in_thread, "N-CREATE", sop_class, instance_uid, attributes
        )
        return reply

    async def n_set(self, sop_class: str, instance_uid: str, modifications: Dataset) -> Dataset:
        """N-SET attributes of an instance; return the attribute list answered (may be empty).

        Raises:
            StatusError: a failure status (a warning is not one).
        """
        reply: Dataset = await self._call(
            self._dimse_n_in_thread, "N-SET", sop_class, instance_uid, modifications
        )
        return reply

    def _forget_report(self, transaction_uid: str) -> None:
        with self._reports_lock:
            self._reports.pop(transaction_uid, None)

    # ------------------------------------------------------------------ loop side

    def _next_id(self) -> int:
        return next_message_id()

    def _require_owner(self) -> OwnerThread:
        if self._owner is None or self._assoc is None:
            raise AssociationAborted("association is not open", node=self.node)
        return self._owner

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._require_owner().run(fn, *args, on_cancel=self._abort_now)

    async def _stream(
        self,
        fn: Callable[..., None],
        *args: Any,
        cancel: tuple[int, str] | None = None,
        merge: Merge | None = None,
        retrieve: bool = False,
    ) -> AsyncGenerator[Any, None]:
        """Run ``fn(outbox, *args)`` in the owner thread and yield what it puts.

        ``merge`` (see :meth:`move`) puts another producer's items in the same
        stream until the call has ended, cleanup included.  On early exit
        (consumer stops, task cancelled) the stream is closed, C-CANCEL is
        sent for ``cancel`` = (message id, SOP class), the call is given
        ``Timeouts.cancel`` seconds to end, then the association is aborted.
        """
        owner = self._require_owner()
        box, inlet = outbox(self._buffer)
        with contextlib.ExitStack() as stack:
            if merge is not None:
                stack.enter_context(merge(functools.partial(box.put, confirm=True)))
            call = owner.submit(fn, box, *args)
            completed = False
            try:
                with inlet:
                    async for item in inlet:
                        yield item
                await call.wait()
                completed = True
            finally:
                inlet.close()
                if not completed and retrieve:
                    # A C-MOVE or C-GET left early: the peer may still be busy with
                    # sub-operations (and slow to answer a release), so the
                    # association is not kept for reuse, and its release is bounded.
                    self._interrupted = True
                if not completed and not call.done:
                    with anyio.CancelScope(shield=True):
                        if cancel is not None:
                            await run_in_thread(self._send_cancel, *cancel)
                        with anyio.move_on_after(self.timeouts.cancel):
                            await call.finished()
                        if not call.done:
                            log.warning("%s: no answer to C-CANCEL, aborting", self.node)
                            await run_in_thread(self._abort_now)
                            await call.finished()

    # ------------------------------------------------------------------ owner thread

    def _open_in_thread(self) -> None:
        self._open_started = time.monotonic()
        t = self.timeouts
        ae = RequestorAE(ae_title=self.ae_title)
        ae.connection_timeout = t.connect
        ae.acse_timeout = t.acse
        ae.dimse_timeout = t.dimse
        ae.network_timeout = t.network
        ae.maximum_pdu_size = self._max_pdu
        self._ae = ae
        try:
            infos = socket.getaddrinfo(
                self.node.host, self.node.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except (socket.gaierror, UnicodeError) as exc:
            raise ConnectError(
                f"cannot resolve host {self.node.host!r}: {exc}", node=self.node
            ) from exc
        family, _, _, _, sockaddr = infos[0]
        address = str(sockaddr[0])
        self._acse_received: list[Any] = []
        handlers: list[Any] = [
            (evt.EVT_ACSE_RECV, self._on_acse_recv),
            (evt.EVT_DIMSE_RECV, self._on_dimse_recv),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_N_EVENT_REPORT, self._on_n_event_report),  # a commitment's result
            (evt.EVT_CONN_CLOSE, self._on_conn_close),
        ]
        if self._roles:  # we may receive C-STORE sub-operations (C-GET)
            handlers.append((evt.EVT_C_STORE, self._on_c_store))
        bind = ("::", 0) if family == socket.AF_INET6 else ("", 0)
        tls = self.node.tls
        assoc = ae.associate(
            address,
            self.node.port,
            contexts=self._contexts,
            ae_title=self.node.ae_title,
            max_pdu=self._max_pdu,
            ext_neg=[*self._roles, *identity_items(self.node.identity)] or None,
            bind_address=bind,
            evt_handlers=handlers,
            tls_args=None if tls is None else (tls, self.node.host),
        )
        if assoc.is_established:
            self._assoc = assoc
            self._check_identity(assoc)
            return
        self._join(assoc)
        error = self._why_not_established(assoc)
        if self._ae is not None and self._ae.last_socket is not None:
            self._ae.last_socket.close_unconnected()
        raise error

    def _check_identity(self, assoc: _PynetAssociation) -> None:
        """Read the acceptor's User Identity response; leave if one was required and none came."""
        item = assoc.acceptor.user_identity
        self.identity_response = None if item is None else bytes(item.server_response or b"")
        identity = self.node.identity
        if identity is not None and identity.positive_response and item is None:
            self._release_in_thread()
            raise IdentityNotConfirmed(
                f"the {identity.kind_name} identity was not confirmed "
                "(positive response requested, none in the A-ASSOCIATE-AC)",
                node=self.node,
            )

    def _on_c_store(self, event: evt.Event) -> Any:
        handler = self.store_handler
        if handler is None:  # nobody is retrieving: refuse (out of resources)
            return _status.OUT_OF_RESOURCES
        return handler(event)

    def _on_acse_recv(self, event: evt.Event) -> None:
        self._acse_received.append(event.event.name)

    def _on_dimse_recv(self, event: evt.Event) -> None:
        self._last_rx = time.monotonic()

    def _on_aborted(self, event: evt.Event) -> None:
        # pynetdicom aborts in the thread that waits for a DIMSE response (ours)
        # when the DIMSE timeout expires or the peer sends something invalid.
        if self._owner is not None and threading.current_thread() is self._owner.thread:
            idle = time.monotonic() - self._last_rx
            dimse = self.timeouts.dimse
            self._dimse_timed_out = dimse is not None and idle >= dimse * 0.9

    def _why_not_established(self, assoc: _PynetAssociation) -> DicomError:
        sock = getattr(self._ae, "last_socket", None)
        connect_error = getattr(sock, "connect_error", None)
        node, t = self.node, self.timeouts
        if connect_error is not None and getattr(sock, "tls_failed", False):
            return TlsError(
                f"TLS handshake failed: {describe_tls_error(connect_error)}",
                reason=getattr(connect_error, "reason", None),
                node=node,
            )
        if connect_error is not None:
            if isinstance(connect_error, TimeoutError):
                return ConnectTimeout(
                    f"TCP connect timed out after {t.connect} s",
                    timeout="connect",
                    seconds=t.connect,
                    node=node,
                )
            return ConnectError(f"cannot connect: {connect_error}", node=node)
        tls_error = tls_failure(assoc)
        if tls_error is not None:
            return TlsError(
                f"TLS failed during negotiation: {describe_tls_error(tls_error)}",
                reason=tls_error.reason,
                node=node,
            )
        refused = refusal(assoc)
        if refused == TLS_ANSWER:
            return TlsError(refused, node=node)
        if refused is not None:
            return ProtocolError(f"{refused} during negotiation; association aborted", node=node)
        rsp = assoc.acceptor.primitive
        if rsp is None:
            # A peer that rejects and closes at once can make pynetdicom give up
            # ("failed to connect") before it reads the A-ASSOCIATE-RJ it
            # already queued: look for it there.
            rsp = queued_reply(assoc)
        if rsp is not None and rsp.result in (1, 2):
            return AssociationRejected(
                int(rsp.result or 0),
                int(rsp.result_source or 0),
                int(rsp.diagnostic or 0),
                node=node,
            )
        if rsp is not None and rsp.result == 0 and not assoc.accepted_contexts:
            offered = ", ".join(sorted({str(cx.abstract_syntax) for cx in self._contexts}))
            return NegotiationError(
                "association accepted but no presentation context was accepted "
                f"(proposed: {offered})",
                node=node,
            )
        waited = time.monotonic() - self._open_started
        if self._acse_received or self._abort_requested or waited < 0.9 * (t.acse or 0):
            return AssociationAborted(
                "association aborted (or connection closed) during negotiation", node=node
            )
        return AssociationTimeout(
            f"no A-ASSOCIATE response within the ACSE timeout ({t.acse} s)",
            timeout="acse",
            seconds=t.acse,
            node=node,
        )

    def _join(self, assoc: _PynetAssociation | None) -> None:
        """Wait (bounded) for pynetdicom's reactor and DUL threads of ``assoc`` to end,
        then close its socket: not left for the garbage collector."""
        if assoc is None:
            return
        limit = (self.timeouts.acse or 30.0) + 5.0
        for thread in (assoc, assoc.dul):
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(limit)
        if not assoc.dul.is_alive():
            close_transport(assoc)

    def _release_in_thread(self) -> None:
        assoc, self._assoc = self._assoc, None
        if assoc is None:
            return
        if assoc.is_established:
            if self._interrupted:
                # A peer still busy with a cancelled retrieve may not answer
                # A-RELEASE-RQ for its whole ACSE timeout: wait no longer than
                # for a C-CANCEL, then abort.
                assoc.acse_timeout = min(
                    assoc.acse_timeout or self.timeouts.cancel, self.timeouts.cancel
                )
            assoc.release()
        if assoc.is_established or not (assoc.is_released or assoc.is_aborted):
            assoc.abort()
        self._join(assoc)

    def _abort_in_thread(self) -> None:
        assoc, self._assoc = self._assoc, None
        if assoc is None:
            return
        assoc.abort()
        self._join(assoc)

    def _abort_now(self) -> None:
        """Abort from any thread, to unblock the owner thread (cancellation).

        Whatever the owner thread waits for (the TCP connect, the A-ASSOCIATE
        reply, a DIMSE response), it is woken rather than left to its timeout.
        """
        self._abort_requested = True
        sock = self._ae.last_socket if self._ae is not None else None
        assoc = self._assoc
        if assoc is None and sock is not None:
            assoc = sock.assoc
        if assoc is None:
            return
        negotiating = not assoc.is_established
        if negotiating and sock is not None and release_unconnected(sock):
            return  # not connected yet: pynetdicom aborts and cleans up by itself
        assoc.abort()
        wake_dimse_waiter(assoc)
        if negotiating:
            wake_negotiation(assoc)

    def _send_cancel(self, msg_id: int, model: str) -> None:
        """Send C-CANCEL for ``msg_id`` once (any thread; pynetdicom queues it)."""
        with self._cancel_lock:
            if msg_id in self._cancelled:
                return
            self._cancelled.add(msg_id)
        assoc = self._assoc
        if assoc is not None and assoc.is_established:
            try:
                assoc.send_c_cancel(msg_id, query_model=model)
            except (RuntimeError, ValueError) as exc:  # pragma: no cover - lost meanwhile
                log.debug("C-CANCEL not sent: %s", exc)

    def _no_response(self, service: str) -> DicomError:
        """Explain an empty status: DIMSE timeout, abort, or lost connection."""
        stalled = self._dimse_timed_out or write_stalled(self._assoc)
        if stalled and not self._abort_requested:
            t = self.timeouts.dimse
            return DimseTimeout(
                f"no {service} response within the DIMSE timeout ({t} s)",
                timeout="dimse",
                seconds=t,
                node=self.node,
            )
        refused = refusal(self._assoc)
        if refused is not None:
            return ProtocolError(f"{refused} during {service}; association aborted", node=self.node)
        return AssociationAborted(f"association aborted during {service}", node=self.node)

    def _request_sent(self) -> None:
        self._last_rx = time.monotonic()

    def _status(self, status_ds: Dataset, service: str) -> int:
        if "Status" not in status_ds:
            error = self._no_response(service)
            self._mark_lost()
            raise error
        return int(status_ds.Status)

    def _mark_lost(self) -> None:
        """The association is gone: join its threads so nothing is left behind."""
        assoc = self._assoc
        if assoc is not None and not assoc.is_established:
            self._assoc = None
            self._join(assoc)

    def _echo_in_thread(self) -> float:
        assoc = self._established()
        start = time.perf_counter()
        rsp = self._request("C-ECHO", assoc.send_c_echo, msg_id=self._next_id())
        rtt = time.perf_counter() - start
        code = self._status(rsp, "C-ECHO")
        if code != _status.SUCCESS:
            raise StatusError("C-ECHO", code, node=self.node, error_comment=rsp.get("ErrorComment"))
        return rtt

    def _request(self, service: str, send: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a pynetdicom ``send_c_*`` method; no accepted context -> NegotiationError."""
        self._established()
        self._request_sent()
        try:
            return send(*args, **kwargs)
        except ValueError as exc:
            raise NegotiationError(f"cannot send {service}: {exc}", node=self.node) from exc

    def _established(self) -> _PynetAssociation:
        assoc = self._assoc
        if assoc is None or not assoc.is_established:
            raise AssociationAborted("association is no longer established", node=self.node)
        return assoc

    def _find_in_thread(
        self, box: Outbox[Dataset], identifier: Dataset, model: str, msg_id: int
    ) -> None:
        try:
            assoc = self._established()
            responses = self._request("C-FIND", assoc.send_c_find, identifier, model, msg_id=msg_id)
            for status_ds, ident in responses:
                code = self._status(status_ds, "C-FIND")
                if _status.is_pending(code):
                    if ident is None:
                        # pynetdicom logs "Failed to decode the received Identifier
                        # dataset" and hands us None: a partial answer must not pass
                        # for the whole one.  Its generator holds the association's
                        # lock at that point: close it before aborting.
                        responses.close()
                        self._abort_in_thread()
                        raise ProtocolError(
                            "a pending C-FIND response's identifier could not be decoded; "
                            "association aborted",
                            node=self.node,
                        )
                    self._deliver(box, ident, msg_id, model)
                elif code in (_status.SUCCESS, _status.CANCEL):
                    return
                else:
                    raise StatusError(
                        "C-FIND", code, node=self.node, error_comment=status_ds.get("ErrorComment")
                    )
        finally:
            box.close()

    def _deliver(self, box: Outbox[Any], item: Any, msg_id: int, model: str) -> None:
        """Put ``item`` on the loop; if nobody listens any more, cancel the request."""
        if box.closed:
            return
        try:
            box.put(item)
        except Closed:
            self._send_cancel(msg_id, model)

    def _retrieve_responses(
        self,
        box: Outbox[Any],
        responses: Iterable[tuple[Dataset, Dataset | None]],
        service: str,
        msg_id: int,
        model: str,
    ) -> None:
        try:
            for status_ds, ident in responses:
                code = self._status(status_ds, service)
                if _status.is_pending(code):
                    self._deliver(box, _progress(status_ds, ident, done=False), msg_id, model)
                    continue
                final = _progress(status_ds, ident, done=True)
                if _status.category(code) == "Failure":
                    err = StatusError(
                        service, code, node=self.node, error_comment=status_ds.get("ErrorComment")
                    )
                    err.progress = final  # type: ignore[attr-defined]
                    raise err
                self._deliver(box, final, msg_id, model)
                return
        finally:
            box.close()

    def _move_in_thread(
        self, box: Outbox[Progress], identifier: Dataset, model: str, destination: str, msg_id: int
    ) -> None:
        try:
            assoc = self._established()
            responses = self._request(
                "C-MOVE", assoc.send_c_move, identifier, destination, model, msg_id=msg_id
            )
        except BaseException:
            box.close()
            raise
        self._retrieve_responses(box, responses, "C-MOVE", msg_id, model)

    def _get_in_thread(
        self, box: Outbox[Any], identifier: Dataset, model: str, msg_id: int
    ) -> None:
        self._get_box, self._get_request = box, (msg_id, model)
        try:
            assoc = self._established()
            responses = self._request("C-GET", assoc.send_c_get, identifier, model, msg_id=msg_id)
        except BaseException:
            box.close()
            raise
        try:
            self._retrieve_responses(box, responses, "C-GET", msg_id, model)
        finally:
            self._get_box = self._get_request = None

    def _store_in_thread(self, box: Outbox[InstanceOutcome], items: list[SendItem]) -> None:
        """One outcome per item, in order, until the association is lost.

        Then it raises (AssociationAborted or DimseTimeout, from
        :meth:`_store_one`) with ``unanswered`` set when the item in flight was
        sent but got no response: the caller reports that one and the rest as
        not stored.  Nothing is yielded for them here, so that a pooled
        association found dead before anything was sent can be replaced
        without reporting anything twice.
        """
        try:
            for item in items:
                box.put(self._store_one(item))
        except Closed:
            return
        finally:
            box.close()

    def _store_one(self, item: SendItem) -> InstanceOutcome:
        """Send one instance and return its outcome; raise if the association is lost.

        A file whose transfer syntax the peer accepted is sent as it is, its
        bytes streamed from the file (:func:`.wire.send_c_store_file`); any
        other item is decoded, converted if the peer needs it, and encoded once.
        """
        source: Path | None = None
        ds: Dataset
        if isinstance(item, FileToSend):
            sent = self._store_file_as_is(item)
            if sent is not None:
                return sent
            source = item.path
            try:
                ds = dcmread(source)
            except Exception as exc:
                return not_sent(item, f"unreadable DICOM file: {exc}")
        else:
            ds = item
        if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
            return not_sent(item, "dataset has no SOP Class/Instance UID", ds)
        assoc = self._assoc
        if assoc is None or not assoc.is_established:
            raise self._store_lost(unanswered=False)
        try:  # in a syntax the peer accepted: big endian, decompressed, ... (transcode.py)
            ds = for_contexts(ds, assoc.accepted_contexts)
        except TranscodeError as exc:
            return not_sent(item, exc.message, ds)
        try:
            self._request_sent()
            rsp = assoc.send_c_store(ds, msg_id=self._next_id())
        except (ValueError, AttributeError) as exc:
            if not assoc.is_established:  # aborted under us: no context is left to find
                raise self._store_lost(unanswered=False) from exc
            return not_sent(item, str(exc), ds)
        return self._stored(rsp, str(ds.SOPInstanceUID), str(ds.SOPClassUID), source)

    def _store_file_as_is(self, held: FileToSend) -> InstanceOutcome | None:
        """Send a file's bytes as they are if a context carries its syntax; else None."""
        assoc = self._assoc
        if assoc is None or not assoc.is_established:
            raise self._store_lost(unanswered=False)
        try:
            context = assoc._get_valid_context(
                held.sop_class_uid, held.transfer_syntax, "scu", allow_conversion=False
            )
        except ValueError:
            return None  # converted (or refused) by the general path
        self._request_sent()
        context_id = cast(int, context.context_id)
        rsp = send_c_store_file(assoc, held, context_id, self._next_id())
        return self._stored(rsp, held.sop_instance_uid, held.sop_class_uid, held.path)

    def _stored(
        self, rsp: Dataset, sop_instance_uid: str, sop_class_uid: str, source: Path | None
    ) -> InstanceOutcome:
        """The outcome of a C-STORE from its response; raise if none came."""
        if "Status" not in rsp:  # no response: pynetdicom has aborted, or the peer did
            raise self._store_lost(unanswered=True)
        return InstanceOutcome(
            sop_instance_uid=sop_instance_uid,
            sop_class_uid=sop_class_uid,
            status=int(rsp.Status),
            source=source,
        )

    def _store_lost(self, *, unanswered: bool) -> DicomError:
        """The error for a C-STORE whose association is gone (``unanswered``: it was sent)."""
        error = self._no_response("C-STORE")
        error.unanswered = unanswered  # type: ignore[attr-defined]
        self._mark_lost()
        return error

    def _n_action_in_thread(self, action_info: Dataset) -> None:
        """The Storage Commitment request (PS3.4 J.3.2): N-ACTION, Action Type 1."""
        assoc = self._established()
        self._watch_replies(assoc)
        status_ds, _reply = self._request(
            "N-ACTION",
            assoc.send_n_action,
            action_info,
            1,  # Request Storage Commitment
            STORAGE_COMMITMENT,
            STORAGE_COMMITMENT_INSTANCE,
            msg_id=self._next_id(),
        )
        code = self._status(status_ds, "N-ACTION")
        if _status.category(code) not in ("Success", "Warning"):
            raise StatusError(
                "N-ACTION",
                code,
                node=self.node,
                error_comment=status_ds.get("ErrorComment"),
                sop_class=STORAGE_COMMITMENT,
            )

    def _dimse_n_in_thread(
        self, service: str, sop_class: str, instance_uid: str, data: Dataset
    ) -> Dataset:
        assoc = self._established()
        msg_id = self._next_id()
        if service == "N-CREATE":
            status_ds, reply = self._request(
                service, assoc.send_n_create, data, sop_class, instance_uid, msg_id=msg_id
            )
        else:
            status_ds, reply = self._request(
                service, assoc.send_n_set, data, sop_class, instance_uid, msg_id=msg_id
            )
        code = self._status(status_ds, service)
        if _status.category(code) not in ("Success", "Warning"):
            raise StatusError(
                service,
                code,
                node=self.node,
                error_comment=status_ds.get("ErrorComment"),
                sop_class=sop_class,
            )
        return reply if reply is not None else Dataset()

    def _on_n_event_report(self, event: evt.Event) -> tuple[int, Dataset | None]:
        """A Storage Commitment result sent on this association (reactor thread).

        Handed over only once its response is on the wire (:meth:`_watch_replies`):
        the caller may release the association as soon as it has the result,
        and a release overtaking the response would leave the peer without it.
        """
        return handle_report(event, self._report_route)

    def _report_route(self, transaction_uid: str) -> Callable[[Any], None] | None:
        with self._reports_lock:
            deliver = self._reports.get(transaction_uid)
        if deliver is None:
            return None
        return lambda item: self._replied.append((deliver, item))

    def _watch_replies(self, assoc: _PynetAssociation) -> None:
        """Deliver a report received here after its N-EVENT-REPORT response is sent.

        pynetdicom sends the response after the handler returns, in the same
        thread; wrapping this association's ``send_msg`` is the one place that
        knows the response has been written.
        """
        dimse: Any = assoc.dimse
        if getattr(dimse, "_adn_replies_watched", False):
            return
        send = dimse.send_msg

        def send_msg(primitive: Any, context_id: int) -> None:
            try:
                send(primitive, context_id)
            finally:
                if isinstance(primitive, N_EVENT_REPORT) and self._replied:
                    self._flush_replied()

        dimse.send_msg = send_msg
        dimse._adn_replies_watched = True

    def _flush_replied(self) -> None:
        while self._replied:
            deliver, item = self._replied.pop(0)
            try:
                deliver(item)
            except (Closed, RuntimeError):
                log.warning("a Storage Commitment result came after its caller left")

    def _on_conn_close(self, event: evt.Event) -> None:
        """The connection is gone: wake every commitment waiting for its result here."""
        with self._reports_lock:
            waiting = list(self._reports.values())
        for deliver in waiting:
            with contextlib.suppress(Closed, RuntimeError):
                deliver(None)


def identity_items(identity: UserIdentity | None) -> list[UserIdentityNegotiation]:
    """The User Identity Negotiation item of an A-ASSOCIATE-RQ (none without an identity)."""
    if identity is None:
        return []
    item = UserIdentityNegotiation()
    item.user_identity_type = identity.kind
    item.positive_response_requested = identity.positive_response
    item.primary_field = identity.primary
    item.secondary_field = identity.secondary if identity.kind == 2 else b""
    return [item]


#: A server's ``identify`` hook: accept (True, or the server response to send), or not.
IdentifyHook = Callable[[IdentityOffer], "bool | bytes"]


def check_identity(event: evt.Event, identify: IdentifyHook) -> None:
    """``EVT_REQUESTED`` on an acceptor: accept or reject the request on its user identity.

    Runs before pynetdicom negotiates, on every request, with or without a
    User Identity item (pynetdicom's own ``EVT_USER_ID`` sees only requests
    that offer one, and sends no response to a username or passcode).  The
    hook's False, or an exception, rejects with A-ASSOCIATE-RJ permanent,
    service-user, no reason given (PS3.8 Table 9-21 has no identity reason);
    True or bytes accept, and when a positive response was requested the
    A-ASSOCIATE-AC carries the bytes (``b""`` for True) as its server response.
    """
    assoc = event.assoc
    item = assoc.requestor.user_identity
    request = assoc.requestor.primitive
    offer = IdentityOffer(
        kind=None if item is None else item.user_identity_type,
        primary=b"" if item is None else bytes(item.primary_field or b""),
        secondary=b"" if item is None else bytes(item.secondary_field or b""),
        positive_response=bool(item is not None and item.positive_response_requested),
        calling_ae=str(request.calling_ae_title if request is not None else "").strip(),
        address=str(assoc.requestor.address),
    )
    try:
        verdict = identify(offer)
    except Exception:
        log.exception("the identify hook raised; association from %s rejected", offer.calling_ae)
        verdict = False
    if verdict is False:
        log.info(
            "association from %s (%s) rejected on its user identity (%s)",
            offer.calling_ae,
            offer.address,
            "none" if offer.kind is None else IDENTITY_KINDS.get(offer.kind, offer.kind),
        )
        assoc.acse.send_reject(0x01, 0x01, 0x01)
        assoc.kill()
        return
    if offer.positive_response:
        response = UserIdentityNegotiation()
        response.server_response = verdict if isinstance(verdict, bytes) else b""
        assoc.acceptor.add_negotiation_item(response)


class ReportSender:
    """Storage Commitment results sent on associations of their own (an SCP's side).

    An archive answers the N-ACTION at once and reports later, as PS3.4
    J.3.3 allows, on a new association to the requestor's AE (whose address
    it knows), proposing the Storage Commitment class in the SCP role.  Each
    report is sent by a thread of its own, tracked here, and :meth:`join`
    waits for them all (bounded by the timeouts of each association).

    Args:
        ae_title: the calling AE title (the archive's).
        timeouts: connect, ACSE, DIMSE and network timeouts of each association.
    """

    def __init__(self, ae_title: str, timeouts: Timeouts) -> None:
        self.ae_title = ae_title
        self.timeouts = timeouts
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def send(
        self,
        address: tuple[str, int],
        called_ae: str,
        event_type: int,
        info: Dataset,
        tls: tuple[Any, str] | None = None,
    ) -> None:
        """Send ``(event_type, info)`` to ``called_ae`` at ``address``, in a new thread."""

        def run() -> None:
            try:
                self._send_in_thread(address, called_ae, event_type, info, tls)
            except Exception:
                log.exception("Storage Commitment result to %s not sent", called_ae)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=f"aiodicomnet-report-{called_ae}", daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the reports being sent (each bounded by its own timeouts)."""
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)

    def _send_in_thread(
        self,
        address: tuple[str, int],
        called_ae: str,
        event_type: int,
        info: Dataset,
        tls: tuple[Any, str] | None,
    ) -> None:
        t = self.timeouts
        ae = RequestorAE(ae_title=self.ae_title)
        ae.connection_timeout = t.connect
        ae.acse_timeout = t.acse
        ae.dimse_timeout = t.dimse
        ae.network_timeout = t.network
        context = build_context(
            STORAGE_COMMITMENT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        )
        assoc = ae.associate(
            address[0],
            address[1],
            contexts=[context],
            ae_title=called_ae,
            ext_neg=[build_role(STORAGE_COMMITMENT, scp_role=True)],
            tls_args=tls,
        )
        try:
            if not assoc.is_established:
                log.warning(
                    "Storage Commitment result: %s at %s refused the association",
                    called_ae,
                    address,
                )
                return
            status_ds, _ = assoc.send_n_event_report(
                info, event_type, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
            )
            code = status_ds.get("Status")
            if code != _status.SUCCESS:
                log.warning(
                    "Storage Commitment result for transaction %s: %s answered %s",
                    info.get("TransactionUID"),
                    called_ae,
                    "nothing" if code is None else f"0x{int(code):04X}",
                )
            assoc.release()
        finally:
            if assoc.is_established:
                assoc.abort()
            for thread in (assoc, assoc.dul):
                if thread.is_alive() and thread is not threading.current_thread():
                    thread.join((t.acse or 30.0) + 5.0)
            close_transport(assoc)


def commitment_report(refs: Dataset, held: Callable[[str, str], int | None]) -> tuple[int, Dataset]:
    """The N-EVENT-REPORT of an SCP for one N-ACTION's Action Information (PS3.4 J.3.3.1).

    ``held(sop_class, sop_instance)`` says whether the instance is kept:
    None when it is, else the Failure Reason.  Returns (Event Type ID: 1 all
    committed, 2 some failed; Event Information).
    """
    info = Dataset()
    info.TransactionUID = refs.TransactionUID
    ok, failed = [], []
    for item in refs.get("ReferencedSOPSequence", []):
        sop_class = str(item.get("ReferencedSOPClassUID", ""))
        sop_instance = str(item.get("ReferencedSOPInstanceUID", ""))
        ref = Dataset()
        ref.ReferencedSOPClassUID = sop_class
        ref.ReferencedSOPInstanceUID = sop_instance
        reason = held(sop_class, sop_instance)
        if reason is None:
            ok.append(ref)
        else:
            ref.FailureReason = reason
            failed.append(ref)
    if ok:
        info.ReferencedSOPSequence = ok
    if failed:
        info.FailedSOPSequence = failed
    return (2 if failed else 1), info


#: ``route(transaction_uid) -> deliver or None``: where a commitment result goes.
ReportRoute = Callable[[str], "Callable[[Any], None] | None"]


def handle_report(event: evt.Event, route: ReportRoute) -> tuple[int, Dataset | None]:
    """Answer a Storage Commitment N-EVENT-REPORT (PS3.4 J.3.3), in its association's thread.

    Reads the Event Information once, finds who waits for its Transaction
    UID (``route``) and hands ``(event type, information)`` over before the
    response is sent: Success once delivered; Processing Failure (0x0110)
    when the report cannot be read or nobody waits for it any more (the
    archive keeps the result and may report it again), No Such Event Type
    (0x0113) for an Event Type other than 1 or 2.
    """
    if event.request.AffectedSOPClassUID != STORAGE_COMMITMENT:
        return 0x0118, None  # No such SOP Class
    event_type = int(event.event_type or 0)
    if event_type not in (1, 2):
        return 0x0113, None
    try:
        info = event.event_information
        transaction_uid = str(info.TransactionUID)
    except Exception as exc:
        log.warning("a Storage Commitment result that cannot be read: %s", exc)
        return 0x0110, None
    deliver = route(transaction_uid)
    if deliver is None:
        log.warning("a Storage Commitment result for unknown transaction %s", transaction_uid)
        return 0x0110, None
    try:
        deliver((event_type, info))
    except (Closed, RuntimeError):
        log.warning("a Storage Commitment result came after its caller left: %s", transaction_uid)
        return 0x0110, None
    return _status.SUCCESS, None
