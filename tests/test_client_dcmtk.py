"""The client against DCMTK: storescp (echo, store) and dcmqrscp (find, move, get)."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

import aiodicomnet as adn
from aiodicomnet._dimse.association import Association
from aiodicomnet._dimse.contexts import verification_contexts
from aiodicomnet.client import Client
from aiodicomnet.query import Query
from tests.data import Corpus, make_series
from tests.peers.dcmtk import DcmQrScp, StoreScp
from tests.peers.inprocess import ScriptedSCP

pytestmark = pytest.mark.dcmtk


async def test_echo_and_store_to_storescp(storescp: StoreScp, no_leaks: Any) -> None:
    series = make_series(5, patient_id="DCMTK01")
    async with Client("ADNTEST") as client:
        assert await client.echo(storescp.node) > 0
        result = await client.store(storescp.node, series)
    assert result.ok
    on_disk = {dcmread(p).SOPInstanceUID: dcmread(p) for p in storescp.received_files()}
    for ds in series:
        assert on_disk[ds.SOPInstanceUID].PixelData == ds.PixelData


async def test_pool_never_blocks_a_single_association_scp(
    storescp: StoreScp, no_leaks: Any
) -> None:
    """storescp without --fork serves one association at a time.

    The echo leaves an idle pooled association (query contexts); the store
    needs other contexts. Without releasing the idle one first, storescp
    would not answer the store's A-ASSOCIATE-RQ until the idle timeout.
    """
    series = make_series(2, patient_id="DCMTK02")
    pool = adn.PoolConfig(idle_timeout=60)
    async with Client("ADNPOOL", pool=pool, timeouts=adn.Timeouts(acse=30)) as client:
        await client.echo(storescp.node)
        assert client.idle_associations(storescp.node) == 1
        with anyio.fail_after(10):
            result = await client.store(storescp.node, series)
    assert result.ok


async def test_socket_options(storescp_nagle: StoreScp, no_leaks: Any) -> None:
    """TCP_NODELAY is on, QUICKACK armed and our fast recv in place on the association socket."""
    assoc = Association("ADNTEST", storescp_nagle.node, verification_contexts())
    async with assoc:
        raw = assoc._assoc.dul.socket.socket  # type: ignore[union-attr]
        assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        if sys.platform == "linux":
            assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 1
        recv = assoc._assoc.dul.socket.recv  # type: ignore[union-attr]
        assert recv.__qualname__.startswith("_fast_recv_factory")
        for _ in range(5):
            assert await assoc.echo() > 0


async def test_find_on_dcmqrscp(dcmqrscp_loaded: DcmQrScp, corpus: Corpus, no_leaks: Any) -> None:
    node = dcmqrscp_loaded.node
    async with Client("ADNTEST") as client:
        patients = await client.find(node, Query.patient(PatientID="*"))
        assert {ds.PatientID for ds in patients} == corpus.patients()
        studies = await client.find(node, Query.study(model="PATIENT_ROOT", PatientID="PAT003"))
        assert {ds.StudyInstanceUID for ds in studies} == corpus.studies("PAT003")
        names = await client.find(node, Query.patient(PatientID="PAT003"))
        assert str(names[0].PatientName) == "Müller^Jürgen"


@pytest.fixture
def move_receiver(move_destination: adn.Node) -> Iterator[ScriptedSCP]:
    received: list[Dataset] = []
    peer = ScriptedSCP(ae_title=move_destination.ae_title, port=move_destination.port)
    lock = threading.Lock()

    def store(event: Any) -> int:
        with lock:
            received.append(event.dataset)
        return 0

    peer.on_store = store
    peer.received = received  # type: ignore[attr-defined]
    with peer.running():
        yield peer


async def test_move_from_dcmqrscp(
    dcmqrscp_loaded: DcmQrScp, corpus: Corpus, move_receiver: ScriptedSCP, no_leaks: Any
) -> None:
    study_uid = sorted(corpus.studies("PAT001"))[0]
    expected = {ds.SOPInstanceUID for ds in corpus.datasets if ds.StudyInstanceUID == study_uid}
    query = Query.study(model="PATIENT_ROOT", PatientID="PAT001", StudyInstanceUID=study_uid)
    async with Client("ADNTEST") as client:
        final = await client.move(dcmqrscp_loaded.node, query, "ADNMOVE")
    assert final.ok and final.completed == len(expected)
    assert {ds.SOPInstanceUID for ds in move_receiver.received} == expected  # type: ignore[attr-defined]


async def test_get_from_dcmqrscp(dcmqrscp_loaded: DcmQrScp, corpus: Corpus, no_leaks: Any) -> None:
    """SOP classes are learnt by a hierarchical C-FIND walk (dcmqrscp is strict)."""
    study_uid = sorted(corpus.studies("PAT002"))[1]
    expected = {ds.SOPInstanceUID for ds in corpus.datasets if ds.StudyInstanceUID == study_uid}
    query = Query.study(model="PATIENT_ROOT", PatientID="PAT002", StudyInstanceUID=study_uid)
    async with Client("ADNTEST") as client:
        received = await client.get(dcmqrscp_loaded.node, query)
    assert {inst.sop_instance_uid for inst in received} == expected
