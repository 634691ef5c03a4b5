"""Presentation contexts we propose: the one place that decides them.

C-ECHO, C-FIND and C-MOVE share one set (Verification and the FIND and MOVE
models of both roots), so a pooled association serves any of them.

A requestor may propose at most 128 presentation contexts (PS3.8 9.3.2.2,
context IDs are odd numbers 1-255).  Store proposes exactly the
(SOP class, transfer syntax) pairs it has to send, plus Implicit VR Little
Endian as a fallback for uncompressed data (pynetdicom converts between the
uncompressed syntaxes when the peer picks the fallback).  C-GET proposes its
query model plus one storage context, with the SCP role, for each SOP class
it expects to receive.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context, build_role
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import PresentationContext

from ..transfer_syntaxes import COMPRESSED, UNCOMPRESSED

__all__ = [
    "COMPRESSED",
    "DEFAULT_GET_SOP_CLASSES",
    "MAX_CONTEXTS",
    "UNCOMPRESSED",
    "contexts_key",
    "get_contexts",
    "query_contexts",
    "store_context_groups",
    "verification_contexts",
]

MAX_CONTEXTS = 128
_VERIFICATION = "1.2.840.10008.1.1"

# The lists themselves are in aiodicomnet.transfer_syntaxes (one place for all of them).
_UNCOMPRESSED = frozenset(UNCOMPRESSED)


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
    syntaxes: list[str] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    return [build_context(uid, list(syntaxes)) for uid in [_VERIFICATION, *_QUERY_MODELS]]


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
    if transfer_syntax in _UNCOMPRESSED and transfer_syntax != ImplicitVRLittleEndian:
        syntaxes.append(ImplicitVRLittleEndian)
    return build_context(sop_class, syntaxes)


def store_context_groups(
    pairs: Iterable[tuple[str, str]], limit: int = MAX_CONTEXTS
) -> list[list[PresentationContext]]:
    """Contexts for C-STORE of the given (SOP class, transfer syntax) pairs.

    Returns one list of at most ``limit`` contexts per association needed.
    """
    unique = sorted(set(pairs))
    contexts = [_store_context(sop, ts) for sop, ts in unique]
    return [contexts[i : i + limit] for i in range(0, len(contexts), limit)] or [[]]


def get_contexts(
    model_uid: str, sop_classes: Iterable[str]
) -> tuple[list[PresentationContext], list[SCP_SCU_RoleSelectionNegotiation]]:
    """Contexts and SCP/SCU role selection items for a C-GET.

    Raises:
        ValueError: more storage SOP classes than fit beside the query model.
    """
    classes = sorted({UID(c) for c in sop_classes})
    if len(classes) > MAX_CONTEXTS - 1:
        raise ValueError(
            f"C-GET would need {len(classes) + 1} presentation contexts; at most "
            f"{MAX_CONTEXTS} can be proposed"
        )
    contexts = [build_context(model_uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]
    roles = []
    for sop in classes:
        contexts.append(build_context(sop, [*UNCOMPRESSED, *COMPRESSED]))
        roles.append(build_role(sop, scp_role=True))
    return contexts, roles
