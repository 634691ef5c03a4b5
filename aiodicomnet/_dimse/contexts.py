"""Presentation contexts we propose: the one place that decides them.

C-ECHO, C-FIND and C-MOVE share one set (Verification and the FIND and MOVE
models of both roots), so a pooled association serves any of them.

A requestor may propose at most 128 presentation contexts (PS3.8 9.3.2.2,
context IDs are odd numbers 1-255).  The rule, in both roles: propose and
accept so that what is held can be sent as it is.

* Store proposes exactly the (SOP class, transfer syntax) pairs it has to
  send, each in a context of its own (a native one with Implicit VR Little
  Endian as a fallback), plus, for a SOP class sent compressed, one native
  context to decompress to when the peer accepts none of its compressed
  syntaxes (:mod:`.transcode` converts).
* C-GET proposes its query model plus, for each SOP class it expects, one
  native context and one context per compressed syntax, as many as fit
  (:func:`get_contexts`): an SCP holding JPEG data and not converting it
  (pynetdicom's qrscp, DCMTK's dcmqrscp) looks for an accepted context whose
  transfer syntax is exactly the file's, and with a single context listing
  every syntax the acceptor would have picked only one of them.
* The Archive, as acceptor, lists for each SOP class the syntaxes it holds
  first (:func:`accept_order`), so that a requestor proposing a compressed
  and native syntaxes in one context (DCMTK ``getscu +xs``) gets what is
  held, not a native syntax the held files would have to be decompressed to.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Iterable, Mapping, Sequence

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context, build_role
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import PresentationContext

from ..commitment import STORAGE_COMMITMENT
from ..mpps import MPPS_SOP_CLASS
from ..transfer_syntaxes import COMPRESSED, NATIVE, UNCOMPRESSED
from ..worklist import MODALITY_WORKLIST_FIND
from .patches import copy_context

__all__ = [
    "COMPRESSED",
    "DEFAULT_GET_SOP_CLASSES",
    "GET_COMPRESSED",
    "MAX_CONTEXTS",
    "MPPS",
    "STORAGE_COMMITMENT",
    "UNCOMPRESSED",
    "WORKLIST_FIND",
    "accept_order",
    "commitment_contexts",
    "commitment_report_context",
    "contexts_key",
    "get_contexts",
    "mpps_contexts",
    "query_contexts",
    "set_transfer_syntaxes",
    "store_context_groups",
    "verification_contexts",
    "worklist_contexts",
]

MAX_CONTEXTS = 128
_VERIFICATION = "1.2.840.10008.1.1"

# The lists themselves are in aiodicomnet.transfer_syntaxes (one place for all of them).
_UNCOMPRESSED = frozenset(UNCOMPRESSED)
_NATIVE = frozenset(NATIVE)

#: Syntaxes a C-GET proposes beside its native context, each in a context of its
#: own, in this order while contexts remain: the lossless compressions PACS store
#: most, lossy JPEG (sent as held, never recompressed), the rest, big endian.
GET_COMPRESSED: tuple[str, ...] = (
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired; converted only by some SCPs)
)

#: The native context of a C-GET: the little-endian syntaxes, between which every
#: SCP converts (big endian has its own context, as pynetdicom does not convert it).
_GET_NATIVE: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
)


#: Storage SOP classes proposed for C-GET when a query cannot tell which are needed.
DEFAULT_GET_SOP_CLASSES = [
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic Image
    "1.2.840.10008.5.1.4.1.1.20",  # Nuclear Medicine Image
    "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image
    "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.59",  # Key Object Selection Document
    "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.104.3",  # Encapsulated STL
]


def verification_contexts() -> list[PresentationContext]:
    """Verification SOP Class only."""
    return [build_context(_VERIFICATION, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]


_QUERY_MODELS = [
    "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root Q/R Information Model - FIND
    "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root Q/R Information Model - FIND
    "1.2.840.10008.5.1.4.1.2.1.2",  # Patient Root Q/R Information Model - MOVE
    "1.2.840.10008.5.1.4.1.2.2.2",  # Study Root Q/R Information Model - MOVE
]


def query_contexts() -> list[PresentationContext]:
    """Verification and the FIND and MOVE models of both roots.

    One set for C-ECHO, C-FIND and C-MOVE, so that one (pooled) association
    serves them all; a peer may reject some of these contexts, and an
    operation needing a rejected one fails with ``NegotiationError``.
    """
    return [copy_context(cx) for cx in _query_contexts()]


@functools.cache
def _query_contexts() -> tuple[PresentationContext, ...]:
    # Built once (~100 us of UID checks, on the event loop, for every pooled
    # C-ECHO or C-FIND); each association gets copies, as pynetdicom numbers them.
    syntaxes: list[str] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    return tuple(build_context(uid, list(syntaxes)) for uid in [_VERIFICATION, *_QUERY_MODELS])


WORKLIST_FIND = MODALITY_WORKLIST_FIND
MPPS = MPPS_SOP_CLASS


def _with_verification(sop_class: str) -> list[PresentationContext]:
    syntaxes: list[str] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    return [build_context(uid, list(syntaxes)) for uid in (_VERIFICATION, sop_class)]


def worklist_contexts() -> list[PresentationContext]:
    """Verification and the Modality Worklist FIND model (a worklist C-FIND).

    Apart from :func:`query_contexts`: a RIS answering worklist queries is
    rarely a Query/Retrieve SCP, and the PACS that is would only reject it.
    """
    return _with_verification(WORKLIST_FIND)


def mpps_contexts() -> list[PresentationContext]:
    """Verification and Modality Performed Procedure Step (N-CREATE, N-SET)."""
    return _with_verification(MPPS)


def commitment_contexts() -> list[PresentationContext]:
    """Verification and Storage Commitment Push Model (N-ACTION, and the
    N-EVENT-REPORT an SCP may send back on the same association)."""
    return _with_verification(STORAGE_COMMITMENT)


def commitment_report_context() -> PresentationContext:
    """What a Storage SCP accepts for the N-EVENT-REPORT of a Storage Commitment.

    An archive reporting on an association of its own is its requestor and
    proposes the SCP role for the class (SCP/SCU Role Selection, PS3.4
    J.3.3); we take the SCU role of Storage Commitment there, which PS3.7
    D.3.3.4 lets the acceptor grant only when its context allows both.
    """
    cx = build_context(STORAGE_COMMITMENT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    cx.scu_role = True
    cx.scp_role = True
    return cx


def contexts_key(
    contexts: Iterable[PresentationContext], roles: Iterable[SCP_SCU_RoleSelectionNegotiation]
) -> Hashable:
    """A hashable summary of proposed contexts and roles (the pool's key)."""
    return (
        frozenset((str(cx.abstract_syntax), tuple(cx.transfer_syntax)) for cx in contexts),
        frozenset((str(r.sop_class_uid), r.scu_role, r.scp_role) for r in roles),
    )


def _store_context(sop_class: str, transfer_syntax: str) -> PresentationContext:
    syntaxes = [transfer_syntax]
    if transfer_syntax in _NATIVE and transfer_syntax != ImplicitVRLittleEndian:
        syntaxes.append(ImplicitVRLittleEndian)
    return build_context(sop_class, syntaxes)


def store_context_groups(
    pairs: Iterable[tuple[str, str]], limit: int = MAX_CONTEXTS
) -> list[tuple[list[PresentationContext], list[tuple[str, str]]]]:
    """Contexts for C-STORE of the given (SOP class, transfer syntax) pairs.

    Returns, per association needed, its contexts (at most ``limit``) and the
    pairs it sends. A SOP class sent in a compressed syntax also gets a
    native context (Explicit, then Implicit VR Little Endian), in the same
    association, to decompress to if the peer accepts none of the compressed
    ones; native pairs already carry it.
    """
    unique = sorted(set(pairs))
    by_class: dict[str, list[str]] = {}
    for sop, ts in unique:
        by_class.setdefault(sop, []).append(ts)
    groups: list[tuple[list[PresentationContext], list[tuple[str, str]]]] = []
    contexts: list[PresentationContext] = []
    sent: list[tuple[str, str]] = []
    for sop, syntaxes in by_class.items():
        native = [ts for ts in syntaxes if ts in _NATIVE]
        needs_fallback = not native or ExplicitVRLittleEndian not in native
        pending = list(syntaxes)
        while pending:
            room = limit - len(contexts)
            fallback = int(needs_fallback and any(ts not in _NATIVE for ts in pending))
            if room < 1 + fallback and contexts:
                groups.append((contexts, sent))
                contexts, sent = [], []
                continue
            take = pending[: max(1, room - fallback)]
            pending = pending[len(take) :]
            contexts += [_store_context(sop, ts) for ts in take]
            sent += [(sop, ts) for ts in take]
            if fallback and any(ts not in _NATIVE for ts in take):
                contexts.append(
                    build_context(sop, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
                )
    if contexts or not groups:
        groups.append((contexts, sent))
    return groups


def get_contexts(
    model_uid: str, sop_classes: Iterable[str]
) -> tuple[list[PresentationContext], list[SCP_SCU_RoleSelectionNegotiation]]:
    """Contexts and SCP/SCU role selection items for a C-GET.

    Each SOP class gets a native context (the little-endian syntaxes: every
    SCP converts between them) and then, while the
    128 contexts last, one context per compressed syntax of
    :data:`GET_COMPRESSED`, shared out evenly: the first syntaxes for every
    class before the next ones. A class left with room for only some of them
    gets, in its last context, all the compressed syntaxes that did not fit
    (the SCP picks one).

    Raises:
        ValueError: more storage SOP classes than fit beside the query model.
    """
    classes = sorted({UID(c) for c in sop_classes})
    room = MAX_CONTEXTS - 1
    if len(classes) > room:
        raise ValueError(
            f"C-GET would need {len(classes) + 1} presentation contexts; at most "
            f"{MAX_CONTEXTS} can be proposed"
        )
    per_class, extra = divmod(room, len(classes)) if classes else (0, 0)
    contexts = [build_context(model_uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]
    roles = []
    for i, sop in enumerate(classes):
        budget = per_class + (1 if i < extra else 0) - 1  # after the native context
        contexts.append(build_context(sop, list(_GET_NATIVE)))
        if budget >= len(GET_COMPRESSED):
            contexts += [build_context(sop, [ts]) for ts in GET_COMPRESSED]
        elif budget > 0:
            contexts += [build_context(sop, [ts]) for ts in GET_COMPRESSED[: budget - 1]]
            contexts.append(build_context(sop, list(GET_COMPRESSED[budget - 1 :])))
        roles.append(build_role(sop, scp_role=True))
    return contexts, roles


def accept_order(held: Mapping[str, int], default: Sequence[str]) -> list[str]:
    """The transfer syntaxes to accept for one SOP class, given what is held of it.

    ``held`` counts the instances of the class held in each syntax. A native
    syntax can be converted to any other native one, a compressed one only
    decompressed, and nothing is ever compressed; so:

    * only compressed syntaxes held: the most held first, then the other held
      ones, then ``default`` (a requestor that offered the held syntax gets
      it as it is);
    * some native syntax held: ``default`` as it is (natives first there),
      the held compressed syntaxes moved just after the natives, as the
      native instances could not be sent in a compressed syntax.
    """
    ranked = [ts for ts, n in sorted(held.items(), key=lambda kv: -kv[1]) if n > 0]
    if not ranked:
        return list(default)
    if any(ts in _NATIVE for ts in ranked):
        natives = [ts for ts in default if ts in _NATIVE]
        held_compressed = [ts for ts in ranked if ts not in _NATIVE]
        first = [*natives, *held_compressed]
    else:
        first = ranked
    return [*first, *(ts for ts in default if ts not in first)]


def set_transfer_syntaxes(cx: PresentationContext, syntaxes: Sequence[str]) -> None:
    """Replace the transfer syntaxes of an acceptor's context, atomically.

    The acceptor's contexts are shared by its associations
    (:class:`~.patches.SharedContexts`) and only read while negotiating; one
    assignment of a new list (pynetdicom keeps them in ``_transfer_syntax``)
    is seen whole or not at all by a negotiation running in another thread.
    """
    cx._transfer_syntax = [UID(ts) for ts in syntaxes]
