"""disks + preflight against real block devices: loop devices seen through pyudev and sysfs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harmonic_installer import config, preflight
from harmonic_installer.disks import UdevDiskProbe
from harmonic_installer.errors import NotATargetHost, PreflightError
from tests.support.loopdev import MiB, loop_device

pytestmark = pytest.mark.integration


def _settings(device: str) -> config.Settings:
    return config.load(environ={"HARMONIC_DISK_DEVICE": device}, cmdline="")


def test_loop_device_is_described(tmp_path: Path) -> None:
    """A fresh loop device is a whole, writable, unmounted disk of the right size."""
    with loop_device(tmp_path, size=32 * MiB) as loop:
        info = UdevDiskProbe().lookup(loop.path)
        assert info is not None
        assert info.path == loop.path
        assert info.devtype == "disk"
        assert info.size_bytes == 32 * MiB
        assert not info.read_only
        assert info.mountpoints == ()
        assert info.holders == ()
        assert not info.holds_root
        report = preflight.check(_settings(loop.path), UdevDiskProbe())
        assert report.disk.path == loop.path


def test_read_only_loop_is_refused(tmp_path: Path) -> None:
    """A read-only block device is refused by preflight."""
    with loop_device(tmp_path, size=16 * MiB, read_only=True) as loop:
        with pytest.raises(PreflightError, match="read-only"):
            preflight.check(_settings(loop.path), UdevDiskProbe())


def test_partition_is_refused_naming_the_whole_disk(tmp_path: Path) -> None:
    """A partition is not a target: the error names its whole disk."""
    with loop_device(tmp_path, size=32 * MiB, partitions=["size=8MiB", ","]) as loop:
        with pytest.raises(PreflightError, match=f"is a partition of {loop.path}"):
            preflight.check(_settings(loop.partitions[0]), UdevDiskProbe())


def test_mounted_partition_is_refused(tmp_path: Path) -> None:
    """A disk with a mounted partition is in use and refused, naming the mountpoint."""
    with loop_device(tmp_path, size=32 * MiB, partitions=["size=16MiB", ","]) as loop:
        part = loop.partitions[0]
        subprocess.run(["mkfs.ext4", "-q", "-F", part], check=True)
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        subprocess.run(["mount", part, str(mnt)], check=True)
        try:
            with pytest.raises(PreflightError, match=f"mounted at {mnt}"):
                preflight.check(_settings(loop.path), UdevDiskProbe())
        finally:
            subprocess.run(["umount", str(mnt)], check=True)


def test_not_a_block_device_and_missing_device(tmp_path: Path) -> None:
    """/dev/null is not a block device (exit 3); a missing /dev path means not a target (exit 0)."""
    with pytest.raises(PreflightError, match="not a block device"):
        preflight.check(_settings("/dev/null"), UdevDiskProbe())
    with pytest.raises(NotATargetHost):
        preflight.check(_settings("/dev/sdzz"), UdevDiskProbe())


def test_root_disk_is_refused() -> None:
    """The disk holding / is never a target."""
    root_dev = subprocess.run(
        ["findmnt", "-no", "SOURCE", "/"], check=True, capture_output=True, text=True
    ).stdout.strip()
    if not root_dev.startswith("/dev/"):
        pytest.skip(f"/ is on {root_dev!r}, not a block device")
    info = UdevDiskProbe().lookup(root_dev)
    assert info is not None
    assert info.holds_root
    with pytest.raises(PreflightError):
        preflight.check_disk(info, allow_removable=True)
