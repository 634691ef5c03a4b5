"""The :class:`Client`: awaitable DICOM services against remote nodes.

Each operation opens an association (in a worker thread that owns it), runs
its DIMSE service there and releases it.  Multi-response services return an
:class:`Operation`: iterate it with ``async for`` to see results as they
arrive, or ``await`` it for all of them at once.  Leaving the ``async for``
early, cancelling the task or hitting a timeout scope sends C-CANCEL.

For deterministic clean-up when breaking out of a loop early, prefer::

    async with client.find(node, query) as results:
        async for ds in results:
            ...
"""

from __future__ import annotations

import functools
import logging
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
)
from contextlib import aclosing, asynccontextmanager
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
from pydicom.dataset import Dataset
from pynetdicom.presentation import PresentationContext

from ._dimse import contexts as _cx
from ._dimse.association import Association, StoreItem, next_message_id
from ._dimse.bridge import outbox, run_in_thread
from ._dimse.pool import Pool
from ._dimse.store_plan import StoreSource, flatten, plan_store
from .browse import BrowseTree, browse
from .errors import (
    AssociationAborted,
    AssociationError,
    DicomTimeout,
    IncompleteRetrieve,
    NegotiationError,
    QueryError,
    StatusError,
)
from .fanout import FindAll, NodeResult, run_each
from .nodes import Node, validate_ae_title
from .operation import Operation, as_list, last
from .pooling import NO_REUSE, PoolConfig
from .query import LEVELS, UNIQUE_KEYS, Query, as_identifier, sop_class
from .results import InstanceOutcome, Progress, StoreResult
from .server import StorageServer
from .storage import MemoryStorage, ReceivedInstance, Storage, handle_store
from .timeouts import Timeouts

__all__ = ["Client", "Operation"]

log = logging.getLogger("aiodicomnet.client")

T = TypeVar("T")
R = TypeVar("R")

