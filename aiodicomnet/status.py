"""DIMSE status codes and their meanings (PS3.4 Annex C, PS3.7 Annex C).

pynetdicom already carries the standard's tables; this module is the one place
that picks the right table for a service and turns a code into words.
"""

from __future__ import annotations

from pynetdicom import status as _st

__all__ = ["CANCEL", "PENDING", "SUCCESS", "category", "describe", "is_pending"]

SUCCESS = 0x0000
CANCEL = 0xFE00
PENDING = frozenset({0xFF00, 0xFF01})

_TABLES: dict[str, dict[int, tuple[str, str]]] = {
    "C-ECHO": _st.VERIFICATION_SERVICE_CLASS_STATUS,
    "C-STORE": _st.STORAGE_SERVICE_CLASS_STATUS,
    "C-FIND": _st.QR_FIND_SERVICE_CLASS_STATUS,
    "C-MOVE": _st.QR_MOVE_SERVICE_CLASS_STATUS,
    "C-GET": _st.QR_GET_SERVICE_CLASS_STATUS,
}


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
