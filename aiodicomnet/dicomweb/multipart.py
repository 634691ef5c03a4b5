"""multipart/related (RFC 2387) as a stream: read part by part, write without buffering.

WADO-RS answers a study, series or instance request with one multipart/related
body holding one DICOM instance per part; a study may be gigabytes.
:func:`iter_parts` reads such a body as it arrives and yields each part as
soon as its closing delimiter has been seen, so memory holds at most one part
(one instance) and a little more; never the whole response.  A body that ends
before its close delimiter is truncated, and says so: a retrieve cut short
must never pass for a complete one.

:func:`boundary_of` reads the boundary from a Content-Type;
:func:`part_header` and :func:`closing` write the pieces of a STOW-RS body.

Why not a library: the multipart parsers on PyPI are made for form uploads
(multipart/form-data, field names, spooling parts to temporary files); what
is needed here is a boundary search over an async byte stream and a header
block per part.  dicomweb-client, the reference, has its own for the same
reason (``_decode_multipart_message``), though on a body read whole.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from email.message import Message

from ..errors import ProtocolError

__all__ = [
    "MultipartReader",
    "Part",
    "boundary_of",
    "closing",
    "iter_parts",
    "media_type",
    "part_header",
]

_CRLF = b"\r\n"
#: The largest header block a part may have (a server sending more is broken).
MAX_HEADER = 16 * 1024
#: The most bytes before the first delimiter (the preamble, normally empty).
MAX_PREAMBLE = 64 * 1024


@dataclass(frozen=True)
class Part:
    """One body part: its headers (lower-case names) and its content."""

    headers: dict[str, str]
    content: bytes

    @property
    def content_type(self) -> str:
        """The part's media type without parameters, lower case ("" if not given)."""
        return media_type(self.headers.get("content-type", ""))


def _parse_content_type(value: str) -> Message:
    message = Message()
    message["content-type"] = value
    return message


def media_type(content_type: str) -> str:
    """``"multipart/related"`` for ``'multipart/related; type="application/dicom"'``."""
    return content_type.split(";", 1)[0].strip().lower()


def boundary_of(content_type: str) -> bytes:
    """The boundary parameter of a multipart Content-Type.

    Raises:
        ProtocolError: not multipart/related, or without a boundary.
    """
    if media_type(content_type) != "multipart/related":
        raise ProtocolError(f"expected a multipart/related response, not {content_type!r}")
    boundary = _parse_content_type(content_type).get_param("boundary")
    if not isinstance(boundary, str) or not boundary or len(boundary) > 200:
        raise ProtocolError(f"multipart/related without a usable boundary: {content_type!r}")
    return boundary.encode("ascii", "replace")


def _headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split(_CRLF):
        if not line:
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            raise ProtocolError(f"malformed multipart part header line {line[:80]!r}")
        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    return headers


