"""The Query builder: encodings (PS3.4 C.2.2.2), validation, round trips, retrieve identifiers."""

from __future__ import annotations

import copy
import pickle
import struct
import warnings
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from io import BytesIO

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR, keyword_dict
from pydicom.dataset import Dataset
from pynetdicom import sop_class as sc
from pynetdicom.dsutils import decode, encode

from aiodicomnet.errors import QueryError
from aiodicomnet.query import (
    DEFAULT_RETURN_KEYS,
    UNIQUE_KEYS,
    DateRange,
    DateTimeRange,
    Query,
    SequenceMatch,
    Single,
    TimeRange,
    UIDList,
    Universal,
    Wildcard,
    as_identifier,
    sop_class,
)

CT = "1.2.840.10008.5.1.4.1.1.2"

# pydicom warns when it decodes what the tests send on purpose (UIDs with leading zeros,
# wildcard patterns longer than the VR allows for a value).
pytestmark = [
    pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning"),
    pytest.mark.filterwarnings("ignore:The value length:UserWarning"),
]


def wire(ds: Dataset) -> bytes:
    """The identifier as pynetdicom sends it (implicit VR little endian)."""
    data = encode(ds, True, True)
    assert data is not None
    return data


def raw_values(ds: Dataset) -> dict[str, bytes]:
    """Keyword -> the undecoded value bytes of each top-level element, padding removed."""
    back = decode(BytesIO(wire(ds)), True, True)
    out = {}
    for tag in list(back.keys()):
        raw = back.get_item(tag)
        assert raw is not None
        out[ds[tag].keyword] = raw.value.rstrip(b" \x00") if isinstance(raw.value, bytes) else b""
    return out


def round_trip(ds: Dataset) -> Dataset:
    return decode(BytesIO(wire(ds)), True, True)


# -- construction ------------------------------------------------------------------------------


def test_levels_and_default_models() -> None:
    assert (Query.patient().level, Query.patient().model) == ("PATIENT", "PATIENT_ROOT")
    assert (Query.study().level, Query.study().model) == ("STUDY", "STUDY_ROOT")
    assert (Query.series().level, Query.series().model) == ("SERIES", "STUDY_ROOT")
    assert (Query.image().level, Query.image().model) == ("IMAGE", "STUDY_ROOT")
    assert Query.study(model="PATIENT_ROOT").model == "PATIENT_ROOT"
    assert Query.image(model="patient_root").model == "PATIENT_ROOT"
    assert Query("series").level == "SERIES"
    assert [Query(level).unique_key for level in UNIQUE_KEYS] == [
        "PatientID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
    ]


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: Query("INSTANCE"), "query level 'INSTANCE'"),
        (lambda: Query(""), "query level"),
        (lambda: Query.study(model="MODALITY_WORKLIST"), "'MODALITY_WORKLIST'"),
        (lambda: Query.patient(model="STUDY_ROOT"), "no PATIENT level"),
        (lambda: Query("PATIENT", model="STUDY_ROOT"), "no PATIENT level"),
    ],
)
def test_bad_level_or_model(make: object, fragment: str) -> None:
    with pytest.raises(QueryError, match=fragment):
        make()  # type: ignore[operator]


def test_query_retrieve_level_and_defaults_in_the_dataset() -> None:
    for level, keys in DEFAULT_RETURN_KEYS.items():
        ds = Query(level).to_dataset()
        assert ds.QueryRetrieveLevel == level
        assert sorted(elem.keyword for elem in ds) == sorted([*keys, "QueryRetrieveLevel"])
        assert all(ds[keyword].is_empty for keyword in keys)


def test_defaults_false_sends_only_the_given_keys() -> None:
    ds = Query.study(PatientID="123", defaults=False).to_dataset()
    assert [elem.keyword for elem in ds] == ["QueryRetrieveLevel", "PatientID"]


def test_a_given_key_wins_over_its_default() -> None:
    ds = Query.study(PatientID="123", StudyDate="20240101").to_dataset()
    assert ds.PatientID == "123"
    assert ds.StudyDate == "20240101"
    assert ds["StudyDescription"].is_empty


def test_study_browser_example() -> None:
    query = Query.study(PatientID="123", StudyDate=DateRange("20240101", None))
    raw = raw_values(query.to_dataset())
    assert raw["QueryRetrieveLevel"] == b"STUDY"
    assert raw["PatientID"] == b"123"
    assert raw["StudyDate"] == b"20240101-"
    assert raw["PatientName"] == b""
    assert raw["NumberOfStudyRelatedInstances"] == b""


