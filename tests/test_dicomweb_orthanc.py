"""The client's DICOMweb transport against a real Orthanc with its DICOMweb plugin.

QIDO-RS, WADO-RS and STOW-RS through the same ``Client`` calls as DIMSE, and
the same application code run against the DIMSE and the DICOMweb face of one
Orthanc with the same results.
"""

from __future__ import annotations

import base64
import http.client
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

import aiodicomnet as adn
from aiodicomnet.query import DateRange, Query, UIDList
from aiodicomnet.storage import DiskStorage, MemoryStorage
from tests.data import Corpus, make_corpus, make_series, uid, write_files
from tests.peers.orthanc import OrthancServer

pytestmark = pytest.mark.orthanc

SERIES_200 = 200


class WebOrthanc:
    """An Orthanc with DICOMweb, holding a corpus and a 200-instance series."""

    def __init__(self, server: OrthancServer, corpus: Corpus, big: list[Dataset]) -> None:
        self.server = server
        self.corpus = corpus
        self.big = big
        self.web = adn.Node.web(f"{server.http_url}/dicom-web", name="orthanc-web")
        self.dimse = server.node


@pytest.fixture(scope="session")
def web_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebOrthanc]:
    server = OrthancServer(tmp_path_factory.mktemp("orthanc-web"), dicomweb=True)
    corpus = make_corpus()
    big = make_series(
        SERIES_200,
        patient_id="BIG001",
        patient_name="Big^Series",
        study_date="20220101",
        study_description="BIG",
        rows=8,
        columns=8,
    )
    with server:
        server.upload(corpus.datasets)
        server.upload(big)
        yield WebOrthanc(server, corpus, big)


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, ""))


# -- echo and QIDO-RS -------------------------------------------------------------------


async def test_echo(web_orthanc: WebOrthanc, no_leaks: Any) -> None:
    async with adn.Client("ADNTEST") as client:
        assert await client.echo(web_orthanc.web) > 0


async def test_find_studies_by_patient(web_orthanc: WebOrthanc, no_leaks: Any) -> None:
    corpus = web_orthanc.corpus
    async with adn.Client("ADNTEST") as client:
        studies = await client.find(web_orthanc.web, Query.study(PatientID="PAT002"))
    assert {_text(s, "StudyInstanceUID") for s in studies} == corpus.studies("PAT002")
    for study in studies:
        assert study.QueryRetrieveLevel == "STUDY"
        assert _text(study, "PatientName") == "Smith^Jane"
        assert study.StudyDescription in ("CT HEAD", "MR KNEE")


async def test_find_matching_types(web_orthanc: WebOrthanc, no_leaks: Any) -> None:
    corpus = web_orthanc.corpus
    web = web_orthanc.web
    async with adn.Client("ADNTEST") as client:
        wild = await client.find(web, Query.study(PatientName="Sm*"))
        ranged = await client.find(web, Query.study(StudyDate=DateRange("20240101", "20241231")))
        some = sorted(corpus.studies("PAT001"))
        listed = await client.find(web, Query.study(StudyInstanceUID=UIDList(*some)))
        modality = await client.find(web, Query.series(Modality="MR", PatientID="PAT003"))
    assert {_text(s, "PatientID") for s in wild} == {"PAT002"}
    # CT studies of the corpus are dated 2024011x, MR ones 2023xx20.
    assert {_text(s, "StudyDescription") for s in ranged} == {"CT HEAD"}
    assert len(ranged) == 3
    assert {_text(s, "StudyInstanceUID") for s in listed} == set(some)
    assert len(modality) == 2
    assert all(s.Modality == "MR" for s in modality)


