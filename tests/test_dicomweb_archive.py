"""The client's DICOMweb transport against a second, independent server: the Archive's
DICOMweb face (aiodicomnet.archive_web on hypercorn), on the same index as its DIMSE face.
"""

from __future__ import annotations

import io
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from anyio.from_thread import start_blocking_portal
from pydicom import dcmread
from pydicom.dataset import Dataset

import aiodicomnet as adn
from aiodicomnet.archive_web import DicomWebServer
from aiodicomnet.query import DateRange, Query, UIDList
from tests.data import Corpus, make_corpus, make_series, write_files
from tests.test_dicomweb_orthanc import find_retrieve_store
from tests.test_server import eventually

SERIES_50 = 50


@dataclass
class WebArchive:
    archive: adn.Archive
    server: DicomWebServer
    corpus: Corpus
    big: list[Dataset]

    @property
    def web(self) -> adn.WebNode:
        return self.server.node

    @property
    def dimse(self) -> adn.Node:
        return self.archive.node


@pytest.fixture(scope="module")
def web_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebArchive]:
    corpus = make_corpus()
    big = make_series(SERIES_50, patient_id="BIG001", study_description="BIG", rows=8, columns=8)
    archive = adn.Archive("WEBARCHIVE", tmp_path_factory.mktemp("web-archive"))
    archive.add_sync([*corpus.datasets, *big])
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(archive),
        portal.wrap_async_context_manager(archive.dicomweb()) as server,
    ):
        yield WebArchive(archive, server, corpus, big)


def _server_side_open(port: int) -> bool:
    closed = (psutil.CONN_LISTEN, psutil.CONN_TIME_WAIT, psutil.CONN_NONE)
    return any(
        c.laddr and c.laddr.port == port and c.status not in closed
        for c in psutil.Process().net_connections(kind="inet")
    )


@pytest.fixture
async def clean(web_archive: WebArchive, no_leaks: Any) -> AsyncIterator[None]:
    """``no_leaks``, once the server (in its own thread) has closed the connections the
    client closed: its side of a keep-alive connection closes a moment after ours."""
    yield
    await eventually(lambda: not _server_side_open(web_archive.server.port))


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, ""))


async def test_echo_and_find(web_archive: WebArchive, clean: None) -> None:
    web, corpus = web_archive.web, web_archive.corpus
    async with adn.Client("ADNTEST") as client:
        assert await client.echo(web) > 0
        studies = await client.find(web, Query.study(PatientID="PAT002"))
        wild = await client.find(web, Query.study(PatientName="sm*"))  # names: no case
        ranged = await client.find(web, Query.study(StudyDate=DateRange("20240101", "20241231")))
        some = sorted(corpus.studies("PAT001"))
        listed = await client.find(web, Query.study(StudyInstanceUID=UIDList(*some)))
        series = await client.find(web, Query.series(Modality="MR", PatientID="PAT003"))
        umlaut = await client.find(web, Query.study(PatientName="Müller*"))
        patients = await client.find(web, Query.patient(PatientID="PAT00*"))
    assert {_text(s, "StudyInstanceUID") for s in studies} == corpus.studies("PAT002")
    assert all(s.QueryRetrieveLevel == "STUDY" for s in studies)
    assert {_text(s, "PatientID") for s in wild} == {"PAT002"}
    assert {_text(s, "StudyDescription") for s in ranged} == {"CT HEAD", "BIG"}
    assert {_text(s, "StudyInstanceUID") for s in listed} == set(some)
    assert len(series) == 2 and all(s.Modality == "MR" for s in series)
    assert {_text(s, "PatientName") for s in umlaut} == {"Müller^Jürgen"} and len(umlaut) == 2
    assert {_text(p, "PatientID") for p in patients} == {"PAT001", "PAT002", "PAT003"}
    assert all(p.NumberOfPatientRelatedStudies == 2 for p in patients)


async def test_paged_instances(web_archive: WebArchive, clean: None) -> None:
    big = web_archive.big
    paged = adn.Node.web(web_archive.web.url, page_size=7)
    query = Query.image(SeriesInstanceUID=big[0].SeriesInstanceUID).returning("InstanceNumber")
    async with adn.Client("ADNTEST") as client:
        found = await client.find(paged, query)
    assert {_text(ds, "SOPInstanceUID") for ds in found} == {d.SOPInstanceUID for d in big}
    assert len(found) == SERIES_50


async def test_retrieve_series_study_instance(
    web_archive: WebArchive, tmp_path: Path, clean: None
) -> None:
    big, corpus, web = web_archive.big, web_archive.corpus, web_archive.web
    progress: list[adn.Progress] = []
    study = sorted(corpus.studies("PAT001"))[0]
    async with adn.Client("ADNTEST") as client:
        series = await client.retrieve(
            web,
            Query.series(SeriesInstanceUID=big[0].SeriesInstanceUID),
            storage=adn.DiskStorage(tmp_path),
            on_progress=progress.append,
        )
        whole = await client.retrieve(web, Query.study(StudyInstanceUID=study))
        one = await client.retrieve(web, Query.image(SOPInstanceUID=big[7].SOPInstanceUID))
        meta = await client.metadata(web, Query.image(SOPInstanceUID=big[7].SOPInstanceUID))
    assert {i.sop_instance_uid for i in series} == {d.SOPInstanceUID for d in big}
    assert progress[-1].done and progress[-1].ok and progress[-1].completed == SERIES_50
    assert dcmread(series[0].path).PixelData in {d.PixelData for d in big}
    assert {i.sop_instance_uid for i in whole} == {
        d.SOPInstanceUID for d in corpus.datasets if d.StudyInstanceUID == study
    }
    assert [i.sop_instance_uid for i in one] == [big[7].SOPInstanceUID]
    [ds] = meta
    assert ds.SOPInstanceUID == big[7].SOPInstanceUID and "7FE00010" in ds.bulk_data_uris


