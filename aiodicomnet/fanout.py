"""Many PACS at once: C-ECHO and C-FIND fanned out over several nodes.

A recipe over :class:`~aiodicomnet.Client` (which does not know about it)::

    results = await echo_all(client, nodes)            # NodeResults[float]
    found = await find_all(client, nodes, query)       # FindAllResult
    for r in found:                                    # one NodeResult per node, as echo_all
        print(r.node, r.error or len(r.value))
    studies = found.merged()                           # de-duplicated by UID

The nodes may be of both kinds at once: a :class:`~aiodicomnet.WebNode` is
echoed and searched with QIDO-RS, a :class:`~aiodicomnet.Node` with C-ECHO
and C-FIND, and their results merge alike.
Each node gets its own task and its own timeout; a dead or slow node costs
at most its timeout and never fails the others: its error is returned with
its name, typed, next to the other nodes' results.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydicom.dataset import Dataset

from .errors import DicomError, DicomTimeout
from .nodes import AnyNode as Node  # DIMSE and DICOMweb nodes mix freely
from .query import UNIQUE_KEYS, QueryLike, as_identifier

if TYPE_CHECKING:
    from .client import Client

__all__ = [
    "FindAll",
    "FindAllResult",
    "Found",
    "Merged",
    "NodeResult",
    "NodeResults",
    "echo_all",
    "find_all",
    "merge",
]

T = TypeVar("T")


@dataclass(frozen=True)
class NodeResult(Generic[T]):
    """What one node answered: a value, or the typed error it failed with.

    Attributes:
        node: the node.
        value: the result (for example the C-ECHO round trip), or ``None``.
        error: the error, or ``None``.
        elapsed: seconds the node took (or until its timeout).
    """

    node: Node
    value: T | None
    error: DicomError | None
    elapsed: float

    @property
    def ok(self) -> bool:
        """Whether the node answered without error."""
        return self.error is None


class NodeResults(list[NodeResult[T]]):
    """One :class:`NodeResult` per node, in the order the nodes were given."""

    @property
    def ok(self) -> bool:
        """Whether every node answered without error."""
        return all(r.ok for r in self)

    @property
    def errors(self) -> dict[Node, DicomError]:
        """The nodes that failed, with their typed errors."""
        return {r.node: r.error for r in self if r.error is not None}

    def of(self, node: Node) -> NodeResult[T]:
        """The result of ``node``.

        Raises:
            KeyError: ``node`` was not among the nodes.
        """
        for r in self:
            if r.node == node:
                return r
        raise KeyError(node)


@dataclass(frozen=True)
class Found:
    """One C-FIND identifier and the node it came from."""

    node: Node
    dataset: Dataset


@dataclass
class Merged:
    """One entity found on one or more nodes (de-duplicated by its unique key)."""

    key: str
    dataset: Dataset
    nodes: list[Node] = field(default_factory=list)


def merge(found: Iterable[Found], level: str | None = None) -> list[Merged]:
    """De-duplicate identifiers by the unique key of their level, keeping order.

    The first node's dataset is kept; ``nodes`` lists every node that has the
    entity.  Identifiers without the key are kept apart (never merged).
    """
    merged: dict[str, Merged] = {}
    loose: list[Merged] = []
    for item in found:
        lvl = level or str(item.dataset.get("QueryRetrieveLevel", ""))
        keyword = UNIQUE_KEYS.get(lvl)  # type: ignore[call-overload]
        key = str(item.dataset.get(keyword, "")) if keyword else ""
        if not key:
            loose.append(Merged("", item.dataset, [item.node]))
        elif key in merged:
            if item.node not in merged[key].nodes:
                merged[key].nodes.append(item.node)
        else:
            merged[key] = Merged(key, item.dataset, [item.node])
    return [*merged.values(), *loose]


def _node_timeout(node: Node, seconds: float) -> DicomTimeout:
    return DicomTimeout(
        f"no complete answer within the per-node timeout ({seconds} s)",
        timeout="node",
        seconds=seconds,
        node=node,
    )


async def echo_all(
    client: Client, nodes: Iterable[Node], *, node_timeout: float | None = 10.0
) -> NodeResults[float]:
    """C-ECHO every node at once; one :class:`NodeResult` (round trip in seconds) each.

    A node that fails, or does not answer within ``node_timeout`` seconds,
    gets its typed error in its result; it never delays the others beyond
    ``node_timeout`` nor raises.
    """
    return await run_each(list(nodes), client.echo, node_timeout)


def find_all(
    client: Client,
    nodes: Iterable[Node],
    query: QueryLike,
    *,
    model: str | None = None,
    node_timeout: float | None = 30.0,
) -> FindAll:
    """C-FIND on every node at once, each within ``node_timeout`` seconds.

    ``await`` it for a :class:`FindAllResult`: iterable, one
    :class:`NodeResult` per node (its identifiers, or its error) like
    :func:`echo_all`, plus ``found`` (every identifier with its node, in
    arrival order) and ``merged()``.  Or stream with ``async with
    find_all(...) as results: async for found in results``.

    Raises:
        QueryError: at once, for a malformed query.
    """
    return FindAll(
        client, list(nodes), query, model=model, node_timeout=node_timeout, buffer=client.buffer
    )


async def run_each(
    nodes: Sequence[Node],
    work: Callable[[Node], Awaitable[T]],
    node_timeout: float | None,
) -> NodeResults[T]:
    """Run ``work(node)`` for every node concurrently; collect results and errors."""
    results: list[NodeResult[T] | None] = [None] * len(nodes)

    async def one(i: int, node: Node) -> None:
        start = time.perf_counter()
        value: T | None = None
        error: DicomError | None = None
        try:
            with anyio.fail_after(node_timeout):
                value = await work(node)
        except TimeoutError as exc:
            error = exc if isinstance(exc, DicomError) else _node_timeout(node, node_timeout or 0)
        except DicomError as exc:
            error = exc
        results[i] = NodeResult(node, value, error, time.perf_counter() - start)

    async with anyio.create_task_group() as tg:
        for i, node in enumerate(nodes):
            tg.start_soon(one, i, node)
    return NodeResults(r for r in results if r is not None)


class FindAllResult(NodeResults[list[Dataset]]):
    """Everything several nodes answered to one C-FIND.

    Iterate it for one :class:`NodeResult` per node (``value``: the
    identifiers that node returned, or ``None`` with its ``error``), as for
    :func:`echo_all`.

    Attributes:
        found: every identifier with its node, in arrival order.
    """

    def __init__(self, per_node: Iterable[NodeResult[list[Dataset]]], found: list[Found]) -> None:
        super().__init__(per_node)
        self.found = found

    def merged(self, level: str | None = None) -> list[Merged]:
        """The identifiers de-duplicated by their unique key (see :func:`merge`)."""
        return merge(self.found, level)


class FindAll:
    """A C-FIND sent to several nodes at once (made by :func:`find_all`).

    ``await`` it for a :class:`FindAllResult`; or stream the results as they
    arrive from any node::

        async with find_all(client, nodes, query, node_timeout=10) as results:
            async for found in results:
                print(found.node.name, found.dataset.PatientName)
        print(results.errors)   # nodes that failed, after the stream ended
    """

    def __init__(
        self,
        client: Client,
        nodes: Sequence[Node],
        query: QueryLike,
        *,
        model: str | None,
        node_timeout: float | None,
        buffer: int,
    ) -> None:
        self._client = client
        self._nodes = list(nodes)
        self._query = query
        self._model = model
        self._timeout = node_timeout
        self._buffer = buffer
        self._stack: AsyncExitStack | None = None
        self._receive: MemoryObjectReceiveStream[Found] | None = None
        self.errors: dict[Node, DicomError] = {}
        self._per_node: NodeResults[list[Dataset]] = NodeResults()
        as_identifier(query, model, service="find")  # a malformed query fails here, at once

    async def _run(self, send: MemoryObjectSendStream[Found]) -> None:
        async def work(node: Node) -> list[Dataset]:
            found: list[Dataset] = []
            async with self._client.find(node, self._query, model=self._model) as responses:
                async for ds in responses:
                    try:
                        await send.send(Found(node, ds))
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        break  # the consumer stopped early: C-CANCEL the rest
                    found.append(ds)
            return found

        async with send:
            self._per_node = await run_each(self._nodes, work, self._timeout)
        self.errors = self._per_node.errors

    async def __aenter__(self) -> FindAll:
        send, self._receive = anyio.create_memory_object_stream[Found](self._buffer)
        self._stack = AsyncExitStack()
        tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._stack.push_async_callback(self._receive.aclose)
        tg.start_soon(self._run, send)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._stack is not None and self._receive is not None
        await self._receive.aclose()  # consumer done (or gone): unblock the senders
        await self._stack.__aexit__(*exc_info)

    def __aiter__(self) -> AsyncIterator[Found]:
        if self._receive is None:
            raise RuntimeError("use 'async with find_all(...) as results:' to stream")
        return self._receive.__aiter__()

    async def _collect(self) -> FindAllResult:
        found: list[Found] = []
        async with self as results:
            async for item in results:
                found.append(item)
        return FindAllResult(self._per_node, found)

    def __await__(self) -> Generator[Any, None, FindAllResult]:
        return self._collect().__await__()