async def test_non_ascii_names(web_orthanc: WebOrthanc, no_leaks: Any) -> None:
    # Orthanc's DICOMweb plugin (1.10) matches no non-ASCII value in a QIDO-RS
    # query (its REST /tools/find does): what is sent is checked against the
    # in-process peer (test_dicomweb_faults); here, names come back intact.
    name = "Ærø^Ŝtéfan=山田^太郎"
    ds = make_series(1, patient_id="UTF001", patient_name=name, charset="ISO_IR 192")[0]
    async with adn.Client("ADNTEST") as client:
        by_id = await client.find(web_orthanc.web, Query.study(PatientID="PAT003"))
        wild = await client.find(web_orthanc.web, Query.study(PatientName="*ller^J*"))
        assert (await client.store(web_orthanc.web, [ds])).ok
        [found] = await client.find(web_orthanc.web, Query.study(PatientID="UTF001"))
        [got] = await client.retrieve(
            web_orthanc.web, Query.study(StudyInstanceUID=found.StudyInstanceUID)
        )
        back = await got.load_dataset()
    assert {_text(s, "PatientName") for s in by_id + wild} == {"Müller^Jürgen"}
    assert len(by_id) == len(wild) == 2
    assert str(found.PatientName) == name
    assert found.PatientName.ideographic == "山田^太郎"
    assert str(back.PatientName) == name


async def test_find_instances_paged(web_orthanc: WebOrthanc, no_leaks: Any) -> None:
    big = web_orthanc.big
    paged = adn.Node.web(web_orthanc.web.url, page_size=7)
    query = Query.image(SeriesInstanceUID=big[0].SeriesInstanceUID).returning("InstanceNumber")
    async with adn.Client("ADNTEST") as client:
        seen = []
        async with client.find(paged, query) as results:
            async for ds in results:
                seen.append(ds)
    assert len(seen) == SERIES_200
    assert {_text(ds, "SOPInstanceUID") for ds in seen} == {d.SOPInstanceUID for d in big}
    assert {int(ds.InstanceNumber) for ds in seen} == set(range(1, SERIES_200 + 1))


async def test_find_patient_level_is_mapped_through_studies(
    web_orthanc: WebOrthanc, no_leaks: Any
) -> None:
    async with adn.Client("ADNTEST") as client:
        patients = await client.find(web_orthanc.web, Query.patient(PatientID="PAT00*"))
    assert {_text(p, "PatientID") for p in patients} == {"PAT001", "PAT002", "PAT003"}
    for patient in patients:
        assert patient.QueryRetrieveLevel == "PATIENT"
        assert patient.NumberOfPatientRelatedStudies == 2
        assert "StudyInstanceUID" not in patient


async def test_unknown_service_path_is_not_found(web_orthanc: WebOrthanc, no_leaks: Any) -> None:
    wrong = adn.Node.web(f"{web_orthanc.server.http_url}/no-such-service")
    async with adn.Client("ADNTEST") as client:
        with pytest.raises(adn.NotFound) as info:
            await client.find(wrong, Query.study(PatientID="PAT001"))
    assert info.value.status_code == 404
    assert info.value.node == wrong


# -- WADO-RS ----------------------------------------------------------------------------


async def test_retrieve_200_instance_series_streamed_to_disk(
    web_orthanc: WebOrthanc, tmp_path: Path, no_leaks: Any
) -> None:
    big = web_orthanc.big
    progress: list[adn.Progress] = []
    storage = DiskStorage(tmp_path, layout="{SeriesInstanceUID}/{SOPInstanceUID}.dcm")
    query = Query.series(SeriesInstanceUID=big[0].SeriesInstanceUID)
    got = []
    async with (
        adn.Client("ADNTEST") as client,
        client.retrieve(
            web_orthanc.web, query, storage=storage, on_progress=progress.append
        ) as instances,
    ):
        async for instance in instances:
            assert instance.path is not None and instance.path.exists()
            got.append(instance)
    assert {i.sop_instance_uid for i in got} == {d.SOPInstanceUID for d in big}
    assert progress[-1].done and progress[-1].ok
    assert progress[-1].completed == SERIES_200
    # Byte for byte what was stored (transfer syntax as stored: no transcoding).
    first = next(i for i in got if i.sop_instance_uid == big[0].SOPInstanceUID)
    ds = dcmread(first.path)
    assert ds.PixelData == big[0].PixelData
    assert ds.file_meta.TransferSyntaxUID == big[0].file_meta.TransferSyntaxUID


async def test_retrieve_study_fetches_series_concurrently(
    web_orthanc: WebOrthanc, no_leaks: Any
) -> None:
    corpus = web_orthanc.corpus
    study = sorted(corpus.studies("PAT001"))[0]
    async with adn.Client("ADNTEST") as client:
        got = await client.retrieve(web_orthanc.web, Query.study(StudyInstanceUID=study))
    expected = {d.SOPInstanceUID for d in corpus.datasets if d.StudyInstanceUID == study}
    assert {i.sop_instance_uid for i in got} == expected
    assert all(i.in_memory for i in got)
    assert {i.series_instance_uid for i in got} == corpus.series(study)


