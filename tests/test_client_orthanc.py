"""The client against a real Orthanc: echo, find at every level, store, move, get."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from pydicom.dataset import Dataset

import aiodicomnet as adn
from aiodicomnet.client import Client
from aiodicomnet.query import DateRange, Query, UIDList
from aiodicomnet.storage import DiskStorage
from tests.data import Corpus, make_series, write_files
from tests.peers.inprocess import ScriptedSCP
from tests.peers.orthanc import OrthancServer

pytestmark = pytest.mark.orthanc


async def test_echo(orthanc: OrthancServer, no_leaks: Any) -> None:
    async with Client("ADNTEST") as client:
        rtt = await client.echo(orthanc.node)
    assert rtt > 0


async def test_wrong_called_aet_is_rejected(orthanc: OrthancServer, no_leaks: Any) -> None:
    node = adn.Node("NOTORTHANC", orthanc.host, orthanc.dicom_port)
    async with Client("ADNTEST") as client:
        with pytest.raises(adn.AssociationRejected) as info:
            await client.echo(node)
    assert info.value.reason_str == "called-AE-title-not-recognized"


async def test_find_every_level(
    orthanc_loaded: OrthancServer, corpus: Corpus, no_leaks: Any
) -> None:
    node = orthanc_loaded.node
    async with Client("ADNTEST") as client:
        patients = await client.find(node, Query.patient(PatientID="PAT00*"))
        assert {ds.PatientID for ds in patients} == corpus.patients()
        assert all(int(ds.NumberOfPatientRelatedStudies) == 2 for ds in patients)

        study_uid = sorted(corpus.studies("PAT002"))[0]
        studies = await client.find(node, Query.study(PatientID="PAT002"))
        assert {ds.StudyInstanceUID for ds in studies} == corpus.studies("PAT002")
        study = next(ds for ds in studies if ds.StudyInstanceUID == study_uid)
        assert int(study.NumberOfStudyRelatedSeries) == 2
        assert int(study.NumberOfStudyRelatedInstances) == 6

        series = await client.find(node, Query.series(StudyInstanceUID=study_uid))
        assert {ds.SeriesInstanceUID for ds in series} == corpus.series(study_uid)

        series_uid = sorted(corpus.series(study_uid))[0]
        images = await client.find(
            node,
            Query.image(StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid),
        )
        expected = {ds.SOPInstanceUID for ds in corpus.instances(series_uid)}
        assert {ds.SOPInstanceUID for ds in images} == expected

        # patient root model down to IMAGE level
        images_pr = await client.find(
            node,
            Query.image(
                model="PATIENT_ROOT",
                PatientID="PAT002",
                StudyInstanceUID=study_uid,
                SeriesInstanceUID=series_uid,
            ),
        )
        assert {ds.SOPInstanceUID for ds in images_pr} == expected


async def test_find_matching_types(orthanc_loaded: OrthancServer, corpus: Corpus) -> None:
    node = orthanc_loaded.node
    ct = {ds.StudyInstanceUID for ds in corpus.datasets if ds.StudyDate.startswith("2024")}
    async with Client("ADNTEST") as client:
        by_range = await client.find(
            node, Query.study(StudyDate=DateRange("20240101", None), PatientID="PAT*")
        )
        assert {ds.StudyInstanceUID for ds in by_range} == ct

        two = sorted(ct)[:2]
        by_list = await client.find(node, Query.study(StudyInstanceUID=UIDList(*two)))
        assert {ds.StudyInstanceUID for ds in by_list} == set(two)

        by_wildcard = await client.find(node, Query.patient(PatientName="Sm?th*"))
        assert [ds.PatientID for ds in by_wildcard] == ["PAT002"]


async def test_find_non_ascii_name(orthanc_loaded: OrthancServer) -> None:
    async with Client("ADNTEST") as client:
        found = await client.find(orthanc_loaded.node, Query.patient(PatientName="Müller*"))
    assert [str(ds.PatientName) for ds in found] == ["Müller^Jürgen"]


async def test_raw_dataset_query(orthanc_loaded: OrthancServer, corpus: Corpus) -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = "PAT001"
    ds.StudyInstanceUID = ""
    async with Client("ADNTEST") as client:
        found = await client.find(orthanc_loaded.node, ds)
    assert {d.StudyInstanceUID for d in found} == corpus.studies("PAT001")


async def test_store_datasets_files_and_directories(
    orthanc: OrthancServer, tmp_path: Any, no_leaks: Any
) -> None:
    series = make_series(4, patient_id="STORE01", patient_name="Store^Test")
    files = write_files(tmp_path / "a" / "b", series[2:])
    async with Client("ADNTEST") as client:
        result = await client.store(orthanc.node, [*series[:2], tmp_path / "a"])
    assert result.ok, result.failed
    assert len(result) == 4
    assert {o.sop_instance_uid for o in result.outcomes} == {ds.SOPInstanceUID for ds in series}
    assert {o.source for o in result.outcomes if o.source} == set(files)
    stored = orthanc.instance(series[3].SOPInstanceUID)
    assert stored.PixelData == series[3].PixelData


@pytest.fixture
def move_receiver(move_destination: adn.Node) -> Iterator[ScriptedSCP]:
    """A pynetdicom storage SCP listening as the C-MOVE destination ADNMOVE."""
    received: list[Dataset] = []
    done = threading.Event()
    peer = ScriptedSCP(ae_title=move_destination.ae_title, port=move_destination.port)

    def store(event: Any) -> int:
        received.append(event.dataset)
        return 0

    peer.on_store = store
    peer.received = received  # type: ignore[attr-defined]
    peer.done = done  # type: ignore[attr-defined]
    with peer.running():
        yield peer


async def test_move_progress(
    orthanc_loaded: OrthancServer, corpus: Corpus, move_receiver: ScriptedSCP, no_leaks: Any
) -> None:
    study_uid = sorted(corpus.studies("PAT001"))[0]
    expected = {ds.SOPInstanceUID for ds in corpus.datasets if ds.StudyInstanceUID == study_uid}
    updates = []
    async with Client("ADNTEST") as client:
        async for progress in client.move(
            orthanc_loaded.node, Query.study(StudyInstanceUID=study_uid), "ADNMOVE"
        ):
            updates.append(progress)
    final = updates[-1]
    assert final.done and final.ok
    assert final.completed == len(expected)
    assert all(not u.done for u in updates[:-1])
    received = {ds.SOPInstanceUID for ds in move_receiver.received}  # type: ignore[attr-defined]
    assert received == expected


async def test_move_to_unknown_destination(orthanc_loaded: OrthancServer, corpus: Corpus) -> None:
    study_uid = sorted(corpus.studies("PAT001"))[0]
    async with Client("ADNTEST") as client:
        with pytest.raises(adn.StatusError) as info:
            await client.move(
                orthanc_loaded.node, Query.study(StudyInstanceUID=study_uid), "NOSUCHAE"
            )
    assert info.value.service == "C-MOVE"
    assert info.value.category == "Failure"


async def test_get_series_into_memory(
    orthanc_loaded: OrthancServer, corpus: Corpus, no_leaks: Any
) -> None:
    study_uid = sorted(corpus.studies("PAT003"))[0]
    series_uid = sorted(corpus.series(study_uid))[0]
    originals = {ds.SOPInstanceUID: ds for ds in corpus.instances(series_uid)}
    progress = []
    async with Client("ADNTEST") as client:
        received = await client.get(
            orthanc_loaded.node,
            Query.series(StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid),
            on_progress=progress.append,
        )
    assert {inst.sop_instance_uid for inst in received} == set(originals)
    for inst in received:
        original = originals[inst.sop_instance_uid]
        assert inst.dataset.PixelData == original.PixelData
        assert str(inst.dataset.PatientName) == "Müller^Jürgen"
    assert progress[-1].done and progress[-1].completed == len(originals)


async def test_get_study_to_disk(
    orthanc_loaded: OrthancServer, corpus: Corpus, tmp_path: Any, no_leaks: Any
) -> None:
    study_uid = sorted(corpus.studies("PAT002"))[0]
    expected = {ds.SOPInstanceUID for ds in corpus.datasets if ds.StudyInstanceUID == study_uid}
    storage = DiskStorage(tmp_path)
    paths = []
    async with Client("ADNTEST") as client:
        async for inst in client.get(
            orthanc_loaded.node, Query.study(StudyInstanceUID=study_uid), storage=storage
        ):
            assert inst.path is not None and inst.path.is_file()
            paths.append(inst.path)
    assert {p.stem for p in paths} == expected
    assert all(tmp_path in p.parents for p in paths)


async def test_get_break_cancels(
    orthanc_loaded: OrthancServer, corpus: Corpus, no_leaks: Any
) -> None:
    """Leaving a C-GET early: C-CANCEL, then the association ends; nothing left running."""
    study_uid = sorted(corpus.studies("PAT001"))[0]
    async with Client("ADNTEST") as client:
        op = client.get(orthanc_loaded.node, Query.study(StudyInstanceUID=study_uid))
        async with op as instances:
            async for _ in instances:
                break
        # the association works again right after
        assert await client.echo(orthanc_loaded.node) > 0


async def test_find_cancel_then_reuse(orthanc_loaded: OrthancServer, no_leaks: Any) -> None:
    async with Client("ADNTEST") as client:
        with anyio.fail_after(10):
            async with client.find(orthanc_loaded.node, Query.image(PatientID="*")) as found:
                async for _ in found:
                    break
        studies = await client.find(orthanc_loaded.node, Query.study(PatientID="PAT001"))
    assert len(studies) == 2
