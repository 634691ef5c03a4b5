"""C-FIND / C-MOVE / C-GET identifiers: :class:`Query` and the PS3.4 matching types.

::

    Query.study(PatientID="123", StudyDate=DateRange("20240101", None))
    Query.series(StudyInstanceUID=[uid1, uid2], Modality="CT", SeriesDescription="*AX*")

Keys are DICOM keywords. A key's value chooses its matching type (PS3.4 C.2.2.2):

==================================  =========================================  ==============
value                               matching                                   on the wire
==================================  =========================================  ==============
``None``, ``""``, ``Universal()``   universal: just return the key             empty
``"ABC"``, ``7``, a date,           single value                               ``ABC``
``Single(v)``
``"AB*"``, ``Wildcard("AB?")``      wildcard, text VRs only                    ``AB*``
``[uid, uid]``, ``UIDList(...)``    list of UIDs, UI keys only                 ``1.2\\1.3``
``DateRange(a, b)``, ``TimeRange``  range, DA/TM/DT keys only                  ``A-B``, ``A-``,
``DateTimeRange``, ``"A-B"``                                                   ``-B``
a dict or Dataset (SQ keys)         sequence matching with one item            one-item SQ
==================================  =========================================  ==============

Everything is checked when the query is built, so a malformed query raises
:class:`~aiodicomnet.errors.QueryError` before anything goes on the wire.
"""

from __future__ import annotations

import copy
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from types import MappingProxyType
from typing import Literal, NoReturn, cast

from pydicom import config as pydicom_config
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pydicom.valuerep import format_number_as_ds
from pynetdicom import sop_class as sop_classes

from .errors import QueryError
from .matching import (
    BACKSLASH_VRS,
    BINARY_VRS,
    CHARSET_VRS,
    LEVELS,
    UNIQUE_KEYS,
    WILDCARD_VRS,
    Level,
    Model,
)

__all__ = [
    "DEFAULT_RETURN_KEYS",
    "LEVELS",
    "MODELS",
    "UNIQUE_KEYS",
    "DateRange",
    "DateTimeRange",
    "Level",
    "Matcher",
    "Model",
    "Query",
    "SequenceMatch",
    "Service",
    "Single",
    "TimeRange",
    "UIDList",
    "Universal",
    "Wildcard",
    "as_identifier",
    "checked_keys",
    "identifier_dataset",
    "sop_class",
]

Service = Literal["find", "move", "get"]

MODELS: tuple[Model, ...] = ("PATIENT_ROOT", "STUDY_ROOT")

#: Return keys added (universal matching) unless ``defaults=False``: what a PACS browser shows.
DEFAULT_RETURN_KEYS: Mapping[Level, tuple[str, ...]] = MappingProxyType(
    {
        "PATIENT": (
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "PatientSex",
            "NumberOfPatientRelatedStudies",
        ),
        "STUDY": (
            "StudyInstanceUID",
            "StudyDate",
            "StudyTime",
            "StudyDescription",
            "AccessionNumber",
            "ModalitiesInStudy",
            "NumberOfStudyRelatedSeries",
            "NumberOfStudyRelatedInstances",
            "PatientName",
            "PatientID",
        ),
        "SERIES": (
            "SeriesInstanceUID",
            "Modality",
            "SeriesNumber",
            "SeriesDescription",
            "NumberOfSeriesRelatedInstances",
        ),
        "IMAGE": ("SOPInstanceUID", "SOPClassUID", "InstanceNumber"),
    }
)

_SOP_CLASS_NAMES: Mapping[tuple[str, str], str] = {
    (model, service): f"{prefix}QueryRetrieveInformationModel{service.capitalize()}"
    for model, prefix in (("PATIENT_ROOT", "PatientRoot"), ("STUDY_ROOT", "StudyRoot"))
    for service in ("find", "move", "get")
}

# The PS3.4 tables (wild card VRs and so on) are in .matching, shared with the Archive.
_LEADING_SPACE_VRS = frozenset({"AE", "CS", "DS", "IS"})  # leading spaces not significant
# Binary values: only universal matching makes sense.
_PIXEL_DATA = frozenset({"PixelData", "FloatPixelData", "DoubleFloatPixelData"})
_BULK_VRS = BINARY_VRS | {"AT"}
_INT_VRS: Mapping[str, tuple[int, int]] = {
    "US": (0, 2**16 - 1),
    "SS": (-(2**15), 2**15 - 1),
    "UL": (0, 2**32 - 1),
    "SL": (-(2**31), 2**31 - 1),
    "UV": (0, 2**64 - 1),
    "SV": (-(2**63), 2**63 - 1),
}
_MAX_LENGTH = {"AE": 16, "AS": 4, "CS": 16, "DS": 16, "IS": 12, "LO": 64, "PN": 64, "SH": 16}
_MAX_LENGTH |= {"ST": 1024, "LT": 10240, "UI": 64}

