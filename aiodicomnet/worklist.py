"""Modality Worklist queries: :class:`WorklistQuery` (PS3.4 Annex K).

::

    query = WorklistQuery(modality="CT", station_ae_title="CT01", start_date=date.today())
    async for item in client.find(ris, query):
        step = item.ScheduledProcedureStepSequence[0]
        print(item.PatientName, item.AccessionNumber, step.ScheduledProcedureStepID)

A worklist identifier has no Query/Retrieve level: the Scheduled Procedure
Step is matched through the Scheduled Procedure Step Sequence (one item,
sequence matching), the patient and the request at the top level.  Every
value follows the matching types of :mod:`aiodicomnet.query` (single value,
wildcard, ranges for the start date and time, universal), checked when the
query is built, so a malformed query raises
:class:`~aiodicomnet.errors.QueryError` before anything is sent.

By default the query also asks for what a modality needs to perform the
step and fill in its images and its MPPS (:data:`WORKLIST_RETURN_KEYS`,
:data:`STEP_RETURN_KEYS`, after IHE Scheduled Workflow, RAD-5).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, time
from types import MappingProxyType
from typing import NoReturn

from pydicom.dataset import Dataset
from pydicom.uid import UID

from .errors import QueryError
from .query import Matcher, SequenceMatch, Universal, checked_keys, identifier_dataset

__all__ = [
    "MODALITY_WORKLIST_FIND",
    "STEP_RETURN_KEYS",
    "WORKLIST_RETURN_KEYS",
    "WorklistQuery",
]

#: Modality Worklist Information Model - FIND (PS3.4 K.6.1.2).
MODALITY_WORKLIST_FIND = UID("1.2.840.10008.5.1.4.31")

#: Top-level return keys asked for unless ``defaults=False``: the patient, the
#: imaging service request and the requested procedure.
WORKLIST_RETURN_KEYS: tuple[str, ...] = (
    "AccessionNumber",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "RequestingPhysician",
    "RequestedProcedureDescription",
    "RequestedProcedureID",
    "RequestedProcedurePriority",
)

#: Return keys of the Scheduled Procedure Step item, unless ``defaults=False``.
STEP_RETURN_KEYS: tuple[str, ...] = (
    "Modality",
    "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription",
    "ScheduledStationName",
    "ScheduledProcedureStepLocation",
    "ScheduledProcedureStepID",
    "ScheduledProcedureStepStatus",
)

_STEP = "ScheduledProcedureStepSequence"

DateLike = str | date | Matcher | None
TimeLike = str | time | Matcher | None


class WorklistQuery:
    """A Modality Worklist C-FIND identifier, for :meth:`aiodicomnet.Client.find`.

    Args:
        modality: the step's Modality (``"CT"``).
        station_ae_title: the Scheduled Station AE Title, usually the
            modality's own AE title; wildcards allowed.
        start_date: the step's start date: a date, ``"YYYYMMDD"``, or a range
            (``DateRange(a, b)``, ``"20240101-20240107"``).
        start_time: the step's start time, or a ``TimeRange``.  Given with a
            date range, PS3.4 C.2.2.2.5.1 makes the two one date-time range.
        patient_name: Patient's Name; wildcards allowed (``"DOE^*"``).
        patient_id: Patient ID.
        accession_number: Accession Number.
        step: other keys of the Scheduled Procedure Step item (keyword to value).
        defaults: also ask for :data:`WORKLIST_RETURN_KEYS` and
            :data:`STEP_RETURN_KEYS`.
        **keys: other top-level keys (keyword to value), matched or returned.

    Raises:
        QueryError: an unknown keyword, a value its VR does not allow, or a
            key of the step given at the top level.
    """

    __slots__ = ("_defaults", "_keys", "_step")

    _keys: Mapping[str, Matcher]
    _step: Mapping[str, Matcher]
    _defaults: bool

    def __init__(
        self,
        *,
        modality: str | Matcher | None = None,
        station_ae_title: str | Matcher | None = None,
        start_date: DateLike = None,
        start_time: TimeLike = None,
        patient_name: str | Matcher | None = None,
        patient_id: str | Matcher | None = None,
        accession_number: str | Matcher | None = None,
        step: Mapping[str, object] | None = None,
        defaults: bool = True,
        **keys: object,
    ) -> None:
        if _STEP in keys:
            raise QueryError(f"give the {_STEP} keys as step=, not as a top-level key")
        if "QueryRetrieveLevel" in keys:
            raise QueryError("a worklist query has no QueryRetrieveLevel")
        step_keys: dict[str, object] = {
            "Modality": modality,
            "ScheduledStationAETitle": station_ae_title,
            "ScheduledProcedureStepStartDate": start_date,
            "ScheduledProcedureStepStartTime": start_time,
        }
        step_keys = {k: v for k, v in step_keys.items() if v is not None}
        for keyword, value in (step or {}).items():
            if keyword in step_keys:
                raise QueryError(f"{keyword} given twice (as an argument and in step=)")
            step_keys[keyword] = value
        top: dict[str, object] = {
            "PatientName": patient_name,
            "PatientID": patient_id,
            "AccessionNumber": accession_number,
        }
        top = {k: v for k, v in top.items() if v is not None}
        top.update(keys)
        object.__setattr__(self, "_step", MappingProxyType(checked_keys(step_keys, nested=True)))
        object.__setattr__(self, "_keys", MappingProxyType(checked_keys(top)))
        object.__setattr__(self, "_defaults", bool(defaults))

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("a WorklistQuery is immutable")

    @property
    def keys(self) -> Mapping[str, Matcher]:
        """The top-level keys given, as matchers (defaults not included)."""
        return self._keys

    @property
    def step(self) -> Mapping[str, Matcher]:
        """The Scheduled Procedure Step keys given, as matchers (defaults not included)."""
        return self._step

    @property
    def sop_class(self) -> UID:
        """The SOP Class of the C-FIND: Modality Worklist Information Model - FIND."""
        return MODALITY_WORKLIST_FIND

    def to_dataset(self) -> Dataset:
        """The identifier: the top-level keys and one Scheduled Procedure Step item."""
        top = dict(self._keys)
        step = dict(self._step)
        if self._defaults:
            for keyword in WORKLIST_RETURN_KEYS:
                top.setdefault(keyword, Universal())
            for keyword in STEP_RETURN_KEYS:
                step.setdefault(keyword, Universal())
        if step:
            top[_STEP] = SequenceMatch(step)
        return identifier_dataset(checked_keys(top))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WorklistQuery):
            return NotImplemented
        return (dict(self._keys), dict(self._step), self._defaults) == (
            dict(other._keys),
            dict(other._step),
            other._defaults,
        )

    def __hash__(self) -> int:
        return hash((tuple(self._keys.items()), tuple(self._step.items()), self._defaults))

    def __repr__(self) -> str:
        return (
            f"WorklistQuery(step={dict(self._step)!r}, keys={dict(self._keys)!r}, "
            f"defaults={self._defaults!r})"
        )
