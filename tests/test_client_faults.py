"""The client against in-process pynetdicom peers that misbehave on purpose.

Each fault must give the right typed error within the configured timeout,
lose nothing, and leave no thread or socket behind (``no_leaks``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

import aiodicomnet as adn
from aiodicomnet.client import Client
from aiodicomnet.query import Query
from tests.data import make_series
from tests.peers.inprocess import (
    ScriptedSCP,
    SilentServer,
    closed_port,
    study_identifiers,
    wait_cancelled,
)
from tests.test_server import eventually

FAST = adn.Timeouts(connect=2, acse=2, dimse=2, network=10, cancel=1)


# ---------------------------------------------------------------------- association set-up


async def test_connection_refused(no_leaks: Any) -> None:
    node = adn.Node("NOBODY", "127.0.0.1", closed_port())
    async with Client("TESTSCU", timeouts=FAST) as client:
        with pytest.raises(adn.ConnectError) as info:
            await client.echo(node)
    assert not isinstance(info.value, adn.DicomTimeout)
    assert info.value.node == node
    assert "refused" in str(info.value).lower()


async def test_unknown_host(no_leaks: Any) -> None:
    node = adn.Node("NOBODY", "no-such-host.invalid", 104)
    async with Client("TESTSCU", timeouts=FAST) as client:
        with pytest.raises(adn.ConnectError, match="cannot resolve"):
            await client.echo(node)


async def test_rejected_called_ae_title(peer: ScriptedSCP, no_leaks: Any) -> None:
    node = adn.Node("WRONGAET", "127.0.0.1", peer.port)
    async with Client("TESTSCU", timeouts=FAST) as client:
        with pytest.raises(adn.AssociationRejected) as info:
            await client.echo(node)
    err = info.value
    assert (err.result, err.source, err.reason) == (1, 1, 7)
    assert err.reason_str == "called-AE-title-not-recognized"
    assert "rejected-permanent" in str(err)


async def test_silent_peer_hits_acse_timeout(no_leaks: Any) -> None:
    server = SilentServer()
    try:
        node = adn.Node("SILENT", "127.0.0.1", server.port)
        timeouts = FAST.with_(acse=0.5)
        async with Client("TESTSCU", timeouts=timeouts) as client:
            with anyio.fail_after(5):
                with pytest.raises(adn.AssociationTimeout) as info:
                    await client.echo(node)
        assert info.value.timeout == "acse"
        assert info.value.seconds == 0.5
        assert isinstance(info.value, TimeoutError)
    finally:
        server.close()


async def test_cancel_while_associating(no_leaks: Any) -> None:
    """Cancelling during negotiation aborts at once instead of waiting for the ACSE timeout."""
    server = SilentServer()
    try:
        node = adn.Node("SILENT", "127.0.0.1", server.port)
        async with Client("TESTSCU", timeouts=FAST.with_(acse=30)) as client:
            with anyio.fail_after(5):  # far below the 30 s ACSE timeout
                with anyio.move_on_after(0.3) as scope:
                    await client.echo(node)
        assert scope.cancelled_caught
    finally:
        server.close()


async def test_no_accepted_context(peer: ScriptedSCP, no_leaks: Any) -> None:
    """Storing a SOP class the peer does not support: the association is refused for it."""
    ds = make_series(1)[0]
    ds.SOPClassUID = "1.2.3.4.5.6.7"  # not a storage SOP class
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    async with Client("TESTSCU", timeouts=FAST) as client:
        result = await client.store(peer.node, ds)
    # Reported per instance, "not sent" with the reason; not raised.
    assert not result.ok and len(result) == 1
    (outcome,) = result.outcomes
    assert outcome.status is None and outcome.sop_instance_uid == ds.SOPInstanceUID
    assert outcome.error is not None
    assert "no presentation context was accepted" in outcome.error
    assert "1.2.3.4.5.6.7" in outcome.error


# ---------------------------------------------------------------------- C-ECHO / DIMSE


async def test_echo_round_trip(peer: ScriptedSCP, no_leaks: Any) -> None:
    async with Client("TESTSCU", timeouts=FAST) as client:
        rtt = await client.echo(peer.node)
    assert 0 < rtt < FAST.dimse
    assert peer.released.is_set()


async def test_echo_failure_status(peer: ScriptedSCP, no_leaks: Any) -> None:
    peer.on_echo = lambda event: 0x0211  # Unrecognized operation
    async with Client("TESTSCU", timeouts=FAST) as client:
        with pytest.raises(adn.StatusError) as info:
            await client.echo(peer.node)
    assert info.value.status == 0x0211
    assert info.value.service == "C-ECHO"


async def test_dimse_timeout(peer: ScriptedSCP, no_leaks: Any) -> None:
    gate = threading.Event()

    def slow_echo(event: Any) -> int:
        gate.wait(10)
        return 0

    peer.on_echo = slow_echo
    try:
        async with Client("TESTSCU", timeouts=FAST.with_(dimse=0.5)) as client:
            with anyio.fail_after(5):
                with pytest.raises(adn.DimseTimeout) as info:
                    await client.echo(peer.node)
        assert info.value.timeout == "dimse"
    finally:
        gate.set()


# ---------------------------------------------------------------------- C-FIND


async def test_find_streams_before_the_last_response(peer: ScriptedSCP, no_leaks: Any) -> None:
    """The first identifier reaches us while the peer is still holding the second."""
    gate = threading.Event()

    def find(event: Any) -> Iterator[Any]:
        ids = study_identifiers(3)
        yield 0xFF00, ids[0]
        gate.wait(10)  # held until the test has seen the first result
        yield 0xFF00, ids[1]
        yield 0xFF00, ids[2]

    peer.on_find = find
    got: list[str] = []
    async with Client("TESTSCU", timeouts=FAST) as client:
        async for ds in client.find(peer.node, Query.study()):
            got.append(ds.StudyInstanceUID)
            if len(got) == 1:
                assert not gate.is_set()
                gate.set()
    assert got == ["1.2.3.0", "1.2.3.1", "1.2.3.2"]


async def test_find_collect_all(peer: ScriptedSCP, no_leaks: Any) -> None:
    peer.on_find = lambda event: ((0xFF00, ds) for ds in study_identifiers(5))
    async with Client("TESTSCU", timeouts=FAST) as client:
        results = await client.find(peer.node, Query.study(PatientID="X"))
    assert [ds.StudyInstanceUID for ds in results] == [f"1.2.3.{i}" for i in range(5)]


async def test_find_failure_status(peer: ScriptedSCP, no_leaks: Any) -> None:
    peer.on_find = lambda event: iter([(0xA700, None)])
    async with Client("TESTSCU", timeouts=FAST) as client:
        with pytest.raises(adn.StatusError) as info:
            await client.find(peer.node, Query.study())
    assert info.value.status == 0xA700
    assert info.value.category == "Failure"
    assert "resources" in info.value.meaning.lower()


def endless_find(
    peer: ScriptedSCP, *, honour_cancel: bool = True, stall: bool = True, stall_after: int = 3
) -> None:
    """A C-FIND handler that answers ``stall_after`` times, then waits for C-CANCEL.

    Without ``stall`` it keeps answering (bounded) and checks for C-CANCEL
    between responses.
    """
    release = threading.Event()

    def find(event: Any) -> Iterator[Any]:
        for i in range(500):
            if stall and i == stall_after:
                # stop sending; wait for C-CANCEL or the end of the test
                if wait_cancelled(event, release):
                    peer.cancelled.set()
                    if honour_cancel:
                        yield 0xFE00, None
                        return
                release.wait(10)
                return
            if event.is_cancelled:
                peer.cancelled.set()
                if honour_cancel:
                    yield 0xFE00, None
                    return
            yield 0xFF00, study_identifiers(1)[0]

    peer.on_find = find
    peer.release_handler = release  # type: ignore[attr-defined]


async def test_break_sends_c_cancel(peer: ScriptedSCP, no_leaks: Any) -> None:
    endless_find(peer)
    async with Client("TESTSCU", timeouts=FAST) as client:
        op = client.find(peer.node, Query.study())
        async with op as results:
            count = 0
            async for _ in results:
                count += 1
                if count == 2:
                    break
    assert await anyio.to_thread.run_sync(peer.cancelled.wait, 5)
    assert await anyio.to_thread.run_sync(peer.released.wait, 5)
    assert not peer.aborted.is_set()


async def test_bare_break_sends_c_cancel(peer: ScriptedSCP, no_leaks: Any) -> None:
    """Even a plain ``async for ... break`` (no ``async with``) cancels on the wire."""
    endless_find(peer)
    async with Client("TESTSCU", timeouts=FAST) as client:
        async for _ in client.find(peer.node, Query.study()):
            break
        assert await anyio.to_thread.run_sync(peer.cancelled.wait, 5)
        # Cancelled cleanly (the final response read): back in the pool, healthy.
        await eventually(lambda: client.idle_associations(peer.node) == 1)
        await client.echo(peer.node)
        assert peer.accepted_count == 1
    assert await anyio.to_thread.run_sync(peer.released.wait, 5)


async def test_task_cancel_sends_c_cancel(peer: ScriptedSCP, no_leaks: Any) -> None:
    """A timeout scope around a stalled find: C-CANCEL, peer answers, association released."""
    endless_find(peer, stall_after=1)
    async with Client("TESTSCU", timeouts=FAST) as client:
        got = []
        with anyio.move_on_after(0.5) as scope:
            async for ds in client.find(peer.node, Query.study()):
                got.append(ds)
        assert scope.cancelled_caught
    assert len(got) == 1
    assert peer.cancelled.is_set()
    assert await anyio.to_thread.run_sync(peer.released.wait, 5)


async def test_cancel_ignored_then_abort(peer: ScriptedSCP, no_leaks: Any) -> None:
    """A peer that ignores C-CANCEL is aborted after Timeouts.cancel."""
    endless_find(peer, honour_cancel=False, stall_after=1)
    try:
        async with Client("TESTSCU", timeouts=FAST.with_(cancel=0.5)) as client:
            with anyio.fail_after(5):
                with anyio.move_on_after(0.3):
                    async for _ in client.find(peer.node, Query.study()):
                        pass
        assert peer.cancelled.is_set()
        # The stalled handler still holds the peer's association thread; once it
        # returns, the peer processes our A-ABORT.
        peer.release_handler.set()  # type: ignore[attr-defined]
        assert await anyio.to_thread.run_sync(peer.aborted.wait, 5)
        assert not peer.released.is_set()
    finally:
        peer.release_handler.set()  # type: ignore[attr-defined]


async def test_abort_in_the_middle_of_find(peer: ScriptedSCP, no_leaks: Any) -> None:
    def find(event: Any) -> Iterator[Any]:
        ids = study_identifiers(3)
        yield 0xFF00, ids[0]
        yield 0xFF00, ids[1]
        event.assoc.abort()
        yield 0xFF00, ids[2]

    peer.on_find = find
    got = []
    async with Client("TESTSCU", timeouts=FAST) as client:
        with pytest.raises(adn.AssociationAborted):
            async for ds in client.find(peer.node, Query.study()):
                got.append(ds.StudyInstanceUID)
    assert got == ["1.2.3.0", "1.2.3.1"]


async def test_query_error_before_network(no_leaks: Any) -> None:
    node = adn.Node("NOBODY", "127.0.0.1", closed_port())
    async with Client("TESTSCU") as client:
        with pytest.raises(adn.QueryError):
            client.find(node, Query.study(NoSuchKeyword="x"))
        with pytest.raises(adn.QueryError):
            client.move(node, Query.study(PatientID="1"), "DEST")  # no StudyInstanceUID


# ---------------------------------------------------------------------- C-STORE


async def test_store_outcomes_and_abort(peer: ScriptedSCP, no_leaks: Any) -> None:
    """Per-instance statuses are reported; an abort midway raises with what was done."""
    series = make_series(5)
    calls = []

    def store(event: Any) -> int:
        calls.append(event.request.AffectedSOPInstanceUID)
        if len(calls) == 2:
            return 0xA700
        if len(calls) == 4:
            event.assoc.abort()
            return 0
        return 0

    peer.on_store = store
    async with Client("TESTSCU", timeouts=FAST) as client:
        with pytest.raises(adn.AssociationAborted) as info:
            await client.store(peer.node, series)
    partial = info.value.partial
    assert [o.sop_instance_uid for o in partial.outcomes] == [ds.SOPInstanceUID for ds in series]
    statuses = [o.status for o in partial.outcomes]
    assert statuses[0] == 0 and statuses[1] == 0xA700 and statuses[2] == 0
    assert statuses[3] is None and statuses[4] is None
    assert "out of resources" in partial.outcomes[1].meaning.lower()
    # The 4th was sent and never answered; the 5th was not sent.
    assert (partial.outcomes[3].error or "").startswith("sent, but no C-STORE response")
    assert (partial.outcomes[4].error or "").startswith("not sent: association aborted")


async def test_store_reports_unreadable_files(
    peer: ScriptedSCP, tmp_path: Any, no_leaks: Any
) -> None:
    peer.on_store = lambda event: 0
    good = make_series(2)
    bad = tmp_path / "garbage.dcm"
    bad.write_bytes(b"this is not DICOM")
    async with Client("TESTSCU", timeouts=FAST) as client:
        result = await client.store(peer.node, [*good, bad])
    assert not result.ok
    assert len(result) == 3
    assert [o.source for o in result.failed] == [bad]
    assert "not a DICOM" in (result.failed[0].error or "")
    assert {o.sop_instance_uid for o in result.succeeded} == {ds.SOPInstanceUID for ds in good}


# ---------------------------------------------------------------------- C-MOVE / C-GET


async def test_move_progress_and_unknown_destination(peer: ScriptedSCP, no_leaks: Any) -> None:
    def move(event: Any) -> Iterator[Any]:
        if event.move_destination != b"KNOWN" and event.move_destination != "KNOWN":
            yield None, None  # pynetdicom: unknown destination -> 0xA801
            return
        yield "127.0.0.1", 1  # address (never used: no sub-operations)
        yield 0  # number of sub-operations
        return

    peer.on_move = move
    query = Query.study(StudyInstanceUID="1.2.3")
    async with Client("TESTSCU", timeouts=FAST) as client:
        final = await client.move(peer.node, query, "KNOWN")
        assert final.done and final.status == 0 and final.ok
        with pytest.raises(adn.StatusError) as info:
            await client.move(peer.node, query, "UNKNOWN")
    assert info.value.status == 0xA801
    assert "destination unknown" in info.value.meaning.lower()


async def test_cancel_at_any_moment_of_association_setup(peer: ScriptedSCP, no_leaks: Any) -> None:
    """Cancelled before the socket exists, while connecting, while negotiating, just after:
    never a hang, never a socket or thread left behind (bounded loop of 16 tries)."""
    async with Client("TESTSCU", timeouts=FAST) as client:
        for delay in [0.0, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.008, 0.02] * 2:
            with anyio.fail_after(10), anyio.move_on_after(delay):
                await client.echo(peer.node)
        assert await client.echo(peer.node) > 0


# ---------------------------------------------------------------------- lying peers


def test_failed_instances_are_a_list_of_uids() -> None:
    """pydicom gives several UIDs as a MultiValue, not a list: each must stay one UID."""
    from pydicom.dataset import Dataset

    from aiodicomnet._dimse.association import _progress

    status = Dataset()
    status.Status = 0xB000
    status.NumberOfCompletedSuboperations = 1
    status.NumberOfFailedSuboperations = 2
    for value, expected in (
        (["1.2.3", "1.2.4"], ("1.2.3", "1.2.4")),
        ("1.2.5", ("1.2.5",)),
    ):
        identifier = Dataset()
        identifier.FailedSOPInstanceUIDList = value
        progress = _progress(status, identifier, done=True)
        assert progress.failed_instances == expected


async def test_undecodable_find_response_raises(
    peer: ScriptedSCP, monkeypatch: pytest.MonkeyPatch, no_leaks: Any
) -> None:
    """3 pending responses, the 2nd undecodable: a typed error, never 2 results passed
    off as the whole answer."""
    import pynetdicom.service_class as service_class

    encode = service_class.encode
    # A sequence of undefined length cut short inside its item: pydicom cannot read it.
    item = b"\xfe\xff\x00\xe0\x10\x00\x00\x00garbage!"
    garbage = {
        True: b"\x40\x00\x75\x02\xff\xff\xff\xff" + item,  # implicit VR
        False: b"\x40\x00\x75\x02SQ\x00\x00\xff\xff\xff\xff" + item,  # explicit VR
    }

    def lying_encode(ds: Any, implicit: bool, *args: Any) -> bytes | None:
        data = encode(ds, implicit, *args)
        if data is not None and ds.get("StudyID") == "BROKEN":
            return data + garbage[implicit]
        return data

    monkeypatch.setattr(service_class, "encode", lying_encode)
    identifiers = study_identifiers(3)
    identifiers[1].StudyID = "BROKEN"
    peer.on_find = lambda event: ((0xFF00, ds) for ds in identifiers)
    got = []
    async with Client("TESTSCU", timeouts=FAST) as client:
        with pytest.raises(adn.ProtocolError, match="could not be decoded") as info:
            async for ds in client.find(peer.node, Query.study()):
                got.append(ds)
        # The association was aborted, not pooled: the next operation opens a new one.
        assert client.idle_associations() == 0
        assert await client.echo(peer.node) > 0
    assert len(got) == 1
    assert isinstance(info.value, adn.AssociationError)


async def test_store_over_two_associations_one_cut_in_negotiation(
    peer: ScriptedSCP, no_leaks: Any
) -> None:
    """Every instance handed to store ends in exactly one outcome, even when one of two
    associations is aborted while it is being negotiated."""
    from pynetdicom import evt

    accepted = 0
    lock = threading.Lock()

    def abort_first(event: Any) -> None:
        nonlocal accepted
        with lock:
            accepted += 1
            first = accepted == 1
        if first:
            event.assoc.abort()

    peer.on_store = lambda event: 0
    handler = (evt.EVT_ACCEPTED, abort_first)
    peer._server.bind(*handler)
    try:
        series = make_series(10)
        async with Client("TESTSCU", timeouts=FAST, pool=adn.PoolConfig(reuse=False)) as client:
            with pytest.raises(adn.AssociationError) as info:
                await client.store(peer.node, series, associations=2)
    finally:
        peer._server.unbind(*handler)
    partial = info.value.partial
    assert sorted(o.sop_instance_uid for o in partial.outcomes) == sorted(
        ds.SOPInstanceUID for ds in series
    )
    stored = [o for o in partial.outcomes if o.status == 0]
    unsent = [o for o in partial.outcomes if o.status is None]
    assert len(stored) == 5 and len(unsent) == 5
    assert all((o.error or "").startswith(("not sent", "sent, but")) for o in unsent), [
        o.error for o in unsent
    ]
