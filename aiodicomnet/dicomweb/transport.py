"""The DICOMweb transport: what :class:`~aiodicomnet.Client` calls for a :class:`WebNode`.

The client holds the services and dispatches on the node's kind: a
:class:`~aiodicomnet.Node` goes to :mod:`aiodicomnet._dimse`, a
:class:`~aiodicomnet.WebNode` here.  :class:`WebTransport` keeps one
:class:`~aiodicomnet.dicomweb.session.Session` per node (its connections,
its concurrency limit, its credentials) for the client's lifetime.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Hashable

from pydicom.dataset import Dataset

from .._dimse.store_plan import StoreSource
from ..nodes import WebNode
from ..query import QueryLike
from ..results import InstanceOutcome, Progress, StoreResult
from ..storage import ReceivedInstance, Storage
from ..timeouts import Timeouts
from . import qido, stow, wado
from .session import Session

__all__ = ["WebTransport"]


def _key(node: WebNode) -> tuple[Hashable, ...]:
    # WebNode equality leaves out credentials and headers; a session must not.
    auth = node.auth
    auth_key: Hashable = auth if isinstance(auth, (str, tuple)) or auth is None else id(auth)
    return (node, auth_key, node.headers, node.cert)


class WebTransport:
    """QIDO-RS, WADO-RS and STOW-RS for one client, a session per node."""

    def __init__(self, timeouts: Timeouts, *, buffer: int = 16) -> None:
        self.timeouts = timeouts
        self.buffer = buffer
        self._sessions: dict[tuple[Hashable, ...], Session] = {}

    def session(self, node: WebNode, timeouts: Timeouts | None = None) -> Session:
        """The node's session (made on first use); ``timeouts`` gives a separate one."""
        if timeouts is not None and timeouts != self.timeouts:
            return Session(node, timeouts)
        key = _key(node)
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = Session(node, self.timeouts)
        return session

    async def aclose(self) -> None:
        """Close every node's connections."""
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.aclose()

    async def echo(self, node: WebNode, timeouts: Timeouts | None = None) -> float:
        """A QIDO-RS search for one study: proves the service answers; its round trip."""
        session = self.session(node, timeouts)
        try:
            start = time.perf_counter()
            await session.request(
                "GET",
                f"{node.service_url('qido')}/studies",
                params=[("limit", "1"), ("includefield", "0020000D")],
                headers={"Accept": "application/dicom+json"},
            )
            return time.perf_counter() - start
        finally:
            if session is not self._sessions.get(_key(node)):
                await session.aclose()

    def find(
        self, node: WebNode, query: QueryLike, *, fuzzy: bool = False
    ) -> AsyncGenerator[Dataset, None]:
        """QIDO-RS (see :mod:`aiodicomnet.dicomweb.qido`)."""
        return qido.find(self.session(node), query, fuzzy=fuzzy)

    def retrieve(
        self,
        node: WebNode,
        query: QueryLike,
        storage: Storage,
        on_progress: Callable[[Progress], object] | None,
    ) -> AsyncGenerator[ReceivedInstance, None]:
        """WADO-RS (see :mod:`aiodicomnet.dicomweb.wado`)."""
        # Parts are whole instances: a few buffered, whatever the client's buffer.
        buffer = min(self.buffer, 4)
        return wado.retrieve(self.session(node), query, storage, on_progress, buffer=buffer)

    def metadata(self, node: WebNode, query: QueryLike) -> AsyncGenerator[Dataset, None]:
        """WADO-RS ``/metadata`` (see :func:`aiodicomnet.dicomweb.wado.metadata`)."""
        return wado.metadata(self.session(node), query)

    async def thumbnail(
        self, node: WebNode, query: QueryLike, *, size: int, media_type: str
    ) -> bytes:
        """A rendered preview (see :func:`aiodicomnet.dicomweb.wado.thumbnail`)."""
        return await wado.thumbnail(self.session(node), query, size=size, media_type=media_type)

    async def store(
        self,
        node: WebNode,
        items: StoreSource,
        *,
        concurrency: int,
        on_progress: Callable[[InstanceOutcome], object] | None,
    ) -> StoreResult:
        """STOW-RS (see :mod:`aiodicomnet.dicomweb.stow`)."""
        return await stow.store(
            self.session(node), items, concurrency=concurrency, on_progress=on_progress
        )

    def __repr__(self) -> str:
        return f"<WebTransport {len(self._sessions)} node(s)>"
