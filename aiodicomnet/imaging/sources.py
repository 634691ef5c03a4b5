"""Where the slices of a volume come from: data sets, files, bytes or received instances.

:func:`as_source` wraps each kind in a :class:`Source` with two readings:
:meth:`Source.header` (everything but the pixel data, cheap) and
:meth:`Source.dataset` (complete, to decode the pixels). A volume reads
every header first, checks the geometry, allocates its voxels once, and then
reads one complete data set at a time: memory holds the voxels and one
slice's encoded pixels, never the whole series twice.

Received instances are read from the bytes they were received as (or from
their file): their cached :attr:`~aiodicomnet.ReceivedInstance.dataset` is
not used, so loading a volume does not leave every slice decoded a second
time in memory.
"""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Union

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.uid import UID

from ..storage import IncomingInstance, ReceivedInstance
from .errors import NotAnImage

__all__ = ["Source", "SourceLike", "as_source"]

#: What a volume can be built from.
SourceLike = Union[Dataset, str, "os.PathLike[str]", bytes, ReceivedInstance, IncomingInstance]

_PIXEL_DATA = 0x7FE00010


def _before_pixels(tag: int, vr: str | None, length: int) -> bool:
    return tag >= _PIXEL_DATA


class Source:
    """One instance to read slices from (see :func:`as_source`).

    Attributes:
        name: how messages name it (a path, or the SOP Instance UID).
    """

    def __init__(self, name: str, read: Callable[[bool], Dataset]) -> None:
        self.name = name
        self._read = read

    def header(self) -> Dataset:
        """The data set without its pixel data."""
        return self._guarded(True)

    def dataset(self) -> Dataset:
        """The complete data set (pixel data still encoded)."""
        return self._guarded(False)

    def _guarded(self, header_only: bool) -> Dataset:
        try:
            return self._read(header_only)
        except (InvalidDicomError, EOFError, ValueError, KeyError, zlib.error) as exc:
            raise NotAnImage(f"{self.name}: not a readable DICOM data set ({exc})") from exc

    def __repr__(self) -> str:
        return f"<Source {self.name}>"


def _from_encoded(encoded: bytes, transfer_syntax: str, header_only: bool) -> Dataset:
    """A data set from its encoding (no preamble, no File Meta) and its transfer syntax."""
    ts = UID(transfer_syntax)
    data = zlib.decompress(encoded, -zlib.MAX_WBITS) if ts.is_deflated else encoded
    ds = read_dataset(
        io.BytesIO(data),
        ts.is_implicit_VR,
        ts.is_little_endian,
        stop_when=_before_pixels if header_only else None,
    )
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ts
    ds.file_meta = meta
    ds.set_original_encoding(ts.is_implicit_VR, ts.is_little_endian)
    return ds


def _from_file(path: str | os.PathLike[str], header_only: bool) -> Dataset:
    return dcmread(path, stop_before_pixels=header_only)


def _header_of(ds: Dataset) -> Dataset:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return ds
    header = Dataset()
    header.update({tag: elem for tag, elem in ds.items() if tag < _PIXEL_DATA})
    if hasattr(ds, "file_meta"):
        header.file_meta = ds.file_meta
    return header


def as_source(item: SourceLike) -> Source:
    """Wrap one item: a pydicom Dataset (with ``file_meta``), the path of a
    Part 10 file, the bytes of one, a :class:`~aiodicomnet.ReceivedInstance`
    (in memory or on disk) or an :class:`~aiodicomnet.IncomingInstance`.
    """
    if isinstance(item, Source):
        return item
    if isinstance(item, Dataset):
        ds = item
        name = str(ds.get("SOPInstanceUID", "a data set"))
        return Source(name, lambda header_only: _header_of(ds) if header_only else ds)
    if isinstance(item, ReceivedInstance):
        received = item
        if received.in_memory and not received.transfer_syntax_uid.is_deflated:
            return Source(
                received.sop_instance_uid,
                lambda h: _from_encoded(received.encoded, received.transfer_syntax_uid, h),
            )
        if received.path is not None:
            path = received.path
            return Source(str(path), lambda h: _from_file(path, h))
        return Source(
            received.sop_instance_uid,
            lambda h: dcmread(io.BytesIO(received.read()), stop_before_pixels=h),
        )
    if isinstance(item, IncomingInstance):
        incoming = item
        return Source(
            incoming.sop_instance_uid,
            lambda h: _from_encoded(incoming.encoded, incoming.transfer_syntax_uid, h),
        )
    if isinstance(item, bytes):
        data = item
        return Source(
            "a Part 10 byte string", lambda h: dcmread(io.BytesIO(data), stop_before_pixels=h)
        )
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        return Source(str(path), lambda h: _from_file(path, h))
    raise TypeError(
        f"cannot read slices from {type(item).__name__}: pass Datasets, paths, Part 10 bytes, "
        "ReceivedInstance or IncomingInstance objects"
    )
