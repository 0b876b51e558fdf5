"""The last check before the write on real block devices: a loop disk seen through udev and sysfs is looked up
again right before `ostree-production -D`, and an ISO swapped after verification is refused; nothing written."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harmonic_installer import plan
from harmonic_installer.disks import UdevDiskProbe
from harmonic_installer.errors import ExitCode
from tests.support.loopdev import MiB, loop_device, read_device
from tests.unit.test_plan import RELEASE, Site, World, make_settings, make_world, site  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

ISO_NAME = f"APOLLO_PLATFORM-{RELEASE}.iso"
PATTERN = b"UNTOUCHED-DISK-" * 4096


def _world(before_write: object) -> World:
    """The fake dpkg and vendor tool of test_plan, except that `-D` really copies the ISO onto the device and
    `list-isos` (the last thing before the write) first runs `before_write`."""
    world = make_world()
    tool = world.runner.handlers["ostree-production"]

    def real_tool(argv: tuple[str, ...], answer: str | None) -> tuple[int, str]:
        if argv[1] == "list-isos" and callable(before_write):
            before_write()
        if argv[1] == "-D":
            with open(argv[4], "rb") as src, open(argv[2], "r+b") as dst:
                dst.write(src.read())
        return tool(argv, answer)

    world.runner.handlers["ostree-production"] = real_tool
    return world


def _deps(world: World, tmp_path: Path) -> plan.Deps:
    return plan.Deps(
        runner=world.runner,
        disks=UdevDiskProbe(),
        environ={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"},
        geteuid=lambda: 0,
        sleep=lambda s: None,
    )


def _fill(device: str) -> None:
    with open(device, "r+b") as f:
        f.write(PATTERN)


def test_partition_mounted_after_preflight_stops_the_write(site: Site, tmp_path: Path) -> None:  # noqa: F811
    """A partition of the loop disk mounted between preflight and the write: refused (exit 3), disk untouched."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with loop_device(tmp_path / "loop", size=32 * MiB, partitions=["size=16MiB", ","]) as loop:
        part = loop.partitions[1]
        subprocess.run(["mkfs.ext4", "-q", "-F", part], check=True)
        mounted: list[str] = []

        def mount() -> None:
            subprocess.run(["mount", part, str(mnt)], check=True)
            mounted.append(part)

        world = _world(mount)
        try:
            with open(loop.path, "rb") as f:
                before = f.read(2 * MiB)
            report = plan.run(make_settings(site, tmp_path, disk_device=loop.path), _deps(world, tmp_path))
            assert read_device(loop.path, 2 * MiB) == before
        finally:
            if mounted:
                subprocess.run(["umount", str(mnt)], check=False)
        assert mounted, "the hook did not run"
        assert report.exit_code == ExitCode.PREFLIGHT, report.error
        assert report.failed_step == "write"
        assert report.error is not None
        assert f"right before the write: {loop.path} is in use: mounted at {mnt}" in report.error
        assert world.written == []


def test_iso_swapped_after_verification_leaves_the_loop_disk_untouched(site: Site, tmp_path: Path) -> None:  # noqa: F811
    """The verified ISO replaced by another file before the write: refused (exit 4), not one byte on the disk."""
    iso = tmp_path / "data" / ISO_NAME

    def swap() -> None:
        other = iso.with_name(".swapped")
        other.write_bytes(b"\x00" * len(site.iso))
        os.replace(other, iso)

    with loop_device(tmp_path / "loop", size=8 * MiB) as loop:
        _fill(loop.path)
        world = _world(swap)
        report = plan.run(make_settings(site, tmp_path, disk_device=loop.path), _deps(world, tmp_path))
        assert report.exit_code == ExitCode.DOWNLOAD, report.error
        assert report.failed_step == "write"
        assert report.error is not None
        assert "changed since it was verified" in report.error
        assert read_device(loop.path, len(PATTERN)) == PATTERN
        assert world.written == []


def test_unchanged_disk_and_iso_are_written(site: Site, tmp_path: Path) -> None:  # noqa: F811
    """Nothing changed since preflight: the re-checks pass and the ISO reaches the loop disk."""
    with loop_device(tmp_path / "loop", size=8 * MiB) as loop:
        _fill(loop.path)
        world = _world(None)
        report = plan.run(make_settings(site, tmp_path, disk_device=loop.path), _deps(world, tmp_path))
        assert report.exit_code == 0, report.error
        assert read_device(loop.path, len(site.iso)) == site.iso
