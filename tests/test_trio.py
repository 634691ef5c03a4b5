"""The client and the servers on trio (through anyio): a representative subset.

Each test is a plain function running its scenario with ``trio.run``; peers
come from the session fixtures as in the asyncio tests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sniffio
import trio
from pydicom.dataset import Dataset

import aiodicomnet as adn
from aiodicomnet import PoolConfig
from aiodicomnet.archive import Archive
from aiodicomnet.client import Client
from aiodicomnet.query import Query
from aiodicomnet.server import StorageServer
from tests.data import Corpus, make_series, write_files
from tests.peers.dcmtk import dcmtk_tool
from tests.peers.inprocess import ScriptedSCP
from tests.peers.orthanc import OrthancServer


def run(scenario: Any) -> Any:
    """Run ``scenario()`` on trio, checking we really are on trio."""

    async def main() -> Any:
        assert sniffio.current_async_library() == "trio"
        return await scenario()

    return trio.run(main)


@pytest.mark.orthanc
def test_find_get_store_on_trio(orthanc_loaded: OrthancServer, corpus: Corpus) -> None:
    study_uid = sorted(corpus.studies("PAT002"))[0]
    expected = {ds.SOPInstanceUID for ds in corpus.datasets if ds.StudyInstanceUID == study_uid}

    async def scenario() -> None:
        async with Client("TRIO", pool=PoolConfig()) as client:
            assert await client.echo(orthanc_loaded.node) > 0
            studies = await client.find(orthanc_loaded.node, Query.study(PatientID="PAT002"))
            assert {ds.StudyInstanceUID for ds in studies} == corpus.studies("PAT002")
            got = await client.get(orthanc_loaded.node, Query.study(StudyInstanceUID=study_uid))
            assert {i.sop_instance_uid for i in got} == expected
            result = await client.store(orthanc_loaded.node, make_series(3, patient_id="TRIO1"))
            assert result.ok

    run(scenario)


@pytest.mark.orthanc
def test_retrieve_by_move_on_trio(
    orthanc_loaded: OrthancServer, corpus: Corpus, move_destination: adn.Node
) -> None:
    study_uid = sorted(corpus.studies("PAT003"))[1]
    expected = {ds.SOPInstanceUID for ds in corpus.datasets if ds.StudyInstanceUID == study_uid}

    async def scenario() -> set[str]:
        async with (
            StorageServer(move_destination.ae_title, port=move_destination.port) as server,
            Client("TRIO") as client,
        ):
            query = Query.study(StudyInstanceUID=study_uid)
            return {
                i.sop_instance_uid
                async for i in client.retrieve(orthanc_loaded.node, query, via=server)
            }

    assert run(scenario) == expected


@pytest.mark.dcmtk
def test_storage_server_and_archive_on_trio(tmp_path: Any) -> None:
    series = make_series(5, patient_id="TRIO2")
    files = write_files(tmp_path / "in", series)

    async def scenario() -> None:
        async with Archive("TRIOARCH", tmp_path / "archive") as archive:
            async with StorageServer("TRIOSCP") as server:
                received: list[str] = []

                async def collect() -> None:
                    async for inst in server:
                        received.append(inst.sop_instance_uid)
                        if len(received) == len(files):
                            return

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(collect)
                    args = ["-aec", "TRIOSCP", "127.0.0.1", str(server.port), *map(str, files)]
                    proc = await trio.to_thread.run_sync(lambda: dcmtk_tool("storescu", *args))
                    assert proc.returncode == 0, proc.stderr
            assert set(received) == {ds.SOPInstanceUID for ds in series}
            async with Client("TRIO") as client:
                assert (await client.store(archive.node, files)).ok
                found = await client.find(archive.node, Query.series(PatientID="TRIO2"))
                assert len(found) == 1
                assert await archive.count() == 5

    run(scenario)


@pytest.fixture
def peer() -> Iterator[ScriptedSCP]:
    scp = ScriptedSCP(ae_title="TRIOPEER")
    with scp.running():
        yield scp


def test_cancel_on_trio(peer: ScriptedSCP) -> None:
    """A timeout scope on trio: C-CANCEL on the wire, association released, no thread left."""

    def find(event: Any) -> Iterator[Any]:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = "1.2.3"
        yield 0xFF00, ds
        while not event.is_cancelled:
            threading.Event().wait(0.01)
        peer.cancelled.set()
        yield 0xFE00, None

    peer.on_find = find
    baseline = set(threading.enumerate())

    async def scenario() -> int:
        got = 0
        async with Client("TRIO", timeouts=adn.Timeouts(cancel=2)) as client:
            with trio.move_on_after(0.5):
                async for _ in client.find(
                    adn.Node("TRIOPEER", "127.0.0.1", peer.port), Query.study()
                ):
                    got += 1
        return got

    assert run(scenario) == 1
    assert peer.released.wait(5)
    left = [
        t
        for t in threading.enumerate()
        if t not in baseline and not t.name.startswith(("Trio thread", "AnyIO")) and t.is_alive()
    ]
    for t in left:
        t.join(5)
    assert not [t for t in left if t.is_alive()]