# -- encodings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "value", "expected"),
    [
        # universal matching: zero length
        ("PatientName", None, b""),
        ("PatientName", "", b""),
        ("PatientName", Universal(), b""),
        ("StudyDate", None, b""),
        # single value matching
        ("PatientID", "123", b"123"),
        ("PatientID", 123, b"123"),
        ("PatientID", Single("A B"), b"A B"),
        ("PatientName", "Doe^John", b"Doe^John"),
        ("StudyInstanceUID", "1.2.3", b"1.2.3"),
        ("StudyInstanceUID", ["1.2.3"], b"1.2.3"),
        ("StudyDate", "20240115", b"20240115"),
        ("StudyDate", date(2024, 1, 15), b"20240115"),
        ("StudyTime", time(8, 5, 3), b"080503"),
        ("StudyTime", time(8, 5, 3, 120), b"080503.000120"),
        ("StudyTime", "1030", b"1030"),
        ("AcquisitionDateTime", datetime(2024, 1, 15, 8, 30), b"20240115083000"),
        (
            "AcquisitionDateTime",
            datetime(2024, 1, 15, 8, 30, tzinfo=timezone(-timedelta(hours=5))),
            b"20240115083000-0500",
        ),
        ("AcquisitionDateTime", "20240115083000-0500", b"20240115083000-0500"),
        ("AcquisitionDateTime", "20161231235960", b"20161231235960"),  # leap second
        ("StudyTime", "235960", b"235960"),
        ("SeriesNumber", 7, b"7"),
        ("SliceThickness", 1.25, b"1.25"),
        ("SliceThickness", "2.5", b"2.5"),
        ("PatientAge", "045Y", b"045Y"),
        ("Modality", "CT", b"CT"),
        ("PatientID", "trailing  ", b"trailing"),
        # wildcard matching
        ("PatientName", "Doe*", b"Doe*"),
        ("PatientName", "D?e^*", b"D?e^*"),
        ("PatientName", Wildcard("*"), b"*"),
        ("Modality", "C?", b"C?"),
        ("SeriesDescription", "*AX*", b"*AX*"),
        # list of UID matching
        ("StudyInstanceUID", ["1.2.3", "1.2.4"], b"1.2.3\\1.2.4"),
        ("StudyInstanceUID", ("1.2.3", "1.2.4", "1.2.5"), b"1.2.3\\1.2.4\\1.2.5"),
        ("SOPInstanceUID", UIDList("1.2", "1.3"), b"1.2\\1.3"),
        # range matching
        ("StudyDate", DateRange("20240101", "20240131"), b"20240101-20240131"),
        ("StudyDate", DateRange("20240101", None), b"20240101-"),
        ("StudyDate", DateRange(None, "20240131"), b"-20240131"),
        ("StudyDate", DateRange(date(2024, 1, 1), date(2024, 1, 1)), b"20240101-20240101"),
        ("StudyDate", "20240101-20240131", b"20240101-20240131"),
        ("StudyDate", "-20240131", b"-20240131"),
        ("StudyTime", TimeRange("0800", "1200"), b"0800-1200"),
        ("StudyTime", TimeRange(time(8), None), b"080000-"),
        ("StudyTime", "-120000.5", b"-120000.5"),
        ("AcquisitionDateTime", DateTimeRange("2024", "20250101"), b"2024-20250101"),
        ("AcquisitionDateTime", DateTimeRange(None, datetime(2024, 1, 1)), b"-20240101000000"),
        ("AcquisitionDateTime", "20240101-20240102", b"20240101-20240102"),
        ("AcquisitionDateTime", DateRange("20240101", None), b"20240101-"),
        ("SeriesNumber", " 12", b"12"),
        ("Modality", " CT", b"CT"),
    ],
)
def test_value_encoding(keyword: str, value: object, expected: bytes) -> None:
    ds = Query.study(defaults=False, **{keyword: value}).to_dataset()
    assert raw_values(ds)[keyword] == expected


def test_binary_numbers_are_sent_binary() -> None:
    ds = Query.image(Rows=512, Columns="256", defaults=False).to_dataset()
    raw = raw_values(ds)
    assert raw["Rows"] == struct.pack("<H", 512)
    assert raw["Columns"] == struct.pack("<H", 256)


def test_sequence_matching_sends_one_item() -> None:
    query = Query.image(
        ReferencedSOPSequence=[{"ReferencedSOPClassUID": CT, "ReferencedSOPInstanceUID": None}],
        defaults=False,
    )
    back = round_trip(query.to_dataset())
    items = back.ReferencedSOPSequence
    assert len(items) == 1
    assert items[0].ReferencedSOPClassUID == CT
    assert items[0]["ReferencedSOPInstanceUID"].is_empty


@pytest.mark.parametrize(
    "value",
    [
        {"CodeValue": "T-A0100", "CodingSchemeDesignator": "SRT"},
        [{"CodeValue": "T-A0100", "CodingSchemeDesignator": "SRT"}],
        SequenceMatch(CodeValue="T-A0100", CodingSchemeDesignator="SRT"),
        SequenceMatch({"CodeValue": "T-A0100"}, CodingSchemeDesignator="SRT"),
    ],
)
def test_sequence_item_forms_are_equivalent(value: object) -> None:
    item = Dataset()
    item.CodeValue = "T-A0100"
    item.CodingSchemeDesignator = "SRT"
    expected = Query.series(AnatomicRegionSequence=[item])
    assert Query.series(AnatomicRegionSequence=value) == expected


def test_empty_sequence_is_universal() -> None:
    for value in (None, [], {}, SequenceMatch()):
        query = Query.series(AnatomicRegionSequence=value, defaults=False)
        assert query.keys["AnatomicRegionSequence"] == Universal()
        ds = query.to_dataset()
        assert ds.AnatomicRegionSequence == []


