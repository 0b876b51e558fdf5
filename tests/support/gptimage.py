"""Build GPT disk images in memory (header + entry array with real CRC32s), for tests of the table parser."""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass

from harmonic_installer import gpt

ESP = gpt.ESP_TYPE
LINUX = "0fc63daf-8483-4772-8e79-3d69d8477de4"


@dataclass(frozen=True)
class Part:
    type_guid: str
    part_guid: str
    first_lba: int
    last_lba: int
    name: str = ""


def image(disk_guid: str, parts: list[Part], *, sectors: int = 65536, sector: int = 512) -> bytes:
    """A disk image of `sectors` sectors holding a protective MBR and a primary GPT (entries at LBA 2)."""
    entries = bytearray(128 * 128)
    for i, p in enumerate(parts):
        struct.pack_into(
            "<16s16sQQQ72s",
            entries,
            i * 128,
            uuid.UUID(p.type_guid).bytes_le,
            uuid.UUID(p.part_guid).bytes_le,
            p.first_lba,
            p.last_lba,
            0,
            p.name.encode("utf-16-le"),
        )
    header = bytearray(92)
    struct.pack_into(
        "<8sIIIIQQQQ16sQIII",
        header,
        0,
        b"EFI PART",
        0x00010000,
        92,
        0,
        0,
        1,
        sectors - 1,
        34,
        sectors - 34,
        uuid.UUID(disk_guid).bytes_le,
        2,
        128,
        128,
        zlib.crc32(bytes(entries)),
    )
    struct.pack_into("<I", header, 16, zlib.crc32(bytes(header)))
    mbr = bytearray(512)
    struct.pack_into("<BBBBBBBBII", mbr, 446, 0, 0, 2, 0, 0xEE, 0xFF, 0xFF, 0xFF, 1, min(sectors - 1, 0xFFFFFFFF))
    mbr[510:512] = b"\x55\xaa"
    data = bytearray(34 * sector)
    data[0:512] = mbr
    data[sector : sector + 92] = header
    data[2 * sector : 2 * sector + len(entries)] = entries
    return bytes(data)


def table(disk_guid: str, parts: list[Part]) -> gpt.PartitionTable:
    """The PartitionTable the parser reads from image(disk_guid, parts)."""
    raw = image(disk_guid, parts)
    parsed = gpt.parse(lambda offset, length: raw[offset : offset + length])
    assert parsed is not None
    return parsed


def standard(seed: int = 1) -> gpt.PartitionTable:
    """An ESP and a root partition, with GUIDs derived from `seed` (another seed: another install)."""
    g = [str(uuid.UUID(int=(seed << 16) + i)) for i in range(3)]
    return table(g[0], [Part(ESP, g[1], 2048, 206847, "EFI"), Part(LINUX, g[2], 206848, 60000, "root")])
