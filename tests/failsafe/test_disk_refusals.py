"""Disk refusals with real block devices through the real entry point: exit 3, one line naming the reason
and the override where there is one, the disk's bytes unchanged. The server URL is a closed port, so even a
wrongly accepted disk could not get further than the first download."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.failsafe.harness import Host, digest, no_traceback, one_line, patterned_disk
from tests.failsafe.recorder import Recorder
from tests.support.loopdev import MiB, loop_device

pytestmark = pytest.mark.integration

NOWHERE = "http://127.0.0.1:9"


def _readable(disk: str) -> bool:
    try:
        os.close(os.open(disk, os.O_RDONLY))
    except OSError:
        return False
    return True


def _refused(
    host: Host,
    failsafe: Recorder,
    name: str,
    injected: str,
    disk: str,
    says: tuple[str, ...],
    *extra: str,
    mounted: bool = False,
) -> None:
    case = failsafe.case("disk safety", name, injected=injected, expect_exit=3)
    # this host's own disk may be closed to us (device cgroup); a mounted filesystem is written by the kernel
    # itself (journal, lazy inode-table init; active swap): in both cases the bytes cannot be compared
    readable = _readable(disk) and not mounted
    size = (
        int(subprocess.run(["blockdev", "--getsize64", disk], check=True, capture_output=True, text=True).stdout)
        if readable
        else 0
    )
    before = digest(disk, min(size, 64 * MiB)) if readable else ""
    run = host.run(["-i", *host.dirs(), "--server-url", NOWHERE, "--disk", disk, *extra])
    case.exit(run.returncode, run.explain())
    line = one_line(run) or ""
    case.check("one-line message", line.startswith("harmonic-install: "), run.explain())
    case.check(
        "message names the reason" + (" and the override" if len(says) > 1 else ""), all(s in line for s in says), line
    )
    case.check("no traceback", no_traceback(run), run.explain())
    if readable:
        case.check("disk unchanged", digest(disk, min(size, 64 * MiB)) == before)
    case.check("nothing created", host.created() == [], str(host.created()))


def test_mounted_partition(tmp_path: Path, failsafe: Recorder) -> None:
    """A disk with a mounted partition."""
    with loop_device(tmp_path / "d", size=32 * MiB, partitions=["size=16MiB", ","]) as loop:
        subprocess.run(["mkfs.ext4", "-q", "-F", loop.partitions[0]], check=True)
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        subprocess.run(["mount", loop.partitions[0], str(mnt)], check=True)
        try:
            _refused(
                Host(tmp_path),
                failsafe,
                "disk with a mounted partition",
                "partition 1 mounted (ext4)",
                loop.path,
                (f"mounted at {mnt}", "unmount it"),
                mounted=True,
            )
        finally:
            subprocess.run(["umount", str(mnt)], check=True)


def test_mounted_whole_disk(tmp_path: Path, failsafe: Recorder) -> None:
    """A disk mounted as a whole (a filesystem without a partition table)."""
    with loop_device(tmp_path / "d", size=16 * MiB) as loop:
        subprocess.run(["mkfs.ext4", "-q", "-F", loop.path], check=True)
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        subprocess.run(["mount", loop.path, str(mnt)], check=True)
        try:
            _refused(
                Host(tmp_path),
                failsafe,
                "mounted disk",
                "the whole disk mounted (ext4)",
                loop.path,
                (f"mounted at {mnt}", "unmount it"),
                mounted=True,
            )
        finally:
            subprocess.run(["umount", str(mnt)], check=True)


def test_swap_partition(tmp_path: Path, failsafe: Recorder) -> None:
    """A disk whose partition is active swap."""
    with loop_device(tmp_path / "d", size=32 * MiB, partitions=["size=16MiB", ","]) as loop:
        subprocess.run(["mkswap", "-q", loop.partitions[0]], check=True, capture_output=True)
        if subprocess.run(["swapon", loop.partitions[0]], check=False, capture_output=True).returncode != 0:
            failsafe.case("disk safety", "disk with active swap", injected="partition 1 in use as swap", expect_exit=3)
            pytest.skip("swapon is not allowed here")
        try:
            _refused(
                Host(tmp_path),
                failsafe,
                "disk with active swap",
                "partition 1 in use as swap",
                loop.path,
                ("[SWAP]",),
                mounted=True,  # the kernel writes to active swap
            )
        finally:
            subprocess.run(["swapoff", loop.partitions[0]], check=True)


@contextmanager
def _dm_linear(name: str, disk: str, sectors: int) -> Iterator[str]:
    subprocess.run(
        ["dmsetup", "create", name, "--table", f"0 {sectors} linear {disk} 0"], check=True, capture_output=True
    )
    try:
        yield name
    finally:
        subprocess.run(["dmsetup", "remove", "--retry", name], check=False, capture_output=True)


def test_held_by_device_mapper(tmp_path: Path, failsafe: Recorder) -> None:
    """A disk held by a device-mapper target (as LVM and dm-crypt hold theirs)."""
    if not os.path.exists("/dev/mapper/control") or "device-mapper" not in Path("/proc/devices").read_text():
        failsafe.case(
            "disk safety",
            "disk held by device-mapper (LVM, dm-crypt)",
            injected="a dm linear target over the disk",
            expect_exit=3,
        )
        pytest.skip("no device-mapper in this kernel (unit tests cover holders with fakes)")
    with loop_device(tmp_path / "d", size=16 * MiB) as loop:
        with _dm_linear(f"failsafe-{tmp_path.name[-20:]}", loop.path, 16 * MiB // 512):
            _refused(
                Host(tmp_path),
                failsafe,
                "disk held by device-mapper (LVM, dm-crypt)",
                "a dm linear target over the disk",
                loop.path,
                ("held by dm-", "deactivate them first"),
            )


def test_read_only(tmp_path: Path, failsafe: Recorder) -> None:
    """A read-only disk."""
    with loop_device(tmp_path / "d", size=16 * MiB, read_only=True) as loop:
        _refused(
            Host(tmp_path), failsafe, "read-only disk", "loop device attached --read-only", loop.path, ("read-only",)
        )


def test_root_disk(tmp_path: Path, failsafe: Recorder) -> None:
    """The disk holding the running system's root filesystem."""
    root = subprocess.run(["findmnt", "-no", "SOURCE", "/"], check=True, capture_output=True, text=True).stdout.strip()
    if not root.startswith("/dev/"):
        failsafe.case(
            "disk safety", "disk holding the running root filesystem", injected="`--disk <the host's />`", expect_exit=3
        )
        pytest.skip(f"/ is on {root!r}, not a block device")
    _refused(
        Host(tmp_path),
        failsafe,
        "disk holding the running root filesystem",
        f"`--disk {root}` (this host's /)",
        root,
        ("root filesystem",),
    )


