"""Setting values: one parser per kind of value (URL, path, size, list, ...), shared by every setting.

Each parser takes a raw value (TOML-typed, or a string from the kernel command line, the environment or a
flag) and returns the typed value, or raises ValueError with a short reason; config.py wraps that into a
ConfigError naming the key and where the value came from. No I/O.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harmonic_installer.names import check_name, name_problem
from harmonic_installer.noproxy import parse_entry as parse_no_proxy_entry
from harmonic_installer.urls import is_http_url


def as_str(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {type(raw).__name__}")
    return raw.strip()


def as_list(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        items = [p.strip() for p in raw.split(",")]
    elif isinstance(raw, (list, tuple)) and all(isinstance(x, str) for x in raw):
        items = [x.strip() for x in raw]
    else:
        raise ValueError("expected a list of strings or a comma-separated string")
    return tuple(i for i in items if i)


def as_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        low = raw.strip().lower()
        if low in {"1", "true", "yes", "on"}:
            return True
        if low in {"0", "false", "no", "off"}:
            return False
    raise ValueError("expected true/false (or 1/0, yes/no)")


def _number(raw: Any, *, minimum: float, maximum: float, integer: bool) -> float:
    """A finite number in [minimum, maximum]: NaN, infinities and absurd sizes are refused by the key."""
    if isinstance(raw, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(raw, (int, float)):
        number: float | int = raw
    elif isinstance(raw, str):
        text = raw.strip()
        try:
            number = int(text) if integer and re.fullmatch(r"[+-]?\d{1,30}", text) else float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {raw[:40]!r}") from None
    else:
        raise ValueError(f"expected a number, got {type(raw).__name__}")
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(f"must be a finite number, got {str(raw)[:40]!r}")
    if integer and isinstance(number, float) and not number.is_integer():
        raise ValueError(f"expected a whole number, got {raw!r}")
    if number < minimum:
        raise ValueError(f"must be at least {minimum:g}")
    if number > maximum:
        raise ValueError(f"must be at most {maximum:g}, got {str(raw)[:40]}")
    return float(number)


# Upper bounds: anything above is a typo or a unit mistake, and some (timeouts) overflow the OS's timers.
DAY_S = 86_400.0
_BIG_INT = 1 << 40  # bytes/s, MiB, GiB: far beyond any real value


def as_int(minimum: int, maximum: int = _BIG_INT) -> Callable[[Any], int]:
    return lambda raw: int(_number(raw, minimum=minimum, maximum=maximum, integer=True))


def as_float(minimum: float, maximum: float = 7 * DAY_S) -> Callable[[Any], float]:
    return lambda raw: _number(raw, minimum=minimum, maximum=maximum, integer=False)


def as_http_url(raw: Any) -> str:
    value = as_str(raw)
    parts = urlsplit(value)
    if not is_http_url(value):
        raise ValueError(f"must be an http:// or https:// URL with a host, got {redact_url(value)!r}")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query or fragment")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ValueError(f"has an invalid port: {redact_url(value)!r}") from None
    return value.rstrip("/")


def as_optional_url(raw: Any) -> str | None:
    value = as_str(raw)
    return as_http_url(value) if value else None


def safe_name(value: str) -> str:
    return check_name(value)


def as_deb_names(raw: Any) -> tuple[str, ...]:
    names = as_list(raw)
    if not names:
        raise ValueError("at least one package is required")
    for name in names:
        safe_name(name)
        if not name.endswith(".deb"):
            raise ValueError(f"{name!r} is not a .deb file name")
    if len(set(names)) != len(names):
        raise ValueError("lists a package twice")
    return names


def as_url_path(raw: Any) -> str:
    value = as_str(raw).strip("/")
    if not value:
        raise ValueError("must not be empty")
    for seg in value.split("/"):
        if seg in {"", ".", ".."} or not re.match(r"^[A-Za-z0-9._+~-]+$", seg):
            raise ValueError(f"{value!r} is not a clean relative URL path (no '..', no empty segments)")
    return value


ISO_NAME_PREFIX, ISO_NAME_SUFFIX = "APOLLO_PLATFORM-", ".iso"


def iso_filename_for(release: str) -> str:
    """The local ISO name for a release when the server does not reveal one."""
    return f"{ISO_NAME_PREFIX}{release}{ISO_NAME_SUFFIX}"


def as_release(raw: Any) -> str:
    release = safe_name(as_str(raw))
    problem = name_problem(iso_filename_for(release))
    if problem is not None:
        raise ValueError(f"the ISO's file name {ISO_NAME_PREFIX}<release>{ISO_NAME_SUFFIX} {problem}")
    return release


def as_sha256(raw: Any) -> str | None:
    value = as_str(raw).lower()
    if not value:
        return None
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError("must be 64 hexadecimal digits (a SHA-256)")
    return value


def as_abs_dir(raw: Any) -> Path:
    value = as_str(raw)
    if not value.startswith("/"):
        raise ValueError(f"must be an absolute path, got {value!r}")
    if posixpath.normpath(value) != value.rstrip("/") or "/../" in value + "/":
        raise ValueError(f"must be a normalised path without '..', got {value!r}")
    return Path(value)


def as_optional_file(raw: Any) -> Path | None:
    value = as_str(raw)
    return as_abs_dir(value) if value else None


def as_device(raw: Any) -> str | None:
    value = as_str(raw)
    if not value:
        return None
    if not value.startswith("/dev/"):
        raise ValueError(f"must be a path under /dev, got {value!r}")
    if posixpath.normpath(value) != value or ".." in value.split("/"):
        raise ValueError(f"must be a normalised /dev path without '..', got {value!r}")
    return value


def as_optional_str(raw: Any) -> str | None:
    value = as_str(raw)
    return value or None


def as_no_proxy(raw: Any) -> tuple[str, ...]:
    entries = as_list(raw)
    for entry in entries:
        parse_no_proxy_entry(entry)
    return entries


def as_auto_bool(raw: Any) -> str:
    if isinstance(raw, str) and raw.strip().lower() == "auto":
        return "auto"
    return "true" if as_bool(raw) else "false"


def as_token(raw: Any) -> str | None:
    value = as_str(raw)
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError("must be printable text without spaces")
    return value or None


def as_argv(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        argv = tuple(raw.split())
    elif isinstance(raw, (list, tuple)) and all(isinstance(x, str) for x in raw):
        argv = tuple(raw)
    else:
        raise ValueError("expected a command as a list of strings")
    if not argv:
        raise ValueError("must not be empty")
    return argv


def as_reboot_left_to(raw: Any) -> str | None:
    value = as_str(raw).lower()
    if value not in {"", "systemd", "cloud-init"}:
        raise ValueError(f"must be systemd, cloud-init or empty, got {value!r}")
    return value or None


def as_log_format(raw: Any) -> str:
    value = as_str(raw).lower()
    if value not in {"text", "json"}:
        raise ValueError(f"must be text or json, got {value[:40]!r}")
    return value


def as_command_name(raw: Any) -> str:
    value = as_str(raw)
    if not value or any(c.isspace() for c in value):
        raise ValueError("must be a command name or absolute path without spaces")
    return value


def redact_url(url: str) -> str:
    """The URL with any user:password replaced by '***' (for logs, reports and errors)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=f"***@{host}").geturl()