def test_nested_wildcards_and_non_ascii_in_sequences() -> None:
    query = Query.series(
        RequestAttributesSequence={"RequestedProcedureDescription": "Schädel*"}, defaults=False
    )
    ds = query.to_dataset()
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert "Schädel*".encode() in wire(ds)


def test_non_ascii_declares_utf8() -> None:
    ds = Query.patient(PatientName="Müller^Jürgen", defaults=False).to_dataset()
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert "Müller^Jürgen".encode() in wire(ds)
    assert round_trip(ds).PatientName == "Müller^Jürgen"


def test_ascii_declares_no_character_set() -> None:
    ds = Query.patient(PatientName="Muller*").to_dataset()
    assert "SpecificCharacterSet" not in ds


def test_explicit_character_set_is_kept() -> None:
    query = Query.patient(PatientName="Müller", SpecificCharacterSet="ISO_IR 100")
    ds = query.to_dataset()
    assert ds.SpecificCharacterSet == "ISO_IR 100"
    assert "Müller".encode("latin-1") in wire(ds)


def test_no_pydicom_warnings_for_wildcards_and_ranges() -> None:
    query = Query.study(
        Modality="C*",
        StudyDate="20240101-",
        StudyTime="08-",
        PatientName="*" * 80,
        StudyInstanceUID=["1.2", "1.3"],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wire(query.to_dataset())


# -- plain values choose the matching type -----------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "value", "matcher"),
    [
        ("PatientID", None, Universal()),
        ("PatientID", "   ", Universal()),
        ("PatientID", "12", Single("12")),
        ("PatientID", "1*", Wildcard("1*")),
        ("PatientID", Wildcard("12"), Single("12")),
        ("SeriesNumber", 3, Single("3")),
        ("SeriesNumber", 3.0, Single("3")),
        ("Rows", "512", Single(512)),
        ("StudyInstanceUID", ["1.2", "1.3"], UIDList("1.2", "1.3")),
        ("StudyInstanceUID", UIDList("1.2"), Single("1.2")),
        ("StudyDate", "20240101-", DateRange("20240101", None)),
        ("StudyDate", date(2024, 2, 29), Single("20240229")),
        ("StudyTime", "-0930", TimeRange(None, "0930")),
        ("AcquisitionDateTime", "2024-", DateTimeRange("2024", None)),
        ("AcquisitionDateTime", "20240101+0100-", DateTimeRange("20240101+0100", None)),
        ("AcquisitionDateTime", "20240101-0100", Single("20240101-0100")),
        ("AcquisitionDateTime", DateRange("20240101"), DateTimeRange("20240101")),
    ],
)
def test_plain_values_become_matchers(keyword: str, value: object, matcher: object) -> None:
    assert Query.study(**{keyword: value}).keys[keyword] == matcher


