"""Loop devices as target disks: attached, partitioned, read-only, and always detached."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.loopdev import MiB, attached_to, first_difference, is_zero, loop_device, read_device
from tests.support.sandbox import REPO

pytestmark = pytest.mark.integration


def test_attach_write_read_detach(tmp_path: Path) -> None:
    """The device is a zeroed block device of the asked size; bytes written read back; it is gone afterwards."""
    with loop_device(tmp_path, size=4 * MiB) as disk:
        assert stat.S_ISBLK(os.stat(disk.path).st_mode)
        size = subprocess.run(["blockdev", "--getsize64", disk.path], check=True, capture_output=True, text=True).stdout
        assert int(size) == 4 * MiB
        assert is_zero(disk.path, 4 * MiB)
        reference = tmp_path / "ref.bin"
        reference.write_bytes(os.urandom(MiB + 7))
        with open(disk.path, "r+b") as fh:
            fh.write(reference.read_bytes())
        assert first_difference(disk.path, reference) is None
        assert read_device(disk.path, 3, offset=MiB + 7) == b"\0\0\0"
        assert attached_to(disk.backing) == [disk.path]
    assert attached_to(disk.backing) == []


def test_detached_even_when_the_block_fails(tmp_path: Path) -> None:
    """An exception inside the block still detaches the device."""
    backing = tmp_path / "disk.img"

    def use_and_fail() -> None:
        with loop_device(tmp_path, size=MiB):
            assert attached_to(backing)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        use_and_fail()
    assert attached_to(backing) == []


def test_partitions_appear_and_can_be_mounted(tmp_path: Path) -> None:
    """With a partition table the partition nodes exist and a filesystem on one can be mounted."""
    with loop_device(tmp_path, size=32 * MiB, partitions=["size=8MiB", ","]) as disk:
        assert disk.partitions == (f"{disk.path}p1", f"{disk.path}p2")
        subprocess.run(["mkfs.ext4", "-q", disk.partitions[0]], check=True)
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        subprocess.run(["mount", disk.partitions[0], str(mnt)], check=True)
        try:
            assert any(line.split()[0] == disk.partitions[0] for line in Path("/proc/mounts").read_text().splitlines())
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    assert not os.path.exists(f"{disk.path}p1") or attached_to(disk.backing) == []


def test_read_only(tmp_path: Path) -> None:
    """A read-only loop device reports ro=1 in sysfs and refuses writes."""
    with loop_device(tmp_path, size=MiB, read_only=True) as disk:
        assert Path(f"/sys/class/block/{disk.name}/ro").read_text().strip() == "1"
        with pytest.raises(OSError), open(disk.path, "r+b") as fh:
            fh.write(b"x")


def test_detached_even_when_the_process_is_killed(tmp_path: Path) -> None:
    """A process killed with SIGKILL inside the block leaves no loop device behind (autoclear + held fd)."""
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from tests.support.loopdev import autoclear, loop_device\n"
        f"with loop_device(Path({str(tmp_path)!r}), size=1024 * 1024) as disk:\n"
        "    print(disk.path, autoclear(disk.path), flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=REPO)
    assert result.returncode == -9
    path, flagged = result.stdout.split()
    assert path.startswith("/dev/loop")
    assert flagged == "True"
    assert attached_to(tmp_path / "disk.img") == []
