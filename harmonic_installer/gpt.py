"""A pure parser of a disk's partition table (GPT, else MBR): what the disk holds, without any vendor layout.

No I/O here: disks.py reads the bytes from the device; the firmware package uses the result as the identity of what
is on the disk (an install record matches only while the table it recorded is still there).
"""

from __future__ import annotations

import hashlib
import struct
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass

ESP_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"  # EFI system partition
_SIGNATURE = b"EFI PART"
_MAX_ENTRIES_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Partition:
    """One used partition entry."""

    number: int  # 1-based, as the kernel and UEFI device paths number them
    type_guid: str
    part_guid: str  # the PARTUUID (GPT) or '<disk signature>-<nn>' (MBR)
    first_lba: int
    last_lba: int
    name: str


@dataclass(frozen=True, slots=True)
class PartitionTable:
    """A disk's partition table and a digest of its entries."""

    kind: str  # "gpt" or "mbr"
    disk_guid: str  # GPT disk GUID, or the MBR disk signature in hex
    sector_size: int
    partitions: tuple[Partition, ...]
    entries_sha256: str  # SHA-256 of the raw entry array as stored on the disk

    def esp(self) -> Partition | None:
        """The first EFI system partition, if any."""
        return next((p for p in self.partitions if p.type_guid == ESP_TYPE), None)


ReadAt = Callable[[int, int], bytes]  # (offset, length) -> bytes


def parse(read_at: ReadAt, sector_sizes: tuple[int, ...] = (512, 4096)) -> PartitionTable | None:
    """The partition table read through `read_at`, or None (no valid GPT and no MBR partitions).

    A GPT counts only when its header and entry array pass their CRC32 checks.
    """
    for sector in sector_sizes:
        table = _gpt(read_at, sector)
        if table is not None:
            return table
    return _mbr(read_at(0, 512))


def _guid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw))


def _gpt(read_at: ReadAt, sector: int) -> PartitionTable | None:
    header = read_at(sector, sector)
    if len(header) < 92 or header[:8] != _SIGNATURE:
        return None
    size = struct.unpack_from("<I", header, 12)[0]
    if not 92 <= size <= sector:
        return None
    crc = struct.unpack_from("<I", header, 16)[0]
    blank = header[:16] + b"\0\0\0\0" + header[20:size]
    if zlib.crc32(blank) != crc:
        return None
    disk_guid = _guid(header[56:72])
    entries_lba, count, entry_size, entries_crc = struct.unpack_from("<QIII", header, 72)
    if entry_size < 128 or count * entry_size > _MAX_ENTRIES_BYTES:
        return None
    raw = read_at(entries_lba * sector, count * entry_size)
    if len(raw) != count * entry_size or zlib.crc32(raw) != entries_crc:
        return None
    parts = []
    for index in range(count):
        entry = raw[index * entry_size : (index + 1) * entry_size]
        if entry[:16] == b"\0" * 16:
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        name = entry[56:128].decode("utf-16-le", "replace").split("\0", 1)[0]
        parts.append(Partition(index + 1, _guid(entry[:16]), _guid(entry[16:32]), first, last, name))
    return PartitionTable("gpt", disk_guid, sector, tuple(parts), hashlib.sha256(raw).hexdigest())


def _mbr(block: bytes) -> PartitionTable | None:
    if len(block) < 512 or block[510:512] != b"\x55\xaa":
        return None
    signature = f"{struct.unpack_from('<I', block, 440)[0]:08x}"
    raw = block[446:510]
    parts = []
    for index in range(4):
        entry = raw[index * 16 : (index + 1) * 16]
        kind = entry[4]
        start, count = struct.unpack_from("<II", entry, 8)
        if kind == 0 or count == 0:
            continue
        if kind == 0xEE:
            return None  # a protective MBR whose GPT did not verify: not a table we trust
        parts.append(Partition(index + 1, f"{kind:02x}", f"{signature}-{index + 1:02d}", start, start + count - 1, ""))
    if not parts:
        return None
    return PartitionTable("mbr", signature, 512, tuple(parts), hashlib.sha256(raw).hexdigest())