def test_keys_are_kept_in_tag_order() -> None:
    query = Query.study(PatientID="1", StudyDate="20240101", Modality="CT", defaults=False)
    assert list(query.keys) == ["StudyDate", "Modality", "PatientID"]


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "fragment"),
    [
        ({"PatientNmae": "x"}, "'PatientNmae' is not a DICOM"),
        ({"CommandField": 1}, "'CommandField' is not a DICOM"),
        ({"TransferSyntaxUID": "1.2"}, "'TransferSyntaxUID' is not a DICOM"),
        ({"Item": None}, "'Item' is not a DICOM"),
        ({"": "x"}, "'' is not a DICOM"),
        ({"QueryRetrieveLevel": "STUDY"}, "set by the query level"),
        ({"SpecificCharacterSet": "0"}, "SpecificCharacterSet must be one term"),
        ({"SpecificCharacterSet": None}, "SpecificCharacterSet must be one term"),
        ({"SpecificCharacterSet": "ISO 2022 IR 87"}, "SpecificCharacterSet must be one term"),
        ({"SpecificCharacterSet": "ISO_IR 100", "PatientName": "山田"}, "cannot be encoded"),
        # malformed dates, times, date-times
        ({"StudyDate": "2024-01-01"}, "StudyDate \\(DA\\)"),
        ({"StudyDate": "2024.01.01"}, "not a date YYYYMMDD"),
        ({"StudyDate": "20240230"}, "not a date YYYYMMDD"),
        ({"StudyDate": "240101"}, "not a date YYYYMMDD"),
        ({"StudyDate": "٢٠٢٤٠١٠١"}, "only the default \\(ASCII\\) repertoire"),
        ({"StudyDate": "20240101-20240102-20240103"}, "not a range"),
        ({"StudyDate": "-"}, "needs a start or an end"),
        ({"StudyDate": "20240201-20240101"}, "after its end"),
        ({"StudyTime": "2400"}, "not a time"),
        ({"StudyTime": "10:30"}, "not a time"),
        ({"StudyTime": "1030.5"}, "not a time"),
        ({"StudyTime": "1200-0800"}, "after its end"),
        ({"AcquisitionDateTime": "20241301"}, "not a date-time"),
        ({"AcquisitionDateTime": "20240101+1500"}, "not a date-time"),
        ({"AcquisitionDateTime": "20240102-20240101"}, "after its end"),
        # wildcards where the VR forbids them
        ({"StudyInstanceUID": "1.2.*"}, "wildcards are not allowed on VR UI"),
        ({"StudyDate": "2024*"}, "wildcards are not allowed on VR DA"),
        ({"StudyTime": "10?0"}, "wildcards are not allowed on VR TM"),
        ({"SeriesNumber": "1*"}, "wildcards are not allowed on VR IS"),
        ({"PatientAge": "04?Y"}, "wildcards are not allowed on VR AS"),
        ({"SeriesNumber": Wildcard("1?")}, "wildcards are not allowed on VR IS"),
        # ranges where the VR forbids them
        ({"PatientID": DateRange("20240101")}, "DateRange needs a DA/DT key"),
        ({"StudyDate": TimeRange("10")}, "TimeRange needs a TM key"),
        ({"StudyDate": DateTimeRange("2024")}, "DateTimeRange needs a DT key"),
        ({"PatientID": "1-2"}, None),  # not an error: single value
        # lists where the VR forbids them
        ({"PatientID": ["1", "2"]}, "only allowed for UID keys"),
        ({"ModalitiesInStudy": ["CT", "MR"]}, "only allowed for UID keys"),
        ({"Modality": UIDList("1.2", "1.3")}, "only allowed for UID keys"),
        ({"StudyInstanceUID": []}, "at least one UID"),
        ({"StudyInstanceUID": ["1.2", "x"]}, "'x' is not a UID"),
        ({"StudyInstanceUID": "1..2"}, "not a UID"),
        ({"StudyInstanceUID": "1." + "2" * 63}, "longer than the 64"),
        # values a VR cannot hold
        ({"Modality": "CT\\MR"}, "backslash"),
        ({"PatientID": "A\x00B"}, "control character"),
        ({"Modality": "ÇT"}, "ASCII"),
        ({"PatientID": "x" * 65}, "longer than the 64"),
        ({"Modality": "X" * 17}, "longer than the 16"),
        ({"SeriesNumber": "1.5"}, "not an integer string"),
        ({"SeriesNumber": 1.5}, "not an integer string"),
        ({"SliceThickness": "thin"}, "not a decimal string"),
        ({"PatientAge": "45"}, "not an age string"),
        ({"Rows": -1}, "outside 0..65535"),
        ({"Rows": 70000}, "outside 0..65535"),
        ({"Rows": 1.5}, "not an integer"),
        ({"Rows": "x"}, "not a number"),
        ({"PixelData": None}, "PixelData cannot be a query key"),
        ({"RedPaletteColorLookupTableData": b"\x00\x01"}, "only universal matching"),
        ({"PatientID": True}, "unsupported value True"),
        ({"PatientID": b"123"}, "unsupported value"),
        ({"PatientID": {"CodeValue": "1"}}, "not a sequence"),
        ({"SliceThickness": float("nan")}, "not a finite number"),
        # sequences
        ({"AnatomicRegionSequence": "T-A0100"}, "takes a dict or Dataset item"),
        ({"AnatomicRegionSequence": [{}, {}]}, "one item, not 2"),
        ({"AnatomicRegionSequence": {"CodeValue": "A\\B"}}, "AnatomicRegionSequence \\(SQ\\)"),
        ({"AnatomicRegionSequence": {"Bogus": "1"}}, "'Bogus' is not a DICOM"),
        ({"AnatomicRegionSequence": {"SpecificCharacterSet": "ISO_IR 192"}}, "top of the"),
    ],
)
def test_invalid_keys_raise_query_error(keys: dict[str, object], fragment: str | None) -> None:
    if fragment is None:
        Query.study(**keys)
        return
    with pytest.raises(QueryError, match=fragment):
        Query.study(**keys)


def test_error_names_the_key_and_vr() -> None:
    with pytest.raises(QueryError) as info:
        Query.study(StudyDate="yesterday")
    assert str(info.value).startswith("StudyDate (DA): ")
    assert "'yesterday'" in str(info.value)


def test_query_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Query.study(NoSuchKeyword=1)


# -- matching helpers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: UIDList(),
        lambda: UIDList(""),
        lambda: UIDList(".1"),
        lambda: UIDList("1."),
        lambda: UIDList("1.a"),
        lambda: UIDList("1.2", 3),
        lambda: UIDList("1." + "2" * 63),
        lambda: DateRange(),
        lambda: DateRange(None, None),
        lambda: DateRange("20240102", "20240101"),
        lambda: DateRange(datetime(2024, 1, 1), None),
        lambda: DateRange(20240101, None),
        lambda: TimeRange("13", "12"),
        lambda: TimeRange(time(8, tzinfo=timezone.utc), None),
        lambda: TimeRange("25", None),
        lambda: DateTimeRange("20240102", "20240101"),
        lambda: DateTimeRange("2024-01-01", None),
        lambda: Single(""),
        lambda: Single(None),
        lambda: Single(True),
        lambda: Single(float("inf")),
        lambda: Single(time(1, tzinfo=timezone.utc)),
        lambda: Single("A*"),
        lambda: Wildcard(""),
        lambda: SequenceMatch(42),
    ],
)
def test_helpers_validate_on_construction(make: object) -> None:
    with pytest.raises(QueryError):
        make()  # type: ignore[operator]


