"""The MAAS metadata status endpoint: one signed JSON POST per event, with the clock skew corrected.

Where events go (`resolve_target`: `maas.*` settings over cloud-init's reporter configuration). The
transport goes straight to MAAS, never through the HTTP proxy (MAAS is on the provisioning network), with the
TLS policy of every outgoing HTTPS connection (tls.py). A 401/403 whose `Date` shows our clock is off is
retried once with the corrected timestamp, and the skew is shared through cloud-init's skew file.
Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import urllib.error
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit
from urllib.request import HTTPSHandler, ProxyHandler, Request, build_opener  # noqa: TID251  # MAAS status posts

import structlog

from harmonic_installer import __version__, cloudinit_cfg, maas_clock, oauth, tls
from harmonic_installer.config import Settings, redact_url
from harmonic_installer.urls import is_http_url

log = structlog.get_logger()

_SKEW_MIN_CHANGE_S = 5

Target = cloudinit_cfg.WebhookConfig  # where events go and the OAuth credentials that sign them


def resolve_target(
    settings: Settings, *, find: Callable[[], cloudinit_cfg.WebhookConfig | None] = cloudinit_cfg.find_webhook
) -> Target | None:
    """The MAAS status endpoint for this run, or None when reporting is off or not configured.

    Explicit `maas.*` settings win field by field over cloud-init's webhook reporter configuration.
    """
    if settings.maas.enabled == "false":
        return None
    explicit = {
        "endpoint": settings.maas.endpoint,
        "consumer_key": settings.maas.consumer_key,
        "consumer_secret": settings.maas.consumer_secret,
        "token_key": settings.maas.token_key,
        "token_secret": settings.maas.token_secret,
    }
    complete = all(explicit[n] for n in ("endpoint", "consumer_key", "token_key", "token_secret"))
    found = None if complete else find()
    merged: dict[str, str] = {}
    borrowed = []
    for name, value in explicit.items():
        merged[name] = value or ""
        if not value and found is not None and getattr(found, name):
            merged[name] = getattr(found, name)
            borrowed.append(name)
    sources = []
    if any(explicit.values()):
        sources.append("settings maas.*")
    if found is not None and borrowed:
        sources.append(f"cloud-init {found.source}")
    endpoint = merged["endpoint"]
    if not endpoint:
        if settings.maas.enabled == "true":
            log.warning("report.not_configured", reason="maas.enabled=true but no endpoint set or found in cloud-init")
        else:
            log.info("report.off", reason="no MAAS endpoint set or found in cloud-init's reporting config")
        return None
    if not is_http_url(endpoint):
        log.warning("report.off", reason=f"MAAS endpoint is not an http(s) URL: {redact_url(endpoint)!r}")
        return None
    return Target(source=" + ".join(sources), **merged)


def oauth_header(target: Target, *, timestamp: int, nonce: str) -> str:
    """The `Authorization` header for `target`'s credentials (oauth.py: PLAINTEXT)."""
    return oauth.header(
        consumer_key=target.consumer_key,
        consumer_secret=target.consumer_secret,
        token_key=target.token_key,
        token_secret=target.token_secret,
        timestamp=timestamp,
        nonce=nonce,
    )


class Transport(Protocol):
    """Sends one POST; returns the status code and the response headers (errors as status codes too)."""

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> tuple[int, Mapping[str, str]]:
        """POST `body`; raise OSError when there is no HTTP answer (refused, timed out, reset)."""
        ...


class UrllibTransport:
    """The standard library's HTTP client, with no proxy (MAAS is reached directly) and the TLS policy of
    every outgoing HTTPS connection (tls.py: the system store, or `server.ca_file`)."""

    def __init__(self, ca_file: Path | str | None = None) -> None:
        self._opener = build_opener(ProxyHandler({}), HTTPSHandler(context=tls.client_context(ca_file)))

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> tuple[int, Mapping[str, str]]:
        """POST `body` to `url`; every HTTP status is returned, only a missing answer raises."""
        request = Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310
        try:
            with self._opener.open(request, timeout=timeout) as response:
                response.read(64 * 1024)
                return response.status, dict(response.headers)
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, dict(exc.headers or {})
        except urllib.error.URLError as exc:
            reason = exc.reason
            raise OSError(str(reason) if not isinstance(reason, OSError) else reason) from exc


class StatusClient:
    """Posts events to one MAAS status endpoint; `post` answers '' on success, else why not (never raises)."""

    def __init__(
        self,
        target: Target,
        *,
        transport: Transport,
        timeout_s: float,
        wall: Callable[[], float],
        skew_file: str | None = None,
        log_from_worker: Callable[..., None] | None = None,
    ) -> None:
        self._target = target
        self._transport = transport
        self._timeout = timeout_s
        self._wall = wall
        self._skew_file = Path(skew_file) if skew_file else None
        self._host = urlsplit(target.endpoint).netloc
        self._log = log_from_worker or _log
        self.skew = maas_clock.read_skew(self._skew_file, self._host) if self._skew_file else 0

    def post(self, event: Mapping[str, Any], happened: float) -> str:
        """One POST of `event` (stamped `happened` + skew), plus one immediate retry after a 401/403 that
        revealed a clock skew; '' on success."""
        for _ in range(2):
            body = dict(event, timestamp=happened + self.skew)
            data = json.dumps(body).encode("ascii")  # MAAS accepts ASCII only; json escapes the rest
            headers = {
                "Content-Type": "application/json",
                "User-Agent": f"harmonic-installer/{__version__}",
            }
            if self._target.signed:
                headers["Authorization"] = oauth_header(
                    self._target, timestamp=int(self._wall()) + self.skew, nonce=secrets.token_hex(16)
                )
            try:
                status, response_headers = self._transport.post(self._target.endpoint, data, headers, self._timeout)
            except OSError as exc:
                return f"no answer: {exc}"
            if 200 <= status < 300:
                return ""
            if status in (401, 403) and self._learn_skew(response_headers):
                continue
            return f"HTTP {status}"
        return "HTTP 401/403 again after correcting the clock skew"

    def _learn_skew(self, headers: Mapping[str, str]) -> bool:
        """Adopt the server's clock from its Date header; True when the skew changed enough to retry."""
        skew = maas_clock.server_skew(headers, self._wall())
        if skew is None or abs(skew - self.skew) <= _SKEW_MIN_CHANGE_S:
            return False
        shown = redact_url(self._target.endpoint)
        self._log(log.warning, "report.clock_skew", skew_s=skew, previous_s=self.skew, endpoint=shown)
        self.skew = skew
        if self._skew_file is not None:
            try:
                maas_clock.write_skew(self._skew_file, self._host, skew)
            except OSError as exc:
                self._log(log.debug, "report.skew_not_saved", path=str(self._skew_file), error=str(exc))
        return True


def _log(emit: Callable[..., Any], event: str, **values: Any) -> None:
    with contextlib.suppress(Exception):
        emit(event, **values)
