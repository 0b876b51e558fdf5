"""Plan mode (no `-i`, or `--dry-run`): what an install would do with these settings, changing nothing.

Built from the same definitions the run uses (plan.py's step order and descriptions, the argv that
packages.py and writer.py run), so the plan cannot drift from what `-i` does.
"""

from __future__ import annotations

from harmonic_installer import firmware, packages, preflight, proxy, reboot, writer
from harmonic_installer.config import Settings, redact_url
from harmonic_installer.errors import ExitCode, InstallerError, NotATargetHost
from harmonic_installer.plan import INSTALL_STEPS, Deps, artifact_specs
from harmonic_installer.report import InstallReport, StepOutcome


def preview(settings: Settings, deps: Deps) -> InstallReport:
    """What `-i` would do with these settings, changing nothing (plan mode and --dry-run)."""
    proxy_config = proxy.resolve(settings)
    deb_specs, iso_spec = artifact_specs(settings)
    try:
        disk, how = preflight.select_disk(settings, deps.disks)
        preflight.check_disk(disk, allow_removable=settings.disk.allow_removable)
        disk_text = f"{disk.describe()} (by {how})"
        disk_path: str | None = disk.path
    except NotATargetHost:
        disk_text = f"{settings.disk.device} is not present: this host would not be installed (exit 0)"
        disk_path = None
    except InstallerError as exc:
        disk_text = f"not usable: {exc}"
        disk_path = None
    efivars = firmware.Efivars(settings.firmware.efivars_dir)
    found = None
    record_text = "no disk: nothing to look for"
    if disk_path is not None and deps.geteuid() != 0:
        record_text = "not checked: reading the disk's partition table needs root"
    elif disk_path is not None:
        table = deps.disks.partition_table(disk_path)
        found = firmware.installed(efivars, disk, table, reimage=settings.install.reimage)
        record_text = found.summary
    who = reboot.who(enabled=settings.reboot.enabled, left_to=settings.reboot.left_to)
    reboot_text = {"command": " ".join(settings.reboot.command), "none": "no reboot (--no-reboot)"}.get(
        who, reboot.left_to(who)
    )
    if found is not None and found.record is not None:
        boots = settings.firmware.boot_disk
        note = f"already installed: {found.record.describe()}, " + (
            "would boot the disk" if boots else "would not boot the disk (firmware.boot_disk=false)"
        )
        outcomes = [
            StepOutcome("preflight", "planned", f"target disk {disk_text}"),
            StepOutcome("record", "planned", record_text),
            *(StepOutcome(name, "skipped", "already installed") for name in INSTALL_STEPS),
            StepOutcome("firmware", "planned", "UEFI BootNext to the disk's boot entry" if boots else "nothing"),
            StepOutcome("reboot", "planned", reboot_text if boots else "no reboot (the network would boot first)"),
        ]
        return InstallReport(
            "planned", int(ExitCode.OK), tuple(outcomes), disk=disk_path, release=found.record.release, note=note
        )

    def route(url: str) -> str:
        via = proxy_config.proxy_for(url)
        return f"{redact_url(url)} ({'via ' + redact_url(via) if via else 'direct'})"

    checksum = f"pinned {settings.iso.sha256}" if settings.iso.sha256 else f"from {redact_url(iso_spec.sums_url or '')}"
    outcomes = [
        StepOutcome("preflight", "planned", f"target disk {disk_text}"),
        StepOutcome("record", "planned", record_text),
        StepOutcome("proxy", "planned", proxy_config.describe()),
        *(
            StepOutcome(
                "download",
                "planned",
                f"{route(s.url)} -> {s.dest_dir}/{s.filename}, sha256 from {redact_url(s.sums_url or '')}",
            )
            for s in deb_specs
        ),
        StepOutcome(
            "download",
            "planned",
            f"{route(iso_spec.url)} -> {iso_spec.dest_dir}/ (real name if the server reveals it, "
            f"else {iso_spec.filename}), sha256 {checksum}",
        ),
        StepOutcome(
            "packages", "planned", " ".join(packages.install_command([s.dest_dir / s.filename for s in deb_specs]))
        ),
        StepOutcome(
            "write",
            "planned",
            " ".join(
                writer.write_command(
                    settings.write.tool, disk_path or settings.disk.device or "<disk>", f"{iso_spec.dest_dir}/<iso>"
                )
            )
            + " (its prompt answered y)"
            + ("; wipe partition tables on failure" if settings.write.wipe_on_failure else ""),
        ),
        StepOutcome(
            "firmware",
            "planned",
            "remember the install in UEFI NVRAM"
            + ("; BootNext to the disk's boot entry" if settings.firmware.boot_disk else "; BootNext not set"),
        ),
        StepOutcome("reboot", "planned", reboot_text),
    ]
    return InstallReport("planned", int(ExitCode.OK), tuple(outcomes), disk=disk_path, release=settings.iso.release)