def test_range_bounds_and_text() -> None:
    rng = DateRange(date(2024, 1, 1), "20240131")
    assert (rng.start, rng.end, rng.text) == ("20240101", "20240131", "20240101-20240131")
    assert DateRange(end="20240131").text == "-20240131"
    assert TimeRange(time(23, 59, 59, 999999)).text == "235959.999999-"
    assert TimeRange("08", "0800").text == "08-0800"
    # Bounds with and without a UTC offset are not comparable, so not rejected.
    assert DateTimeRange("20240102+0100", "20240101").end == "20240101"
    # Offsets are taken into account when both bounds have one.
    assert DateTimeRange("202401010100+0200", "202401010000+0000").start == "202401010100+0200"
    with pytest.raises(QueryError, match="after its end"):
        DateTimeRange("202401010000-0200", "202401010100+0000")


def test_helpers_compare_and_hash_by_value() -> None:
    assert DateRange("20240101") == DateRange(date(2024, 1, 1), None)
    assert DateRange("20240101") != DateTimeRange("20240101")
    assert len({UIDList("1.2", "1.3"), UIDList("1.2", "1.3"), Universal(), Universal()}) == 2
    assert Single("A ") == Single("A")


# -- immutability, equality, derived queries ---------------------------------------------------


def test_query_is_immutable() -> None:
    query = Query.study(PatientID="1")
    with pytest.raises(AttributeError):
        query.level = "SERIES"  # type: ignore[misc]
    with pytest.raises(TypeError):
        query.keys["PatientID"] = Single("2")  # type: ignore[index]


def test_query_pickles_and_copies() -> None:
    query = Query.series(
        StudyInstanceUID=["1.2", "1.3"],
        AnatomicRegionSequence={"CodeValue": "T-A0100"},
        SeriesDate=DateRange("20240101"),
        model="PATIENT_ROOT",
        defaults=False,
    )
    assert pickle.loads(pickle.dumps(query)) == query
    assert copy.deepcopy(query) == query
    assert copy.copy(query) == query


def test_with_keys_and_returning_make_new_queries() -> None:
    base = Query.study(PatientID="1", defaults=False)
    more = base.with_keys(StudyDate="20240101-", PatientID="2")
    assert base.keys == {"PatientID": Single("1")}
    assert more.keys == {"StudyDate": DateRange("20240101"), "PatientID": Single("2")}
    returned = more.returning("StudyDescription", "PatientID", "InstitutionName")
    assert returned.keys["StudyDescription"] == Universal()
    assert returned.keys["PatientID"] == Single("2")  # a matching key is already returned
    assert returned.keys["InstitutionName"] == Universal()
    assert (returned.model, returned.defaults) == (base.model, base.defaults)
    with pytest.raises(QueryError, match="'Nonsense'"):
        base.returning("Nonsense")


def test_equality_and_hash() -> None:
    a = Query.study(PatientID="1", StudyDate=DateRange("20240101"))
    b = Query("STUDY", {"StudyDate": "20240101-", "PatientID": 1}, model="STUDY_ROOT")
    assert a == b
    assert hash(a) == hash(b)
    assert a != Query.study(PatientID="1", StudyDate=DateRange("20240101"), defaults=False)
    assert a != Query.study(PatientID="1", model="PATIENT_ROOT")
    assert a != "not a query"
    assert eval(repr(a), vars(__import__("aiodicomnet.query", fromlist=["*"]))) == a


# -- from_dataset ------------------------------------------------------------------------------


def test_from_dataset() -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = ["1.2", "1.3"]
    ds.Modality = "MR"
    ds.SeriesDescription = "*T1*"
    ds.SeriesDate = "20240101-20240201"
    ds.SeriesNumber = None
    ds.SpecificCharacterSet = "ISO_IR 192"
    query = Query.from_dataset(ds)
    assert query.level == "SERIES"
    assert query.model == "STUDY_ROOT"
    assert not query.defaults
    assert dict(query.keys) == {
        "SeriesDate": DateRange("20240101", "20240201"),
        "Modality": Single("MR"),
        "SeriesDescription": Wildcard("*T1*"),
        "StudyInstanceUID": UIDList("1.2", "1.3"),
        "SeriesNumber": Universal(),
    }
    assert Query.from_dataset(ds, model="PATIENT_ROOT").model == "PATIENT_ROOT"


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        (lambda ds: None, "no QueryRetrieveLevel"),
        (lambda ds: setattr(ds, "QueryRetrieveLevel", ""), "no QueryRetrieveLevel"),
        (lambda ds: setattr(ds, "QueryRetrieveLevel", "FRAME"), "'FRAME'"),
        (
            lambda ds: (
                setattr(ds, "QueryRetrieveLevel", "STUDY"),
                ds.add_new(0x00091001, "LO", "x"),
            ),
            "(0009,1001)",
        ),
        (
            lambda ds: (
                setattr(ds, "QueryRetrieveLevel", "STUDY"),
                setattr(ds, "ModalitiesInStudy", ["CT", "MR"]),
            ),
            "only allowed for UID keys",
        ),
    ],
)
def test_from_dataset_rejects(setup: object, fragment: str) -> None:
    ds = Dataset()
    setup(ds)  # type: ignore[operator]
    with pytest.raises(QueryError, match=fragment.replace("(", "\\(").replace(")", "\\)")):
        Query.from_dataset(ds)


