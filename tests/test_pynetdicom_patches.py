"""The pynetdicom adaptations of aiodicomnet._dimse.patches, checked on a live association.

Each test below fails when the patch it names is removed (each was checked by disabling
the patch and running it).  On a pynetdicom upgrade, run this file and
tests/test_hostile_peers.py ("hostile:" below) and tests/test_tls.py ("tls:"); a failure
points at its patch:

===========================================  ===================================================
patch (aiodicomnet/_dimse/...)               tests that fail without it
===========================================  ===================================================
patches._tune_socket (TCP_NODELAY)           test_requestor_socket_is_tuned,
                                             test_accepted_socket_is_tuned
patches._read: TCP_QUICKACK re-armed         test_quickack_is_rearmed_after_every_receive
patches._fast_recv_factory: our bounded      test_requestor_socket_is_tuned,
receive (RequestorSocket, tune_association)  test_a_pdu_longer_than_announced_is_refused_...,
                                             test_kill_returns_while_the_reader_is_blocked_...;
                                             hostile: test_associate_ac_claiming_gigabytes,
                                             test_find_response_claiming_a_gigabyte[16384]
patches.lock_reactor                         test_reactor_cannot_take_a_response_while_...
patches.drop_unread_log_handlers             test_log_handlers_are_dropped_unless_pynetdicom_logs
reactors.make_event_driven (both reactors,   test_reactors_wait_for_events_and_never_sleep
_EventedDUL, EventedAssociation)
patches.SharedContexts                       test_accepted_associations_share_the_servers_...
patches.copy_context                         test_copy_context_copies_only_the_transfer_syntaxes
patches.set_network_timeout                  test_network_timeout_stays_on_connected_sockets,
                                             test_network_timeout_ends_a_stalled_response_...
patches.stop_dul / bound_kill                test_kill_returns_while_the_reader_is_blocked_...,
                                             test_cancel_while_connecting_returns_at_once;
                                             hostile: test_half_an_associate_ac_then_silence,
                                             test_part_of_a_find_response_then_silence,
                                             test_cancel_returns_while_a_response_is_stalled,
                                             test_peer_that_stops_reading_mid_store,
                                             test_find_response_claiming_a_gigabyte[0]
patches.release_unconnected                  hostile: test_cancelled_finds_leave_no_socket_...
                                             (both; a cancel before pynetdicom calls connect)
patches.wake_negotiation                     test_cancel_while_negotiating_returns_at_once
patches.wake_dimse_waiter                    test_cancel_while_waiting_for_a_response_...
patches.wake_acceptor                        test_wake_acceptor_ends_a_wait_for_the_request
patches.close_transport                      test_a_reset_connection_is_closed_without_the_...
RequestorSocket.close_unconnected,           test_a_refused_connection_leaves_no_descriptor
_RecordingSocket (connect_error)
patches.pdu_limit                            test_a_pdu_longer_than_announced_is_refused_...;
                                             hostile: test_find_response_claiming_a_gigabyte[16384],
                                             test_server_refuses_a_pdu_longer_than_it_announced
patches.refusal                              test_a_pdu_longer_than_announced_is_refused_...;
                                             hostile: test_associate_ac_claiming_gigabytes,
                                             test_find_response_claiming_a_gigabyte[16384]
patches.queued_reply                         test_queued_reply_finds_the_association_reply,
                                             test_a_rejection_followed_by_a_close_is_reported_...
patches.move_originator_handler              test_move_sub_operations_name_the_requestor_as_...
acceptor: request read before hand-over      hostile: test_connections_closed_before_a_request_
                                             take_no_slot, test_idle_sockets_do_not_lock_out_...
acceptor._AcceptedSocket.ready               test_the_acceptor_hands_pynetdicom_the_request_...
                                             (and every test of an accepted association)
acceptor._check_header: length               hostile: test_server_refuses_a_request_claiming_...
acceptor._check_header: PDU type             hostile: test_server_refuses_a_first_pdu_that_is_...
acceptor._valid_request                      hostile: test_server_refuses_a_request_it_cannot_...
acceptor._make_room (MAX_WAITING)            hostile: test_idle_sockets_do_not_lock_out_a_real_peer
acceptor._expire (ACSE timeout)              hostile: test_server_drops_a_peer_stalled_in_its_...,
                                             test_idle_sockets_do_not_lock_out_a_real_peer
RequestorSocket TLS (_TlsWrapper,            tls: test_dcmtk_tls_refusals_are_tls_errors,
_RecordingTlsSocket: tls_failed)             test_bad_server_certificates
tune_association: bounded receive with the   tls: test_storescu_over_mutual_tls_to_our_server
request read over TLS (accepted TLS socket)  (and every TLS test of our servers)
patches.tls_failure (TLS 1.3 refusal late)   tls: test_dcmtk_tls_refusals_are_tls_errors
patches.TLS_ANSWER (TLS alert in clear)      tls: test_plain_client_to_our_tls_server
acceptor._handshake (TLS in the selector)    tls: test_a_stalled_handshake_is_closed_at_the_...,
                                             test_our_server_refuses_what_is_not_tls_or_...
===========================================  ===================================================

Not covered: the acceptor's abort at shutdown of an association not yet established
(``wake_acceptor`` + ``stop_dul`` in ``acceptor._abort``); with the request read before
hand-over, an accepted association hardly waits for it, and no test tells that branch
from pynetdicom's own ``kill()``.  ``test_move_sub_operations_...`` calls ``send_c_store``
as pynetdicom 3.0's Move SCP does (keywords): check that call on an upgrade.
"""

