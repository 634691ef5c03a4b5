"""A received data set, read without decoding it: structure check, bounded inflation, header.

A C-STORE data set is kept (or written) byte for byte as it arrived, so nothing
decodes it on the way in; yet it must not be acknowledged unless it can be
read back. :func:`check` walks it to the end without decoding a value: every
element header, every length, into sequences and items and the fragments of
encapsulated pixel data, and it fails when anything runs past the end of what
arrived (a data set cut inside its pixel data would otherwise be stored and
acknowledged) or is not DICOM at all. It costs a few microseconds per element
and never looks at pixel values.

A deflated data set (Deflated Explicit VR Little Endian) is inflated as a
stream while it is walked, a chunk at a time, never whole: a 500 KiB data set
can inflate to 1 GiB. Inflating stops with :class:`TooLarge` once the output
passes :func:`inflate_limit` (the larger of :data:`INFLATE_FLOOR` and
:data:`INFLATE_RATIO` times the deflated size): real deflated data sets
inflate by a factor of a few, a deflate bomb by a thousand.

The walk also notes where the *header* ends: the top-level elements before
Pixel Data (tags below ``(7FE0,0000)``). :func:`parse_header` decodes only that
part, and only up to the last attribute asked for.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from collections.abc import Callable
from functools import cache

from pydicom._dicom_dict import DicomDictionary
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset

__all__ = [
    "HEADER_END_TAG",
    "INFLATE_FLOOR",
    "INFLATE_RATIO",
    "Checked",
    "Malformed",
    "TooLarge",
    "check",
    "encode_file_meta",
    "inflate_limit",
    "parse_header",
]

#: The header is every top-level element with a tag below this one (Pixel Data's group).
HEADER_END_TAG = 0x7FE00000
#: A deflated data set may always inflate to this many bytes ...
INFLATE_FLOOR = 64 * 1024 * 1024
#: ... or to this many times its deflated size, whichever is larger.
INFLATE_RATIO = 100

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_MAX_DEPTH = 64  # nested sequences; real data sets nest a handful deep
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_VR = re.compile(rb"[A-Z]{2}")
_INFLATE_IN = 64 * 1024  # deflated bytes fed to zlib at a time
_INFLATE_OUT = 256 * 1024  # inflated bytes produced at a time


class Malformed(ValueError):
    """The data set is not a well-formed DICOM data set (or ends too early)."""


class TooLarge(ValueError):
    """A deflated data set inflates past the limit."""


def inflate_limit(deflated_size: int) -> int:
    """How many bytes a deflated data set of ``deflated_size`` bytes may inflate to."""
    return max(INFLATE_FLOOR, INFLATE_RATIO * deflated_size)


@cache
def _sequence_tags() -> frozenset[int]:
    """Tags the data dictionary defines as SQ (an implicit VR data set does not say)."""
    return frozenset(tag for tag, entry in DicomDictionary.items() if entry[0] == "SQ")


# -- sources: what arrived, read forward ----------------------------------------------


class _Bytes:
    """A data set in memory."""

    def __init__(self, data: bytes | memoryview) -> None:
        self._view = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> memoryview:
        end = self.pos + n
        if end > len(self._view):
            raise Malformed(
                f"the data set ends at byte {len(self._view)}, inside an element "
                f"that needs {end - len(self._view)} more"
            )
        chunk = self._view[self.pos : end]
        self.pos = end
        return chunk

    def skip(self, n: int) -> None:
        self.take(n)

    def exhausted(self) -> bool:
        return self.pos >= len(self._view)

    def stop_recording(self) -> None:
        """Nothing to do: the header is a prefix of the data."""


class _Inflating:
    """A deflated data set, inflated a chunk at a time as it is read.

    While ``recording`` the inflated bytes read are kept (the header).
    """

    def __init__(self, data: bytes | memoryview, limit: int) -> None:
        self._input = memoryview(data)
        self._fed = 0
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buffer = bytearray()
        self._start = 0  # first unread byte of _buffer
        self._produced = 0
        self._limit = limit
        self.pos = 0
        self.recorded = bytearray()
        self._recording = True

    def _more(self) -> bool:
        """Inflate the next chunk into the buffer; False at the end of the stream."""
        inflater = self._inflater
        while not inflater.eof:
            pending: bytes | memoryview = inflater.unconsumed_tail
            if not pending:
                if self._fed >= len(self._input):
                    raise Malformed("the deflated data set ends inside its deflate stream")
                pending = self._input[self._fed : self._fed + _INFLATE_IN]
                self._fed += len(pending)
            try:
                out = inflater.decompress(pending, _INFLATE_OUT)
            except zlib.error as exc:
                raise Malformed(f"the deflated data set cannot be inflated: {exc}") from exc
            if out:
                self._produced += len(out)
                if self._produced > self._limit:
                    raise TooLarge(
                        f"the deflated data set ({len(self._input)} bytes) inflates past "
                        f"{self._limit} bytes"
                    )
                if self._start:
                    del self._buffer[: self._start]
                    self._start = 0
                self._buffer += out
                return True
        return False

    def take(self, n: int) -> bytes:
        while len(self._buffer) - self._start < n:
            if not self._more():
                raise Malformed(
                    f"the data set ends at byte {self.pos + len(self._buffer) - self._start}, "
                    f"inside an element"
                )
        chunk = bytes(self._buffer[self._start : self._start + n])
        self._start += n
        self.pos += n
        if self._recording:
            self.recorded += chunk
        return chunk

    def skip(self, n: int) -> None:
        while n:
            available = len(self._buffer) - self._start
            if not available and not self._more():
                raise Malformed(f"the data set ends at byte {self.pos}, inside an element")
            step = min(n, len(self._buffer) - self._start)
            if self._recording:
                self.recorded += self._buffer[self._start : self._start + step]
            self._start += step
            self.pos += step
            n -= step

    def exhausted(self) -> bool:
        return len(self._buffer) == self._start and not self._more()

    def stop_recording(self) -> None:
        self._recording = False


# -- the walk ------------------------------------------------------------------------


class _Walker:
    """Walks element headers and lengths, recursing into sequences and items."""

    def __init__(self, source: _Bytes | _Inflating, implicit: bool, little: bool) -> None:
        self.source = source
        self.implicit = implicit
        self.endian = "<" if little else ">"
        self.header_end: int | None = None

    def _tag_length(self, head: bytes | memoryview, endian: str) -> tuple[int, int]:
        group, element, length = struct.unpack_from(f"{endian}HHI", head)
        return (group << 16) | element, length

    def _element_header(self, implicit: bool, endian: str) -> tuple[int, bytes | None, int]:
        head = self.source.take(8)
        group, element = struct.unpack_from(f"{endian}HH", head)
        tag = (group << 16) | element
        if implicit or group == 0xFFFE:
            return tag, None, struct.unpack_from(f"{endian}I", head, 4)[0]
        vr = bytes(head[4:6])
        if vr in _LONG_VRS:
            return tag, vr, struct.unpack(f"{endian}I", self.source.take(4))[0]
        if not _VR.fullmatch(vr):
            raise Malformed(f"element ({group:04X},{element:04X}) has no valid VR ({vr!r})")
        return tag, vr, struct.unpack_from(f"{endian}H", head, 6)[0]

    def walk(self) -> None:
        self._data_set(None, self.implicit, self.endian, 0, top=True)
        if self.header_end is None:
            self.header_end = self.source.pos
            self.source.stop_recording()

    def _data_set(
        self, end: int | None, implicit: bool, endian: str, depth: int, *, top: bool
    ) -> None:
        """Elements up to ``end`` (a position), an item delimiter (``None``), or the end (top)."""
        source = self.source
        while True:
            if end is not None:
                if source.pos == end:
                    return
                if source.pos > end:
                    raise Malformed(f"an element runs past the end of its item at byte {end}")
            elif top and source.exhausted():
                return
            start = source.pos
            tag, vr, length = self._element_header(implicit, endian)
            if tag == _ITEM_END and end is None and not top:
                return
            if tag >> 16 == 0xFFFE:
                raise Malformed(
                    f"unexpected item tag ({tag >> 16:04X},{tag & 0xFFFF:04X}) at byte {start}"
                )
            if top and self.header_end is None and tag >= HEADER_END_TAG:
                self.header_end = start
                source.stop_recording()
            self._value(tag, vr, length, implicit, endian, depth)

    def _value(
        self, tag: int, vr: bytes | None, length: int, implicit: bool, endian: str, depth: int
    ) -> None:
        sequence = vr == b"SQ" or (vr is None and tag in _sequence_tags())
        if length == _UNDEFINED:
            if tag == _PIXEL_DATA or vr in (b"OB", b"OW"):
                self._fragments(endian)
            elif vr == b"UN":  # PS3.5 6.2.2: a sequence in Implicit VR Little Endian
                self._sequence(None, True, "<", depth)
            elif sequence or vr is None:
                self._sequence(None, implicit, endian, depth)
            else:
                raise Malformed(f"undefined length on a {vr.decode('ascii')} element")
        elif sequence:
            self._sequence(self.source.pos + length, implicit, endian, depth)
        else:
            self.source.skip(length)

    def _sequence(self, end: int | None, implicit: bool, endian: str, depth: int) -> None:
        if depth >= _MAX_DEPTH:
            raise Malformed(f"sequences nested more than {_MAX_DEPTH} deep")
        source = self.source
        while True:
            if end is not None:
                if source.pos == end:
                    return
                if source.pos > end:
                    raise Malformed(f"an item runs past the end of its sequence at byte {end}")
            tag, length = self._tag_length(source.take(8), endian)
            if tag == _SEQUENCE_END and end is None:
                return
            if tag != _ITEM:
                raise Malformed(
                    f"expected a sequence item, found ({tag >> 16:04X},{tag & 0xFFFF:04X})"
                )
            if length == _UNDEFINED:
                self._data_set(None, implicit, endian, depth + 1, top=False)
            else:
                item_end = source.pos + length
                if end is not None and item_end > end:
                    raise Malformed(f"an item runs past the end of its sequence at byte {end}")
                self._data_set(item_end, implicit, endian, depth + 1, top=False)

    def _fragments(self, endian: str) -> None:
        """Encapsulated pixel data: items of bytes, then a sequence delimiter."""
        while True:
            tag, length = self._tag_length(self.source.take(8), endian)
            if tag == _SEQUENCE_END:
                return
            if tag != _ITEM or length == _UNDEFINED:
                raise Malformed("encapsulated pixel data holds something else than fragments")
            self.source.skip(length)


class Checked:
    """What :func:`check` found: where the header ends, and its bytes.

    Attributes:
        header: the encoded header (the top-level elements before Pixel Data),
            inflated if the data set was deflated.
    """

    __slots__ = ("header",)

    def __init__(self, header: bytes | memoryview) -> None:
        self.header = header


def check(data: bytes | memoryview, *, implicit: bool, little: bool, deflated: bool) -> Checked:
    """Walk a received data set to its end without decoding a value.

    Raises:
        Malformed: it is empty, cut short, or not a DICOM data set.
        TooLarge: it is deflated and inflates past :func:`inflate_limit`.
    """
    if not len(data):
        raise Malformed("the data set is empty")
    if deflated:
        inflating = _Inflating(data, inflate_limit(len(data)))
        _Walker(inflating, implicit, little).walk()
        return Checked(bytes(inflating.recorded))
    walker = _Walker(_Bytes(data), implicit, little)
    walker.walk()
    assert walker.header_end is not None
    return Checked(memoryview(data)[: walker.header_end])


def parse_header(
    header: bytes | memoryview, *, implicit: bool, little: bool, last_tag: int | None = None
) -> Dataset:
    """Decode the top-level header elements (up to ``last_tag`` when given).

    Values stay raw until read (pydicom decodes on access), so this is cheap.
    """
    stop: Callable[[int, str | None, int], bool] | None = None
    if last_tag is not None:
        limit = last_tag

        def stop(tag: int, vr: str | None, length: int) -> bool:
            return tag > limit

    return read_dataset(io.BytesIO(header), implicit, little, stop_when=stop)


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element (group 0002 has no long-form VRs but OB)."""
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    if vr == b"OB":
        return struct.pack("<HH2s2xI", tag >> 16, tag & 0xFFFF, vr, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def encode_file_meta(
    sop_class: str,
    sop_instance: str,
    transfer_syntax: str,
    source_ae: str,
    implementation: tuple[str, str],
) -> bytes:
    """The File Meta Information group, encoded (what pydicom would write, quicker).

    ``implementation`` is the (Implementation Class UID, Implementation Version
    Name) of the software that received the instance.
    """
    uid, version = implementation
    body = b"".join(
        (
            _element(0x00020001, b"OB", b"\x00\x01"),
            _element(0x00020002, b"UI", sop_class.encode("ascii")),
            _element(0x00020003, b"UI", sop_instance.encode("ascii")),
            _element(0x00020010, b"UI", transfer_syntax.encode("ascii")),
            _element(0x00020012, b"UI", uid.encode("ascii")),
            _element(0x00020013, b"SH", version.encode("ascii")),
            _element(0x00020016, b"AE", source_ae.encode("ascii")) if source_ae else b"",
        )
    )
    return _element(0x00020000, b"UL", struct.pack("<I", len(body))) + body
