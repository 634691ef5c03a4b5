"""client.retrieve: exactly the instances one request brought, via C-MOVE or C-GET."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from pynetdicom.sop_class import CTImageStorage as CT  # type: ignore[attr-defined]

import aiodicomnet as adn
from aiodicomnet.client import Client
from aiodicomnet.query import Query
from aiodicomnet.server import StorageServer
from tests.data import Corpus, make_series
from tests.peers.dcmtk import DcmQrScp, dcmtk_tool
from tests.peers.orthanc import OrthancServer


@pytest.fixture
async def server(move_destination: adn.Node) -> AsyncIterator[StorageServer]:
    """Our Storage SCP as the C-MOVE destination both PACS know (ADNMOVE)."""
    async with StorageServer(move_destination.ae_title, port=move_destination.port) as scp:
        yield scp


def study_query(corpus: Corpus, patient: str, index: int = 0) -> tuple[Query, set[str]]:
    study_uid = sorted(corpus.studies(patient))[index]
    expected = {ds.SOPInstanceUID for ds in corpus.datasets if ds.StudyInstanceUID == study_uid}
    query = Query.study(model="PATIENT_ROOT", PatientID=patient, StudyInstanceUID=study_uid)
    return query, expected


@pytest.mark.orthanc
async def test_retrieve_by_move(
    orthanc_loaded: OrthancServer, corpus: Corpus, server: StorageServer, no_leaks: Any
) -> None:
    query, expected = study_query(corpus, "PAT001")
    progress: list[adn.Progress] = []
    async with Client("ADNTEST") as client:
        got = [
            inst
            async for inst in client.retrieve(
                orthanc_loaded.node, query, via=server, on_progress=progress.append
            )
        ]
    assert {i.sop_instance_uid for i in got} == expected
    assert len(got) == len(expected)
    assert progress[-1].done and progress[-1].completed == len(expected)
    assert all(i.calling_ae == "ORTHANC" for i in got)
    # they went to the retrieve, not to the server's main stream
    with anyio.move_on_after(0):
        stray = await server.__anext__()
        pytest.fail(f"unexpected instance on the main stream: {stray}")


@pytest.mark.orthanc
@pytest.mark.dcmtk
async def test_concurrent_retrieves_see_only_their_own(
    orthanc_loaded: OrthancServer,
    dcmqrscp_loaded: DcmQrScp,
    corpus: Corpus,
    server: StorageServer,
    no_leaks: Any,
) -> None:
    """Three retrieves at once, from two PACS, into one server."""
    jobs = [
        (orthanc_loaded.node, *study_query(corpus, "PAT001", 0)),
        (orthanc_loaded.node, *study_query(corpus, "PAT002", 1)),
        (dcmqrscp_loaded.node, *study_query(corpus, "PAT003", 0)),
    ]
    results: dict[int, set[str]] = {}

    async with Client("ADNTEST") as client:

        async def run(i: int, node: adn.Node, query: Query) -> None:
            results[i] = {
                inst.sop_instance_uid async for inst in client.retrieve(node, query, via=server)
            }

        async with anyio.create_task_group() as tg:
            for i, (node, query, _) in enumerate(jobs):
                tg.start_soon(run, i, node, query)
    for i, (_, _, expected) in enumerate(jobs):
        assert results[i] == expected


@pytest.mark.orthanc
async def test_retrieve_by_get(
    orthanc_loaded: OrthancServer, corpus: Corpus, no_leaks: Any
) -> None:
    query, expected = study_query(corpus, "PAT002")
    async with Client("ADNTEST") as client:
        got = await client.retrieve(orthanc_loaded.node, query, via="get")
    assert {i.sop_instance_uid for i in got} == expected


@pytest.mark.orthanc
async def test_retrieve_to_unknown_destination(
    orthanc_loaded: OrthancServer, corpus: Corpus, no_leaks: Any
) -> None:
    """Orthanc does not know our AE title: a clear status error, not a hang."""
    query, _ = study_query(corpus, "PAT001")
    async with StorageServer("UNKNOWNAE") as scp, Client("ADNTEST") as client:
        with anyio.fail_after(10), pytest.raises(adn.StatusError) as info:
            await client.retrieve(orthanc_loaded.node, query, via=scp)
    assert info.value.service == "C-MOVE"
    assert info.value.category == "Failure"


@pytest.mark.orthanc
async def test_retrieve_break_early(
    no_leaks: Any, orthanc_loaded: OrthancServer, corpus: Corpus, server: StorageServer
) -> None:
    """Orthanc ignores C-CANCEL on C-MOVE: we abort after Timeouts.cancel, nothing hangs.

    ``no_leaks`` comes first so that it checks after the server has closed (Orthanc
    leaves the sub-association of an aborted move open until then).
    """
    query, _ = study_query(corpus, "PAT003", 1)
    async with Client("ADNTEST", timeouts=adn.Timeouts(cancel=1)) as client:
        with anyio.fail_after(10):
            async with client.retrieve(orthanc_loaded.node, query, via=server) as instances:
                async for _ in instances:
                    break
        # the server and the PACS are usable right after
        query2, expected2 = study_query(corpus, "PAT002", 0)
        got = await client.retrieve(orthanc_loaded.node, query2, via=server)
    assert {i.sop_instance_uid for i in got} >= expected2


@pytest.mark.dcmtk
async def test_retrieve_from_dcmqrscp_by_move(
    dcmqrscp_loaded: DcmQrScp, corpus: Corpus, server: StorageServer, no_leaks: Any
) -> None:
    query, expected = study_query(corpus, "PAT002", 0)
    async with Client("ADNTEST") as client:
        got = await client.retrieve(dcmqrscp_loaded.node, query, via=server)
    assert {i.sop_instance_uid for i in got} == expected


@pytest.mark.orthanc
@pytest.mark.dcmtk
async def test_movescu_from_orthanc_into_our_server(
    orthanc_loaded: OrthancServer, corpus: Corpus, server: StorageServer
) -> None:
    """DCMTK movescu asks Orthanc to move a series to our server: it arrives on the main stream."""
    study_uid = sorted(corpus.studies("PAT001"))[1]
    series_uid = sorted(corpus.series(study_uid))[0]
    expected = {ds.SOPInstanceUID for ds in corpus.instances(series_uid)}
    args = [
        "-v",
        "-S",
        "-aet",
        "MOVESCU",
        "-aec",
        "ORTHANC",
        "-aem",
        server.ae_title,
        "-k",
        "QueryRetrieveLevel=SERIES",
        "-k",
        f"StudyInstanceUID={study_uid}",
        "-k",
        f"SeriesInstanceUID={series_uid}",
        orthanc_loaded.host,
        str(orthanc_loaded.dicom_port),
    ]
    got: set[str] = set()
    async with anyio.create_task_group() as tg:
        done = anyio.Event()

        async def collect() -> None:
            async for inst in server:
                got.add(inst.sop_instance_uid)
                if got >= expected:
                    done.set()
                    return

        tg.start_soon(collect)
        proc = await anyio.to_thread.run_sync(lambda: dcmtk_tool("movescu", *args))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        with anyio.fail_after(10):
            await done.wait()
    assert got == expected


# -- incomplete retrieves: never mistaken for complete ones --------------------------------


def _sub_operations(datasets: list[Any]) -> Any:
    """A C-GET / C-MOVE handler body: the count, then each dataset to send."""
    yield len(datasets)
    for ds in datasets:
        yield 0xFF00, ds


async def test_get_with_failed_sub_operations_raises(peer: Any, no_leaks: Any) -> None:
    """The peer cannot send one of three instances (no context for it was accepted):
    the get yields the two that came, then raises IncompleteRetrieve naming the failed one."""
    good = make_series(2)
    bad = make_series(1, modality="MR")[0]  # MR Image Storage: not in our SOP classes
    peer.on_get = lambda event: _sub_operations([*good, bad])
    query = Query.series(StudyInstanceUID=good[0].StudyInstanceUID, SeriesInstanceUID="1.2.3")
    got: list[adn.ReceivedInstance] = []
    async with Client("ADNGET", timeouts=adn.Timeouts(dimse=10, acse=5)) as client:
        with pytest.raises(adn.IncompleteRetrieve) as info:
            async for instance in client.get(peer.node, query, sop_classes=[CT]):
                got.append(instance)
        # Awaited, the instances that did arrive are on the error.
        with pytest.raises(adn.IncompleteRetrieve) as awaited:
            await client.get(peer.node, query, sop_classes=[CT])
    error = info.value
    assert {i.sop_instance_uid for i in got} == {ds.SOPInstanceUID for ds in good}
    assert (error.received, error.failed, error.expected) == (2, 1, 3)
    assert error.failed_instances == (bad.SOPInstanceUID,)
    assert bad.SOPInstanceUID in str(error)
    assert error.progress is not None and error.progress.done
    assert [i.sop_instance_uid for i in awaited.value.partial] == [ds.SOPInstanceUID for ds in good]


async def test_move_with_failed_sub_operations_raises(
    peer: Any, move_destination: adn.Node, no_leaks: Any
) -> None:
    """A C-MOVE into our server where one sub-operation fails (our storage refuses it):
    the retrieve yields what came, then raises IncompleteRetrieve."""
    good = make_series(2)
    bad = make_series(1)[0]

    def keep(instance: adn.ReceivedInstance) -> None:
        if instance.sop_instance_uid == bad.SOPInstanceUID:
            raise OSError("disk full")

    async with StorageServer(
        move_destination.ae_title, port=move_destination.port, storage=adn.CallbackStorage(keep)
    ) as server:

        def move(event: Any) -> Any:
            yield "127.0.0.1", server.port
            yield from _sub_operations([*good, bad])

        peer.on_move = move
        query = Query.series(StudyInstanceUID=good[0].StudyInstanceUID, SeriesInstanceUID="1.2")
        got: list[adn.ReceivedInstance] = []
        async with Client("ADNMOVER", timeouts=adn.Timeouts(dimse=10, acse=5)) as client:
            with pytest.raises(adn.IncompleteRetrieve) as info:
                async for instance in client.retrieve(peer.node, query, via=server):
                    got.append(instance)
    assert {i.sop_instance_uid for i in got} == {ds.SOPInstanceUID for ds in good}
    assert (info.value.received, info.value.failed) == (2, 1)
    assert info.value.failed_instances == (bad.SOPInstanceUID,)
