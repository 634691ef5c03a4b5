"""The :class:`Client`: awaitable DICOM services against remote nodes.

Each operation gets an association to its node (pooled, or new, from the
client's :class:`~aiodicomnet._dimse.connector.Connector`; each association is
owned by one worker thread) and runs its DIMSE service there: the client
holds the services, the transport lives in :mod:`aiodicomnet._dimse`.
Multi-response services return an
:class:`Operation`: iterate it with ``async for`` to see results as they
arrive, or ``await`` it for all of them at once.  Leaving the ``async for``
early, cancelling the task or hitting a timeout scope sends C-CANCEL.

For deterministic clean-up when breaking out of a loop early, prefer::

    async with client.find(node, query) as results:
        async for ds in results:
            ...
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from contextlib import AbstractContextManager, aclosing
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from ._dimse import contexts as _cx
from ._dimse.association import Association, next_message_id
from ._dimse.connector import Connector
from ._dimse.incoming import handle_store
from ._dimse.store_plan import StoreSource, send_all
from .commitment import CommitResult, Reference, commit_request, references
from .dicomweb import WebTransport
from .errors import IncompleteRetrieve, NegotiationError, QueryError, StatusError
from .mpps import MPPS_SOP_CLASS
from .nodes import AnyNode, Node, WebNode, validate_ae_title
from .operation import Operation, as_list, last
from .pooling import DEFAULT_POOL, PoolConfig
from .query import LEVELS, UNIQUE_KEYS, Query, QueryLike, as_identifier, sop_class
from .results import InstanceOutcome, Progress, StoreResult
from .server import StorageServer
from .storage import MemoryStorage, ReceivedInstance, Storage
from .timeouts import Timeouts
from .worklist import WorklistQuery

__all__ = ["Client", "Operation"]

log = logging.getLogger("aiodicomnet.client")

ProgressCallback = Callable[[Progress], object]


class Client:
    """An application entity that talks to remote nodes.

    Args:
        ae_title: our (calling) AE title.
        timeouts: connect, ACSE, DIMSE, network and cancel timeouts.
        max_pdu: the largest PDU we accept (0: no limit, the fastest).
        buffer: responses that may wait for the consumer before the worker
            thread (and so the peer, through TCP) is slowed down.
        pool: association reuse and the limit of concurrent operations per
            node (default ``PoolConfig()``: idle associations kept 5 s for
            reuse, at most 4 operations at once per node; see
            :mod:`aiodicomnet.pooling` for why); ``PoolConfig(reuse=False)``
            opens one association per operation.

    Use as ``async with Client("MYAE") as client:``; leaving the block
    releases idle pooled associations, and then no thread or socket of the
    client remains.  (Without ``async with``, call :meth:`aclose`; idle
    associations otherwise release themselves after the idle timeout.)

    Recipes over a client live beside it: :func:`~aiodicomnet.echo_all`,
    :func:`~aiodicomnet.find_all` (many nodes at once) and
    :func:`~aiodicomnet.browse` (a patients/studies/series tree).
    """

    def __init__(
        self,
        ae_title: str = "AIODICOMNET",
        *,
        timeouts: Timeouts | None = None,
        max_pdu: int = 0,
        buffer: int = 16,
        pool: PoolConfig | None = None,
    ) -> None:
        self.ae_title = validate_ae_title(ae_title)
        self.timeouts = timeouts or Timeouts()
        self.max_pdu = max_pdu
        self.buffer = buffer
        self.pool_config = pool or DEFAULT_POOL
        self._connector = Connector(
            self.ae_title,
            timeouts=self.timeouts,
            max_pdu=max_pdu,
            buffer=buffer,
            pool=self.pool_config,
        )
        self._web = WebTransport(self.timeouts, buffer=buffer)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release idle pooled associations; abort any still in use (normally none).

        Afterwards no thread or socket of this client is left (DICOMweb
        connections included).
        """
        try:
            await self._connector.aclose()
        finally:
            await self._web.aclose()

    def idle_associations(self, node: Node | None = None) -> int:
        """How many idle associations the pool keeps (to ``node``, or in all)."""
        return self._connector.pool.idle_count(node)

    # ------------------------------------------------------------------ C-ECHO

    async def echo(self, node: AnyNode, *, timeouts: Timeouts | None = None) -> float:
        """Verify ``node`` with C-ECHO; return the round-trip time in seconds.

        A :class:`WebNode` is verified with a QIDO-RS search for one study
        (DICOMweb has no echo); ``timeouts`` apply as for a find.

        Raises:
            ConnectError, AssociationRejected, DicomTimeout, StatusError: as fits;
            AuthError, HttpError: a DICOMweb node refused the request.
        """
        if isinstance(node, WebNode):
            return await self._web.echo(node, timeouts)
        return await self._connector.run(
            node, _cx.query_contexts(), lambda a: a.echo(), timeouts=timeouts
        )

    async def verify_identity(self, node: Node) -> bytes | None:
        """Associate with ``node`` offering its :attr:`~aiodicomnet.Node.identity`; C-ECHO
        on that association; return the node's User Identity server response.

        ``b""`` when the node confirmed a username or passcode, the server's
        Kerberos ticket, SAML response or JWT for the others, ``None`` when
        it sent no response (it was not asked to, or does not support the
        negotiation).

        Raises:
            AssociationRejected: the node refused the identity (or the AE).
            IdentityNotConfirmed: a confirmation was asked for and none came.
        """

        async def body(assoc: Association) -> bytes | None:
            await assoc.echo()
            return assoc.identity_response

        return await self._connector.run(node, _cx.query_contexts(), body)

    # ------------------------------------------------------------------ C-FIND

    def find(
        self,
        node: AnyNode,
        query: QueryLike | WorklistQuery,
        *,
        model: str | None = None,
        fuzzy: bool = False,
    ) -> Operation[Dataset, list[Dataset]]:
        """Search ``node`` with C-FIND (QIDO-RS on a :class:`WebNode`).

        Iterate for identifiers as the pending responses arrive, or await for
        a list of all of them.  ``query`` is a :class:`Query` or a raw
        identifier Dataset (with QueryRetrieveLevel); ``model`` is
        ``"PATIENT_ROOT"`` or ``"STUDY_ROOT"`` (default: the query's own).

        A :class:`~aiodicomnet.WorklistQuery` searches the node's Modality
        Worklist (Modality Worklist Information Model - FIND, on an
        association of its own); each result holds its Scheduled Procedure
        Step Sequence.  A DIMSE service only.

        On a :class:`WebNode` every matching type has its QIDO-RS parameter,
        results are paged transparently, and ``fuzzy=True`` asks for fuzzy
        person-name matching (a QIDO-RS option only; see
        :mod:`aiodicomnet.dicomweb.qido`).

        Raises:
            QueryError: before anything is sent, for a malformed query (or
                ``fuzzy`` asked of a DIMSE node).
            StatusError: the peer answered with a failure status.
            ProtocolError: a response could not be decoded (the results
                yielded before it are not the whole answer).
        """
        if isinstance(query, WorklistQuery):
            if isinstance(node, WebNode):
                raise QueryError("Modality Worklist is a DIMSE service: it needs a Node")
            if model is not None or fuzzy:
                raise QueryError("a WorklistQuery takes neither model= nor fuzzy=")
            wl_identifier, wl_contexts = query.to_dataset(), _cx.worklist_contexts()
            return Operation(
                lambda: self._find(node, wl_identifier, query.sop_class, wl_contexts), as_list
            )
        if isinstance(node, WebNode):
            identifier, _ = as_identifier(query, model, service="find")  # checked before sending
            web = self._web
            return Operation(lambda: web.find(node, identifier, fuzzy=fuzzy), as_list)
        if fuzzy:
            raise QueryError("fuzzy matching is a QIDO-RS option: it needs a WebNode")
        identifier, model_name = as_identifier(query, model, service="find")
        uid = sop_class(model_name, "find")
        return Operation(lambda: self._find(node, identifier, uid, _cx.query_contexts()), as_list)

    async def _find(
        self,
        node: Node,
        identifier: Dataset,
        uid: str,
        contexts: Sequence[Any],
    ) -> AsyncGenerator[Dataset, None]:
        async with aclosing(
            self._connector.stream(node, contexts, lambda a: a.find(identifier, uid))
        ) as responses:
            async for ds in responses:
                yield ds

    # ------------------------------------------------------------------ C-STORE

    async def store(
        self,
        node: AnyNode,
        items: StoreSource,
        *,
        associations: int = 1,
        on_progress: Callable[[InstanceOutcome], object] | None = None,
    ) -> StoreResult:
        """Send instances with C-STORE; return one outcome per instance.

        ``items`` are Datasets (with ``file_meta``), paths of Part 10 files, or
        directories (searched recursively), alone or in an iterable.  One
        association proposes exactly the SOP classes and transfer syntaxes
        present (another one is opened past 128 contexts).  Files are sent
        as they are, read one at a time: their pixel data is never decoded and
        memory does not grow with their number.  ``associations`` > 1 spreads
        the instances over that many associations at once (see
        docs/benchmarks.md for what it buys on a given machine).  A failure
        of one instance does not stop the others; check :attr:`StoreResult.ok`.

        On a :class:`WebNode` the instances go by STOW-RS in streamed batches,
        ``associations`` of them at once; each instance's outcome is read
        from the response (stored, warning, or failed with its reason).

        Every instance ends in exactly one outcome.  A peer that accepts none
        of the proposed presentation contexts is reported per instance ("not
        sent", with the reason), not raised.

        Raises:
            ConnectError, AssociationRejected, DicomTimeout: an association
                could not be set up; or
            AssociationAborted, DimseTimeout: an association was lost midway.
                Either way the exception's ``partial`` attribute holds the
                StoreResult with one outcome for every instance: stored,
                refused, sent without a response, or not sent.
        """
        if isinstance(node, WebNode):
            return await self._web.store(
                node, items, concurrency=associations, on_progress=on_progress
            )
        return await send_all(
            self._connector, node, items, associations=associations, on_progress=on_progress
        )

    # ------------------------------------------------------------------ C-MOVE

    def move(
        self, node: Node, query: QueryLike, destination: str, *, model: str | None = None
    ) -> Operation[Progress, Progress]:
        """Ask ``node`` to send what ``query`` names to the AE ``destination`` (C-MOVE).

        Iterate for :class:`Progress` as responses arrive (the last one has
        ``done`` set), or await for the final one.  A final *failure* status
        (for example 0xA801, move destination unknown) raises
        :class:`StatusError`, whose ``progress`` holds the final counts; a
        warning (0xB000, some sub-operations failed) is a normal result.
        """
        destination = validate_ae_title(destination)
        identifier, model_name = as_identifier(query, model, service="move")
        return Operation(lambda: self._move(node, identifier, model_name, destination), last)

    async def _move(
        self, node: Node, identifier: Dataset, model: str, destination: str
    ) -> AsyncGenerator[Progress, None]:
        uid = sop_class(model, "move")
        async with aclosing(
            self._connector.stream(
                node, _cx.query_contexts(), lambda a: a.move(identifier, uid, destination)
            )
        ) as responses:
            async for progress in responses:
                yield progress

    # ------------------------------------------------------------------ retrieve

    def retrieve(
        self,
        node: AnyNode,
        query: QueryLike,
        *,
        via: StorageServer | str = "get",
        model: str | None = None,
        storage: Storage | None = None,
        sop_classes: Iterable[str] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Operation[ReceivedInstance, list[ReceivedInstance]]:
        """Retrieve exactly the instances this one request brings.

        ``via=server`` (a running :class:`~aiodicomnet.server.StorageServer`):
        C-MOVE with the server's AE title as destination (the peer must know
        that AE title's address).  The sub-operations are matched to this
        request by Move Originator Message ID and AE title when the peer sends
        them, otherwise by the peer's AE title and the requested UIDs.  Each
        instance is handed over before its C-STORE is acknowledged, so the
        iterator ends exactly when the final C-MOVE response has arrived and
        every instance it moved has been yielded.  Where instances are stored
        is the server's choice; ``storage`` is ignored.

        ``via="get"``: C-GET on our own association (see :meth:`get`).

        On a :class:`WebNode`, ``via`` is not used: WADO-RS brings the
        instances in its responses, read part by part as they arrive into
        ``storage`` (default: memory); a study's series are fetched several
        at once (the node's ``concurrency``).  ``on_progress`` gets a
        :class:`Progress` per instance; the count is checked against the
        one QIDO-RS reported.

        Raises:
            StatusError: a final failure status (for example 0xA801, the peer
                does not know the server's AE title).
            IncompleteRetrieve: the peer reports more completed sub-operations
                than arrived for this request.
        """
        if isinstance(node, WebNode):
            identifier, _ = as_identifier(query, model, service="move")  # checked before sending
            web = self._web
            return Operation(
                lambda: web.retrieve(node, identifier, storage or MemoryStorage(), on_progress),
                as_list,
            )
        if isinstance(via, str):
            if via != "get":
                raise ValueError(f"via must be 'get' or a StorageServer, not {via!r}")
            return self.get(
                node,
                query,
                model=model,
                storage=storage,
                sop_classes=sop_classes,
                on_progress=on_progress,
            )
        identifier, model_name = as_identifier(query, model, service="move")
        server = via
        return Operation(
            lambda: self._retrieve_move(node, identifier, model_name, server, on_progress),
            as_list,
        )

    async def _retrieve_move(
        self,
        node: Node,
        identifier: Dataset,
        model: str,
        server: StorageServer,
        on_progress: ProgressCallback | None,
    ) -> AsyncGenerator[ReceivedInstance, None]:
        uid = sop_class(model, "move")
        msg_id = next_message_id()
        match = _move_matcher(self.ae_title, msg_id, node, identifier)

        def subscribe(deliver: Callable[[Any], None]) -> AbstractContextManager[Any]:
            # Each matching instance is handed over before its C-STORE-RSP.
            return server.subscribe(match, deliver=deliver)

        def start(assoc: Association) -> AsyncGenerator[Any, None]:
            return assoc.move(identifier, uid, server.ae_title, msg_id=msg_id, merge=subscribe)

        async with aclosing(
            _received(self._connector.stream(node, _cx.query_contexts(), start), node, on_progress)
        ) as instances:
            async for instance in instances:
                yield instance

    # ------------------------------------------------------------------ Storage Commitment

    async def commit(
        self,
        node: Node,
        sent: StoreResult | Iterable[Reference],
        *,
        via: StorageServer | None = None,
        report_timeout: float = 60.0,
    ) -> CommitResult:
        """Ask ``node`` to take responsibility for instances sent to it (Storage Commitment).

        ``sent`` is the :class:`StoreResult` of a store (its stored instances
        are named) or (SOP Class UID, SOP Instance UID) pairs.  An N-ACTION
        with a new Transaction UID asks for the commitment; the result, an
        N-EVENT-REPORT with that Transaction UID, is awaited on the same
        association (kept open meanwhile) and, with ``via`` (a running
        :class:`~aiodicomnet.StorageServer` the node knows as this client's
        AE title's address), on an association the node opens to that
        server, whichever comes first (PS3.4 J.3.3 allows both).

        Returns:
            a :class:`~aiodicomnet.CommitResult`: what is committed, what
            failed with its reason, and what the report left out.

        Raises:
            ValueError: nothing to commit.
            StatusError: the node refused the request (the N-ACTION status).
            CommitmentTimeout: no result within ``report_timeout`` seconds.
            AssociationAborted: the association ended while the result
                could only come on it (no ``via``).
            ConnectError, AssociationRejected, NegotiationError, DicomTimeout:
                as for any service.
        """
        refs = references(sent)
        transaction_uid = str(generate_uid())
        action = commit_request(transaction_uid, refs)
        merge = None
        if via is not None:
            server = via

            def merge(deliver: Callable[[Any], None]) -> AbstractContextManager[Any]:
                return server.expect_report(transaction_uid, deliver)

        def start(assoc: Association) -> AsyncGenerator[tuple[int, Dataset] | None, None]:
            return assoc.commit(action, transaction_uid, within=report_timeout, merge=merge)

        # A stream, not a call: once the N-ACTION is accepted (the first item),
        # a lost association is an error, never a retry of the same transaction.
        report: tuple[int, Dataset] | None = None
        async with aclosing(
            self._connector.stream(node, _cx.commitment_contexts(), start)
        ) as steps:
            async for step in steps:
                report = step if step is not None else report
        if report is None:  # pragma: no cover - commit() yields a report or raises
            raise AssertionError("Storage Commitment ended without a result")
        return CommitResult.from_report(transaction_uid, refs, report[1])

    # ------------------------------------------------------------------ MPPS

    async def mpps_create(
        self, node: Node, attributes: Dataset, *, sop_instance_uid: str | None = None
    ) -> str:
        """Create a Modality Performed Procedure Step on ``node`` (N-CREATE); return its UID.

        ``attributes`` are those of a step that starts
        (:func:`aiodicomnet.mpps.in_progress` builds them).  The SOP Instance
        UID is ours to choose (IHE Scheduled Workflow has the modality make
        it): a new one unless ``sop_instance_uid`` is given.  Keep it for
        :meth:`mpps_set`.

        Two calls named after their DIMSE messages rather than an ``Mpps``
        object: the step's state lives at the SCP (it refuses an N-SET of a
        step already completed), the two messages may be minutes and
        processes apart, and the UID is all that links them.

        Raises:
            StatusError: the SCP refused the step (for example 0x0106,
                invalid attribute value; 0x0111, duplicate SOP Instance).
        """
        uid = sop_instance_uid or str(generate_uid())

        async def body(assoc: Association) -> Dataset:
            return await assoc.n_create(MPPS_SOP_CLASS, uid, attributes)

        await self._connector.run(node, _cx.mpps_contexts(), body)
        return uid

    async def mpps_set(self, node: Node, sop_instance_uid: str, modifications: Dataset) -> None:
        """Update the Modality Performed Procedure Step ``sop_instance_uid`` (N-SET).

        ``modifications``: the attributes that change, usually the end of
        the step (:func:`aiodicomnet.mpps.completed` or
        :func:`~aiodicomnet.mpps.discontinued`).

        Raises:
            StatusError: the SCP refused (0x0110 with Error ID 0xA710 once the
                step is COMPLETED or DISCONTINUED; 0x0112, no such instance).
        """

        async def body(assoc: Association) -> Dataset:
            return await assoc.n_set(MPPS_SOP_CLASS, sop_instance_uid, modifications)

        await self._connector.run(node, _cx.mpps_contexts(), body)

    # ------------------------------------------------------------------ DICOMweb only

    def metadata(self, node: WebNode, query: QueryLike) -> Operation[Dataset, list[Dataset]]:
        """The metadata of every instance ``query`` names, without bulk data (WADO-RS).

        Each Dataset holds an instance's attributes as DICOM JSON gave them;
        pixel data and other bulk data are left out, their URIs in the
        dataset's ``bulk_data_uris``.  A DICOMweb service only (over DIMSE, a
        C-FIND at IMAGE level returns what the peer chooses).

        Raises:
            QueryError: ``query`` names no study, series or instance.
        """
        identifier, _ = as_identifier(query, service="move")
        web = self._web
        return Operation(lambda: web.metadata(_web_only(node, "metadata"), identifier), as_list)

    async def thumbnail(
        self, node: WebNode, query: QueryLike, *, size: int = 128, media_type: str = "image/jpeg"
    ) -> bytes:
        """A rendered preview image of what ``query`` names, for a browser's list (WADO-RS).

        The named instance, else the middle instance of the first series,
        rendered by the server as ``media_type`` within ``size`` x ``size``
        pixels.  A DICOMweb service only.

        Raises:
            NotFound: nothing to render.
        """
        identifier, _ = as_identifier(query, service="move")
        node = _web_only(node, "thumbnail")
        return await self._web.thumbnail(node, identifier, size=size, media_type=media_type)

    # ------------------------------------------------------------------ C-GET

    def get(
        self,
        node: Node,
        query: QueryLike,
        *,
        model: str | None = None,
        storage: Storage | None = None,
        sop_classes: Iterable[str] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Operation[ReceivedInstance, list[ReceivedInstance]]:
        """Retrieve what ``query`` names over C-GET, on our own association.

        Iterate for each :class:`ReceivedInstance` as it arrives, or await for
        the list.  ``storage`` chooses where instances go (default: memory).
        The SCP role is negotiated for ``sop_classes``; when not given, they are
        learnt with C-FINDs down to IMAGE level first (falling back to a list
        of common storage classes if the peer cannot answer that).
        ``on_progress`` receives each C-GET response's :class:`Progress`.

        Raises:
            StatusError: a final failure status (``progress`` attribute set).
        """
        identifier, model_name = as_identifier(query, model, service="get")
        return Operation(
            lambda: self._get(
                node, identifier, model_name, storage or MemoryStorage(), sop_classes, on_progress
            ),
            as_list,
        )

    async def _get(
        self,
        node: Node,
        identifier: Dataset,
        model: str,
        storage: Storage,
        sop_classes: Iterable[str] | None,
        on_progress: ProgressCallback | None,
    ) -> AsyncGenerator[ReceivedInstance, None]:
        classes = list(sop_classes) if sop_classes is not None else None
        if not classes:
            classes = await self._discover_sop_classes(node, identifier, model)
        uid = sop_class(model, "get")
        contexts, roles = _cx.get_contexts(uid, classes)
        storage = storage.bind()

        def start(assoc: Association) -> AsyncGenerator[Any, None]:
            assoc.store_handler = lambda event: handle_store(
                event, storage, assoc.deliver, logger=log
            )
            return assoc.get(identifier, uid)

        async with aclosing(
            _received(self._connector.stream(node, contexts, start, roles=roles), node, on_progress)
        ) as instances:
            async for instance in instances:
                yield instance

    async def _discover_sop_classes(self, node: Node, identifier: Dataset, model: str) -> list[str]:
        """SOP classes of the instances ``identifier`` names: C-FIND down to IMAGE level.

        Walks the hierarchy (each level's unique keys), so it also works with
        strictly hierarchical SCPs; falls back to
        :data:`~aiodicomnet._dimse.contexts.DEFAULT_GET_SOP_CLASSES`.
        """
        try:
            found = await self._walk_to_images(node, identifier, model)
        except (StatusError, NegotiationError, QueryError) as exc:
            log.info("%s: cannot list SOP classes (%s); proposing common ones", node, exc)
            return list(_cx.DEFAULT_GET_SOP_CLASSES)
        return sorted(found) or list(_cx.DEFAULT_GET_SOP_CLASSES)

    async def _walk_to_images(self, node: Node, identifier: Dataset, model: str) -> set[str]:
        """C-FINDs level by level, each naming the unique keys found above it."""
        query = Query.from_dataset(identifier, model=model)
        known = {k: v for k, v in query.keys.items() if k in UNIQUE_KEYS.values()}
        below = LEVELS[LEVELS.index(query.level) + 1 :] or ("IMAGE",)
        classes: set[str] = set()
        uid = sop_class(model, "find")

        async def walk(assoc: Association) -> None:
            frontier: list[dict[str, Any]] = [known]
            for level in below:
                key = UNIQUE_KEYS[level]
                wanted = "SOPClassUID" if level == "IMAGE" else key
                next_frontier: list[dict[str, Any]] = []
                for keys in frontier:
                    step = Query(level, keys, model=model, defaults=False).returning(key, wanted)
                    async with aclosing(assoc.find(step.to_dataset(), uid)) as responses:
                        async for rsp in responses:
                            if rsp.get(wanted) and level == "IMAGE":
                                classes.add(str(rsp.SOPClassUID))
                            elif rsp.get(wanted):
                                next_frontier.append({**keys, key: str(rsp.get(key))})
                frontier = next_frontier

        await self._connector.run(node, _cx.query_contexts(), walk)
        return classes


def _web_only(node: AnyNode, service: str) -> WebNode:
    if not isinstance(node, WebNode):
        raise TypeError(f"{service} is a DICOMweb service: it needs a WebNode, not {node}")
    return node


async def _received(
    items: AsyncGenerator[Any, None], node: Node, on_progress: ProgressCallback | None
) -> AsyncGenerator[ReceivedInstance, None]:
    """The instances of a retrieve's stream, then a check that all of them came.

    The stream mixes :class:`Progress` (to ``on_progress``) and instances
    (yielded).  At its end, sub-operations the peer reports as failed, or as
    completed but never received here, raise :class:`IncompleteRetrieve`: a
    retrieve that did not get everything never passes for a complete one.
    """
    final: Progress | None = None
    received = 0
    async with aclosing(items):
        async for item in items:
            if isinstance(item, Progress):
                final = item if item.done else final
                if on_progress is not None:
                    on_progress(item)
            else:
                received += 1
                yield item
    if final is None:
        return
    expected = final.completed + final.warning + final.failed
    if final.failed or received < final.completed + final.warning:
        raise IncompleteRetrieve(
            expected,
            received,
            failed=final.failed,
            failed_instances=final.failed_instances,
            progress=final,
            node=node,
        )


def _move_matcher(
    our_ae: str, msg_id: int, node: Node, identifier: Dataset
) -> Callable[[ReceivedInstance], bool]:
    """Does a received instance belong to the C-MOVE with ``msg_id``?

    By Move Originator AE Title and Message ID (PS3.7 9.1.1.1) when the
    sub-operation carries them; otherwise by the sender's AE title and the
    unique keys the request named.
    """
    wanted: dict[str, set[str]] = {}
    for attr, keyword in (
        ("patient_id", "PatientID"),
        ("study_instance_uid", "StudyInstanceUID"),
        ("series_instance_uid", "SeriesInstanceUID"),
        ("sop_instance_uid", "SOPInstanceUID"),
    ):
        value = identifier.get(keyword)
        if value:
            values = value if isinstance(value, (list, tuple)) else str(value).split("\\")
            wanted[attr] = {str(v) for v in values}

    def match(instance: ReceivedInstance) -> bool:
        if instance.move_originator_message_id is not None:
            # pynetdicom 3.0 movers send their own AE title as Move Originator:
            # accept it too (Message IDs are unique in this process).
            originator = (instance.move_originator_ae or "").strip()
            return instance.move_originator_message_id == msg_id and originator in (
                our_ae,
                node.ae_title,
            )
        if instance.calling_ae.strip() != node.ae_title:
            return False
        return all(getattr(instance, attr) in values for attr, values in wanted.items())

    return match
