"""Association reuse and per-node limits: the pool behind :class:`~aiodicomnet.PoolConfig`.

Opening an association costs a TCP connection and an A-ASSOCIATE round trip
(5-20 ms here, far more to a remote PACS); a small C-FIND or a C-ECHO costs
about a millisecond.  With pooling on, an association that ends its
operation in good health is kept, idle, for the next operation to the same
node that needs the same presentation contexts.  An idle association
releases itself after ``idle_timeout`` (its owner thread does it: no timer
task), and one the peer has released or aborted in the meantime is dropped
and replaced: the operation never sees it.

Independently of pooling, ``max_per_node`` bounds how many operations run at
once against one node (the others wait their turn), which keeps a
fan-out or a browse from opening dozens of associations to one PACS.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable

import anyio

from ..nodes import Node
from ..pooling import PoolConfig
from .association import Association

__all__ = ["Pool"]

log = logging.getLogger("aiodicomnet.pool")


PoolKey = tuple[Node, Hashable]


class Pool:
    """Idle associations by (node, contexts key), and a semaphore per node."""

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self._idle: dict[PoolKey, list[Association]] = {}
        self._lock = threading.Lock()  # idle lists are also touched by owner threads
        self._limits: dict[Node, anyio.Semaphore] = {}
        self._closed = False

    def limit(self, node: Node) -> anyio.Semaphore:
        """The semaphore bounding concurrent operations against ``node``."""
        sem = self._limits.get(node)
        if sem is None:
            sem = self._limits[node] = anyio.Semaphore(self.config.max_per_node)
        return sem

    def take(self, key: PoolKey) -> tuple[Association | None, list[Association]]:
        """An idle association for ``key`` (newest first), and dead ones to clean up."""
        dead: list[Association] = []
        with self._lock:
            idle = self._idle.get(key, [])
            while idle:
                assoc = idle.pop()
                if assoc.reusable:
                    assoc.unpark()
                    return assoc, dead
                dead.append(assoc)
        return None, dead

    def take_others(self, key: PoolKey) -> list[Association]:
        """Remove and return the node's idle associations kept for other contexts.

        Called before opening a new association to the node: an SCP that serves
        one association at a time (DCMTK's storescp without ``--fork``) would
        otherwise not answer the new one until an idle one of ours timed out.
        """
        node = key[0]
        with self._lock:
            others = [k for k in self._idle if k[0] == node and k != key]
            taken = [a for k in others for a in self._idle.pop(k)]
        for assoc in taken:
            assoc.unpark()
        return taken

    def give(self, key: PoolKey, assoc: Association) -> bool:
        """Keep ``assoc`` idle for reuse; false if it cannot be kept (release it)."""
        if self._closed or not self.config.reuse or not assoc.reusable:
            return False
        node = key[0]
        with self._lock:
            kept = sum(len(v) for k, v in self._idle.items() if k[0] == node)
            if kept >= self.config.max_idle_per_node:
                return False
            self._idle.setdefault(key, []).append(assoc)
        assoc.park(self.config.idle_timeout, lambda a: self._expire(key, a))
        return True

    def _expire(self, key: PoolKey, assoc: Association) -> bool:
        """In the owner thread, at idle timeout: still idle? then drop it from the pool."""
        with self._lock:
            idle = self._idle.get(key, [])
            if assoc not in idle:
                return False  # taken meanwhile
            idle.remove(assoc)
        log.debug("%s: idle association released after %s s", key[0], self.config.idle_timeout)
        return True

    def drain(self) -> list[Association]:
        """Remove and return every idle association (to release them); keep none from now on.

        An operation still finishing after its client closed (say, an async
        generator left by a bare ``break`` and finalized later) then releases
        its association instead of parking it in a pool nobody will drain.
        """
        with self._lock:
            self._closed = True
            all_idle = [a for idle in self._idle.values() for a in idle]
            self._idle.clear()
        for assoc in all_idle:
            assoc.unpark()
        return all_idle

    def idle_count(self, node: Node | None = None) -> int:
        """Idle associations kept (for ``node``, or in all)."""
        with self._lock:
            return sum(len(v) for k, v in self._idle.items() if node is None or k[0] == node)
