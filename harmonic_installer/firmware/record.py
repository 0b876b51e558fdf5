"""The install record in NVRAM: what an install left on this disk, and whether the disk present is that disk.

The record is an EFI variable under a vendor GUID of our own, `HarmonicInstall-95f461a0-...`, holding
versioned, checksummed JSON: release, ISO SHA-256, the disk's identity and its partition table as written.
"""

from __future__ import annotations

import errno
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from harmonic_installer.disks import DiskInfo
from harmonic_installer.firmware.efivars import Efivars
from harmonic_installer.gpt import PartitionTable

log = structlog.get_logger()

RECORD_GUID = "95f461a0-0dd0-4f9e-9fb8-80168feb7a4d"  # ours: the kernel refuses new names under the global GUID
RECORD_NAME = "HarmonicInstall"
RECORD_FORMAT = "harmonic-install-record"
RECORD_VERSION = 1
REIMAGE_HINT = "--reimage, HARMONIC_INSTALL_REIMAGE=1 or the kernel option harmonic.install.reimage=1 (a MAAS tag)"
_MAX_LINKS = 4  # by-id links kept in the record (NVRAM is small)
_MAX_PARTITIONS = 16

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
