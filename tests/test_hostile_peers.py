"""Stalled, lying and hostile peers on raw sockets: never a hang, never what a length claims.

The client against a raw-socket "peer" that stops mid-PDU, lies in a PDU
length or stops reading; the StorageServer against raw-socket "requestors"
that connect and say nothing, stall mid-PDU or lie.  Each case must end in
the configured timeout's typed error (or a refusal) within a bound, cost
less than 64 MiB of memory whatever a length field claims, and leave no
thread or socket behind.
"""

from __future__ import annotations

import contextlib
import gc
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import psutil
import pytest
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

import aiodicomnet as adn
from aiodicomnet._dimse.acceptor import MAX_WAITING
from aiodicomnet.client import Client
from aiodicomnet.query import Query
from aiodicomnet.server import StorageServer
from tests.data import make_dataset
from tests.peers.inprocess import ScriptedSCP, study_identifiers, wait_cancelled

pytestmark = pytest.mark.timeout(90)

ACSE = DIMSE = CANCEL = 1.0
FAST = adn.Timeouts(connect=2, acse=ACSE, dimse=DIMSE, network=30, cancel=CANCEL)
MIB = 1024 * 1024
GIB = 1024 * MIB
LIES = [GIB, 0xFFFFFFFF]  # 1 GiB, and the largest a PDU length can claim (4 GiB - 1)


# -- PDUs and raw peers ------------------------------------------------------------------


def _user_info(max_pdu: int) -> list[Any]:
    length = MaximumLengthNotification()
    length.maximum_length_received = max_pdu
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = "1.2.826.0.1.3680043.9.7433.99"
    return [length, impl]


def request_pdu(called: str, contexts: list[PresentationContext] | None = None) -> bytes:
    """An A-ASSOCIATE-RQ from ``HOSTILE`` to ``called`` (Verification by default)."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "HOSTILE"
    primitive.called_ae_title = called
    if contexts is None:
        contexts = [build_context(Verification)]
    for i, cx in enumerate(contexts):
        cx.context_id = 2 * i + 1
    primitive.presentation_context_definition_list = contexts
    primitive.user_information = _user_info(16384)
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def accept_pdu(request: bytes) -> bytes:
    """An A-ASSOCIATE-AC accepting every context of ``request`` with its first syntax."""
    rq = A_ASSOCIATE_RQ()
    rq.decode(request)
    asked = rq.to_primitive()
    primitive = A_ASSOCIATE()
    primitive.application_context_name = asked.application_context_name
    primitive.calling_ae_title = asked.calling_ae_title
    primitive.called_ae_title = asked.called_ae_title
    primitive.result = 0
    results = []
    for cx in asked.presentation_context_definition_list:
        result = PresentationContext()
        result.context_id = cx.context_id
        result.abstract_syntax = cx.abstract_syntax
        result.transfer_syntax = [cx.transfer_syntax[0]]
        result.result = 0
        results.append(result)
    primitive.presentation_context_definition_results_list = results
    primitive.user_information = _user_info(16384)
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, length)


def recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def read_pdu(conn: socket.socket) -> bytes:
    head = recv_exactly(conn, 6)
    return head + recv_exactly(conn, struct.unpack(">L", head[2:])[0])


def read_message(conn: socket.socket, *, with_dataset: bool) -> None:
    """Read P-DATA-TF PDUs until the last fragment of a DIMSE message."""
    while True:
        pdu = read_pdu(conn)
        assert pdu[0] == 0x04, f"expected P-DATA-TF, got PDU type {pdu[0]:#x}"
        at = 6
        while at < len(pdu):
            item_length = struct.unpack(">L", pdu[at : at + 4])[0]
            control = pdu[at + 5]
            at += 4 + item_length
            last, command = control & 0x02, control & 0x01
            if last and (command != 0) != with_dataset:
                return


class RawPeer:
    """A TCP server on 127.0.0.1 that runs ``script(conn)`` for the first connection.

    The connection stays open (silent) after the script until :meth:`close`.
    """

    def __init__(self, script: Callable[[socket.socket], None], *, rcvbuf: int = 0) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self.node = adn.Node("HOSTILE", "127.0.0.1", self._listener.getsockname()[1])
        self.done = threading.Event()
        self._conn: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, args=(script,), daemon=True)
        self._thread.start()

    def _run(self, script: Callable[[socket.socket], None]) -> None:
        conn, _ = self._listener.accept()
        self._conn = conn
        try:
            script(conn)
        except OSError:
            pass
        finally:
            self.done.set()

    def close(self) -> None:
        with contextlib.suppress(OSError):  # unblock accept() if nobody came
            socket.create_connection(self._listener.getsockname(), timeout=1).close()
        self._thread.join(5)
        if self._conn is not None:
            self._conn.close()
        self._listener.close()


@contextlib.contextmanager
def raw_peer(script: Callable[[socket.socket], None], **kwargs: Any) -> Iterator[RawPeer]:
    peer = RawPeer(script, **kwargs)
    try:
        yield peer
    finally:
        peer.close()


def associate(conn: socket.socket) -> None:
    """The peer's side of a successful negotiation."""
    conn.sendall(accept_pdu(read_pdu(conn)))


