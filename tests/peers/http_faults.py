"""A small in-process HTTP/1.1 server for DICOMweb fault injection.

Real servers (Orthanc) do not misbehave on demand; this one answers each
request with whatever the test's handler writes on the raw socket, so a test
can send a 401, a 500, a multipart body cut short, a connection dropped in
the middle of a chunked response, a wrong Content-Type, or nothing at all.
Every request is recorded (method, target, headers, body).  One connection
serves one request (``Connection: close``), which keeps the framing simple.

Use::

    async with http_peer(handler) as peer:
        node = adn.Node.web(peer.url)
"""

from __future__ import annotations

import contextlib
import io
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
from anyio.abc import SocketStream
from anyio.streams.tls import TLSListener
from pydicom.dataset import Dataset

__all__ = [
    "HttpPeer",
    "Request",
    "chunked_start",
    "dicom_bytes",
    "http_peer",
    "multipart_body",
    "respond",
    "respond_json",
]

BOUNDARY = "peer-boundary-0123"
_REASONS = {200: "OK", 202: "Accepted", 204: "No Content", 400: "Bad Request"}
_REASONS |= {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict"}
_REASONS |= {500: "Internal Server Error"}


@dataclass
class Request:
    """One request as received."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> list[tuple[str, str]]:
        return parse_qsl(urlsplit(self.target).query, keep_blank_values=True)

    @property
    def raw_query(self) -> str:
        return urlsplit(self.target).query


Handler = Callable[[Request, SocketStream], Awaitable[None]]


@dataclass
class HttpPeer:
    """The running server: its base URL and what it received."""

    url: str
    requests: list[Request] = field(default_factory=list)


async def _read_request(stream: SocketStream) -> Request | None:
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        try:
            chunk = await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return None
        buf.extend(chunk)
        if len(buf) > 65536:
            return None
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = bytearray(rest)
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        try:
            body.extend(await stream.receive())
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            break
    return Request(method, target, headers, bytes(body))


@asynccontextmanager
async def http_peer(
    handler: Handler, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[HttpPeer]:
    """Serve ``handler`` on a free loopback port for the duration of the block
    (over TLS with the server context ``tls``: then the URL is ``https://localhost``)."""
    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = tcp.extra(anyio.abc.SocketAttribute.local_port)
    listener: Any = tcp
    if tls is not None:
        listener = TLSListener(tcp, tls, standard_compatible=False)
    scheme, host = ("https", "localhost") if tls is not None else ("http", "127.0.0.1")
    peer = HttpPeer(f"{scheme}://{host}:{port}/dicom-web")

    async def serve(stream: Any) -> None:
        async with stream:
            request = await _read_request(stream)
            if request is None:
                return
            peer.requests.append(request)
            # The client may go away first.
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await handler(request, stream)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        try:
            yield peer
        finally:
            tg.cancel_scope.cancel()


# -- writing responses ------------------------------------------------------------------


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in {**headers, "Connection": "close"}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def respond(
    stream: SocketStream, status: int, body: bytes = b"", content_type: str | None = None
) -> None:
    """A complete response with Content-Length."""
    headers = {"Content-Length": str(len(body))}
    if content_type:
        headers["Content-Type"] = content_type
    await stream.send(_head(status, headers) + body)


async def respond_json(stream: SocketStream, doc: Any, status: int = 200) -> None:
    """A DICOM JSON response."""
    await respond(stream, status, json.dumps(doc).encode(), "application/dicom+json")


async def chunked_start(stream: SocketStream, content_type: str) -> None:
    """The head of a chunked response; send chunks with :func:`chunk`."""
    await stream.send(_head(200, {"Transfer-Encoding": "chunked", "Content-Type": content_type}))


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def multipart_body(parts: Iterable[bytes], *, close: bool = True) -> bytes:
    """A multipart/related body of application/dicom parts (without its close, if asked)."""
    out = b""
    for part in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
    if close:
        out += f"--{BOUNDARY}--\r\n".encode()
    return out


MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def dicom_bytes(ds: Dataset) -> bytes:
    """A dataset as a Part 10 file."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def series_json(study: str, series: str, count: int) -> list[dict[str, Any]]:
    """A QIDO-RS series answer with one series and its instance count."""
    return [
        {
            "0020000D": {"vr": "UI", "Value": [study]},
            "0020000E": {"vr": "UI", "Value": [series]},
            "00201209": {"vr": "IS", "Value": [count]},
        }
    ]