def test_from_dataset_rejects_non_datasets() -> None:
    with pytest.raises(QueryError):
        Query.from_dataset({"QueryRetrieveLevel": "STUDY"})  # type: ignore[arg-type]


def test_round_trip_over_the_wire() -> None:
    query = Query.series(
        StudyInstanceUID=["1.2.3", "1.2.4"],
        PatientName="Gómez*",
        SeriesDate=DateRange("20240101", None),
        SeriesTime="0800-1000",
        SeriesNumber=4,
        Rows=512,
        SliceThickness="1.25",
        AnatomicRegionSequence={"CodeValue": "T-A0100", "CodeMeaning": None},
        defaults=False,
    )
    assert Query.from_dataset(round_trip(query.to_dataset())) == query


def test_round_trip_with_defaults() -> None:
    query = Query.study(PatientID="1")
    ds = query.to_dataset()
    back = Query.from_dataset(ds)
    assert back.to_dataset() == ds
    assert back == Query.study(
        defaults=False, **{k: None for k in DEFAULT_RETURN_KEYS["STUDY"]}
    ).with_keys(PatientID="1")


# -- SOP classes -------------------------------------------------------------------------------


def test_sop_classes() -> None:
    expected = {
        ("PATIENT_ROOT", "find"): sc.PatientRootQueryRetrieveInformationModelFind,
        ("PATIENT_ROOT", "move"): sc.PatientRootQueryRetrieveInformationModelMove,
        ("PATIENT_ROOT", "get"): sc.PatientRootQueryRetrieveInformationModelGet,
        ("STUDY_ROOT", "find"): sc.StudyRootQueryRetrieveInformationModelFind,
        ("STUDY_ROOT", "move"): sc.StudyRootQueryRetrieveInformationModelMove,
        ("STUDY_ROOT", "get"): sc.StudyRootQueryRetrieveInformationModelGet,
    }
    for (model, service), uid in expected.items():
        assert sop_class(model, service) == uid
        assert Query.image(model=model).sop_class(service) == uid
    assert sop_class("STUDY_ROOT", "find") == "1.2.840.10008.5.1.4.1.2.2.1"
    for model, service in [("STUDY_ROOT", "store"), ("WORKLIST", "find")]:
        with pytest.raises(QueryError):
            sop_class(model, service)


# -- retrieve identifiers ----------------------------------------------------------------------


def test_for_retrieve_keeps_only_unique_keys() -> None:
    query = Query.series(
        StudyInstanceUID="1.2", SeriesInstanceUID="1.2.3", Modality="CT", PatientID="P1"
    )
    retrieve = query.for_retrieve()
    assert retrieve == Query.series(
        StudyInstanceUID="1.2", SeriesInstanceUID="1.2.3", defaults=False
    )
    assert sorted(elem.keyword for elem in retrieve.to_dataset()) == [
        "QueryRetrieveLevel",
        "SeriesInstanceUID",
        "StudyInstanceUID",
    ]


def test_for_retrieve_in_patient_root_keeps_patient_id() -> None:
    query = Query.study(PatientID="P1", StudyInstanceUID="1.2", model="PATIENT_ROOT")
    assert query.for_retrieve().keys == {
        "PatientID": Single("P1"),
        "StudyInstanceUID": Single("1.2"),
    }
    assert Query.patient(PatientID="P1", PatientName="X*").for_retrieve().keys == {
        "PatientID": Single("P1")
    }


def test_for_retrieve_accepts_a_uid_list_at_its_level() -> None:
    query = Query.image(SOPInstanceUID=["1.1", "1.2"])
    assert query.for_retrieve().keys == {"SOPInstanceUID": UIDList("1.1", "1.2")}


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        (Query.study(PatientID="1"), "needs StudyInstanceUID"),
        (Query.study(StudyInstanceUID=None), "needs StudyInstanceUID"),
        (Query.patient(PatientName="X"), "needs PatientID"),
        (Query.patient(PatientID="P*"), "PatientID must be a single value"),
        (
            Query.series(SeriesInstanceUID="1.2", StudyInstanceUID=["1.3", "1.4"]),
            "StudyInstanceUID must be a single value for",
        ),
        (Query.image(SeriesInstanceUID="1.2"), "needs SOPInstanceUID"),
    ],
)
def test_for_retrieve_rejects(query: Query, fragment: str) -> None:
    with pytest.raises(QueryError, match=fragment):
        query.for_retrieve()


def test_hierarchical_retrieve_needs_every_higher_unique_key() -> None:
    query = Query.image(SeriesInstanceUID="1.2", SOPInstanceUID="1.2.3")
    assert query.for_retrieve().keys == {
        "SOPInstanceUID": Single("1.2.3"),
        "SeriesInstanceUID": Single("1.2"),
    }
    with pytest.raises(QueryError, match="needs StudyInstanceUID"):
        query.for_retrieve(hierarchical=True)
    full = query.with_keys(StudyInstanceUID="1")
    assert len(full.for_retrieve(hierarchical=True).keys) == 3
    with pytest.raises(QueryError, match="needs PatientID"):
        Query.study(StudyInstanceUID="1", model="PATIENT_ROOT").for_retrieve(hierarchical=True)


