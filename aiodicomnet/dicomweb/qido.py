"""QIDO-RS: a :class:`~aiodicomnet.Query` as search parameters, results paged as they are read.

Every matching type of the Query builder has its QIDO-RS form (PS3.18 8.3.4.1):

=======================  =================================  ==========================
Query                    QIDO-RS parameter                  example
=======================  =================================  ==========================
universal (return key)   ``includefield={tag}``             ``includefield=00080060``
single value             ``{tag}={value}``                  ``00100020=PAT001``
wildcard ``*`` ``?``     ``{tag}={pattern}``                ``00100010=Doe*``
UID list                 ``{tag}={uid},{uid}``              ``0020000D=1.2,1.3``
range                    ``{tag}={start}-{end}``            ``00080020=20240101-``
sequence item            ``{seq tag}.{tag}={value}``        ``00400275.00321060=CT``
=======================  =================================  ==========================

Fuzzy person-name matching is opt-in (``fuzzymatching=true``).  Keys are sent
as tags, which every server reads.  The STUDY, SERIES and IMAGE levels query
``/studies``, ``/series`` and ``/instances``; DICOMweb has no patient level,
so a PATIENT query searches studies and folds them into one result per
patient (with NumberOfPatientRelatedStudies counted).

Results are fetched a page at a time (``limit``, then ``offset``), each page
while the previous one is being read, so a search for thousands of studies
starts yielding after the first page.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from .._dimse.bridge import run_in_thread
from ..errors import ProtocolError, QueryError
from ..matching import UNIQUE_KEYS, Level
from ..query import (
    DEFAULT_RETURN_KEYS,
    DateRange,
    DateTimeRange,
    Matcher,
    Query,
    QueryLike,
    SequenceMatch,
    Single,
    TimeRange,
    UIDList,
    Universal,
    Wildcard,
)
from .dicom_json import datasets_from_json
from .multipart import media_type
from .session import Session

__all__ = ["PATHS", "QidoSearch", "as_query", "find", "search_for"]

#: The resource searched at each level.
PATHS: Mapping[str, str] = {"STUDY": "studies", "SERIES": "series", "IMAGE": "instances"}

#: Keys always asked for, so a result can be retrieved (its own and its parents' UIDs).
_ALWAYS: Mapping[str, tuple[str, ...]] = {
    "STUDY": ("StudyInstanceUID",),
    "SERIES": ("StudyInstanceUID", "SeriesInstanceUID"),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"),
}

_PATIENT_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "IssuerOfPatientID")
_JSON = "application/dicom+json"


def _tag(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:  # pragma: no cover - a Query holds keywords only
        raise QueryError(f"{keyword!r} is not a DICOM keyword")
    return f"{tag:08X}"


def _value(matcher: Matcher) -> str | None:
    """The parameter value of a matcher; ``None`` for universal matching."""
    if isinstance(matcher, Universal):
        return None
    if isinstance(matcher, Single):
        return str(matcher.value)
    if isinstance(matcher, Wildcard):
        return matcher.pattern
    if isinstance(matcher, UIDList):
        return ",".join(matcher.uids)
    if isinstance(matcher, (DateRange, TimeRange, DateTimeRange)):
        return matcher.text
    raise QueryError(f"no QIDO-RS form for {matcher!r}")  # pragma: no cover


@dataclass(frozen=True)
class QidoSearch:
    """One QIDO-RS search: the resource (``studies``...), its parameters, the level."""

    path: str
    params: tuple[tuple[str, str], ...]
    level: Level


def as_query(query: QueryLike) -> Query:
    """A :class:`Query` from what the client's services accept."""
    if isinstance(query, Query):
        return query
    if isinstance(query, Dataset):
        return Query.from_dataset(query)
    raise QueryError(f"a query must be a Query or a pydicom Dataset, not {type(query).__name__}")


