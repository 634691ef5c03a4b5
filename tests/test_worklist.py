"""Modality Worklist: WorklistQuery and client.find against DCMTK's wlmscpfs."""

from __future__ import annotations

import threading
from datetime import date
from typing import Any

import anyio
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

import aiodicomnet as adn
from tests.peers.dcmtk import StoreScp, WlmScp
from tests.peers.inprocess import ScriptedSCP, wait_cancelled

pytestmark = pytest.mark.dcmtk


def _item(
    n: int,
    *,
    name: str,
    patient_id: str,
    modality: str,
    station: str,
    day: str,
    start: str,
) -> Dataset:
    """A complete worklist item (every attribute wlmscpfs requires to serve it)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.AccessionNumber = f"ACC{n:04d}"
    ds.ReferringPhysicianName = "REFERRER^ROSA"
    ds.PatientName = name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F" if n % 2 else "M"
    ds.StudyInstanceUID = generate_uid()
    ds.RequestingPhysician = "REQUESTER^RAY"
    ds.RequestedProcedureDescription = f"{modality} procedure {n}"
    ds.RequestedProcedureID = f"RP{n:04d}"
    ds.RequestedProcedurePriority = "ROUTINE"
    step = Dataset()
    step.Modality = modality
    step.ScheduledStationAETitle = station
    step.ScheduledProcedureStepStartDate = day
    step.ScheduledProcedureStepStartTime = start
    step.ScheduledPerformingPhysicianName = "PERFORMER^PAT"
    step.ScheduledProcedureStepDescription = f"step {n}"
    step.ScheduledStationName = f"ROOM{n % 3}"
    step.ScheduledProcedureStepLocation = "FLOOR 1"
    step.ScheduledProcedureStepID = f"SPS{n:04d}"
    step.ScheduledProcedureStepStatus = "SCHEDULED"
    ds.ScheduledProcedureStepSequence = [step]
    return ds


#: (name, patient id, modality, station AE, date, time) of each item.
ITEMS = [
    ("DOE^JANE", "WL001", "CT", "CT01", "20240105", "080000"),
    ("DOE^JOHN", "WL002", "CT", "CT01", "20240105", "103000"),
    ("ROE^RICHARD", "WL003", "MR", "MR01", "20240105", "090000"),
    ("ROE^RITA", "WL004", "CT", "CT02", "20240106", "140000"),
    ("SMITH^ANNA", "WL005", "MR", "MR01", "20240107", "160000"),
    ("MÜLLER^JÖRG", "WL006", "US", "US01", "20240108", "070000"),
]


@pytest.fixture(scope="module")
def worklist(wlmscpfs: WlmScp) -> WlmScp:
    wlmscpfs.write(
        _item(n, name=name, patient_id=pid, modality=mod, station=ae, day=day, start=tm)
        for n, (name, pid, mod, ae, day, tm) in enumerate(ITEMS)
    )
    return wlmscpfs


async def _ids(worklist: WlmScp, query: adn.WorklistQuery) -> list[str]:
    async with adn.Client("ADNWL") as client:
        found = await client.find(worklist.node, query)
    return sorted(str(ds.PatientID) for ds in found)


# -- the identifier -----------------------------------------------------------------------


def test_identifier_matches_through_the_step_sequence() -> None:
    query = adn.WorklistQuery(
        modality="CT",
        station_ae_title="CT*",
        start_date=adn.DateRange("20240101", "20240131"),
        patient_name="DOE^*",
    )
    ds = query.to_dataset()
    assert "QueryRetrieveLevel" not in ds
    assert ds.PatientName == "DOE^*"
    assert ds["PatientID"].is_empty and ds["AccessionNumber"].is_empty  # return keys
    (step,) = ds.ScheduledProcedureStepSequence
    assert step.Modality == "CT"
    assert step.ScheduledStationAETitle == "CT*"
    assert step.ScheduledProcedureStepStartDate == "20240101-20240131"
    assert step["ScheduledProcedureStepID"].is_empty
    assert query.sop_class == "1.2.840.10008.5.1.4.31"


def test_identifier_without_defaults_holds_only_the_keys() -> None:
    ds = adn.WorklistQuery(modality="MR", defaults=False).to_dataset()
    assert [e.keyword for e in ds] == ["ScheduledProcedureStepSequence"]
    assert [e.keyword for e in ds.ScheduledProcedureStepSequence[0]] == ["Modality"]


def test_dates_and_extra_step_keys() -> None:
    query = adn.WorklistQuery(
        start_date=date(2024, 1, 5),
        start_time=adn.TimeRange("080000", "120000"),
        step={"ScheduledProcedureStepStatus": "SCHEDULED"},
        RequestedProcedureID="RP*",
    )
    ds = query.to_dataset()
    step = ds.ScheduledProcedureStepSequence[0]
    assert step.ScheduledProcedureStepStartDate == "20240105"
    assert step.ScheduledProcedureStepStartTime == "080000-120000"
    assert step.ScheduledProcedureStepStatus == "SCHEDULED"
    assert ds.RequestedProcedureID == "RP*"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"start_date": "2024-01-05"}, "not a range"),
        ({"start_date": "20241345"}, "not a date"),
        ({"modality": "CT\\MR"}, "backslash"),
        ({"start_time": adn.DateRange("20240101", None)}, "DateRange needs"),
        ({"ScheduledProcedureStepSequence": {"Modality": "CT"}}, "step="),
        ({"step": {"Modality": "CT"}, "modality": "MR"}, "given twice"),
        ({"NoSuchKeyword": "x"}, "not a DICOM data element keyword"),
        ({"station_ae_title": "A" * 17}, "longer than"),
    ],
)
def test_malformed_queries_are_refused_before_sending(kwargs: Any, fragment: str) -> None:
    with pytest.raises(adn.QueryError, match=fragment):
        adn.WorklistQuery(**kwargs)


def test_worklist_is_a_dimse_service() -> None:
    client = adn.Client("ADNWL")
    web = adn.Node.web("http://127.0.0.1:1/dicom-web")
    with pytest.raises(adn.QueryError, match="DIMSE"):
        client.find(web, adn.WorklistQuery(modality="CT"))
    node = adn.Node("WL", "127.0.0.1", 104)
    with pytest.raises(adn.QueryError, match="model="):
        client.find(node, adn.WorklistQuery(modality="CT"), model="STUDY_ROOT")


# -- against wlmscpfs ---------------------------------------------------------------------


async def test_universal_query_returns_every_item_with_what_a_modality_needs(
    worklist: WlmScp, no_leaks: Any
) -> None:
    async with adn.Client("ADNWL") as client:
        found = await client.find(worklist.node, adn.WorklistQuery())
    assert sorted(str(ds.PatientID) for ds in found) == [f"WL00{i}" for i in range(1, 7)]
    jane = next(ds for ds in found if ds.PatientID == "WL001")
    assert jane.PatientName == "DOE^JANE"
    assert jane.AccessionNumber == "ACC0000"
    assert jane.RequestedProcedureID == "RP0000"
    assert jane.StudyInstanceUID
    step = jane.ScheduledProcedureStepSequence[0]
    assert step.Modality == "CT"
    assert step.ScheduledStationAETitle == "CT01"
    assert step.ScheduledProcedureStepStartDate == "20240105"
    assert step.ScheduledProcedureStepStartTime == "080000"
    assert step.ScheduledProcedureStepID == "SPS0000"
    assert step.ScheduledProcedureStepDescription == "step 0"


async def test_single_value_on_modality_and_station(worklist: WlmScp) -> None:
    assert await _ids(worklist, adn.WorklistQuery(modality="CT")) == ["WL001", "WL002", "WL004"]
    query = adn.WorklistQuery(modality="CT", station_ae_title="CT01")
    assert await _ids(worklist, query) == ["WL001", "WL002"]
    assert await _ids(worklist, adn.WorklistQuery(station_ae_title="MR01")) == ["WL003", "WL005"]


async def test_wildcards(worklist: WlmScp) -> None:
    assert await _ids(worklist, adn.WorklistQuery(patient_name="ROE^*")) == ["WL003", "WL004"]
    assert await _ids(worklist, adn.WorklistQuery(patient_name="DOE^JAN?")) == ["WL001"]
    assert await _ids(worklist, adn.WorklistQuery(patient_name="*RI*", modality="MR")) == ["WL003"]


async def test_single_value_on_patient_and_accession(worklist: WlmScp) -> None:
    assert await _ids(worklist, adn.WorklistQuery(patient_id="WL005")) == ["WL005"]
    assert await _ids(worklist, adn.WorklistQuery(accession_number="ACC0003")) == ["WL004"]
    assert await _ids(worklist, adn.WorklistQuery(patient_id="NOBODY")) == []


async def test_date_ranges(worklist: WlmScp) -> None:
    closed = adn.WorklistQuery(start_date=adn.DateRange("20240106", "20240107"))
    assert await _ids(worklist, closed) == ["WL004", "WL005"]
    from_ = adn.WorklistQuery(start_date=adn.DateRange("20240107", None))
    assert await _ids(worklist, from_) == ["WL005", "WL006"]
    until = adn.WorklistQuery(start_date="-20240105")
    assert await _ids(worklist, until) == ["WL001", "WL002", "WL003"]
    one_day = adn.WorklistQuery(start_date=date(2024, 1, 5), modality="MR")
    assert await _ids(worklist, one_day) == ["WL003"]


async def test_time_range_on_a_day(worklist: WlmScp) -> None:
    morning = adn.WorklistQuery(start_date="20240105", start_time=adn.TimeRange("083000", "120000"))
    assert await _ids(worklist, morning) == ["WL002", "WL003"]


async def test_non_ascii_names_match_in_the_scps_character_set(worklist: WlmScp) -> None:
    """wlmscpfs compares bytes: its files are Latin-1, so the query says ISO_IR 100."""
    latin1 = adn.WorklistQuery(patient_name="MÜLLER*", SpecificCharacterSet="ISO_IR 100")
    assert latin1.to_dataset().SpecificCharacterSet == "ISO_IR 100"
    assert await _ids(worklist, latin1) == ["WL006"]
    utf8 = adn.WorklistQuery(patient_name="MÜLLER*")  # sent as ISO_IR 192: other bytes
    assert utf8.to_dataset().SpecificCharacterSet == "ISO_IR 192"
    assert await _ids(worklist, utf8) == []


async def test_results_stream_and_an_early_exit_is_clean(worklist: WlmScp, no_leaks: Any) -> None:
    async with adn.Client("ADNWL", pool=adn.PoolConfig(reuse=False)) as client:
        async with client.find(worklist.node, adn.WorklistQuery()) as results:
            async for first in results:
                assert first.PatientID.startswith("WL")
                break
        # the association is usable again at once: a new query on a new one
        with anyio.fail_after(20):
            again = await client.find(worklist.node, adn.WorklistQuery(patient_id="WL001"))
    assert [ds.PatientID for ds in again] == ["WL001"]


async def test_a_peer_without_a_worklist_says_so(storescp: StoreScp, no_leaks: Any) -> None:
    async with adn.Client("ADNWL") as client:
        with pytest.raises(adn.NegotiationError, match="Worklist"):
            await client.find(storescp.node, adn.WorklistQuery(modality="CT"))


# -- faults, with an in-process worklist SCP --------------------------------------------------


async def test_a_failure_status_is_a_status_error(peer: ScriptedSCP, no_leaks: Any) -> None:
    def refuse(event: Any) -> Any:
        yield 0xA900, None  # identifier does not match SOP class

    peer.on_find = refuse
    async with adn.Client("ADNWL") as client:
        with pytest.raises(adn.StatusError) as info:
            await client.find(peer.node, adn.WorklistQuery(modality="CT"))
    assert info.value.status == 0xA900 and info.value.service == "C-FIND"


async def test_leaving_early_sends_c_cancel(peer: ScriptedSCP, no_leaks: Any) -> None:
    cancelled = threading.Event()

    def one_then_wait(event: Any) -> Any:
        assert event.request.AffectedSOPClassUID == "1.2.840.10008.5.1.4.31"
        item = Dataset()
        item.PatientID = "P0"
        yield 0xFF00, item
        if wait_cancelled(event, limit=10):
            cancelled.set()
            yield 0xFE00, None
            return
        yield 0x0000, None

    peer.on_find = one_then_wait
    client = adn.Client("ADNWL")
    async with client, client.find(peer.node, adn.WorklistQuery()) as results:
        async for item in results:
            assert item.PatientID == "P0"
            break
    assert cancelled.is_set()
