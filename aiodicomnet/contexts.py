"""Presentation contexts we propose: the one place that decides them.

A requestor may propose at most 128 presentation contexts (PS3.8 9.3.2.2,
context IDs are odd numbers 1-255).  Store proposes exactly the
(SOP class, transfer syntax) pairs it has to send, plus Implicit VR Little
Endian as a fallback for uncompressed data (pynetdicom converts between the
uncompressed syntaxes when the peer picks the fallback).  C-GET proposes its
query model plus one storage context, with the SCP role, for each SOP class
it expects to receive.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import build_context, build_role
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import PresentationContext

__all__ = [
    "COMPRESSED",
    "MAX_CONTEXTS",
    "UNCOMPRESSED",
    "get_contexts",
    "query_contexts",
    "store_context_groups",
    "verification_contexts",
]

MAX_CONTEXTS = 128
_VERIFICATION = "1.2.840.10008.1.1"

UNCOMPRESSED: list[str] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
COMPRESSED: list[str] = [
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
    DeflatedExplicitVRLittleEndian,
]
_UNCOMPRESSED = frozenset(UNCOMPRESSED)


def verification_contexts() -> list[PresentationContext]:
    """Verification SOP Class only."""
    return [build_context(_VERIFICATION, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]


def query_contexts(model_uid: str) -> list[PresentationContext]:
    """One context for a Q/R information model (FIND or MOVE)."""
    return [build_context(model_uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]


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
    contexts = query_contexts(model_uid)
    roles = []
    for sop in classes:
        contexts.append(build_context(sop, [*UNCOMPRESSED, *COMPRESSED]))
        roles.append(build_role(sop, scp_role=True))
    return contexts, roles
