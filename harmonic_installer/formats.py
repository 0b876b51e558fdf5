"""The one HTTP-date parser and the one byte formatter (base module: standard library only)."""

from __future__ import annotations

import email.utils
from datetime import datetime, timezone

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def http_date(raw: str) -> datetime | None:
    """An HTTP-date (RFC 9110 5.6.7, and the obsolete forms) as an aware datetime, UTC when it names no zone;
    None when it is not a date."""
    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def http_timestamp(raw: str) -> float:
    """The POSIX time of an HTTP-date (a server's Date header, for clock skew).

    Raises:
        ValueError: `raw` is not an HTTP-date.
    """
    when = http_date(raw)
    if when is None:
        raise ValueError(f"not an HTTP-date: {raw[:80]!r}")
    return when.timestamp()


def human_bytes(n: float, *, largest: str = "GiB") -> str:
    """A byte count (or rate) for people: '512 B', '1.5 KiB', '3.2 GiB'; no unit above `largest`
    (the download messages stop at GiB, the disk sizes of preflight go on to TiB)."""
    value = float(n)
    for unit in _UNITS[: _UNITS.index(largest) + 1]:
        if abs(value) < 1024 or unit == largest:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
