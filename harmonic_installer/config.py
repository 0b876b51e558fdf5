"""Settings: the seed's defaults, overridden by a TOML file, the kernel command line, the environment and flags.

Precedence, lowest first: defaults < config file < kernel command line (`harmonic.<key>=<value>`)
< environment (`HARMONIC_<KEY>`, dots as underscores) < command-line flags. Every value remembers where
it came from (`Settings.sources`) so `harmonic-install settings` can say so. No network, no disks.
"""

from __future__ import annotations

import ipaddress
import math
import os
import posixpath
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harmonic_installer.errors import ConfigError
from harmonic_installer.names import check_name, name_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on the target's Python 3.10
    import tomli as tomllib

DEFAULT_CONFIG_FILE = Path("/etc/harmonic-installer/config.toml")
# "Reboot wanted": left by a run that installed, or that found the disk installed and pointed UEFI BootNext at it.
# The systemd unit (ExecStartPost) and the user-data (power_state) reboot only when it exists; a fixed path that
# does not follow paths.state_dir (tests/unit/test_systemd_unit.py checks that the unit uses this one).
REBOOT_MARKER = Path("/run/harmonic-installer.reboot")
CMDLINE_PREFIX = "harmonic."
ENV_PREFIX = "HARMONIC_"
# Kernel parameters in our namespace that are not settings (read by the systemd unit's condition).
_CMDLINE_MARKERS = frozenset({"install"})
# Environment variables in our namespace that are not settings.
_ENV_MARKERS = frozenset({"HARMONIC_CONFIG", "HARMONIC_CMDLINE_FILE"})
# Reserved for the test suite and the build tooling (HARMONIC_TEST_E2E, HARMONIC_TEST_CACHE, ...): not settings.
_ENV_RESERVED = "HARMONIC_TEST_"

SEED_PROXY_URL = "http://proxy4.spoc.charterlab.com:8080"
SEED_NO_PROXY = (
    "localhost",
    "127.0.0.1",
    "127.0.0.53",
    "spoc.charterlab.com",
    "nfv.charterlab.com",
    "proxy4.spoc.charterlab.com",
    "44.10.4.101/32",
    "44.10.4.200/32",
    "172.22.0.0/16",
)
SEED_SERVER_URL = "http://172.22.31.150:8080"


# ---------------------------------------------------------------------------------------------------------
# Value parsers: each takes a raw value (TOML-typed or a string) and returns the typed value or raises
# ValueError with a short reason; `_parse_key` wraps it into a ConfigError naming the key and the source.


