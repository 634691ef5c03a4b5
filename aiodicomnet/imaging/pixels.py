"""Decoding pixel data and applying the modality rescale, slice by slice.

pydicom decodes; this module picks nothing itself but says clearly what is
missing. Compressed transfer syntaxes (JPEG baseline and lossless, JPEG-LS,
JPEG 2000, RLE) need a decoding plugin: pylibjpeg with its libjpeg, openjpeg
and rle plugins, pyjpegls, or python-gdcm, all in the ``imaging`` extra.
Without one, :func:`check_decodable` raises :class:`MissingExtra` naming
the extra, before any pixel is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import pixel_array
from pydicom.uid import UID

from .errors import MissingExtra, NotAnImage, PixelDataError

__all__ = ["Rescale", "check_decodable", "decode_frames", "output_dtype", "rescale_into"]

#: (slope, intercept)
Rescale = tuple[float, float]


def check_decodable(transfer_syntax: str, name: str) -> None:
    """Raise unless pydicom can decode pixel data in ``transfer_syntax``.

    Raises:
        MissingExtra: a decoder exists but none of its plugins is installed.
        PixelDataError: pydicom knows no decoder for this transfer syntax.
    """
    ts = UID(transfer_syntax)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:
        raise PixelDataError(
            f"{name}: no pixel data decoder for transfer syntax {ts} ({ts.name})"
        ) from exc
    if not decoder.is_available:
        raise MissingExtra(
            f"decoding {ts.name} pixel data ({name})",
            ("pylibjpeg with its plugins, pyjpegls or python-gdcm",),
        )


def decode_frames(ds: Dataset, name: str) -> np.ndarray:
    """The stored values of every frame, shape (frames, rows, columns).

    Raises:
        NotAnImage: no pixel data, or more than one sample per pixel.
        PixelDataError: the pixel data cannot be decoded.
    """
    if "PixelData" not in ds:
        raise NotAnImage(f"{name}: no Pixel Data")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise NotAnImage(
            f"{name}: {ds.SamplesPerPixel} samples per pixel "
            f"({ds.get('PhotometricInterpretation', '')}); a volume needs one (monochrome)"
        )
    check_decodable(ds.file_meta.TransferSyntaxUID, name)
    try:
        arr: np.ndarray = pixel_array(ds)
    except (ValueError, RuntimeError, NotImplementedError, AttributeError, KeyError) as exc:
        raise PixelDataError(f"{name}: cannot decode its pixel data ({exc})") from exc
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    return arr


def output_dtype(bits_stored: int, signed: bool, rescales: Sequence[Rescale]) -> np.dtype[Any]:
    """The narrowest type that holds every rescaled value exactly.

    Integer slopes and intercepts keep integers (int16 if every possible
    stored value rescaled fits, else int32); any fractional one gives float32
    (float64 past float32's exact integers), as ITK's GDCM reader does.
    """
    low = -(2 ** (bits_stored - 1)) if signed else 0
    high = 2 ** (bits_stored - 1) - 1 if signed else 2**bits_stored - 1
    ends = [v for s, i in rescales for v in (low * s + i, high * s + i)]
    lo, hi = min(ends), max(ends)
    if all(float(s).is_integer() and float(i).is_integer() for s, i in rescales):
        for dtype in (np.int16, np.int32):
            info = np.iinfo(dtype)
            if info.min <= lo and hi <= info.max:
                return np.dtype(dtype)
        return np.dtype(np.float64)
    if max(abs(lo), abs(hi)) < 2**24:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def rescale_into(out: np.ndarray, stored: np.ndarray, rescale: Rescale) -> None:
    """``out[...] = stored * slope + intercept``, without a temporary where it can."""
    slope, intercept = rescale
    if out.dtype.kind in "iu":
        # The loop runs in the output's type: int16 stored values plus an
        # intercept may need int32, and must not wrap around first.
        if slope == 1:
            np.add(stored, int(intercept), out=out, dtype=out.dtype, casting="unsafe")
        else:
            np.multiply(stored, int(slope), out=out, dtype=out.dtype, casting="unsafe")
            out += int(intercept)
    else:
        np.multiply(stored, slope, out=out, dtype=out.dtype, casting="unsafe")
        out += intercept
