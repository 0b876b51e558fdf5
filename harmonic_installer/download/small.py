"""Small files (SHA256SUMS and its signature): the whole body in memory, retried under the same policy."""

from __future__ import annotations

from collections.abc import Callable

import httpx  # noqa: TID251  # download owner: the GET of a small file (DESIGN.md)
import structlog

from harmonic_installer.config import redact_url
from harmonic_installer.download.headers import content_length, looks_like_html, retry_after
from harmonic_installer.download.policy import RETRY_STATUSES, DownloadPolicy, Transient, retrying, transport_error
from harmonic_installer.download.request import ClientPool, Exchange, stream_get
from harmonic_installer.download.verdict import gave_up
from harmonic_installer.errors import DownloadError
from harmonic_installer.formats import human_bytes as human

log = structlog.get_logger()


def get_small(
    pool: ClientPool,
    url: str,
    policy: DownloadPolicy,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> bytes | None:
    """The body of a small file, retried per the policy; None on 404/410.

    Raises:
        DownloadError: the server refused it, sent too much or an HTML page, or the retries ran out.
    """
    shown = redact_url(url)
    started = clock()
    failures: list[str] = []
    exchange = Exchange()

    def once() -> bytes | None:
        try:
            with stream_get(pool, url, exchange=exchange) as resp:
                return _body(resp, shown, policy.sums_max_bytes)
        except httpx.HTTPError as exc:
            raise transport_error(exc, shown) from exc

    try:
        return retrying(policy, log.bind(url=shown), clock=clock, sleep=sleep, failures=failures)(once)
    except Transient as exc:
        raise DownloadError(
            gave_up(
                shown,
                failures,
                exchange,
                elapsed_s=clock() - started,
                proxy=pool.proxy_for(url),
                budget=policy.budget(),
            )
        ) from exc


def _body(resp: httpx.Response, shown: str, limit: int) -> bytes | None:
    """The whole body of `resp` (at most `limit` bytes); None for 404/410."""
    if resp.status_code in (404, 410):
        return None
    if resp.status_code in RETRY_STATUSES:
        raise Transient(f"server answered {resp.status_code} {resp.reason_phrase}", retry_after(resp))
    if resp.status_code != 200:
        raise DownloadError(f"downloading {shown}: server answered {resp.status_code} {resp.reason_phrase}")
    body = bytearray()
    for chunk in resp.iter_raw():
        body += chunk
        if len(body) > limit:
            raise DownloadError(f"downloading {shown}: larger than {human(limit)}; not a checksum file")
    declared = content_length(resp)
    if declared is not None and declared != len(body):
        raise Transient(f"body cut off at {len(body)} of {declared} bytes")
    if looks_like_html(bytes(body[:512])):
        raise DownloadError(f"downloading {shown}: the server sent an HTML page instead of the file")
    return bytes(body)
