"""gpt: the partition-table parser that gives the install record its "what the disk holds" identity."""

from __future__ import annotations

import struct

from harmonic_installer import gpt
from tests.support import gptimage

GUIDS = ["6f1e2d3c-0000-4000-8000-00000000000" + str(i) for i in range(4)]
PARTS = [
    gptimage.Part(gptimage.ESP, GUIDS[1], 2048, 206847, "EFI system"),
    gptimage.Part(gptimage.LINUX, GUIDS[2], 206848, 60000, "root"),
]


def _parse(raw: bytes) -> gpt.PartitionTable | None:
    return gpt.parse(lambda offset, length: raw[offset : offset + length])


def test_reads_a_gpt() -> None:
    """The disk GUID, each used entry (number, type, PARTUUID, LBAs, name) and the ESP are read back."""
    table = _parse(gptimage.image(GUIDS[0], PARTS))
    assert table is not None
    assert (table.kind, table.disk_guid, table.sector_size) == ("gpt", GUIDS[0], 512)
    assert [(p.number, p.part_guid, p.first_lba, p.last_lba, p.name) for p in table.partitions] == [
        (1, GUIDS[1], 2048, 206847, "EFI system"),
        (2, GUIDS[2], 206848, 60000, "root"),
    ]
    esp = table.esp()
    assert esp is not None
    assert esp.number == 1


def test_digest_and_guid_tell_tables_apart() -> None:
    """Another disk GUID, or the same GUID with other entries, differs; the same bytes read the same."""
    same = _parse(gptimage.image(GUIDS[0], PARTS))
    other_guid = _parse(gptimage.image(GUIDS[3], PARTS))
    resized = _parse(gptimage.image(GUIDS[0], [PARTS[0], gptimage.Part(gptimage.LINUX, GUIDS[2], 206848, 50000)]))
    assert same is not None
    assert other_guid is not None
    assert resized is not None
    again = _parse(gptimage.image(GUIDS[0], PARTS))
    assert again == same

    def key(t: gpt.PartitionTable) -> tuple[str, str]:
        return (t.disk_guid, t.entries_sha256)

    assert len({key(same), key(other_guid), key(resized)}) == 3
    assert resized.disk_guid == same.disk_guid


def test_a_corrupt_header_or_entry_array_is_no_table() -> None:
    """A GPT whose header or entries fail their CRC32 is not trusted (and the protective MBR is not a table)."""
    raw = bytearray(gptimage.image(GUIDS[0], PARTS))
    bad_entries = bytearray(raw)
    bad_entries[2 * 512 + 60] ^= 0xFF
    bad_header = bytearray(raw)
    bad_header[512 + 60] ^= 0xFF
    assert _parse(bytes(bad_entries)) is None
    assert _parse(bytes(bad_header)) is None


def test_a_zeroed_disk_has_no_table() -> None:
    """A wiped disk (zeros) has no partition table."""
    assert _parse(bytes(34 * 512)) is None


def test_an_mbr_table_is_read() -> None:
    """A plain MBR with one partition gives an 'mbr' table keyed by its disk signature."""
    block = bytearray(512)
    struct.pack_into("<I", block, 440, 0x1234ABCD)
    struct.pack_into("<BBBBBBBBII", block, 446, 0x80, 0, 0, 0, 0x83, 0, 0, 0, 2048, 10000)
    block[510:512] = b"\x55\xaa"
    table = _parse(bytes(block) + bytes(33 * 512))
    assert table is not None
    assert (table.kind, table.disk_guid) == ("mbr", "1234abcd")
    assert [(p.number, p.first_lba, p.last_lba) for p in table.partitions] == [(1, 2048, 12047)]