def test_smaller_than_the_image(tmp_path: Path, failsafe: Recorder) -> None:
    """A disk smaller than the ISO: refused from the announced size, before the ISO's body is downloaded."""
    from tests.failsafe.webserver import install_args, serve, standard_files

    case = failsafe.case("disk safety", "disk smaller than the image", injected="1 MiB disk, 2 MiB ISO", expect_exit=3)
    host = Host(tmp_path)
    with serve(standard_files(bytes(range(256)) * 8192)) as site, patterned_disk(tmp_path / "d", MiB) as loop:
        before = digest(loop.path, loop.size)
        run = host.run([*install_args(site, loop.path), *host.dirs()])
        case.exit(run.returncode, run.explain())
        line = one_line(run) or ""
        case.check("message names the reason", "smaller than the image" in line and "1,048,576 bytes" in line, line)
        case.check("message says both sizes", "1.0 MiB" in line and "2.0 MiB" in line, line)
        iso_files = [f for f in host.created() if f.startswith("data/")]
        case.check("refused before the ISO's body (nothing in the ISO dir)", iso_files == [], str(host.created()))
        case.check("no traceback", no_traceback(run), run.explain())
        case.check("disk unchanged", digest(loop.path, loop.size) == before)
        case.check("no package installed", host.tripped() == "", host.tripped())
