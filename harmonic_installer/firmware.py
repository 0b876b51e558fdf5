"""The only user of efivarfs and efibootmgr: the install record in UEFI NVRAM, and BootNext to the disk.

Under MAAS every network boot of an in-memory deploy runs the installer again. The record lets that run
see that this disk already holds an install (release, ISO SHA-256, the disk's identity and its partition
table as written: the table's GUID and the partitions' GUIDs) and boot the disk instead of imaging it again.
The record is an EFI variable under a vendor GUID of our own,
`HarmonicInstall-95f461a0-0dd0-4f9e-9fb8-80168feb7a4d`, holding versioned, checksummed JSON. NVRAM survives
reboots and power cycles, and the record does not depend on the vendor's disk layout beyond "the disk has a
partition table"; the installed OS may grow partitions or add some without breaking the match.

`BootNext` (one-shot, global GUID) points the next boot at the disk's boot entry, so the firmware's order
(network first, as MAAS needs it) is left alone. Boot entries are handled with efibootmgr when it runs, else
through efivarfs directly (Boot#### load options and BootNext), which needs no package at all.

Nothing here ever fails an install: problems come back as warnings for the log and for MAAS.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import struct
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from harmonic_installer.disks import DiskInfo
from harmonic_installer.errors import CommandError
from harmonic_installer.gpt import Partition, PartitionTable
from harmonic_installer.runner import Runner

log = structlog.get_logger()

EFIVARS_DIR = Path("/sys/firmware/efi/efivars")
GLOBAL_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"  # EFI_GLOBAL_VARIABLE: Boot####, BootOrder, BootNext
RECORD_GUID = "95f461a0-0dd0-4f9e-9fb8-80168feb7a4d"  # ours: the kernel refuses new names under the global GUID
RECORD_NAME = "HarmonicInstall"
RECORD_FORMAT = "harmonic-install-record"
RECORD_VERSION = 1
ESP_LOADER = "\\EFI\\BOOT\\BOOTX64.EFI"  # the removable-media path every UEFI firmware boots
ENTRY_LABEL = "Harmonic cOS"
EFIBOOTMGR = "efibootmgr"
REIMAGE_HINT = "--reimage, HARMONIC_INSTALL_REIMAGE=1 or the kernel option harmonic.install.reimage=1 (a MAAS tag)"

_ATTRS = 0x7  # NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_IMMUTABLE_FL = 0x10
_MAX_LINKS = 4  # by-id links kept in the record (NVRAM is small)
_MAX_PARTITIONS = 16
_TOOL_TIMEOUT_S = 30.0


# ---------------------------------------------------------------------------------------------------------
# The record.


@dataclass(frozen=True, slots=True)
class InstallRecord:
    """What an install left on this disk, as remembered in NVRAM."""

    release: str
    iso_sha256: str
    disk: str  # the device node at install time (for messages; identity is below)
    serial: str | None
    wwn: str | None
    by_id: tuple[str, ...]
    size_bytes: int
    table: str  # "<kind>:<disk GUID>" of the partition table right after the write
    partuuids: tuple[str, ...]  # the partitions' GUIDs (PARTUUIDs) right after the write
    entries_sha256: str  # digest of the entry array as written (a later difference is logged, not a mismatch)
    written_at: str  # UTC, ISO 8601

    @classmethod
    def of(cls, *, release: str, iso_sha256: str, disk: DiskInfo, table: PartitionTable) -> InstallRecord:
        """The record for an install that just wrote `disk`, whose table is now `table`."""
        by_id = tuple(link for link in disk.links if link.startswith("/dev/disk/by-id/"))[:_MAX_LINKS]
        return cls(
            release=release,
            iso_sha256=iso_sha256,
            disk=disk.path,
            serial=disk.serial,
            wwn=disk.wwn,
            by_id=by_id,
            size_bytes=disk.size_bytes,
            table=f"{table.kind}:{table.disk_guid}",
            partuuids=tuple(p.part_guid for p in table.partitions)[:_MAX_PARTITIONS],
            entries_sha256=table.entries_sha256,
            written_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )

    def encode(self) -> bytes:
        """Versioned JSON with a SHA-256 of the record's canonical form."""
        body = _canonical(self._fields())
        wrapper = {
            "format": RECORD_FORMAT,
            "version": RECORD_VERSION,
            "record": self._fields(),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        return json.dumps(wrapper, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> InstallRecord:
        """Parse encode()'s output.

        Raises:
            ValueError: not our format, another version, or the checksum does not match.
        """
        try:
            wrapper = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON ({exc.__class__.__name__})") from None
        if not isinstance(wrapper, dict) or wrapper.get("format") != RECORD_FORMAT:
            raise ValueError("not an install record")
        if wrapper.get("version") != RECORD_VERSION:
            raise ValueError(f"record version {wrapper.get('version')!r}, this installer reads {RECORD_VERSION}")
        fields = wrapper.get("record")
        if not isinstance(fields, dict) or hashlib.sha256(_canonical(fields)).hexdigest() != wrapper.get("sha256"):
            raise ValueError("checksum mismatch")
        try:
            return cls(
                release=str(fields["release"]),
                iso_sha256=str(fields["iso_sha256"]),
                disk=str(fields["disk"]),
                serial=_opt_str(fields["serial"]),
                wwn=_opt_str(fields["wwn"]),
                by_id=tuple(str(x) for x in fields["by_id"]),
                size_bytes=int(fields["size_bytes"]),
                table=str(fields["table"]),
                partuuids=tuple(str(x) for x in fields["partuuids"]),
                entries_sha256=str(fields["entries_sha256"]),
                written_at=str(fields["written_at"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"incomplete record ({exc})") from None

    def mismatch(self, disk: DiskInfo, table: PartitionTable | None) -> str | None:
        """Why this record does not describe `disk` as it is now, or None when it does."""
        return self._other_disk(disk) or self._other_table(table)

    def _other_disk(self, disk: DiskInfo) -> str | None:
        if self.serial and disk.serial != self.serial:
            return f"a different disk: serial {disk.serial or 'none'}, the record has {self.serial}"
        if self.wwn and disk.wwn != self.wwn:
            return f"a different disk: WWN {disk.wwn or 'none'}, the record has {self.wwn}"
        if disk.size_bytes != self.size_bytes:
            return f"a different disk: {disk.size_bytes} bytes, the record has {self.size_bytes}"
        return None

    def _other_table(self, table: PartitionTable | None) -> str | None:
        if table is None:
            return "the disk has no partition table now (wiped?)"
        if f"{table.kind}:{table.disk_guid}" != self.table:
            return (
                f"the disk holds another partition table ({table.kind} {table.disk_guid}, the record has "
                f"{self.table}): re-imaged or re-partitioned"
            )
        missing = sorted(set(self.partuuids) - {p.part_guid for p in table.partitions})
        if missing:
            return f"partitions of the install are gone ({', '.join(missing)}): re-partitioned"
        if table.entries_sha256 != self.entries_sha256:
            log.info(
                "firmware.table_changed_since_install",
                detail="same table and partitions, other sizes or added partitions (e.g. grown by the installed OS)",
            )
        return None

    def describe(self) -> str:
        """'release X on /dev/sda (serial S, record from 2026-12-06T21:00:00Z)'."""
        ident = f"serial {self.serial}" if self.serial else (f"wwn {self.wwn}" if self.wwn else "no serial")
        return f"release {self.release} on {self.disk} ({ident}, record from {self.written_at})"

    def _fields(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "iso_sha256": self.iso_sha256,
            "disk": self.disk,
            "serial": self.serial,
            "wwn": self.wwn,
            "by_id": list(self.by_id),
            "size_bytes": self.size_bytes,
            "table": self.table,
            "partuuids": list(self.partuuids),
            "entries_sha256": self.entries_sha256,
            "written_at": self.written_at,
        }


def _canonical(fields: Mapping[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


# ---------------------------------------------------------------------------------------------------------
# efivarfs.


class Efivars:
    """EFI variables through efivarfs (a directory of `<Name>-<guid>` files: 4 attribute bytes + data)."""

    def __init__(self, directory: Path = EFIVARS_DIR) -> None:
        self.directory = directory

    def unavailable(self) -> str | None:
        """Why variables cannot be used here (legacy BIOS, efivarfs not mounted), or None."""
        if not self.directory.parent.is_dir():
            return f"no UEFI firmware ({self.directory.parent} does not exist: legacy BIOS boot)"
        if not self.directory.is_dir():
            return f"efivarfs is not mounted at {self.directory}"
        return None

    def read(self, name: str, guid: str) -> bytes | None:
        """The variable's data (without the attributes), or None when it does not exist."""
        try:
            raw = (self.directory / f"{name}-{guid}").read_bytes()
        except FileNotFoundError:
            return None
        return raw[4:] if len(raw) >= 4 else b""

    def names(self, guid: str) -> list[str]:
        """Names of the variables under `guid`."""
        suffix = f"-{guid}"
        try:
            return sorted(p.name[: -len(suffix)] for p in self.directory.iterdir() if p.name.endswith(suffix))
        except OSError:
            return []

    def write(self, name: str, guid: str, data: bytes, attrs: int = _ATTRS) -> None:
        """Create or replace the variable: one write() of the attributes and the data.

        Raises:
            OSError: the kernel or the firmware refused (read-only efivarfs, NVRAM full, EINVAL ...).
        """
        path = self.directory / f"{name}-{guid}"
        if path.exists():
            self.delete(name, guid)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            payload = struct.pack("<I", attrs) + data
            if os.write(fd, payload) != len(payload):
                raise OSError(errno.EIO, "short write to efivarfs", str(path))
        finally:
            os.close(fd)

    def delete(self, name: str, guid: str) -> None:
        """Remove the variable (clearing the immutable flag efivarfs sets on most variables)."""
        path = self.directory / f"{name}-{guid}"
        _make_mutable(path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _make_mutable(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        buf = bytearray(4)
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buf)
        flags = struct.unpack("<I", buf)[0]
        if flags & _FS_IMMUTABLE_FL:
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("<I", flags & ~_FS_IMMUTABLE_FL))
    except OSError as exc:
        if exc.errno not in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL):  # a file system without flags
            raise
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------------------
# Is this host installed already?


@dataclass(frozen=True, slots=True)
class Finding:
    """What the record says about the disk that is present."""

    record: InstallRecord | None  # set only when the record matches this disk and no re-image was asked for
    summary: str  # one line for the step detail
    warning: str | None = None  # also for MAAS: a later network boot will re-image


def installed(efivars: Efivars, disk: DiskInfo, table: PartitionTable | None, *, reimage: bool) -> Finding:
    """Whether `disk` (with `table` on it now) holds the install the NVRAM record describes."""
    why_not = efivars.unavailable()
    if why_not is not None:
        warning = f"{why_not}: no install record can be kept, so a later network boot will image this disk again"
        log.warning("firmware.no_uefi", reason=why_not, consequence="a later network boot will re-image the disk")
        return Finding(None, f"no record: {why_not}", warning)
    record = read_record(efivars)
    if record is None:
        log.info("firmware.record_missing", variable=f"{RECORD_NAME}-{RECORD_GUID}")
        return Finding(None, "no install record in NVRAM: installing")
    reason = record.mismatch(disk, table)
    if reason is not None:
        log.info("firmware.record_mismatch", record=record.describe(), disk=disk.path, reason=reason)
        return Finding(None, f"the record ({record.describe()}) does not match: {reason}; installing")
    if reimage:
        log.warning("firmware.record_ignored", record=record.describe(), reason="re-image requested (install.reimage)")
        return Finding(None, f"already installed ({record.describe()}), re-imaging as asked (install.reimage)")
    log.info("firmware.record_found", record=record.describe(), disk=disk.path)
    return Finding(record, f"already installed: {record.describe()}")


def read_record(efivars: Efivars) -> InstallRecord | None:
    """The record in NVRAM; a garbled or unreadable one is treated as none (with a warning)."""
    try:
        data = efivars.read(RECORD_NAME, RECORD_GUID)
    except OSError as exc:
        log.warning("firmware.record_unreadable", error=exc.strerror or str(exc), treated_as="no record")
        return None
    if data is None:
        return None
    try:
        return InstallRecord.decode(data)
    except ValueError as exc:
        log.warning("firmware.record_garbled", error=str(exc), size=len(data), treated_as="no record")
        return None


def remember(efivars: Efivars, record: InstallRecord) -> str | None:
    """Write the record to NVRAM; returns a warning when it could not be kept (never raises)."""
    why_not = efivars.unavailable()
    if why_not is not None:
        return f"install not remembered: {why_not}; a later network boot will image this disk again"
    try:
        efivars.write(RECORD_NAME, RECORD_GUID, record.encode())
        if read_record(efivars) != record:
            raise OSError(errno.EIO, "the record read back differs from the one written")
    except OSError as exc:
        error = exc.strerror or str(exc)
        log.warning("firmware.record_not_saved", error=error, consequence="a later network boot will re-image")
        return f"install not remembered (NVRAM: {error}); a later network boot will image this disk again"
    log.info("firmware.record_saved", variable=f"{RECORD_NAME}-{RECORD_GUID}", record=record.describe())
    return None


# ---------------------------------------------------------------------------------------------------------
# Boot entries and BootNext.


@dataclass(frozen=True, slots=True)
class BootEntry:
    """One Boot#### load option."""

    number: int
    label: str
    active: bool
    partuuid: str | None  # the GPT partition GUID of an HD() node, lower case
    path: str  # the device path as text

    def describe(self) -> str:
        """'Boot0003* debian HD(1,GPT,...)/File(...)'."""
        return f"Boot{self.number:04X}{'*' if self.active else ' '} {self.label} {self.path}".rstrip()


@dataclass(frozen=True, slots=True)
class BootOutcome:
    """Where the next boot goes."""

    entry: BootEntry | None  # the entry BootNext now names; None: BootNext not set
    summary: str
    warning: str | None = None


_EFIBOOTMGR_ENTRY = re.compile(r"^Boot([0-9A-Fa-f]{4})(\*?)\s?(.*)$")
_HD_GPT = re.compile(r"HD\((\d+),GPT,([0-9A-Fa-f-]{36})", re.IGNORECASE)
_DEVICE_PATH_START = re.compile(r"\b(HD|PciRoot|Pci|FvVol|FvFile|BBS|VenHw|VenMsg|MAC|Uri|Acpi|File)\(")


def parse_efibootmgr(output: str) -> tuple[list[BootEntry], list[int]]:
    """The entries and the BootOrder in `efibootmgr -v` output (efibootmgr 17 and 18 formats)."""
    entries: list[BootEntry] = []
    order: list[int] = []
    for line in output.splitlines():
        if line.startswith("BootOrder:"):
            order = [int(x, 16) for x in re.findall(r"[0-9A-Fa-f]{4}", line.split(":", 1)[1])]
            continue
        match = _EFIBOOTMGR_ENTRY.match(line)
        if match is None:
            continue
        number, star, rest = int(match.group(1), 16), match.group(2), match.group(3)
        if "\t" in rest:
            label, path = rest.split("\t", 1)
        else:
            start = _DEVICE_PATH_START.search(rest)
            label, path = (rest[: start.start()], rest[start.start() :]) if start else (rest, "")
        hd = _HD_GPT.search(path)
        entries.append(BootEntry(number, label.strip(), bool(star), hd.group(2).lower() if hd else None, path.strip()))
    return entries, order


def parse_load_option(number: int, data: bytes) -> BootEntry | None:
    """A Boot#### variable's EFI_LOAD_OPTION (attributes, path length, UCS-2 label, device path), or None."""
    if len(data) < 6:
        return None
    attributes, path_len = struct.unpack_from("<IH", data, 0)
    end = 6
    while end + 1 < len(data) and data[end : end + 2] != b"\0\0":
        end += 2
    label = data[6:end].decode("utf-16-le", "replace")
    dp = data[end + 2 : end + 2 + path_len]
    nodes: list[str] = []
    partuuid = None
    offset = 0
    while offset + 4 <= len(dp):
        kind, sub, length = struct.unpack_from("<BBH", dp, offset)
        if length < 4 or offset + length > len(dp) or kind == 0x7F:
            break
        node = dp[offset : offset + length]
        if kind == 4 and sub == 1 and length >= 42:
            part, first, size = struct.unpack_from("<IQQ", node, 4)
            if node[41] == 2:
                partuuid = str(uuid.UUID(bytes_le=bytes(node[24:40])))
                nodes.append(f"HD({part},GPT,{partuuid},{first:#x},{size:#x})")
            else:
                nodes.append(f"HD({part},MBR,...)")
        elif kind == 4 and sub == 4:
            nodes.append("File(" + node[4:].decode("utf-16-le", "replace").rstrip("\0") + ")")
        else:
            nodes.append(f"Node({kind},{sub})")
        offset += length
    return BootEntry(number, label, bool(attributes & 1), partuuid, "/".join(nodes))


def load_option(label: str, partition: Partition, loader: str = ESP_LOADER) -> bytes:
    """An EFI_LOAD_OPTION for `loader` on a GPT partition: HD(...)/File(...), the form efibootmgr writes."""
    description = (label + "\0").encode("utf-16-le")
    hd = struct.pack(
        "<BBHIQQ16sBB",
        4,
        1,
        42,
        partition.number,
        partition.first_lba,
        partition.last_lba - partition.first_lba + 1,
        uuid.UUID(partition.part_guid).bytes_le,
        2,  # partition format: GPT
        2,  # signature type: GUID
    )
    path = (loader + "\0").encode("utf-16-le")
    device_path = hd + struct.pack("<BBH", 4, 4, 4 + len(path)) + path + struct.pack("<BBH", 0x7F, 0xFF, 4)
    return struct.pack("<IH", 1, len(device_path)) + description + device_path


class _Efibootmgr:
    """Boot entries through efibootmgr (the runner)."""

    name = "efibootmgr"

    def __init__(self, runner: Runner, env: Mapping[str, str] | None) -> None:
        self._runner = runner
        self._env = env

    def entries(self) -> tuple[list[BootEntry], list[int]]:
        out = self._runner.run([EFIBOOTMGR, "-v"], env=self._env, timeout=_TOOL_TIMEOUT_S).output
        return parse_efibootmgr(out)

    def create(self, disk: str, partition: Partition) -> None:
        # -C: create the entry without putting it into BootOrder (the firmware order stays as MAAS set it).
        argv = [EFIBOOTMGR, "-C", "-d", disk, "-p", str(partition.number), "-L", ENTRY_LABEL, "-l", ESP_LOADER]
        self._runner.run(argv, env=self._env, timeout=_TOOL_TIMEOUT_S)

    def set_next(self, number: int) -> None:
        self._runner.run([EFIBOOTMGR, "-n", f"{number:04X}"], env=self._env, timeout=_TOOL_TIMEOUT_S)

    def delete(self, number: int) -> None:
        self._runner.run([EFIBOOTMGR, "-b", f"{number:04X}", "-B"], env=self._env, timeout=_TOOL_TIMEOUT_S)


class _EfivarsBoot:
    """Boot entries through efivarfs directly (no efibootmgr needed)."""

    name = "efivarfs"

    def __init__(self, efivars: Efivars) -> None:
        self._efivars = efivars

    def entries(self) -> tuple[list[BootEntry], list[int]]:
        found = []
        for name in self._efivars.names(GLOBAL_GUID):
            if re.fullmatch(r"Boot[0-9A-Fa-f]{4}", name):
                data = self._efivars.read(name, GLOBAL_GUID)
                entry = parse_load_option(int(name[4:], 16), data or b"")
                if entry is not None:
                    found.append(entry)
        raw = self._efivars.read("BootOrder", GLOBAL_GUID) or b""
        order = [struct.unpack_from("<H", raw, i)[0] for i in range(0, len(raw) - 1, 2)]
        return sorted(found, key=lambda e: e.number), order

    def create(self, _disk: str, partition: Partition) -> None:
        used = {e.number for e in self.entries()[0]}
        number = next(n for n in range(0x10000) if n not in used)
        self._efivars.write(f"Boot{number:04X}", GLOBAL_GUID, load_option(ENTRY_LABEL, partition))

    def set_next(self, number: int) -> None:
        self._efivars.write("BootNext", GLOBAL_GUID, struct.pack("<H", number))

    def delete(self, number: int) -> None:
        self._efivars.delete(f"Boot{number:04X}", GLOBAL_GUID)  # ours are never in BootOrder


def boot_next_to_disk(
    runner: Runner, efivars: Efivars, disk: str, table: PartitionTable | None, *, env: Mapping[str, str] | None
) -> BootOutcome:
    """Point UEFI BootNext at the disk: the vendor's entry for one of its partitions if there is one, else a new
    entry for its EFI system partition (\\EFI\\BOOT\\BOOTX64.EFI). Never raises: problems are the warning."""
    why_not = efivars.unavailable()
    if why_not is not None:
        return BootOutcome(None, f"BootNext not set: {why_not}", f"{why_not}: the next boot follows the firmware order")
    if table is None or table.kind != "gpt":
        warning = f"{disk} has no GPT after the write: no boot entry can point at it; the firmware order decides"
        log.warning("firmware.boot_next_failed", disk=disk, reason="no GPT on the disk")
        return BootOutcome(None, "BootNext not set: no GPT on the disk", warning)
    tool: _Efibootmgr | _EfivarsBoot = _Efibootmgr(runner, env)
    listed = None
    try:
        listed = tool.entries()
    except CommandError as exc:
        log.warning("firmware.efibootmgr_unavailable", error=str(exc), instead="reading and writing efivarfs directly")
        tool = _EfivarsBoot(efivars)
    try:
        entries, order = listed or tool.entries()
        log.info("firmware.boot_entries", when="before", tool=tool.name, order=_order(order), entries=_shown(entries))
        ours = {p.part_guid.lower() for p in table.partitions}
        entry = _pick(entries, order, ours)
        if entry is None:
            esp = table.esp()
            if esp is None:
                warning = f"{disk} has no EFI system partition and no boot entry: the firmware order decides"
                log.warning("firmware.boot_next_failed", disk=disk, reason="no boot entry and no EFI system partition")
                return BootOutcome(None, "BootNext not set: no boot entry and no EFI system partition", warning)
            _forget_stale(tool, entries, ours)
            try:
                tool.create(disk, esp)
            except CommandError as exc:  # e.g. efibootmgr cannot work out this disk's device path
                log.warning("firmware.efibootmgr_create_failed", error=str(exc), instead="writing Boot#### directly")
                tool = _EfivarsBoot(efivars)
                tool.create(disk, esp)
            entries, order = tool.entries()
            entry = _pick(entries, order, {esp.part_guid.lower()})
            if entry is None:
                raise OSError(errno.EIO, "the new boot entry is not listed after creating it")
            log.info("firmware.boot_entry_created", entry=entry.describe(), tool=tool.name)
            how = f"created {entry.describe()}"
        else:
            how = f"the disk's entry {entry.describe()}"
        tool.set_next(entry.number)
        entries, order = tool.entries()
        log.info("firmware.boot_entries", when="after", tool=tool.name, order=_order(order), entries=_shown(entries))
    except (CommandError, OSError, ValueError, struct.error) as exc:  # never fail the install for this
        error = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
        log.warning("firmware.boot_next_failed", disk=disk, error=error, tool=tool.name)
        return BootOutcome(None, f"BootNext not set: {error}", f"could not set BootNext to {disk}: {error}")
    log.info("firmware.boot_next_set", entry=f"Boot{entry.number:04X}", label=entry.label, disk=disk, tool=tool.name)
    return BootOutcome(entry, f"BootNext=Boot{entry.number:04X} ({how})")


def _forget_stale(tool: _Efibootmgr | _EfivarsBoot, entries: list[BootEntry], partuuids: set[str]) -> None:
    """Delete the entries an earlier install of ours made for partitions that are gone (best effort)."""
    for entry in entries:
        if entry.label == ENTRY_LABEL and entry.partuuid is not None and entry.partuuid not in partuuids:
            try:
                tool.delete(entry.number)
                log.info("firmware.boot_entry_deleted", entry=entry.describe(), reason="its partition is gone")
            except (CommandError, OSError) as exc:
                log.info("firmware.boot_entry_kept", entry=entry.describe(), error=str(exc))


def _pick(entries: list[BootEntry], order: list[int], partuuids: set[str]) -> BootEntry | None:
    """The entry for one of `partuuids`: the first in BootOrder, else the lowest number; active ones first."""
    mine = [e for e in entries if e.partuuid is not None and e.partuuid in partuuids]
    if not mine:
        return None
    rank = {n: i for i, n in enumerate(order)}
    return sorted(mine, key=lambda e: (not e.active, rank.get(e.number, len(rank)), e.number))[0]


def _order(order: list[int]) -> str:
    return ",".join(f"{n:04X}" for n in order)


def _shown(entries: list[BootEntry]) -> list[str]:
    return [e.describe() for e in entries]
