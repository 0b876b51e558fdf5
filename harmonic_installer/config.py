"""Settings: the seed's defaults, overridden by a TOML file, the kernel command line, the environment and flags.

Precedence, lowest first: defaults < config file < kernel command line (`harmonic.<key>=<value>`)
< environment (`HARMONIC_<KEY>`, dots as underscores) < command-line flags. Every value remembers where
it came from (`Settings.sources`) so `harmonic-install settings` can say so. No network, no disks.
The value parsers are in config_values.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from harmonic_installer import config_sources as sources
from harmonic_installer import config_values as v
from harmonic_installer.errors import ConfigError

DEFAULT_CONFIG_FILE = Path("/etc/harmonic-installer/config.toml")
# "Reboot wanted": left by a run that installed, or that found the disk installed and pointed UEFI BootNext at it.
# The systemd unit (ExecStartPost) and the user-data (power_state) reboot only when it exists; a fixed path that
# does not follow paths.state_dir (tests/unit/test_systemd_unit.py checks that the unit uses this one).
REBOOT_MARKER = Path("/run/harmonic-installer.reboot")
# The one URL redaction (config_values), offered here beside the settings it protects.
redact_url = v.redact_url

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
# The settings, grouped by section. Each field is one setting: its TOML key is `<section>.<field>`, its
# environment variable HARMONIC_<SECTION>_<FIELD>, its kernel parameter harmonic.<section>.<field>; the
# parser, the default (the seed's value) and the help text sit beside it. A new setting is this one line.


def setting(parse: Callable[[Any], Any], default: Any, help_text: str, *, secret: bool = False) -> Any:
    """A settings field: `parse` turns a raw value into the typed one; `default` is parsed the same way.

    `secret` values are never displayed (settings listing, errors).
    """
    meta = {"parse": parse, "raw_default": default, "help": help_text, "secret": secret}
    return field(default=parse(default), metadata=meta)


@dataclass(frozen=True, slots=True)
class Server:
    url: str = setting(v.as_http_url, SEED_SERVER_URL, "web server holding packages/ and apollo/")
    ca_file: Path | None = setting(v.as_optional_file, "", "CA bundle for https (default: system store)")


@dataclass(frozen=True, slots=True)
class Packages:
    names: tuple[str, ...] = setting(
        v.as_deb_names,
        ("ostree-upgrade-bootstrap_2.0.41_all.deb", "ostree-upgrade_2.0.41_all.deb"),
        "vendor .deb files, installed together",
    )
    path: str = setting(v.as_url_path, "packages", "URL path of the packages on the server")
    timeout_s: float = setting(v.as_float(1), 900.0, "time limit for dpkg")


@dataclass(frozen=True, slots=True)
class Iso:
    path: str = setting(v.as_url_path, "apollo/latest", "URL path of the Apollo ISO on the server")
    release: str = setting(v.as_release, "release-3.21.3.0-7+auto15", "release expected on the server")
    sha256: str | None = setting(v.as_sha256, "", "pinned SHA-256 of the ISO (else SHA256SUMS)")

    @property
    def filename(self) -> str:
        """Local name of the ISO when the server does not reveal a better one."""
        return v.iso_filename_for(self.release)


@dataclass(frozen=True, slots=True)
class Checksums:
    name: str = setting(v.safe_name, "SHA256SUMS", "checksum file next to each artifact")
    keyring: Path | None = setting(v.as_optional_file, "", "gpgv keyring: SHA256SUMS.gpg must verify")
    allow_unverified: bool = setting(v.as_bool, False, "INSECURE: install artifacts that have no checksum")


@dataclass(frozen=True, slots=True)
class Paths:
    working_dir: Path = setting(v.as_abs_dir, "/media/root-rw", "where the debs are downloaded")
    iso_dir: Path = setting(v.as_abs_dir, "/data", "where the ISO is downloaded (ostree-production reads it)")
    state_dir: Path = setting(v.as_abs_dir, "/run/harmonic-installer", "run lock and step journal")


@dataclass(frozen=True, slots=True)
class Disk:
    device: str | None = setting(v.as_device, "/dev/sda", "target disk: /dev path or /dev/disk/by-* link")
    serial: str | None = setting(v.as_optional_str, "", "hint: disk serial number")
    model: str | None = setting(v.as_optional_str, "", "hint: disk model")
    wwn: str | None = setting(v.as_optional_str, "", "hint: disk WWN")
    min_size_gib: int = setting(v.as_int(0, 1 << 24), 0, "hint: minimum disk size in GiB")
    allow_removable: bool = setting(v.as_bool, False, "allow a removable or USB target disk")

    @property
    def hints(self) -> dict[str, str | int]:
        """Disk selection hints that are set (serial, model, wwn, min_size_gib)."""
        hints: dict[str, str | int] = {
            name: value for name, value in (("serial", self.serial), ("model", self.model), ("wwn", self.wwn)) if value
        }
        if self.min_size_gib:
            hints["min_size_gib"] = self.min_size_gib
        return hints


@dataclass(frozen=True, slots=True)
class Proxy:
    url: str = setting(v.as_http_url, SEED_PROXY_URL, "HTTP proxy used with -p")
    no_proxy: tuple[str, ...] = setting(v.as_no_proxy, SEED_NO_PROXY, "hosts, domains, IPs and CIDRs reached directly")


@dataclass(frozen=True, slots=True)
class Download:
    attempts: int = setting(v.as_int(1, 1000), 12, "attempts per file before giving up")
    max_time_s: float = setting(v.as_float(1), 3600.0, "wall-time budget per file")
    connect_timeout_s: float = setting(v.as_float(0.1, 3600), 10.0, "TCP connect timeout")
    read_timeout_s: float = setting(v.as_float(0.1, 3600), 60.0, "timeout waiting for data")
    stall_min_rate: int = setting(v.as_int(0, 1 << 34), 1024, "bytes/s below which a transfer stalls")
    stall_window_s: float = setting(v.as_float(1, v.DAY_S), 60.0, "seconds below the rate before a retry")
    backoff_max_s: float = setting(v.as_float(0, v.DAY_S), 60.0, "longest wait between attempts")
    free_space_margin_mib: int = setting(v.as_int(0, 1 << 24), 256, "free space kept in reserve")


@dataclass(frozen=True, slots=True)
class Write:
    tool: str = setting(v.as_command_name, "ostree-production", "the vendor imaging tool")
    timeout_s: float = setting(v.as_float(1), 7200.0, "time limit for writing the disk")
    wipe_on_failure: bool = setting(v.as_bool, True, "after a failed write, wipe the partition table so it cannot boot")


@dataclass(frozen=True, slots=True)
class Reboot:
    enabled: bool = setting(v.as_bool, True, "reboot after a successful install")
    command: tuple[str, ...] = setting(v.as_argv, ("systemctl", "reboot"), "command that reboots")
    left_to: str | None = setting(
        v.as_reboot_left_to,
        "",
        "systemd or cloud-init: that caller reboots after exit 0 (the unit, the user-data); run no reboot command",
    )


@dataclass(frozen=True, slots=True)
class Run:
    time_limit_s: float = setting(
        v.as_float(0),
        0.0,
        "the run's outer time limit (the unit sets its TimeoutStartSec); the budgets must fit in it (0: none)",
    )


@dataclass(frozen=True, slots=True)
class Install:
    reimage: bool = setting(v.as_bool, False, "image the disk even if NVRAM records that it already holds an install")


@dataclass(frozen=True, slots=True)
class Firmware:
    boot_disk: bool = setting(
        v.as_bool, True, "after the write, and when already installed, boot the disk next (UEFI BootNext)"
    )
    efivars_dir: Path = setting(v.as_abs_dir, "/sys/firmware/efi/efivars", "efivarfs: where the install record is kept")


@dataclass(frozen=True, slots=True)
class Maas:
    # MAAS's status API identifies the machine by the OAuth token key alone (it does not check the signature
    # of status messages), so the key is as secret as the secrets.
    enabled: str = setting(
        v.as_auto_bool, "auto", "report progress to MAAS: auto (when configured or found), true, false"
    )
    endpoint: str | None = setting(
        v.as_optional_url, "", "MAAS status URL (default: cloud-init's webhook reporter config)"
    )
    consumer_key: str | None = setting(v.as_token, "", "OAuth consumer key (default: from cloud-init)")
    consumer_secret: str | None = setting(v.as_token, "", "OAuth consumer secret (MAAS uses none)", secret=True)
    token_key: str | None = setting(v.as_token, "", "OAuth token key (default: from cloud-init)", secret=True)
    token_secret: str | None = setting(v.as_token, "", "OAuth token secret (default: from cloud-init)", secret=True)
    timeout_s: float = setting(v.as_float(0.1, 3600), 5.0, "time limit for one report to MAAS")
    flush_timeout_s: float = setting(v.as_float(0, 3600), 10.0, "longest wait at the end for queued reports to be sent")
    progress_interval_s: float = setting(
        v.as_float(1, v.DAY_S), 60.0, "seconds between download progress reports to MAAS"
    )


@dataclass(frozen=True, slots=True)
class Log:
    format: str = setting(v.as_log_format, "text", "log lines on stderr: text (one readable line per event) or json")


@dataclass(frozen=True, slots=True)
class RunFlags:
    """Run-mode flags from the command line (not settings in the file/env sense)."""

    proxy: bool = False
    install: bool = False
    dry_run: bool = False
    verbose: bool = False


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a run needs, validated, one section per TOML table. Build it with `load()`."""

    server: Server = field(default_factory=Server)
    packages: Packages = field(default_factory=Packages)
    iso: Iso = field(default_factory=Iso)
    checksums: Checksums = field(default_factory=Checksums)
    paths: Paths = field(default_factory=Paths)
    disk: Disk = field(default_factory=Disk)
    proxy: Proxy = field(default_factory=Proxy)
    download: Download = field(default_factory=Download)
    write: Write = field(default_factory=Write)
    reboot: Reboot = field(default_factory=Reboot)
    run: Run = field(default_factory=Run)
    install: Install = field(default_factory=Install)
    firmware: Firmware = field(default_factory=Firmware)
    maas: Maas = field(default_factory=Maas)
    log: Log = field(default_factory=Log)
    # Not settings: the run mode (flags only), the file read, and where each value came from.
    mode: RunFlags = field(default_factory=RunFlags)
    config_file: Path | None = None
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def runs_install(self) -> bool:
        """True when this run changes the machine (-i without --dry-run)."""
        return self.mode.install and not self.mode.dry_run

    def value(self, key: str) -> Any:
        """The value of a TOML-named key (e.g. 'server.url')."""
        section, name = _KEYS[key].section, _KEYS[key].name
        return getattr(getattr(self, section), name)


