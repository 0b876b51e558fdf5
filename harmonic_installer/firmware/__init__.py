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

from harmonic_installer.firmware.boot import (
    ENTRY_LABEL,
    ESP_LOADER,
    BootEntry,
    BootOutcome,
    boot_next_to_disk,
    load_option,
    parse_efibootmgr,
    parse_load_option,
)
from harmonic_installer.firmware.efivars import EFIVARS_DIR, GLOBAL_GUID, Efivars
from harmonic_installer.firmware.record import (
    RECORD_GUID,
    RECORD_NAME,
    REIMAGE_HINT,
    Finding,
    InstallRecord,
    installed,
    read_record,
    remember,
)

__all__ = [
    "EFIVARS_DIR",
    "ENTRY_LABEL",
    "ESP_LOADER",
    "GLOBAL_GUID",
    "RECORD_GUID",
    "RECORD_NAME",
    "REIMAGE_HINT",
    "BootEntry",
    "BootOutcome",
    "Efivars",
    "Finding",
    "InstallRecord",
    "boot_next_to_disk",
    "installed",
    "load_option",
    "parse_efibootmgr",
    "parse_load_option",
    "read_record",
    "remember",
]
