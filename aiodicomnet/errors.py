"""The exceptions aiodicomnet raises, in one hierarchy.

Every error says what happened in DICOM words: which node, which timeout,
the A-ASSOCIATE-RJ result/source/reason, or the DIMSE status and its PS3.4
meaning.

::

    DicomError
    +-- QueryError              a query rejected before anything was sent
    +-- AssociationError        anything about the association itself
    |   +-- ConnectError        no TCP connection (refused, unreachable, DNS)
    |   +-- AssociationRejected A-ASSOCIATE-RJ (result, source, reason decoded)
    |   +-- AssociationAborted  A-ABORT / A-P-ABORT or connection lost mid-way
    |   +-- NegotiationError    accepted, but without a context we need
    |   +-- ProtocolError       the peer broke the protocol (e.g. undecodable response)
    +-- DicomTimeout            a configured timeout ran out (also TimeoutError)
    |   +-- ConnectTimeout      TCP connect
    |   +-- AssociationTimeout  ACSE: no A-ASSOCIATE-AC/RJ in time
    |   +-- DimseTimeout        no DIMSE response in time
    +-- StatusError             the peer answered with a failure status
    +-- IncompleteRetrieve      a retrieve did not bring everything (failed or missing)
    +-- StorageError            a received instance could not be stored

``DicomTimeout`` also derives from the built-in :class:`TimeoutError`, so
``except TimeoutError`` catches it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .nodes import Node

__all__ = [
    "AssociationAborted",
    "AssociationError",
    "AssociationRejected",
    "AssociationTimeout",
    "ConnectError",
    "ConnectTimeout",
    "DicomError",
    "DicomTimeout",
    "DimseTimeout",
    "IncompleteRetrieve",
    "NegotiationError",
    "ProtocolError",
    "QueryError",
    "StatusError",
    "StorageError",
]


class DicomError(Exception):
    """Base class of every error raised by aiodicomnet.

    Attributes:
        node: the remote node involved, when there is one.
        partial: what was done before the error, when the operation can say
            (for ``Client.store``, the :class:`~aiodicomnet.StoreResult` with
            every instance: stored, refused, or not sent).
    """

    partial: Any = None

    def __init__(self, message: str, *, node: Node | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.node = node

    def __str__(self) -> str:
        if self.node is not None:
            return f"{self.node}: {self.message}"
        return self.message


class QueryError(DicomError, ValueError):
    """A query is malformed; raised before anything goes on the wire."""


class AssociationError(DicomError):
    """The association could not be set up, or broke."""


class ConnectError(AssociationError):
    """No TCP connection could be made (refused, unreachable, unknown host)."""


# PS3.8 Table 9-21: A-ASSOCIATE-RJ result / source / reason.
_RJ_RESULT = {1: "rejected-permanent", 2: "rejected-transient"}
_RJ_SOURCE = {
    1: "DICOM UL service-user",
    2: "DICOM UL service-provider (ACSE related function)",
    3: "DICOM UL service-provider (presentation related function)",
}
_RJ_REASON = {
    (1, 1): "no-reason-given",
    (1, 2): "application-context-name-not-supported",
    (1, 3): "calling-AE-title-not-recognized",
    (1, 7): "called-AE-title-not-recognized",
    (2, 1): "no-reason-given",
    (2, 2): "protocol-version-not-supported",
    (3, 1): "temporary-congestion",
    (3, 2): "local-limit-exceeded",
}


class AssociationRejected(AssociationError):
    """The peer answered A-ASSOCIATE-RJ.

    Attributes:
        result: 1 (permanent) or 2 (transient).
        source: 1 (service-user), 2 (ACSE provider), 3 (presentation provider).
        reason: the reason/diagnostic code, whose meaning depends on ``source``.
        result_str, source_str, reason_str: their PS3.8 names.
    """

    def __init__(self, result: int, source: int, reason: int, *, node: Node | None = None) -> None:
        self.result = result
        self.source = source
        self.reason = reason
        self.result_str = _RJ_RESULT.get(result, f"result {result}")
        self.source_str = _RJ_SOURCE.get(source, f"source {source}")
        self.reason_str = _RJ_REASON.get((source, reason), f"reason {reason}")
        super().__init__(
            f"association rejected ({self.result_str}) by {self.source_str}: {self.reason_str}",
            node=node,
        )


class AssociationAborted(AssociationError):
    """The association was aborted (A-ABORT, A-P-ABORT) or the connection dropped."""


class NegotiationError(AssociationError):
    """The association was accepted but without a presentation context we need."""


class DicomTimeout(DicomError, TimeoutError):
    """A configured timeout expired.

    Attributes:
        timeout: which timeout (``"connect"``, ``"acse"``, ``"dimse"``, ...).
        seconds: its configured value.
    """

    def __init__(
        self, message: str, *, timeout: str, seconds: float | None, node: Node | None = None
    ) -> None:
        super().__init__(message, node=node)
        self.timeout = timeout
        self.seconds = seconds


class ConnectTimeout(DicomTimeout, ConnectError):
    """The TCP connection was not established within the connect timeout."""


class AssociationTimeout(DicomTimeout, AssociationError):
    """No A-ASSOCIATE-AC/RJ (or A-RELEASE-RP) arrived within the ACSE timeout."""


class DimseTimeout(DicomTimeout):
    """No DIMSE response arrived within the DIMSE timeout."""


class StatusError(DicomError):
    """The peer answered a DIMSE request with a failure (or unexpected) status.

    Attributes:
        status: the DIMSE status code, for example ``0xA700``.
        category: ``"Failure"``, ``"Warning"``, ``"Cancel"``, ...
        meaning: its PS3.4/PS3.7 description.
        service: the DIMSE service, for example ``"C-FIND"``.
        error_comment: the peer's Error Comment (0000,0902), if any.
    """

    def __init__(
        self,
        service: str,
        status: int,
        *,
        node: Node | None = None,
        error_comment: str | None = None,
        sop_class: str | None = None,
    ) -> None:
        from .status import describe

        self.service = service
        self.status = status
        self.category, self.meaning = describe(status, service, sop_class)
        self.error_comment = error_comment
        text = f"{service} failed with status 0x{status:04X} ({self.category}: {self.meaning})"
        if error_comment:
            text += f": {error_comment}"
        super().__init__(text, node=node)


class IncompleteRetrieve(DicomError):
    """A retrieve (C-MOVE to our Storage SCP, or C-GET) ended without everything it asked for.

    Raised after the last instance that did arrive was yielded, so a caller
    iterating the retrieve has seen all of them; a caller awaiting it finds
    them in :attr:`partial` (a list of
    :class:`~aiodicomnet.ReceivedInstance`).  Two causes, both counted:
    sub-operations the peer reports as failed (with the Failed SOP Instance
    UID List when it sends one), and sub-operations it reports as completed
    that never reached us (sent to another AE, or without Move Originator
    information we could match).

    Attributes:
        expected: completed + warning + failed sub-operations, as the peer reported them.
        received: instances that arrived for this request.
        failed: sub-operations the peer reports as failed.
        failed_instances: SOP Instance UIDs the peer listed as failed.
        progress: the final :class:`~aiodicomnet.Progress`, when there was one.
    """

    def __init__(
        self,
        expected: int,
        received: int,
        *,
        failed: int = 0,
        failed_instances: tuple[str, ...] = (),
        progress: Any = None,
        node: Node | None = None,
    ) -> None:
        self.expected = expected
        self.received = received
        self.failed = failed
        self.failed_instances = failed_instances
        self.progress = progress
        text = f"retrieve incomplete: {received} of {expected} instances arrived"
        if failed:
            text += f"; the peer reports {failed} failed sub-operation(s)"
            if failed_instances:
                shown = ", ".join(failed_instances[:5])
                more = f" and {len(failed_instances) - 5} more" if len(failed_instances) > 5 else ""
                text += f" ({shown}{more})"
        missing = expected - failed - received
        if missing > 0:
            text += (
                f"; {missing} completed sub-operation(s) never arrived for this request "
                "(sent to another AE, or without Move Originator information we could match)"
            )
        super().__init__(text, node=node)


class ProtocolError(AssociationError):
    """The peer sent something the DIMSE protocol does not allow (for example a
    pending C-FIND response whose identifier cannot be decoded).

    The association is aborted: what follows on it cannot be trusted.
    """


class StorageError(DicomError):
    """A received instance could not be stored (disk full, permission, consumer gone)."""