def search_for(query: Query, *, fuzzy: bool = False, level: Level | None = None) -> QidoSearch:
    """The QIDO-RS search for ``query`` (see the module documentation for the mapping).

    ``level`` searches another level with the same keys (a PATIENT query
    searches studies).
    """
    level = level or query.level
    if level == "PATIENT":
        raise QueryError("DICOMweb has no patient level; search studies")
    params: list[tuple[str, str]] = []
    include: list[str] = []
    for keyword, matcher in query.keys.items():
        if keyword == "SpecificCharacterSet":
            continue  # DICOM JSON and URLs are UTF-8
        if isinstance(matcher, SequenceMatch):
            include.append(_tag(keyword))
            for child, inner in matcher.keys:
                if isinstance(inner, SequenceMatch):
                    raise QueryError(f"{keyword}.{child}: QIDO-RS matches one sequence level only")
                value = _value(inner)
                if value is not None:
                    params.append((f"{_tag(keyword)}.{_tag(child)}", value))
            continue
        value = _value(matcher)
        if value is None:
            include.append(_tag(keyword))
        else:
            params.append((_tag(keyword), value))
    wanted = list(DEFAULT_RETURN_KEYS[query.level]) if query.defaults else []
    wanted += _ALWAYS[level]
    if query.level == "PATIENT":
        wanted += _PATIENT_KEYS
    for keyword in wanted:
        tag = _tag(keyword)
        if keyword not in query.keys and tag not in include:
            include.append(tag)
    params += [("includefield", tag) for tag in include]
    if fuzzy:
        params.append(("fuzzymatching", "true"))
    return QidoSearch(PATHS[level], tuple(params), level)


async def find(
    session: Session, query: QueryLike, *, fuzzy: bool = False
) -> AsyncGenerator[Dataset, None]:
    """Run ``query`` as QIDO-RS on the session's node; yield each result as a Dataset.

    Results carry QueryRetrieveLevel, as a C-FIND response does.

    Raises:
        QueryError: a query DICOMweb cannot express.
        ProtocolError: a malformed answer (not JSON, not DICOM JSON).
        HttpError, ConnectError, DicomTimeout...: as :class:`Session` raises.
    """
    q = as_query(query)
    if q.level == "PATIENT":
        async for ds in _find_patients(session, q, fuzzy):
            yield ds
        return
    async for ds in pages(session, search_for(q, fuzzy=fuzzy)):
        ds.QueryRetrieveLevel = q.level
        yield ds


async def pages(session: Session, search: QidoSearch) -> AsyncGenerator[Dataset, None]:
    """Every result of ``search``, fetched ``page_size`` at a time."""
    node = session.node
    url = f"{node.service_url('qido')}/{search.path}"
    size = node.page_size
    offset = 0
    previous_first: str | None = None
    unique = UNIQUE_KEYS[search.level]
    while True:
        params = [*search.params, ("limit", str(size)), ("offset", str(offset))]
        response, body = await session.request("GET", url, params=params, headers={"Accept": _JSON})
        if response.status_code == 204 or not body.strip():
            return
        kind = media_type(response.headers.get("content-type", ""))
        if kind not in (_JSON, "application/json"):
            raise ProtocolError(
                f"QIDO-RS {url}: expected {_JSON}, got {kind or 'no Content-Type'}", node=node
            )
        try:
            found = await run_in_thread(datasets_from_json, body, f"QIDO-RS {url}")
        except ProtocolError as exc:
            exc.node = node
            raise
        if not found:
            return
        first = str(found[0].get(unique, ""))
        if offset and first and first == previous_first:
            raise ProtocolError(
                f"QIDO-RS {url}: the server ignores offset (page {offset // size + 1} "
                "repeats the previous one); raise WebNode.page_size above its result count",
                node=node,
            )
        previous_first = first
        for ds in found:
            yield ds
        if len(found) < size:
            return
        offset += len(found)


async def _find_patients(
    session: Session, query: Query, fuzzy: bool
) -> AsyncGenerator[Dataset, None]:
    """A PATIENT query over DICOMweb: studies searched, then one result per patient."""
    search = search_for(query, fuzzy=fuzzy, level="STUDY")
    patients: dict[tuple[str, str], Dataset] = {}
    counts: dict[tuple[str, str], int] = {}
    wanted = set(query.keys) | (set(DEFAULT_RETURN_KEYS["PATIENT"]) if query.defaults else set())
    wanted.discard("NumberOfPatientRelatedStudies")
    async for study in pages(session, search):
        key = (str(study.get("PatientID", "")), str(study.get("IssuerOfPatientID", "")))
        counts[key] = counts.get(key, 0) + 1
        if key in patients:
            continue
        patient = Dataset()
        patient.QueryRetrieveLevel = "PATIENT"
        for keyword in sorted(wanted, key=lambda k: tag_for_keyword(k) or 0):
            if keyword in study:
                patient[keyword] = study[keyword]
        patients[key] = patient
    for key, patient in patients.items():
        if query.defaults or "NumberOfPatientRelatedStudies" in query.keys:
            patient.NumberOfPatientRelatedStudies = counts[key]
        yield patient
