"""The exceptions aiodicomnet raises, in one hierarchy.

Every error says what happened in DICOM words: which node, which timeout,
the A-ASSOCIATE-RJ result/source/reason, or the DIMSE status and its PS3.4
meaning.

::

    DicomError
    +-- QueryError              a query rejected before anything was sent
    +-- AssociationError        anything about the association itself
    |   +-- ConnectError        no TCP connection (refused, unreachable, DNS)
    |   |   +-- TlsError        the TLS handshake failed (certificate, version, not TLS)
    |   +-- AssociationRejected A-ASSOCIATE-RJ (result, source, reason decoded)
    |   +-- AssociationAborted  A-ABORT / A-P-ABORT or connection lost mid-way
    |   +-- NegotiationError    accepted, but without a context we need
    |   +-- IdentityNotConfirmed  accepted, without the user identity confirmation asked for
    |   +-- ProtocolError       the peer broke the protocol (e.g. undecodable response)
    +-- DicomTimeout            a configured timeout ran out (also TimeoutError)
    |   +-- ConnectTimeout      TCP connect
    |   +-- AssociationTimeout  ACSE: no A-ASSOCIATE-AC/RJ in time
    |   +-- DimseTimeout        no DIMSE response in time
    |   +-- CommitmentTimeout   no Storage Commitment result (N-EVENT-REPORT) in time
    +-- StatusError             the peer answered with a failure status
    +-- IncompleteRetrieve      a retrieve did not bring everything (failed or missing)
    +-- TranscodeError          an instance cannot be converted to a syntax the peer accepted
    +-- StorageError            a received instance could not be stored
    |   +-- BurnedInAnnotationRefused  refused by a de-identification policy (burned-in text)
    +-- CohortInputError        a cohort list (CSV) row that cannot be turned into a query
    +-- ImagingError            instances that do not make an image, or an image that
    |                           does not make DICOM (aiodicomnet.imaging.errors: one
    |                           subclass per problem, and MissingExtra)
    +-- HttpError               a DICOMweb server answered with an HTTP error
        +-- AuthError           401 / 403: authentication or authorisation refused
        +-- NotFound            404: no such study, series, instance or endpoint
        +-- ServerError         5xx

``DicomTimeout`` also derives from the built-in :class:`TimeoutError`, so
``except TimeoutError`` catches it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .nodes import AnyNode as Node

__all__ = [
    "AssociationAborted",
    "AssociationError",
    "AssociationRejected",
    "AssociationTimeout",
    "BurnedInAnnotationRefused",
    "CohortInputError",
    "CommitmentTimeout",
    "ConnectError",
    "ConnectTimeout",
    "DicomError",
    "DicomTimeout",
    "DimseTimeout",
    "IdentityNotConfirmed",
    "ImagingError",
    "IncompleteRetrieve",
    "NegotiationError",
    "ProtocolError",
    "QueryError",
    "ServerError",
    "StatusError",
    "StorageError",
    "TlsError",
    "TranscodeError",
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


class TlsError(ConnectError):
    """The TLS handshake with the peer failed (DICOM over TLS, PS3.15 B.9).

    The message says what failed: the peer's certificate (and why: unknown
    CA, expired, wrong host), our certificate refused by the peer, no TLS
    version or cipher in common, a peer that does not speak TLS on that port,
    or a handshake that did not finish within the connect timeout.

    Attributes:
        reason: the ``ssl`` module's reason code (e.g. ``"CERTIFICATE_VERIFY_FAILED"``),
            or ``None`` when the connection closed or timed out.
    """

    def __init__(
        self, message: str, *, reason: str | None = None, node: Node | None = None
    ) -> None:
        super().__init__(message, node=node)
        self.reason = reason


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


class IdentityNotConfirmed(AssociationError):
    """The node accepted the association without confirming the user identity
    whose confirmation we asked for (positive response requested, PS3.7
    D.3.3.7); the association was released at once, nothing was sent on it."""


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


class CommitmentTimeout(DicomTimeout):
    """The archive accepted a Storage Commitment request (N-ACTION) but sent no
    result (N-EVENT-REPORT) within the time given.

    The commitment is not refused: the archive may still report later, to a
    Storage SCP that is listening; until then, nothing is known to be committed.

    Attributes:
        transaction_uid: the request's Transaction UID.
    """

    def __init__(
        self, message: str, *, transaction_uid: str, seconds: float, node: Node | None = None
    ) -> None:
        super().__init__(message, timeout="commitment", seconds=seconds, node=node)
        self.transaction_uid = transaction_uid


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
        missing_reason: str | None = None,
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
            text += f"; {missing} " + (
                missing_reason
                or "completed sub-operation(s) never arrived for this request "
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


class TranscodeError(DicomError):
    """An instance cannot be converted to a transfer syntax the peer accepted.

    Raised for one instance (the others go on): converting would mean
    compressing (never done), or decompressing without the pixel decoders
    (the message names the extra to install: ``aiodicomnet[codecs]``), or
    the data cannot be decoded or encoded.

    Attributes:
        transfer_syntax: the syntax the instance is held in, when known.
        target: the syntax it was to be converted to, when one was chosen.
    """

    def __init__(
        self, message: str, *, transfer_syntax: str | None = None, target: str | None = None
    ) -> None:
        super().__init__(message)
        self.transfer_syntax = transfer_syntax
        self.target = target


class ImagingError(DicomError, ValueError):
    """Instances that cannot become a volume, or an image that cannot become DICOM.

    The subclasses, one per problem (mixed orientations, a missing slice,
    gantry tilt, a mask that does not fit its volume, ...), live in
    :mod:`aiodicomnet.imaging.errors`.
    """


class BurnedInAnnotationRefused(StorageError):
    """A de-identification policy refused an instance whose pixels may carry identifying text.

    Header de-identification cannot remove text burned into the pixel data;
    an instance that says it has some (Burned In Annotation ``YES``), or of a
    kind that often does (secondary capture, ultrasound, scanned documents)
    without saying it has none, is refused under the ``"refuse"`` policy
    (answered ``0xC001`` when it arrives by C-STORE).

    Attributes:
        sop_instance_uid: the original SOP Instance UID of the refused instance.
        reason: why it was judged at risk.
    """

    def __init__(self, sop_instance_uid: str, reason: str) -> None:
        super().__init__(f"instance {sop_instance_uid} refused: {reason}")
        self.sop_instance_uid = sop_instance_uid
        self.reason = reason


class CohortInputError(DicomError, ValueError):
    """A row of a cohort list cannot be turned into a query (raised before anything is sent).

    Attributes:
        line: the line number in the input file (1 is the header).
    """

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line


class HttpError(DicomError):
    """A DICOMweb request was answered with an HTTP error status.

    Attributes:
        status_code: the HTTP status, for example ``400``.
        url: the URL requested.
        detail: the start of the response body (the server's explanation), if any.
    """

    def __init__(
        self, status_code: int, url: str, detail: str = "", *, node: Node | None = None
    ) -> None:
        self.status_code = status_code
        self.url = url
        self.detail = detail
        text = f"HTTP {status_code} {_HTTP_REASON.get(status_code, '')}".rstrip()
        text += f" for {url}"
        if detail:
            text += f": {detail}"
        super().__init__(text, node=node)


_HTTP_REASON = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    406: "Not Acceptable",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class AuthError(HttpError):
    """401 (the credentials are missing, wrong or expired) or 403 (not allowed)."""


class NotFound(HttpError):
    """404: the server has no such study, series or instance (or no such service)."""


class ServerError(HttpError):
    """A 5xx status: the server failed to answer the request."""
