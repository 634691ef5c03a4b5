"""One DICOMweb node's HTTP side: its connection pool, credentials, limit and errors.

A :class:`Session` owns one :class:`httpx.AsyncClient` per node (so
connections are kept alive and reused, over HTTP/2 where offered), a
:class:`anyio.CapacityLimiter` (the node's ``concurrency``: requests at once),
and the credentials, refreshed when the server answers 401 and a token
function was given.  :meth:`Session.stream` is the one way a request is made:
every httpx exception and every HTTP error status leaves it as an error of
:mod:`aiodicomnet.errors`, never as httpx's own.
"""

from __future__ import annotations

import base64
import inspect
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import quote

import anyio
import httpx

from ..errors import (
    AssociationAborted,
    AuthError,
    ConnectError,
    ConnectTimeout,
    DicomError,
    DimseTimeout,
    HttpError,
    NotFound,
    ProtocolError,
    ServerError,
)
from ..nodes import WebNode
from ..timeouts import Timeouts

__all__ = ["BodyFactory", "Session", "raise_for_status", "translate"]

#: Makes a request body afresh (a streamed body cannot be sent twice, and a
#: request refused with 401 is sent again once the token is refreshed).
BodyFactory = Callable[[], Any]

_USER_AGENT = "aiodicomnet"


def _timeout(timeouts: Timeouts) -> httpx.Timeout:
    # connect: TCP (and TLS) set-up; read/write: each wait for the next bytes,
    # the DIMSE timeout's role over HTTP; pool: our own limiter does the waiting.
    return httpx.Timeout(
        connect=timeouts.connect, read=timeouts.dimse, write=timeouts.dimse, pool=None
    )


def _tls(node: WebNode) -> ssl.SSLContext | bool:
    if node.verify is False and node.cert is None:
        return False
    context = (
        ssl.create_default_context(cafile=node.verify)
        if isinstance(node.verify, str)
        else ssl.create_default_context()
    )
    if node.verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if node.cert is not None:
        certfile, keyfile = (node.cert, None) if isinstance(node.cert, str) else node.cert
        context.load_cert_chain(certfile, keyfile)
    return context


class Session:
    """The HTTP client, limiter and credentials of one :class:`WebNode`.

    Made on the event loop on first use of the node (see
    :class:`~aiodicomnet.dicomweb.WebTransport`); :meth:`aclose` closes its
    connections.
    """

    def __init__(self, node: WebNode, timeouts: Timeouts) -> None:
        self.node = node
        self.timeouts = timeouts
        self.limiter = anyio.CapacityLimiter(node.concurrency)
        headers = {"User-Agent": _USER_AGENT, **dict(node.headers)}
        limits = httpx.Limits(
            max_connections=node.concurrency + 1, max_keepalive_connections=node.concurrency
        )
        self._token: str | None = node.auth if isinstance(node.auth, str) else None
        self._token_lock = anyio.Lock()
        with translate(node, node.url):  # a bad CA bundle or certificate says so here
            self.http = httpx.AsyncClient(
                headers=headers,
                timeout=_timeout(timeouts),
                limits=limits,
                verify=_tls(node),
                http2=node.http2 and _have_h2(),
                follow_redirects=True,
            )

    async def aclose(self) -> None:
        """Close every connection of this node."""
        await self.http.aclose()

    def blocking_client(self) -> httpx.Client:
        """A blocking client like :attr:`http`, for requests read in worker threads
        (WADO-RS responses, parsed and stored where they are read).  Its owner
        closes it; closing it also ends a read blocked in another thread."""
        return httpx.Client(
            headers=self.http.headers,
            timeout=_timeout(self.timeouts),
            limits=httpx.Limits(max_connections=self.node.concurrency),
            verify=_tls(self.node),
            follow_redirects=True,
        )

    # -- credentials ---------------------------------------------------------------

    async def authorization(self, refresh: bool = False) -> str | None:
        """The Authorization header to send (a token function is called first, or
        again with ``refresh``); ``None`` without credentials."""
        auth = self.node.auth
        if auth is None:
            return None
        if isinstance(auth, tuple):
            user, password = auth
            pair = f"{user}:{password}".encode()
            return "Basic " + base64.b64encode(pair).decode("ascii")
        if callable(auth):
            async with self._token_lock:
                if self._token is None or refresh:
                    token = auth()
                    if inspect.isawaitable(token):
                        token = await token
                    if not isinstance(token, str) or not token:
                        raise AuthError(
                            401,
                            self.node.url,
                            "the token function returned no token",
                            node=self.node,
                        )
                    self._token = token
        return f"Bearer {self._token}"

    # -- requests ------------------------------------------------------------------

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        params: list[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        body: BodyFactory | None = None,
        limited: bool = True,
        keep: tuple[int, ...] = (),
    ) -> AsyncIterator[httpx.Response]:
        """Send a request; yield its response with the body not yet read.

        Holds one of the node's ``concurrency`` slots while the response is
        open (unless ``limited`` is false: a request made while its caller
        already holds one).  An error status raises (:func:`raise_for_status`);
        so does every transport failure, translated.  A 401 with a token
        function refreshes the token and sends the request once more.
        Statuses in ``keep`` are handed back, not raised (STOW-RS explains a
        409 in its body).
        """
        async with _slot(self.limiter if limited else None):
            for attempt in (1, 2):
                auth = await self.authorization(refresh=attempt == 2)
                request_headers = dict(headers or {})
                if auth is not None:
                    request_headers["Authorization"] = auth
                with translate(self.node, url, self.timeouts):
                    request = self.http.build_request(
                        method,
                        with_query(url, params),
                        headers=request_headers,
                        content=body() if body is not None else None,
                    )
                    response = await self.http.send(request, stream=True)
                try:
                    if response.status_code == 401 and attempt == 1 and callable(self.node.auth):
                        continue  # refresh the token, then once more
                    if response.status_code >= 400 and response.status_code not in keep:
                        with translate(self.node, url, self.timeouts):
                            detail = (await response.aread())[:300]
                        raise_for_status(self.node, response, detail)
                    with translate(self.node, url, self.timeouts):
                        yield response
                    return
                finally:
                    with anyio.CancelScope(shield=True):
                        await response.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: list[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        body: BodyFactory | None = None,
        limited: bool = True,
        keep: tuple[int, ...] = (),
    ) -> tuple[httpx.Response, bytes]:
        """:meth:`stream`, with the whole (small) body read: for JSON answers."""
        async with self.stream(
            method, url, params=params, headers=headers, body=body, limited=limited, keep=keep
        ) as response:
            with translate(self.node, url, self.timeouts):
                return response, await response.aread()


