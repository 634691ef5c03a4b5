"""The pynetdicom adaptations of aiodicomnet._dimse.patches, checked on a live association."""

from __future__ import annotations

import socket
from typing import Any

from aiodicomnet._dimse.association import Association
from aiodicomnet._dimse.contexts import query_contexts
from tests.peers.inprocess import ScriptedSCP


async def test_reactor_cannot_take_a_response_while_a_request_waits(
    peer: ScriptedSCP, no_leaks: Any
) -> None:
    """pynetdicom issue #875: with its checkpoint cleared (a send_c_*() in progress),
    the reactor's non-blocking poll finds nothing, even with a message queued; the
    waiting sender's blocking get still gets it."""
    async with Association("PATCHTEST", peer.node, query_contexts()) as assoc:
        raw = assoc._assoc
        assert raw is not None
        assert raw._is_paused  # the sender never spins waiting for the reactor
        marker = (1, object())
        raw._reactor_checkpoint.clear()
        try:
            raw.dimse.msg_queue.put(marker)
            assert raw.dimse.get_msg(False) == (None, None)  # the reactor's poll
            assert raw.dimse.get_msg(True) == marker  # the sender's wait
        finally:
            raw._reactor_checkpoint.set()
        assert await assoc.echo() > 0


async def test_requestor_socket_is_tuned(peer: ScriptedSCP, no_leaks: Any) -> None:
    async with Association("PATCHTEST", peer.node, query_contexts()) as assoc:
        sock = assoc._assoc.dul.socket  # type: ignore[union-attr]
        assert sock.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.recv.__qualname__.startswith("_fast_recv_factory")
