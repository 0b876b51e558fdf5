"""The last check before the write: the disk looked up again and re-checked, the ISO confirmed to be the file
that was verified; anything changed since preflight stops the run with nothing written."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from structlog.testing import capture_logs

from harmonic_installer import plan
from harmonic_installer.disks import DiskInfo
from harmonic_installer.errors import ExitCode
from tests.unit.fakes import FakeDisks, disk
from tests.unit.test_plan import RELEASE, Site, World, deps, make_settings, make_world, site  # noqa: F401 - fixture

ISO_NAME = f"APOLLO_PLATFORM-{RELEASE}.iso"


class ChangingDisks(FakeDisks):
    """A DiskProbe whose disk turns into `later` after the first lookup (preflight's)."""

    def __init__(self, first: DiskInfo, later: DiskInfo) -> None:
        super().__init__([first])
        self._later = later
        self.lookups = 0

    def lookup(self, path: str) -> DiskInfo | None:
        self.lookups += 1
        return super().lookup(path) if self.lookups == 1 else self._later


def _on_list_isos(world: World, action: Callable[[], None]) -> None:
    """Run `action` when the vendor tool lists its ISOs: after every check so far, just before the write."""
    tool = world.runner.handlers["ostree-production"]

    def wrapped(argv: tuple[str, ...], answer: str | None) -> tuple[int, str]:
        if argv[1] == "list-isos":
            action()
        return tool(argv, answer)

    world.runner.handlers["ostree-production"] = wrapped


def _wrote(world: World) -> bool:
    return any(c[:2] == ("ostree-production", "-D") for c in world.runner.calls)


def test_disk_mounted_after_preflight_is_refused_before_the_write(site: Site, tmp_path: Path) -> None:  # noqa: F811
    """A disk that got mounted since preflight (e.g. by a maintainer script) stops the write: exit 3, no -D."""
    healthy = disk(size_bytes=10**9)
    world = make_world()
    probe = ChangingDisks(healthy, dataclasses.replace(healthy, mountpoints=("/mnt",)))
    report = plan.run(make_settings(site, tmp_path), deps(world, tmp_path, probe))
    assert report.exit_code == ExitCode.PREFLIGHT
    assert report.failed_step == "write"
    assert report.error is not None
    assert report.error.startswith("right before the write: /dev/sda is in use: mounted at /mnt")
    assert report.error.endswith("nothing written")
    assert probe.lookups == 2
    assert not _wrote(world)
    assert world.written == []


def test_a_different_disk_at_the_same_path_is_refused(site: Site, tmp_path: Path) -> None:  # noqa: F811
    """/dev/sda naming another disk (other serial) than at preflight stops the write, naming both."""
    healthy = disk(size_bytes=10**9)
    world = make_world()
    probe = ChangingDisks(healthy, dataclasses.replace(healthy, serial="OTHER-SERIAL"))
    report = plan.run(make_settings(site, tmp_path), deps(world, tmp_path, probe))
    assert report.exit_code == ExitCode.PREFLIGHT
    assert report.error is not None
    assert "changed since preflight" in report.error
    assert "OTHER-SERIAL" in report.error
    assert not _wrote(world)


def test_a_vanished_disk_is_refused_not_taken_for_not_a_target(site: Site, tmp_path: Path) -> None:  # noqa: F811
    """A disk gone between preflight and the write is a failure (exit 3), not 'not a target' (exit 0)."""
    healthy = disk(size_bytes=10**9)
    world = make_world()

    class Vanishing(ChangingDisks):
        def lookup(self, path: str) -> DiskInfo | None:
            self.lookups += 1
            return healthy if self.lookups == 1 else None

    report = plan.run(make_settings(site, tmp_path), deps(world, tmp_path, Vanishing(healthy, healthy)))
    assert report.exit_code == ExitCode.PREFLIGHT
    assert report.error is not None
    assert "is gone" in report.error
    assert not _wrote(world)


def test_iso_swapped_after_verification_is_refused(site: Site, tmp_path: Path) -> None:  # noqa: F811
    """Another file put in the verified ISO's place (other content) stops the write: exit 4, nothing written."""
    world = make_world()
    iso = tmp_path / "data" / ISO_NAME

    def swap() -> None:
        other = iso.with_name("swap.tmp")
        other.write_bytes(b"evil" + site.iso[4:])
        os.replace(other, iso)

    _on_list_isos(world, swap)
    report = plan.run(make_settings(site, tmp_path), deps(world, tmp_path))
    assert report.exit_code == ExitCode.DOWNLOAD
    assert report.failed_step == "write"
    assert report.error is not None
    assert "changed since it was verified" in report.error
    assert "nothing written" in report.error
    assert not _wrote(world)
    assert not (tmp_path / "state" / "installed").exists()


def test_iso_rewritten_in_place_with_other_bytes_is_refused(site: Site, tmp_path: Path) -> None:  # noqa: F811
    """The same inode with changed bytes (and so a new mtime) is re-hashed and refused."""
    world = make_world()
    iso = tmp_path / "data" / ISO_NAME

    def scribble() -> None:
        with open(iso, "r+b") as f:
            f.write(b"X")
        st = iso.stat()
        os.utime(iso, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))

    _on_list_isos(world, scribble)
    report = plan.run(make_settings(site, tmp_path), deps(world, tmp_path))
    assert report.exit_code == ExitCode.DOWNLOAD
    assert not _wrote(world)


def test_iso_copied_over_with_the_same_bytes_is_rehashed_and_written(site: Site, tmp_path: Path) -> None:  # noqa: F811
    """A new inode with the verified content is re-hashed, found identical, and written."""
    world = make_world()
    iso = tmp_path / "data" / ISO_NAME

    def copy_over() -> None:
        other = iso.with_name("copy.tmp")
        other.write_bytes(iso.read_bytes())
        os.replace(other, iso)

    _on_list_isos(world, copy_over)
    with capture_logs() as logs:
        report = plan.run(make_settings(site, tmp_path), deps(world, tmp_path))
    assert report.exit_code == 0, report.error
    events = [e["event"] for e in logs]
    assert "write.iso_changed" in events
    assert "write.iso_reverified" in events
    assert _wrote(world)


def test_unchanged_iso_is_not_hashed_again(site: Site, tmp_path: Path) -> None:  # noqa: F811
    """The usual case: same inode, size and mtime as verified, so no second pass over the ISO."""
    world = make_world()
    with capture_logs() as logs:
        report = plan.run(make_settings(site, tmp_path), deps(world, tmp_path))
    assert report.exit_code == 0, report.error
    events = [e["event"] for e in logs]
    assert "write.iso_unchanged" in events
    assert "write.iso_changed" not in events
    assert "preflight.disk_rechecked" in events


def test_iso_replaced_by_a_symlink_is_refused(site: Site, tmp_path: Path) -> None:  # noqa: F811
    """A symlink planted in the ISO's place is refused even when it points at identical bytes."""
    world = make_world()
    iso = tmp_path / "data" / ISO_NAME
    elsewhere = tmp_path / "elsewhere.iso"

    def plant() -> None:
        elsewhere.write_bytes(iso.read_bytes())
        iso.unlink()
        iso.symlink_to(elsewhere)

    _on_list_isos(world, plant)
    report = plan.run(make_settings(site, tmp_path), deps(world, tmp_path))
    assert report.exit_code == ExitCode.DOWNLOAD
    assert report.error is not None
    assert "cannot be opened" in report.error
    assert not _wrote(world)
