"""plan: the steps run in order, stop at the first failure, never reboot after one, and re-runs continue."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from harmonic_installer import config, firmware, plan, preview
from harmonic_installer.errors import ExitCode
from harmonic_installer.report import StepObserver
from harmonic_installer.state import RunLock
from tests.support import gptimage
from tests.unit.fakes import FakeDisks, FakeRunner, disk

RELEASE = "release-9.9.9.0-1+test"
DEBS = ("ostree-upgrade-bootstrap_2.0.41_all.deb", "ostree-upgrade_2.0.41_all.deb")


@dataclass
class Site:
    url: str
    root: Path
    iso: bytes


def _write_sums(directory: Path) -> None:
    lines = [
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}"
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != "SHA256SUMS"
    ]
    (directory / "SHA256SUMS").write_text("\n".join(lines) + "\n")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """A stdlib web server on loopback laid out like the real one (packages/, apollo/latest, SHA256SUMS)."""
    root = tmp_path / "www"
    (root / "packages").mkdir(parents=True)
    (root / "apollo").mkdir()
    for name in DEBS:
        (root / "packages" / name).write_bytes(b"!<arch>\n" + name.encode() * 100)
    _write_sums(root / "packages")
    iso = os.urandom(256 * 1024)
    (root / "apollo" / f"APOLLO_PLATFORM-{RELEASE}.iso").write_bytes(iso)
    (root / "apollo" / "latest").symlink_to(f"APOLLO_PLATFORM-{RELEASE}.iso")
    _write_sums(root / "apollo")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Site(f"http://127.0.0.1:{server.server_address[1]}", root, iso)
    server.shutdown()
    server.server_close()


@dataclass
class World:
    runner: FakeRunner
    installed: dict[str, str]
    written: list[tuple[str, str]]
    disks: FakeDisks


def make_world(*, dpkg_rc: int = 0, write_rc: int = 0, reboot_rc: int = 0) -> World:
    installed: dict[str, str] = {}
    written: list[tuple[str, str]] = []
    disks = FakeDisks([disk(size_bytes=10**9)])

    def dpkg_deb(argv: tuple[str, ...], answer: str | None) -> tuple[int, str]:
        name = Path(argv[2]).name.split("_")[0]
        return 0, f"Package: {name}\nVersion: 2.0.41\nArchitecture: all\n"

    def dpkg_query(argv: tuple[str, ...], answer: str | None) -> tuple[int, str]:
        pkg = argv[-1]
        if pkg in installed:
            return 0, f"install ok installed\t{installed[pkg]}"
        return 1, f"dpkg-query: no packages found matching {pkg}"

    def dpkg(argv: tuple[str, ...], answer: str | None) -> tuple[int, str]:
        if dpkg_rc:
            return dpkg_rc, "dpkg: dependency problems prevent configuration of ostree-upgrade:\n depends on libfoo"
        for path in argv[4:]:
            installed[Path(path).name.split("_")[0]] = "2.0.41"
        return 0, "Setting up ostree-upgrade (2.0.41) ..."

    def ostree(argv: tuple[str, ...], answer: str | None) -> tuple[int, str]:
        if argv[1] == "list-isos":
            return 0, f"APOLLO_PLATFORM-{RELEASE}.iso 262144"
        assert answer == "y", "the confirmation prompt must be answered"
        if write_rc:
            return write_rc, "error: write failed at 4096 bytes"
        written.append((argv[2], argv[4]))
        disks.tables[argv[2]] = gptimage.standard(seed=len(written))  # each write: a new table on the disk
        return 0, "done"

    runner = FakeRunner(
        {
            "dpkg-deb": dpkg_deb,
            "dpkg-query": dpkg_query,
            "dpkg": dpkg,
            "ostree-production": ostree,
            "systemctl": lambda argv, answer: (reboot_rc, ""),
        }
    )
    return World(runner, installed, written, disks)


def make_settings(site: Site, tmp_path: Path, **env: str) -> config.Settings:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    tool = bindir / "ostree-production"
    tool.write_text("#!/bin/sh\nexit 99\n")  # found on PATH by the writer; the FakeRunner runs it
    tool.chmod(0o755)
    environ = {
        "HARMONIC_SERVER_URL": site.url,
        "HARMONIC_PATHS_WORKING_DIR": str(tmp_path / "work"),
        "HARMONIC_PATHS_ISO_DIR": str(tmp_path / "data"),
        "HARMONIC_PATHS_STATE_DIR": str(tmp_path / "state"),
        "HARMONIC_ISO_RELEASE": RELEASE,
        "HARMONIC_DOWNLOAD_BACKOFF_MAX_S": "0",
        "HARMONIC_DOWNLOAD_ATTEMPTS": "2",
        "HARMONIC_FIRMWARE_EFIVARS_DIR": str(tmp_path / "efi" / "efivars"),
        **{f"HARMONIC_{k.upper()}": v for k, v in env.items()},
    }
    (tmp_path / "efi" / "efivars").mkdir(parents=True, exist_ok=True)  # a UEFI machine with empty NVRAM
    return config.load(environ=environ, cmdline="", run=config.RunFlags(install=True))


def deps(world: World, tmp_path: Path, disks: FakeDisks | None = None) -> plan.Deps:
    return plan.Deps(
        runner=world.runner,
        disks=disks if disks is not None else world.disks,
        environ={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"},
        geteuid=lambda: 0,
        sleep=lambda s: None,
        reboot_marker=tmp_path / "reboot-wanted",
    )


def new_boot(tmp_path: Path) -> None:
    """A reboot into a fresh in-memory OS: /run (state) and the RAM disk (downloads) are gone; NVRAM is kept."""
    for name in ("state", "data", "work"):
        shutil.rmtree(tmp_path / name, ignore_errors=True)
    (tmp_path / "efi" / "efivars" / f"BootNext-{firmware.GLOBAL_GUID}").unlink(missing_ok=True)  # consumed


def run_to_the_end(settings: config.Settings, d: plan.Deps) -> plan.InstallReport:
    """What the CLI does: the run, then (after the report and the MAAS flush) the reboot."""
    return plan.finish(settings, d, plan.run(settings, d))


def test_full_install_runs_every_step_in_order(site: Site, tmp_path: Path) -> None:
    """A good run verifies, installs, writes and reboots, in that order, and reports each step."""
    world = make_world()
    report = run_to_the_end(make_settings(site, tmp_path), deps(world, tmp_path))
    assert report.outcome == "installed", report.error
    assert report.exit_code == 0
    assert [s.name for s in report.steps] == list(plan.STEPS)
    assert all(s.status == "ok" for s in report.steps), report.steps
    assert report.release == RELEASE
    programs = world.runner.programs()
    assert programs.index("dpkg") < programs.index("ostree-production") < programs.index("systemctl")
    assert world.written == [("/dev/sda", str(tmp_path / "data" / f"APOLLO_PLATFORM-{RELEASE}.iso"))]
    assert (tmp_path / "data" / f"APOLLO_PLATFORM-{RELEASE}.iso").read_bytes() == site.iso
    assert {a.checksum_source for a in report.artifacts} == {"SHA256SUMS"}
    assert (tmp_path / "reboot-wanted").exists(), "the unit reboots only on this marker"


def test_steps_are_logged_with_durations(site: Site, tmp_path: Path) -> None:
    """Every step logs step.started and step.finished with its duration and the step name bound."""
    with capture_logs(processors=[__import__("structlog").contextvars.merge_contextvars]) as logs:
        plan.run(make_settings(site, tmp_path), deps(make_world(), tmp_path))
    finished = [e for e in logs if e["event"] == "step.finished"]
    assert [e["step"] for e in finished] == [s for s in plan.STEPS if s != "reboot"]  # pending: finish() runs it
    assert all(isinstance(e["duration_s"], float) for e in finished)


def test_checksum_mismatch_stops_before_packages_and_disk(site: Site, tmp_path: Path) -> None:
    """A corrupted ISO fails the download step (exit 4): no dpkg, no write, no reboot."""
    iso = site.root / "apollo" / f"APOLLO_PLATFORM-{RELEASE}.iso"
    iso.write_bytes(b"X" + site.iso[1:])
    world = make_world()
    report = plan.run(make_settings(site, tmp_path), deps(world, tmp_path))
    assert report.exit_code == ExitCode.DOWNLOAD
    assert report.failed_step == "download"
    assert "dpkg" not in world.runner.programs()
    assert "ostree-production" not in world.runner.programs()
    assert "systemctl" not in world.runner.programs()
    assert not (tmp_path / "data" / f"APOLLO_PLATFORM-{RELEASE}.iso").exists()
    assert [s.status for s in report.steps if s.name in ("packages", "write", "reboot")] == ["not run"] * 3


def test_missing_checksum_stops_unless_insecure_flag(site: Site, tmp_path: Path) -> None:
    """No SHA256SUMS stops the run before anything is installed; the insecure flag allows it, loudly."""
    (site.root / "packages" / "SHA256SUMS").unlink()
    world = make_world()
    report = plan.run(make_settings(site, tmp_path), deps(world, tmp_path))
    assert report.exit_code == ExitCode.DOWNLOAD
    assert "dpkg" not in world.runner.programs()
    with capture_logs() as logs:
        report = plan.run(
            make_settings(site, tmp_path, checksums_allow_unverified="true"), deps(make_world(), tmp_path)
        )
    assert report.exit_code == 0, report.error
    assert any(e["log_level"] == "warning" and "unverified" in e["event"] for e in logs)


def test_dpkg_failure_exits_5_without_write_or_reboot(site: Site, tmp_path: Path) -> None:
    """dpkg failing is exit 5 with dpkg's own words; the disk and the reboot are not touched."""
    world = make_world(dpkg_rc=1)
    report = plan.run(make_settings(site, tmp_path), deps(world, tmp_path))
    assert report.exit_code == ExitCode.PACKAGES
    assert not (tmp_path / "reboot-wanted").exists()
    assert "depends on libfoo" in (report.error or "") or "dependency problems" in (report.error or "")
    assert "ostree-production" not in world.runner.programs()
    assert "systemctl" not in world.runner.programs()


