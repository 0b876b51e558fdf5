"""Clock skew against MAAS: the server's `Date` header against the local clock, for OAuth timestamps.

A freshly booted node's clock may be far off; MAAS refuses OAuth timestamps outside its window with 401/403.
Like cloud-init's and curtin's `OauthUrlHelper`, a client learns the skew from the refusal's `Date` header,
signs with `local time + skew` and retries once. The skew file (/run/oauth_skew.json, `{host:port: seconds}`)
is the one cloud-init and curtin share within a boot.

The `Date` header is read with the project's one HTTP-date parser (formats.py).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

from harmonic_installer.formats import http_date

SKEW_FILE = "/run/oauth_skew.json"


def server_skew(headers: Mapping[str, str], local_wall: float) -> int | None:
    """Whole seconds the server's clock (its `Date` header) is ahead of ours, or None without a usable Date."""
    date = next((v for k, v in headers.items() if k.lower() == "date"), None)
    when = http_date(date) if date else None
    if when is None:
        return None
    try:
        return int(when.timestamp() - local_wall)
    except (OverflowError, ValueError, OSError):
        return None


def read_skew(path: Path, host: str) -> int:
    """The skew cloud-init or curtin learned for `host` (host:port) earlier in this boot (0 if none)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get(host, 0)
    except (OSError, ValueError, AttributeError):
        return 0
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def write_skew(path: Path, host: str, skew: int) -> None:
    """Share the learned skew with later programs, in cloud-init's format (atomic); raises OSError."""
    data: object = {}
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text(encoding="utf-8"))
    merged = data if isinstance(data, dict) else {}
    merged[host] = skew
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(merged), encoding="utf-8")
    os.replace(part, path)
