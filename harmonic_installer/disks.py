"""The only user of pyudev: find block devices and describe them (DiskInfo).

Facts come from sysfs attributes and device numbers, which exist even where udev has not run (a chroot,
a container); udev properties (serial, model, WWN, bus, by-id links) are used when present.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyudev  # noqa: TID251  # the one owner of udev (DESIGN.md)
import structlog

from harmonic_installer import gpt

log = structlog.get_logger()

SECTOR = 512


@dataclass(frozen=True, slots=True)
class DiskInfo:
    """One block device as the installer sees it."""

    path: str  # device node, e.g. /dev/sda
    name: str  # kernel name, e.g. sda
    devtype: str  # "disk" or "partition"
    size_bytes: int
    read_only: bool
    removable: bool
    usb: bool
    model: str | None
    serial: str | None
    wwn: str | None
    links: tuple[str, ...]  # /dev/disk/by-* links
    partitions: tuple[str, ...]  # device nodes of its partitions
    holders: tuple[str, ...]  # kernel names holding it or its partitions (dm-0, md127)
    mountpoints: tuple[str, ...]  # where it or its partitions are mounted (swap shows as "[SWAP]")
    holds_root: bool  # the running system's / lives on it
    parent: str | None = None  # for a partition: the whole disk's node

    def describe(self) -> str:
        """One line for logs and error messages: '/dev/sda 480.1 GB SAMSUNG MZ7 serial S3...'."""
        bits = [self.path, f"{self.size_bytes / 1e9:.1f} GB"]
        if self.model:
            bits.append(self.model)
        if self.serial:
            bits.append(f"serial {self.serial}")
        if self.wwn:
            bits.append(f"wwn {self.wwn}")
        return " ".join(bits)


class DiskProbe(Protocol):
    """Looks up block devices; the injected edge for preflight."""

    def lookup(self, path: str) -> DiskInfo | None:
        """The block device at `path` (a node or a /dev/disk/by-* link), or None if there is none."""
        ...

    def disks(self) -> list[DiskInfo]:
        """Every physical whole disk (no loop, ram, dm or md devices)."""
        ...

    def partition_table(self, path: str) -> gpt.PartitionTable | None:
        """The partition table on the disk at `path` as stored now, or None (none, or unreadable)."""
        ...


class UdevDiskProbe:
    """The real DiskProbe, reading udev and sysfs."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._context = pyudev.Context()
        self._proc = proc

    def lookup(self, path: str) -> DiskInfo | None:
        """See DiskProbe.lookup. Raises ValueError when `path` exists but is not a block device."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        if not stat.S_ISBLK(st.st_mode):
            raise ValueError(f"{path} is not a block device")
        try:
            device = pyudev.Devices.from_device_number(self._context, "block", st.st_rdev)
        except pyudev.DeviceNotFoundError:
            return None
        return self._describe(device, _Mounts.read(self._proc))

    def disks(self) -> list[DiskInfo]:
        """See DiskProbe.disks."""
        mounts = _Mounts.read(self._proc)
        found = []
        for device in self._context.list_devices(subsystem="block", DEVTYPE="disk"):
            if "/devices/virtual/" in device.sys_path:
                continue
            if device.sys_name.startswith(("sr", "fd")):
                continue
            found.append(self._describe(device, mounts))
        return sorted(found, key=lambda d: d.name)

    def partition_table(self, path: str) -> gpt.PartitionTable | None:
        """See DiskProbe.partition_table."""
        return read_partition_table(path)

    def _describe(self, device: Any, mounts: _Mounts) -> DiskInfo:
        props = device.properties
        devtype = device.device_type or "disk"
        disk_device = device
        if devtype != "disk":
            parent = device.find_parent("block", "disk")
            disk_device = parent if parent is not None else device
        partitions = tuple(
            sorted(
                p.device_node
                for p in disk_device.children
                if p.subsystem == "block" and p.device_type == "partition" and p.device_node
            )
        )
        members = [disk_device, *(p for p in disk_device.children if p.device_type == "partition")]
        if devtype == "partition":
            members = [device]
        holders: list[str] = []
        mountpoints: list[str] = []
        holds_root = False
        for member in members:
            holders.extend(_holders(Path(member.sys_path)))
            number = member.device_number
            mountpoints.extend(mounts.by_devno.get(number, ()))
            holds_root = holds_root or number == mounts.root_devno
            node = member.device_node
            if node and os.path.realpath(node) in mounts.swaps:
                mountpoints.append("[SWAP]")
        sys_path = Path(device.sys_path)
        disk_sys = Path(disk_device.sys_path)
        size = _int_attr(sys_path / "size") * SECTOR
        return DiskInfo(
            path=device.device_node or f"/dev/{device.sys_name}",
            name=device.sys_name,
            devtype=devtype,
            size_bytes=size,
            read_only=_int_attr(sys_path / "ro") == 1,
            removable=_int_attr(disk_sys / "removable") == 1,
            usb=props.get("ID_BUS") == "usb" or "/usb" in disk_device.sys_path,
            model=_clean((props.get("ID_MODEL") or "").replace("_", " ")) or _text_attr(disk_sys / "device" / "model"),
            serial=_clean(props.get("ID_SERIAL_SHORT"))
            or _text_attr(disk_sys / "device" / "serial")
            or _clean(props.get("ID_SERIAL")),
            wwn=_clean(props.get("ID_WWN")) or _text_attr(disk_sys / "device" / "wwid"),
            links=tuple(sorted(device.device_links)),
            partitions=partitions if devtype == "disk" else (),
            holders=tuple(sorted(set(holders))),
            mountpoints=tuple(dict.fromkeys(mountpoints)),
            holds_root=holds_root,
            parent=None if devtype == "disk" else disk_device.device_node,
        )


def read_partition_table(path: str) -> gpt.PartitionTable | None:
    """Read the partition table from a disk (or a disk image file) as stored on it now, bypassing stale caches.

    Returns None when there is no valid table or the device cannot be read (logged).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        log.warning("disk.table_unreadable", disk=path, error=exc.strerror)
        return None
    try:
        with contextlib.suppress(OSError):  # drop cached blocks: the vendor tool may have written around them
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)

        def read_at(offset: int, length: int) -> bytes:
            return os.pread(fd, length, offset)

        return gpt.parse(read_at)
    except OSError as exc:
        log.warning("disk.table_unreadable", disk=path, error=exc.strerror)
        return None
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class _Mounts:
    by_devno: dict[int, tuple[str, ...]]
    root_devno: int | None
    swaps: frozenset[str]

    @classmethod
    def read(cls, proc: Path) -> _Mounts:
        by_devno: dict[int, list[str]] = {}
        root: int | None = None
        try:
            lines = (proc / "self" / "mountinfo").read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:
            fields = line.split()
            if len(fields) < 5 or ":" not in fields[2]:
                continue
            major, minor = (int(x) for x in fields[2].split(":", 1))
            devno = os.makedev(major, minor)
            mountpoint = fields[4].replace("\\040", " ")
            by_devno.setdefault(devno, []).append(mountpoint)
            if mountpoint == "/":
                root = devno
        swaps: set[str] = set()
        try:
            for line in (proc / "swaps").read_text().splitlines()[1:]:
                if line.split():
                    swaps.add(os.path.realpath(line.split()[0]))
        except OSError:
            pass
        return cls({k: tuple(v) for k, v in by_devno.items()}, root, frozenset(swaps))


def _holders(sys_path: Path) -> Iterable[str]:
    try:
        return [p.name for p in (sys_path / "holders").iterdir()]
    except OSError:
        return []


def _int_attr(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _text_attr(path: Path) -> str | None:
    try:
        return _clean(path.read_text())
    except OSError:
        return None


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    return value.strip() or None