from __future__ import annotations

import gc
import logging
import socket
import struct
import sys
import threading
import time
import types
from typing import Any

import anyio
import psutil
import pytest
from pynetdicom import AE, build_context
from pynetdicom.association import Association as PynetAssociation
from pynetdicom.dimse_messages import C_ECHO_RSP
from pynetdicom.dimse_primitives import C_ECHO
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import A_ASSOCIATE, A_P_ABORT
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import AssociationSocket

import aiodicomnet as adn
from aiodicomnet import Node, Timeouts
from aiodicomnet._dimse import patches
from aiodicomnet._dimse.association import Association
from aiodicomnet._dimse.contexts import query_contexts
from aiodicomnet._dimse.patches import (
    SharedContexts,
    copy_context,
    move_originator_handler,
    pdu_limit,
    queued_reply,
    refusal,
    wake_acceptor,
)
from aiodicomnet._dimse.reactors import EventedAssociation
from aiodicomnet.query import Query
from aiodicomnet.server import StorageServer
from tests.peers.inprocess import ScriptedSCP, SilentServer, closed_port
from tests.test_hostile_peers import (
    associate,
    header,
    raw_peer,
    read_message,
    read_pdu,
    request_pdu,
)
from tests.test_server import eventually


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


async def test_reactors_wait_for_events_and_never_sleep(
    monkeypatch: pytest.MonkeyPatch, no_leaks: Any
) -> None:
    """``reactors.make_event_driven``: neither reactor of either role sleeps between
    looks (pynetdicom's sleep 1 ms whenever idle), on a requestor and an acceptor
    both; every wait is on an event, so echoes and release still complete."""
    import pynetdicom.association
    import pynetdicom.dul

    sleeps: list[str] = []
    real_sleep = time.sleep

    def recording_sleep(seconds: float) -> None:
        caller = sys._getframe(1).f_code.co_name
        if caller in {"run_reactor", "_run_reactor"}:
            sleeps.append(caller)
        real_sleep(seconds)

    for module in (pynetdicom.dul, pynetdicom.association):
        monkeypatch.setattr(module, "time", types.SimpleNamespace(sleep=recording_sleep))
    async with (
        StorageServer("PATCHSCP", stream=False) as scp,
        Association("PATCHTEST", scp.node, [build_context(Verification)]) as assoc,
    ):
        raw = assoc._assoc
        assert raw is not None
        assert isinstance(raw, EventedAssociation) and "_adn_wake" in raw.__dict__
        (accepted,) = scp._associations()
        assert "_adn_wake" in accepted.__dict__
        for _ in range(10):
            assert await assoc.echo() > 0
    assert sleeps == []


