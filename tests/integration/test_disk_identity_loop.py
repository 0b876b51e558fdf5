"""The install record's disk identity on a real block device: a GPT written by sfdisk/sgdisk, read back."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harmonic_installer import firmware
from harmonic_installer.disks import UdevDiskProbe, read_partition_table
from tests.support.loopdev import MiB, loop_device

pytestmark = pytest.mark.integration


def test_identity_of_a_real_gpt_and_what_changes_it(tmp_path: Path) -> None:
    """sfdisk's GPT is read with blkid's PARTUUIDs; an added partition still matches, a replaced one or a wipe not."""
    with loop_device(tmp_path, size=64 * MiB, partitions=["size=8MiB,type=uefi", ","]) as loop:
        probe = UdevDiskProbe()
        table = probe.partition_table(loop.path)
        assert table is not None
        assert table.kind == "gpt"
        blkid = subprocess.run(
            ["blkid", "-p", "-s", "PART_ENTRY_UUID", "-o", "value", f"{loop.path}p1"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        esp = table.esp()
        assert esp is not None
        assert esp.part_guid == blkid.lower()
        info = probe.lookup(loop.path)
        assert info is not None
        record = firmware.InstallRecord.of(release="r", iso_sha256="0" * 64, disk=info, table=table)
        assert record.mismatch(info, read_partition_table(loop.path)) is None

        subprocess.run(["sfdisk", "--delete", loop.path, "2"], check=True, capture_output=True)
        subprocess.run(["sgdisk", "-n", "2:0:+16M", "-n", "3:0:+8M", loop.path], check=True, capture_output=True)
        why = record.mismatch(info, read_partition_table(loop.path))
        assert why is not None
        assert "partitions of the install are gone" in why

        subprocess.run(["sgdisk", "-o", "-n", "1:0:+8M", loop.path], check=True, capture_output=True)
        why = record.mismatch(info, read_partition_table(loop.path))
        assert why is not None
        assert "another partition table" in why

        subprocess.run(["wipefs", "-a", loop.path], check=True, capture_output=True)
        why = record.mismatch(info, read_partition_table(loop.path))
        assert why is not None
        assert "no partition table" in why