# -- as_identifier -----------------------------------------------------------------------------


def test_as_identifier_for_a_query() -> None:
    query = Query.series(StudyInstanceUID="1.2", SeriesInstanceUID="1.2.3", Modality="CT")
    ds, model = as_identifier(query)
    assert (ds, model) == (query.to_dataset(), "STUDY_ROOT")
    ds, model = as_identifier(query, service="move")
    assert ds == query.for_retrieve().to_dataset()
    ds, model = as_identifier(query, "PATIENT_ROOT", service="get")
    assert model == "PATIENT_ROOT"
    assert "Modality" not in ds
    with pytest.raises(QueryError, match="no PATIENT level"):
        as_identifier(Query.patient(PatientID="1"), "STUDY_ROOT")


def test_as_identifier_for_a_raw_dataset() -> None:
    raw = Dataset()
    raw.QueryRetrieveLevel = "PATIENT"
    raw.PatientID = "P1"
    raw.add_new(0x00091001, "LO", "private keys pass through")
    ds, model = as_identifier(raw, service="move")
    assert model == "PATIENT_ROOT"
    assert ds == raw
    assert ds is not raw
    raw.PatientID = "changed"
    assert ds.PatientID == "P1"
    raw.QueryRetrieveLevel = "STUDY"
    assert as_identifier(raw)[1] == "STUDY_ROOT"
    assert as_identifier(raw, "PATIENT_ROOT")[1] == "PATIENT_ROOT"


@pytest.mark.parametrize(
    ("level", "keys", "service", "fragment"),
    [
        (None, {}, "find", "no QueryRetrieveLevel"),
        ("", {}, "find", "no QueryRetrieveLevel"),
        ("FRAME", {}, "find", "'FRAME'"),
        ("study", {}, "find", "upper case"),
        ("STUDY", {"PatientID": "1"}, "move", "needs a value for StudyInstanceUID"),
        ("SERIES", {"SeriesInstanceUID": ""}, "get", "needs a value for SeriesInstanceUID"),
        ("STUDY", {}, "store", "'store'"),
    ],
)
def test_as_identifier_rejects_raw_datasets(
    level: str | None, keys: dict[str, str], service: str, fragment: str
) -> None:
    raw = Dataset()
    if level is not None:
        raw.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(raw, keyword, value)
    with pytest.raises(QueryError, match=fragment):
        as_identifier(raw, service=service)


def test_as_identifier_rejects_other_types() -> None:
    with pytest.raises(QueryError, match="Query or a pydicom Dataset"):
        as_identifier({"QueryRetrieveLevel": "STUDY"})  # type: ignore[arg-type]


# -- properties --------------------------------------------------------------------------------

dates = st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31))
times = st.times()


@given(dates, dates)
def test_date_ranges_encode_as_ps34_says(a: date, b: date) -> None:
    first, last = min(a, b), max(a, b)
    start, end = (f"{d.year:04d}{d.month:02d}{d.day:02d}" for d in (first, last))
    text = f"{start}-{end}"
    query = Query.study(StudyDate=DateRange(first, last), defaults=False)
    assert raw_values(query.to_dataset())["StudyDate"] == text.encode()
    assert Query.study(StudyDate=text, defaults=False) == query
    open_start = Query.study(StudyDate=DateRange(None, last), defaults=False)
    assert raw_values(open_start.to_dataset())["StudyDate"] == f"-{end}".encode()
    if a != b:
        with pytest.raises(QueryError, match="after its end"):
            DateRange(last, first)


@given(times, times)
def test_time_ranges_encode_as_ps34_says(a: time, b: time) -> None:
    first, last = min(a, b), max(a, b)
    rng = TimeRange(first, last)
    start, end = rng.text.split("-")
    for text, value in ((start, first), (end, last)):
        assert text.startswith(f"{value.hour:02d}{value.minute:02d}{value.second:02d}")
        assert value.microsecond == int((text[7:] or "0").ljust(6, "0"))
    assert Query.study(StudyTime=rng.text).keys["StudyTime"] == rng
    if a != b:
        with pytest.raises(QueryError):
            TimeRange(last, first)


@given(st.datetimes(timezones=st.none()), st.datetimes(timezones=st.none()))
def test_datetime_ranges_follow_their_bounds(a: datetime, b: datetime) -> None:
    first, last = min(a, b), max(a, b)
    rng = DateTimeRange(first, last)
    assert Query.study(AcquisitionDateTime=rng.text).keys["AcquisitionDateTime"] == rng
    if a != b:
        with pytest.raises(QueryError):
            DateTimeRange(last, first)


uid_component = st.one_of(st.just("0"), st.integers(1, 10**12).map(str))
uids = st.lists(uid_component, min_size=2, max_size=8).map(".".join).filter(lambda u: len(u) <= 64)


@given(st.lists(uids, min_size=1, max_size=6))
def test_uid_lists_are_backslash_joined(values: list[str]) -> None:
    query = Query.image(SOPInstanceUID=values, defaults=False)
    assert raw_values(query.to_dataset())["SOPInstanceUID"] == "\\".join(values).encode()
    assert Query.from_dataset(round_trip(query.to_dataset())) == query