async def test_log_handlers_are_dropped_unless_pynetdicom_logs(
    peer: ScriptedSCP, no_leaks: Any
) -> None:
    """``patches.drop_unread_log_handlers``: pynetdicom's standard log handlers (which
    describe every PDU and message) are unbound while its logger would drop their
    lines, and kept when it logs INFO."""
    from pynetdicom import evt
    from pynetdicom._handlers import standard_dimse_recv_handler

    def bound(raw: Any) -> bool:
        return any(
            h[0] is standard_dimse_recv_handler for h in raw.get_handlers(evt.EVT_DIMSE_RECV)
        )

    logger = logging.getLogger("pynetdicom")
    level = logger.level
    try:
        for logged in (logging.WARNING, logging.INFO):
            logger.setLevel(logged)
            async with Association("PATCHTEST", peer.node, query_contexts()) as assoc:
                assert bound(assoc._assoc) is (logged == logging.INFO)
                assert await assoc.echo() > 0
    finally:
        logger.setLevel(level)


async def test_requestor_socket_is_tuned(peer: ScriptedSCP, no_leaks: Any) -> None:
    async with Association("PATCHTEST", peer.node, query_contexts()) as assoc:
        sock = assoc._assoc.dul.socket  # type: ignore[union-attr]
        assert sock.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.recv.__qualname__.startswith("_fast_recv_factory")


async def test_accepted_socket_is_tuned(no_leaks: Any) -> None:
    """``tune_association`` on the server side: Nagle off, our receive, on every accepted socket."""
    async with (
        StorageServer("PATCHSCP", stream=False) as scp,
        Association("PATCHTEST", scp.node, [build_context(Verification)]),
    ):
        (accepted,) = scp._associations()
        sock = accepted.dul.socket
        assert sock.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.recv.__qualname__.startswith("_fast_recv_factory")


def _echo_response_pdu(context_id: int) -> bytes:
    """A C-ECHO-RSP (success) in one P-DATA-TF PDU, as pynetdicom encodes it."""
    primitive = C_ECHO()
    primitive.MessageIDBeingRespondedTo = 1
    primitive.AffectedSOPClassUID = Verification
    primitive.Status = 0x0000
    message = C_ECHO_RSP()
    message.primitive_to_message(primitive)
    (pdata,) = list(message.encode_msg(context_id, 16384))
    pdu = P_DATA_TF()
    pdu.from_primitive(pdata)
    return bytes(pdu.encode())


def _answer_echoes_in_two_writes(conn: socket.socket) -> None:
    """A peer with Nagle on (as Debian's DCMTK) writing each response's PDU header, then its body:
    the body leaves only once our side has acknowledged the header."""
    associate(conn)
    while True:
        request = read_pdu(conn)  # a C-ECHO-RQ: one P-DATA-TF, its command in one PDV
        if request[0] != 0x04:  # A-RELEASE-RQ
            conn.sendall(bytes([0x06, 0, 0, 0, 0, 4, 0, 0, 0, 0]))
            return
        pdu = _echo_response_pdu(context_id=request[10])
        conn.sendall(pdu[:6])
        conn.sendall(pdu[6:])


