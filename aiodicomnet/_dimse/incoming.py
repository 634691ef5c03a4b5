"""A received C-STORE request, in the library's own words: :func:`incoming_instance`.

pynetdicom hands an SCP's ``EVT_C_STORE`` handler its event (the request
primitive, the association, the presentation context). This is the one place
that reads it: everything a :class:`~aiodicomnet.storage.Storage` may need is
copied into an :class:`~aiodicomnet.storage.IncomingInstance`, and
:func:`handle_store` runs the C-STORE SCP step on it for the Storage SCP, the
Archive and a client's C-GET alike.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from ..storage import LOGGER, IncomingInstance, ReceivedInstance, Storage, store_instance

__all__ = ["association_id", "handle_store", "incoming_instance"]

_IMPLEMENTATION = (PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION)

_ASSOC_ID_ATTR = "_adn_association_id"
_assoc_ids = itertools.count(1)
_assoc_id_lock = threading.Lock()


def number_associations_from(start: int) -> None:
    """Number this process's associations from ``start`` on (a receiver process of a
    server numbers them apart from the server's and the other receivers')."""
    global _assoc_ids
    with _assoc_id_lock:
        _assoc_ids = itertools.count(start)


def association_id(assoc: Any) -> int:
    """A process-wide unique number for a pynetdicom association (1, 2, ...)."""
    value = getattr(assoc, _ASSOC_ID_ATTR, None)
    if value is None:
        with _assoc_id_lock:
            value = getattr(assoc, _ASSOC_ID_ATTR, None)
            if value is None:
                value = next(_assoc_ids)
                setattr(assoc, _ASSOC_ID_ATTR, value)
    return int(value)


def _peer(assoc: Any) -> tuple[str, int]:
    remote = assoc.requestor if assoc.is_acceptor else assoc.acceptor
    try:
        return str(remote.address), int(remote.port)
    except (ValueError, TypeError):
        return "", 0


def incoming_instance(event: Any) -> IncomingInstance:
    """The :class:`~aiodicomnet.storage.IncomingInstance` of an ``EVT_C_STORE`` event.

    Reads the request and the association only; the data set is not decoded.
    """
    request = event.request
    assoc = event.assoc
    requestor, acceptor = assoc.requestor, assoc.acceptor
    calling = str(requestor.ae_title).strip()
    called_title = getattr(getattr(requestor, "primitive", None), "called_ae_title", None)
    called = str(called_title or acceptor.ae_title).strip()
    data_set = request.DataSet
    return IncomingInstance(
        sop_class_uid=request.AffectedSOPClassUID,
        sop_instance_uid=request.AffectedSOPInstanceUID,
        transfer_syntax_uid=event.context.transfer_syntax,
        encoded=data_set.getvalue() if data_set is not None else b"",
        calling_ae=calling,
        called_ae=called,
        remote_ae=calling if assoc.is_acceptor else called,
        peer=_peer(assoc),
        association_id=association_id(assoc),
        message_id=request.MessageID,
        move_originator_ae=(request.MoveOriginatorApplicationEntityTitle or "").strip() or None,
        move_originator_message_id=request.MoveOriginatorMessageID,
        implementation=_IMPLEMENTATION,
    )


def handle_store(
    event: Any,
    storage: Storage,
    deliver: Callable[[ReceivedInstance], None] | None = None,
    *,
    logger: logging.Logger = LOGGER,
) -> Dataset:
    """The C-STORE SCP step for an ``EVT_C_STORE`` handler: returns the status to answer.

    :func:`~aiodicomnet.storage.store_instance` on the event's instance.
    """
    return store_instance(incoming_instance(event), storage, deliver, logger=logger)
