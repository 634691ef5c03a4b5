"""The tables of PS3.4 Query/Retrieve that both sides of the library read.

The client builds identifiers with them (:mod:`aiodicomnet.query`) and the
Archive matches identifiers with them (its index); one table, so that what
the client may send and what the Archive understands cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

__all__ = [
    "BACKSLASH_VRS",
    "BINARY_VRS",
    "CHARSET_VRS",
    "LEVELS",
    "MODEL_LEVELS",
    "RANGE_VRS",
    "UNIQUE_KEYS",
    "WILDCARD_VRS",
    "Level",
    "Model",
]

Level = Literal["PATIENT", "STUDY", "SERIES", "IMAGE"]
Model = Literal["PATIENT_ROOT", "STUDY_ROOT"]

#: The Query/Retrieve levels, top down (PS3.4 C.3).
LEVELS: tuple[Level, ...] = ("PATIENT", "STUDY", "SERIES", "IMAGE")

#: The unique key of each level (PS3.4 C.6.1.1 and C.6.2.1).
UNIQUE_KEYS: Mapping[Level, str] = MappingProxyType(
    {
        "PATIENT": "PatientID",
        "STUDY": "StudyInstanceUID",
        "SERIES": "SeriesInstanceUID",
        "IMAGE": "SOPInstanceUID",
    }
)

#: The levels of each information model (PS3.4 C.6.1 Patient Root, C.6.2 Study Root).
MODEL_LEVELS: Mapping[Model, tuple[Level, ...]] = MappingProxyType(
    {"PATIENT_ROOT": LEVELS, "STUDY_ROOT": LEVELS[1:]}
)

#: Wild card matching (``*``, ``?``) applies to these VRs only (PS3.4 C.2.2.2.4).
WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})

#: Range matching (``A-B``) applies to these VRs only (PS3.4 C.2.2.2.5).
RANGE_VRS = frozenset({"DA", "TM", "DT"})

#: VRs whose values may use characters beyond the default repertoire, decoded
#: with the Specific Character Set (PS3.5 6.1.2.2).
CHARSET_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})

#: VRs whose single value may contain a backslash: never split into several values.
BACKSLASH_VRS = frozenset({"LT", "ST", "UT"})

#: VRs of binary values (bytes, not text): only universal matching makes sense.
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
