"""De-identification: keyed pseudonyms, consistent references, per-patient dates, the
Basic profile's removals, the burned-in policy, the mapping table; and the
storage policy on instances a real Orthanc pushes (C-MOVE) or hands over (C-GET)."""

from __future__ import annotations

import copy
import io
import zlib
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, UltrasoundImageStorage

from aiodicomnet import Client, DiskStorage, IncomingInstance, Query, StorageServer
from aiodicomnet.errors import BurnedInAnnotationRefused, IncompleteRetrieve
from aiodicomnet.research.deid import REMOVED, Deidentifier, DeidentifyingStorage, MappingTable
from aiodicomnet.samples import make_dataset, make_series
from tests.peers.orthanc import OrthancServer

KEY = "deid-test-key"

#: Attributes of the PS3.15 Basic profile (Table E.1-1) with an identifying value each.
DIRTY = {
    "PatientAddress": "12 Elm Street",
    "PatientTelephoneNumbers": "555-0101",
    "OtherPatientIDs": "OPID77",
    "OtherPatientNames": "Roe^Rick",
    "PatientMotherBirthName": "Mum^Maiden",
    "InstitutionName": "St Marks Hospital",
    "InstitutionAddress": "1 Hospital Road",
    "ReferringPhysicianName": "Ref^Doctor",
    "PerformingPhysicianName": "Perf^Doctor",
    "OperatorsName": "Op^Erator",
    "NameOfPhysiciansReadingStudy": "Read^Doctor",
    "StationName": "CTSTATION9",
    "DeviceSerialNumber": "SN-998877",
    "AcquisitionDateTime": "20240115101500",
    "PatientComments": "lives with Roe",
    "AdditionalPatientHistory": "history of asthma",
    "ImageComments": "for Dr Who",
    "RequestingPhysician": "Req^Doctor",
    "InstitutionalDepartmentName": "Radiology West",
    "PatientAge": "054Y",
    "MedicalRecordLocator": "MRL-5",
    "Occupation": "Pilot",
    "RequestedProcedureID": "RP-42",
    "PerformedProcedureStepID": "PPS-43",
    "PatientBirthTime": "0930",
    "DerivationDescription": "derived by Dr Who",
    "StudyDescription": "CT HEAD for Roe",
    "SeriesDescription": "AXIAL Roe",
    "ProtocolName": "Roe protocol",
}


def dirty(ds: Dataset) -> Dataset:
    for keyword, value in DIRTY.items():
        setattr(ds, keyword, value)
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.10.1455.77"
    ds.add_new(0x00091010, "LO", "PRIVATE-SECRET")
    return ds


def dicom_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.dcm"))


def text_values(ds: Dataset) -> set[str]:
    found: set[str] = set()

    def visit(_: Dataset, elem: Any) -> None:
        if elem.VR in ("OB", "OW", "SQ"):
            return
        values = elem.value if isinstance(elem.value, (list, tuple)) else [elem.value]
        found.update(str(v) for v in values)

    ds.walk(visit)
    ds.file_meta.walk(visit)
    return found


def test_basic_profile_leaves_nothing_identifying() -> None:
    ds = dirty(make_dataset(patient_id="MRN1", patient_name="Doe^Jane", accession="ACC9"))
    original = copy.deepcopy(ds)
    Deidentifier(KEY).deidentify(ds)
    left = text_values(ds)
    for keyword in [*DIRTY, "PatientID", "PatientName", "AccessionNumber", "StudyDate"]:
        value = str(original.get(keyword))
        assert value not in left, f"{keyword} survived: {value}"
    for keyword in (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "FrameOfReferenceUID",
    ):
        assert ds.get(keyword) and ds.get(keyword) != original.get(keyword)
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.SOPClassUID == original.SOPClassUID  # class UIDs are kept
    assert (0x0009, 0x1010) not in ds
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
    assert codes == {"113100", "113107"}
    assert ds.PixelData == original.PixelData


def test_pseudonyms_are_keyed_and_repeatable() -> None:
    ds = make_dataset(patient_id="MRN1", patient_name="Doe^Jane")
    one = Deidentifier(KEY).deidentify(copy.deepcopy(ds))
    again = Deidentifier(KEY).deidentify(copy.deepcopy(ds))  # another run, same key
    other = Deidentifier("another key").deidentify(copy.deepcopy(ds))
    for keyword in ("PatientID", "PatientName", "AccessionNumber", "StudyInstanceUID", "StudyDate"):
        assert one.get(keyword) == again.get(keyword)
        assert one.get(keyword) != other.get(keyword)
    assert Deidentifier(KEY).pseudonym_uid(ds.StudyInstanceUID) == one.StudyInstanceUID