async def test_store_with_one_invalid_instance(
    web_archive: WebArchive, tmp_path: Path, clean: None
) -> None:
    good = make_series(3, patient_id="STOW002", patient_name="Stow^Archive")
    broken = make_series(1, patient_id="STOW002")[0]
    buffer = io.BytesIO()
    broken.save_as(buffer, enforce_file_format=True)
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(buffer.getvalue()[:-300])
    paths = write_files(tmp_path / "good", good[:1])
    async with adn.Client("ADNTEST") as client:
        result = await client.store(web_archive.web, [*paths, bad, *good[1:]])
        found = await client.find(web_archive.dimse, Query.image(PatientID="STOW002"))
    assert {o.sop_instance_uid for o in result.succeeded} == {d.SOPInstanceUID for d in good}
    [failed] = result.failed
    assert failed.sop_instance_uid == broken.SOPInstanceUID and failed.status == 0xC000
    # Stored over DICOMweb, found over DIMSE: one index.
    assert {_text(ds, "SOPInstanceUID") for ds in found} == {d.SOPInstanceUID for d in good}


async def test_unknown_resource_and_retrieve(web_archive: WebArchive, clean: None) -> None:
    wrong = adn.Node.web(web_archive.web.url.replace("/dicom-web", "/nothing-here"))
    async with adn.Client("ADNTEST") as client:
        with pytest.raises(adn.NotFound):
            await client.find(wrong, Query.study(PatientID="PAT001"))
        assert await client.retrieve(web_archive.web, Query.study(StudyInstanceUID="1.2.3")) == []


async def test_same_code_over_dimse_and_dicomweb(web_archive: WebArchive, clean: None) -> None:
    async with adn.Client("ADNTEST") as client:
        over_dimse = await find_retrieve_store(client, web_archive.dimse, "PAT002")
        over_web = await find_retrieve_store(client, web_archive.web, "PAT002")
    assert over_dimse == over_web
    assert over_web[4] == (True, 3)


def test_client_and_archive_on_trio(tmp_path: Path) -> None:
    """Both ends on trio: hypercorn's trio server, httpx on trio, the worker threads."""
    import sniffio
    import trio

    series = make_series(4, patient_id="TRIO01", rows=4, columns=4)

    async def scenario() -> None:
        assert sniffio.current_async_library() == "trio"
        archive = adn.Archive("TRIOARCH", tmp_path / "archive")
        async with archive, archive.dicomweb() as web, adn.Client("TRIO") as client:
            assert (await client.store(web.node, series)).ok
            [study] = await client.find(web.node, Query.study(PatientID="TRIO01"))
            got = await client.retrieve(
                web.node, Query.study(StudyInstanceUID=study.StudyInstanceUID)
            )
            assert {i.sop_instance_uid for i in got} == {ds.SOPInstanceUID for ds in series}
            assert await client.metadata(web.node, Query.study(StudyInstanceUID="1.2.3")) == []
        # An error in the block leaves as itself (not in an exception group).
        with pytest.raises(adn.NotFound):
            async with archive, archive.dicomweb() as web, adn.Client("TRIO") as client:
                wrong = adn.Node.web(web.url.replace("dicom-web", "elsewhere"))
                await client.find(wrong, Query.study())

    trio.run(scenario)


async def test_browse_a_dicomweb_node(web_archive: WebArchive, clean: None) -> None:
    async with adn.Client("ADNTEST") as client:
        tree = await adn.browse(client, web_archive.web, Query.patient(PatientID="PAT003"))  # type: ignore[arg-type]
    [patient] = tree.patients
    assert (patient.patient_id, patient.patient_name) == ("PAT003", "Müller^Jürgen")
    assert len(patient.studies) == 2
    assert all(len(study.series) == 2 for study in patient.studies)
    assert all(s.instances == 3 for study in patient.studies for s in study.series)


async def test_a_cancelled_dicomweb_block_stops_the_server(tmp_path: Path) -> None:
    """Leaving ``archive.dicomweb()`` by cancellation stops hypercorn and frees the port
    (it used to fail: a task group left from inside a new cancel scope)."""
    archive = adn.Archive("CANCELWEB", tmp_path / "archive")
    async with archive:
        with anyio.move_on_after(30) as outer:
            async with archive.dicomweb() as web:
                port = web.port
                outer.cancel()
                await anyio.sleep_forever()
        assert outer.cancelled_caught
    with socket.create_server(("127.0.0.1", port)):
        pass  # the port is free again