def test_write_failure_exits_6_without_reboot(site: Site, tmp_path: Path) -> None:
    """ostree-production failing is exit 6 naming the tool's last line; no reboot."""
    world = make_world(write_rc=1)
    report = plan.run(make_settings(site, tmp_path), deps(world, tmp_path))
    assert report.exit_code == ExitCode.WRITE
    assert "write failed at 4096 bytes" in (report.error or "")
    assert "systemctl" not in world.runner.programs()


def test_reboot_failure_exits_6(site: Site, tmp_path: Path) -> None:
    """A failing reboot command is reported (exit 6): the disk is written, reboot by hand."""
    report = run_to_the_end(make_settings(site, tmp_path), deps(make_world(reboot_rc=1), tmp_path))
    assert report.exit_code == ExitCode.WRITE
    assert report.failed_step == "reboot"
    assert "reboot by hand" in (report.error or "")


def test_no_reboot_setting_skips_reboot(site: Site, tmp_path: Path) -> None:
    """reboot.enabled=false (--no-reboot) finishes without running the reboot command."""
    world = make_world()
    report = run_to_the_end(make_settings(site, tmp_path, reboot_enabled="false"), deps(world, tmp_path))
    assert report.exit_code == 0
    assert "systemctl" not in world.runner.programs()
    assert report.steps[-1].status == "skipped"
    assert "disabled" in report.steps[-1].detail


