"""Where raw settings come from: the TOML file, the kernel command line, the environment.

Each reader returns {TOML key: raw value} for the keys it found and refuses a key not in `known` with a
ConfigError naming it; config.py parses the values and layers them. Reads files, nothing else.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from harmonic_installer.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on the target's Python 3.10
    import tomli as tomllib

CMDLINE_PREFIX = "harmonic."
ENV_PREFIX = "HARMONIC_"
# Kernel parameters in our namespace that are not settings (read by the systemd unit's condition).
_CMDLINE_MARKERS = frozenset({"install"})
# Environment variables in our namespace that are not settings.
_ENV_MARKERS = frozenset({"HARMONIC_CONFIG", "HARMONIC_CMDLINE_FILE"})
# Reserved for the test suite and the build tooling (HARMONIC_TEST_E2E, HARMONIC_TEST_CACHE, ...): not settings.
_ENV_RESERVED = "HARMONIC_TEST_"


def env_name(key: str) -> str:
    """The environment variable for a TOML key: 'server.url' -> 'HARMONIC_SERVER_URL'."""
    return ENV_PREFIX + key.replace(".", "_").upper()


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(_flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def read_config_file(path: Path, known: Collection[str]) -> dict[str, Any]:
    """Parse a TOML config file into {key: raw value}; unknown keys are an error naming them."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    flat = _flatten(data)
    unknown = sorted(k for k in flat if k not in known)
    if unknown:
        raise ConfigError(f"config file {path}: unknown key {unknown[0]} (known keys: harmonic-install settings)")
    return flat


def parse_cmdline(cmdline: str, known: Collection[str]) -> dict[str, str]:
    """Pick `harmonic.<key>=<value>` parameters out of a kernel command line."""
    found: dict[str, str] = {}
    for token in cmdline.split():
        if not token.startswith(CMDLINE_PREFIX):
            continue
        name, sep, value = token[len(CMDLINE_PREFIX) :].partition("=")
        if name in _CMDLINE_MARKERS:
            continue
        if name not in known:
            raise ConfigError(f"kernel command line: unknown parameter {CMDLINE_PREFIX}{name[:64]}")
        if not sep:
            raise ConfigError(f"kernel command line: {CMDLINE_PREFIX}{name} needs a value ({CMDLINE_PREFIX}{name}=...)")
        found[name] = value
    return found


def parse_environ(environ: Mapping[str, str], known: Collection[str]) -> dict[str, str]:
    """Pick `HARMONIC_<KEY>` variables out of an environment."""
    found: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _ENV_MARKERS or name.startswith(_ENV_RESERVED):
            continue
        key = next((k for k in known if env_name(k) == name), None)
        if key is None:
            raise ConfigError(f"environment: unknown variable {name} (see harmonic-install settings)")
        found[key] = value
    return found


def read_kernel_cmdline(environ: Mapping[str, str]) -> str:
    """The running kernel's command line ('' where there is none).

    HARMONIC_CMDLINE_FILE names another file to read instead of /proc/cmdline (to try a MAAS kernel
    parameter set on a workstation, and for tests).
    """
    path = Path(environ.get("HARMONIC_CMDLINE_FILE") or "/proc/cmdline")
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def default_environ() -> dict[str, str]:
    """A copy of the process environment (read once at start-up by the CLI)."""
    return dict(os.environ)