def with_query(url: str, params: list[tuple[str, str]] | None) -> str:
    """``url`` with its query string, wildcards left as they are.

    ``*`` and ``?`` are legal in a query (RFC 3986 3.4), and QIDO-RS reads them
    as wildcards; percent-encoded (as httpx's ``params`` does) some servers,
    Orthanc 1.10's plugin among them, take them literally and match nothing.
    The person-name separators ``^`` and ``=`` are left as they are for the
    same reason (``^`` is outside RFC 3986, but every HTTP stack passes it).
    """
    if not params:
        return url
    query = "&".join(f"{quote(k, safe=_SAFE)}={quote(v, safe=_SAFE)}" for k, v in params)
    return f"{url}?{query}"


_SAFE = "*?,-._~:/@!$'();=^"


@asynccontextmanager
async def _slot(limiter: anyio.CapacityLimiter | None) -> AsyncIterator[None]:
    if limiter is None:
        yield
        return
    async with limiter:
        yield


def raise_for_status(node: WebNode, response: httpx.Response, detail: bytes = b"") -> None:
    """Raise the error of :mod:`aiodicomnet.errors` that an HTTP error status means."""
    status = response.status_code
    if status < 400:
        return
    text = detail.decode("utf-8", "replace").strip().replace("\n", " ")
    url = str(response.request.url) if response.request is not None else node.url
    cls: type[HttpError] = HttpError
    if status in (401, 403):
        cls = AuthError
    elif status == 404:
        cls = NotFound
    elif status >= 500:
        cls = ServerError
    raise cls(status, url, text, node=node)


@contextmanager
def translate(node: WebNode, url: str, timeouts: Timeouts | None = None) -> Iterator[None]:
    """Turn httpx's exceptions (and TLS set-up errors) into aiodicomnet's."""
    try:
        yield
    except DicomError:
        raise
    except httpx.ConnectTimeout as exc:
        seconds = timeouts.connect if timeouts else None
        raise ConnectTimeout(
            f"no connection to {url} within the connect timeout ({seconds} s)",
            timeout="connect",
            seconds=seconds,
            node=node,
        ) from exc
    except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
        seconds = timeouts.dimse if timeouts else None
        raise DimseTimeout(
            f"{url}: the server sent nothing within the DIMSE (response) timeout ({seconds} s)",
            timeout="dimse",
            seconds=seconds,
            node=node,
        ) from exc
    except httpx.PoolTimeout as exc:  # pragma: no cover - the pool does not wait
        raise DimseTimeout(str(exc), timeout="pool", seconds=None, node=node) from exc
    except httpx.ConnectError as exc:
        raise ConnectError(f"cannot connect to {url}: {exc}", node=node) from exc
    except httpx.RemoteProtocolError as exc:
        raise ProtocolError(f"the server at {url} broke HTTP: {exc}", node=node) from exc
    except (httpx.ReadError, httpx.WriteError, httpx.CloseError) as exc:
        raise AssociationAborted(f"connection to {url} lost: {exc}", node=node) from exc
    except httpx.TooManyRedirects as exc:
        raise ProtocolError(f"{url}: too many redirects", node=node) from exc
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise ConnectError(f"{url}: {exc}", node=node) from exc
    except httpx.HTTPError as exc:
        raise ProtocolError(f"{url}: {type(exc).__name__}: {exc}", node=node) from exc
    except ssl.SSLError as exc:
        raise ConnectError(f"TLS set-up for {url} failed: {exc}", node=node) from exc
    except OSError as exc:  # a CA bundle or certificate file that cannot be read
        raise ConnectError(f"TLS set-up for {url} failed: {exc}", node=node) from exc


def _have_h2() -> bool:
    import importlib.util

    return importlib.util.find_spec("h2") is not None
