"""One GET through the right door: per-hop proxy decision, redirects, and a resend after a stale keep-alive.

Part of the downloader (the download package is the only user of httpx). httpx follows
redirects on the client that made the first request, so the first URL's proxy decision would be kept for
the whole chain; here each hop picks the client for its own URL. A request that fails on a *reused*
connection before any byte of a response arrived (the server or a proxy closed it without saying
`Connection: close`, and the close reached us late) is sent once more at once on a new connection, as curl
and wget do; it is not an attempt of the retry policy and has no backoff. A 407 from the proxy is not
worth another attempt: it is a DownloadError naming the proxy (credentials redacted).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import httpcore  # noqa: TID251  # download owner: the read size of httpx's transport
import httpx  # noqa: TID251  # download owner: the HTTP transport below the downloader
import structlog

from harmonic_installer import __version__, tls
from harmonic_installer.config import redact_url
from harmonic_installer.errors import DownloadError

if TYPE_CHECKING:
    from harmonic_installer.download.policy import DownloadPolicy

log = structlog.get_logger()

# httpcore reads the socket 64 KiB at a time and copies every read through h11's buffer; 1 MiB reads cut the
# CPU per GiB by a third (3.6 -> 2.4 s, tests/bench/results/README.md). Process-wide, but the download package
# is the only user of httpx/httpcore. Peak RSS stays flat (about +11 MiB).
httpcore.HTTP11Connection.READ_NUM_BYTES = 1024 * 1024

MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_IDEMPOTENT = frozenset({"GET", "HEAD"})
_NEW_CONNECTION = "connection.connect_tcp.started"
_HEADERS_RECEIVED = "http11.receive_response_headers.complete"


@dataclass(slots=True)
class Exchange:
    """What the requests of one file did on the wire, across attempts (for the final message)."""

    new_connections: int = 0
    resent: int = 0
    last_status: int | None = None


class ClientPool:
    """One httpx client per proxy decision; a client is closed (with its idle connections) when dropped."""

    def __init__(self, proxy_for: Callable[[str], str | None], make: Callable[[str | None], httpx.Client]) -> None:
        self._proxy_for = proxy_for
        self._make = make
        self._clients: dict[str | None, httpx.Client] = {}

    def proxy_for(self, url: str) -> str | None:
        """The proxy decision for `url` (None: direct)."""
        return self._proxy_for(url)

    def client(self, url: str) -> httpx.Client:
        """The client for `url`'s proxy decision (made on first use)."""
        proxy = self._proxy_for(url)
        client = self._clients.get(proxy)
        if client is None:
            client = self._clients[proxy] = self._make(proxy)
        return client

    def drop(self, url: str) -> None:
        """Close the client for `url`'s proxy decision: its next request opens a new connection."""
        client = self._clients.pop(self._proxy_for(url), None)
        if client is not None:
            client.close()

    def close(self) -> None:
        """Close every client."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def client_factory(
    policy: DownloadPolicy, transport: httpx.BaseTransport | None
) -> Callable[[str | None], httpx.Client]:
    """What makes the HTTP client of one proxy decision (redirects are followed here, hop by hop, not by httpx).

    One TLS context (tls.py, with server.ca_file) is made on first use and shared by every client.
    """
    contexts: list[ssl.SSLContext] = []

    def make(proxy: str | None) -> httpx.Client:
        if not contexts:
            contexts.append(tls.client_context(policy.ca_file))
        p = policy
        return httpx.Client(
            trust_env=False,
            proxy=proxy,
            verify=contexts[0],
            timeout=httpx.Timeout(
                connect=p.connect_timeout_s, read=p.read_timeout_s, write=p.read_timeout_s, pool=p.connect_timeout_s
            ),
            headers={"Accept-Encoding": "identity", "User-Agent": f"harmonic-installer/{__version__}"},
            follow_redirects=False,
            transport=transport,
        )

    return make


@contextmanager
def stream_get(
    pool: ClientPool,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    exchange: Exchange | None = None,
    method: str = "GET",
) -> Iterator[httpx.Response]:
    """Stream the response to `url` after following redirects; `response.history` holds the hops.

    Raises:
        httpx.HTTPError: the transport failed (the caller's retry policy decides).
        DownloadError: a redirect loop or too many hops, a redirect to another scheme, a 407 from the proxy.
    """
    exchange = exchange if exchange is not None else Exchange()
    history: list[httpx.Response] = []
    seen = {url}
    current = url
    while True:
        resp = _send(pool, method, current, dict(headers or {}), exchange)
        location = resp.headers.get("location")
        if resp.status_code not in _REDIRECTS or not location:
            break
        _drain(resp)
        history.append(resp)
        target = urljoin(str(resp.url), location)
        shown = redact_url(url)
        if urlsplit(target).scheme not in ("http", "https"):
            raise DownloadError(f"downloading {shown}: redirected to {redact_url(target)!r}, which is not http(s)")
        if target in seen:
            raise DownloadError(f"downloading {shown}: redirect loop at {redact_url(target)} ({len(history)} hops)")
        if len(history) > MAX_REDIRECTS:
            raise DownloadError(f"downloading {shown}: more than {MAX_REDIRECTS} redirects")
        seen.add(target)
        log.debug(
            "download.redirected",
            status=resp.status_code,
            to=redact_url(target),
            proxy=_shown(pool.proxy_for(target)),
        )
        current = target
    resp.history = history
    try:
        yield resp
    finally:
        resp.close()


def _send(pool: ClientPool, method: str, url: str, headers: dict[str, str], exchange: Exchange) -> httpx.Response:
    """One hop: send, and once more on a new connection if a reused one died before any response byte."""
    for resend in (False, True):
        client = pool.client(url)
        events: list[str] = []

        def trace(name: str, _info: Any, events: list[str] = events) -> None:
            events.append(name)

        request = client.build_request(method, url, headers=headers, extensions={"trace": trace})
        try:
            resp = client.send(request, stream=True)
        except httpx.ProxyError as exc:
            exchange.new_connections += _NEW_CONNECTION in events
            if str(exc).startswith("407"):
                raise _proxy_auth(url, pool.proxy_for(url)) from exc
            raise
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            opened = _NEW_CONNECTION in events
            exchange.new_connections += opened
            if resend or opened or _HEADERS_RECEIVED in events or method not in _IDEMPOTENT or not _no_reply(exc):
                raise
            exchange.resent += 1
            log.info(
                "download.resent",
                url=redact_url(url),
                error=f"{type(exc).__name__}: {exc}",
                reason="the reused connection was closed before any response arrived; sending again on a new one",
            )
            pool.drop(url)
            continue
        exchange.new_connections += _NEW_CONNECTION in events
        exchange.last_status = resp.status_code
        proxy = pool.proxy_for(url)
        if proxy is not None and (resp.status_code == 407 or (resp.status_code == 401 and _has_credentials(proxy))):
            resp.close()
            raise _proxy_auth(url, proxy, resp.status_code)
        return resp
    raise AssertionError("unreachable")  # pragma: no cover


def _drain(resp: httpx.Response, limit: int = 64 * 1024) -> None:
    """Read a redirect's small body so its connection can be reused (as httpx does); a large one is dropped."""
    read = 0
    try:
        for chunk in resp.iter_raw():
            read += len(chunk)
            if read > limit:
                break
    finally:
        resp.close()


def _no_reply(exc: httpx.HTTPError) -> bool:
    """The failure says nothing of the response arrived (a write failed, or the peer closed or reset)."""
    if isinstance(exc, httpx.RemoteProtocolError):
        return str(exc).startswith("Server disconnected without sending a response")
    return True


def _has_credentials(proxy: str) -> bool:
    parts = urlsplit(proxy)
    return parts.username is not None or parts.password is not None


def _proxy_auth(url: str, proxy: str | None, status: int = 407) -> DownloadError:
    """A refusal of the proxy credentials (407; or 401, which tinyproxy answers to a wrong password)."""
    shown = _shown(proxy)
    said = (
        f"the proxy {shown} answered 407 Proxy Authentication Required"
        if status == 407
        else f"401 Unauthorized came back through the proxy {shown}, which rejects a wrong password that way "
        "(tinyproxy does)"
    )
    return DownloadError(
        f"downloading {redact_url(url)}: {said}; check the user:password in proxy.url "
        "(http://user:password@host:port), or list the server in proxy.no_proxy if it is to be reached "
        "directly; not retried",
        f"proxy {shown}, status {status}",
    )


def _shown(proxy: str | None) -> str:
    return redact_url(proxy) if proxy else "direct"
