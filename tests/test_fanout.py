"""Many PACS at once (echo_all, find_all, merge) and the browse tree, against real peers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest

import aiodicomnet as adn
from aiodicomnet import PoolConfig
from aiodicomnet.archive import Archive
from aiodicomnet.client import Client
from aiodicomnet.query import Query
from tests.data import Corpus
from tests.peers.dcmtk import DcmQrScp
from tests.peers.inprocess import SilentServer, closed_port
from tests.peers.orthanc import OrthancServer

pytestmark = [pytest.mark.orthanc, pytest.mark.dcmtk]


@pytest.fixture
def silent() -> Iterator[adn.Node]:
    server = SilentServer()
    try:
        yield adn.Node("SILENT", "127.0.0.1", server.port, name="silent")
    finally:
        server.close()


@pytest.fixture
async def archive(tmp_path: Any, corpus: Corpus) -> AsyncIterator[Archive]:
    async with Archive("ARCHIVE", tmp_path / "archive") as arch:
        await arch.add(corpus.datasets)
        yield arch


async def test_echo_all_reports_each_node(
    no_leaks: Any, orthanc: OrthancServer, dcmqrscp: DcmQrScp, silent: adn.Node
) -> None:
    """``no_leaks`` first: it checks after the silent server has closed its sockets."""
    dead = adn.Node("DEAD", "127.0.0.1", closed_port(), name="dead")
    nodes = [orthanc.node, dcmqrscp.node, dead, silent]
    async with Client("FANOUT", timeouts=adn.Timeouts(acse=30)) as client:
        with anyio.fail_after(10):  # the silent node costs its 1 s, not the 30 s ACSE timeout
            results = await adn.echo_all(client, nodes, node_timeout=1)
    by_node = {r.node: r for r in results}
    assert [r.node for r in results] == nodes
    assert set(results.errors) == {dead, silent} and not results.ok
    assert by_node[orthanc.node].ok and by_node[orthanc.node].value is not None
    assert by_node[dcmqrscp.node].ok
    assert isinstance(by_node[dead].error, adn.ConnectError)
    silent_error = by_node[silent].error
    assert isinstance(silent_error, adn.DicomTimeout)
    assert silent_error.timeout == "node" and silent_error.node == silent


async def test_find_all_merges_by_uid(
    orthanc_loaded: OrthancServer, dcmqrscp_loaded: DcmQrScp, corpus: Corpus, no_leaks: Any
) -> None:
    dead = adn.Node("DEAD", "127.0.0.1", closed_port())
    nodes = [orthanc_loaded.node, dcmqrscp_loaded.node, dead]
    query = Query.study(model="PATIENT_ROOT", PatientID="PAT001")
    async with Client("FANOUT") as client:
        result = await adn.find_all(client, nodes, query, node_timeout=10)
    assert set(result.errors) == {dead}
    assert isinstance(result.errors[dead], adn.ConnectError)
    assert {f.node for f in result.found} == {orthanc_loaded.node, dcmqrscp_loaded.node}
    merged = result.merged()
    assert {m.key for m in merged} == corpus.studies("PAT001")
    assert all(set(m.nodes) == {orthanc_loaded.node, dcmqrscp_loaded.node} for m in merged)
    # The same per-node shape as echo_all: iterable, one NodeResult per node, in order.
    assert [r.node for r in result] == nodes
    assert result.of(dead).error is result.errors[dead] and not result.ok
    counts = {r.node: len(r.value or []) for r in result}
    assert counts[orthanc_loaded.node] == counts[dcmqrscp_loaded.node] == 2


async def test_find_all_streams_and_stops_early(
    orthanc_loaded: OrthancServer, dcmqrscp_loaded: DcmQrScp, no_leaks: Any
) -> None:
    nodes = [orthanc_loaded.node, dcmqrscp_loaded.node]
    first = None
    async with (
        Client("FANOUT") as client,
        adn.find_all(client, nodes, Query.image(PatientID="*")) as results,
    ):
        async for found in results:
            first = found
            break
    assert first is not None and first.node in nodes


async def test_find_all_rejects_a_bad_query_at_once() -> None:
    async with Client("FANOUT") as client:
        with pytest.raises(adn.QueryError):
            adn.find_all(client, [adn.Node("X", "127.0.0.1", 104)], Query.study(NotAKeyword="1"))


async def test_browse_tree_with_counts(archive: Archive, corpus: Corpus, no_leaks: Any) -> None:
    async with Client("BROWSER", pool=PoolConfig(max_per_node=3)) as client:
        tree = await adn.browse(client, archive.node, Query.study(PatientID="PAT*"))
    assert {p.patient_id for p in tree.patients} == corpus.patients()
    assert {s.uid for s in tree.studies()} == corpus.studies()
    for study in tree.studies():
        assert study.series_count == 2
        assert study.instance_count == 6
        assert {s.uid for s in study.series} == corpus.series(study.uid)
        assert all(s.instances == 3 for s in study.series)
    names = {p.patient_name for p in tree.patients}
    assert "Müller^Jürgen" in names


async def test_browse_from_patient_level_on_dcmqrscp(
    dcmqrscp_loaded: DcmQrScp, corpus: Corpus, no_leaks: Any
) -> None:
    """dcmqrscp returns no instance counts: the tree counts images itself."""
    async with Client("BROWSER") as client:
        tree = await adn.browse(client, dcmqrscp_loaded.node, Query.patient(PatientID="PAT002"))
    assert [p.patient_id for p in tree.patients] == ["PAT002"]
    assert {s.uid for s in tree.studies()} == corpus.studies("PAT002")
    assert all(s.instances == 3 for s in tree.series())


async def test_browse_needs_patient_or_study_level() -> None:
    async with Client("BROWSER") as client:
        with pytest.raises(adn.QueryError):
            await adn.browse(client, adn.Node("X", "127.0.0.1", 104), Query.series())
