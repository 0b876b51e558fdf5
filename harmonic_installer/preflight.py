"""Read-only checks before anything changes: root, the target disk, the tools, the directories."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from harmonic_installer.config import Settings
from harmonic_installer.disks import DiskInfo, DiskProbe
from harmonic_installer.errors import ConfigError, NotATargetHost, PreflightError
from harmonic_installer.formats import human_bytes
from harmonic_installer.packages import QUERY_TIMEOUT_S
from harmonic_installer.trust import directory_problem

log = structlog.get_logger()

REQUIRED_TOOLS = ("dpkg", "dpkg-query", "dpkg-deb")
# Everything else a run may spend time on, beyond the budgets below: the vendor tool's list-isos, gpgv, stopping
# children (SIGTERM grace, then SIGKILL), the wipe after a failed write, re-hashing reused files, the MAAS flush.
OTHER_WORK_S = 900.0


@dataclass(frozen=True, slots=True)
class PreflightReport:
    """What preflight found: the disk to write and how it was chosen."""

    disk: DiskInfo
    selected_by: str  # "path /dev/sda" or "hints serial=..., min_size_gib=..."
    tools: tuple[str, ...]


def check(
    settings: Settings,
    probe: DiskProbe,
    *,
    geteuid: Callable[[], int] = os.geteuid,
    which: Callable[[str], str | None] = shutil.which,
) -> PreflightReport:
    """Run every read-only check; raise on the first that fails.

    Raises:
        NotATargetHost: the configured disk path does not exist (exit 0, nothing done).
        PreflightError: anything else that makes this host or disk unfit (exit 3).
    """
    check_time_budget(settings)
    if geteuid() != 0:
        raise PreflightError("harmonic-install must run as root (it installs packages and writes a disk)")
    disk, selected_by = select_disk(settings, probe)
    check_disk(disk, allow_removable=settings.disk.allow_removable)
    tools = []
    for tool in REQUIRED_TOOLS:
        found = which(tool)
        if found is None:
            raise PreflightError(f"required tool {tool} is not installed (PATH={os.environ.get('PATH', '')})")
        tools.append(found)
    paths = settings.paths
    for key, directory in (("paths.working_dir", paths.working_dir), ("paths.iso_dir", paths.iso_dir)):
        if directory.exists() and not directory.is_dir():
            raise PreflightError(f"{directory} exists but is not a directory")
        problem = directory_problem(directory)
        if problem is not None:
            raise PreflightError(
                f"{key} {problem}: another user could replace a verified file before it is used; "
                f"set {key} to a directory only root can write"
            )
        if directory.exists() and directory.stat().st_mode & 0o002:
            log.warning("preflight.shared_directory", key=key, path=str(directory), files="only our own are reused")
    log.info("preflight.disk_selected", disk=disk.describe(), selected_by=selected_by)
    return PreflightReport(disk=disk, selected_by=selected_by, tools=tuple(tools))


def select_disk(settings: Settings, probe: DiskProbe) -> tuple[DiskInfo, str]:
    """The target disk: by hints when any is set, else by path (a node or a /dev/disk/by-* link)."""
    hints = settings.disk.hints
    explicit_path = settings.sources.get("disk.device", "default") != "default"
    if hints:
        candidates = [d for d in probe.disks() if _matches(d, hints)]
        wanted = ", ".join(f"{k}={v}" for k, v in hints.items())
        if explicit_path and settings.disk.device:
            candidates = [d for d in candidates if _same_device(d, settings.disk.device)]
            wanted += f", device={settings.disk.device}"
        if len(candidates) != 1:
            listing = "; ".join(d.describe() for d in probe.disks()) or "none"
            what = "no disk matches" if not candidates else f"{len(candidates)} disks match"
            raise PreflightError(f"{what} the disk hints ({wanted}); disks on this host: {listing}")
        return candidates[0], f"hints {wanted}"

    path = settings.disk.device
    if path is None:
        raise PreflightError("no target disk configured (disk.device or disk hints)")
    real = os.path.realpath(path)
    if not real.startswith("/dev/"):
        raise PreflightError(f"disk {path} resolves to {real}, which is not under /dev")
    try:
        disk = probe.lookup(path)
    except ValueError as exc:
        raise PreflightError(f"disk {path}: {exc}") from None
    if disk is None:
        raise NotATargetHost(f"disk {path} not found: this host is not a Harmonic cOS target; nothing done")
    return disk, f"path {path}"


@dataclass(frozen=True, slots=True)
class TimeBudget:
    """The longest a run may take under these settings, and what it is made of."""

    total_s: float
    parts: tuple[tuple[str, float], ...]  # (what, seconds), summing to total_s

    def describe(self) -> str:
        """'5 downloads x download.max_time_s 3600 s = 18000 s + ...' for the operator."""
        return " + ".join(f"{what} {seconds:,.0f} s" for what, seconds in self.parts)


def time_budget(settings: Settings) -> TimeBudget:
    """The worst case these settings allow: every fetch using its whole download budget, dpkg and the write their
    whole timeouts. Fetches: each deb, the ISO, each distinct SHA256SUMS (and its .gpg with a keyring)."""
    sums_dirs = {settings.packages.path.strip("/"), os.path.dirname(settings.iso.path.strip("/"))}
    fetches = len(settings.packages.names) + 1 + len(sums_dirs) * (2 if settings.checksums.keyring else 1)
    queries = 3 * len(settings.packages.names)  # dpkg-deb --field, then dpkg-query before and after dpkg
    parts = (
        (f"{fetches} downloads x download.max_time_s {settings.download.max_time_s:g} s =",
         fetches * settings.download.max_time_s),
        ("packages.timeout_s", settings.packages.timeout_s),
        (f"{queries} dpkg queries x {QUERY_TIMEOUT_S:g} s =", queries * QUERY_TIMEOUT_S),
        ("write.timeout_s", settings.write.timeout_s),
        ("other work", OTHER_WORK_S),
    )  # fmt: skip
    return TimeBudget(sum(seconds for _, seconds in parts), parts)


def check_time_budget(settings: Settings) -> None:
    """Refuse settings whose worst case does not fit `run.time_limit_s` (systemd would kill the run, maybe mid-write).

    Raises:
        ConfigError: the budgets add up to more than the limit (exit 2, nothing done).
    """
    limit = settings.run.time_limit_s
    if not limit:
        return
    budget = time_budget(settings)
    if budget.total_s > limit:
        raise ConfigError(
            f"the settings allow a run of up to {budget.total_s / 3600:.1f} h ({budget.describe()}), longer than "
            f"run.time_limit_s {limit:g} s ({limit / 3600:.1f} h, the unit's TimeoutStartSec): systemd could kill "
            "it in the middle of the disk write; lower download.max_time_s, packages.timeout_s or write.timeout_s, "
            "or raise TimeoutStartSec and HARMONIC_RUN_TIME_LIMIT_S together (a drop-in: docs/deploying.md)"
        )
    log.info("preflight.time_budget", worst_case_s=round(budget.total_s), limit_s=limit)


def check_disk(disk: DiskInfo, *, allow_removable: bool) -> None:
    """Refuse a disk that is unsafe or impossible to write; each refusal names the reason and any override."""
    if disk.devtype != "disk":
        raise PreflightError(f"{disk.path} is a partition of {disk.parent}: give the whole disk")
    if disk.holds_root:
        raise PreflightError(f"{disk.path} holds the running system's root filesystem: refusing to overwrite it")
    if disk.mountpoints:
        raise PreflightError(
            f"{disk.path} is in use: mounted at {', '.join(disk.mountpoints)} (unmount it or choose another disk)"
        )
    if disk.holders:
        raise PreflightError(
            f"{disk.path} is held by {', '.join(disk.holders)} (LVM, RAID or device-mapper): "
            "deactivate them first (vgchange -an, mdadm --stop, dmsetup remove)"
        )
    if disk.read_only:
        raise PreflightError(f"{disk.path} is read-only")
    if (disk.removable or disk.usb) and not allow_removable:
        kind = "a USB disk" if disk.usb else "removable"
        raise PreflightError(
            f"{disk.path} is {kind} (often the boot media): refusing; "
            "set disk.allow_removable=true (--allow-removable) if it really is the target"
        )
    if disk.size_bytes <= 0:
        raise PreflightError(f"{disk.path} reports a size of 0 bytes (no medium?)")


def recheck_disk(settings: Settings, probe: DiskProbe, before: DiskInfo, image_size: int) -> DiskInfo:
    """The disk looked up again right before the write, with every disk check repeated.

    Preflight may be an hour old, and the vendor packages' maintainer scripts have run as root since: the disk
    must still be the same device (path, size, serial, WWN), still unused and writable, and still big enough.

    Raises:
        PreflightError: the disk vanished, is another device now, or fails a check (exit 3; nothing written).
    """
    try:
        disk, _ = select_disk(settings, probe)
    except NotATargetHost:
        raise PreflightError(f"right before the write: {before.path} is gone; nothing written") from None
    except PreflightError as exc:
        raise PreflightError(f"right before the write: {exc.message}; nothing written") from None
    same = (disk.path, disk.size_bytes, disk.serial, disk.wwn, disk.devtype) == (
        before.path,
        before.size_bytes,
        before.serial,
        before.wwn,
        before.devtype,
    )
    if not same:
        raise PreflightError(
            f"right before the write: the target disk changed since preflight (was {before.describe()}, "
            f"now {disk.describe()}); nothing written"
        )
    try:
        check_disk(disk, allow_removable=settings.disk.allow_removable)
        check_image_fits(disk, image_size)
    except PreflightError as exc:
        raise PreflightError(f"right before the write: {exc.message}; nothing written") from None
    log.info("preflight.disk_rechecked", disk=disk.describe())
    return disk


def check_image_fits(disk: DiskInfo, image_size: int, *, announced: bool = False) -> None:
    """Refuse a disk smaller than the image: from the size the server announces, and again once verified.

    Args:
        announced: the size comes from the response headers, before the body was downloaded.
    """
    if disk.size_bytes < image_size:
        when = "as announced by the server; the ISO was not downloaded" if announced else "nothing was written"
        raise PreflightError(
            f"{disk.path} is {_size(disk.size_bytes)} ({disk.size_bytes:,} bytes), smaller than the image "
            f"({_size(image_size)}, {image_size:,} bytes), {when}; choose a larger disk (disk.device)"
        )


def _size(n: int) -> str:
    return human_bytes(n, largest="TiB")


def _matches(disk: DiskInfo, hints: dict[str, str | int]) -> bool:
    for key, want in hints.items():
        if key == "min_size_gib":
            if disk.size_bytes < int(want) * 1024**3:
                return False
            continue
        have = getattr(disk, key)
        if have is None:
            return False
        if key == "wwn":
            if _norm_wwn(str(have)) != _norm_wwn(str(want)):
                return False
        elif str(have).strip().lower() != str(want).strip().lower():
            return False
    return True


def _norm_wwn(value: str) -> str:
    value = value.strip().lower()
    return value.removeprefix("0x").removeprefix("naa.").removeprefix("eui.")


def _same_device(disk: DiskInfo, path: str) -> bool:
    return os.path.realpath(path) == os.path.realpath(disk.path) or path in disk.links