_DA_RE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})")
_TM_RE = re.compile(r"([01][0-9]|2[0-3])(?:([0-5][0-9])(?:([0-5][0-9]|60)(?:\.([0-9]{1,6}))?)?)?")
_DT_PATTERN = (
    r"[0-9]{4}(?:[0-9]{2}(?:[0-9]{2}(?:[0-9]{2}(?:[0-9]{2}(?:[0-9]{2}"
    r"(?:\.[0-9]{1,6})?)?)?)?)?)?(?:[+-][0-9]{4})?"
)
_DT_RE = re.compile(
    r"([0-9]{4})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})"
    r"(?:\.([0-9]{1,6}))?)?)?)?)?)?(?:([+-])([0-9]{2})([0-9]{2}))?"
)
_DT_RANGE_RE = re.compile(f"({_DT_PATTERN})?-({_DT_PATTERN})?")
_UID_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_IS_RE = re.compile(r" *[+-]?[0-9]+ *")
_DS_RE = re.compile(r" *[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)? *")
_AS_RE = re.compile(r"[0-9]{3}[DWMY]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LONG_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")  # LT, ST, UT keep TAB LF FF CR


# -- dates and times ---------------------------------------------------------------------------


def _parse_date(text: str) -> date:
    match = _DA_RE.fullmatch(text)
    if match:
        try:
            return date(*(int(part) for part in match.groups()))
        except ValueError:
            pass
    raise QueryError(f"{text!r} is not a date YYYYMMDD")


def _parse_time(text: str) -> tuple[int, int, int, int]:
    match = _TM_RE.fullmatch(text)
    if not match:
        raise QueryError(f"{text!r} is not a time HH[MM[SS[.FFFFFF]]]")
    hour, minute, second, fraction = match.groups()
    micro = int((fraction or "").ljust(6, "0"))
    return (int(hour), int(minute or 0), int(second or 0), micro)


def _parse_datetime(text: str) -> datetime:
    match = _DT_RE.fullmatch(text)
    if match:
        year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
        try:
            tz = None
            if sign:
                if int(off_h) > 14 or int(off_m) > 59:
                    raise ValueError("offset")
                offset = timedelta(hours=int(off_h), minutes=int(off_m))
                tz = timezone(-offset if sign == "-" else offset)
            return datetime(
                int(year),
                int(month or 1),
                int(day or 1),
                int(hour or 0),
                int(minute or 0),
                min(int(second or 0), 59),  # a leap second checks as :59
                int((fraction or "").ljust(6, "0")),
                tzinfo=tz,
            )
        except ValueError:
            pass
    raise QueryError(f"{text!r} is not a date-time YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX]")


def _format_date(value: date) -> str:
    return f"{value.year:04d}{value.month:02d}{value.day:02d}"


def _format_time(value: time | datetime) -> str:
    text = f"{value.hour:02d}{value.minute:02d}{value.second:02d}"
    return f"{text}.{value.microsecond:06d}" if value.microsecond else text


def _format_datetime(value: datetime) -> str:
    text = _format_date(value) + _format_time(value)
    offset = value.utcoffset()
    if offset is not None:
        minutes = int(offset.total_seconds()) // 60
        sign = "-" if minutes < 0 else "+"
        text += f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    return text


# -- matching types ----------------------------------------------------------------------------


class Matcher:
    """Base class of the matching types (PS3.4 C.2.2.2); they compare and hash by value."""


@dataclass(frozen=True, init=False)
class Universal(Matcher):
    """Universal matching: return the key whatever its value (sent with no value)."""

    def __init__(self) -> None:
        pass