def test_references_stay_consistent_inside_the_cohort() -> None:
    series = make_series(3, patient_id="MRN2")
    for ds in series:
        ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.10.1455.88"
    ref = Dataset()
    ref.ReferencedSOPClassUID = series[0].SOPClassUID
    ref.ReferencedSOPInstanceUID = series[0].SOPInstanceUID
    series[2].ReferencedImageSequence = Sequence([ref])
    deid = Deidentifier(KEY)
    out = [deid.deidentify(copy.deepcopy(ds)) for ds in series]
    assert len({ds.StudyInstanceUID for ds in out}) == 1
    assert len({ds.SeriesInstanceUID for ds in out}) == 1
    assert len({ds.FrameOfReferenceUID for ds in out}) == 1
    assert len({ds.SOPInstanceUID for ds in out}) == 3
    assert out[2].ReferencedImageSequence[0].ReferencedSOPInstanceUID == out[0].SOPInstanceUID


def test_dates_shift_per_patient_and_keep_intervals() -> None:
    deid = Deidentifier(KEY)
    a1 = make_dataset(patient_id="A", study_date="20240115")
    a2 = make_dataset(patient_id="A", study_date="20240315")
    b1 = make_dataset(patient_id="B", study_date="20240115")
    out = [deid.deidentify(copy.deepcopy(ds)) for ds in (a1, a2, b1)]

    def day(text: str) -> date:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))

    assert (day(out[1].StudyDate) - day(out[0].StudyDate)).days == 60  # interval kept
    shift_a = (day(out[0].StudyDate) - day("20240115")).days
    shift_b = (day(out[2].StudyDate) - day("20240115")).days
    assert shift_a == deid.date_shift_days("A") and shift_b == deid.date_shift_days("B")
    assert shift_a != shift_b and -730 <= shift_a <= -62 and -730 <= shift_b <= -62
    assert out[0].StudyTime == a1.StudyTime  # whole days: the time of day stays

    kept = Deidentifier(KEY, shift_dates=False).deidentify(copy.deepcopy(a1))
    assert kept.StudyDate == "20240115" and kept.PatientBirthDate == a1.PatientBirthDate
    assert kept.LongitudinalTemporalInformationModified == "UNMODIFIED"


def test_keep_leaves_chosen_attributes() -> None:
    ds = dirty(make_dataset())
    out = Deidentifier(KEY, keep=("SeriesDescription",)).deidentify(ds)
    assert out.SeriesDescription == DIRTY["SeriesDescription"]
    assert "StudyDescription" not in out
    assert "SeriesDescription" in REMOVED


def burned_in(flag: str | None, modality: str = "CT") -> Dataset:
    ds = make_dataset(modality="CT")
    ds.Modality = modality
    if modality == "US":
        ds.SOPClassUID = UltrasoundImageStorage
    if flag is not None:
        ds.BurnedInAnnotation = flag
    return ds


def test_burned_in_policy() -> None:
    refuse = Deidentifier(KEY)
    ds = burned_in("YES")
    before = copy.deepcopy(ds)
    with pytest.raises(BurnedInAnnotationRefused, match="Burned In Annotation is YES") as info:
        refuse.deidentify(ds)
    assert info.value.sop_instance_uid == before.SOPInstanceUID
    assert ds == before  # nothing changed
    with pytest.raises(BurnedInAnnotationRefused, match="modality US"):
        refuse.deidentify(burned_in(None, "US"))
    refuse.deidentify(burned_in("NO", "US"))  # explicitly clean: let through
    refuse.deidentify(burned_in(None))  # a CT that says nothing: not at risk

    flag = Deidentifier(KEY, burned_in="flag")
    ds = burned_in("YES")
    uid = ds.SOPInstanceUID
    out = flag.deidentify(ds)
    assert flag.flagged == {uid: "Burned In Annotation is YES"}
    assert out.PatientIdentityRemoved == "NO"


def test_the_key_is_not_shown() -> None:
    from aiodicomnet.research.cohort import CohortSettings, DeidSettings

    settings = CohortSettings(output=Path("out"), deid=DeidSettings(key="very-secret-key"))
    assert "very-secret-key" not in repr(settings)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="key"):
        Deidentifier("")
    with pytest.raises(ValueError, match="not DICOM keywords"):
        Deidentifier(KEY, keep=("NoSuchKeyword",))
    with pytest.raises(ValueError, match="burned_in"):
        Deidentifier(KEY, burned_in="ignore")  # type: ignore[arg-type]