@pytest.mark.skipif(patches._QUICKACK is None, reason="TCP_QUICKACK is Linux only")
def test_quickack_is_rearmed_after_every_receive() -> None:
    """Linux leaves quick-ACK mode once traffic looks interactive and then delays each ACK by
    at least 40 ms; a peer with Nagle on holds the rest of a PDU until that ACK (C-ECHO ~44 ms
    instead of ~2 ms, docs/benchmarks.md). ``_read`` re-arms TCP_QUICKACK after every receive:
    checked on a real TCP connection, by recording the socket options it sets."""
    if not hasattr(socket, "TCP_QUICKACK"):
        pytest.skip("TCP_QUICKACK is Linux-only")
    from aiodicomnet._dimse.patches import _read

    taken = threading.Semaphore(0)

    class Recording(socket.socket):
        def __init__(self, fileno: int) -> None:
            super().__init__(fileno=fileno)
            self.options: list[tuple[int, int, int]] = []
            self.receives = 0

        def recv_into(self, *args: Any) -> int:
            self.receives += 1
            n = super().recv_into(*args)
            taken.release()
            return n

        def setsockopt(self, *args: Any) -> None:  # type: ignore[override]
            self.options.append(args)
            super().setsockopt(*args)

    with socket.create_server(("127.0.0.1", 0)) as listener:
        sender = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        receiver = Recording(accepted.detach())
        with sender, receiver:
            chunks = [b"a" * 100, b"b" * 200, b"c" * 300]

            def send_one_by_one() -> None:
                for chunk in chunks:  # the next only once the reader took this one
                    sender.sendall(chunk)
                    taken.acquire(timeout=5)

            writer = threading.Thread(target=send_one_by_one)
            writer.start()
            data = _read(receiver, 600)
            writer.join()
    assert bytes(data) == b"".join(chunks)
    quickacks = [o for o in receiver.options if o[:2] == (socket.IPPROTO_TCP, socket.TCP_QUICKACK)]
    assert receiver.receives >= 2  # the test exercised more than one receive
    assert len(quickacks) == receiver.receives and all(o[2] == 1 for o in quickacks)


# -- never hang ------------------------------------------------------------------------


async def test_network_timeout_stays_on_connected_sockets(peer: ScriptedSCP, no_leaks: Any) -> None:
    """pynetdicom clears the requestor's socket timeout after connect and sets none on an
    accepted socket: ``set_network_timeout`` keeps ``Timeouts.network`` on both."""
    timeouts = Timeouts(network=7)
    async with Association("PATCHTEST", peer.node, query_contexts(), timeouts=timeouts) as assoc:
        assert assoc._assoc.dul.socket.socket.gettimeout() == 7  # type: ignore[union-attr]
    async with StorageServer("PATCHSCP", timeouts=timeouts, stream=False) as scp:
        contexts = [build_context(Verification)]
        async with Association("PATCHTEST", scp.node, contexts, timeouts=timeouts):
            (accepted,) = scp._associations()
            assert accepted.dul.socket.socket.gettimeout() == 7


async def test_network_timeout_ends_a_stalled_response_before_the_dimse_timeout(
    no_leaks: Any,
) -> None:
    """While a request waits for its response pynetdicom pauses its reactor, whose idle timer
    is its only network timeout: a peer that stops mid-PDU holds the reader until the DIMSE
    timeout. With ``set_network_timeout`` the reader's ``recv`` gives up after ``network``."""

    def script(conn: socket.socket) -> None:
        associate(conn)
        read_message(conn, with_dataset=True)
        conn.sendall(header(0x04, 200) + bytes(50))  # 50 of 200 bytes, then silence

    timeouts = Timeouts(connect=2, acse=2, dimse=30, network=1, cancel=1)
    with raw_peer(script) as hostile:
        async with adn.Client("PATCHTEST", timeouts=timeouts) as client:
            with anyio.fail_after(5), pytest.raises(adn.AssociationAborted):
                await client.find(hostile.node, Query.study(PatientID="1"))


async def test_kill_returns_while_the_reader_is_blocked_mid_pdu(no_leaks: Any) -> None:
    """pynetdicom's ``kill()`` waits for its reader to reach Sta1, which a reader blocked
    in ``recv`` mid-PDU never does: ``stop_dul`` shuts the socket down under it."""

    def script(conn: socket.socket) -> None:
        associate(conn)
        conn.sendall(header(0x04, 200) + bytes(50))  # unsolicited, and never finished

    with raw_peer(script) as hostile:
        assoc = Association("PATCHTEST", hostile.node, query_contexts())
        await assoc.open()
        raw = assoc._assoc
        assert raw is not None
        await eventually(lambda: getattr(raw.dul.socket, "_adn_reading", False))
        aborting = threading.Thread(target=raw.abort, daemon=True)
        aborting.start()
        await anyio.to_thread.run_sync(aborting.join, 5)
        assert not aborting.is_alive(), "abort() hangs in kill()"
        await assoc.abort()


