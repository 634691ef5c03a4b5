"""MPPS as an SCU: N-CREATE (in progress) and N-SET (completed, discontinued).

Against an in-process pynetdicom MPPS SCP that keeps each step's state as an
RIS does: it refuses an N-SET of a step already completed or discontinued.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import pytest
from pydicom.dataset import Dataset

import aiodicomnet as adn
from aiodicomnet import mpps
from tests.data import make_series
from tests.peers.inprocess import ScriptedSCP


class MppsStore:
    """The SCP side: steps by SOP Instance UID, with PS3.4 F.7.2's state rules."""

    def __init__(self) -> None:
        self.steps: dict[str, Dataset] = {}
        self.lock = threading.Lock()

    def create(self, event: Any) -> tuple[int, Dataset | None]:
        uid = str(event.request.AffectedSOPInstanceUID)
        attrs = event.attribute_list
        with self.lock:
            if uid in self.steps:
                return 0x0111, None  # duplicate SOP instance
            if attrs.get("PerformedProcedureStepStatus") != "IN PROGRESS":
                return 0x0106, None  # invalid attribute value
            self.steps[uid] = attrs
        return 0x0000, attrs

    def set(self, event: Any) -> tuple[int, Dataset | None]:
        uid = str(event.request.RequestedSOPInstanceUID)
        mods = event.modification_list
        with self.lock:
            step = self.steps.get(uid)
            if step is None:
                return 0x0112, None  # no such SOP instance
            if step.PerformedProcedureStepStatus != "IN PROGRESS":
                return 0x0110, None  # may no longer be updated
            for elem in mods:
                step[elem.tag] = elem
        return 0x0000, None


@pytest.fixture
def ris(peer: ScriptedSCP) -> MppsStore:
    store = MppsStore()
    peer.on_n_create = store.create
    peer.on_n_set = store.set
    return store


def _worklist_item() -> Dataset:
    item = Dataset()
    item.PatientName = "DOE^JANE"
    item.PatientID = "MPPS01"
    item.PatientBirthDate = "19700101"
    item.PatientSex = "F"
    item.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    item.AccessionNumber = "ACC1"
    item.RequestedProcedureID = "RP1"
    item.RequestedProcedureDescription = "CT head"
    step = Dataset()
    step.Modality = "CT"
    step.ScheduledProcedureStepID = "SPS1"
    step.ScheduledProcedureStepDescription = "head"
    item.ScheduledProcedureStepSequence = [step]
    return item


def test_in_progress_references_the_worklist_item() -> None:
    ds = mpps.in_progress(
        _worklist_item(), station_ae_title="CT01", started=datetime(2024, 1, 5, 8, 30)
    )
    assert ds.PerformedProcedureStepStatus == "IN PROGRESS"
    assert ds.PatientID == "MPPS01"
    assert ds.Modality == "CT"
    assert ds.PerformedStationAETitle == "CT01"
    assert (ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime) == (
        "20240105",
        "083000",
    )
    ref = ds.ScheduledStepAttributesSequence[0]
    assert ref.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.1"
    assert (ref.AccessionNumber, ref.ScheduledProcedureStepID) == ("ACC1", "SPS1")
    # Type 2 attributes present, empty until the step ends
    assert ds.PerformedProcedureStepEndDate == "" and ds.PerformedSeriesSequence == []


def test_completed_needs_a_series_and_discontinued_takes_a_reason() -> None:
    with pytest.raises(ValueError, match="performed series"):
        mpps.completed()
    with pytest.raises(ValueError, match="at least one instance"):
        mpps.performed_series([])
    reason = Dataset()
    reason.CodeValue, reason.CodingSchemeDesignator = "110514", "DCM"
    reason.CodeMeaning = "Incorrect worklist entry selected"
    ds = mpps.discontinued(reason=reason)
    assert ds.PerformedProcedureStepStatus == "DISCONTINUED"
    assert ds.PerformedProcedureStepDiscontinuationReasonCodeSequence[0].CodeValue == "110514"


