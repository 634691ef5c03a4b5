"""Transfer syntax lists: written once, used by the client, the Storage SCP and the Archive.

Native encodings carry pixel data as plain values; a decoded data set can be
re-encoded in any of them (:mod:`aiodicomnet._dimse.transcode` does it when a
peer accepts another native syntax than the one a file is in). Compressed
syntaxes are sent and stored as they are, decompressed only for a peer that
accepts nothing else, and never compressed.
"""

from __future__ import annotations

from pydicom.uid import (
    JPEG2000,
    AllTransferSyntaxes,
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

__all__ = [
    "COMPRESSED",
    "NATIVE",
    "NOT_ACCEPTED",
    "STORAGE",
    "UNCOMPRESSED",
]

#: The uncompressed syntaxes, the preferred first: every DICOM application
#: supports Implicit VR Little Endian (PS3.5 10.1), most prefer Explicit.
UNCOMPRESSED: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
)

#: :data:`UNCOMPRESSED` and Deflated Explicit VR Little Endian (the whole data set
#: deflated, pixel data native): what a decoded data set converts between.
NATIVE: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)

#: Compressed syntaxes proposed for C-GET beside :data:`UNCOMPRESSED` when the
#: instances' syntaxes are not known in advance (the common ones, and deflate).
COMPRESSED: tuple[str, ...] = (
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
    DeflatedExplicitVRLittleEndian,
)

#: Not accepted by our SCPs: JPIP HTJ2K Referenced Deflate has a deflated data
#: set that pydicom does not flag as deflated, so its header cannot be read.
NOT_ACCEPTED: frozenset[str] = frozenset({"1.2.840.10008.1.2.4.205"})

#: Accepted by our Storage SCPs for every storage SOP class, in order of
#: preference when a requestor proposes several in one presentation context:
#: every compressed syntax pydicom knows, then :data:`NATIVE`. A requestor
#: that proposes a compressed syntax beside native ones in one context (DCMTK
#: getscu ``+xs`` does, for every SOP class) holds data in it or was told to
#: compress: accepting a native one would make it decompress, or fail when it
#: cannot. What arrives is stored as received. (DCMTK storescp ``+xa``
#: prefers compressed syntaxes too; requestors that propose one context per
#: syntax, such as storescu, are not affected.)
STORAGE: tuple[str, ...] = (
    *(ts for ts in AllTransferSyntaxes if ts not in NATIVE and ts not in NOT_ACCEPTED),
    *NATIVE,
)