@dataclass(frozen=True, slots=True)
class _Key:
    section: str
    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    secret: bool


def _keys() -> dict[str, _Key]:
    keys: dict[str, _Key] = {}
    for part in fields(Settings):
        if not is_dataclass(part.default_factory) or part.name == "mode":
            continue
        for item in fields(part.default_factory):
            meta = item.metadata
            keys[f"{part.name}.{item.name}"] = _Key(
                part.name, item.name, meta["parse"], meta["raw_default"], meta["help"], meta["secret"]
            )
    return keys


# Every setting by its TOML key, in the order of the sections above.
_KEYS: dict[str, _Key] = _keys()
_SECRET_KEYS = frozenset(key for key, spec in _KEYS.items() if spec.secret)
# The section fields of Settings (server, packages, ...), in order.
_SECTIONS: tuple[Any, ...] = tuple(
    part for part in fields(Settings) if part.name in {spec.section for spec in _KEYS.values()}
)
# URL settings: shown with any user:password replaced by '***'.
_URL_KEYS = frozenset({"server.url", "proxy.url", "maas.endpoint"})


def credentials_in_flags(settings: Settings) -> list[str]:
    """The URL settings that carry user:password and came from a command-line flag (visible in /proc/*/cmdline)."""
    found = []
    for key in sorted(_URL_KEYS):
        value = settings.value(key)
        if settings.sources.get(key) == "flag" and isinstance(value, str) and redact_url(value) != value:
            found.append(key)
    return found


