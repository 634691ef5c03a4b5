"""Associations for a client's operations: per-node limit, pool, and retry once.

Every operation of :class:`~aiodicomnet.Client` gets its association here,
and only here:

* it waits for a free slot of the node's concurrency limit
  (:attr:`PoolConfig.max_per_node <aiodicomnet.PoolConfig.max_per_node>`);
* it takes an idle pooled association with the same presentation contexts,
  or opens a new one (and, on a miss, first releases the node's idle
  associations with *other* contexts, so that an SCP serving one association
  at a time, such as DCMTK's storescp without ``--fork``, is never kept
  waiting by one of our own idle ones);
* when a *pooled* association turns out to have been closed by the peer
  while it was idle, and the operation has not produced anything yet, the
  operation runs once more on a fresh association: the caller never sees the
  stale one.  That rule is :meth:`Connector.stream`; :meth:`Connector.run` is
  the same for an operation with one result.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Any, TypeVar

import anyio
from pynetdicom.presentation import PresentationContext

from ..errors import AssociationAborted
from ..nodes import Node
from ..pooling import PoolConfig
from ..timeouts import Timeouts
from . import contexts as _cx
from .association import Association
from .pool import Pool

__all__ = ["Connector"]

log = logging.getLogger("aiodicomnet.connector")

T = TypeVar("T")
R = TypeVar("R")


class Connector:
    """Opens, pools and retries the associations of one client AE.

    Args:
        ae_title: our (calling) AE title.
        timeouts: the default timeouts of new associations.
        max_pdu: our maximum PDU receive length (0: unlimited).
        buffer: responses that may wait on the loop before a worker blocks.
        pool: reuse and per-node limits.
    """

    def __init__(
        self,
        ae_title: str,
        *,
        timeouts: Timeouts,
        max_pdu: int,
        buffer: int,
        pool: PoolConfig,
    ) -> None:
        self.ae_title = ae_title
        self.timeouts = timeouts
        self.max_pdu = max_pdu
        self.buffer = buffer
        self.pool = Pool(pool)
        self._open: set[Association] = set()

    async def aclose(self) -> None:
        """Release idle pooled associations; abort any still in use (normally none)."""
        with anyio.CancelScope(shield=True):
            for assoc in self.pool.drain():
                await assoc.release()
            for assoc in list(self._open):
                await assoc.abort()
            self._open.clear()

    @asynccontextmanager
    async def associate(
        self,
        node: Node,
        contexts: Sequence[PresentationContext],
        *,
        roles: Sequence[Any] = (),
        timeouts: Timeouts | None = None,
        fresh: bool = False,
    ) -> AsyncIterator[Association]:
        """An association to ``node`` for one operation: pooled, or new.

        ``fresh`` skips the pool (the retry after a pooled association turned
        out dead); ``timeouts`` other than the client's also skips it, both
        ways, so an association never keeps one operation's special timeouts.
        """
        key = (node, _cx.contexts_key(contexts, roles))
        pooled = not fresh and timeouts is None
        async with self.pool.limit(node):
            assoc, dead = self.pool.take(key) if pooled else (None, [])
            if assoc is None and pooled:
                dead += self.pool.take_others(key)
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
                    roles=roles,
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
                if timeouts is not None or not self.pool.give(key, assoc):
                    await assoc.release()

    async def stream(
        self,
        node: Node,
        contexts: Sequence[PresentationContext],
        start: Callable[[Association], AsyncGenerator[T, None]],
        *,
        roles: Sequence[Any] = (),
        timeouts: Timeouts | None = None,
    ) -> AsyncGenerator[T, None]:
        """Yield from ``start(association)``, retrying once on a fresh association
        when a pooled one was found closed before anything was yielded."""
        for fresh in (False, True):
            yielded = False
            async with self.associate(
                node, contexts, roles=roles, timeouts=timeouts, fresh=fresh
            ) as assoc:
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

    async def run(
        self,
        node: Node,
        contexts: Sequence[PresentationContext],
        body: Callable[[Association], Awaitable[R]],
        *,
        roles: Sequence[Any] = (),
        timeouts: Timeouts | None = None,
    ) -> R:
        """``await body(association)``, with :meth:`stream`'s retry."""

        async def once(assoc: Association) -> AsyncGenerator[R, None]:
            yield await body(assoc)

        async with aclosing(
            self.stream(node, contexts, once, roles=roles, timeouts=timeouts)
        ) as results:
            async for result in results:
                return result
        raise AssertionError("unreachable: stream ended without a result")  # pragma: no cover
