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

__all__ = ["Part", "boundary_of", "closing", "iter_parts", "media_type", "part_header"]

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


async def iter_parts(chunks: AsyncIterable[bytes], boundary: bytes) -> AsyncIterator[Part]:
    """Yield the parts of a multipart body arriving as ``chunks``.

    Raises:
        ProtocolError: no opening delimiter, a malformed part header, or the
            body ended before the close delimiter (truncated).
    """
    delimiter = b"--" + boundary
    inner = _CRLF + delimiter  # what ends a part's content
    buf = bytearray()
    stream = aiter(chunks)
    ended = False

    async def more() -> bool:
        nonlocal ended
        if ended:
            return False
        try:
            buf.extend(await anext(stream))
        except StopAsyncIteration:
            ended = True
            return False
        return True

    # The preamble (usually empty), then the first delimiter.
    while True:
        at = buf.find(delimiter)
        if at == 0 or (at > 0 and buf[at - 2 : at] == _CRLF):
            del buf[: at + len(delimiter)]
            break
        if len(buf) > MAX_PREAMBLE:
            raise ProtocolError("no multipart delimiter at the start of the response")
        if not await more():
            raise ProtocolError(
                "the response ended before its first multipart delimiter"
                if not buf
                else "no multipart delimiter in the response"
            )
    count = 0
    while True:
        # After a delimiter: "--" closes the body, else (padding and) CRLF opens a part.
        while len(buf) < 2 and await more():
            pass
        if buf[:2] == b"--":
            return
        end_of_line = buf.find(_CRLF)
        while end_of_line < 0:
            if len(buf) > 1024 or not await more():
                raise _truncated(count)
            end_of_line = buf.find(_CRLF)
        if buf[:end_of_line].strip(b" \t"):
            raise ProtocolError(f"unexpected bytes after a multipart delimiter: {buf[:40]!r}")
        del buf[: end_of_line + 2]
        # The header block ends with an empty line (it may be empty itself).
        if buf[:2] == _CRLF:
            headers: dict[str, str] = {}
            del buf[:2]
        else:
            end = buf.find(_CRLF + _CRLF)
            while end < 0:
                if len(buf) > MAX_HEADER:
                    raise ProtocolError("a multipart part header is too long")
                if not await more():
                    raise _truncated(count)
                end = buf.find(_CRLF + _CRLF)
            headers = _headers(bytes(buf[:end]))
            del buf[: end + 4]
        # The content, up to CRLF--boundary; search only what is new.
        searched = 0
        while True:
            end = buf.find(inner, searched)
            if end >= 0:
                break
            searched = max(0, len(buf) - len(inner) + 1)
            if not await more():
                raise _truncated(count)
        with memoryview(buf) as view:
            content = bytes(view[:end])  # one copy (a bytearray slice would make two)
        del buf[: end + len(inner)]
        count += 1
        yield Part(headers, content)


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
