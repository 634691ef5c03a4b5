"""Modality Performed Procedure Step (MPPS, PS3.4 Annex F): the data sets a modality sends.

A modality tells the RIS what it is doing with a scheduled step: it creates
an MPPS instance ``IN PROGRESS`` when it starts (N-CREATE) and sets it
``COMPLETED`` or ``DISCONTINUED`` when it is done (N-SET), naming the series
it made.  :meth:`Client.mpps_create <aiodicomnet.Client.mpps_create>` and
:meth:`Client.mpps_set <aiodicomnet.Client.mpps_set>` send them; this module
builds their attributes after PS3.4 Table F.7.2-1 (N-CREATE) and F.7.2-2
(N-SET), every Type 1 and 2 attribute present::

    item = worklist_results[0]                     # from client.find(ris, WorklistQuery(...))
    uid = await client.mpps_create(ris, in_progress(item, station_ae_title="CT01"))
    ...
    await client.mpps_set(ris, uid, completed(series=[performed_series(ds, ...)]))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid

__all__ = [
    "MPPS_SOP_CLASS",
    "completed",
    "discontinued",
    "in_progress",
    "performed_series",
]

#: Modality Performed Procedure Step SOP Class (PS3.4 F.7.3).
MPPS_SOP_CLASS = UID("1.2.840.10008.3.1.2.3.3")

#: Patient and request attributes copied from a worklist item into the MPPS.
_FROM_WORKLIST = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
)


def _now(value: datetime | None) -> tuple[str, str]:
    value = value or datetime.now()
    return value.strftime("%Y%m%d"), value.strftime("%H%M%S")


def in_progress(
    worklist_item: Dataset | None = None,
    *,
    station_ae_title: str,
    modality: str | None = None,
    procedure_step_id: str | None = None,
    description: str = "",
    started: datetime | None = None,
) -> Dataset:
    """The N-CREATE attributes of an MPPS that starts now (status ``IN PROGRESS``).

    Args:
        worklist_item: the worklist C-FIND result the step performs (its
            patient, Study Instance UID, Accession Number, Requested
            Procedure and Scheduled Procedure Step IDs are referenced); None
            for an unscheduled step (those attributes are sent empty, as
            PS3.4 F.7.2.1 allows).
        station_ae_title: the modality's own AE title (Performed Station AE Title).
        modality: the Modality; default the worklist step's.
        procedure_step_id: Performed Procedure Step ID; default a new one.
        description: Performed Procedure Step Description.
        started: the start; default now.
    """
    ds = Dataset()
    item = worklist_item if worklist_item is not None else Dataset()
    for keyword in _FROM_WORKLIST:
        if keyword in item:
            setattr(ds, keyword, item.get(keyword))
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        if keyword not in ds:
            setattr(ds, keyword, "")
    steps = item.get("ScheduledProcedureStepSequence") or [Dataset()]
    step = steps[0]
    ref = Dataset()
    ref.StudyInstanceUID = item.get("StudyInstanceUID") or generate_uid()
    ref.ReferencedStudySequence = []
    ref.AccessionNumber = item.get("AccessionNumber", "")
    ref.RequestedProcedureID = item.get("RequestedProcedureID", "")
    ref.RequestedProcedureDescription = item.get("RequestedProcedureDescription", "")
    ref.ScheduledProcedureStepID = step.get("ScheduledProcedureStepID", "")
    ref.ScheduledProcedureStepDescription = step.get("ScheduledProcedureStepDescription", "")
    ref.ScheduledProtocolCodeSequence = list(step.get("ScheduledProtocolCodeSequence", []))
    ds.ScheduledStepAttributesSequence = [ref]
    ds.ReferencedPatientSequence = []
    ds.PerformedProcedureStepID = procedure_step_id or str(generate_uid())[-16:]
    ds.PerformedStationAETitle = station_ae_title
    ds.PerformedStationName = ""
    ds.PerformedLocation = ""
    day, time = _now(started)
    ds.PerformedProcedureStepStartDate = day
    ds.PerformedProcedureStepStartTime = time
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepDescription = description
    ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = []
    ds.PerformedProcedureStepEndDate = ""
    ds.PerformedProcedureStepEndTime = ""
    ds.Modality = modality or step.get("Modality", "")
    ds.StudyID = ""
    ds.PerformedProtocolCodeSequence = []
    ds.PerformedSeriesSequence = []
    return ds


def performed_series(
    instances: Iterable[Dataset],
    *,
    protocol_name: str = "",
    retrieve_ae_title: str = "",
) -> Dataset:
    """One item of the Performed Series Sequence: a series and its images (PS3.4 F.7.2.2).

    ``instances`` are the series' data sets (their headers suffice); the
    series is the first one's.
    """
    items = list(instances)
    if not items:
        raise ValueError("a performed series needs at least one instance")
    first = items[0]
    series = Dataset()
    series.PerformingPhysicianName = first.get("PerformingPhysicianName", "")
    series.ProtocolName = protocol_name or first.get("ProtocolName", "")
    series.OperatorsName = first.get("OperatorsName", "")
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.SeriesDescription = first.get("SeriesDescription", "")
    series.RetrieveAETitle = retrieve_ae_title
    refs = []
    for ds in items:
        ref = Dataset()
        ref.ReferencedSOPClassUID = ds.SOPClassUID
        ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        refs.append(ref)
    series.ReferencedImageSequence = refs
    series.ReferencedNonImageCompositeSOPInstanceSequence = []
    return series


def _final(status: str, ended: datetime | None, series: Sequence[Dataset]) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    day, time = _now(ended)
    ds.PerformedProcedureStepEndDate = day
    ds.PerformedProcedureStepEndTime = time
    ds.PerformedSeriesSequence = list(series)
    return ds


def completed(*, series: Sequence[Dataset] = (), ended: datetime | None = None) -> Dataset:
    """The N-SET modifications that end an MPPS as ``COMPLETED``.

    ``series`` are :func:`performed_series` items; PS3.4 F.7.2.2 wants at
    least one for a completed step.
    """
    if not series:
        raise ValueError("a COMPLETED step names at least one performed series")
    return _final("COMPLETED", ended, series)


def discontinued(
    *,
    series: Sequence[Dataset] = (),
    ended: datetime | None = None,
    reason: Dataset | None = None,
) -> Dataset:
    """The N-SET modifications that end an MPPS as ``DISCONTINUED``.

    ``reason`` is a code item for the Performed Procedure Step
    Discontinuation Reason Code Sequence (CID 9300), when known.
    """
    ds = _final("DISCONTINUED", ended, series)
    if reason is not None:
        ds.PerformedProcedureStepDiscontinuationReasonCodeSequence = [reason]
    return ds