async def test_cancel_while_connecting_returns_at_once(no_leaks: Any) -> None:
    """pynetdicom's requesting thread waits for the transport without a timeout of its
    own: ``release_unconnected`` lets it see "not connected" when we cancel.  Here the
    connect is under way (SYN sent), so ``stop_dul``'s shutdown also ends it: this test
    fails without the bounded kill; a cancel that lands before pynetdicom even calls
    ``connect`` (never woken without ``release_unconnected``) is what the cancellation
    storms of test_hostile_peers.py catch."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler = socket.create_connection(listener.getsockname())  # the backlog is full now
        try:
            node = Node("NOBODY", "127.0.0.1", listener.getsockname()[1])
            assoc = Association("PATCHTEST", node, query_contexts(), timeouts=Timeouts(connect=20))
            started = time.monotonic()
            with anyio.move_on_after(0.3):
                await assoc.open()
            assert time.monotonic() - started < 3
        finally:
            filler.close()


async def test_cancel_while_negotiating_returns_at_once(no_leaks: Any) -> None:
    """The requesting thread waits for A-ASSOCIATE-AC/RJ until the ACSE timeout:
    ``wake_negotiation`` hands it an A-P-ABORT when we cancel."""
    server = SilentServer()
    try:
        node = Node("SILENT", "127.0.0.1", server.port)
        assoc = Association("PATCHTEST", node, query_contexts(), timeouts=Timeouts(acse=30))
        started = time.monotonic()
        with anyio.move_on_after(0.3):
            await assoc.open()
        assert time.monotonic() - started < 3
    finally:
        server.close()


async def test_cancel_while_waiting_for_a_response_returns_at_once(
    peer: ScriptedSCP, no_leaks: Any
) -> None:
    """``send_c_echo`` waits on the DIMSE queue until the DIMSE timeout, and our abort
    does not feed it: ``wake_dimse_waiter`` does, with pynetdicom's own "no message"."""
    answered = threading.Event()
    peer.on_echo = lambda event: 0x0000 if answered.wait(20) else 0xC000
    try:
        async with Association(
            "PATCHTEST", peer.node, query_contexts(), timeouts=Timeouts(dimse=30)
        ) as assoc:
            started = time.monotonic()
            with anyio.move_on_after(0.3):
                await assoc.echo()
            assert time.monotonic() - started < 3
    finally:
        answered.set()


def test_wake_acceptor_ends_a_wait_for_the_request() -> None:
    """An accepted association waits for its A-ASSOCIATE-RQ until the ACSE timeout and
    cannot be aborted then: ``wake_acceptor`` ends the wait."""
    ae = AE("PATCHSCP")
    ae.acse_timeout = 30
    ours, theirs = socket.socketpair()
    try:
        assoc = PynetAssociation(ae, "acceptor")
        assoc.set_socket(AssociationSocket(assoc, client_socket=ours))
        assoc.start()
        assert assoc.is_alive()
        wake_acceptor(assoc)
        assoc.join(5)
        assert not assoc.is_alive()
    finally:
        theirs.close()
        ours.close()


def test_queued_reply_finds_the_association_reply() -> None:
    """pynetdicom's DUL queues what it received for the user; an A-ASSOCIATE reply left
    there (behind an A-P-ABORT) is what ``queued_reply`` returns."""
    assoc = PynetAssociation(AE("PATCHTEST"), "requestor")
    reply = A_ASSOCIATE()
    reply.result = 1
    assoc.dul.to_user_queue.put(A_P_ABORT())
    assoc.dul.to_user_queue.put(reply)
    assert queued_reply(assoc) is reply
    assert queued_reply(assoc) is None