async def test_in_progress_then_completed(peer: ScriptedSCP, ris: MppsStore, no_leaks: Any) -> None:
    series = make_series(3, patient_id="MPPS01")
    async with adn.Client("CT01") as client:
        uid = await client.mpps_create(
            peer.node, mpps.in_progress(_worklist_item(), station_ae_title="CT01")
        )
        assert ris.steps[uid].PerformedProcedureStepStatus == "IN PROGRESS"
        done = mpps.completed(series=[mpps.performed_series(series, retrieve_ae_title="PACS")])
        await client.mpps_set(peer.node, uid, done)
    step = ris.steps[uid]
    assert step.PerformedProcedureStepStatus == "COMPLETED"
    assert step.PerformedProcedureStepEndDate
    performed = step.PerformedSeriesSequence[0]
    assert performed.SeriesInstanceUID == series[0].SeriesInstanceUID
    assert [r.ReferencedSOPInstanceUID for r in performed.ReferencedImageSequence] == [
        ds.SOPInstanceUID for ds in series
    ]


async def test_discontinued_then_no_more_updates(
    peer: ScriptedSCP, ris: MppsStore, no_leaks: Any
) -> None:
    async with adn.Client("CT01") as client:
        uid = await client.mpps_create(peer.node, mpps.in_progress(station_ae_title="CT01"))
        await client.mpps_set(peer.node, uid, mpps.discontinued())
        assert ris.steps[uid].PerformedProcedureStepStatus == "DISCONTINUED"
        with pytest.raises(adn.StatusError) as info:
            await client.mpps_set(peer.node, uid, mpps.discontinued())
    assert info.value.status == 0x0110
    assert info.value.service == "N-SET"


async def test_refusals_are_status_errors(peer: ScriptedSCP, ris: MppsStore, no_leaks: Any) -> None:
    async with adn.Client("CT01") as client:
        uid = await client.mpps_create(peer.node, mpps.in_progress(station_ae_title="CT01"))
        with pytest.raises(adn.StatusError) as duplicate:
            await client.mpps_create(
                peer.node, mpps.in_progress(station_ae_title="CT01"), sop_instance_uid=uid
            )
        with pytest.raises(adn.StatusError) as unknown:
            await client.mpps_set(peer.node, "1.2.3.4.5", mpps.discontinued())
        bad = mpps.in_progress(station_ae_title="CT01")
        bad.PerformedProcedureStepStatus = "COMPLETED"
        with pytest.raises(adn.StatusError) as invalid:
            await client.mpps_create(peer.node, bad)
    assert duplicate.value.status == 0x0111
    assert unknown.value.status == 0x0112
    assert invalid.value.status == 0x0106
    assert "N-CREATE" in str(invalid.value)


async def test_a_peer_without_mpps_is_a_negotiation_error(storescp: Any, no_leaks: Any) -> None:
    async with adn.Client("CT01") as client:
        with pytest.raises(adn.NegotiationError):
            await client.mpps_create(storescp.node, mpps.in_progress(station_ae_title="CT01"))


async def test_the_archive_as_mpps_scp(tmp_path: Any, no_leaks: Any) -> None:
    series = make_series(2, patient_id="MPPS02")
    async with adn.Archive("ARCHIVE", tmp_path / "archive") as archive:
        async with adn.Client("CT01") as client:
            uid = await client.mpps_create(
                archive.node, mpps.in_progress(_worklist_item(), station_ae_title="CT01")
            )
            assert archive.performed_steps[uid].PerformedProcedureStepStatus == "IN PROGRESS"
            done = mpps.completed(series=[mpps.performed_series(series)])
            await client.mpps_set(archive.node, uid, done)
            with pytest.raises(adn.StatusError) as final:
                await client.mpps_set(archive.node, uid, mpps.discontinued())
        step = archive.performed_steps[uid]
    assert step.PerformedProcedureStepStatus == "COMPLETED"
    assert step.PerformedSeriesSequence[0].SeriesInstanceUID == series[0].SeriesInstanceUID
    assert final.value.status == 0x0110
    assert "may no longer be updated" in str(final.value)
