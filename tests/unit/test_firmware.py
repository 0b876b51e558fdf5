"""firmware: the install record in (fake) efivarfs, and the boot-entry logic over efibootmgr output or efivarfs."""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import struct
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from harmonic_installer import firmware
from harmonic_installer.firmware import GLOBAL_GUID, RECORD_GUID, RECORD_NAME, Efivars, InstallRecord
from harmonic_installer.gpt import PartitionTable
from tests.support import gptimage
from tests.unit.fakes import FakeRunner, disk

TABLE = gptimage.standard(seed=7)
ESP = TABLE.partitions[0]
RECORD_FILE = f"{RECORD_NAME}-{RECORD_GUID}"

# `efibootmgr -v` as efibootmgr 17 prints it (Debian 12 and Ubuntu 22.04: 17-2 / 17-1ubuntu2) on OVMF:
# label, a TAB, the device path.
EFIBOOTMGR_17 = """BootCurrent: 0001
Timeout: 0 seconds
BootOrder: 0002,0001,0000,0003
Boot0000* UiApp\tFvVol(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)/FvFile(462caa21-7614-4503-836e-8ab6f4662331)
Boot0001* UEFI QEMU QEMU HARDDISK \tPciRoot(0x0)/Pci(0x1f,0x2)/Sata(0,65535,0)N.....YM....R,Y.
Boot0002* UEFI PXEv4 (MAC:525400123456)\tPciRoot(0x0)/Pci(0x2,0x0)/MAC(525400123456,1)/IPv4(0.0.0.00.0.0.0,0,0)N..
Boot0003* EFI Internal Shell\tFvVol(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)/FvFile(7c04a583-9e3e-4f1c-ad65-e05268d0b4d1)
"""
VENDOR_17 = f"Boot0004* Apollo\tHD(1,GPT,{ESP.part_guid.upper()},0x800,0x32000)/File(\\EFI\\apollo\\grubx64.efi)\n"
# efibootmgr 18 (Debian 13, Ubuntu 24.04): the File() wrapper is gone and -v adds `dp:` lines.
VENDOR_18 = (
    f"Boot0004* Apollo\tHD(1,GPT,{ESP.part_guid},0x800,0x32000)/\\EFI\\apollo\\grubx64.efi\n"
    "      dp: 04 01 2a 00 01 00 00 00 00 08 00 00 00 00 00 00 / 7f ff 04 00\n"
)


def record(**overrides: object) -> InstallRecord:
    base = InstallRecord.of(release="release-1.2.3.0-1+t", iso_sha256="ab" * 32, disk=disk(), table=TABLE)
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]  # overrides untyped on purpose


@pytest.fixture
def efivars(tmp_path: Path) -> Efivars:
    """An empty fake efivarfs on a UEFI machine (the parent stands for /sys/firmware/efi)."""
    (tmp_path / "efi" / "efivars").mkdir(parents=True)
    return Efivars(tmp_path / "efi" / "efivars")