def test_reboot_left_to_systemd_is_said_not_called_disabled(site: Site, tmp_path: Path) -> None:
    """With reboot.left_to=systemd (the unit), no reboot command runs and the summary says systemd reboots."""
    world = make_world()
    report = run_to_the_end(make_settings(site, tmp_path, reboot_left_to="systemd"), deps(world, tmp_path))
    assert report.exit_code == 0
    assert "systemctl" not in world.runner.programs()
    assert report.reboot == "systemd"
    assert "left to systemd" in report.steps[-1].detail
    assert "disabled" not in report.steps[-1].detail
    assert (tmp_path / "reboot-wanted").exists()


def test_reboot_is_requested_after_the_marker_and_the_final_report(site: Site, tmp_path: Path) -> None:
    """run() ends with the marker and the final report and runs no reboot; finish() then runs it, last."""
    world = make_world()
    settings = make_settings(site, tmp_path)
    seen: list[str] = []

    class Observer(StepObserver):
        def step_started(self, name: str, description: str) -> None:
            pass

        def step_finished(self, name: str, status: str, description: str) -> None:
            seen.append(f"finished {name}")

        def progress(self, label: str, done: int, total: int | None) -> None:
            pass

        def warning(self, text: str) -> None:
            pass

        def run_finished(self, report: plan.InstallReport) -> None:
            seen.append("run_finished")
            assert (tmp_path / "reboot-wanted").exists(), "the marker is written before the final report"

    d = dataclasses.replace(deps(world, tmp_path), observer=Observer())
    report = plan.run(settings, d)
    assert seen[-1] == "run_finished"
    assert "systemctl" not in world.runner.programs()
    assert report.reboot == "command"
    assert report.steps[-1].status == "pending"
    final = plan.finish(settings, d, report)
    assert world.runner.programs()[-1] == "systemctl"
    assert final.steps[-1].status == "ok"