async def test_retrieve_one_instance(web_orthanc: WebOrthanc, no_leaks: Any) -> None:
    target = web_orthanc.corpus.datasets[4]
    async with adn.Client("ADNTEST") as client:
        got = await client.retrieve(
            web_orthanc.web, Query.image(SOPInstanceUID=target.SOPInstanceUID)
        )
    assert [i.sop_instance_uid for i in got] == [target.SOPInstanceUID]
    ds = await got[0].load_dataset()
    assert ds.PatientID == target.PatientID


async def test_retrieve_patient(web_orthanc: WebOrthanc, no_leaks: Any) -> None:
    corpus = web_orthanc.corpus
    async with adn.Client("ADNTEST") as client:
        got = await client.retrieve(
            web_orthanc.web, Query.patient(PatientID="PAT003"), storage=MemoryStorage()
        )
    assert {i.sop_instance_uid for i in got} == {
        d.SOPInstanceUID for d in corpus.datasets if d.PatientID == "PAT003"
    }


@pytest.mark.parametrize("level", ["SERIES", "STUDY"])
async def test_retrieve_left_early_closes_the_stream(
    web_orthanc: WebOrthanc, level: str, no_leaks: Any
) -> None:
    # One request (a series), or several read at once (the series of a study).
    first = web_orthanc.corpus.datasets[0] if level == "STUDY" else web_orthanc.big[0]
    query = (
        Query.study(StudyInstanceUID=first.StudyInstanceUID)
        if level == "STUDY"
        else Query.series(SeriesInstanceUID=first.SeriesInstanceUID)
    )
    async with adn.Client("ADNTEST") as client:
        async with client.retrieve(web_orthanc.web, query) as instances:
            async for _ in instances:
                break
        # The client goes on at once: nothing was left half-read or still running.
        assert await client.echo(web_orthanc.web) > 0


# -- STOW-RS ----------------------------------------------------------------------------


async def test_store_batch_with_one_invalid_instance(
    web_orthanc: WebOrthanc, tmp_path: Path, no_leaks: Any
) -> None:
    good = make_series(4, patient_id="STOW001", patient_name="Stow^Test")
    paths = write_files(tmp_path / "good", good[:2])
    # A Part 10 file whose data set is cut short: Orthanc cannot parse it.
    broken = make_series(1, patient_id="STOW001")[0]
    buffer = io.BytesIO()
    broken.save_as(buffer, enforce_file_format=True)
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(buffer.getvalue()[:-300])
    outcomes: list[adn.InstanceOutcome] = []
    async with adn.Client("ADNTEST") as client:
        result = await client.store(
            web_orthanc.web, [*paths, bad, *good[2:]], on_progress=outcomes.append
        )
    assert len(result) == 5 == len(outcomes)
    assert {o.sop_instance_uid for o in result.succeeded} == {d.SOPInstanceUID for d in good}
    [failed] = result.failed
    assert failed.sop_instance_uid == broken.SOPInstanceUID
    assert failed.source == bad
    assert failed.status is not None and failed.status != 0
    stored = web_orthanc.server.sop_instance_uids()
    assert {d.SOPInstanceUID for d in good} <= stored
    assert broken.SOPInstanceUID not in stored


# -- the same application code over DIMSE and DICOMweb ----------------------------------


async def find_retrieve_store(client: adn.Client, node: adn.AnyNode, patient_id: str) -> Any:
    """Application code that knows nothing of the node's kind."""
    studies = await client.find(node, Query.study(PatientID=patient_id))
    series = await client.find(
        node, Query.series(StudyInstanceUID=studies[0].StudyInstanceUID).returning("PatientID")
    )
    chosen = sorted(series, key=lambda s: str(s.SeriesInstanceUID))[0]
    received = await client.retrieve(node, Query.series(SeriesInstanceUID=chosen.SeriesInstanceUID))
    copies = []
    derived_study = uid()  # a study of its own: the searches above stay the same
    for instance in received:
        ds = await instance.load_dataset()
        ds.PatientID = f"{patient_id}-DERIVED"
        ds.StudyInstanceUID = derived_study
        ds.SeriesInstanceUID = uid()
        ds.SOPInstanceUID = uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesDescription = "DERIVED"
        copies.append(ds)
    result = await client.store(node, copies)
    return (
        sorted((str(s.StudyInstanceUID), str(s.StudyDate), str(s.PatientName)) for s in studies),
        sorted((str(s.SeriesInstanceUID), str(s.Modality), int(s.SeriesNumber)) for s in series),
        sorted(i.sop_instance_uid for i in received),
        sorted(i.patient_id or "" for i in received),
        (result.ok, len(result)),
    )