def _immutable(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(4)
        fcntl.ioctl(fd, 0x80086601, buf)
        fcntl.ioctl(fd, 0x40086602, struct.pack("<I", struct.unpack("<I", buf)[0] | 0x10))
    finally:
        os.close(fd)


# ---- the record -------------------------------------------------------------------------------------------


def test_record_round_trips_through_efivarfs_in_one_write(efivars: Efivars) -> None:
    """remember() writes 4 attribute bytes (NV|BS|RT) and the encoded record; read_record() gets it back."""
    rec = record()
    assert firmware.remember(efivars, rec) is None
    raw = (efivars.directory / RECORD_FILE).read_bytes()
    assert raw[:4] == struct.pack("<I", 7)
    assert raw[4:] == rec.encode()
    assert len(raw) < 1024, "NVRAM is small: the record stays well under 1 KiB"
    assert firmware.read_record(efivars) == rec


def test_rewriting_an_immutable_record_clears_the_flag_first(efivars: Efivars) -> None:
    """efivarfs marks variables immutable (chattr +i): a second install still replaces the record."""
    firmware.remember(efivars, record())
    _immutable(efivars.directory / RECORD_FILE)
    newer = record(release="release-2.0.0.0-1+t")
    assert firmware.remember(efivars, newer) is None
    assert firmware.read_record(efivars) == newer


@pytest.mark.parametrize(
    "data",
    [
        b"\x07\x00\x00\x00",  # attributes only
        b"\x07\x00\x00\x00{not json",
        b'\x07\x00\x00\x00{"format":"something-else","version":1}',
    ],
)
def test_garbled_record_is_no_record_with_a_warning(efivars: Efivars, data: bytes) -> None:
    """A variable that does not decode is treated as "no record" (install as usual) and logged as a warning."""
    (efivars.directory / RECORD_FILE).write_bytes(data)
    with capture_logs() as logs:
        assert firmware.read_record(efivars) is None
    assert [e["event"] for e in logs] == ["firmware.record_garbled"]


def test_a_flipped_byte_fails_the_checksum(efivars: Efivars) -> None:
    """Changing the release inside the stored JSON without the checksum makes the record garbled."""
    firmware.remember(efivars, record())
    path = efivars.directory / RECORD_FILE
    path.write_bytes(path.read_bytes().replace(b"release-1.2.3", b"release-9.2.3"))
    assert firmware.read_record(efivars) is None


def test_another_record_version_is_not_trusted() -> None:
    """A record of an unknown version is refused with a reason (a newer installer's format)."""
    data = record().encode().replace(b'"version":1', b'"version":2')
    with pytest.raises(ValueError, match="version 2"):
        InstallRecord.decode(data)


def test_record_matches_the_same_disk_and_table() -> None:
    """Same serial, WWN, size and partition table: a match."""
    assert record().mismatch(disk(), TABLE) is None


def test_a_partition_grown_or_added_by_the_installed_os_still_matches() -> None:
    """Same table GUID and partitions, a partition grown and one added (first boot of the OS): still installed."""
    grown = dataclasses.replace(TABLE.partitions[1], last_lba=TABLE.partitions[1].last_lba + 1000)
    added = dataclasses.replace(TABLE.partitions[1], number=3, part_guid="99999999-0000-4000-8000-000000000000")
    later = dataclasses.replace(TABLE, partitions=(TABLE.partitions[0], grown, added), entries_sha256="0" * 64)
    with capture_logs() as logs:
        assert record().mismatch(disk(), later) is None
    assert [e["event"] for e in logs] == ["firmware.table_changed_since_install"]


@pytest.mark.parametrize(
    ("changed", "table", "reason"),
    [
        ({"serial": "OTHER"}, TABLE, "a different disk: serial OTHER"),
        ({"wwn": "0x1"}, TABLE, "a different disk: WWN 0x1"),
        ({"size_bytes": 1}, TABLE, "a different disk: 1 bytes"),
        ({}, None, "no partition table now"),
        ({}, gptimage.standard(seed=8), "another partition table"),
        ({}, dataclasses.replace(TABLE, partitions=TABLE.partitions[:1]), "partitions of the install are gone"),
    ],
)
def test_record_mismatch_names_the_reason(
    changed: dict[str, object], table: PartitionTable | None, reason: str
) -> None:
    """A replaced, wiped or re-partitioned disk does not match, and the reason says which."""
    why = record().mismatch(disk(**changed), table)  # type: ignore[arg-type]  # parametrized DiskInfo fields
    assert why is not None
    assert reason in why


def test_installed_finds_the_record_and_reimage_ignores_it(efivars: Efivars) -> None:
    """installed() returns the record on a match; with reimage it says so and returns none."""
    firmware.remember(efivars, record())
    found = firmware.installed(efivars, disk(), TABLE, reimage=False)
    assert found.record == record()
    assert found.summary.startswith("already installed: release release-1.2.3.0-1+t on /dev/sda (serial S45NN")
    again = firmware.installed(efivars, disk(), TABLE, reimage=True)
    assert again.record is None
    assert "re-imaging as asked" in again.summary


def test_no_uefi_means_no_record_and_a_warning(tmp_path: Path) -> None:
    """Without /sys/firmware/efi the run installs as before and warns that a network boot will re-image."""
    bios = Efivars(tmp_path / "no-efi" / "efivars")
    found = firmware.installed(bios, disk(), TABLE, reimage=False)
    assert found.record is None
    assert found.warning is not None
    assert "legacy BIOS" in found.warning
    assert "a later network boot will image this disk again" in found.warning
    assert firmware.remember(bios, record()) is not None
    assert not (tmp_path / "no-efi").exists(), "nothing created where there is no UEFI"


def test_nvram_refusing_the_write_is_a_warning_not_a_failure(efivars: Efivars) -> None:
    """ENOSPC (NVRAM full) or EROFS from the kernel: remember() warns and returns, never raises."""

    class Full(Efivars):
        def write(self, name: str, guid: str, data: bytes, attrs: int = 7) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    with capture_logs() as logs:
        warning = firmware.remember(Full(efivars.directory), record())
    assert warning is not None
    assert "No space left on device" in warning
    assert "a later network boot will image this disk again" in warning
    assert [e["event"] for e in logs] == ["firmware.record_not_saved"]


# ---- efibootmgr output ------------------------------------------------------------------------------------


def test_parses_efibootmgr_17_output() -> None:
    """Labels, the active flag, BootOrder and the PARTUUID of HD(1,GPT,...) entries from efibootmgr 17."""
    entries, order = firmware.parse_efibootmgr(EFIBOOTMGR_17 + VENDOR_17)
    assert order == [2, 1, 0, 3]
    assert [e.number for e in entries] == [0, 1, 2, 3, 4]
    assert entries[1].label == "UEFI QEMU QEMU HARDDISK"
    assert entries[2].label == "UEFI PXEv4 (MAC:525400123456)"
    assert entries[4].label == "Apollo"
    assert entries[4].partuuid == ESP.part_guid
    assert entries[4].path.endswith("/File(\\EFI\\apollo\\grubx64.efi)")
    assert all(e.partuuid is None for e in entries[:4])


def test_parses_efibootmgr_18_output() -> None:
    """efibootmgr 18's form (no File(), extra `dp:` lines) gives the same entry."""
    entries, _ = firmware.parse_efibootmgr(EFIBOOTMGR_17 + VENDOR_18)
    assert [e.number for e in entries] == [0, 1, 2, 3, 4]
    assert entries[4].partuuid == ESP.part_guid
    assert entries[4].label == "Apollo"


# ---- boot_next_to_disk with efibootmgr --------------------------------------------------------------------


class Efibootmgr:
    """A stand-in efibootmgr over a dict of entries, answering -v, -C ... and -n like the real one."""

    def __init__(self, listing: str) -> None:
        self.listing = listing
        self.next: str | None = None

    def __call__(self, argv: tuple[str, ...], answer: str | None) -> tuple[int, str]:
        if argv[1:] == ("-v",):
            extra = f"BootNext: {self.next}\n" if self.next else ""
            return 0, extra + self.listing
        if argv[1] == "-C":
            part = int(argv[argv.index("-p") + 1])
            guid = TABLE.partitions[part - 1].part_guid
            loader = argv[argv.index("-l") + 1]
            label = argv[argv.index("-L") + 1]
            self.listing += f"Boot0005* {label}\tHD({part},GPT,{guid},0x800,0x32000)/File({loader})\n"
            return 0, self.listing
        if argv[1] == "-n":
            self.next = argv[2]
            return 0, f"BootNext: {argv[2]}\n"
        if argv[1] == "-b" and argv[3] == "-B":
            self.listing = "".join(ln + "\n" for ln in self.listing.splitlines() if not ln.startswith(f"Boot{argv[2]}"))
            return 0, self.listing
        return 2, f"efibootmgr: unexpected {argv}"


def test_uses_the_vendor_tools_entry_for_the_disk(efivars: Efivars) -> None:
    """An entry whose HD() names a partition of the disk is the vendor's: BootNext points at it, nothing created."""
    tool = Efibootmgr(EFIBOOTMGR_17 + VENDOR_17)
    runner = FakeRunner({"efibootmgr": tool})
    with capture_logs() as logs:
        outcome = firmware.boot_next_to_disk(runner, efivars, "/dev/sda", TABLE, env=None)
    assert outcome.entry is not None
    assert outcome.entry.number == 4
    assert tool.next == "0004"
    assert not any(c[1] == "-C" for c in runner.calls)
    assert outcome.summary.startswith("BootNext=Boot0004 (the disk's entry Boot0004* Apollo")
    listings = [e for e in logs if e["event"] == "firmware.boot_entries"]
    assert [e["when"] for e in listings] == ["before", "after"]
    assert [e["event"] for e in logs if e["event"] == "firmware.boot_next_set"]


def test_creates_an_entry_for_the_esp_when_the_vendor_made_none(efivars: Efivars) -> None:
    """No entry for the disk: one is created with -C (not added to BootOrder) for \\EFI\\BOOT\\BOOTX64.EFI."""
    tool = Efibootmgr(EFIBOOTMGR_17)
    runner = FakeRunner({"efibootmgr": tool})
    outcome = firmware.boot_next_to_disk(runner, efivars, "/dev/sda", TABLE, env=None)
    create = [c for c in runner.calls if c[1] == "-C"]
    assert create == [
        ("efibootmgr", "-C", "-d", "/dev/sda", "-p", "1", "-L", "Harmonic cOS", "-l", "\\EFI\\BOOT\\BOOTX64.EFI")
    ]
    assert outcome.entry is not None
    assert outcome.entry.number == 5
    assert tool.next == "0005"
    assert "created Boot0005* Harmonic cOS" in outcome.summary


def test_an_entry_for_another_disk_is_not_used(efivars: Efivars) -> None:
    """An HD() entry for a partition that is not on this disk does not count; only our own stale entry is deleted."""
    gone = "11111111-2222-3333-4444-555555555555"
    stale = (
        f"Boot0004* Apollo\tHD(1,GPT,{gone},0x800,0x32000)/File(\\x.efi)\n"
        f"Boot0006* Harmonic cOS\tHD(1,GPT,{gone},0x800,0x32000)/File(\\EFI\\BOOT\\BOOTX64.EFI)\n"
    )
    tool = Efibootmgr(EFIBOOTMGR_17 + stale)
    runner = FakeRunner({"efibootmgr": tool})
    outcome = firmware.boot_next_to_disk(runner, efivars, "/dev/sda", TABLE, env=None)
    assert outcome.entry is not None
    assert outcome.entry.number == 5
    assert ("efibootmgr", "-b", "0006", "-B") in runner.calls
    assert ("efibootmgr", "-b", "0004", "-B") not in runner.calls, "the vendor's entries are not ours to delete"


def test_efibootmgr_failing_to_set_bootnext_is_a_warning(efivars: Efivars) -> None:
    """efibootmgr -n failing (e.g. NVRAM write-protected) gives a warning, never an exception."""
    tool = Efibootmgr(EFIBOOTMGR_17 + VENDOR_17)

    def broken(argv: tuple[str, ...], answer: str | None) -> tuple[int, str]:
        if argv[1] == "-n":
            return 5, "Could not set BootNext: Read-only file system"
        return tool(argv, answer)

    outcome = firmware.boot_next_to_disk(FakeRunner({"efibootmgr": broken}), efivars, "/dev/sda", TABLE, env=None)
    assert outcome.entry is None
    assert outcome.warning is not None
    assert "could not set BootNext to /dev/sda" in outcome.warning


def test_efibootmgr_unable_to_create_falls_back_to_efivarfs(efivars: Efivars) -> None:
    """efibootmgr -C failing (a device path it cannot build): the entry is written through efivarfs instead."""
    tool = Efibootmgr(EFIBOOTMGR_17)

    def no_create(argv: tuple[str, ...], answer: str | None) -> tuple[int, str]:
        if argv[1] == "-C":
            return 2, "efibootmgr: Could not prepare Boot variable: No such file or directory"
        return tool(argv, answer)

    outcome = firmware.boot_next_to_disk(FakeRunner({"efibootmgr": no_create}), efivars, "/dev/sda", TABLE, env=None)
    assert outcome.entry is not None
    assert outcome.entry.label == "Harmonic cOS"
    assert (efivars.directory / f"Boot{outcome.entry.number:04X}-{GLOBAL_GUID}").exists()
    next_raw = (efivars.directory / f"BootNext-{GLOBAL_GUID}").read_bytes()
    assert next_raw[4:] == struct.pack("<H", outcome.entry.number)


# ---- boot_next_to_disk through efivarfs (no efibootmgr) ---------------------------------------------------


def test_without_efibootmgr_entries_and_bootnext_go_through_efivarfs(efivars: Efivars) -> None:
    """No efibootmgr: a Boot#### load option for the ESP is written and BootNext (2 bytes) names it."""
    network = struct.pack("<IH", 1, 4) + "UEFI PXEv4\0".encode("utf-16-le") + b"\x7f\xff\x04\x00"
    (efivars.directory / f"Boot0000-{GLOBAL_GUID}").write_bytes(b"\x07\x00\x00\x00" + network)
    (efivars.directory / f"BootOrder-{GLOBAL_GUID}").write_bytes(b"\x07\x00\x00\x00\x00\x00")
    runner = FakeRunner({})
    with capture_logs() as logs:
        outcome = firmware.boot_next_to_disk(runner, efivars, "/dev/sda", TABLE, env=None)
    assert runner.programs() == ["efibootmgr"]
    assert next(e["event"] for e in logs) == "firmware.efibootmgr_unavailable"
    assert outcome.entry is not None
    assert outcome.entry.number == 1
    created = (efivars.directory / f"Boot0001-{GLOBAL_GUID}").read_bytes()
    assert created[:4] == b"\x07\x00\x00\x00"
    parsed = firmware.parse_load_option(1, created[4:])
    assert parsed is not None
    assert parsed.label == "Harmonic cOS"
    assert parsed.partuuid == ESP.part_guid
    assert parsed.path == f"HD(1,GPT,{ESP.part_guid},0x800,0x32000)/File(\\EFI\\BOOT\\BOOTX64.EFI)"
    assert (efivars.directory / f"BootNext-{GLOBAL_GUID}").read_bytes() == b"\x07\x00\x00\x00\x01\x00"
    assert (efivars.directory / f"BootOrder-{GLOBAL_GUID}").read_bytes()[4:] == b"\x00\x00", "order untouched"


def test_load_option_matches_the_uefi_layout() -> None:
    """The HD() node is 42 bytes (type 4, subtype 1) with the partition's LBA range and GUID, then File, then End."""
    data = firmware.load_option("X", ESP)
    attributes, path_len = struct.unpack_from("<IH", data)
    assert attributes == 1  # LOAD_OPTION_ACTIVE
    device_path = data[6 + 4 :]  # after the UCS-2 "X\0"
    assert len(device_path) == path_len
    kind, sub, length, part, first, size = struct.unpack_from("<BBHIQQ", device_path)
    assert (kind, sub, length, part, first, size) == (4, 1, 42, 1, ESP.first_lba, ESP.last_lba - ESP.first_lba + 1)
    assert device_path[-4:] == b"\x7f\xff\x04\x00"


def test_no_gpt_on_the_disk_means_no_bootnext(efivars: Efivars) -> None:
    """Without a GPT there is nothing to point an entry at: a warning, the firmware order decides."""
    outcome = firmware.boot_next_to_disk(FakeRunner({}), efivars, "/dev/sda", None, env=None)
    assert outcome.entry is None
    assert outcome.warning is not None
    assert not (efivars.directory / f"BootNext-{GLOBAL_GUID}").exists()
