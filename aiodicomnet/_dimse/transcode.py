"""Transfer syntax conversion: the one place that re-encodes an instance for a peer.

An instance is sent as it is held whenever the peer accepted its transfer
syntax. Otherwise :func:`choose` picks, among the syntaxes the peer accepted
for its SOP class, one the instance can be converted to, and :func:`to_syntax`
converts it:

* between the native (uncompressed) syntaxes: implicit and explicit VR,
  little and big endian, deflated. pynetdicom's ``send_c_store`` converts
  implicit/explicit and deflate/inflate, but not the byte order: it writes the
  bytes of OW, OF, OL, OD and OV values (Pixel Data among them) as they were
  read, so a big-endian instance re-encoded little endian by it has its pixels
  byte-swapped. Here those values are swapped word by word;
* from a compressed syntax to a native one (decompression), only when the
  peer accepted nothing else for the SOP class. It needs pydicom's pixel
  decoders: numpy and pylibjpeg with its plugins (the ``codecs`` extra,
  ``pip install aiodicomnet[codecs]``); RLE needs numpy only.

Compressing (native to compressed, or one compression to another) is never
done: lossy compression must be a user's decision, and lossless encoders are
an uncommon install. Such an instance cannot be sent on that association and
:func:`to_syntax` raises :class:`~aiodicomnet.errors.TranscodeError`, which the
callers turn into a failure of that one instance (never a silent drop).

Everything here decodes or encodes data sets: it runs in association threads
or worker threads, never on the event loop.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import correct_ambiguous_vr, dcmwrite
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from ..errors import TranscodeError
from ..transfer_syntaxes import NATIVE

__all__ = ["accepted_syntaxes", "choose", "for_contexts", "held_syntax", "to_syntax"]

_NATIVE = frozenset(NATIVE)

#: Value representations whose values are sequences of 2, 4 or 8 byte words kept as
#: bytes by pydicom: their byte order follows the transfer syntax (PS3.5 7.3).
_WORD_SIZE = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}

#: What to install for each missing decoder, named in the error.
_CODECS_HINT = (
    "install the pixel decoders: pip install 'aiodicomnet[codecs]' "
    "(numpy, pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg, pylibjpeg-rle)"
)


def choose(accepted: Iterable[str], held: str) -> str | None:
    """The transfer syntax to send an instance held in ``held`` with, or None.

    ``accepted`` are the syntaxes the peer accepted for the instance's SOP
    class (one per accepted presentation context). ``held`` itself when
    accepted (sent as it is); else a native syntax, in the order of
    :data:`~aiodicomnet.transfer_syntaxes.NATIVE` (Explicit VR Little Endian
    first), to convert or decompress to; None when nothing accepted can carry
    it (a native instance and only compressed syntaxes accepted, or one
    compression and only others accepted).
    """
    offered = {str(ts) for ts in accepted}
    if str(held) in offered:
        return str(held)
    for ts in NATIVE:
        if ts in offered:
            return str(ts)
    return None


def accepted_syntaxes(contexts: Iterable[Any], sop_class: str, *, role: str = "scu") -> list[str]:
    """The transfer syntaxes accepted for ``sop_class`` in which we may send a C-STORE.

    ``contexts`` are pynetdicom's accepted presentation contexts; ``role`` is
    ours for the C-STORE (``"scu"``: we send it, also as a C-GET SCP, where
    the role selection gives us the SCU role).
    """
    found: list[str] = []
    for cx in contexts:
        if str(cx.abstract_syntax) != str(sop_class) or not cx.transfer_syntax:
            continue
        if role == "scu" and cx.as_scu is False:
            continue
        found.append(str(cx.transfer_syntax[0]))
    return found


def held_syntax(ds: Dataset) -> str:
    """The transfer syntax ``ds`` is encoded in: its File Meta Information, else how it was read.

    A data set made in memory without File Meta Information counts as
    Explicit VR Little Endian (it has no byte order of its own yet).
    """
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return str(meta.TransferSyntaxUID)
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if little is False:
        return str(ExplicitVRBigEndian)
    return str(ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian)


def for_contexts(ds: Dataset, contexts: Iterable[Any], *, role: str = "scu") -> Dataset:
    """``ds`` as it can be sent on an association with these accepted ``contexts``.

    ``ds`` itself when its transfer syntax was accepted for its SOP class,
    or another native syntax of the same byte order (pynetdicom's
    ``send_c_store`` then encodes it in that one), or when nothing was
    accepted for the class at all (the sender then reports the missing
    context as it always does); otherwise a converted copy (see
    :func:`choose` and :func:`to_syntax`).

    Raises:
        TranscodeError: contexts were accepted for the SOP class, but none
            can carry the instance, or the conversion failed.
    """
    held = held_syntax(ds)
    sop_class = str(ds.get("SOPClassUID", ""))
    accepted = accepted_syntaxes(contexts, sop_class, role=role)
    if not accepted or held in accepted or _pynetdicom_converts(held, accepted):
        return ds
    target = choose(accepted, held)
    if target is None:
        raise TranscodeError(
            _describe(ds)
            + f" is held as {UID(held).name}, and the peer accepted only "
            + ", ".join(UID(ts).name for ts in accepted)
            + f" for {UID(sop_class).name}: compressing is not done",
            transfer_syntax=held,
            target=accepted[0],
        )
    return to_syntax(ds, target)


def _pynetdicom_converts(held: str, accepted: list[str]) -> bool:
    """Whether pynetdicom's ``send_c_store`` converts ``held`` to an accepted syntax itself.

    It encodes a data set in the accepted syntax of the same byte order
    (implicit/explicit VR, deflated or not): no need to encode it twice.
    """
    if held not in _NATIVE:
        return False
    little = UID(held).is_little_endian
    return any(ts in _NATIVE and UID(ts).is_little_endian == little for ts in accepted)


def to_syntax(source: Dataset | str | os.PathLike[str], transfer_syntax: str) -> Dataset:
    """A decoded data set encoded in ``transfer_syntax``, with its File Meta Information set.

    ``source`` is a data set (never modified: a converted copy is returned,
    or ``source`` itself when it is already in ``transfer_syntax``) or the
    path of a DICOM file. ``transfer_syntax`` must be native (uncompressed or
    deflated); a compressed source is decompressed first.

    The result reads as if it had been received in ``transfer_syntax``
    (``original_encoding`` and File Meta Information agree), so pynetdicom
    sends it without converting again.

    Raises:
        TranscodeError: the target is compressed, the source cannot be
            decompressed (no decoder installed: the message names the extra to
            install; or corrupt data), or it cannot be encoded.
    """
    target = UID(transfer_syntax)
    if isinstance(source, Dataset):
        ds = source
    else:
        try:
            ds = dcmread(source)
        except Exception as exc:
            raise TranscodeError(
                f"cannot read {os.fspath(source)}: {exc}", target=str(target)
            ) from exc
    held = UID(held_syntax(ds))
    if held == target:
        return ds
    if target not in _NATIVE:
        raise TranscodeError(
            f"{_describe(ds)}: converting {held.name} to {target.name} would mean "
            "compressing, which is not done",
            transfer_syntax=str(held),
            target=str(target),
        )
    ds = copy.deepcopy(ds)
    if held not in _NATIVE:
        _decompress(ds, held)
    source_little = UID(held_syntax(ds)).is_little_endian
    if source_little != target.is_little_endian:
        _swap_words(ds, source_little)
    return _reencode(ds, target)


def _decompress(ds: Dataset, held: UID) -> None:
    """Decode the pixel data in place: afterwards ``ds`` is Explicit VR Little Endian."""
    if "PixelData" not in ds:
        # Compressed syntaxes differ from Explicit VR Little Endian only in the pixel data.
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        return
    try:
        decoder = get_decoder(held)
    except NotImplementedError as exc:
        raise TranscodeError(
            f"{_describe(ds)}: no decoder exists for {held.name}",
            transfer_syntax=str(held),
        ) from exc
    if not decoder.is_available:
        raise TranscodeError(
            f"{_describe(ds)}: cannot decompress {held.name} to send it uncompressed: "
            + _CODECS_HINT,
            transfer_syntax=str(held),
        )
    try:
        ds.decompress(generate_instance_uid=False)
    except Exception as exc:
        raise TranscodeError(
            f"{_describe(ds)}: decompressing {held.name} failed: {exc}",
            transfer_syntax=str(held),
        ) from exc


def _swap_words(ds: Dataset, little_endian: bool) -> None:
    """Reverse the byte order of every OW/OF/OL/OD/OV value, at every depth.

    Ambiguous VRs are first settled as the standard says (PS3.5 A.1 c),
    reading numbers in the order they were held (``little_endian``), so that
    Pixel Data read as implicit VR is known to be OW or OB.
    """
    correct_ambiguous_vr(ds, little_endian)
    for elem in ds.iterall():
        size = _WORD_SIZE.get(str(elem.VR))
        if size is None or not isinstance(elem.value, bytes | bytearray) or not elem.value:
            continue
        value = bytes(elem.value)
        if len(value) % size:
            raise TranscodeError(
                f"{_describe(ds)}: {elem.tag} ({elem.VR}) has {len(value)} bytes, not a "
                f"multiple of {size}: cannot change its byte order"
            )
        swapped = bytearray(len(value))
        for i in range(size):
            swapped[i::size] = value[size - 1 - i :: size]
        elem.value = bytes(swapped)


def _reencode(ds: Dataset, target: UID) -> Dataset:
    """Encode ``ds`` in ``target`` and read it back, so that the data set says how it is held."""
    meta = FileMetaDataset(getattr(ds, "file_meta", None) or FileMetaDataset())
    meta.TransferSyntaxUID = target
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta
    buffer = BytesIO()
    try:
        dcmwrite(
            buffer,
            ds,
            implicit_vr=target.is_implicit_VR,
            little_endian=target.is_little_endian,
        )
        buffer.seek(0)
        converted = dcmread(buffer, force=True)
    except TranscodeError:
        raise
    except Exception as exc:
        raise TranscodeError(
            f"{_describe(ds)}: cannot encode as {target.name}: {exc}", target=str(target)
        ) from exc
    converted.file_meta = meta
    return converted


def _describe(ds: Dataset) -> str:
    return f"instance {ds.get('SOPInstanceUID', '(no SOP Instance UID)')}"
