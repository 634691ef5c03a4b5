"""A PACS browser's tree: patients -> studies -> series, with the counts it shows.

:func:`browse` runs one C-FIND at the level of the query, then the
lower-level C-FINDs concurrently: one SERIES query per study (and, when the
peer does not return Number of Series Related Instances, one IMAGE query per
series to count them).  Concurrency is bounded by the client's per-node
limit (``PoolConfig.max_per_node``); with pooling on, those associations
are reused from one C-FIND to the next.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
from pydicom.dataset import Dataset

from .errors import QueryError
from .query import Query

if TYPE_CHECKING:
    from .client import Client
    from .nodes import Node

__all__ = ["BrowseTree", "PatientEntry", "SeriesEntry", "StudyEntry", "browse"]


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass
class SeriesEntry:
    """A series: its identifier and how many instances it has."""

    dataset: Dataset
    instances: int | None = None

    @property
    def uid(self) -> str:
        return str(self.dataset.get("SeriesInstanceUID", ""))


@dataclass
class StudyEntry:
    """A study, its series and the counts a browser shows."""

    dataset: Dataset
    series: list[SeriesEntry] = field(default_factory=list)

    @property
    def uid(self) -> str:
        return str(self.dataset.get("StudyInstanceUID", ""))

    @property
    def series_count(self) -> int:
        """Number of series (found, or as the peer reported if none were listed)."""
        return len(self.series) or _int(self.dataset, "NumberOfStudyRelatedSeries") or 0

    @property
    def instance_count(self) -> int | None:
        """Number of instances: the sum over series, else the peer's figure."""
        counts = [s.instances for s in self.series]
        if counts and all(c is not None for c in counts):
            return sum(c for c in counts if c is not None)
        return _int(self.dataset, "NumberOfStudyRelatedInstances")


@dataclass
class PatientEntry:
    """A patient and their studies."""

    patient_id: str
    patient_name: str
    studies: list[StudyEntry] = field(default_factory=list)


@dataclass
class BrowseTree:
    """The result of :func:`browse`."""

    patients: list[PatientEntry] = field(default_factory=list)

    def studies(self) -> Iterator[StudyEntry]:
        """Every study, patient by patient."""
        for patient in self.patients:
            yield from patient.studies

    def series(self) -> Iterator[SeriesEntry]:
        """Every series, study by study."""
        for study in self.studies():
            yield from study.series


_STUDY_KEYS = ("PatientID", "PatientName", "StudyDate", "StudyDescription", "ModalitiesInStudy")


async def browse(
    client: Client,
    node: Node,
    query: Query,
    *,
    series: bool = True,
    count_instances: bool = True,
) -> BrowseTree:
    """Build the patients -> studies -> series tree for a PATIENT or STUDY query.

    Args:
        client: the client to query with.
        node: the PACS.
        query: a PATIENT- or STUDY-level :class:`Query` (its keys filter).
        series: also list each study's series.
        count_instances: count a series' instances with an IMAGE-level C-FIND
            when the peer does not report Number of Series Related Instances.

    Raises:
        QueryError: for a query at SERIES or IMAGE level.
    """
    if query.level not in ("PATIENT", "STUDY"):
        raise QueryError(f"browse starts at PATIENT or STUDY level, not {query.level}")
    if query.level == "PATIENT":
        patients = await client.find(node, query)
        study_lists: list[list[Dataset]] = [[] for _ in patients]

        async def studies_of(i: int, patient: Dataset) -> None:
            q = Query.study(model="PATIENT_ROOT", PatientID=str(patient.get("PatientID", "")))
            study_lists[i] = await client.find(node, q.returning(*_STUDY_KEYS))

        async with anyio.create_task_group() as tg:
            for i, patient in enumerate(patients):
                tg.start_soon(studies_of, i, patient)
        found = [ds for studies in study_lists for ds in studies]
    else:
        found = await client.find(node, query.returning(*_STUDY_KEYS))

    tree = BrowseTree()
    by_patient: dict[str, PatientEntry] = {}
    studies: list[StudyEntry] = []
    for ds in found:
        pid = str(ds.get("PatientID", ""))
        entry = by_patient.get(pid)
        if entry is None:
            entry = by_patient[pid] = PatientEntry(pid, str(ds.get("PatientName", "")))
            tree.patients.append(entry)
        study = StudyEntry(ds)
        entry.studies.append(study)
        studies.append(study)
    if series:
        async with anyio.create_task_group() as tg:
            for study in studies:
                tg.start_soon(_fill_series, client, node, study, count_instances)
    return tree


async def _fill_series(client: Client, node: Node, study: StudyEntry, count: bool) -> None:
    q = Query.series(StudyInstanceUID=study.uid)
    found = await client.find(node, q)
    study.series = [SeriesEntry(ds, _int(ds, "NumberOfSeriesRelatedInstances")) for ds in found]
    if not count:
        return

    async def count_images(entry: SeriesEntry) -> None:
        images = await client.find(
            node,
            Query.image(
                StudyInstanceUID=study.uid, SeriesInstanceUID=entry.uid, defaults=False
            ).returning("SOPInstanceUID"),
        )
        entry.instances = len(images)

    async with anyio.create_task_group() as tg:
        for entry in study.series:
            if entry.instances is None:
                tg.start_soon(count_images, entry)
