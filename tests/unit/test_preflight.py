"""preflight: the disk is chosen by path or hints and refused when unsafe; nothing is changed."""

from __future__ import annotations

import dataclasses

import pytest

from harmonic_installer import config, preflight
from harmonic_installer.errors import ExitCode, NotATargetHost, PreflightError
from tests.unit.fakes import GB, FakeDisks, disk


def settings(**env: str) -> config.Settings:
    return config.load(environ={f"HARMONIC_{k.upper()}": v for k, v in env.items()}, cmdline="")


def run(s: config.Settings, probe: FakeDisks, euid: int = 0) -> preflight.PreflightReport:
    return preflight.check(s, probe, geteuid=lambda: euid, which=lambda t: f"/usr/bin/{t}")


def test_healthy_disk_by_path_passes() -> None:
    """The configured /dev/sda is found and selected by path."""
    report = run(settings(), FakeDisks([disk()]))
    assert report.disk.path == "/dev/sda"
    assert report.selected_by == "path /dev/sda"


def test_missing_disk_means_not_a_target_exit_0() -> None:
    """As in the original, a host without the configured disk is not a target: exit 0, nothing done."""
    with pytest.raises(NotATargetHost, match="/dev/sda not found") as info:
        run(settings(), FakeDisks([disk("/dev/nvme0n1")]))
    assert info.value.exit_code == ExitCode.OK


def test_not_root_is_refused() -> None:
    """A non-root run stops in preflight."""
    with pytest.raises(PreflightError, match="must run as root"):
        run(settings(), FakeDisks([disk()]), euid=1000)


def test_by_id_link_is_accepted() -> None:
    """A /dev/disk/by-id link selects the disk it points to."""
    d = disk()
    s = settings(disk_device=d.links[0])
    assert run(s, FakeDisks([d])).disk.path == "/dev/sda"


def test_not_a_block_device() -> None:
    """A path that exists but is not a block device is a preflight error naming it."""
    with pytest.raises(PreflightError, match="not a block device"):
        run(settings(disk_device="/dev/null"), FakeDisks([], not_block={"/dev/null"}))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"devtype": "partition", "parent": "/dev/sda"}, "is a partition of /dev/sda"),
        ({"mountpoints": ("/mnt",)}, "mounted at /mnt"),
        ({"mountpoints": ("[SWAP]",)}, r"\[SWAP\]"),
        ({"holders": ("dm-0",)}, "held by dm-0"),
        ({"read_only": True}, "read-only"),
        ({"removable": True}, r"removable .*disk\.allow_removable"),
        ({"usb": True}, r"USB disk .*--allow-removable"),
        ({"holds_root": True}, "running system's root"),
        ({"size_bytes": 0}, "size of 0 bytes"),
    ],
)
def test_unsafe_disks_are_refused_with_reason(overrides: dict[str, object], message: str) -> None:
    """Each unsafe property is refused with a message naming it (and the override where one exists)."""
    with pytest.raises(PreflightError, match=message):
        run(settings(), FakeDisks([disk(**overrides)]))  # type: ignore[arg-type]  # parametrized DiskInfo fields


def test_removable_allowed_with_override() -> None:
    """disk.allow_removable lets a removable disk through."""
    assert run(settings(disk_allow_removable="true"), FakeDisks([disk(removable=True)])).disk.removable


def test_hints_select_exactly_one_disk() -> None:
    """Serial and minimum size hints pick the one matching disk among several (NVMe-only host)."""
    a = disk("/dev/nvme0n1", serial="AAA", size_bytes=200 * GB)
    b = disk("/dev/nvme1n1", serial="BBB", size_bytes=2000 * GB)
    report = run(settings(disk_min_size_gib="1000"), FakeDisks([a, b]))
    assert report.disk.path == "/dev/nvme1n1"
    assert report.selected_by.startswith("hints min_size_gib=1000")
    assert run(settings(disk_serial="aaa"), FakeDisks([a, b])).disk.path == "/dev/nvme0n1"


def test_wwn_hint_ignores_prefix_and_case() -> None:
    """A WWN hint matches with or without 0x, in any case."""
    d = disk(wwn="0x5002538E40A1B2C3")
    assert run(settings(disk_wwn="5002538e40a1b2c3"), FakeDisks([d])).disk.path == "/dev/sda"


def test_ambiguous_hints_list_candidates() -> None:
    """Several matches is an error listing every disk so the operator can refine the hints."""
    a, b = disk("/dev/sda", serial="X1"), disk("/dev/sdb", serial="X2")
    with pytest.raises(PreflightError, match=r"2 disks match .*model=SAMSUNG MZ7LH480.*/dev/sda .*/dev/sdb"):
        run(settings(disk_model="SAMSUNG MZ7LH480"), FakeDisks([a, b]))


def test_no_match_lists_candidates() -> None:
    """Zero matches is an error listing the disks present."""
    with pytest.raises(PreflightError, match=r"no disk matches .*serial=NOPE.*/dev/sda"):
        run(settings(disk_serial="NOPE"), FakeDisks([disk()]))


def test_missing_tool_is_named() -> None:
    """A host without dpkg cannot install the vendor packages: said before anything changes."""
    with pytest.raises(PreflightError, match="dpkg-deb is not installed"):
        preflight.check(
            settings(), FakeDisks([disk()]), geteuid=lambda: 0, which=lambda t: None if t == "dpkg-deb" else t
        )


def test_image_larger_than_disk_is_refused() -> None:
    """A disk smaller than the ISO is refused with both sizes."""
    small = dataclasses.replace(disk(), size_bytes=1000)
    with pytest.raises(PreflightError, match=r"1,000 bytes\), smaller than the image \(4.9 KiB, 5,000 bytes\)"):
        preflight.check_image_fits(small, 5000)
    preflight.check_image_fits(small, 1000)


def test_a_run_that_cannot_fit_its_time_limit_stops_before_the_disk_is_looked_at() -> None:
    """run.time_limit_s below the budgets' worst case: exit 2 at the first check, the disk never probed."""
    from harmonic_installer.errors import ConfigError

    class NoProbe(FakeDisks):
        def lookup(self, path: str) -> None:
            raise AssertionError("the disk was probed")

    with pytest.raises(ConfigError, match=r"allow a run of up to 7\.7 h .* longer than run\.time_limit_s 3600 s") as e:
        run(settings(run_time_limit_s="3600"), NoProbe([]))
    assert e.value.exit_code == ExitCode.USAGE


def test_no_time_limit_by_default() -> None:
    """By hand (no unit, run.time_limit_s 0) any budgets are accepted."""
    report = run(settings(write_timeout_s="604800"), FakeDisks([disk()]))
    assert report.disk.path == "/dev/sda"


def test_announced_image_larger_than_disk_says_nothing_was_downloaded() -> None:
    """Refused from the announced size, the message says the ISO was not downloaded."""
    small = dataclasses.replace(disk(), size_bytes=1024**3)
    with pytest.raises(PreflightError, match=r"1.0 GiB .* \(2.9 GiB, .*the ISO was not downloaded"):
        preflight.check_image_fits(small, int(2.9 * 1024**3), announced=True)