@dataclass(frozen=True, init=False)
class Single(Matcher):
    """Single value matching: the value must equal ``value``.

    Dates, times and date-times are written in DICOM form. DICOM has no escape
    for ``*`` and ``?``, so a single value may not contain them.
    """

    value: str | int | float

    def __init__(self, value: str | float | date | time) -> None:
        if isinstance(value, bool) or not isinstance(value, (str, int, float, date, time)):
            raise QueryError(f"single value matching needs a str, number, date or time: {value!r}")
        if isinstance(value, datetime):
            value = _format_datetime(value)
        elif isinstance(value, date):
            value = _format_date(value)
        elif isinstance(value, time):
            if value.tzinfo is not None:
                raise QueryError(f"a DICOM time has no time zone: {value!r}")
            value = _format_time(value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise QueryError(f"{value!r} is not a finite number")
        if isinstance(value, str):
            value = value.rstrip(" ")  # trailing spaces are never significant
            if not value:
                raise QueryError("an empty value means universal matching: use None or Universal()")
            if "*" in value or "?" in value:
                raise QueryError(
                    f"{value!r} contains * or ?, which DICOM always reads as wildcards"
                )
        object.__setattr__(self, "value", value)


@dataclass(frozen=True, init=False)
class Wildcard(Matcher):
    """Wildcard matching: ``*`` matches any run of characters, ``?`` any one character.

    Allowed on text VRs only (AE, CS, LO, LT, PN, SH, ST, UC, UR, UT). A pattern
    without ``*`` or ``?`` is single value matching.
    """

    pattern: str

    def __init__(self, pattern: str) -> None:
        if not isinstance(pattern, str) or not pattern.rstrip(" "):
            raise QueryError(f"a wildcard pattern must be a non-empty str: {pattern!r}")
        object.__setattr__(self, "pattern", pattern.rstrip(" "))


def _check_uid(uid: object) -> str:
    # Leading zeros in components are tolerated: they are invalid but common in the wild,
    # and refusing a UID a PACS handed out would only get in the way.
    if not isinstance(uid, str) or len(uid) > 64 or not _UID_RE.fullmatch(uid):
        raise QueryError(f"{uid!r} is not a UID (digits and dots, at most 64 characters)")
    return uid


@dataclass(frozen=True, init=False)
class UIDList(Matcher):
    """List of UID matching: any of ``uids`` (UI keys only); sent backslash-separated."""

    uids: tuple[str, ...]

    def __init__(self, *uids: str) -> None:
        if not uids:
            raise QueryError("a UID list needs at least one UID")
        object.__setattr__(self, "uids", tuple(_check_uid(uid) for uid in uids))


@dataclass(frozen=True, init=False)
class _Range(Matcher):
    """Range matching (PS3.4 C.2.2.2.5): ``start`` to ``end`` inclusive; ``None`` is open."""

    start: str | None
    end: str | None

    def __init__(self, start: object, end: object) -> None:
        first = None if start is None else self._bound(start)
        last = None if end is None else self._bound(end)
        if first is None and last is None:
            raise QueryError("a range needs a start or an end; for no limit use Universal()")
        if first is not None and last is not None and not self._ordered(first, last):
            raise QueryError(f"range start {first!r} is after its end {last!r}")
        object.__setattr__(self, "start", first)
        object.__setattr__(self, "end", last)

    @staticmethod
    def _bound(value: object) -> str:
        raise NotImplementedError

    @staticmethod
    def _ordered(first: str, last: str) -> bool:
        raise NotImplementedError

    @property
    def text(self) -> str:
        """The range as sent: ``"A-B"``, ``"A-"`` or ``"-B"``."""
        return f"{self.start or ''}-{self.end or ''}"


@dataclass(frozen=True, init=False)
class DateRange(_Range):
    """Range matching on dates (DA, or DT keys): ``start`` to ``end`` inclusive.

    Either end may be ``None`` for an open range. Accepts ``"YYYYMMDD"`` or
    :class:`datetime.date` (not :class:`datetime.datetime`: use :class:`DateTimeRange`).
    """

    def __init__(self, start: str | date | None = None, end: str | date | None = None) -> None:
        super().__init__(start, end)

    @staticmethod
    def _bound(value: object) -> str:
        if isinstance(value, datetime):
            raise QueryError(f"DateRange takes dates, not date-times: {value!r}")
        if isinstance(value, date):
            return _format_date(value)
        if isinstance(value, str):
            _parse_date(value)
            return value
        raise QueryError(f"a date must be 'YYYYMMDD' or a datetime.date: {value!r}")

    @staticmethod
    def _ordered(first: str, last: str) -> bool:
        return first <= last


@dataclass(frozen=True, init=False)
class TimeRange(_Range):
    """Range matching on times (TM keys): ``"HH[MM[SS[.FFFFFF]]]"`` or :class:`datetime.time`.

    Either end may be ``None`` for an open range; a range may not cross midnight.
    """

    def __init__(self, start: str | time | None = None, end: str | time | None = None) -> None:
        super().__init__(start, end)

    @staticmethod
    def _bound(value: object) -> str:
        if isinstance(value, time):
            if value.tzinfo is not None:
                raise QueryError(f"a DICOM time has no time zone: {value!r}")
            return _format_time(value)
        if isinstance(value, str):
            _parse_time(value)
            return value
        raise QueryError(f"a time must be 'HHMMSS' or a datetime.time: {value!r}")

    @staticmethod
    def _ordered(first: str, last: str) -> bool:
        return _parse_time(first) <= _parse_time(last)


@dataclass(frozen=True, init=False)
class DateTimeRange(_Range):
    """Range matching on date-times (DT keys): DICOM DT strings, datetimes or dates.

    Either end may be ``None`` for an open range. A plain DT string that reads as
    one date-time with a negative UTC offset (``"20240101-0500"``) is taken as that,
    not as a range; say ``DateTimeRange(...)`` to mean a range.
    """

    def __init__(self, start: str | date | None = None, end: str | date | None = None) -> None:
        super().__init__(start, end)

    @staticmethod
    def _bound(value: object) -> str:
        if isinstance(value, datetime):
            return _format_datetime(value)
        if isinstance(value, date):
            return _format_date(value)
        if isinstance(value, str):
            _parse_datetime(value)
            return value
        raise QueryError(f"a date-time must be a DT string or a datetime: {value!r}")

    @staticmethod
    def _ordered(first: str, last: str) -> bool:
        a, b = _parse_datetime(first), _parse_datetime(last)
        # A bound with a UTC offset and one without cannot be compared.
        return (a.tzinfo is None) != (b.tzinfo is None) or a <= b


@dataclass(frozen=True, init=False)
class SequenceMatch(Matcher):
    """Sequence matching (PS3.4 C.2.2.2.6): one item whose own keys are matched.

    ``SequenceMatch({"ReferencedSOPClassUID": uid})``, ``SequenceMatch(CodeValue="T-A0100")``
    or a :class:`~pydicom.dataset.Dataset` item. A list with one dict or Dataset given
    for an SQ key means the same.
    """

    keys: tuple[tuple[str, Matcher], ...]

    def __init__(self, item: Mapping[str, object] | Dataset | None = None, **keys: object) -> None:
        merged: dict[str, object] = {}
        if isinstance(item, Dataset):
            merged.update(_keys_from_dataset(item))
        elif isinstance(item, Mapping):
            merged.update(item)
        elif item is not None:
            raise QueryError(f"a sequence item must be a dict or a Dataset: {item!r}")
        merged.update(keys)
        object.__setattr__(self, "keys", tuple(_coerce_keys(merged, nested=True).items()))


_RANGE_VRS: Mapping[type[_Range], frozenset[str]] = {
    DateRange: frozenset({"DA", "DT"}),
    TimeRange: frozenset({"TM"}),
    DateTimeRange: frozenset({"DT"}),
}


# -- keys and values ---------------------------------------------------------------------------


def _vr_of(keyword: str) -> str:
    tag = tag_for_keyword(keyword) if isinstance(keyword, str) and keyword else None
    if tag is None or (tag >> 16) in (0x0000, 0x0002, 0xFFFE):
        raise QueryError(f"{keyword!r} is not a DICOM data element keyword")
    return dictionary_VR(tag).split(" or ")[0]


def _coerce_keys(keys: Mapping[str, object], *, nested: bool) -> dict[str, Matcher]:
    out: dict[str, Matcher] = {}
    for keyword, value in keys.items():
        if keyword == "QueryRetrieveLevel":
            raise QueryError("QueryRetrieveLevel is set by the query level, not as a key")
        if nested and keyword == "SpecificCharacterSet":
            raise QueryError("SpecificCharacterSet belongs at the top of the identifier")
        if keyword in _PIXEL_DATA:
            # Never returned by a query, and it stops pydicom peers from decoding US/SS keys.
            raise QueryError(f"{keyword} cannot be a query key")
        vr = _vr_of(keyword)
        try:
            out[keyword] = _coerce(vr, value)
        except QueryError as exc:
            raise QueryError(f"{keyword} ({vr}): {exc.message}") from None
    if "SpecificCharacterSet" in out:
        _check_charset(out)
    return dict(sorted(out.items(), key=lambda item: cast(int, tag_for_keyword(item[0]))))


def _coerce(vr: str, value: object) -> Matcher:
    """Turn a key's value into a validated, normalised matcher for a key of this VR."""
    if isinstance(value, str):
        value = value.rstrip(" ")  # trailing spaces are never significant
    if value is None or (isinstance(value, str) and not value) or isinstance(value, Universal):
        return Universal()
    if vr == "SQ":
        if isinstance(value, (list, tuple, MultiValue)):
            if not value:
                return Universal()
            if len(value) > 1:
                raise QueryError(f"sequence matching takes one item, not {len(value)}")
            value = value[0]
        if isinstance(value, (Mapping, Dataset)):
            value = SequenceMatch(value)
        if not isinstance(value, SequenceMatch):
            raise QueryError(f"a sequence key takes a dict or Dataset item, not {value!r}")
        return value if value.keys else Universal()
    if isinstance(value, (Mapping, Dataset, SequenceMatch)):
        raise QueryError("not a sequence: sequence matching is not possible")
    if vr in _BULK_VRS:
        raise QueryError("binary values allow only universal matching (None)")
    if isinstance(value, (list, tuple, MultiValue)):
        if vr != "UI":
            raise QueryError("a list of values is only allowed for UID keys (UID list matching)")
        value = UIDList(*value)
    if isinstance(value, UIDList):
        if vr != "UI":
            raise QueryError("UID list matching is only allowed for UID keys (VR UI)")
        return value if len(value.uids) > 1 else Single(value.uids[0])
    if isinstance(value, _Range):
        allowed = _RANGE_VRS[type(value)]
        if vr not in allowed:
            raise QueryError(f"{type(value).__name__} needs a {'/'.join(sorted(allowed))} key")
        if vr == "DT" and isinstance(value, DateRange):  # the same range, said as DT
            return DateTimeRange(value.start, value.end)
        return value
    if isinstance(value, str):
        if "*" in value or "?" in value:
            value = Wildcard(value)
        elif "-" in value and (vr in ("DA", "TM") or (vr == "DT" and not _DT_RE.fullmatch(value))):
            return _parse_range(vr, value)
        else:
            value = Single(value)
    if isinstance(value, Wildcard):
        if "*" not in value.pattern and "?" not in value.pattern:
            return _single(vr, Single(value.pattern))
        if vr not in WILDCARD_VRS:
            raise QueryError(f"wildcards are not allowed on VR {vr}: {value.pattern!r}")
        _check_text(vr, value.pattern, pattern=True)
        return value
    if isinstance(value, (int, float, date, time)) and not isinstance(value, bool):
        value = Single(value)
    if isinstance(value, Single):
        return _single(vr, value)
    raise QueryError(f"unsupported value {value!r}")


def _parse_range(vr: str, text: str) -> Matcher:
    if vr == "DT":
        match = _DT_RANGE_RE.fullmatch(text)
        if not match:
            raise QueryError(f"{text!r} is neither a date-time nor a date-time range")
        return DateTimeRange(match[1], match[2])
    parts = text.split("-")
    if len(parts) != 2:
        form = "YYYYMMDD" if vr == "DA" else "HHMMSS"
        raise QueryError(f"{text!r} is not a range {form}-{form}, {form}- or -{form}")
    if vr == "DA":
        return DateRange(parts[0] or None, parts[1] or None)
    return TimeRange(parts[0] or None, parts[1] or None)


def _single(vr: str, single: Single) -> Single:
    value = single.value
    if vr in _INT_VRS:
        number = _to_number(value, int)
        low, high = _INT_VRS[vr]
        if not low <= number <= high:
            raise QueryError(f"{number} is outside {low}..{high}")
        return Single(number)
    if vr == "FD":
        return Single(_to_number(value, float))
    if vr == "FL":  # what survives a trip through 32 bits
        try:
            return Single(struct.unpack("<f", struct.pack("<f", _to_number(value, float)))[0])
        except OverflowError:
            raise QueryError(f"{value!r} is too large for a 32-bit float") from None
    if isinstance(value, float):
        if vr == "IS" and value.is_integer():
            value = int(value)
        else:
            value = format_number_as_ds(value) if vr == "DS" else repr(value)
    text = str(value).lstrip(" ") if vr in _LEADING_SPACE_VRS else str(value)
    if not text:
        raise QueryError("an empty value means universal matching: use None or Universal()")
    _check_text(vr, text)
    checks = {"DA": _parse_date, "TM": _parse_time, "DT": _parse_datetime, "UI": _check_uid}
    if vr in checks:
        checks[vr](text)
    for check_vr, regex, what in (
        ("IS", _IS_RE, "an integer string"),
        ("DS", _DS_RE, "a decimal string"),
        ("AS", _AS_RE, "an age string nnnD/W/M/Y"),
    ):
        if vr == check_vr and not regex.fullmatch(text):
            raise QueryError(f"{text!r} is not {what}")
    return single if text == single.value else Single(text)


def _to_number(value: str | int | float, kind: type[int] | type[float]) -> int | float:
    try:
        number = kind(value)
    except ValueError:
        raise QueryError(f"{value!r} is not a number") from None
    if kind is int and isinstance(value, float) and number != value:
        raise QueryError(f"{value!r} is not an integer")
    if kind is float and not math.isfinite(number):
        raise QueryError(f"{value!r} is not a finite number")
    return number


def _check_text(vr: str, text: str, *, pattern: bool = False) -> None:
    if "\\" in text and vr not in BACKSLASH_VRS:
        raise QueryError(f"{text!r} contains a backslash, the DICOM value separator")
    if (_LONG_CONTROL if vr in BACKSLASH_VRS else _CONTROL).search(text):
        raise QueryError(f"{text!r} contains a control character")
    if not text.isascii():
        if vr not in CHARSET_VRS:
            raise QueryError(f"{text!r}: VR {vr} allows only the default (ASCII) repertoire")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise QueryError(f"{text!r} cannot be encoded in UTF-8") from None
    limit = None if pattern else _MAX_LENGTH.get(vr)  # a pattern may be longer (PS3.4 C.2.2.2)
    parts = text.split("=") if vr == "PN" else [text]
    if limit is not None and any(len(part) > limit for part in parts):
        raise QueryError(f"{text!r} is longer than the {limit} characters VR {vr} allows")


def _check_charset(keys: Mapping[str, Matcher]) -> None:
    term = keys["SpecificCharacterSet"]
    name = term.value if isinstance(term, Single) else None
    if not isinstance(name, str) or name.startswith("ISO 2022") or name not in python_encoding:
        raise QueryError(
            f"SpecificCharacterSet must be one term such as 'ISO_IR 192' or 'ISO_IR 100',"
            f" not {term}; for ISO 2022 code extensions send a Dataset"
        )
    for text in _texts(keys):
        try:
            text.encode(python_encoding[name])
        except UnicodeEncodeError:
            raise QueryError(f"{text!r} cannot be encoded in {name}") from None


def _keys_from_dataset(ds: Dataset) -> dict[str, object]:
    keys: dict[str, object] = {}
    for elem in ds:
        if elem.tag.element == 0 or elem.keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        if elem.tag.is_private or not elem.keyword:
            raise QueryError(f"element {elem.tag} has no keyword; send the Dataset itself")
        if elem.VR == "SQ":
            keys[elem.keyword] = list(elem.value)
        elif elem.is_empty:
            keys[elem.keyword] = None
        elif isinstance(elem.value, MultiValue):
            keys[elem.keyword] = [_plain(item) for item in elem.value]
        else:
            keys[elem.keyword] = _plain(elem.value)
    return keys


def _plain(value: object) -> object:
    if type(value) in (bool, bytes, int, float):
        return value
    return str(value)  # PersonName, IS, DSfloat, UID, DA...: their DICOM text


def _encode(matcher: Matcher, vr: str) -> object:
    if isinstance(matcher, Universal):
        return [] if vr == "SQ" else None
    if isinstance(matcher, Single):
        return matcher.value
    if isinstance(matcher, Wildcard):
        return matcher.pattern
    if isinstance(matcher, UIDList):
        return list(matcher.uids)
    if isinstance(matcher, _Range):
        return matcher.text
    assert isinstance(matcher, SequenceMatch)
    item = Dataset()
    _fill(item, dict(matcher.keys))
    return [item]


def _fill(ds: Dataset, keys: Mapping[str, Matcher]) -> None:
    for keyword, matcher in keys.items():
        vr = _vr_of(keyword)
        value = _encode(matcher, vr)
        # Values were checked here; pydicom's own checks would warn about wildcards and ranges.
        ds.add(DataElement(keyword, vr, value, validation_mode=pydicom_config.IGNORE))


def _texts(keys: Mapping[str, Matcher] | tuple[tuple[str, Matcher], ...]) -> list[str]:
    found: list[str] = []
    for _, matcher in keys.items() if isinstance(keys, Mapping) else keys:
        if isinstance(matcher, SequenceMatch):
            found += _texts(matcher.keys)
        elif isinstance(matcher, Single) and isinstance(matcher.value, str):
            found.append(matcher.value)
        elif isinstance(matcher, Wildcard):
            found.append(matcher.pattern)
    return found


def _check_level(level: object) -> Level:
    name = level.upper() if isinstance(level, str) else level
    if name not in LEVELS:
        raise QueryError(f"query level {level!r} is not one of {', '.join(LEVELS)}")
    return name


def _check_model(model: object, level: Level) -> Model:
    if model is None:
        return "PATIENT_ROOT" if level == "PATIENT" else "STUDY_ROOT"
    name = model.upper() if isinstance(model, str) else model
    if name not in MODELS:
        raise QueryError(f"information model {model!r} is not one of {', '.join(MODELS)}")
    if level == "PATIENT" and name == "STUDY_ROOT":
        raise QueryError("the Study Root model has no PATIENT level: use model='PATIENT_ROOT'")
    return name


def sop_class(model: str, service: str) -> UID:
    """The Query/Retrieve SOP Class for ``model`` and ``service`` (find, move or get).

    For example ``sop_class("STUDY_ROOT", "move")`` is
    ``StudyRootQueryRetrieveInformationModelMove`` (1.2.840.10008.5.1.4.1.2.2.2).
    """
    name = _SOP_CLASS_NAMES.get((str(model).upper(), str(service).lower()))
    if name is None:
        raise QueryError(f"no Query/Retrieve SOP class for model {model!r}, service {service!r}")
    return cast(UID, getattr(sop_classes, name))


# -- the query ---------------------------------------------------------------------------------


class Query:
    """A C-FIND / C-MOVE / C-GET identifier: a level, an information model and keys.

    Build one with :meth:`patient`, :meth:`study`, :meth:`series` or :meth:`image`;
    values are validated and normalised at once. A Query is immutable: :meth:`with_keys`
    and :meth:`returning` give new ones.

    Args:
        level: ``"PATIENT"``, ``"STUDY"``, ``"SERIES"`` or ``"IMAGE"``.
        keys: DICOM keyword to value (see the module documentation).
        model: ``"PATIENT_ROOT"`` or ``"STUDY_ROOT"``; by default Study Root, except
            at the PATIENT level, which only Patient Root has.
        defaults: add :data:`DEFAULT_RETURN_KEYS` for the level as return keys.

    Raises:
        QueryError: an unknown keyword, a value its VR does not allow, a bad level or model.
    """

    __slots__ = ("_defaults", "_keys", "_level", "_model")

    _level: Level
    _model: Model
    _keys: Mapping[str, Matcher]
    _defaults: bool

    def __init__(
        self,
        level: str,
        keys: Mapping[str, object] | None = None,
        *,
        model: str | None = None,
        defaults: bool = True,
    ) -> None:
        checked = _check_level(level)
        object.__setattr__(self, "_level", checked)
        object.__setattr__(self, "_model", _check_model(model, checked))
        object.__setattr__(self, "_keys", MappingProxyType(_coerce_keys(keys or {}, nested=False)))
        object.__setattr__(self, "_defaults", bool(defaults))

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("a Query is immutable; use with_keys() or returning()")

    def __reduce__(self) -> tuple[object, ...]:
        # Immutable, so pickle and copy must go through the constructor.
        return (_rebuild, (self._level, dict(self._keys), self._model, self._defaults))

    @classmethod
    def patient(cls, *, model: str | None = None, defaults: bool = True, **keys: object) -> Query:
        """A PATIENT-level query (Patient Root model)."""
        return cls("PATIENT", keys, model=model, defaults=defaults)

    @classmethod
    def study(cls, *, model: str | None = None, defaults: bool = True, **keys: object) -> Query:
        """A STUDY-level query (Study Root model unless ``model`` says otherwise)."""
        return cls("STUDY", keys, model=model, defaults=defaults)

    @classmethod
    def series(cls, *, model: str | None = None, defaults: bool = True, **keys: object) -> Query:
        """A SERIES-level query (Study Root model unless ``model`` says otherwise)."""
        return cls("SERIES", keys, model=model, defaults=defaults)

    @classmethod
    def image(cls, *, model: str | None = None, defaults: bool = True, **keys: object) -> Query:
        """An IMAGE (instance) level query (Study Root model unless ``model`` says otherwise)."""
        return cls("IMAGE", keys, model=model, defaults=defaults)

    @classmethod
    def from_dataset(
        cls, ds: Dataset, *, model: str | None = None, defaults: bool = False
    ) -> Query:
        """The Query a C-FIND identifier stands for; it must carry QueryRetrieveLevel.

        Its SpecificCharacterSet is dropped: values are already decoded, and
        :meth:`to_dataset` declares UTF-8 when it needs to.

        Raises:
            QueryError: no level, private elements, values no Query can express
                (several values for a non-UID key, several sequence items).
        """
        if not isinstance(ds, Dataset):
            raise QueryError(f"expected a pydicom Dataset, not {type(ds).__name__}")
        level = ds.get("QueryRetrieveLevel")
        if not level:
            raise QueryError("the identifier has no QueryRetrieveLevel")
        return cls(str(level), _keys_from_dataset(ds), model=model, defaults=defaults)

    @property
    def level(self) -> Level:
        """The Query/Retrieve level."""
        return self._level

    @property
    def model(self) -> Model:
        """The information model: ``"PATIENT_ROOT"`` or ``"STUDY_ROOT"``."""
        return self._model

    @property
    def keys(self) -> Mapping[str, Matcher]:
        """The keys given, normalised to matchers, in tag order (defaults not included)."""
        return self._keys

    @property
    def defaults(self) -> bool:
        """Whether :data:`DEFAULT_RETURN_KEYS` are added by :meth:`to_dataset`."""
        return self._defaults

    @property
    def unique_key(self) -> str:
        """The keyword of this level's unique key, for example ``"StudyInstanceUID"``."""
        return UNIQUE_KEYS[self._level]

    def with_keys(self, **keys: object) -> Query:
        """A copy with keys added or replaced."""
        return Query(
            self._level, {**self._keys, **keys}, model=self._model, defaults=self._defaults
        )

    def returning(self, *keywords: str) -> Query:
        """A copy that also returns ``keywords`` (universal matching where not already keys)."""
        extra = {keyword: Universal() for keyword in keywords if keyword not in self._keys}
        return self.with_keys(**extra)

    def sop_class(self, service: str) -> UID:
        """The SOP Class to use for ``service`` (``"find"``, ``"move"``, ``"get"``)."""
        return sop_class(self._model, service)

    def to_dataset(self) -> Dataset:
        """The identifier: QueryRetrieveLevel, the keys (and defaults), and
        SpecificCharacterSet ``"ISO_IR 192"`` (UTF-8) when a value is not ASCII."""
        keys = dict(self._keys)
        if self._defaults:
            for keyword in DEFAULT_RETURN_KEYS[self._level]:
                keys.setdefault(keyword, Universal())
        ds = identifier_dataset(keys)
        ds.QueryRetrieveLevel = self._level
        return ds

    def for_retrieve(self, *, hierarchical: bool = False) -> Query:
        """The identifier for a C-MOVE or C-GET of what this query names.

        Keeps only the unique keys (PS3.4 C.4.2.2.1): this level's must be a single
        value or, for UIDs, a list; those of the levels above must be single values
        if present, and present at all when ``hierarchical`` (strict SCPs want them).

        Raises:
            QueryError: a unique key missing or matched otherwise.
        """
        chain = LEVELS if self._model == "PATIENT_ROOT" else LEVELS[1:]
        kept: dict[str, Matcher] = {}
        for level in chain[: chain.index(self._level) + 1]:
            keyword = UNIQUE_KEYS[level]
            matcher = self._keys.get(keyword, Universal())
            here = level == self._level
            if isinstance(matcher, Universal):
                if here or hierarchical:
                    raise QueryError(
                        f"a {self._level}-level retrieve needs {keyword} (the {level} unique key)"
                    )
                continue
            if not (isinstance(matcher, Single) or (here and isinstance(matcher, UIDList))):
                allowed = "a single value or a UID list" if here else "a single value"
                raise QueryError(f"{keyword} must be {allowed} for a retrieve, not {matcher}")
            kept[keyword] = matcher
        if "SpecificCharacterSet" in self._keys:
            kept["SpecificCharacterSet"] = self._keys["SpecificCharacterSet"]
        return Query(self._level, kept, model=self._model, defaults=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Query):
            return NotImplemented
        return (self._level, self._model, self._defaults, dict(self._keys)) == (
            other._level,
            other._model,
            other._defaults,
            dict(other._keys),
        )

    def __hash__(self) -> int:
        return hash((self._level, self._model, self._defaults, tuple(self._keys.items())))

    def __repr__(self) -> str:
        return (
            f"Query({self._level!r}, {dict(self._keys)!r}, model={self._model!r}, "
            f"defaults={self._defaults!r})"
        )


def checked_keys(keys: Mapping[str, object], *, nested: bool = False) -> dict[str, Matcher]:
    """Keys (keyword to value) validated and turned into matchers, in tag order.

    The rules of :class:`Query` for any identifier (the Modality Worklist's
    too); ``nested`` for the keys of a sequence item.

    Raises:
        QueryError: an unknown keyword or a value its VR does not allow.
    """
    return _coerce_keys(keys, nested=nested)


def identifier_dataset(keys: Mapping[str, Matcher]) -> Dataset:
    """The identifier holding ``keys`` (from :func:`checked_keys`), with
    SpecificCharacterSet ``"ISO_IR 192"`` (UTF-8) when a value is not ASCII."""
    ds = Dataset()
    _fill(ds, keys)
    if "SpecificCharacterSet" not in keys and not all(t.isascii() for t in _texts(keys)):
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def _rebuild(level: str, keys: dict[str, Matcher], model: str, defaults: bool) -> Query:
    return Query(level, keys, model=model, defaults=defaults)


#: What the client's services accept as a query: a :class:`Query` or a raw identifier.
QueryLike = Query | Dataset


def as_identifier(
    query: Query | Dataset, model: str | None = None, *, service: str = "find"
) -> tuple[Dataset, Model]:
    """The identifier to send and its information model, from a Query or a raw Dataset.

    A :class:`Query` is turned into its dataset (for ``"move"`` and ``"get"``, that
    of :meth:`Query.for_retrieve`); ``model``, when given, overrides its own. A raw
    Dataset is copied and sent as is; it must carry a valid QueryRetrieveLevel and,
    for a retrieve, a value for that level's unique key. Its model defaults as for
    :class:`Query`.

    Raises:
        QueryError: whatever makes the identifier unusable.
    """
    if service not in ("find", "move", "get"):
        raise QueryError(f"service {service!r} is not 'find', 'move' or 'get'")
    if isinstance(query, Query):
        if model is not None and _check_model(model, query.level) != query.model:
            query = Query(query.level, query.keys, model=model, defaults=query.defaults)
        if service != "find":
            query = query.for_retrieve()
        return query.to_dataset(), query.model
    if not isinstance(query, Dataset):
        raise QueryError(
            f"a query must be a Query or a pydicom Dataset, not {type(query).__name__}"
        )
    raw = query.get("QueryRetrieveLevel")
    if not raw:
        raise QueryError("the identifier has no QueryRetrieveLevel")
    level = _check_level(str(raw))
    if level != str(raw):
        raise QueryError(f"QueryRetrieveLevel {str(raw)!r} must be upper case")
    if service != "find" and not query.get(UNIQUE_KEYS[level]):
        raise QueryError(f"a {level}-level retrieve needs a value for {UNIQUE_KEYS[level]}")
    return copy.deepcopy(query), _check_model(model, level)