def test_rerun_reuses_downloads_and_skips_installed_packages(site: Site, tmp_path: Path) -> None:
    """Without UEFI (no record), a re-run after a failed reboot reuses verified files, skips dpkg and the write."""
    world = make_world(reboot_rc=1)
    settings = make_settings(site, tmp_path, firmware_efivars_dir=str(tmp_path / "bios" / "efivars"))
    assert run_to_the_end(settings, deps(world, tmp_path)).exit_code == ExitCode.WRITE
    world.runner.handlers["systemctl"] = lambda argv, answer: (0, "")
    world.runner.calls.clear()
    report = run_to_the_end(settings, deps(world, tmp_path))
    assert report.exit_code == 0, report.error
    assert all(a.reused for a in report.artifacts)
    statuses = {s.name: s.status for s in report.steps}
    assert statuses["packages"] == "skipped"
    assert statuses["write"] == "skipped"
    assert "dpkg" not in world.runner.programs()
    assert world.runner.programs().count("ostree-production") == 0


def test_installed_host_downloads_installs_and_writes_nothing(site: Site, tmp_path: Path) -> None:
    """A second run (a MAAS power-on) finds the record: no ISO request, no dpkg, no write; BootNext; reboot."""
    world = make_world()
    settings = make_settings(site, tmp_path)
    first = run_to_the_end(settings, deps(world, tmp_path))
    assert first.outcome == "installed", first.error
    new_boot(tmp_path)
    world.runner.calls.clear()
    with capture_logs() as logs:
        report = run_to_the_end(settings, deps(world, tmp_path))
    assert report.outcome == "already-installed"
    assert report.exit_code == 0
    assert report.note is not None
    assert report.note.startswith(f"already installed: release {RELEASE} on /dev/sda (serial S45NNA0M123456")
    assert report.note.endswith("; booting the disk")
    assert report.artifacts == ()
    assert not (tmp_path / "data").exists(), "nothing downloaded"
    assert "dpkg" not in world.runner.programs()
    assert "ostree-production" not in world.runner.programs()
    assert world.runner.programs() == ["efibootmgr", "systemctl"]  # efibootmgr absent here: efivarfs used
    assert len(world.written) == 1
    assert {s.name: s.status for s in report.steps} == {
        "preflight": "ok",
        "record": "ok",
        "proxy": "skipped",
        "download": "skipped",
        "packages": "skipped",
        "write": "skipped",
        "firmware": "ok",
        "reboot": "ok",
    }
    boot_next = (tmp_path / "efi" / "efivars" / f"BootNext-{firmware.GLOBAL_GUID}").read_bytes()
    assert boot_next[4:] == b"\0\0", "BootNext names Boot0000, the entry created for the disk's ESP"
    assert (tmp_path / "reboot-wanted").exists()
    assert any(e["event"] == "install.already_installed" for e in logs)