def _as_str(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {type(raw).__name__}")
    return raw.strip()


def _as_list(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        items = [p.strip() for p in raw.split(",")]
    elif isinstance(raw, (list, tuple)) and all(isinstance(x, str) for x in raw):
        items = [x.strip() for x in raw]
    else:
        raise ValueError("expected a list of strings or a comma-separated string")
    return tuple(i for i in items if i)


def _as_bool(raw: Any) -> bool:
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


def _as_int(minimum: int, maximum: int = _BIG_INT) -> Callable[[Any], int]:
    return lambda raw: int(_number(raw, minimum=minimum, maximum=maximum, integer=True))


def _as_float(minimum: float, maximum: float = 7 * DAY_S) -> Callable[[Any], float]:
    return lambda raw: _number(raw, minimum=minimum, maximum=maximum, integer=False)


def _as_http_url(raw: Any) -> str:
    value = _as_str(raw)
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host, got {_redact_url(value)!r}")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query or fragment")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ValueError(f"has an invalid port: {_redact_url(value)!r}") from None
    return value.rstrip("/")


def _as_optional_url(raw: Any) -> str | None:
    value = _as_str(raw)
    return _as_http_url(value) if value else None


def _safe_name(value: str) -> str:
    return check_name(value)


def _as_deb_names(raw: Any) -> tuple[str, ...]:
    names = _as_list(raw)
    if not names:
        raise ValueError("at least one package is required")
    for name in names:
        _safe_name(name)
        if not name.endswith(".deb"):
            raise ValueError(f"{name!r} is not a .deb file name")
    if len(set(names)) != len(names):
        raise ValueError("lists a package twice")
    return names


def _as_url_path(raw: Any) -> str:
    value = _as_str(raw).strip("/")
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


def _as_release(raw: Any) -> str:
    release = _safe_name(_as_str(raw))
    problem = name_problem(iso_filename_for(release))
    if problem is not None:
        raise ValueError(f"the ISO's file name {ISO_NAME_PREFIX}<release>{ISO_NAME_SUFFIX} {problem}")
    return release


def _as_sha256(raw: Any) -> str | None:
    value = _as_str(raw).lower()
    if not value:
        return None
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError("must be 64 hexadecimal digits (a SHA-256)")
    return value


def _as_abs_dir(raw: Any) -> Path:
    value = _as_str(raw)
    if not value.startswith("/"):
        raise ValueError(f"must be an absolute path, got {value!r}")
    if posixpath.normpath(value) != value.rstrip("/") or "/../" in value + "/":
        raise ValueError(f"must be a normalised path without '..', got {value!r}")
    return Path(value)


def _as_optional_file(raw: Any) -> Path | None:
    value = _as_str(raw)
    return _as_abs_dir(value) if value else None


def _as_device(raw: Any) -> str | None:
    value = _as_str(raw)
    if not value:
        return None
    if not value.startswith("/dev/"):
        raise ValueError(f"must be a path under /dev, got {value!r}")
    if posixpath.normpath(value) != value or ".." in value.split("/"):
        raise ValueError(f"must be a normalised /dev path without '..', got {value!r}")
    return value


def _as_optional_str(raw: Any) -> str | None:
    value = _as_str(raw)
    return value or None


def _as_no_proxy(raw: Any) -> tuple[str, ...]:
    entries = _as_list(raw)
    for entry in entries:
        if entry == "*":
            continue
        host = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
        try:
            ipaddress.ip_network(host, strict=False)
            continue
        except ValueError:
            pass
        name = host[1:] if host.startswith(".") else host
        name = name[2:] if name.startswith("*.") else name
        if ":" in name:  # host:port entries are accepted by curl; the port is ignored for matching
            name, _, port = name.rpartition(":")
            if not port.isdigit():
                raise ValueError(f"no_proxy entry {entry!r} is not a host, domain, IP or CIDR range")
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*", name):
            raise ValueError(f"no_proxy entry {entry!r} is not a host, domain, IP or CIDR range")
    return entries


def _as_auto_bool(raw: Any) -> str:
    if isinstance(raw, str) and raw.strip().lower() == "auto":
        return "auto"
    return "true" if _as_bool(raw) else "false"


def _as_token(raw: Any) -> str | None:
    value = _as_str(raw)
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError("must be printable text without spaces")
    return value or None


def _as_argv(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        argv = tuple(raw.split())
    elif isinstance(raw, (list, tuple)) and all(isinstance(x, str) for x in raw):
        argv = tuple(raw)
    else:
        raise ValueError("expected a command as a list of strings")
    if not argv:
        raise ValueError("must not be empty")
    return argv


def _as_reboot_left_to(raw: Any) -> str | None:
    value = _as_str(raw).lower()
    if value not in {"", "systemd", "cloud-init"}:
        raise ValueError(f"must be systemd, cloud-init or empty, got {value!r}")
    return value or None


def _as_log_format(raw: Any) -> str:
    value = _as_str(raw).lower()
    if value not in {"text", "json"}:
        raise ValueError(f"must be text or json, got {value[:40]!r}")
    return value


def _as_command_name(raw: Any) -> str:
    value = _as_str(raw)
    if not value or any(c.isspace() for c in value):
        raise ValueError("must be a command name or absolute path without spaces")
    return value


# ---------------------------------------------------------------------------------------------------------
# The settings table: TOML key -> (Settings field, parser, default). The seed's values are the defaults.


@dataclass(frozen=True, slots=True)
class _Key:
    field: str
    parse: Callable[[Any], Any]
    default: Any
    help: str


_KEYS: dict[str, _Key] = {
    "server.url": _Key("server_url", _as_http_url, SEED_SERVER_URL, "web server holding packages/ and apollo/"),
    "server.ca_file": _Key("ca_file", _as_optional_file, "", "CA bundle for https (default: system store)"),
    "packages.names": _Key(
        "package_names",
        _as_deb_names,
        ("ostree-upgrade-bootstrap_2.0.41_all.deb", "ostree-upgrade_2.0.41_all.deb"),
        "vendor .deb files, installed together",
    ),
    "packages.path": _Key("packages_path", _as_url_path, "packages", "URL path of the packages on the server"),
    "iso.path": _Key("iso_path", _as_url_path, "apollo/latest", "URL path of the Apollo ISO on the server"),
    "iso.release": _Key("iso_release", _as_release, "release-3.21.3.0-7+auto15", "release expected on the server"),
    "iso.sha256": _Key("iso_sha256", _as_sha256, "", "pinned SHA-256 of the ISO (else SHA256SUMS)"),
    "checksums.name": _Key("sums_name", _safe_name, "SHA256SUMS", "checksum file next to each artifact"),
    "checksums.keyring": _Key("keyring", _as_optional_file, "", "gpgv keyring: SHA256SUMS.gpg must verify"),
    "checksums.allow_unverified": _Key(
        "allow_unverified", _as_bool, False, "INSECURE: install artifacts that have no checksum"
    ),
    "paths.working_dir": _Key("working_dir", _as_abs_dir, "/media/root-rw", "where the debs are downloaded"),
    "paths.iso_dir": _Key("iso_dir", _as_abs_dir, "/data", "where the ISO is downloaded (ostree-production reads it)"),
    "paths.state_dir": _Key("state_dir", _as_abs_dir, "/run/harmonic-installer", "run lock and step journal"),
    "disk.device": _Key("disk_device", _as_device, "/dev/sda", "target disk: /dev path or /dev/disk/by-* link"),
    "disk.serial": _Key("disk_serial", _as_optional_str, "", "hint: disk serial number"),
    "disk.model": _Key("disk_model", _as_optional_str, "", "hint: disk model"),
    "disk.wwn": _Key("disk_wwn", _as_optional_str, "", "hint: disk WWN"),
    "disk.min_size_gib": _Key("disk_min_size_gib", _as_int(0, 1 << 24), 0, "hint: minimum disk size in GiB"),
    "disk.allow_removable": _Key("allow_removable", _as_bool, False, "allow a removable or USB target disk"),
    "proxy.url": _Key("proxy_url", _as_http_url, SEED_PROXY_URL, "HTTP proxy used with -p"),
    "proxy.no_proxy": _Key("no_proxy", _as_no_proxy, SEED_NO_PROXY, "hosts, domains, IPs and CIDRs reached directly"),
    "download.attempts": _Key("download_attempts", _as_int(1, 1000), 12, "attempts per file before giving up"),
    "download.max_time_s": _Key("download_max_time_s", _as_float(1), 3600.0, "wall-time budget per file"),
    "download.connect_timeout_s": _Key("connect_timeout_s", _as_float(0.1, 3600), 10.0, "TCP connect timeout"),
    "download.read_timeout_s": _Key("read_timeout_s", _as_float(0.1, 3600), 60.0, "timeout waiting for data"),
    "download.stall_min_rate": _Key(
        "stall_min_rate", _as_int(0, 1 << 34), 1024, "bytes/s below which a transfer stalls"
    ),
    "download.stall_window_s": _Key(
        "stall_window_s", _as_float(1, DAY_S), 60.0, "seconds below the rate before a retry"
    ),
    "download.backoff_max_s": _Key("backoff_max_s", _as_float(0, DAY_S), 60.0, "longest wait between attempts"),
    "download.free_space_margin_mib": _Key(
        "free_space_margin_mib", _as_int(0, 1 << 24), 256, "free space kept in reserve"
    ),
    "write.tool": _Key("ostree_tool", _as_command_name, "ostree-production", "the vendor imaging tool"),
    "write.timeout_s": _Key("write_timeout_s", _as_float(1), 7200.0, "time limit for writing the disk"),
    "write.wipe_on_failure": _Key(
        "wipe_on_failure", _as_bool, True, "after a failed write, wipe the partition table so it cannot boot"
    ),
    "packages.timeout_s": _Key("dpkg_timeout_s", _as_float(1), 900.0, "time limit for dpkg"),
    "reboot.enabled": _Key("reboot_enabled", _as_bool, True, "reboot after a successful install"),
    "reboot.command": _Key("reboot_command", _as_argv, ("systemctl", "reboot"), "command that reboots"),
    "run.time_limit_s": _Key(
        "run_time_limit_s",
        _as_float(0),
        0.0,
        "the run's outer time limit (the unit sets its TimeoutStartSec); the budgets must fit in it (0: none)",
    ),
    "reboot.left_to": _Key(
        "reboot_left_to",
        _as_reboot_left_to,
        "",
        "systemd or cloud-init: that caller reboots after exit 0 (the unit, the user-data); run no reboot command",
    ),
    "install.reimage": _Key(
        "reimage", _as_bool, False, "image the disk even if NVRAM records that it already holds an install"
    ),
    "firmware.boot_disk": _Key(
        "boot_disk", _as_bool, True, "after the write, and when already installed, boot the disk next (UEFI BootNext)"
    ),
    "firmware.efivars_dir": _Key(
        "efivars_dir", _as_abs_dir, "/sys/firmware/efi/efivars", "efivarfs: where the install record is kept"
    ),
    "maas.enabled": _Key(
        "maas_enabled", _as_auto_bool, "auto", "report progress to MAAS: auto (when configured or found), true, false"
    ),
    "maas.endpoint": _Key(
        "maas_endpoint", _as_optional_url, "", "MAAS status URL (default: cloud-init's webhook reporter config)"
    ),
    "maas.consumer_key": _Key("maas_consumer_key", _as_token, "", "OAuth consumer key (default: from cloud-init)"),
    "maas.consumer_secret": _Key("maas_consumer_secret", _as_token, "", "OAuth consumer secret (MAAS uses none)"),
    "maas.token_key": _Key("maas_token_key", _as_token, "", "OAuth token key (default: from cloud-init)"),
    "maas.token_secret": _Key("maas_token_secret", _as_token, "", "OAuth token secret (default: from cloud-init)"),
    "maas.timeout_s": _Key("maas_timeout_s", _as_float(0.1, 3600), 5.0, "time limit for one report to MAAS"),
    "maas.flush_timeout_s": _Key(
        "maas_flush_timeout_s", _as_float(0, 3600), 10.0, "longest wait at the end for queued reports to be sent"
    ),
    "maas.progress_interval_s": _Key(
        "maas_progress_interval_s", _as_float(1, DAY_S), 60.0, "seconds between download progress reports to MAAS"
    ),
    "log.format": _Key(
        "log_format", _as_log_format, "text", "log lines on stderr: text (one readable line per event) or json"
    ),
}
# Keys whose values are never displayed (settings listing, errors). MAAS's status API identifies the machine
# by the OAuth token key alone (it does not check the signature of status messages), so the key is secret too.
_SECRET_KEYS = frozenset({"maas.consumer_secret", "maas.token_key", "maas.token_secret"})
# URL settings: shown with any user:password replaced by '***'.
_URL_KEYS = frozenset({"server.url", "proxy.url", "maas.endpoint"})


def credentials_in_flags(settings: Settings) -> list[str]:
    """The URL settings that carry user:password and came from a command-line flag (visible in /proc/*/cmdline)."""
    found = []
    for key in sorted(_URL_KEYS):
        value = settings.value(key)
        if settings.sources.get(key) == "flag" and isinstance(value, str) and _redact_url(value) != value:
            found.append(key)
    return found


KEYS: tuple[str, ...] = tuple(_KEYS)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a run needs, validated. Build it with `load()`."""

    server_url: str
    ca_file: Path | None
    package_names: tuple[str, ...]
    packages_path: str
    iso_path: str
    iso_release: str
    iso_sha256: str | None
    sums_name: str
    keyring: Path | None
    allow_unverified: bool
    working_dir: Path
    iso_dir: Path
    state_dir: Path
    disk_device: str | None
    disk_serial: str | None
    disk_model: str | None
    disk_wwn: str | None
    disk_min_size_gib: int
    allow_removable: bool
    proxy_url: str
    no_proxy: tuple[str, ...]
    download_attempts: int
    download_max_time_s: float
    connect_timeout_s: float
    read_timeout_s: float
    stall_min_rate: int
    stall_window_s: float
    backoff_max_s: float
    free_space_margin_mib: int
    ostree_tool: str
    write_timeout_s: float
    wipe_on_failure: bool
    dpkg_timeout_s: float
    reboot_enabled: bool
    reboot_command: tuple[str, ...]
    run_time_limit_s: float
    reboot_left_to: str | None
    reimage: bool
    boot_disk: bool
    efivars_dir: Path
    maas_enabled: str
    maas_endpoint: str | None
    maas_consumer_key: str | None
    maas_consumer_secret: str | None
    maas_token_key: str | None
    maas_token_secret: str | None
    maas_timeout_s: float
    maas_flush_timeout_s: float
    maas_progress_interval_s: float
    log_format: str
    # Run mode (flags only).
    proxy_enabled: bool = False
    install: bool = False
    dry_run: bool = False
    verbose: bool = False
    config_file: Path | None = None
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def iso_filename(self) -> str:
        """Local name of the ISO when the server does not reveal a better one."""
        return iso_filename_for(self.iso_release)

    @property
    def disk_hints(self) -> dict[str, str | int]:
        """Disk selection hints that are set (serial, model, wwn, min_size_gib)."""
        hints: dict[str, str | int] = {}
        for name in ("serial", "model", "wwn"):
            value = getattr(self, f"disk_{name}")
            if value:
                hints[name] = value
        if self.disk_min_size_gib:
            hints["min_size_gib"] = self.disk_min_size_gib
        return hints

    @property
    def runs_install(self) -> bool:
        """True when this run changes the machine (-i without --dry-run)."""
        return self.install and not self.dry_run

    def value(self, key: str) -> Any:
        """The value of a TOML-named key (e.g. 'server.url')."""
        return getattr(self, _KEYS[key].field)


@dataclass(frozen=True, slots=True)
class RunFlags:
    """Run-mode flags from the command line (not settings in the file/env sense)."""

    proxy: bool = False
    install: bool = False
    dry_run: bool = False
    verbose: bool = False


def describe_keys() -> list[tuple[str, str, str]]:
    """(key, default, help) for every setting, for documentation and `--help`."""
    return [(k, _display(k, spec.parse(spec.default)), spec.help) for k, spec in _KEYS.items()]


def env_name(key: str) -> str:
    """The environment variable for a TOML key: 'server.url' -> 'HARMONIC_SERVER_URL'."""
    return ENV_PREFIX + key.replace(".", "_").upper()


_ENV_TO_KEY = {env_name(k): k for k in _KEYS}


def _parse_key(key: str, raw: Any, source: str) -> Any:
    try:
        return _KEYS[key].parse(raw)
    except ValueError as exc:
        raise ConfigError(f"invalid {key} (from {source}): {exc}") from None


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(_flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def read_config_file(path: Path) -> dict[str, Any]:
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
    unknown = sorted(k for k in flat if k not in _KEYS)
    if unknown:
        raise ConfigError(f"config file {path}: unknown key {unknown[0]} (known keys: harmonic-install settings)")
    return flat


def parse_cmdline(cmdline: str) -> dict[str, str]:
    """Pick `harmonic.<key>=<value>` parameters out of a kernel command line."""
    found: dict[str, str] = {}
    for token in cmdline.split():
        if not token.startswith(CMDLINE_PREFIX):
            continue
        name, sep, value = token[len(CMDLINE_PREFIX) :].partition("=")
        if name in _CMDLINE_MARKERS:
            continue
        if name not in _KEYS:
            raise ConfigError(f"kernel command line: unknown parameter {CMDLINE_PREFIX}{name[:64]}")
        if not sep:
            raise ConfigError(f"kernel command line: {CMDLINE_PREFIX}{name} needs a value ({CMDLINE_PREFIX}{name}=...)")
        found[name] = value
    return found


def parse_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """Pick `HARMONIC_<KEY>` variables out of an environment."""
    found: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _ENV_MARKERS or name.startswith(_ENV_RESERVED):
            continue
        key = _ENV_TO_KEY.get(name)
        if key is None:
            raise ConfigError(f"environment: unknown variable {name} (see harmonic-install settings)")
        found[key] = value
    return found


def load(
    *,
    flags: Mapping[str, Any] | None = None,
    run: RunFlags | None = None,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cmdline: str | None = None,
) -> Settings:
    """Build validated Settings from every source.

    Args:
        flags: {key: value} given on the command line (None values are ignored).
        run: the run-mode flags (-p, -i, --dry-run, -v).
        config_file: an explicit --config path (must exist); None reads the default file if present.
        environ: the process environment (HARMONIC_* variables and HARMONIC_CONFIG).
        cmdline: the kernel command line text (None: none).

    Raises:
        ConfigError: a value is invalid or a key unknown; the message names the key and its source.
    """
    environ = environ if environ is not None else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, spec in _KEYS.items():
        values[key] = spec.parse(spec.default)
        sources[key] = "default"

    if config_file is None and environ.get("HARMONIC_CONFIG"):
        config_file = Path(environ["HARMONIC_CONFIG"])
    used_file: Path | None = None
    if config_file is not None:
        file_values = read_config_file(config_file)
        used_file = config_file
    elif os.path.exists(DEFAULT_CONFIG_FILE):
        used_file = Path(DEFAULT_CONFIG_FILE)
        file_values = read_config_file(used_file)
    else:
        file_values = {}

    layers: list[tuple[str, Mapping[str, Any]]] = [
        (f"file {used_file}", file_values),
        ("kernel command line", parse_cmdline(cmdline or "")),
        ("environment", parse_environ(environ)),
        ("flag", {k: v for k, v in (flags or {}).items() if v is not None}),
    ]
    for source, layer in layers:
        for key, raw in layer.items():
            if key not in _KEYS:
                raise ConfigError(f"unknown setting {key}")
            values[key] = _parse_key(key, raw, source if source != "environment" else env_name(key))
            sources[key] = source if source != "environment" else f"environment {env_name(key)}"

    run = run or RunFlags()
    return Settings(
        **{_KEYS[k].field: v for k, v in values.items()},
        proxy_enabled=run.proxy,
        install=run.install,
        dry_run=run.dry_run,
        verbose=run.verbose,
        config_file=used_file,
        sources=sources,
    )


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


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=f"***@{host}").geturl()


def redact_url(url: str) -> str:
    """The URL with any user:password replaced by '***' (for logs, reports and errors)."""
    return _redact_url(url)


def _display(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key in _SECRET_KEYS:
        return "***"
    return _display_value(key, value)


def _display_value(key: str, value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if key in _URL_KEYS:
        return _redact_url(str(value))
    return str(value)


def effective(settings: Settings) -> list[tuple[str, str, str]]:
    """(key, value for display, source) for every setting; credentials redacted."""
    return [(k, _display(k, settings.value(k)), settings.sources.get(k, "default")) for k in _KEYS]


def default_environ() -> dict[str, str]:
    """A copy of the process environment (read once at start-up by the CLI)."""
    return dict(os.environ)