class MultipartReader:
    """A push parser of a multipart body: :meth:`feed` it bytes, get the parts completed.

    Knows nothing of where the bytes come from, so the same parser reads an
    async stream (:func:`iter_parts`) and a blocking one (a worker thread).
    Holds at most one part and the bytes after it.
    """

    def __init__(self, boundary: bytes) -> None:
        self._delimiter = b"--" + boundary
        self._inner = _CRLF + self._delimiter  # what ends a part's content
        self._buf = bytearray()
        self._state = "preamble"
        self._headers: dict[str, str] = {}
        self._searched = 0
        self.count = 0

    @property
    def done(self) -> bool:
        """Whether the close delimiter has been read."""
        return self._state == "done"

    def feed(self, data: bytes) -> list[Part]:
        """Take the next bytes of the body; return the parts they complete.

        Raises:
            ProtocolError: no opening delimiter, a malformed part header.
        """
        buf = self._buf
        buf.extend(data)
        parts: list[Part] = []
        while True:
            if self._state == "preamble":
                at = buf.find(self._delimiter)
                if at == 0 or (at > 0 and buf[at - 2 : at] == _CRLF):
                    del buf[: at + len(self._delimiter)]
                    self._state = "delimiter"
                    continue
                if len(buf) > MAX_PREAMBLE:
                    raise ProtocolError("no multipart delimiter at the start of the response")
                return parts
            if self._state == "delimiter":
                # After a delimiter: "--" closes the body, else (padding and) CRLF opens a part.
                if len(buf) < 2:
                    return parts
                if buf[:2] == b"--":
                    self._state = "done"
                    continue
                end_of_line = buf.find(_CRLF)
                if end_of_line < 0:
                    if len(buf) > 1024:
                        raise ProtocolError("no line end after a multipart delimiter")
                    return parts
                if buf[:end_of_line].strip(b" \t"):
                    raise ProtocolError(
                        f"unexpected bytes after a multipart delimiter: {bytes(buf[:40])!r}"
                    )
                del buf[: end_of_line + 2]
                self._state = "headers"
                continue
            if self._state == "headers":
                # The header block ends with an empty line (it may be empty itself).
                if buf[:2] == _CRLF:
                    self._headers = {}
                    del buf[:2]
                else:
                    end = buf.find(_CRLF + _CRLF)
                    if end < 0:
                        if len(buf) > MAX_HEADER:
                            raise ProtocolError("a multipart part header is too long")
                        return parts
                    self._headers = _headers(bytes(buf[:end]))
                    del buf[: end + 4]
                self._state, self._searched = "content", 0
                continue
            if self._state == "content":
                # The content, up to CRLF--boundary; search only what is new.
                end = buf.find(self._inner, self._searched)
                if end < 0:
                    self._searched = max(0, len(buf) - len(self._inner) + 1)
                    return parts
                with memoryview(buf) as view:
                    content = bytes(view[:end])  # one copy (a bytearray slice would make two)
                del buf[: end + len(self._inner)]
                self.count += 1
                parts.append(Part(self._headers, content))
                self._state = "delimiter"
                continue
            buf.clear()  # done: the epilogue is ignored
            return parts

    def close(self) -> None:
        """The body has ended.

        Raises:
            ProtocolError: it ended before its close delimiter (truncated), or
                had no delimiter at all.
        """
        if self._state == "done":
            return
        if self._state == "preamble":
            raise ProtocolError(
                "the response ended before its first multipart delimiter"
                if not self._buf
                else "no multipart delimiter in the response"
            )
        raise _truncated(self.count)


async def iter_parts(chunks: AsyncIterable[bytes], boundary: bytes) -> AsyncIterator[Part]:
    """Yield the parts of a multipart body arriving as ``chunks``.

    Raises:
        ProtocolError: no opening delimiter, a malformed part header, or the
            body ended before the close delimiter (truncated).
    """
    reader = MultipartReader(boundary)
    async for chunk in chunks:
        for part in reader.feed(chunk):
            yield part
    reader.close()


def _truncated(count: int) -> ProtocolError:
    return ProtocolError(
        f"the multipart response is truncated: it ended inside part {count + 1}, "
        "before its close delimiter"
    )


def part_header(boundary: bytes, content_type: str, *, first: bool) -> bytes:
    """The delimiter and header block that open a part of a body being written."""
    lead = b"" if first else _CRLF
    return lead + b"--" + boundary + _CRLF + f"Content-Type: {content_type}".encode() + _CRLF * 2


def closing(boundary: bytes) -> bytes:
    """The close delimiter that ends a body being written."""
    return _CRLF + b"--" + boundary + b"--" + _CRLF


_TOKEN = re.compile(r"^[0-9A-Za-z'()+_,\-./:=?]{1,70}$")


def check_boundary(boundary: str) -> str:
    """Check a boundary we write (RFC 2046: 1 to 70 characters of a safe set)."""
    if not _TOKEN.fullmatch(boundary):
        raise ValueError(f"not a valid multipart boundary: {boundary!r}")
    return boundary