def test_mapping_table(tmp_path: Path) -> None:
    table = MappingTable(tmp_path / "keep-apart" / "map.sqlite")
    deid = Deidentifier(KEY, mapping=table)
    ds = make_dataset(patient_id="MRN3", patient_name="Doe^Jim", accession="ACC3")
    study = ds.StudyInstanceUID
    out = deid.deidentify(ds)
    deid.deidentify(make_dataset(patient_id="MRN3", study_uid=study))  # same pairs: once
    assert table.pseudonym("PatientID", "MRN3") == out.PatientID
    assert table.original("StudyInstanceUID", out.StudyInstanceUID) == study
    assert table.pseudonym("DateShiftDays", "MRN3") == str(deid.date_shift_days("MRN3"))
    kinds = [kind for kind, _, _ in table.rows()]
    assert kinds.count("StudyInstanceUID") == 1
    assert Deidentifier(KEY).mapping is None  # nothing recorded unless asked


def test_transform_of_a_deflated_instance() -> None:
    ds = make_dataset(patient_id="MRN4")
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    deflated = compressor.compress(fp.getvalue()) + compressor.flush()
    incoming = IncomingInstance(
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax_uid=DeflatedExplicitVRLittleEndian,
        encoded=deflated,
    )
    clean = Deidentifier(KEY).transform(incoming)
    assert not clean.transfer_syntax_uid.is_deflated
    out = dcmread(io.BytesIO(clean.read()))
    assert out.PatientID != "MRN4" and out.SOPInstanceUID == clean.sop_instance_uid
    assert out.PixelData == ds.PixelData


@pytest.mark.orthanc
async def test_storage_policy_on_instances_pushed_by_orthanc(
    orthanc: OrthancServer, tmp_path: Path, no_leaks: Any
) -> None:
    # names of their own: the shared Orthanc's other users search by name
    series = make_series(3, patient_id="DEIDPUSH", patient_name="Deid^Push")
    orthanc.upload(series)
    storage = DeidentifyingStorage(Deidentifier(KEY), DiskStorage(tmp_path))
    async with StorageServer("DEIDSCP", storage=storage, stream=False) as scp:
        orthanc.add_modality("deidscp", "DEIDSCP", "127.0.0.1", scp.port)
        try:
            async with Client("ADNTEST") as client:
                query = Query.series(SeriesInstanceUID=series[0].SeriesInstanceUID)
                progress = await client.move(orthanc.node, query, "DEIDSCP")
        finally:
            orthanc.remove_modality("deidscp")
    assert (progress.completed, progress.failed) == (3, 0)
    files = dicom_files(tmp_path)
    assert len(files) == 3
    originals = {ds.SOPInstanceUID for ds in series}
    for path in files:
        out = dcmread(path)
        assert out.PatientID != "DEIDPUSH" and out.SOPInstanceUID not in originals
        assert path.parts[-4] == out.PatientID  # laid out by the new values
        assert b"DEIDPUSH" not in path.read_bytes() and b"Deid^Push" not in path.read_bytes()


@pytest.mark.orthanc
async def test_storage_policy_refuses_burned_in_instances_of_a_c_get(
    orthanc: OrthancServer, tmp_path: Path, no_leaks: Any
) -> None:
    series = make_series(2, patient_id="DEIDREF", patient_name="Deid^Refused")
    sc = burned_in("YES")
    sc.StudyInstanceUID, sc.PatientID = series[0].StudyInstanceUID, "DEIDREF"
    sc.PatientName = "Deid^Refused"
    orthanc.upload([*series, sc])
    storage = DeidentifyingStorage(Deidentifier(KEY), DiskStorage(tmp_path))
    async with Client("ADNTEST") as client:
        query = Query.study(StudyInstanceUID=sc.StudyInstanceUID)
        with pytest.raises(IncompleteRetrieve) as info:
            await client.retrieve(orthanc.node, query, via="get", storage=storage)
    assert (info.value.received, info.value.failed) == (2, 1)
    assert storage.refused == {sc.SOPInstanceUID: "Burned In Annotation is YES"}
    assert len(dicom_files(tmp_path)) == 2


@pytest.mark.orthanc
async def test_received_instances_of_a_retrieve(orthanc: OrthancServer, no_leaks: Any) -> None:
    series = make_series(2, patient_id="DEIDGET", patient_name="Deid^Get")
    orthanc.upload(series)
    deid = Deidentifier(KEY)
    async with Client("ADNTEST") as client:
        instances = await client.retrieve(
            orthanc.node, Query.series(SeriesInstanceUID=series[0].SeriesInstanceUID)
        )
        out = [await deid.received(instance) for instance in instances]
    assert len(out) == 2
    assert {ds.PatientID for ds in out} == {Deidentifier(KEY).deidentify(series[0]).PatientID}
    assert all(instance.dataset.PatientID == "DEIDGET" for instance in instances)  # untouched
