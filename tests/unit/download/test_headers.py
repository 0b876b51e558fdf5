"""download/headers.py: Content-Disposition, Content-Range, validators, Retry-After and HTML sniffing."""

from __future__ import annotations

from datetime import datetime, timezone

import httpx
import pytest

from harmonic_installer import formats
from harmonic_installer.download import headers


def response(**hdrs: str) -> httpx.Response:
    """A response carrying `hdrs` (underscores become dashes)."""
    return httpx.Response(200, headers={k.replace("_", "-"): v for k, v in hdrs.items()})


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ('attachment; filename="a b.iso"', "a b.iso"),
        ("attachment; filename=plain.iso", "plain.iso"),
        ("attachment; filename*=UTF-8''x%20y.iso; filename=\"z.iso\"", "x y.iso"),
        (r'attachment; filename="q\"uote.iso"', 'q"uote.iso'),
        ("inline", None),
        ("", None),
    ],
)
def test_disposition_filename(header: str, name: str | None) -> None:
    """filename* wins over filename; quoting and percent-encoding are undone; no name is None."""
    assert headers.disposition_filename(header) == name


def test_content_range_and_length() -> None:
    """Content-Range gives (start, end, total) with '*' as None; a non-numeric Content-Length is None."""
    assert headers.content_range("bytes 10-19/100") == (10, 19, 100)
    assert headers.content_range("bytes */100") == (None, None, 100)
    assert headers.content_range("rubbish") == (None, None, None)
    assert headers.content_length(response(content_length="42")) == 42
    assert headers.content_length(response(content_length="x")) is None


def test_validator_prefers_a_strong_etag() -> None:
    """A strong ETag is the validator; a weak one gives way to Last-Modified."""
    assert headers.validator(response(etag='"abc"', last_modified="Mon")) == '"abc"'
    assert headers.validator(response(etag='W/"abc"', last_modified="Mon")) == "Mon"
    assert headers.validator(response()) is None


def test_retry_after_seconds_and_date() -> None:
    """Retry-After in seconds, or as an HTTP-date measured against the server's Date header."""
    assert headers.retry_after(response(retry_after="7")) == 7.0
    dated = response(retry_after="Mon, 07 Dec 2026 10:00:30 GMT", date="Mon, 07 Dec 2026 10:00:00 GMT")
    assert headers.retry_after(dated) == 30.0
    assert headers.retry_after(response(retry_after="soon")) is None
    assert headers.retry_after(response()) is None


def test_http_date_is_aware() -> None:
    """An HTTP-date parses to an aware UTC datetime; garbage is None."""
    assert formats.http_date("Mon, 07 Dec 2026 10:00:00 GMT") == datetime(2026, 12, 7, 10, tzinfo=timezone.utc)
    assert formats.http_date("not a date") is None


def test_html_sniffing_and_title() -> None:
    """An HTML start is recognised after whitespace, and its title is quoted for the message."""
    assert headers.looks_like_html(b"  \n<!DOCTYPE html><html>")
    assert not headers.looks_like_html(b"\x7fELF")
    assert headers.html_title_from(b"<html><title>Login</title>") == ": 'Login'"
    assert headers.html_title_from(b"<html>") == ""