# Keywords of every kind of VR, plus some that are not keywords at all.
KEYWORDS = sorted(
    {
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
        "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "StudyDate", "StudyTime",
        "AcquisitionDateTime", "Modality", "ModalitiesInStudy", "SeriesNumber", "SliceThickness",
        "Rows", "SmallestImagePixelValue", "RealWorldValueFirstValueMapped",
        "ReferencedFrameNumber",
        "PixelData", "FrameIncrementPointer", "StudyDescription", "AccessionNumber",
        "RetrieveAETitle", "AdditionalPatientHistory", "ImageComments", "RetrieveURL",
        "TextValue", "ReferencedSOPSequence", "AnatomicRegionSequence", "CodeValue",
        "SpecificCharacterSet", "RecommendedDisplayFrameRateInFloat", "FloatPixelPaddingValue",
        "NotAKeyword", "patientname", "QueryRetrieveLevel", "CommandField",
    }
)  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.text(max_size=20),
    st.text(alphabet="0123456789.-*?^ \\", max_size=20),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.binary(max_size=8),
    dates,
    times,
    st.datetimes(),
    uids,
    st.sampled_from(["ISO_IR 192", "ISO_IR 100", "GB18030", "Müller^*", "山田^太郎"]),
)


def _or_none(make: Callable[..., object]) -> Callable[..., object]:
    """``make``, or None where it refuses its arguments (that refusal is tested elsewhere)."""

    def build(*args: object) -> object:
        try:
            return make(*args)
        except QueryError:
            return None

    return build


helpers = st.one_of(
    st.builds(Universal),
    st.builds(_or_none(Single), st.one_of(st.text(max_size=12), st.integers(), dates)),
    st.builds(_or_none(Wildcard), st.text(max_size=12)),
    st.lists(uids, max_size=3).map(lambda xs: _or_none(UIDList)(*xs)),
    st.builds(_or_none(DateRange), st.one_of(st.none(), dates), st.one_of(st.none(), dates)),
    st.builds(_or_none(TimeRange), st.one_of(st.none(), times), st.one_of(st.none(), times)),
    st.builds(
        _or_none(DateTimeRange),
        st.one_of(st.none(), st.datetimes()),
        st.one_of(st.none(), dates),
    ),
)


def _values(depth: int) -> st.SearchStrategy[object]:
    leaf: st.SearchStrategy[object] = st.one_of(scalars, st.lists(scalars, max_size=3))
    if depth == 0:
        return leaf
    items = st.dictionaries(st.sampled_from(KEYWORDS), _values(depth - 1), max_size=3)
    return st.one_of(leaf, items, st.lists(items, max_size=2))


key_values = st.dictionaries(st.sampled_from(KEYWORDS), st.one_of(_values(2), helpers), max_size=5)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["PATIENT", "STUDY", "SERIES", "IMAGE", "patient", "FRAME"]),
    st.sampled_from([None, "PATIENT_ROOT", "STUDY_ROOT", "WORKLIST"]),
    key_values,
    st.booleans(),
)
def test_anything_either_builds_a_sendable_query_or_raises_query_error(
    level: str, model: str | None, keys: dict[str, object], defaults: bool
) -> None:
    try:
        query = Query(level, keys, model=model, defaults=defaults)
    except QueryError:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = query.to_dataset()
        back = round_trip(ds)
    # Whatever builds goes over the wire and comes back as the same query
    # (less its SpecificCharacterSet, which from_dataset leaves to to_dataset).
    assert Query.from_dataset(back, model=query.model) == Query.from_dataset(ds, model=query.model)
    if not defaults:
        assert Query.from_dataset(ds, model=query.model) == _without_charset(query)
    if "SpecificCharacterSet" in query.keys:
        assert query.keys["SpecificCharacterSet"] == Single(ds.SpecificCharacterSet)
    elif all(text.isascii() for text in _strings(ds)):
        assert "SpecificCharacterSet" not in ds
    else:
        assert ds.SpecificCharacterSet == "ISO_IR 192"
    try:
        retrieve = query.for_retrieve()
    except QueryError:
        return
    assert set(retrieve.keys) <= {*UNIQUE_KEYS.values(), "SpecificCharacterSet"}
    assert query.unique_key in retrieve.keys


def _strings(ds: Dataset) -> list[str]:
    found: list[str] = []
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                found += _strings(item)
        elif isinstance(elem.value, str) or (elem.VR == "PN" and elem.value is not None):
            found.append(str(elem.value))
    return found


def _without_charset(query: Query) -> Query:
    keys = {k: v for k, v in query.keys.items() if k != "SpecificCharacterSet"}
    return Query(query.level, keys, model=query.model, defaults=query.defaults)


@given(st.sampled_from(sorted(keyword_dict)), st.one_of(scalars, helpers))
@settings(max_examples=500)
def test_any_keyword_any_value(keyword: str, value: object) -> None:
    try:
        query = Query.series(defaults=False, **{keyword: value})
    except QueryError as exc:
        assert keyword in str(exc)  # the error names the key
        return
    back = round_trip(query.to_dataset())
    assert keyword in back
    if dictionary_VR(keyword) != "SQ" and keyword != "SpecificCharacterSet":
        assert Query.from_dataset(back) == query
