"""DIMSE status codes: the one table of the codes we answer, their meanings, and the
status data set our SCPs send (PS3.4 Annexes B and C, PS3.7 Annex C).

pynetdicom already carries the standard's tables of meanings; this module is the
one place that picks the right table for a service and turns a code into words,
and the one place that names the codes the library itself answers with. A code
is named once here and used by name everywhere else (the Storage SCP, the
Archive's Q/R SCP, a client refusing a C-GET sub-operation):

* ``SUCCESS`` ``0x0000``: Success.
* ``CONTINUING`` ``0xFF00``: Pending, matches or sub-operations are continuing.
* ``CANCEL`` ``0xFE00``: ended by a C-CANCEL.
* ``OUT_OF_RESOURCES`` ``0xA700``: C-STORE refused, out of resources (storage
  failed, nobody to hand the instance to, or accepting it would cost more than
  the SCP grants, as a deflate bomb would).
* ``MOVE_DESTINATION_UNKNOWN`` ``0xA801``: C-MOVE refused, destination unknown.
* ``DATA_SET_MISMATCH`` ``0xA900``: C-STORE, the data set does not match the
  SOP class; C-FIND/C-MOVE/C-GET, the identifier does not match.
* ``CANNOT_UNDERSTAND`` ``0xC000``: C-STORE, the data set cannot be parsed;
  the same code is ``UNABLE_TO_PROCESS`` in C-FIND/C-MOVE/C-GET.
* ``CALLBACK_FAILED`` ``0xC001``: C-STORE, the application's callback or hook
  raised (a code of the 0xCxxx "cannot understand" range).
"""

from __future__ import annotations

import re

from pydicom.dataset import Dataset
from pynetdicom import status as _st

__all__ = [
    "CALLBACK_FAILED",
    "CANCEL",
    "CANNOT_UNDERSTAND",
    "CONTINUING",
    "DATA_SET_MISMATCH",
    "MOVE_DESTINATION_UNKNOWN",
    "OUT_OF_RESOURCES",
    "PENDING",
    "SUCCESS",
    "UNABLE_TO_PROCESS",
    "category",
    "describe",
    "is_pending",
    "status_dataset",
]

SUCCESS = 0x0000
#: Pending (PS3.4 C.4.1.1.4, C.4.2.1.5): matches or sub-operations are continuing.
CONTINUING = 0xFF00
CANCEL = 0xFE00
PENDING = frozenset({CONTINUING, 0xFF01})
#: Refused: out of resources (PS3.4 B.2.3).
OUT_OF_RESOURCES = 0xA700
#: C-MOVE refused: move destination unknown (PS3.4 C.4.2.1.5).
MOVE_DESTINATION_UNKNOWN = 0xA801
#: Error: data set (or identifier) does not match SOP class (PS3.4 B.2.3, C.4.1.1.4).
DATA_SET_MISMATCH = 0xA900
#: C-STORE error: cannot understand (PS3.4 B.2.3).
CANNOT_UNDERSTAND = 0xC000
#: C-FIND/C-MOVE/C-GET failure: unable to process (PS3.4 C.4); the same code as
#: :data:`CANNOT_UNDERSTAND`, named for what it means in Query/Retrieve.
UNABLE_TO_PROCESS = 0xC000
#: C-STORE error, cannot understand range: the application's callback or hook raised.
CALLBACK_FAILED = 0xC001

_TABLES: dict[str, dict[int, tuple[str, str]]] = {
    "C-ECHO": _st.VERIFICATION_SERVICE_CLASS_STATUS,
    "C-STORE": _st.STORAGE_SERVICE_CLASS_STATUS,
    "C-FIND": _st.QR_FIND_SERVICE_CLASS_STATUS,
    "C-MOVE": _st.QR_MOVE_SERVICE_CLASS_STATUS,
    "C-GET": _st.QR_GET_SERVICE_CLASS_STATUS,
}

_ERROR_COMMENT_FORBIDDEN = re.compile(r"[\x00-\x1f\\]")


def status_dataset(code: int, comment: str | None = None) -> Dataset:
    """The status data set an SCP returns: Status, and Error Comment when given.

    Error Comment (0000,0902) is LO: at most 64 characters, no backslash or
    control characters; ``comment`` is cut and cleaned to fit, so that a long
    or odd exception message never makes the response itself unencodable.
    """
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = _ERROR_COMMENT_FORBIDDEN.sub(" ", comment)[:64]
    return ds


def category(status: int) -> str:
    """Return the status category: Success, Warning, Failure, Cancel or Pending."""
    return str(_st.code_to_category(status))


def describe(status: int, service: str = "", sop_class: str | None = None) -> tuple[str, str]:
    """Return ``(category, meaning)`` for a status code of a DIMSE service.

    ``service`` is ``"C-STORE"``, ``"C-FIND"`` and so on; codes that the service
    table does not list fall back to the general table of PS3.7 Annex C.
    """
    table = _TABLES.get(service, {})
    if status in table:
        cat, text = table[status]
        return cat, text
    if status in _st.GENERAL_STATUS:
        cat, text = _st.GENERAL_STATUS[status]
        return cat, text
    cat = category(status)
    ranges = {
        "C-STORE": [
            (0xA700, 0xA7FF, "Out of resources"),
            (0xA900, 0xA9FF, "Data set does not match SOP Class"),
            (0xC000, 0xCFFF, "Cannot understand"),
        ],
        "C-FIND": [(0xC000, 0xCFFF, "Unable to process")],
        "C-MOVE": [(0xC000, 0xCFFF, "Unable to process")],
        "C-GET": [(0xC000, 0xCFFF, "Unable to process")],
    }
    for low, high, text in ranges.get(service, []):
        if low <= status <= high:
            return cat, text
    return cat, "Unknown status"


def is_pending(status: int) -> bool:
    """Whether ``status`` is Pending (0xFF00 or 0xFF01)."""
    return status in PENDING