async def test_same_code_over_dimse_and_dicomweb(web_orthanc: WebOrthanc, no_leaks: Any) -> None:
    async with adn.Client("ADNTEST") as client:
        over_dimse = await find_retrieve_store(client, web_orthanc.dimse, "PAT003")
        over_web = await find_retrieve_store(client, web_orthanc.web, "PAT003")
    assert over_dimse == over_web
    studies, series, received, patients, stored = over_web
    assert len(studies) == 2 and len(series) == 2 and len(received) == 3
    assert studies[0][2] == "Müller^Jürgen"
    assert patients == ["PAT003"] * 3
    assert stored == (True, 3)


# -- Orthanc's registered users ---------------------------------------------------------

USER, PASSWORD = "alice", "s3cret-é"


class AuthOrthanc(OrthancServer):
    """Orthanc with HTTP basic authentication on (its registered users)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(
            workdir,
            dicomweb=True,
            config={"AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD}},
        )

    def _wait_for_rest(self, deadline: float) -> None:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode("ascii")
        while True:
            conn = http.client.HTTPConnection(self.host, self.http_port, timeout=5)
            try:
                conn.request("GET", "/system", headers={"Authorization": f"Basic {token}"})
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                conn.close()
            if time.monotonic() >= deadline:
                raise TimeoutError(f"Orthanc with authentication not answering on {self.http_url}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def auth_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthOrthanc]:
    with AuthOrthanc(tmp_path_factory.mktemp("orthanc-auth")) as server:
        yield server


async def test_registered_users(auth_orthanc: AuthOrthanc, no_leaks: Any) -> None:
    url = f"{auth_orthanc.http_url}/dicom-web"
    node = adn.Node.web(url, auth=(USER, PASSWORD))
    series = make_series(2, patient_id="AUTH001", rows=4, columns=4)
    async with adn.Client("ADNTEST") as client:
        assert await client.echo(node) > 0
        assert (await client.store(node, series)).ok
        found = await client.find(node, Query.image(PatientID="AUTH001"))
        got = await client.retrieve(
            node, Query.series(SeriesInstanceUID=series[0].SeriesInstanceUID)
        )
        for wrong in (adn.Node.web(url, auth=(USER, "wrong")), adn.Node.web(url)):
            with pytest.raises(adn.AuthError) as info:
                await client.find(wrong, Query.study(PatientID="AUTH001"))
            assert info.value.status_code == 401
            with pytest.raises(adn.AuthError):
                await client.store(wrong, series)
    assert {str(ds.SOPInstanceUID) for ds in found} == {ds.SOPInstanceUID for ds in series}
    assert {i.sop_instance_uid for i in got} == {ds.SOPInstanceUID for ds in series}


# -- many nodes, both kinds -------------------------------------------------------------


async def test_fan_out_over_dimse_and_dicomweb(web_orthanc: WebOrthanc, no_leaks: Any) -> None:
    from tests.peers.inprocess import closed_port

    dead = adn.Node.web(f"http://127.0.0.1:{closed_port()}/dicom-web", name="dead")
    nodes = [web_orthanc.dimse, web_orthanc.web, dead]
    async with adn.Client("ADNTEST") as client:
        echoes = await adn.echo_all(client, nodes, node_timeout=10)
        found = await adn.find_all(client, nodes, Query.study(PatientID="PAT001"))
    assert [r.ok for r in echoes] == [True, True, False]
    assert isinstance(echoes.of(dead).error, adn.ConnectError)
    merged = found.merged()
    assert {m.key for m in merged} == web_orthanc.corpus.studies("PAT001")
    for m in merged:
        assert set(m.nodes) == {web_orthanc.dimse, web_orthanc.web}


# -- the command line -------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    from aiodicomnet.cli import main

    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_with_a_url(
    web_orthanc: WebOrthanc,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    monkeypatch.setenv("AIODICOMNET_CONFIG", str(tmp_path / "config.toml"))
    url = web_orthanc.web.url
    corpus = web_orthanc.corpus
    code, out, err = _cli(capsys, "find", url, "-k", "PatientID=PAT001", "--json")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert {r["0020000D"]["Value"][0] for r in records} == corpus.studies("PAT001")

    monkeypatch.setenv("CLI_PACS_PASSWORD", "unused-by-orthanc")
    code, out, err = _cli(
        capsys, "nodes", "add", "cloud", url, "--user", "bob", "--password-env", "CLI_PACS_PASSWORD"
    )
    assert code == 0, err
    assert "[nodes.cloud]" in (tmp_path / "config.toml").read_text()
    assert "unused-by-orthanc" not in (tmp_path / "config.toml").read_text()
    code, out, err = _cli(capsys, "echo", "cloud")
    assert code == 0 and "QIDO-RS" in out, err

    study = sorted(corpus.studies("PAT002"))[0]
    code, out, err = _cli(
        capsys, "retrieve", "cloud", "-k", f"StudyInstanceUID={study}", "-o", tmp_path / "got"
    )
    assert code == 0, err
    expected = {ds.SOPInstanceUID for ds in corpus.datasets if ds.StudyInstanceUID == study}
    assert {p.stem for p in (tmp_path / "got").rglob("*.dcm")} == expected

    new = make_series(2, patient_id="CLI001", rows=4, columns=4)
    files = write_files(tmp_path / "send", new)
    code, out, err = _cli(capsys, "store", url, *files)
    assert code == 0, err
    assert {ds.SOPInstanceUID for ds in new} <= web_orthanc.server.sop_instance_uids()


async def test_metadata_and_thumbnail(web_orthanc: WebOrthanc, no_leaks: Any) -> None:
    big = web_orthanc.big
    series = Query.series(SeriesInstanceUID=big[0].SeriesInstanceUID)
    async with adn.Client("ADNTEST") as client:
        meta = await client.metadata(web_orthanc.web, series)
        jpeg = await client.thumbnail(web_orthanc.web, series, size=64)
        png = await client.thumbnail(
            web_orthanc.web,
            Query.image(SOPInstanceUID=big[3].SOPInstanceUID),
            media_type="image/png",
        )
        with pytest.raises(TypeError, match="DICOMweb"):
            await client.thumbnail(web_orthanc.dimse, series)  # type: ignore[arg-type]
    assert {str(ds.SOPInstanceUID) for ds in meta} == {ds.SOPInstanceUID for ds in big}
    assert all(int(ds.Rows) == 8 for ds in meta)
    assert all("7FE00010" in ds.bulk_data_uris for ds in meta)  # pixel data by reference
    assert jpeg[:2] == b"\xff\xd8"
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


async def test_retrieve_in_an_explicit_transfer_syntax(
    web_orthanc: WebOrthanc, no_leaks: Any
) -> None:
    target = web_orthanc.big[5]
    implicit = "1.2.840.10008.1.2"
    node = adn.Node.web(web_orthanc.web.url, transfer_syntax=implicit)
    async with adn.Client("ADNTEST") as client:
        [got] = await client.retrieve(node, Query.image(SOPInstanceUID=target.SOPInstanceUID))
        ds = await got.load_dataset()
    assert got.transfer_syntax_uid == implicit != target.file_meta.TransferSyntaxUID
    assert ds.PixelData == target.PixelData


async def test_retrieve_abandoned_with_a_bare_break(web_orthanc: WebOrthanc, no_leaks: Any) -> None:
    """An iterator left without ``async with`` is finalized by the garbage collector,
    in another task: it must clean up there without touching the caller's task."""
    import gc

    first = web_orthanc.corpus.datasets[0]
    async with adn.Client("ADNTEST") as client:
        async for _ in client.retrieve(
            web_orthanc.web, Query.study(StudyInstanceUID=first.StudyInstanceUID)
        ):
            break
        gc.collect()
        assert await client.echo(web_orthanc.web) > 0  # this task was not cancelled