class PeakRss:
    """The process's peak RSS growth over a block (Linux: VmHWM, reset first)."""

    def __init__(self) -> None:
        self.growth = 0

    @staticmethod
    def _hwm() -> int | None:
        with contextlib.suppress(OSError), open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return None

    def __enter__(self) -> PeakRss:
        gc.collect()
        self._base = psutil.Process().memory_info().rss
        with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        return self

    def __exit__(self, *exc: object) -> None:
        peak = self._hwm() or psutil.Process().memory_info().rss
        self.growth = peak - self._base


# -- the client: stalls -------------------------------------------------------------------


async def test_half_an_associate_ac_then_silence(no_leaks: Any) -> None:
    def script(conn: socket.socket) -> None:
        ac = accept_pdu(read_pdu(conn))
        conn.sendall(ac[: len(ac) // 2])

    with raw_peer(script) as peer:
        async with Client("TESTSCU", timeouts=FAST) as client:
            with anyio.fail_after(ACSE + 5), pytest.raises(adn.AssociationTimeout) as info:
                await client.echo(peer.node)
    assert info.value.timeout == "acse"


async def test_part_of_a_find_response_then_silence(no_leaks: Any) -> None:
    """50 of the 200 bytes a C-FIND response's PDU announces, then nothing."""

    def script(conn: socket.socket) -> None:
        associate(conn)
        read_message(conn, with_dataset=True)
        conn.sendall(header(0x04, 200) + bytes(50))

    with raw_peer(script) as peer:
        async with Client("TESTSCU", timeouts=FAST) as client:
            with anyio.fail_after(DIMSE + 5), pytest.raises(adn.DimseTimeout):
                await client.find(peer.node, Query.study(PatientID="1"))


async def test_cancel_returns_while_a_response_is_stalled(no_leaks: Any) -> None:
    """Cancellation during a stalled PDU returns within Timeouts.cancel (plus the abort)."""
    ready = threading.Event()

    def script(conn: socket.socket) -> None:
        associate(conn)
        read_message(conn, with_dataset=True)
        conn.sendall(header(0x04, 200) + bytes(50))
        ready.set()

    timeouts = FAST.with_(dimse=60, network=60)
    with raw_peer(script) as peer:
        async with Client("TESTSCU", timeouts=timeouts) as client:
            async with anyio.create_task_group() as tg:

                async def find() -> None:
                    await client.find(peer.node, Query.study(PatientID="1"))

                tg.start_soon(find)
                await anyio.to_thread.run_sync(ready.wait, 10)
                started = time.monotonic()
                tg.cancel_scope.cancel()
            assert time.monotonic() - started < CANCEL + 2


async def test_peer_that_stops_reading_mid_store(no_leaks: Any) -> None:
    """A path that goes dark while we send: the DIMSE timeout, not a writer blocked for ever."""
    ds = make_dataset(rows=2048, columns=2048)  # 8 MiB of pixels: more than the socket buffers

    def script(conn: socket.socket) -> None:
        associate(conn)  # ... and never read again

    with raw_peer(script, rcvbuf=4096) as peer:
        async with Client("TESTSCU", timeouts=FAST) as client:
            with anyio.fail_after(DIMSE + 8):
                with pytest.raises((adn.DimseTimeout, adn.AssociationAborted)) as info:
                    await client.store(peer.node, ds)
    assert isinstance(info.value, adn.DimseTimeout), info.value


@pytest.mark.parametrize(
    "items",
    [
        (100).to_bytes(4, "big") + b"\x01\x03" + bytes(4),  # an item longer than the PDU
        (1).to_bytes(4, "big") + b"\x01",  # an item too short for its headers
        b"\x00\x00",  # a PDU too short for an item header
    ],
    ids=["item-overruns", "item-too-short", "truncated-header"],
)
async def test_p_data_whose_items_do_not_add_up(items: bytes, no_leaks: Any) -> None:
    """A P-DATA-TF whose PDV items do not fill it exactly is an invalid PDU (Evt19):
    the association is aborted, the request fails with a typed error, nothing is left."""

    def script(conn: socket.socket) -> None:
        associate(conn)
        read_message(conn, with_dataset=False)  # the C-ECHO request
        conn.sendall(header(0x04, len(items)) + items)
        with contextlib.suppress(OSError):
            conn.recv(64)  # our A-ABORT, or the close

    with raw_peer(script) as peer:
        async with Client("TESTSCU", timeouts=FAST) as client:
            with anyio.fail_after(10), pytest.raises(adn.DicomError) as info:
                await client.echo(peer.node)
    # told at once, not found out by waiting for a response that never comes
    assert not isinstance(info.value, adn.DimseTimeout), info.value


# -- the client: lying lengths --------------------------------------------------------------


@pytest.mark.parametrize("claim", LIES)
async def test_associate_ac_claiming_gigabytes(claim: int, no_leaks: Any) -> None:
    def script(conn: socket.socket) -> None:
        read_pdu(conn)
        conn.sendall(header(0x02, claim) + bytes(100))

    with raw_peer(script) as peer, PeakRss() as rss:
        async with Client("TESTSCU", timeouts=FAST.with_(acse=30)) as client:
            with anyio.fail_after(10), pytest.raises(adn.ProtocolError, match="A-ASSOCIATE-AC"):
                await client.echo(peer.node)
    assert rss.growth < 64 * MIB


@pytest.mark.parametrize("max_pdu", [16384, 0])
async def test_find_response_claiming_a_gigabyte(max_pdu: int, no_leaks: Any) -> None:
    """Over what we announced: refused at once.  We announced no limit (0): read only as
    the bytes come, and the DIMSE timeout ends the wait."""

    def script(conn: socket.socket) -> None:
        associate(conn)
        read_message(conn, with_dataset=True)
        conn.sendall(header(0x04, GIB) + bytes(4096))

    expected = adn.ProtocolError if max_pdu else adn.DimseTimeout
    with raw_peer(script) as peer, PeakRss() as rss:
        async with Client("TESTSCU", timeouts=FAST.with_(dimse=2), max_pdu=max_pdu) as client:
            with anyio.fail_after(10), pytest.raises(expected):
                await client.find(peer.node, Query.study(PatientID="1"))
    assert rss.growth < 64 * MIB


# -- the client: cancellation storms -------------------------------------------------------


@pytest.mark.parametrize("reuse", [False, True], ids=["unpooled", "pooled"])
async def test_cancelled_finds_leave_no_socket_for_the_garbage_collector(
    peer: ScriptedSCP, reuse: bool
) -> None:
    """50 finds cancelled at every moment (garbage collection off): every socket is
    closed when the client is, none waits for the collector."""

    def one_then_wait(event: Any) -> Iterator[Any]:
        yield 0xFF00, study_identifiers(1)[0]
        if wait_cancelled(event, limit=10):
            yield 0xFE00, None

    peer.on_find = one_then_wait
    before = _client_sockets(peer.port)
    gc.collect()
    gc.disable()
    try:
        # unpooled: one association per find, each opened, cancelled and closed;
        # pooled: what a find cancelled late leaves behind is released with the client
        pool = adn.PoolConfig(reuse=reuse)
        async with Client("TESTSCU", timeouts=FAST, pool=pool) as client:
            for i in range(50):
                # cancelled at every moment: connecting, negotiating, waiting, reading
                with anyio.fail_after(10), anyio.move_on_after(DELAYS[i % len(DELAYS)]):
                    async for _ in client.find(peer.node, Query.study(PatientID=str(i))):
                        await anyio.sleep(1)  # cancelled here at the latest
        left = _client_sockets(peer.port) - before
    finally:
        gc.enable()
    assert not left, f"sockets left open: {left}"


DELAYS = [0.0, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.008, 0.012, 0.02, 0.05]


def _client_sockets(port: int) -> set[tuple[Any, Any, str]]:
    return {
        (c.laddr, c.raddr, c.status)
        for c in psutil.Process().net_connections(kind="inet")
        if c.raddr and c.raddr.port == port and c.status != psutil.CONN_TIME_WAIT
    }


# -- the StorageServer ------------------------------------------------------------------------

SCP = "ADNSCP"


def connect(scp: StorageServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", scp.port), timeout=10)


def wait_closed(sock: socket.socket, within: float) -> bytes:
    """Read until the server closes the connection (EOF within ``within`` s); return what came."""
    sock.settimeout(within)
    data = b""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError("the server kept the connection open")


def server_side_sockets(scp: StorageServer) -> int:
    return sum(
        1
        for c in psutil.Process().net_connections(kind="inet")
        if c.laddr and c.laddr.port == scp.port and c.status == psutil.CONN_ESTABLISHED
    )


async def test_server_drops_a_peer_stalled_in_its_request(no_leaks: Any) -> None:
    timeouts = adn.Timeouts(acse=1, dimse=5, network=30)
    async with StorageServer(SCP, timeouts=timeouts, stream=False) as scp:
        with connect(scp) as sock:
            rq = request_pdu(SCP)
            sock.sendall(rq[: len(rq) // 2])
            await anyio.to_thread.run_sync(wait_closed, sock, 1 + 3)


async def test_server_drops_an_associated_peer_stalled_mid_pdu(no_leaks: Any) -> None:
    timeouts = adn.Timeouts(acse=5, dimse=5, network=1)
    async with StorageServer(SCP, timeouts=timeouts, stream=False) as scp:
        with connect(scp) as sock:
            sock.sendall(request_pdu(SCP))
            assert read_pdu(sock)[0] == 0x02
            sock.sendall(header(0x04, 200) + bytes(50))
            await anyio.to_thread.run_sync(wait_closed, sock, 1 + 4)


async def test_shutdown_is_bounded_with_stalled_peers(no_leaks: Any) -> None:
    timeouts = adn.Timeouts(acse=30, dimse=60, network=60)
    socks = []
    scp = StorageServer(SCP, timeouts=timeouts, stream=False, grace=1)
    try:
        async with scp:
            for _ in range(4):
                sock = connect(scp)
                socks.append(sock)
                sock.sendall(request_pdu(SCP))
                assert read_pdu(sock)[0] == 0x02
                sock.sendall(header(0x04, 200) + bytes(50))
            started = time.monotonic()
        assert time.monotonic() - started < scp.grace + 4
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("claim", LIES)
async def test_server_refuses_a_request_claiming_gigabytes(claim: int, no_leaks: Any) -> None:
    async with StorageServer(SCP, stream=False) as scp:
        with PeakRss() as rss, connect(scp) as sock:
            sock.sendall(header(0x01, claim) + bytes(100))
            answer = await anyio.to_thread.run_sync(wait_closed, sock, 5)
    assert answer[:1] == b"\x07"  # A-ABORT
    assert rss.growth < 64 * MIB


async def test_server_refuses_a_first_pdu_that_is_not_a_request(no_leaks: Any) -> None:
    """A P-DATA-TF where the A-ASSOCIATE-RQ belongs, its body never finished: refused on
    its header (A-ABORT, closed), not waited for until the ACSE timeout."""
    timeouts = adn.Timeouts(acse=30, dimse=5, network=30)
    async with StorageServer(SCP, timeouts=timeouts, stream=False) as scp:
        with connect(scp) as sock:
            sock.sendall(header(0x04, 1000) + bytes(10))
            answer = await anyio.to_thread.run_sync(wait_closed, sock, 3)
            assert answer[:1] == b"\x07"  # A-ABORT
            assert not scp._associations()


async def test_server_refuses_a_request_it_cannot_decode(no_leaks: Any) -> None:
    """An A-ASSOCIATE-RQ whose body is garbage: pynetdicom answers A-ABORT, but its state
    machine does not tell the association thread, which waits for the request until the
    ACSE timeout; the acceptor decodes it first and refuses it without starting one."""
    timeouts = adn.Timeouts(acse=30, dimse=5, network=30)
    async with StorageServer(SCP, timeouts=timeouts, stream=False) as scp:
        with connect(scp) as sock:
            rq = request_pdu(SCP)
            sock.sendall(rq[:6] + bytes([0xFF]) * (len(rq) - 6))
            answer = await anyio.to_thread.run_sync(wait_closed, sock, 3)
            assert answer[:1] == b"\x07"  # A-ABORT
            assert not scp._associations()


@pytest.mark.parametrize("claim", LIES)
async def test_server_refuses_a_pdu_longer_than_it_announced(claim: int, no_leaks: Any) -> None:
    async with StorageServer(SCP, stream=False, max_pdu=16384) as scp:
        with PeakRss() as rss, connect(scp) as sock:
            sock.sendall(request_pdu(SCP))
            assert read_pdu(sock)[0] == 0x02
            sock.sendall(header(0x04, claim) + bytes(100))
            answer = await anyio.to_thread.run_sync(wait_closed, sock, 5)
    assert answer[:1] == b"\x07"  # A-ABORT
    assert rss.growth < 64 * MIB


async def test_connections_closed_before_a_request_take_no_slot(no_leaks: Any) -> None:
    """20 connect-then-close connections; then as many associations as allowed, at once."""
    timeouts = adn.Timeouts(acse=30, dimse=5, network=30)
    async with StorageServer(SCP, timeouts=timeouts, stream=False, max_associations=2) as scp:
        for _ in range(20):
            connect(scp).close()
        socks = [connect(scp) for _ in range(3)]
        try:
            answers = []
            for sock in socks:
                sock.sendall(request_pdu(SCP))
                answers.append(read_pdu(sock))
            assert [a[0] for a in answers[:2]] == [0x02, 0x02]  # accepted
            # the third is over the limit: transient, presentation provider, local-limit-exceeded
            assert answers[2][0] == 0x03 and tuple(answers[2][7:10]) == (2, 3, 2)
        finally:
            for sock in socks:
                sock.close()


async def test_idle_sockets_do_not_lock_out_a_real_peer(no_leaks: Any) -> None:
    """200 connections that say nothing: a C-ECHO still succeeds; threads and the
    server's sockets stay bounded; the idle ones are closed at the ACSE timeout."""
    acse = 3.0
    timeouts = adn.Timeouts(connect=5, acse=acse, dimse=5, network=30)
    threads_before = threading.active_count()
    async with StorageServer(SCP, timeouts=timeouts, stream=False) as scp:
        idle = []
        try:
            for _ in range(200):
                idle.append(connect(scp))
            async with Client("TESTSCU", timeouts=timeouts) as client:
                assert await client.echo(scp.node) > 0
            assert threading.active_count() - threads_before < 12
            assert server_side_sockets(scp) <= MAX_WAITING + 2
            # the ones still waiting are closed once the ACSE timeout has passed
            await anyio.to_thread.run_sync(wait_closed, idle[-1], acse + 3)
        finally:
            for sock in idle:
                sock.close()
