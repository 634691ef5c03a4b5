"""Smoke tests of the real-peer fixtures, using raw pynetdicom (not aiodicomnet).

If these fail, the peers are broken, not the library.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from aiodicomnet import Node
from tests.data import Corpus, make_series
from tests.peers.dcmtk import DcmQrScp, StoreScp, dcmtk_tool
from tests.peers.orthanc import OrthancServer
from tests.peers.util import free_port, is_listening


def _ae() -> AE:
    ae = AE(ae_title="ADNTEST")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae


def echo(node: Node) -> int:
    ae = _ae()
    ae.add_requested_context(Verification)
    assoc = ae.associate(node.host, node.port, ae_title=node.ae_title)
    assert assoc.is_established, f"association with {node} not established"
    try:
        status = assoc.send_c_echo()
        return int(status.Status)
    finally:
        assoc.release()


def find_studies(node: Node, **keys: str) -> list[Dataset]:
    ae = _ae()
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    query.PatientID = ""
    query.PatientName = ""
    query.StudyDate = ""
    for key, value in keys.items():
        setattr(query, key, value)
    assoc = ae.associate(node.host, node.port, ae_title=node.ae_title)
    assert assoc.is_established
    found = []
    try:
        for status, identifier in assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind
        ):
            assert status is not None and status.Status in (0x0000, 0xFF00, 0xFF01), status
            if status.Status != 0x0000 and identifier is not None:
                found.append(identifier)
    finally:
        assoc.release()
    return found


@pytest.fixture
def empty_storescp(storescp: StoreScp) -> Iterator[StoreScp]:
    storescp.clear()
    yield storescp
    storescp.clear()


# -- helpers ------------------------------------------------------------------


def test_free_port_is_free_and_listening_is_seen() -> None:
    import socket

    port = free_port()
    assert not is_listening("127.0.0.1", port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert is_listening("127.0.0.1", port)


def test_dcmtk_echoscu_against_storescp(storescp: StoreScp) -> None:
    result = dcmtk_tool(
        "echoscu", "-aet", "ADNTEST", "-aec", storescp.ae_title, "127.0.0.1", str(storescp.port)
    )
    assert result.returncode == 0, result.stderr


# -- C-ECHO to every peer -----------------------------------------------------


@pytest.mark.orthanc
def test_echo_orthanc(orthanc: OrthancServer) -> None:
    assert echo(orthanc.node) == 0x0000


@pytest.mark.dcmtk
def test_echo_storescp(storescp: StoreScp) -> None:
    assert echo(storescp.node) == 0x0000


@pytest.mark.dcmtk
def test_echo_storescp_nagle(storescp_nagle: StoreScp) -> None:
    assert echo(storescp_nagle.node) == 0x0000


def _environment(pid: int) -> dict[str, str]:
    path = Path(f"/proc/{pid}/environ")
    if not path.exists():
        pytest.skip("needs /proc")
    entries = path.read_bytes().decode(errors="replace").split("\0")
    return dict(entry.partition("=")[::2] for entry in entries if entry)


@pytest.mark.dcmtk
def test_storescp_nagle_setting(storescp: StoreScp, storescp_nagle: StoreScp) -> None:
    assert storescp.process is not None and storescp_nagle.process is not None
    assert _environment(storescp.process.pid).get("TCP_NODELAY") == "1"
    assert "TCP_NODELAY" not in _environment(storescp_nagle.process.pid)


@pytest.mark.dcmtk
def test_echo_dcmqrscp(dcmqrscp: DcmQrScp) -> None:
    assert echo(dcmqrscp.node) == 0x0000


@pytest.mark.orthanc
def test_orthanc_checks_called_ae(orthanc: OrthancServer) -> None:
    ae = _ae()
    ae.add_requested_context(Verification)
    assoc = ae.associate(orthanc.host, orthanc.dicom_port, ae_title="WRONGAE")
    assert assoc.is_rejected


# -- C-FIND returns the corpus ------------------------------------------------


@pytest.mark.orthanc
def test_find_studies_orthanc(orthanc_loaded: OrthancServer, corpus: Corpus) -> None:
    # The Orthanc is shared: other tests store studies of other patients into it.
    found = [ds for ds in find_studies(orthanc_loaded.node) if ds.PatientID in corpus.patients()]
    assert {ds.StudyInstanceUID for ds in found} == corpus.studies()
    assert len(found) == 6


@pytest.mark.dcmtk
def test_find_studies_dcmqrscp(dcmqrscp_loaded: DcmQrScp, corpus: Corpus) -> None:
    found = find_studies(dcmqrscp_loaded.node)
    assert {ds.StudyInstanceUID for ds in found} == corpus.studies()
    assert len(found) == 6


@pytest.mark.orthanc
@pytest.mark.dcmtk
def test_non_ascii_name_survives(orthanc_loaded: OrthancServer, dcmqrscp_loaded: DcmQrScp) -> None:
    for node in (orthanc_loaded.node, dcmqrscp_loaded.node):
        found = find_studies(node, PatientID="PAT003", SpecificCharacterSet="ISO_IR 192")
        assert len(found) == 2, node
        assert {str(ds.PatientName) for ds in found} == {"Müller^Jürgen"}, node


# -- C-STORE lands a file -------------------------------------------------------


@pytest.mark.dcmtk
def test_store_to_storescp_lands_a_file(empty_storescp: StoreScp) -> None:
    ds = make_series(1, patient_id="STORE1")[0]
    ae = _ae()
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", empty_storescp.port, ae_title=empty_storescp.ae_title)
    assert assoc.is_established
    try:
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    files = empty_storescp.received_files()
    assert [p.name for p in files] == [f"CT.{ds.SOPInstanceUID}.dcm"]
    assert dcmread(files[0]).SOPInstanceUID == ds.SOPInstanceUID


# -- C-MOVE to the shared destination -----------------------------------------


def _move_study_into_scp(peer: Node, destination: Node, study_uid: str) -> tuple[int, list[str]]:
    """Start a Storage SCP as ``destination``, C-MOVE a study to it; (final status, SOP UIDs)."""
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(event.dataset.SOPInstanceUID)
        return 0x0000

    scp_ae = _ae()
    scp_ae.ae_title = destination.ae_title
    for sop_class in (CTImageStorage, MRImageStorage):
        scp_ae.add_supported_context(sop_class)
    server = scp_ae.start_server(
        (destination.host, destination.port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert server is not None
    try:
        ae = _ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        final = None
        try:
            for status, _ in assoc.send_c_move(
                query, destination.ae_title, StudyRootQueryRetrieveInformationModelMove
            ):
                final = status.Status
        finally:
            assoc.release()
    finally:
        server.shutdown()
    assert final is not None
    return int(final), received


@pytest.mark.orthanc
def test_move_from_orthanc(
    orthanc_loaded: OrthancServer, corpus: Corpus, move_destination: Node
) -> None:
    study = sorted(corpus.studies())[0]
    status, received = _move_study_into_scp(orthanc_loaded.node, move_destination, study)
    expected = {ds.SOPInstanceUID for ds in corpus.datasets if ds.StudyInstanceUID == study}
    assert status == 0x0000
    assert set(received) == expected


@pytest.mark.dcmtk
def test_move_from_dcmqrscp(
    dcmqrscp_loaded: DcmQrScp, corpus: Corpus, move_destination: Node
) -> None:
    study = sorted(corpus.studies())[0]
    status, received = _move_study_into_scp(dcmqrscp_loaded.node, move_destination, study)
    expected = {ds.SOPInstanceUID for ds in corpus.datasets if ds.StudyInstanceUID == study}
    assert status == 0x0000
    assert set(received) == expected


@pytest.mark.orthanc
@pytest.mark.dcmtk
def test_orthanc_moves_to_storescp(
    orthanc_loaded: OrthancServer, empty_storescp: StoreScp, corpus: Corpus
) -> None:
    series = sorted(corpus.series())[0]
    result = dcmtk_tool(
        "movescu", "-S", "-aet", "ADNTEST", "-aec", orthanc_loaded.ae_title, "-aem", "STORESCP",
        "-k", "QueryRetrieveLevel=SERIES", "-k", f"SeriesInstanceUID={series}",
        "127.0.0.1", str(orthanc_loaded.dicom_port),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(empty_storescp.received_files()) == len(corpus.instances(series))


# -- Orthanc REST helpers -------------------------------------------------------


@pytest.mark.orthanc
def test_orthanc_rest_helpers(orthanc: OrthancServer, corpus: Corpus, tmp_path: Path) -> None:
    orthanc.add_modality("extra", "EXTRA", "127.0.0.1", 10999)
    assert orthanc.modalities()["extra"]["AET"] == "EXTRA"
    orthanc.remove_modality("extra")
    orthanc.clear()
    assert orthanc.instances_count() == 0
    series = make_series(2, patient_id="REST1")
    ds_path = tmp_path / "one.dcm"
    series[1].save_as(ds_path, enforce_file_format=True)
    orthanc.upload([series[0], ds_path])
    assert orthanc.sop_instance_uids() == {ds.SOPInstanceUID for ds in series}
    assert orthanc.instance(series[0].SOPInstanceUID).PatientID == "REST1"
    orthanc.clear()
    assert orthanc.instances_count() == 0


@pytest.mark.orthanc
def test_orthanc_loaded_reloads_after_clear(orthanc_loaded: OrthancServer, corpus: Corpus) -> None:
    # In file order this runs after test_orthanc_rest_helpers cleared the server.
    assert {ds.SOPInstanceUID for ds in corpus.datasets} <= orthanc_loaded.sop_instance_uids()