async def test_sockets_are_closed_when_the_threads_end(peer: ScriptedSCP, no_leaks: Any) -> None:
    """``close_transport``: once its threads are joined, an association's socket is
    closed, whatever path pynetdicom took (here the peer's abort)."""
    assoc = Association("PATCHTEST", peer.node, query_contexts())
    await assoc.open()
    raw = assoc._assoc
    assert raw is not None
    sock = raw.dul.socket.socket
    assert sock is not None
    peer.abort_all()
    await eventually(lambda: not raw.dul.is_alive())
    await assoc.abort()
    assert sock.fileno() == -1


async def test_a_reset_connection_is_closed_without_the_garbage_collector(no_leaks: Any) -> None:
    """``close_transport``: after a reset pynetdicom's ``close()`` fails in ``shutdown``
    (not connected) and skips ``close``; the socket would stay open until the garbage
    collector breaks the association's reference cycles (off here)."""

    def script(conn: socket.socket) -> None:
        associate(conn)
        conn.recv(6)  # the first request: reset only once the association is up
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # a reset, not an orderly close

    gc.collect()
    gc.disable()
    try:
        with raw_peer(script) as hostile:
            assoc = Association("PATCHTEST", hostile.node, query_contexts())
            await assoc.open()
            raw = assoc._assoc
            assert raw is not None
            sock = raw.dul.socket.socket
            with pytest.raises(adn.DicomError):
                await assoc.echo()
            await eventually(lambda: not raw.dul.is_alive())
            await assoc.abort()
            assert sock.fileno() == -1
    finally:
        gc.enable()


async def test_a_refused_connection_leaves_no_descriptor(no_leaks: Any) -> None:
    """``RequestorSocket.close_unconnected``: when ``connect`` fails, pynetdicom's clean-up
    calls ``shutdown`` first, which fails on an unconnected socket, and never ``close``.
    And ``_RecordingSocket``: the error says why the connection failed."""
    node = Node("NOBODY", "127.0.0.1", closed_port())
    async with adn.Client("PATCHTEST") as client:
        with pytest.raises(adn.ConnectError, match="refused"):
            await client.echo(node)  # also: whatever a first call opens for good
        gc.collect()
        gc.disable()
        try:
            before = psutil.Process().num_fds()
            for _ in range(5):
                with pytest.raises(adn.ConnectError):
                    await client.echo(node)
            after = psutil.Process().num_fds()
        finally:
            gc.enable()
    assert after == before


class _LateReady(threading.Event):
    """pynetdicom's "transport ready" event, whose waiter (the requesting thread) looks
    only once the connection has closed again: the slow side of a race, made certain."""

    def __init__(self, sock: Any) -> None:
        super().__init__()
        self._sock = sock

    def wait(self, timeout: float | None = None) -> bool:
        ready = super().wait(timeout)
        deadline = time.monotonic() + 5
        while self._sock._is_connected and time.monotonic() < deadline:
            time.sleep(0.001)
        return ready


async def test_a_rejection_followed_by_a_close_is_reported_as_a_rejection(
    monkeypatch: pytest.MonkeyPatch, no_leaks: Any
) -> None:
    """A peer that rejects and closes at once: pynetdicom's reader queues the A-ASSOCIATE-RJ
    and closes; a requesting thread that looks afterwards sees "not connected" and gives up
    without reading it. ``queued_reply`` finds it, so the error says rejected and why."""

    class LateSocket(patches.RequestorSocket):
        def __init__(self, assoc: Any, address: Any) -> None:
            super().__init__(assoc, address)
            self._ready = _LateReady(self)

    monkeypatch.setattr(patches, "RequestorSocket", LateSocket)

    def script(conn: socket.socket) -> None:
        read_pdu(conn)
        # A-ASSOCIATE-RJ: rejected-permanent, by the service user, called AE title unknown
        conn.sendall(bytes([0x03, 0, 0, 0, 0, 4, 0, 1, 1, 7]))
        conn.close()

    with raw_peer(script) as hostile:
        assoc = Association("PATCHTEST", hostile.node, query_contexts())
        with anyio.fail_after(10), pytest.raises(adn.AssociationRejected) as info:
            await assoc.open()
    assert (info.value.result, info.value.source, info.value.reason) == (1, 1, 7)


# -- never allocate what a peer claims --------------------------------------------------


