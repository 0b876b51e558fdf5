"""What a response's headers (and the first bytes of its body) say: names, lengths, ranges, waits, HTML pages."""

from __future__ import annotations

import contextlib
import re
from datetime import datetime, timezone
from urllib.parse import unquote

import httpx  # noqa: TID251  # download owner: reads httpx responses (DESIGN.md)

from harmonic_installer.errors import DownloadError
from harmonic_installer.formats import http_date

_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


def disposition_filename(header: str) -> str | None:
    """The file name in a Content-Disposition header (filename* preferred), undecoded paths kept as is."""
    if not header:
        return None
    star = re.search(r"filename\*\s*=\s*([^;]+)", header, re.IGNORECASE)
    if star:
        value = star.group(1).strip()
        _charset, _, rest = value.partition("'")
        _lang, _, encoded = rest.partition("'")
        return unquote(encoded or value, errors="replace")
    plain = re.search(r'filename\s*=\s*("((?:[^"\\]|\\.)*)"|[^;\s]+)', header, re.IGNORECASE)
    if plain:
        quoted = plain.group(2)
        return re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else plain.group(1)
    return None


def check_representation(resp: httpx.Response, url_shown: str, filename: str) -> None:
    """Refuse an encoded body (offsets would be wrong) and an HTML page where a file was expected.

    Raises:
        DownloadError: naming what the server sent.
    """
    encoding = resp.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise DownloadError(
            f"downloading {url_shown}: the server sent Content-Encoding {encoding} although only identity "
            "was accepted; byte offsets and checksums would not match the file"
        )
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "text/html" and not filename.endswith((".html", ".htm")):
        raise DownloadError(
            f"downloading {url_shown}: the server sent an HTML page (status {resp.status_code}, {ctype}) "
            f"instead of the file{_html_title(resp)}"
        )


def content_length(resp: httpx.Response) -> int | None:
    """The announced length of the body, or None."""
    raw = resp.headers.get("content-length")
    if raw is None or not raw.strip().isdigit():
        return None
    return int(raw)


def content_range(raw: str) -> tuple[int | None, int | None, int | None]:
    """(first byte, last byte, total) of a Content-Range header; None for what it does not say."""
    match = _CONTENT_RANGE.fullmatch(raw.strip())
    if match is None:
        return None, None, None
    start, end, total = match.groups()

    def num(value: str | None) -> int | None:
        return int(value) if value is not None and value != "*" else None

    return num(start), num(end), num(total)


def validator(resp: httpx.Response) -> str | None:
    """What a later Range request may be conditioned on: a strong ETag, else Last-Modified, else None."""
    etag: str | None = resp.headers.get("etag")
    last_modified: str | None = resp.headers.get("last-modified")
    return etag if etag and not etag.startswith("W/") else last_modified


def retry_after(resp: httpx.Response) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    raw = resp.headers.get("retry-after", "").strip()
    if not raw:
        return None
    if raw.isdigit():
        return float(raw)
    when = http_date(raw)
    if when is None:
        return None
    # Measured against the server's own Date: a freshly booted node's clock may be wrong.
    now = http_date(resp.headers.get("date", "")) or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def looks_like_html(head: bytes) -> bool:
    """The first bytes of a body are an HTML page."""
    start = head[:512].lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def html_title_from(head: bytes) -> str:
    """': <title>' of an HTML page's first bytes, for an error message; '' without one."""
    match = re.search(rb"<title[^>]*>([^<]{1,120})", head[:4096], re.IGNORECASE)
    if not match:
        return ""
    return f": {match.group(1).decode('utf-8', 'replace').strip()!r}"


def _html_title(resp: httpx.Response) -> str:
    with contextlib.suppress(httpx.HTTPError):
        for chunk in resp.iter_raw():
            return html_title_from(chunk)
    return ""
