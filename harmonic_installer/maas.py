"""Operator side: MAAS import and deploy commands (the user-data they deploy is userdata.py's).

Pure functions that render text for the operator to run on the MAAS server (nothing here runs on the target,
calls MAAS or starts a process). Every value that reaches a shell word is validated and single-quoted.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harmonic_installer import hashing
from harmonic_installer.errors import ConfigError

DEFAULT_PROFILE = "admin"
DEFAULT_SERIES = "jammy"
DEFAULT_ARCHITECTURE = "amd64/generic"

_PROFILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SERIES = re.compile(r"[a-z][a-z0-9]*")
_ARCHITECTURE = re.compile(r"[a-z0-9_]+/[a-z0-9_.-]+")
_IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_SYSTEM_ID = re.compile(r"[a-z0-9]{4,16}")
# (suffix, MAAS filetype); the longest suffix is tried first.
_FILETYPES = (
    (".dd.tar.gz", "ddtgz"),
    (".dd.tar.xz", "ddtxz"),
    (".tar.gz", "tgz"),
    (".tgz", "tgz"),
    (".tar.xz", "txz"),
    (".tar.bz2", "tbz"),
    (".dd.gz", "ddgz"),
    (".dd.xz", "ddxz"),
    (".dd.bz2", "ddbz2"),
)


def _sq(value: str) -> str:
    """Single-quote a shell word, always (the seed's format: name='custom/x')."""
    return "'" + value.replace("'", "'\"'\"'") + "'"


def check_value(pattern: re.Pattern[str], value: str, what: str) -> str:
    """`value` when the whole of it matches `pattern`, else a ConfigError naming `what` (operator input)."""
    if not pattern.fullmatch(value):
        raise ConfigError(f"invalid {what}: {value!r}")
    return value


# ---------------------------------------------------------------------------------------------------------
# maas-import-command


@dataclass(frozen=True, slots=True)
class ImageFile:
    """A built image as MAAS needs to know it: names, type, size and SHA-256."""

    file_name: str
    name: str
    title: str
    filetype: str
    size: int
    sha256: str


def image_filetype(file_name: str) -> str:
    """The MAAS filetype for an image file name ('x.tar.gz' -> 'tgz')."""
    for suffix, filetype in _FILETYPES:
        if file_name.endswith(suffix):
            return filetype
    known = ", ".join(s for s, _ in _FILETYPES)
    raise ConfigError(f"{file_name}: not an image type MAAS imports (known: {known})")


def image_title(name: str) -> str:
    """A display title from an image name ('harmonic-installer' -> 'Harmonic Installer')."""
    words = [w for w in re.split(r"[-_\s]+", name) if w]
    return " ".join(w[:1].upper() + w[1:] for w in words)


def describe_image(path: Path, *, name: str | None = None, title: str | None = None) -> ImageFile:
    """Hash and size an image file; name and title default to the file name up to its first dot.

    Raises:
        ConfigError: the file is missing, of an unknown type, or its name is not a valid MAAS name.
    """
    file_name = path.name
    filetype = image_filetype(file_name)
    name = name if name is not None else file_name.split(".", 1)[0]
    check_value(_IMAGE_NAME, name, "image name (letters, digits, - and _)")
    title = title if title is not None else image_title(name)
    if not title or any(ord(c) < 0x20 or ord(c) == 0x7F for c in title):
        raise ConfigError(f"invalid image title: {title!r}")
    try:
        digest, size = hashing.sha256_file(path)
    except OSError as exc:
        raise ConfigError(f"cannot read image {path}: {exc.strerror}") from exc
    return ImageFile(file_name, name, title, filetype, size, digest)


def sha256_file(path: Path) -> str:
    """The SHA-256 of a local file (the zipapp the user-data pins), hex."""
    try:
        return hashing.sha256_file(path)[0]
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc


def import_command(
    image: ImageFile,
    *,
    profile: str = DEFAULT_PROFILE,
    series: str = DEFAULT_SERIES,
    architecture: str = DEFAULT_ARCHITECTURE,
) -> str:
    """The `maas <profile> boot-resources create ...` command that imports one image (run where the file is)."""
    check_value(_PROFILE, profile, "MAAS profile")
    check_value(_SERIES, series, "Ubuntu series")
    check_value(_ARCHITECTURE, architecture, "architecture (e.g. amd64/generic)")
    fields = (
        ("name", f"custom/{image.name}"),
        ("title", image.title),
        ("architecture", architecture),
        ("filetype", image.filetype),
        ("sha256", image.sha256),
        ("size", str(image.size)),
        ("base_image", f"ubuntu/{series}"),
    )
    words = [f"{key}={_sq(value)}" for key, value in fields]
    return f"maas {profile} boot-resources create " + " ".join(words) + f" content@={_sq(image.file_name)}"


def import_commands(
    paths: Sequence[Path],
    *,
    profile: str = DEFAULT_PROFILE,
    series: str = DEFAULT_SERIES,
    architecture: str = DEFAULT_ARCHITECTURE,
    name: str | None = None,
    title: str | None = None,
) -> list[str]:
    """One import command per image file (the seed's `for image in *.tar.gz` loop), in the order given."""
    if not paths:
        raise ConfigError("no image given")
    if (name is not None or title is not None) and len(paths) > 1:
        raise ConfigError("--name and --title apply to a single image")
    return [
        import_command(
            describe_image(p, name=name, title=title), profile=profile, series=series, architecture=architecture
        )
        for p in paths
    ]


# ---------------------------------------------------------------------------------------------------------
# deploy-command


def machines_by_name(machines_json: str) -> dict[str, str]:
    """hostname, FQDN and system_id -> system_id, from the output of `maas <profile> machines read`."""
    try:
        machines = json.loads(machines_json)
    except ValueError as exc:
        raise ConfigError(f"the machines file is not JSON: {exc}") from exc
    if not isinstance(machines, list):
        raise ConfigError("the machines file is not the list `maas <profile> machines read` prints")
    names: dict[str, str] = {}
    for machine in machines:
        system_id = machine.get("system_id") if isinstance(machine, dict) else None
        if not isinstance(system_id, str):
            raise ConfigError("a machine in the machines file has no system_id")
        for key in ("hostname", "fqdn", "system_id"):
            value = machine.get(key)
            if isinstance(value, str) and value:
                if names.get(value, system_id) != system_id:
                    raise ConfigError(f"{value!r} names two machines in the machines file")
                names[value] = system_id
    return names


def deploy_commands(
    machines: Sequence[str],
    *,
    user_data: bytes | None,
    profile: str = DEFAULT_PROFILE,
    names: Mapping[str, str] | None = None,
    image: str | None = None,
) -> list[str]:
    """One `maas <profile> machine deploy <system_id> ephemeral_deploy=true ...` per machine, in order.

    Args:
        machines: system IDs, or hostnames when `names` (from machines_by_name) is given.
        user_data: the cloud-config (or script) to pass base64-encoded; required unless `image` is set.
        image: a custom image name (custom/<name>) to deploy instead of the default Ubuntu.
    """
    check_value(_PROFILE, profile, "MAAS profile")
    if not machines:
        raise ConfigError("no machine given")
    if user_data is None and image is None:
        raise ConfigError("pass --user-data (the file `harmonic-install user-data` wrote) or --image")
    if user_data is not None and not user_data.startswith((b"#cloud-config", b"#!")):
        raise ConfigError("the user-data file starts with neither #cloud-config nor #! (wrong file?)")
    extra = ""
    if image is not None:
        check_value(_IMAGE_NAME, image.removeprefix("custom/"), "image name")
        extra += f" osystem=custom distro_series={_sq(image.removeprefix('custom/'))}"
    if user_data is not None:
        extra += " user_data=" + base64.b64encode(user_data).decode("ascii")
    commands: list[str] = []
    seen: set[str] = set()
    for machine in machines:
        if names is not None:
            if machine not in names:
                raise ConfigError(f"{machine!r} is not in the machines file")
            system_id = names[machine]
        else:
            system_id = machine
        check_value(_SYSTEM_ID, system_id, "MAAS system ID (or pass --machines-json to use hostnames)")
        if system_id in seen:
            raise ConfigError(f"machine {machine!r} ({system_id}) is listed twice")
        seen.add(system_id)
        commands.append(f"maas {profile} machine deploy {system_id} ephemeral_deploy=true{extra}")
    return commands
