"""The HTTP edge of the fleet client: one request in, (status, headers, body) out. Standard library only.

The only module of the operator side that opens connections (ruff TID251 allows urllib.request here). Like
the MAAS CLI (httplib2), it honours the usual proxy environment variables; https verifies against the
profile's CA certificates when the profile has them, else the system store.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

MAX_BODY = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP answer (any status)."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """A header's value, case-insensitively."""
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


class Transport(Protocol):
    """Sends one request; every HTTP status is an answer, no answer raises OSError."""

    def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> Response:
        """Send the request; raise OSError when there is no HTTP answer (refused, timed out, DNS)."""
        ...


class UrllibTransport:
    """urllib.request, redirects not followed for POST (urllib never re-POSTs), CA bundle from the profile."""

    def __init__(self, cacerts: str | None = None) -> None:
        handlers: list[urllib.request.BaseHandler] = []
        if cacerts:
            handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cadata=cacerts)))
        self._opener = urllib.request.build_opener(*handlers)

    def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> Response:
        """Send it; every HTTP status is returned, only a missing answer raises OSError."""
        req = urllib.request.Request(url, data=body, headers=dict(headers), method=method)  # noqa: S310
        try:
            with self._opener.open(req, timeout=timeout) as answer:
                return Response(answer.status, dict(answer.headers), answer.read(MAX_BODY))
        except urllib.error.HTTPError as exc:
            with exc:
                return Response(exc.code, dict(exc.headers or {}), exc.read(MAX_BODY))
        except urllib.error.URLError as exc:
            reason = exc.reason
            raise OSError(str(reason)) from exc
