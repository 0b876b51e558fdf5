"""Operator side: the cloud-init user-data of a MAAS ephemeral deploy (fetch, verify and run the zipapp).

Pure functions that render the cloud-config (nothing here runs on the target, calls MAAS or starts a
process). Every value that reaches a shell word is validated and quoted; the YAML is written by a small
emitter (no YAML library at run time).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from harmonic_installer import __version__
from harmonic_installer.config import REBOOT_MARKER
from harmonic_installer.errors import ConfigError
from harmonic_installer.maas import check_value
from harmonic_installer.urls import is_http_url

# Where the operator puts the zipapp on the web server, next to packages/ and apollo/ (docs/deploying.md).
PYZ_URL_PATH = "scripts/harmonic-install.pyz"
# Where the user-data keeps its files on the target (RAM in the ephemeral environment).
USERDATA_DIR = "/run/harmonic-userdata"
SUCCESS_MARKER = f"{USERDATA_DIR}/succeeded"

_SHA256 = re.compile(r"[0-9a-f]{64}")
_SSH_KEY = re.compile(
    r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com"
    r"|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\x00-\x1f\x7f]*)?"
)
_PASSWORD_HASH = re.compile(r"\$(1|5|6|y|gy|7|2b)\$[./0-9A-Za-z$=,]+")


@dataclass(frozen=True, slots=True)
class UserDataSpec:
    """What the ephemeral deploy's cloud-config does.

    Args:
        server_url: the web server; the installer gets it as --server-url.
        pyz_sha256: SHA-256 the downloaded zipapp must have before it is run.
        pyz_url: where the zipapp is fetched (default: <server_url>/scripts/harmonic-install.pyz).
        installer_args: flags for the installer; -i and --no-reboot are always added.
        ssh_keys: public keys for the default user (ubuntu).
        root_password_hash: INSECURE: a crypt(3) hash for root, enabling root password login over SSH.
    """

    server_url: str
    pyz_sha256: str
    pyz_url: str | None = None
    installer_args: tuple[str, ...] = ("-p",)
    ssh_keys: tuple[str, ...] = ()
    root_password_hash: str | None = None


def _http_url(value: str, what: str) -> str:
    if not is_http_url(value) or any(c.isspace() for c in value):
        raise ConfigError(f"{what} must be an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


def _installer_argv(spec: UserDataSpec, pyz_path: str) -> list[str]:
    """The command line that runs the downloaded zipapp: always -i and --reboot-left-to=cloud-init."""
    server_url = _http_url(spec.server_url, "--server-url")
    for arg in spec.installer_args:
        if not arg or any(ord(c) < 0x20 for c in arg):
            raise ConfigError(f"invalid installer argument: {arg!r}")
    extra = [a for a in spec.installer_args if a not in {"-i", "--no-reboot"} and not a.startswith("--reboot-left-to")]
    return ["python3", "-I", "-S", pyz_path, "--server-url", server_url, *extra, "-i", "--reboot-left-to=cloud-init"]


def _install_script(spec: UserDataSpec) -> str:
    pyz_sha256 = spec.pyz_sha256.lower()
    check_value(_SHA256, pyz_sha256, "zipapp SHA-256 (64 hex digits)")
    server_url = _http_url(spec.server_url, "--server-url")
    pyz_url = _http_url(spec.pyz_url, "--pyz-url") if spec.pyz_url else f"{server_url}/{PYZ_URL_PATH}"
    pyz = f"{USERDATA_DIR}/harmonic-install.pyz"
    argv = _installer_argv(spec, pyz)
    lines = [
        "#!/bin/sh",
        f"# Rendered by `harmonic-install user-data` {__version__}: fetch the installer, check its SHA-256, run it.",
        "# The reboot is cloud-init's power_state, which reboots only if this script reached the last line: only",
        "# when the installer exited 0 and wants the reboot (it installed, or found the disk installed and set",
        "# BootNext to it; a host that is not a target stays up).",
        "set -eu",
        f"mkdir -p {USERDATA_DIR}",
        f"rm -f {SUCCESS_MARKER} {pyz}.part",
        f"echo 'harmonic-userdata: fetching '{shlex.quote(pyz_url)}",
        f"wget -q --tries=5 --waitretry=5 --timeout=60 --no-proxy -O {pyz}.part {shlex.quote(pyz_url)}",
        f"echo {shlex.quote(f'{pyz_sha256}  {pyz}.part')} | sha256sum --check --strict -",
        f"mv {pyz}.part {pyz}",
        "echo 'harmonic-userdata: running '" + shlex.quote(shlex.join(argv)),
        shlex.join(argv),
        f"test -f {REBOOT_MARKER} || {{ echo 'harmonic-userdata: no reboot wanted, staying up'; exit 0; }}",
        f"touch {SUCCESS_MARKER}",
        "",
    ]
    return "\n".join(lines)


def user_data(spec: UserDataSpec) -> dict[str, Any]:
    """The cloud-config, as data: fetch and verify the zipapp, run it, reboot only on success.

    Secure by default: SSH keys only, no password login, root locked. `root_password_hash` (explicitly
    insecure) re-creates the seed's root password login, with the hash, never the password, in the file.
    """
    for key in spec.ssh_keys:
        if not _SSH_KEY.fullmatch(key.strip()):
            raise ConfigError(f"not an OpenSSH public key: {key.strip()[:30]!r}...")
    install_path = f"{USERDATA_DIR}/install.sh"
    config: dict[str, Any] = {
        "ssh_pwauth": False,
        "disable_root": True,
    }
    if spec.ssh_keys:
        config["ssh_authorized_keys"] = [k.strip() for k in spec.ssh_keys]
    files: list[dict[str, Any]] = [
        {"path": install_path, "owner": "root:root", "permissions": "0700", "content": _install_script(spec)}
    ]
    runcmd: list[Any] = []
    if spec.root_password_hash is not None:
        check_value(_PASSWORD_HASH, spec.root_password_hash, "password hash (crypt(3) format, e.g. $6$...)")
        config["ssh_pwauth"] = True
        config["disable_root"] = False
        config["chpasswd"] = {
            "expire": False,
            "users": [{"name": "root", "password": spec.root_password_hash, "type": "hash"}],
        }
        files.append(
            {
                "path": "/etc/ssh/sshd_config.d/60-harmonic-root-login.conf",
                "owner": "root:root",
                "permissions": "0644",
                "content": "# INSECURE: written by `harmonic-install user-data --insecure-root-password-hash`\n"
                "PermitRootLogin yes\nPasswordAuthentication yes\n",
            }
        )
        runcmd.append(["systemctl", "try-reload-or-restart", "ssh.service"])
    config["write_files"] = files
    # runcmd runs inside cloud-final.service: run the installer in the foreground (never `systemctl start` a
    # unit ordered after cloud-final without --no-block: that deadlocks).
    runcmd.append(["sh", install_path])
    config["runcmd"] = runcmd
    # Evaluated after cloud-init's final stage has finished (and reported), so the reboot does not cut it off.
    config["power_state"] = {
        "mode": "reboot",
        "message": "harmonic-install succeeded: rebooting into Harmonic cOS",
        "condition": ["test", "-f", SUCCESS_MARKER],
        "delay": "now",
        "timeout": 120,
    }
    return config


def render_user_data(spec: UserDataSpec) -> str:
    """The user-data file: `#cloud-config` and the YAML of `user_data(spec)`."""
    header = (
        f"#cloud-config\n# harmonic-install {__version__} user-data for a MAAS ephemeral deploy (docs/deploying.md)\n"
    )
    return header + to_yaml(user_data(spec))


# A minimal YAML emitter for the cloud-config above (no YAML library at run time: the zipapp's deps are fixed).
# Strings are plain only when they cannot be read as anything else, literal blocks when multi-line and clean,
# and JSON-quoted otherwise (a JSON string is a valid YAML double-quoted scalar).
_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./+@-]*")
_YAML11_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in _YAML11_WORDS:
            return value
        return json.dumps(value)
    raise TypeError(f"cannot render {type(value).__name__} as YAML")


def _block_literal(value: str, indent: str) -> str | None:
    if "\n" not in value or value.startswith((" ", "\n")) or value.endswith("\n\n"):
        return None
    lines = value.removesuffix("\n").split("\n")
    for line in lines:
        if line != line.rstrip() or any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in line):
            return None
    head = "|" if value.endswith("\n") else "|-"
    return head + "".join(f"\n{indent}{line}" if line else "\n" for line in lines)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, bool))


def _emit(value: Any, indent: str) -> list[str]:
    """Lines for a mapping or sequence at the given indentation."""
    lines: list[str] = []
    items: Iterable[tuple[str | None, Any]]
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, list):
        items = ((None, v) for v in value)
    else:
        raise TypeError(f"cannot render {type(value).__name__} as a YAML collection")
    for key, item in items:
        lead = f"{indent}{_scalar(key)}:" if key is not None else f"{indent}-"
        if _is_scalar(item):
            text = _block_literal(item, indent + "  ") if isinstance(item, str) else None
            lines.append(f"{lead} {text if text is not None else _scalar(item)}")
        elif isinstance(item, list) and item and all(_is_scalar(v) for v in item) and key is None:
            lines.append(f"{lead} [" + ", ".join(_scalar(v) for v in item) + "]")
        elif not item:
            lines.append(f"{lead} {'{}' if isinstance(item, Mapping) else '[]'}")
        elif key is None and isinstance(item, Mapping):
            sub = _emit(item, indent + "  ")
            lines.append(f"{lead} {sub[0].lstrip()}")
            lines.extend(sub[1:])
        else:
            lines.append(lead)
            lines.extend(_emit(item, indent + "  "))
    return lines


def to_yaml(value: Mapping[str, Any]) -> str:
    """Block-style YAML for a mapping of str/int/bool/list/mapping values."""
    return "\n".join(_emit(value, "")) + "\n"
