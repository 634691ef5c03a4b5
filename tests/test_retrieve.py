"""client.retrieve: exactly the instances one request brought, via C-MOVE or C-GET."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

import aiodicomnet as adn
from aiodicomnet.client import Client
from aiodicomnet.query import Query
from aiodicomnet.server import StorageServer
from tests.data import Corpus
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
