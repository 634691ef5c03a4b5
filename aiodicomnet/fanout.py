"""Many PACS at once: C-ECHO and C-FIND fanned out over several nodes.

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
from .nodes import Node
from .query import UNIQUE_KEYS, as_identifier

if TYPE_CHECKING:
    from .client import Client, QueryLike

__all__ = ["FindAll", "FindAllResult", "Found", "Merged", "NodeResult", "merge"]

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


async def run_each(
    nodes: Sequence[Node],
    work: Callable[[Node], Awaitable[T]],
    node_timeout: float | None,
) -> list[NodeResult[T]]:
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
    return [r for r in results if r is not None]


@dataclass
class FindAllResult:
    """Everything several nodes answered to one C-FIND.

    Attributes:
        found: every identifier with its node, in arrival order.
        errors: the nodes that failed, with their typed errors.
        per_node: one :class:`NodeResult` per node (value: how many it found).
    """

    found: list[Found]
    errors: dict[Node, DicomError]
    per_node: list[NodeResult[int]]

    def merged(self, level: str | None = None) -> list[Merged]:
        """The identifiers de-duplicated by their unique key (see :func:`merge`)."""
        return merge(self.found, level)


class FindAll:
    """A C-FIND sent to several nodes at once (made by :meth:`Client.find_all`).

    ``await`` it for a :class:`FindAllResult`; or stream the results as they
    arrive from any node::

        async with client.find_all(nodes, query, node_timeout=10) as results:
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
        self.per_node: list[NodeResult[int]] = []
        as_identifier(query, model, service="find")  # a malformed query fails here, at once

    async def _run(self, send: MemoryObjectSendStream[Found]) -> None:
        async def work(node: Node) -> int:
            count = 0
            async with self._client.find(node, self._query, model=self._model) as responses:
                async for ds in responses:
                    try:
                        await send.send(Found(node, ds))
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        break  # the consumer stopped early: C-CANCEL the rest
                    count += 1
            return count

        async with send:
            self.per_node = await run_each(self._nodes, work, self._timeout)
        self.errors = {r.node: r.error for r in self.per_node if r.error is not None}

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
            raise RuntimeError("use 'async with client.find_all(...) as results:' to stream")
        return self._receive.__aiter__()

    async def _collect(self) -> FindAllResult:
        found: list[Found] = []
        async with self as results:
            async for item in results:
                found.append(item)
        return FindAllResult(found, self.errors, self.per_node)

    def __await__(self) -> Generator[Any, None, FindAllResult]:
        return self._collect().__await__()
