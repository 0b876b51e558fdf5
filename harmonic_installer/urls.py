"""The one test of an HTTP URL (base module): http or https, with a host. Callers word their own refusal."""

from __future__ import annotations

from urllib.parse import urlsplit


def is_http_url(value: str) -> bool:
    """`value` is an http:// or https:// URL naming a host."""
    parts = urlsplit(value)
    return parts.scheme in {"http", "https"} and bool(parts.hostname)