def test_reimage_flag_ignores_the_record(site: Site, tmp_path: Path) -> None:
    """install.reimage=true writes the disk again although the record matches."""
    world = make_world()
    assert run_to_the_end(make_settings(site, tmp_path), deps(world, tmp_path)).outcome == "installed"
    new_boot(tmp_path)
    report = run_to_the_end(make_settings(site, tmp_path, install_reimage="1"), deps(world, tmp_path))
    assert report.outcome == "installed", report.error
    assert len(world.written) == 2
    assert "re-imaging as asked" in {s.name: s.detail for s in report.steps}["record"]


def test_wiped_disk_is_installed_again(site: Site, tmp_path: Path) -> None:
    """A disk whose partition table is gone (wiped) does not match the record and is written again."""
    world = make_world()
    settings = make_settings(site, tmp_path)
    assert run_to_the_end(settings, deps(world, tmp_path)).outcome == "installed"
    new_boot(tmp_path)
    world.disks.tables.clear()
    with capture_logs() as logs:
        report = run_to_the_end(settings, deps(world, tmp_path))
    assert report.outcome == "installed", report.error
    assert len(world.written) == 2
    mismatch = [e for e in logs if e["event"] == "firmware.record_mismatch"]
    assert mismatch
    assert "no partition table" in mismatch[0]["reason"]


def test_replaced_disk_is_installed_again(site: Site, tmp_path: Path) -> None:
    """Another disk (another serial) with a copy of the same table does not match the record."""
    world = make_world()
    settings = make_settings(site, tmp_path)
    assert run_to_the_end(settings, deps(world, tmp_path)).outcome == "installed"
    table = world.disks.tables["/dev/sda"]
    new_boot(tmp_path)
    world.disks.known = [disk(size_bytes=10**9, serial="OTHER123")]
    world.disks.tables["/dev/sda"] = table
    report = run_to_the_end(settings, deps(world, tmp_path))
    assert report.outcome == "installed"
    assert "a different disk: serial OTHER123" in {s.name: s.detail for s in report.steps}["record"]


def test_newer_release_on_the_server_is_logged_not_installed(site: Site, tmp_path: Path) -> None:
    """When apollo/latest changed, an installed host still writes nothing and logs how to re-image."""
    world = make_world()
    settings = make_settings(site, tmp_path)
    assert run_to_the_end(settings, deps(world, tmp_path)).outcome == "installed"
    newer = "release-9.9.10.0-1+test"
    (site.root / "apollo" / f"APOLLO_PLATFORM-{newer}.iso").write_bytes(b"newer" * 1000)
    (site.root / "apollo" / "latest").unlink()
    (site.root / "apollo" / "latest").symlink_to(f"APOLLO_PLATFORM-{newer}.iso")
    _write_sums(site.root / "apollo")
    new_boot(tmp_path)
    with capture_logs() as logs:
        report = run_to_the_end(settings, deps(world, tmp_path))
    assert report.outcome == "already-installed"
    assert len(world.written) == 1
    newer_events = [e for e in logs if e["event"] == "release.newer_available"]
    assert newer_events
    assert "--reimage" in newer_events[0]["how"]


def test_release_check_failure_does_not_stop_booting_the_disk(site: Site, tmp_path: Path) -> None:
    """An unreachable server during the release check is logged; the installed disk is still booted."""
    world = make_world()
    settings = make_settings(site, tmp_path)
    assert run_to_the_end(settings, deps(world, tmp_path)).outcome == "installed"
    new_boot(tmp_path)
    dead = make_settings(site, tmp_path, server_url="http://127.0.0.1:9")
    with capture_logs() as logs:
        report = run_to_the_end(dead, deps(world, tmp_path))
    assert report.outcome == "already-installed"
    assert any(e["event"] == "release.check_failed" for e in logs)


