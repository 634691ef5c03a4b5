"""Remote nodes: DIMSE application entities (:class:`Node`), DICOMweb services
(:class:`WebNode`), and AE title validation.

A client's services take either kind (:data:`AnyNode`): ``client.find(node, query)``
runs C-FIND on a :class:`Node` and QIDO-RS on a :class:`WebNode`.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .identity import UserIdentity

__all__ = ["AnyNode", "Auth", "Node", "WebNode", "validate_ae_title"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_ae_title(title: str) -> str:
    """Check an AE title (PS3.5 Table 6.2-1, VR AE) and return it without padding.

    An AE title has 1 to 16 characters from the default character repertoire,
    no backslash, no control characters, and is not only spaces. Leading and
    trailing spaces are not significant and are removed.

    Raises:
        ValueError: naming the bad title and what is wrong with it.
    """
    if not isinstance(title, str):
        raise ValueError(f"AE title must be a str, not {type(title).__name__}: {title!r}")
    if len(title) > 16:
        raise ValueError(f"AE title {title!r} is longer than 16 characters")
    if "\\" in title:
        raise ValueError(f"AE title {title!r} contains a backslash")
    if _CONTROL.search(title):
        raise ValueError(f"AE title {title!r} contains a control character")
    if not title.isascii():
        raise ValueError(f"AE title {title!r} contains non-ASCII characters")
    stripped = title.strip(" ")
    if not stripped:
        raise ValueError(f"AE title {title!r} is empty or only spaces")
    return stripped


@dataclass(frozen=True)
class Node:
    """A remote DICOM application entity: AE title, host and port.

    Args:
        ae_title: the peer's AE title (the Called AE Title we send).
        host: host name or IP address (IPv6 without brackets).
        port: TCP port.
        name: an optional display name (defaults to the AE title).
        tls: DICOM over TLS: the :class:`ssl.SSLContext` our associations
            with the node use (see :func:`aiodicomnet.tls.client_context`);
            ``None`` (default) for plain TCP. The handshake is bounded by the
            connect timeout; a failed one raises :class:`~aiodicomnet.TlsError`.
        identity: the user identity offered in every association with the
            node (:class:`~aiodicomnet.UserIdentity`: username, passcode,
            Kerberos, SAML or JWT); its ``repr`` hides the secrets.
    """

    ae_title: str
    host: str
    port: int
    name: str | None = None
    tls: ssl.SSLContext | None = field(default=None, repr=False)
    identity: UserIdentity | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", validate_ae_title(self.ae_title))
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError(f"Node host must be a non-empty string, not {self.host!r}")
        if self.host.startswith("[") or any(c.isspace() for c in self.host):
            raise ValueError(
                f"Node host {self.host!r}: give the address without brackets or spaces"
            )
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ValueError(f"Node port must be an int, not {self.port!r}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"Node port {self.port} is outside 1-65535")
        if self.identity is not None and not isinstance(self.identity, UserIdentity):
            raise ValueError(
                f"Node identity must be a UserIdentity, not {type(self.identity).__name__}"
            )
        if self.tls is not None and not isinstance(self.tls, ssl.SSLContext):
            raise ValueError(f"Node tls must be an ssl.SSLContext, not {type(self.tls).__name__}")

    @staticmethod
    def web(url: str, **options: Any) -> WebNode:
        """A DICOMweb node (QIDO-RS, WADO-RS, STOW-RS) at base ``url``.

        The same as :class:`WebNode` ``(url, ...)``; see it for the options
        (``auth``, ``verify``, ``cert``, ``headers``, prefixes, limits).
        """
        return WebNode(url, **options)

    @classmethod
    def parse(cls, text: str, *, name: str | None = None) -> Node:
        """Parse ``"AET@host:port"`` (``"AET@[::1]:104"`` for IPv6).

        Raises:
            ValueError: when the text is not of that form or a part is invalid.
        """
        aet, sep, rest = text.rpartition("@")
        if not sep:
            raise ValueError(f"node {text!r} is not of the form AET@host:port")
        if rest.startswith("["):
            host, bracket, port_text = rest[1:].partition("]")
            if not bracket or not port_text.startswith(":"):
                raise ValueError(f"node {text!r}: expected AET@[ipv6]:port")
            port_text = port_text[1:]
        else:
            host, colon, port_text = rest.rpartition(":")
            if not colon:
                raise ValueError(f"node {text!r} has no port (AET@host:port)")
            if ":" in host:  # "AET@fe80::1" must not read as host "fe80:", port 1
                raise ValueError(f"node {text!r}: an IPv6 address needs brackets, AET@[ipv6]:port")
        if not port_text.isdigit() or not port_text.isascii():
            raise ValueError(f"node {text!r}: port {port_text!r} is not a number")
        return cls(aet, host, int(port_text), name)

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``."""
        return (self.host, self.port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        label = f"{self.ae_title}@{host}:{self.port}"
        return f"{self.name} ({label})" if self.name and self.name != self.ae_title else label


#: A token, or a function returning one (plain or ``async``): a bearer token refresher.
TokenSource = str | Callable[[], "str | Awaitable[str]"]

#: What :class:`WebNode` accepts as ``auth``: ``None``, ``(user, password)`` for HTTP
#: basic, a bearer token, or a callable returning a (fresh) token.
Auth = None | tuple[str, str] | TokenSource


@dataclass(frozen=True)
class WebNode:
    """A DICOMweb origin server: QIDO-RS, WADO-RS and STOW-RS under one base URL.

    Args:
        url: the service's base URL, such as ``"https://pacs.example.org/dicom-web"``
            (``/studies`` and so on are appended).
        auth: ``(user, password)`` for HTTP basic; a string, sent as a bearer
            token; or a function (plain or ``async``) that returns a token,
            called before the first request and again, once, whenever the
            server answers 401 (an expired token is refreshed).
        verify: TLS verification: ``True`` (the system's CAs), ``False``, or the
            path of a CA bundle (PEM).
        cert: a client certificate: the path of a PEM holding certificate and
            key, or ``(certificate, key)`` paths.
        headers: extra HTTP headers sent with every request.
        qido_url, wado_url, stow_url: a different base URL for one service
            (some gateways serve them apart); default ``url``.
        name: a display name (defaults to the URL's host).
        concurrency: requests to this node at once (a study retrieve fetches
            its series in parallel up to this limit; STOW-RS batches likewise).
        page_size: QIDO-RS results asked for per request (``limit``); the
            next page (``offset``) is fetched as the results are read.
        transfer_syntax: the transfer syntax asked for in WADO-RS: ``"*"``
            (as stored, no transcoding), or a UID the server transcodes to.
        http2: offer HTTP/2 (needs the ``h2`` package; used where the server
            accepts it).

    ``auth`` is neither shown by ``repr`` nor compared: two nodes with the
    same URL and different credentials are the same node.
    """

    url: str
    auth: Auth = field(default=None, repr=False, compare=False)
    verify: bool | str = True
    cert: str | tuple[str, str] | None = field(default=None, repr=False)
    headers: Mapping[str, str] | tuple[tuple[str, str], ...] = field(
        default=(), repr=False, compare=False
    )
    qido_url: str | None = None
    wado_url: str | None = None
    stow_url: str | None = None
    name: str | None = None
    concurrency: int = 4
    page_size: int = 100
    transfer_syntax: str = "*"
    http2: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", _check_url(self.url, "url"))
        for attr in ("qido_url", "wado_url", "stow_url"):
            value = getattr(self, attr)
            if value is not None:
                object.__setattr__(self, attr, _check_url(value, attr))
        headers = self.headers
        pairs = tuple(headers.items()) if isinstance(headers, Mapping) else tuple(headers)
        checked = []
        for key, value in pairs:
            if not isinstance(key, str) or not isinstance(value, str) or not key:
                raise ValueError(f"WebNode headers must map str to str, not {key!r}: {value!r}")
            checked.append((key, value))
        object.__setattr__(self, "headers", tuple(checked))
        auth = self.auth
        if isinstance(auth, list):
            auth = tuple(auth)
            object.__setattr__(self, "auth", auth)
        if isinstance(auth, tuple):
            if len(auth) != 2 or not all(isinstance(part, str) for part in auth):
                raise ValueError("WebNode auth as a tuple must be (user, password) strings")
        elif auth is not None and not isinstance(auth, str) and not callable(auth):
            raise ValueError(
                "WebNode auth must be (user, password), a token string or a callable "
                f"returning a token, not {type(auth).__name__}"
            )
        if isinstance(auth, str) and not auth:
            raise ValueError("WebNode auth: an empty token")
        if not isinstance(self.verify, (bool, str)):
            raise ValueError(f"WebNode verify must be a bool or a CA bundle path: {self.verify!r}")
        if isinstance(self.verify, str) and not os.path.exists(self.verify):
            raise ValueError(f"WebNode verify: CA bundle {self.verify!r} does not exist")
        for name in ("concurrency", "page_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"WebNode {name} must be a positive int, not {value!r}")
        if not isinstance(self.transfer_syntax, str) or not self.transfer_syntax:
            raise ValueError(
                f"WebNode transfer_syntax must be '*' or a UID: {self.transfer_syntax!r}"
            )

    def service_url(self, service: str) -> str:
        """The base URL of ``"qido"``, ``"wado"`` or ``"stow"``."""
        own: str | None = getattr(self, f"{service}_url")
        return own or self.url

    @property
    def host(self) -> str:
        """The URL's host name."""
        return urlsplit(self.url).hostname or ""

    def __str__(self) -> str:
        return f"{self.name} ({self.url})" if self.name else self.url


def _check_url(url: object, what: str) -> str:
    if not isinstance(url, str):
        raise ValueError(f"WebNode {what} must be a str, not {type(url).__name__}")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"WebNode {what} {url!r} is not an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ValueError(f"WebNode {what} {url!r}: a base URL has no query or fragment")
    if parts.username or parts.password:
        raise ValueError(f"WebNode {what} {url!r}: give credentials as auth=, not in the URL")
    return url.strip().rstrip("/")


AnyNode = Node | WebNode
"""Either kind of node, :class:`Node` (DIMSE) or :class:`WebNode` (DICOMweb):
what the client's services and the fan-out recipes accept."""