QueryLike = Query | Dataset
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
            node (default: no reuse, at most 4 at once per node); pass
            ``PoolConfig()`` to keep idle associations for reuse.

    Use as ``async with Client("MYAE") as client:``; leaving the block
    releases idle pooled associations.
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
        self.pool = Pool(pool or NO_REUSE)
        self._open: set[Association] = set()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release idle pooled associations; abort any still in use (normally none)."""
        with anyio.CancelScope(shield=True):
            for assoc in self.pool.drain():
                await assoc.release()
            for assoc in list(self._open):
                await assoc.abort()
            self._open.clear()

    # ------------------------------------------------------------------ plumbing

    @asynccontextmanager
    async def _associate(
        self,
        node: Node,
        contexts: list[PresentationContext],
        *,
        roles: list[Any] | None = None,
        timeouts: Timeouts | None = None,
        fresh: bool = False,
    ) -> AsyncIterator[Association]:
        """An association to ``node`` for one operation: pooled, or new.

        Waits for a free slot of the node's concurrency limit.  ``fresh``
        skips the pool (the retry after a pooled association turned out dead).
        """
        key = (node, _cx.contexts_key(contexts, roles or []))
        async with self.pool.limit(node):
            assoc, dead = (None, []) if fresh or timeouts else self.pool.take(key)
            for stale in dead:
                await stale.release()
            if assoc is None:
                assoc = Association(
                    self.ae_title,
                    node,
                    contexts,
                    timeouts=timeouts or self.timeouts,
                    max_pdu=self.max_pdu,
                    buffer=self.buffer,
                    roles=roles or (),
                )
                await assoc.open()
                assoc.reused = False
            else:
                assoc.reused = True
            self._open.add(assoc)
            try:
                yield assoc
            finally:
                self._open.discard(assoc)
                assoc.store_handler = None
                if timeouts or not self.pool.give(key, assoc):
                    await assoc.release()

    async def _run(
        self,
        node: Node,
        contexts: list[PresentationContext],
        body: Callable[[Association], Awaitable[R]],
        **kwargs: Any,
    ) -> R:
        """Run ``body(association)``; retry once on a fresh association if a
        pooled one turns out to have been closed by the peer meanwhile."""
        async with self._associate(node, contexts, **kwargs) as assoc:
            try:
                return await body(assoc)
            except AssociationAborted:
                if not assoc.reused:
                    raise
        log.info("%s: pooled association was closed by the peer; reconnecting", node)
        async with self._associate(node, contexts, fresh=True, **kwargs) as assoc:
            return await body(assoc)

    async def _stream(
        self,
        node: Node,
        contexts: list[PresentationContext],
        start: Callable[[Association], AsyncGenerator[T, None]],
        **kwargs: Any,
    ) -> AsyncGenerator[T, None]:
        """Yield from ``start(association)``, with :meth:`_run`'s retry when
        nothing has been yielded yet."""
        for fresh in (False, True):
            yielded = False
            async with self._associate(node, contexts, fresh=fresh, **kwargs) as assoc:
                try:
                    async with aclosing(start(assoc)) as items:
                        async for item in items:
                            yielded = True
                            yield item
                    return
                except AssociationAborted:
                    if yielded or not assoc.reused:
                        raise
            log.info("%s: pooled association was closed by the peer; reconnecting", node)

    # ------------------------------------------------------------------ C-ECHO

    async def echo(self, node: Node, *, timeouts: Timeouts | None = None) -> float:
        """Verify ``node`` with C-ECHO; return the round-trip time in seconds.

        Raises:
            ConnectError, AssociationRejected, DicomTimeout, StatusError: as fits.
        """
        return await self._run(node, _cx.query_contexts(), lambda a: a.echo(), timeouts=timeouts)

    # ------------------------------------------------------------------ C-FIND

    def find(
        self, node: Node, query: QueryLike, *, model: str | None = None
    ) -> Operation[Dataset, list[Dataset]]:
        """Search ``node`` with C-FIND.

        Iterate for identifiers as the pending responses arrive, or await for
        a list of all of them.  ``query`` is a :class:`Query` or a raw
        identifier Dataset (with QueryRetrieveLevel); ``model`` is
        ``"PATIENT_ROOT"`` or ``"STUDY_ROOT"`` (default: the query's own).

        Raises:
            QueryError: before anything is sent, for a malformed query.
            StatusError: the peer answered with a failure status.
        """
        identifier, model_name = as_identifier(query, model, service="find")
        return Operation(lambda: self._find(node, identifier, model_name), as_list)

    async def _find(
        self, node: Node, identifier: Dataset, model: str
    ) -> AsyncGenerator[Dataset, None]:
        uid = sop_class(model, "find")
        async with aclosing(
            self._stream(node, _cx.query_contexts(), lambda a: a.find(identifier, uid))
        ) as responses:
            async for ds in responses:
                yield ds

    # ------------------------------------------------------------------ many nodes

    async def echo_all(
        self, nodes: Iterable[Node], *, node_timeout: float | None = 10.0
    ) -> list[NodeResult[float]]:
        """C-ECHO every node at once; one :class:`~aiodicomnet.fanout.NodeResult` each.

        A node that fails, or does not answer within ``node_timeout`` seconds,
        gets its typed error in its result; it never delays the others
        beyond ``node_timeout`` nor raises.
        """
        return await run_each(list(nodes), self.echo, node_timeout)

    def find_all(
        self,
        nodes: Iterable[Node],
        query: QueryLike,
        *,
        model: str | None = None,
        node_timeout: float | None = 30.0,
    ) -> FindAll:
        """C-FIND on every node at once, each within ``node_timeout`` seconds.

        ``await`` it for a :class:`~aiodicomnet.fanout.FindAllResult`
        (identifiers with their node, per-node errors, ``merged()`` to
        de-duplicate by UID), or stream with ``async with ... as results:
        async for found in results``.

        Raises:
            QueryError: at once, for a malformed query.
        """
        return FindAll(
            self, list(nodes), query, model=model, node_timeout=node_timeout, buffer=self.buffer
        )

    async def browse(
        self, node: Node, query: Query, *, series: bool = True, count_instances: bool = True
    ) -> BrowseTree:
        """The patients -> studies -> series tree of a PATIENT or STUDY query.

        See :func:`aiodicomnet.browse.browse`; lower-level C-FINDs run
        concurrently, at most ``PoolConfig.max_per_node`` at a time.
        """
        return await browse(self, node, query, series=series, count_instances=count_instances)

    # ------------------------------------------------------------------ C-STORE

    async def store(
        self,
        node: Node,
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

        Raises:
            ConnectError, AssociationRejected, DicomTimeout: an association
                could not be set up.
            AssociationAborted, DimseTimeout: an association was lost midway;
                the exception's ``partial`` attribute holds the StoreResult,
                including the instances that were not sent.
        """
        if associations < 1:
            raise ValueError(f"associations must be at least 1, not {associations}")
        plan, outcomes = await run_in_thread(plan_store, flatten(items))
        result = StoreResult(list(outcomes))
        if on_progress is not None:
            for outcome in outcomes:
                on_progress(outcome)
        errors: list[AssociationError | DicomTimeout] = []

        async def send(group: list[PresentationContext], batch: list[StoreItem]) -> None:
            try:
                await self._store_batch(node, group, batch, result, on_progress)
            except (AssociationError, DicomTimeout) as exc:
                errors.append(exc)

        for group in _cx.store_context_groups(plan.keys()):
            keys = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in group}
            batch = [item for key in sorted(keys) for item in plan[key]]
            if not batch:
                continue
            n = min(associations, len(batch))
            size = -(-len(batch) // n)
            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(send, group, batch[i * size : (i + 1) * size])
        if errors:
            errors[0].partial = result
            raise errors[0]
        return result

    async def _store_batch(
        self,
        node: Node,
        group: list[PresentationContext],
        batch: list[StoreItem],
        result: StoreResult,
        on_progress: Callable[[InstanceOutcome], object] | None,
    ) -> None:
        """Send ``batch`` on one association, appending outcomes to ``result``.

        Instances not sent because the association broke are appended when
        the batch ends, so a pooled association found dead can be replaced
        (once) without reporting anything twice.
        """
        for fresh in (False, True):
            unsent: list[InstanceOutcome] = []
            sent_any = retry = False
            async with self._associate(node, group, fresh=fresh) as assoc:
                try:
                    async with aclosing(assoc.store(batch)) as outcomes:
                        async for outcome in outcomes:
                            if outcome.status is None:  # reported when the batch ends
                                unsent.append(outcome)
                                continue
                            sent_any = True
                            result.outcomes.append(outcome)
                            if on_progress is not None:
                                on_progress(outcome)
                except AssociationAborted:
                    retry = not (sent_any or fresh or not assoc.reused)
                    if not retry:
                        raise
                finally:
                    if not retry:
                        result.outcomes.extend(unsent)
                        if on_progress is not None:
                            for outcome in unsent:
                                on_progress(outcome)
            if not retry:
                return
            log.info("%s: pooled association was closed by the peer; reconnecting", node)

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
            self._stream(node, _cx.query_contexts(), lambda a: a.move(identifier, uid, destination))
        ) as responses:
            async for progress in responses:
                yield progress

    # ------------------------------------------------------------------ retrieve

    def retrieve(
        self,
        node: Node,
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

        Raises:
            StatusError: a final failure status (for example 0xA801, the peer
                does not know the server's AE title).
            IncompleteRetrieve: the peer reports more completed sub-operations
                than arrived for this request.
        """
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
        box, receive = outbox(self.buffer)
        subscription = server._subscribe(
            match,
            deliver=functools.partial(box.put, confirm=True),  # before the C-STORE-RSP
        )
        final: Progress | None = None
        received = 0
        try:
            async with (
                self._associate(node, _cx.query_contexts()) as assoc,
                aclosing(
                    assoc.move(
                        identifier, uid, server.ae_title, msg_id=msg_id, channel=(box, receive)
                    )
                ) as items,
            ):
                async for item in items:
                    if isinstance(item, Progress):
                        final = item if item.done else final
                        if on_progress is not None:
                            on_progress(item)
                    else:
                        received += 1
                        yield item
        finally:
            subscription.close()
        if final is not None and received < final.completed + final.warning:
            raise IncompleteRetrieve(final.completed + final.warning, received, node=node)

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
        storage = storage.bind(anyio.lowlevel.current_token())

        def start(assoc: Association) -> AsyncGenerator[Any, None]:
            assoc.store_handler = lambda event: handle_store(
                event, storage, assoc.deliver, logger=log
            )
            return assoc.get(identifier, uid)

        async with aclosing(self._stream(node, contexts, start, roles=roles)) as items:
            async for item in items:
                if isinstance(item, Progress):
                    if on_progress is not None:
                        on_progress(item)
                else:
                    yield item

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
        uid = sop_class(model, "find")
        level = LEVELS.index(str(identifier.QueryRetrieveLevel))
        known = {k: identifier.get(k) for k in UNIQUE_KEYS.values() if identifier.get(k)}
        below = LEVELS[level + 1 :] or ("IMAGE",)
        classes: set[str] = set()
        async with self._associate(node, _cx.query_contexts()) as assoc:
            frontier = [known]
            for lower in below:
                key = UNIQUE_KEYS[lower]
                next_frontier: list[dict[str, Any]] = []
                for keys in frontier:
                    ds = Dataset()
                    ds.QueryRetrieveLevel = lower
                    for keyword, value in keys.items():
                        setattr(ds, keyword, value)
                    setattr(ds, key, keys.get(key, ""))
                    if lower == "IMAGE":
                        ds.SOPClassUID = ""
                    async with aclosing(assoc.find(ds, uid)) as responses:
                        async for rsp in responses:
                            if lower == "IMAGE" and rsp.get("SOPClassUID"):
                                classes.add(str(rsp.SOPClassUID))
                            elif lower != "IMAGE" and rsp.get(key):
                                next_frontier.append({**keys, key: rsp.get(key)})
                frontier = next_frontier
        return classes


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