def describe_keys() -> list[tuple[str, str, str]]:
    """(key, default, help) for every setting, for documentation and `--help`."""
    return [(k, _display(k, spec.parse(spec.default)), spec.help) for k, spec in _KEYS.items()]


def _parse_key(key: str, raw: Any, source: str) -> Any:
    try:
        return _KEYS[key].parse(raw)
    except ValueError as exc:
        raise ConfigError(f"invalid {key} (from {source}): {exc}") from None


# The raw layers, for the CLI and the tests: the readers of config_sources.py over this module's keys.
CMDLINE_PREFIX, ENV_PREFIX, env_name = sources.CMDLINE_PREFIX, sources.ENV_PREFIX, sources.env_name
read_kernel_cmdline, default_environ = sources.read_kernel_cmdline, sources.default_environ


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML config file into {key: raw value}; unknown keys are an error naming them."""
    return sources.read_config_file(path, _KEYS)


def parse_cmdline(cmdline: str) -> dict[str, str]:
    """Pick `harmonic.<key>=<value>` parameters out of a kernel command line."""
    return sources.parse_cmdline(cmdline, _KEYS)


def parse_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """Pick `HARMONIC_<KEY>` variables out of an environment."""
    return sources.parse_environ(environ, _KEYS)


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
        values[key] = spec.parse(spec.default)  # parsed per load, as every other layer (no import-time values)
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

    by_section: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        by_section.setdefault(_KEYS[key].section, {})[_KEYS[key].name] = value
    built = {part.name: part.default_factory(**by_section[part.name]) for part in _SECTIONS}
    return Settings(**built, mode=run or RunFlags(), config_file=used_file, sources=sources)


def _display(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key in _SECRET_KEYS:
        return "***"
    return _display_value(key, value)


def _display_value(key: str, value: Any) -> str:
    if isinstance(value, tuple):  # a command is words (as its parser splits it), a list is comma-separated
        return (" " if _KEYS[key].parse is v.as_argv else ",").join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if key in _URL_KEYS:
        return redact_url(str(value))
    return str(value)


def effective(settings: Settings) -> list[tuple[str, str, str]]:
    """(key, value for display, source) for every setting; credentials redacted."""
    return [(k, _display(k, settings.value(k)), settings.sources.get(k, "default")) for k in _KEYS]