def test_no_uefi_installs_as_today_and_warns(site: Site, tmp_path: Path) -> None:
    """Legacy BIOS: the install runs, nothing is remembered, and the warning reaches the observer (MAAS)."""
    world = make_world()
    warnings: list[str] = []

    class Observer(StepObserver):
        def step_started(self, name: str, description: str) -> None:
            pass

        def step_finished(self, name: str, status: str, description: str) -> None:
            pass

        def progress(self, label: str, done: int, total: int | None) -> None:
            pass

        def warning(self, text: str) -> None:
            warnings.append(text)

        def run_finished(self, report: plan.InstallReport) -> None:
            pass

    settings = make_settings(site, tmp_path, firmware_efivars_dir=str(tmp_path / "bios" / "efivars"))
    d = dataclasses.replace(deps(world, tmp_path), observer=Observer())
    report = run_to_the_end(settings, d)
    assert report.outcome == "installed", report.error
    assert warnings
    assert "a later network boot will image this disk again" in warnings[0]
    assert "legacy BIOS" in warnings[0]


def test_already_installed_without_boot_entry_stays_up(site: Site, tmp_path: Path) -> None:
    """If BootNext cannot be set on an installed host, it does not reboot (that would network-boot again)."""
    world = make_world()
    settings = make_settings(site, tmp_path)
    assert run_to_the_end(settings, deps(world, tmp_path)).outcome == "installed"
    efivars = tmp_path / "efi" / "efivars"
    for var in efivars.glob(f"Boot*-{firmware.GLOBAL_GUID}"):
        var.unlink()
    table = world.disks.tables["/dev/sda"]
    parts = tuple(dataclasses.replace(p, type_guid=gptimage.LINUX) for p in table.partitions)
    world.disks.tables["/dev/sda"] = dataclasses.replace(table, partitions=parts)  # same GUIDs, no ESP type
    new_boot(tmp_path)
    world.runner.calls.clear()
    report = run_to_the_end(settings, deps(world, tmp_path))
    assert report.outcome == "already-installed"
    assert report.reboot == "none"
    assert "systemctl" not in world.runner.programs()
    assert not (tmp_path / "reboot-wanted").exists()
    assert "staying up" in (report.note or "")


def test_not_a_target_host_does_nothing(site: Site, tmp_path: Path) -> None:
    """Without the configured disk the run exits 0 having run no command and fetched nothing."""
    world = make_world()
    report = plan.run(make_settings(site, tmp_path), deps(world, tmp_path, FakeDisks([])))
    assert report.outcome == "not-a-target"
    assert report.exit_code == 0
    assert not (tmp_path / "reboot-wanted").exists(), "a non-target host must not reboot"
    assert world.runner.calls == []
    assert not (tmp_path / "data").exists()


def test_second_run_while_locked_exits_7(site: Site, tmp_path: Path) -> None:
    """A run started while another holds the lock exits 7 and touches nothing."""
    settings = make_settings(site, tmp_path)
    world = make_world()
    with RunLock(settings.paths.state_dir):
        report = plan.run(settings, deps(world, tmp_path))
    assert report.exit_code == ExitCode.LOCKED
    assert world.runner.calls == []


def test_preview_changes_nothing(site: Site, tmp_path: Path) -> None:
    """Plan mode lists what -i would do with the resolved URLs and disk, running no command."""
    world = make_world()
    report = preview.preview(make_settings(site, tmp_path), deps(world, tmp_path))
    assert report.outcome == "planned"
    assert world.runner.calls == []
    text = " ".join(s.detail for s in report.steps)
    assert f"{site.url}/apollo/latest" in text
    assert "/dev/sda" in text
    assert not (tmp_path / "data").exists()


def test_preview_shows_the_commands_the_run_runs(site: Site, tmp_path: Path) -> None:
    """The plan's dpkg and vendor-tool lines are the argv an install then runs (flags included): no drift."""
    settings = make_settings(site, tmp_path)
    planned = {s.name: s.detail for s in preview.preview(settings, deps(make_world(), tmp_path)).steps}
    world = make_world()
    report = plan.run(settings, deps(world, tmp_path))
    assert report.outcome == "installed"
    dpkg = next(" ".join(c) for c in world.runner.calls if c[:2] == ("dpkg", "--install"))
    write = next(" ".join(c) for c in world.runner.calls if c[0] == settings.write.tool and "-D" in c)
    assert planned["packages"] == dpkg
    iso = next(a for a in report.artifacts if a.label == "Apollo ISO")
    assert planned["write"].startswith(write.replace(iso.path, f"{settings.paths.iso_dir}/<iso>"))
    assert "--force-confold" in planned["packages"]