async def test_a_pdu_longer_than_announced_is_refused_before_it_is_read(no_leaks: Any) -> None:
    def script(conn: socket.socket) -> None:
        associate(conn)
        conn.recv(6)  # the first request: the association is up
        conn.sendall(header(0x04, 1 << 30) + bytes(100))

    with raw_peer(script) as hostile:
        assoc = Association("PATCHTEST", hostile.node, query_contexts(), max_pdu=16384)
        await assoc.open()
        raw = assoc._assoc
        assert raw is not None
        with pytest.raises(adn.DicomError):
            await assoc.echo()
        await eventually(lambda: refusal(raw) is not None)
        assert "P-DATA-TF PDU of 1073741824 bytes" in (refusal(raw) or "")
        assert pdu_limit(raw, 0x04) == 16384 + 1024
        await assoc.abort()


# -- presentation contexts of an acceptor -------------------------------------------------


async def test_accepted_associations_share_the_servers_contexts(no_leaks: Any) -> None:
    """pynetdicom deep-copies the server's contexts for every association (~35 ms for
    ~170 storage classes): ``SharedContexts`` makes that copy shallow."""
    async with StorageServer("PATCHSCP", stream=False) as scp:
        contexts = [build_context(Verification)]
        async with Association("PATCHTEST", scp.node, contexts):
            (accepted,) = scp._associations()
            supported = accepted.acceptor.supported_contexts
            shared = scp._server._server.contexts
            assert isinstance(shared, SharedContexts)
            assert supported[0] is shared[0]


def test_copy_context_copies_only_the_transfer_syntaxes() -> None:
    cx = build_context(Verification, ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])
    new = copy_context(cx)
    new.transfer_syntax = ["1.2.840.10008.1.2"]
    assert cx.transfer_syntax == ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"]
    assert new._transfer_syntax is not cx._transfer_syntax  # the private list it copies
    assert new.abstract_syntax is cx.abstract_syntax


async def test_the_acceptor_hands_pynetdicom_the_request_it_read(no_leaks: Any) -> None:
    """The acceptor reads the A-ASSOCIATE-RQ itself; pynetdicom's reader, which reads only
    when ``select`` says so, must still get it (``_AcceptedSocket.ready``)."""
    async with StorageServer("PATCHSCP", stream=False) as scp:
        with socket.create_connection(("127.0.0.1", scp.port), timeout=5) as sock:
            sock.sendall(request_pdu("PATCHSCP"))
            assert (await anyio.to_thread.run_sync(read_pdu, sock))[0] == 0x02


# -- standard conformance -----------------------------------------------------------------


def _move_originators(evt_handlers: list[Any]) -> list[str]:
    """C-STORE as a Move SCP's sub-operation would (originator = the mover's own AE
    title, as pynetdicom 3.0 passes it); return the originator the receiver saw."""
    from pynetdicom import evt
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    from tests.data import make_dataset

    seen: list[str] = []

    def on_store(event: Any) -> int:
        seen.append(str(event.request.MoveOriginatorApplicationEntityTitle).strip())
        return 0

    receiver = AE("RECEIVER")
    receiver.add_supported_context(CTImageStorage)
    server = receiver.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        mover = AE("MOVER")
        mover.add_requested_context(CTImageStorage)
        assoc = mover.associate(
            "127.0.0.1", server.server_address[1], ae_title="RECEIVER", evt_handlers=evt_handlers
        )
        assert assoc.is_established
        status = assoc.send_c_store(make_dataset(), originator_aet="MOVER", originator_id=7)
        assert status.Status == 0
        assoc.release()
    finally:
        server.shutdown()
    return seen


def test_move_sub_operations_name_the_requestor_as_move_originator() -> None:
    """PS3.7 Table 9.1-1: the Move Originator is the AE that invoked the C-MOVE.
    pynetdicom 3.0 names the Move SCP itself; ``move_originator_handler`` fixes that."""
    assert _move_originators([]) == ["MOVER"]  # pynetdicom as it is
    assert _move_originators([move_originator_handler("REQUESTOR")]) == ["REQUESTOR"]
