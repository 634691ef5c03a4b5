"""Storage Commitment (Push Model, PS3.4 Annex J): the request and its result.

A sender learns that an archive has taken responsibility for what it sent
(and may delete its own copies) by asking for *storage commitment*: an
N-ACTION naming the instances, under a new Transaction UID, answered later by
an N-EVENT-REPORT with the same Transaction UID listing what is committed and
what failed, with a reason for each failure.  :meth:`Client.commit
<aiodicomnet.Client.commit>` does both; this module holds the values:
:func:`commit_request` (the N-ACTION's Action Information) and
:class:`CommitResult` (read from the report).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import UID

from .results import StoreResult

__all__ = [
    "FAILURE_REASONS",
    "STORAGE_COMMITMENT",
    "STORAGE_COMMITMENT_INSTANCE",
    "CommitFailure",
    "CommitResult",
    "Reference",
    "commit_request",
    "references",
]

#: Storage Commitment Push Model SOP Class (PS3.4 J.3.5).
STORAGE_COMMITMENT = UID("1.2.840.10008.1.20.1")
#: Its well-known SOP Instance (PS3.4 J.3.5): the N-ACTION's Requested SOP Instance.
STORAGE_COMMITMENT_INSTANCE = UID("1.2.840.10008.1.20.1.1")

#: Failure Reason (0008,1197) values of PS3.4 J.3.2.1.1.3 (and C.14 of PS3.3).
FAILURE_REASONS = {
    0x0110: "Processing failure",
    0x0112: "No such object instance",
    0x0213: "Resource limitation",
    0x0122: "Referenced SOP Class not supported",
    0x0119: "Class / Instance conflict",
    0x0131: "Duplicate transaction UID",
}

#: One instance: (SOP Class UID, SOP Instance UID).
Reference = tuple[str, str]


def references(sent: StoreResult | Iterable[Reference]) -> list[Reference]:
    """The instances to commit: every *stored* instance of a :class:`StoreResult`
    (those refused or never sent are not the archive's to commit), or the
    (SOP Class UID, SOP Instance UID) pairs given; duplicates dropped, order kept.

    Raises:
        ValueError: nothing to commit, or a pair that is not two UIDs.
    """
    if isinstance(sent, StoreResult):
        pairs = [(o.sop_class_uid, o.sop_instance_uid) for o in sent.outcomes if o.ok]
    else:
        pairs = []
        for pair in sent:
            if (
                not isinstance(pair, tuple)
                or len(pair) != 2
                or not all(isinstance(u, str) and UID(u).is_valid for u in pair)
            ):
                raise ValueError(f"not a (SOP Class UID, SOP Instance UID) pair: {pair!r}")
            pairs.append((str(pair[0]), str(pair[1])))
    unique = list(dict.fromkeys(pairs))
    if not unique:
        raise ValueError("nothing to commit: no stored instance")
    return unique


def commit_request(transaction_uid: str, refs: Iterable[Reference]) -> Dataset:
    """The N-ACTION Action Information: Transaction UID and Referenced SOP Sequence."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    items = []
    for sop_class, sop_instance in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


@dataclass(frozen=True)
class CommitFailure:
    """An instance the archive did not commit, and why.

    Attributes:
        sop_class_uid, sop_instance_uid: the instance.
        reason: the Failure Reason code (``0x0112``: no such object instance,
            ...), ``None`` when the report gave none.
    """

    sop_class_uid: str
    sop_instance_uid: str
    reason: int | None

    @property
    def meaning(self) -> str:
        """The Failure Reason in words."""
        if self.reason is None:
            return "no reason given"
        return FAILURE_REASONS.get(self.reason, f"failure reason 0x{self.reason:04X}")


@dataclass(frozen=True)
class CommitResult:
    """What an archive reported about one Storage Commitment request.

    Attributes:
        transaction_uid: the request's Transaction UID.
        committed: instances the archive took responsibility for.
        failed: instances it did not, each with its reason.
        missing: instances of the request the report named neither way (a
            report that leaves some out is not a commitment for them).
        retrieve_ae_title: where the archive says the instances can be
            retrieved from, when it says (Retrieve AE Title).
    """

    transaction_uid: str
    committed: tuple[Reference, ...]
    failed: tuple[CommitFailure, ...]
    missing: tuple[Reference, ...] = ()
    retrieve_ae_title: str | None = None

    @property
    def ok(self) -> bool:
        """Every instance of the request committed."""
        return not self.failed and not self.missing

    @classmethod
    def from_report(
        cls, transaction_uid: str, requested: Iterable[Reference], info: Dataset
    ) -> CommitResult:
        """Read the N-EVENT-REPORT's Event Information (PS3.4 J.3.3.1)."""
        committed = tuple(
            (str(item.get("ReferencedSOPClassUID", "")), str(item.get("ReferencedSOPInstanceUID")))
            for item in info.get("ReferencedSOPSequence", [])
        )
        failed = tuple(
            CommitFailure(
                str(item.get("ReferencedSOPClassUID", "")),
                str(item.get("ReferencedSOPInstanceUID", "")),
                None if item.get("FailureReason") is None else int(item.FailureReason),
            )
            for item in info.get("FailedSOPSequence", [])
        )
        named = {uid for _, uid in committed} | {f.sop_instance_uid for f in failed}
        missing = tuple(ref for ref in requested if ref[1] not in named)
        retrieve = info.get("RetrieveAETitle")
        return cls(
            transaction_uid,
            committed,
            failed,
            missing,
            str(retrieve).strip() if retrieve else None,
        )
