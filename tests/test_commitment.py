"""Storage Commitment (Push Model): client.commit against Orthanc, and its faults."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import anyio.to_thread
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import evt

import aiodicomnet as adn
from aiodicomnet.commitment import STORAGE_COMMITMENT, commit_request, references
from tests.data import make_series
from tests.peers.inprocess import ScriptedSCP
from tests.peers.orthanc import OrthancServer

CT = "1.2.840.10008.5.1.4.1.1.2"


# -- values -------------------------------------------------------------------------------


def test_references_from_a_store_result_keep_only_stored_instances() -> None:
    result = adn.StoreResult(
        [
            adn.InstanceOutcome("1.2.3.1", CT, 0x0000),
            adn.InstanceOutcome("1.2.3.2", CT, 0xA700),
            adn.InstanceOutcome("1.2.3.3", CT, None, error="not sent"),
            adn.InstanceOutcome("1.2.3.4", CT, 0xB000),
        ]
    )
    assert references(result) == [(CT, "1.2.3.1"), (CT, "1.2.3.4")]


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize("bad", [[], [("1.2", "x y")], [("1.2.3",)], ["1.2.3"]])
def test_nothing_or_malformed_to_commit_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError):
        references(bad)


def test_request_and_result_datasets() -> None:
    refs = [(CT, "1.2.3.1"), (CT, "1.2.3.2"), (CT, "1.2.3.3")]
    request = commit_request("1.2.9", refs)
    assert request.TransactionUID == "1.2.9"
    assert [i.ReferencedSOPInstanceUID for i in request.ReferencedSOPSequence] == [
        "1.2.3.1",
        "1.2.3.2",
        "1.2.3.3",
    ]
    info = Dataset()
    info.TransactionUID = "1.2.9"
    ok = Dataset()
    ok.ReferencedSOPClassUID, ok.ReferencedSOPInstanceUID = CT, "1.2.3.1"
    bad = Dataset()
    bad.ReferencedSOPClassUID, bad.ReferencedSOPInstanceUID = CT, "1.2.3.2"
    bad.FailureReason = 0x0112
    info.ReferencedSOPSequence = [ok]
    info.FailedSOPSequence = [bad]
    result = adn.CommitResult.from_report("1.2.9", refs, info)
    assert result.committed == ((CT, "1.2.3.1"),)
    assert result.failed[0].reason == 0x0112
    assert result.failed[0].meaning == "No such object instance"
    assert result.missing == ((CT, "1.2.3.3"),)
    assert not result.ok


# -- against Orthanc (it reports on an association of its own) ---------------------------------


@pytest.fixture
async def commit_server(orthanc: OrthancServer) -> Any:
    """Our Storage SCP, known to Orthanc as ADNCOMMIT (the client's AE title too)."""
    async with adn.StorageServer("ADNCOMMIT", stream=False) as server:
        orthanc.add_modality("adncommit", "ADNCOMMIT", "127.0.0.1", server.port)
        try:
            yield server
        finally:
            orthanc.remove_modality("adncommit")


async def test_orthanc_commits_what_it_stored(
    orthanc: OrthancServer, commit_server: adn.StorageServer, no_leaks: Any
) -> None:
    series = make_series(3, patient_id="COMMIT01")
    async with adn.Client("ADNCOMMIT") as client:
        stored = await client.store(orthanc.node, series)
        assert stored.ok
        with anyio.fail_after(60):
            result = await client.commit(orthanc.node, stored, via=commit_server, report_timeout=30)
    assert result.ok, result
    assert sorted(uid for _, uid in result.committed) == sorted(
        str(ds.SOPInstanceUID) for ds in series
    )
    assert {cls for cls, _ in result.committed} == {str(series[0].SOPClassUID)}
    assert result.failed == ()


async def test_orthanc_reports_instances_it_does_not_hold_as_failed(
    orthanc: OrthancServer, commit_server: adn.StorageServer, no_leaks: Any
) -> None:
    series = make_series(1, patient_id="COMMIT02")
    unknown = (CT, str(generate_uid()))
    async with adn.Client("ADNCOMMIT") as client:
        stored = await client.store(orthanc.node, series)
        held = (str(series[0].SOPClassUID), str(series[0].SOPInstanceUID))
        with anyio.fail_after(60):
            result = await client.commit(
                orthanc.node, [held, unknown], via=commit_server, report_timeout=30
            )
    assert stored.ok
    assert not result.ok
    assert result.committed == (held,)
    assert [(f.sop_class_uid, f.sop_instance_uid) for f in result.failed] == [unknown]
    assert result.failed[0].reason == 0x0112  # no such object instance
    assert result.missing == ()


async def test_a_report_nobody_expects_is_refused_by_the_server(
    orthanc: OrthancServer, commit_server: adn.StorageServer, no_leaks: Any
) -> None:
    """Without ``via`` the result goes to the server, which waits for no such transaction:
    the client times out with the Transaction UID, the server answers 0x0110."""
    series = make_series(1, patient_id="COMMIT03")
    async with adn.Client("ADNCOMMIT") as client:
        stored = await client.store(orthanc.node, series)
        with pytest.raises(adn.CommitmentTimeout) as info:
            await client.commit(orthanc.node, stored, report_timeout=2)
    assert info.value.transaction_uid
    assert info.value.timeout == "commitment"
    assert isinstance(info.value, TimeoutError)


# -- faults, and the report on the same association, with an in-process SCP -------------------


def _reply_on_same_association(event: Any, *, failed: bool = False) -> None:
    """Send the N-EVENT-REPORT on the requestor's association, after the N-ACTION response."""
    info = event.action_information
    report = Dataset()
    report.TransactionUID = info.TransactionUID
    items = list(info.ReferencedSOPSequence)
    if failed:
        for item in items:
            item.FailureReason = 0x0110
        report.FailedSOPSequence = items
    else:
        report.ReferencedSOPSequence = items
    assoc = event.assoc
    sent = threading.Event()

    def send() -> None:
        sent.wait(10)
        assoc.send_n_event_report(
            report, 2 if failed else 1, STORAGE_COMMITMENT, "1.2.840.10008.1.20.1.1"
        )

    assoc.bind(evt.EVT_DIMSE_SENT, lambda _e: sent.set())
    threading.Thread(target=send, daemon=True).start()


async def test_report_on_the_same_association(peer: ScriptedSCP, no_leaks: Any) -> None:
    refs = [(CT, str(generate_uid())) for _ in range(2)]
    peer.on_n_action = lambda event: (_reply_on_same_association(event), (0x0000, None))[1]
    async with adn.Client("ADNCOMMIT") as client:
        with anyio.fail_after(30):
            result = await client.commit(peer.node, refs, report_timeout=20)
    assert result.ok
    assert list(result.committed) == refs


async def test_failures_reported_on_the_same_association(peer: ScriptedSCP, no_leaks: Any) -> None:
    refs = [(CT, str(generate_uid()))]
    peer.on_n_action = lambda event: (
        _reply_on_same_association(event, failed=True),
        (0x0000, None),
    )[1]
    async with adn.Client("ADNCOMMIT") as client:
        with anyio.fail_after(30):
            result = await client.commit(peer.node, refs, report_timeout=20)
    assert not result.ok
    assert result.failed[0].reason == 0x0110
    assert result.failed[0].meaning == "Processing failure"


async def test_a_refused_request_is_a_status_error(peer: ScriptedSCP, no_leaks: Any) -> None:
    peer.on_n_action = lambda event: (0x0213, None)  # resource limitation
    async with adn.Client("ADNCOMMIT") as client:
        with pytest.raises(adn.StatusError) as info:
            await client.commit(peer.node, [(CT, "1.2.3.4")], report_timeout=20)
    assert info.value.status == 0x0213
    assert info.value.service == "N-ACTION"


async def test_no_report_is_a_timeout_and_nothing_leaks(peer: ScriptedSCP, no_leaks: Any) -> None:
    peer.on_n_action = lambda event: (0x0000, None)
    async with adn.Client("ADNCOMMIT") as client:
        with pytest.raises(adn.CommitmentTimeout):
            await client.commit(peer.node, [(CT, "1.2.3.4")], report_timeout=0.5)
        # the association is fine for the next request
        peer.on_n_action = lambda event: (0x0110, None)
        with pytest.raises(adn.StatusError):
            await client.commit(peer.node, [(CT, "1.2.3.4")], report_timeout=5)


async def test_an_abort_while_waiting_ends_the_wait_and_is_not_retried(
    peer: ScriptedSCP, no_leaks: Any
) -> None:
    """On a pooled association too: once the N-ACTION is accepted, a lost
    association is an error, never the same transaction sent again."""
    requests: list[str] = []

    def accept_then_abort(event: Any) -> Any:
        requests.append(str(event.action_information.TransactionUID))
        if len(requests) == 1:
            return 0x0110, None  # the first one refused: its association stays pooled
        assoc = event.assoc
        sent = threading.Event()
        assoc.bind(evt.EVT_DIMSE_SENT, lambda _e: sent.set())
        threading.Thread(target=lambda: sent.wait(10) and assoc.abort(), daemon=True).start()
        return 0x0000, None

    peer.on_n_action = accept_then_abort
    async with adn.Client("ADNCOMMIT") as client:
        with pytest.raises(adn.StatusError):
            await client.commit(peer.node, [(CT, "1.2.3.4")], report_timeout=15)
        assert client.idle_associations(peer.node) == 1
        with anyio.fail_after(20), pytest.raises(adn.AssociationAborted):
            await client.commit(peer.node, [(CT, "1.2.3.4")], report_timeout=15)
    assert len(requests) == 2 and requests[0] != requests[1]


async def test_cancelling_the_wait_is_clean(peer: ScriptedSCP, no_leaks: Any) -> None:
    asked = threading.Event()

    def accept(event: Any) -> Any:
        asked.set()
        return 0x0000, None

    peer.on_n_action = accept
    async with adn.Client("ADNCOMMIT") as client, anyio.create_task_group() as tg:

        async def commit() -> None:
            await client.commit(peer.node, [(CT, "1.2.3.4")], report_timeout=60)

        tg.start_soon(commit)
        await anyio.to_thread.run_sync(asked.wait, 10)
        tg.cancel_scope.cancel()


# -- the Archive as a Storage Commitment SCP ---------------------------------------------------


async def test_archive_commits_what_it_holds(tmp_path: Any, no_leaks: Any) -> None:
    series = make_series(3, patient_id="COMMIT04")
    unknown = (CT, str(generate_uid()))
    async with adn.StorageServer("ADNCOMMIT", stream=False) as scp:
        archive = adn.Archive(
            "ARCHIVE", tmp_path / "archive", destinations={"ADNCOMMIT": ("127.0.0.1", scp.port)}
        )
        async with archive, adn.Client("ADNCOMMIT") as client:
            stored = await client.store(archive.node, series)
            with anyio.fail_after(30):
                all_held = await client.commit(archive.node, stored, via=scp, report_timeout=20)
                some = await client.commit(
                    archive.node, [*references(stored), unknown], via=scp, report_timeout=20
                )
    assert all_held.ok
    assert sorted(uid for _, uid in all_held.committed) == sorted(
        str(ds.SOPInstanceUID) for ds in series
    )
    assert not some.ok and len(some.committed) == 3
    assert [(f.sop_instance_uid, f.reason) for f in some.failed] == [(unknown[1], 0x0112)]


async def test_archive_refuses_a_requestor_it_cannot_report_to(
    tmp_path: Any, no_leaks: Any
) -> None:
    archive = adn.Archive("ARCHIVE", tmp_path / "archive")
    async with archive, adn.Client("NOWHERE") as client:
        with pytest.raises(adn.StatusError) as info:
            await client.commit(archive.node, [(CT, "1.2.3.4")], report_timeout=5)
    assert info.value.status == 0x0110
    assert "not a destination" in str(info.value)
