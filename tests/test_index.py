"""The SQLite index and its C-FIND matching (PS3.4 C.2.2.2), against the generated corpus."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom.dsutils import decode, encode

from aiodicomnet._index import (
    Constraint,
    IdentifierError,
    Index,
    normalize,
    parse_constraint,
)
from tests.data import Corpus, make_corpus, make_dataset, make_series, write_files

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")

PER_SERIES = 2


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return make_corpus(PER_SERIES)


@pytest.fixture(scope="module")
def index(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Index]:
    root = tmp_path_factory.mktemp("index")
    paths = write_files(root / "files", corpus.datasets)
    idx = Index(root / "index.sqlite")
    idx.add_many(
        [(ds, p, None, None, "TESTSCU") for ds, p in zip(corpus.datasets, paths, strict=True)]
    )
    yield idx
    idx.close()


def query(level: str, **keys: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def find(idx: Index, level: str, model: str = "STUDY", **keys: object) -> list[Dataset]:
    return list(idx.find(query(level, **keys), model))


def uids(idx: Index, level: str, model: str = "STUDY", **keys: object) -> set[str]:
    unique = {
        "PATIENT": "PatientID",
        "STUDY": "StudyInstanceUID",
        "SERIES": "SeriesInstanceUID",
        "IMAGE": "SOPInstanceUID",
    }[level]
    return {str(r[unique].value) for r in find(idx, level, model, **keys)}


def studies_where(corpus: Corpus, pred: object) -> set[str]:
    return {ds.StudyInstanceUID for ds in corpus.datasets if pred(ds)}  # type: ignore[operator]


# ---- values and constraints ----------------------------------------------


def test_normalize_fills_omitted_components() -> None:
    assert normalize("DA", "20240110") == "20240110"
    assert normalize("DA", "2024", upper=True) == "20249999"
    assert normalize("DA", "2024.01.10") == "20240110"
    assert normalize("TM", "10") == "100000.000000"
    assert normalize("TM", "10", upper=True) == "109999.999999"
    assert normalize("TM", "10:15:30.5") == "101530.500000"
    assert normalize("DT", "20240110101530.25+0100") == "20240110101530.250000"


def test_parse_constraint_kinds() -> None:
    assert parse_constraint("LO", None) is None
    assert parse_constraint("LO", "*") is None
    assert parse_constraint("UI", "1.2\\*") is None
    c = parse_constraint("UI", "1.2.3\\1.2.4")
    assert isinstance(c, Constraint) and [t.kind for t in c.terms] == ["eq", "eq"]
    c = parse_constraint("UI", "1.2.*")  # no wild cards for UI: literal
    assert c is not None and c.terms[0].kind == "eq"
    c = parse_constraint("LO", "AB?*")
    assert c is not None and c.terms[0].kind == "wild"
    c = parse_constraint("DA", "20240101-")
    assert c is not None and (c.terms[0].lo, c.terms[0].hi) == ("20240101", None)
    c = parse_constraint("TM", "-1015")
    assert c is not None and (c.terms[0].lo, c.terms[0].hi) == (None, "101599.999999")
    c = parse_constraint("DT", "20240110101530-0500")  # a time zone, not a range
    assert c is not None and c.terms[0].lo == "20240110101530.000000"


def test_constraint_python_matching_agrees() -> None:
    c = parse_constraint("PN", "mü*")
    assert c is not None and c.matches("Müller^Jürgen") and not c.matches("Doe^John")
    c = parse_constraint("PN", "Yamada^Tarou")
    assert c is not None and c.matches("Yamada^Tarou=山田^太郎")
    c = parse_constraint("CS", "CT\\MR")
    assert c is not None and c.matches("MR") and not c.matches("US")
    c = parse_constraint("TM", "10-11")
    assert c is not None and c.matches("115959") and not c.matches("120000")


# ---- the index -------------------------------------------------------------


def test_counts(index: Index) -> None:
    counts = index.counts()
    assert (counts.patients, counts.studies, counts.series) == (3, 6, 12)
    assert counts.instances == 12 * PER_SERIES


def test_universal_matching_returns_values(index: Index, corpus: Corpus) -> None:
    rows = find(
        index, "STUDY", StudyDate="", PatientName="", StudyDescription="", AccessionNumber=""
    )
    assert len(rows) == 6
    for row in rows:
        assert row.SpecificCharacterSet == "ISO_IR 192"
        assert row.QueryRetrieveLevel == "STUDY"
        assert row.StudyDate and row.StudyDescription and row.AccessionNumber
        source = next(ds for ds in corpus.datasets if ds.StudyInstanceUID == row.StudyInstanceUID)
        assert str(row.PatientName) == str(source.PatientName)
    # Ordered by date.
    assert [r.StudyDate for r in rows] == sorted(r.StudyDate for r in rows)


def test_single_value_matching_is_case_sensitive(index: Index, corpus: Corpus) -> None:
    expected = studies_where(corpus, lambda ds: ds.PatientID == "PAT002")
    assert uids(index, "STUDY", PatientID="PAT002") == expected
    assert uids(index, "STUDY", PatientID="pat002") == set()
    assert uids(index, "STUDY", AccessionNumber="ACC10") == studies_where(
        corpus, lambda ds: ds.AccessionNumber == "ACC10"
    )
    assert uids(index, "STUDY", StudyDescription="ct head") == set()


def test_person_name_matching_is_case_insensitive(index: Index) -> None:
    assert uids(index, "PATIENT", "PATIENT", PatientName="doe^john") == {"PAT001"}
    assert uids(index, "PATIENT", "PATIENT", PatientName="MÜLLER^JÜRGEN") == {"PAT003"}
    # Accents are significant.
    assert uids(index, "PATIENT", "PATIENT", PatientName="Muller^Jurgen") == set()


def test_wildcard_matching(index: Index, corpus: Corpus) -> None:
    assert uids(index, "PATIENT", "PATIENT", PatientName="*ller*") == {"PAT003"}
    assert uids(index, "PATIENT", "PATIENT", PatientName="D?e*") == {"PAT001"}
    # "?" is one character, not one byte: "ü" is two bytes in UTF-8.
    assert uids(index, "PATIENT", "PATIENT", PatientName="M?ller^J?rgen") == {"PAT003"}
    assert uids(index, "PATIENT", "PATIENT", PatientID="PAT00?") == {"PAT001", "PAT002", "PAT003"}
    ct = studies_where(corpus, lambda ds: ds.StudyDescription == "CT HEAD")
    assert uids(index, "STUDY", StudyDescription="CT*") == ct
    assert uids(index, "STUDY", StudyDescription="ct*") == set()  # case-sensitive (not PN)
    assert uids(index, "STUDY", StudyDescription="*") == set(corpus.studies())


def test_wildcard_characters_are_literal_for_uids_and_dates(index: Index) -> None:
    assert uids(index, "STUDY", StudyInstanceUID="1.2.826.*") == set()
    assert uids(index, "STUDY", StudyDate="2024*") == set()
    assert uids(index, "STUDY", StudyDate="2024*-") == set()
    assert uids(index, "STUDY", StudyTime="1?") == set()


def test_sql_special_characters_are_escaped(tmp_path: Path) -> None:
    with Index(tmp_path / "index.sqlite") as idx:
        for i, desc in enumerate(["50%_[x]", "50 AB[x]", "ABC"]):
            ds = make_dataset(study_description=desc, patient_id=f"P{i}")
            idx.add(ds, tmp_path / f"{i}.dcm", size=1)
        for pattern, expected in [
            ("50%_[x]", {"50%_[x]"}),
            ("50%_[*", {"50%_[x]"}),
            ("50*[x]", {"50%_[x]", "50 AB[x]"}),
            ("50?_*", {"50%_[x]"}),
            ("%", set()),
            ("_BC", set()),
            ("[A]BC", set()),
        ]:
            rows = find(idx, "STUDY", StudyDescription=pattern)
            assert {r.StudyDescription for r in rows} == expected, pattern


def test_list_of_uid_matching(index: Index, corpus: Corpus) -> None:
    some = sorted(corpus.studies())[:2]
    assert uids(index, "STUDY", StudyInstanceUID="\\".join(some)) == set(some)
    assert uids(index, "STUDY", StudyInstanceUID=[*some, "1.2.3.4"]) == set(some)
    series = sorted(corpus.series())[:3]
    assert uids(index, "SERIES", SeriesInstanceUID=series) == set(series)


def test_date_range_matching(index: Index, corpus: Corpus) -> None:
    def by_date(pred: object) -> set[str]:
        return studies_where(corpus, lambda ds: pred(ds.StudyDate))  # type: ignore[operator]

    assert uids(index, "STUDY", StudyDate="20240101-20240131") == by_date(
        lambda d: "20240101" <= d <= "20240131"
    )
    assert uids(index, "STUDY", StudyDate="-20231231") == by_date(lambda d: d <= "20231231")
    assert uids(index, "STUDY", StudyDate="20230401-") == by_date(lambda d: d >= "20230401")
    assert uids(index, "STUDY", StudyDate="20230420") == by_date(lambda d: d == "20230420")
    assert uids(index, "STUDY", StudyDate="20230421-20230519") == set()
    # A partial upper bound covers its precision.
    assert uids(index, "STUDY", StudyDate="-2023") == by_date(lambda d: d <= "20231231")
    # Patient birth date, at patient level.
    assert uids(index, "PATIENT", "PATIENT", PatientBirthDate="19600101-19751231") == {
        "PAT001",
        "PAT003",
    }


def test_time_range_matching(tmp_path: Path) -> None:
    times = ["100000", "101500", "105959.999", "110000", "101500.25", "2300"]
    with Index(tmp_path / "index.sqlite") as idx:
        for t in times:
            idx.add(make_dataset(study_time=t), tmp_path / f"{t}.dcm", size=1)

        def times_for(value: str) -> set[str]:
            return {r.StudyTime for r in find(idx, "STUDY", StudyTime=value)}

        assert times_for("10") == {"100000", "101500", "105959.999", "101500.25"}
        assert times_for("-10") == times_for("10")
        assert times_for("1015") == {"101500", "101500.25"}
        assert times_for("101500") == {"101500", "101500.25"}
        assert times_for("101500.2-101500.3") == {"101500.25"}
        assert times_for("1016-") == {"105959.999", "110000", "2300"}
        assert times_for("-095959") == set()
        assert times_for("22-") == {"2300"}


def test_hierarchy_and_higher_level_keys(index: Index, corpus: Corpus) -> None:
    study = sorted(corpus.studies("PAT001"))[0]
    assert uids(index, "SERIES", StudyInstanceUID=study) == corpus.series(study)
    series = sorted(corpus.series(study))[0]
    instances = {ds.SOPInstanceUID for ds in corpus.instances(series)}
    assert uids(index, "IMAGE", StudyInstanceUID=study, SeriesInstanceUID=series) == instances
    # Keys of higher levels apply to the parents (relational-ish).
    all_series_pat1 = {ds.SeriesInstanceUID for ds in corpus.datasets if ds.PatientID == "PAT001"}
    assert uids(index, "SERIES", PatientName="doe*") == all_series_pat1
    rows = find(index, "SERIES", "PATIENT", PatientID="PAT001", StudyDate="2024*")
    assert rows == []  # wild cards are literal for DA
    rows = find(index, "SERIES", "PATIENT", PatientID="PAT001", StudyDate="2024-", Modality="")
    assert {r.Modality for r in rows} == {"CT"} and len(rows) == 2
    # Unique keys of the levels above are returned even when not asked.
    for row in rows:
        assert row.PatientID == "PAT001" and row.StudyInstanceUID and row.SeriesInstanceUID


def test_lower_level_keys_match_existentially(index: Index, corpus: Corpus) -> None:
    mr = studies_where(corpus, lambda ds: ds.Modality == "MR")
    rows = find(index, "STUDY", Modality="MR")
    assert {r.StudyInstanceUID for r in rows} == mr
    assert all(r.Modality == "" for r in rows)
    assert uids(index, "PATIENT", "PATIENT", SeriesDescription="MR KNEE SERIES 2") == {
        "PAT001",
        "PAT002",
        "PAT003",
    }
    # Several lower keys must hold for the same child.
    assert uids(index, "STUDY", Modality="MR", SeriesDescription="CT HEAD SERIES 1") == set()


def test_modalities_in_study(index: Index, corpus: Corpus) -> None:
    rows = find(index, "STUDY", ModalitiesInStudy="")
    assert all(r.ModalitiesInStudy in ("CT", "MR") for r in rows) and len(rows) == 6
    ct = studies_where(corpus, lambda ds: ds.Modality == "CT")
    assert uids(index, "STUDY", ModalitiesInStudy="CT") == ct
    assert uids(index, "STUDY", ModalitiesInStudy=["CT", "MR"]) == set(corpus.studies())
    assert uids(index, "STUDY", ModalitiesInStudy="US") == set()
    patients = find(index, "PATIENT", "PATIENT", PatientID="PAT002", ModalitiesInStudy="")
    assert list(patients[0].ModalitiesInStudy) == ["CT", "MR"]


def test_counts_are_returned(index: Index) -> None:
    (patient,) = find(
        index,
        "PATIENT",
        "PATIENT",
        PatientID="PAT001",
        NumberOfPatientRelatedStudies="",
        NumberOfPatientRelatedSeries="",
        NumberOfPatientRelatedInstances="",
    )
    assert patient.NumberOfPatientRelatedStudies == 2
    assert patient.NumberOfPatientRelatedSeries == 4
    assert patient.NumberOfPatientRelatedInstances == 4 * PER_SERIES
    for study in find(
        index, "STUDY", NumberOfStudyRelatedSeries="", NumberOfStudyRelatedInstances=""
    ):
        assert study.NumberOfStudyRelatedSeries == 2
        assert study.NumberOfStudyRelatedInstances == 2 * PER_SERIES
    for series in find(index, "SERIES", NumberOfSeriesRelatedInstances="", SeriesNumber="2"):
        assert series.NumberOfSeriesRelatedInstances == PER_SERIES
        assert series.SeriesNumber == 2
    # Not defined at a level above: returned empty.
    (patient,) = find(
        index, "PATIENT", "PATIENT", PatientID="PAT001", NumberOfStudyRelatedSeries=""
    )
    assert patient.NumberOfStudyRelatedSeries is None or patient.NumberOfStudyRelatedSeries == ""


def test_integer_string_matching(index: Index) -> None:
    assert len(find(index, "SERIES", SeriesNumber="2")) == 6
    assert len(find(index, "IMAGE", InstanceNumber="1")) == 12


def test_other_keys_come_from_instances(index: Index) -> None:
    rows = find(index, "SERIES", ImageType="", SliceThickness="", Rows=None)
    assert len(rows) == 12
    for row in rows:
        assert list(row.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
        assert float(row.SliceThickness) == 1.0
        assert row.Rows == 16
    assert len(find(index, "SERIES", ImageType="ORIGINAL")) == 12
    assert find(index, "SERIES", ImageType="DERIVED") == []
    # IMAGE level: read from the files.
    rows = find(index, "IMAGE", PatientID="PAT001", ImagePositionPatient="")
    assert len(rows) == 4 * PER_SERIES
    assert {float(r.ImagePositionPatient[2]) for r in rows} == {1.0, 2.0}
    assert len(find(index, "IMAGE", PatientID="PAT001", PhotometricInterpretation="MONO*")) == 8


def test_unknown_and_sequence_keys_are_returned_empty(index: Index) -> None:
    ds = query("STUDY", StudyInstanceUID="")
    ds.add_new(0x00091010, "LO", "")  # private
    ds.ReferencedStudySequence = []
    rows = list(index.find(ds, "STUDY"))
    assert len(rows) == 6
    for row in rows:
        assert row[0x00091010].value in ("", None)
        assert len(row.ReferencedStudySequence) == 0


def test_retrieve_ae_title_and_charset(index: Index) -> None:
    rows = list(index.find(query("PATIENT", PatientName="*"), "PATIENT", retrieve_ae_title="ARCH"))
    assert len(rows) == 3 and all(r.RetrieveAETitle == "ARCH" for r in rows)
    # Non-ASCII names survive encoding with ISO_IR 192 and decoding.
    (row,) = (r for r in rows if r.PatientID == "PAT003")
    raw = encode(row, True, True)
    assert raw is not None and "Müller^Jürgen".encode() in raw
    assert str(decode(BytesIO(raw), True, True).PatientName) == "Müller^Jürgen"


def test_invalid_identifiers(index: Index) -> None:
    with pytest.raises(IdentifierError):
        index.find(query("PATIENT"), "STUDY")  # no PATIENT level in Study Root
    with pytest.raises(IdentifierError):
        index.find(Dataset(), "STUDY")
    with pytest.raises(IdentifierError):
        index.find(query("FRAME"), "PATIENT")
    with pytest.raises(IdentifierError):
        index.retrieve(query("STUDY", PatientID="PAT001"), "STUDY")  # no StudyInstanceUID


def test_raw_identifier_with_another_character_set(index: Index) -> None:
    """An identifier as pynetdicom hands it over (raw, Latin-1, ranges): no warnings."""
    ds = query("STUDY", PatientName="Müller*", StudyDate="2023-", StudyInstanceUID="")
    ds.SpecificCharacterSet = "ISO_IR 100"
    raw = encode(ds, False, True)
    assert raw is not None and b"M\xfcller*" in raw
    decoded = decode(BytesIO(raw), False, True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = list(index.find(decoded, "STUDY"))
    assert len(rows) == 2 and all(r.StudyDate >= "20230101" for r in rows)
    assert all(str(r.PatientName) == "Müller^Jürgen" for r in rows)


def test_retrieve_selects_instances(index: Index, corpus: Corpus) -> None:
    study = sorted(corpus.studies("PAT002"))[0]
    found = index.retrieve(query("STUDY", StudyInstanceUID=study), "STUDY")
    assert {f.sop_instance_uid for f in found} == {
        ds.SOPInstanceUID for ds in corpus.datasets if ds.StudyInstanceUID == study
    }
    assert all(f.path.exists() and f.size == f.path.stat().st_size for f in found)
    series = sorted(corpus.series())[:2]
    found = index.retrieve(query("SERIES", SeriesInstanceUID=series), "PATIENT")
    assert len(found) == 2 * PER_SERIES
    patient = index.retrieve(query("PATIENT", PatientID="PAT003"), "PATIENT")
    assert len(patient) == 4 * PER_SERIES
    one = corpus.datasets[0]
    (inst,) = index.retrieve(query("IMAGE", SOPInstanceUID=one.SOPInstanceUID), "STUDY")
    assert inst.sop_class_uid == one.SOPClassUID
    assert inst.transfer_syntax_uid == one.file_meta.TransferSyntaxUID
    assert index.get(one.SOPInstanceUID) == inst


def test_restore_replaces_and_moves(tmp_path: Path) -> None:
    with Index(tmp_path / "index.sqlite") as idx:
        a, b = make_series(2, study_description="FIRST")
        assert idx.add(a, tmp_path / "a.dcm", size=10) is None
        idx.add(b, tmp_path / "b.dcm", size=10)
        # Same SOP Instance UID, new content and path: replaced, old path returned.
        a.StudyDescription = "SECOND"
        assert idx.add(a, tmp_path / "a2.dcm", size=20) == str(tmp_path / "a.dcm")
        assert idx.counts().instances == 2
        assert {r.StudyDescription for r in find(idx, "STUDY", StudyDescription="")} == {"SECOND"}
        assert idx.get(a.SOPInstanceUID).size == 20  # type: ignore[union-attr]
        # Move b to another patient/study/series: the emptied parents disappear.
        moved = make_dataset(sop_uid=b.SOPInstanceUID, patient_id="OTHER")
        idx.add(moved, tmp_path / "b.dcm", size=10)
        counts = idx.counts()
        assert (counts.patients, counts.studies, counts.series, counts.instances) == (2, 2, 2, 2)
        assert idx.remove(a.SOPInstanceUID) == str(tmp_path / "a2.dcm")
        assert idx.remove(a.SOPInstanceUID) is None
        counts = idx.counts()
        assert (counts.patients, counts.studies, counts.series, counts.instances) == (1, 1, 1, 1)


def test_missing_uids_are_refused(tmp_path: Path) -> None:
    with Index(tmp_path / "index.sqlite") as idx:
        ds = make_dataset()
        del ds.SeriesInstanceUID
        with pytest.raises(ValueError, match="SeriesInstanceUID"):
            idx.add(ds, tmp_path / "x.dcm", size=1)
        assert idx.counts().instances == 0


def test_survives_reopening(tmp_path: Path) -> None:
    corpus = make_corpus(1)
    with Index(tmp_path / "index.sqlite") as idx:
        idx.add_many([(ds, tmp_path / "x", 1, None, None) for ds in corpus.datasets])
        before = [r.to_json_dict() for r in find(idx, "SERIES", PatientName="", Modality="")]
    with Index(tmp_path / "index.sqlite") as idx:
        assert idx.counts().instances == len(corpus.datasets)
        after = [r.to_json_dict() for r in find(idx, "SERIES", PatientName="", Modality="")]
    assert before == after and len(after) == 12
    assert (tmp_path / "index.sqlite-wal").exists() or (tmp_path / "index.sqlite").exists()


def test_concurrent_writers_and_readers(tmp_path: Path) -> None:
    idx = Index(tmp_path / "index.sqlite")
    errors: list[BaseException] = []
    per_thread = 40

    def writer(n: int) -> None:
        try:
            for ds in make_series(per_thread, patient_id=f"W{n}"):
                idx.add(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm", size=1)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(30):
                list(idx.find(query("IMAGE", PatientID="W*"), "PATIENT"))
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert idx.counts().instances == 4 * per_thread
    idx.close()
    with pytest.raises(RuntimeError):
        idx.counts()


def index_fds(path: Path) -> int:
    """This process's file descriptors on the index (database, WAL, shared memory)."""
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd).startswith(str(path))
        except OSError:  # closed meanwhile
            continue
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="Linux /proc")
def test_a_burst_of_queries_leaves_no_descriptor_behind(tmp_path: Path) -> None:
    """30 threads querying at once: the same descriptors before and after (it was 3, then 39)."""
    path = tmp_path / "index.sqlite"
    idx = Index(path)
    for ds in make_series(3):
        idx.add(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm", size=1)
    baseline = index_fds(path)
    start = threading.Barrier(30)
    errors: list[BaseException] = []

    def burst() -> None:
        try:
            start.wait(10)
            for _ in range(10):
                list(idx.find(query("STUDY", NumberOfStudyRelatedInstances=""), "STUDY"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=burst) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert index_fds(path) == baseline <= 3 * Index.CONNECTIONS
    idx.close()
    assert index_fds(path) == 0


def test_index_reads_real_files(tmp_path: Path) -> None:
    """Index straight from Part 10 files read without pixel data."""
    paths = write_files(
        tmp_path / "f", make_series(3, charset="ISO_IR 192", patient_name="Ødegård^Å")
    )
    with Index(tmp_path / "index.sqlite") as idx:
        for p in paths:
            idx.add(dcmread(p, stop_before_pixels=True), p)
        (row,) = find(idx, "PATIENT", "PATIENT", PatientName="ødegård*")
        assert str(row.PatientName) == "Ødegård^Å"
        assert {f.size for f in idx.retrieve(query("PATIENT", PatientID="PAT001"), "PATIENT")} == {
            p.stat().st_size for p in paths
        }


def test_index_reads_raw_values_without_validation(tmp_path: Path) -> None:
    """Implicit VR files with slightly invalid values are indexed quietly and in full."""
    ds = make_dataset(charset="ISO_IR 100", patient_name="Gonçalves^Zé")
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    path = tmp_path / "implicit.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.AccessionNumber = "A-VERY-LONG-ACCESSION-NUMBER"  # longer than SH allows
        ds.save_as(path, enforce_file_format=True)
    with Index(tmp_path / "index.sqlite") as idx:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            idx.add(dcmread(path, stop_before_pixels=True), path)
        (row,) = find(
            idx, "SERIES", PatientName="gonçalves*", AccessionNumber="", Rows=None, PixelSpacing=""
        )
        assert row.AccessionNumber == "A-VERY-LONG-ACCESSION-NUMBER"
        assert row.Rows == 16
        assert [float(v) for v in row.PixelSpacing] == [0.5, 0.5]
        assert idx.get(ds.SOPInstanceUID).transfer_syntax_uid == ImplicitVRLittleEndian  # type: ignore[union-attr]
