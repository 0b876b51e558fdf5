"""The record and firmware steps of an install (plan.py runs them, in its order).

`record`: does the disk already hold this host's install, per the record in UEFI NVRAM? `firmware`: after a
write, remember the install and point BootNext at the disk; when already installed, only point BootNext at it.
Neither fails a run: what cannot be done is a warning in the log, the report and MAAS's events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harmonic_installer import firmware
from harmonic_installer.config import Settings
from harmonic_installer.disks import DiskInfo
from harmonic_installer.gpt import PartitionTable
from harmonic_installer.report import DESCRIPTIONS, INSTALL_STEPS, Outcome, StepRecorder

if TYPE_CHECKING:  # annotations only: plan.py imports this module
    from harmonic_installer.artifacts import VerifiedArtifact
    from harmonic_installer.plan import Deps


@dataclass(frozen=True, slots=True)
class Done:
    """How _install ended (when it did not raise)."""

    outcome: Outcome  # installed | already-installed
    note: str | None = None
    reboot_wanted: bool = True  # False when a reboot would only network-boot this installer again
    no_reboot_reason: str = ""


def look_for_record(
    settings: Settings,
    deps: Deps,
    steps: StepRecorder,
    efivars: firmware.Efivars,
    disk: DiskInfo,
    *,
    newer_release: Callable[[firmware.InstallRecord], list[str]],
) -> tuple[firmware.Finding, PartitionTable | None]:
    """The `record` step: does the disk hold this host's install already (per the record in NVRAM)?"""
    with steps.step("record", DESCRIPTIONS["record"]) as detail:
        table = deps.disks.partition_table(disk.path)
        found = firmware.installed(efivars, disk, table, reimage=settings.install.reimage)
        detail.say(found.summary)
        if found.warning:
            steps.warn(found.warning)
        if found.record is not None:
            for line in newer_release(found.record):
                detail.say(line)
    return found, table


def remember_and_boot(
    settings: Settings,
    deps: Deps,
    steps: StepRecorder,
    *,
    efivars: firmware.Efivars,
    disk: DiskInfo,
    iso: VerifiedArtifact,
    release: str,
    env: Mapping[str, str],
) -> None:
    """After the write: keep the install record in NVRAM and point BootNext at the disk (never fails the run)."""
    with steps.step("firmware", DESCRIPTIONS["firmware"]) as detail:
        why_not = efivars.unavailable()
        if why_not is not None:
            detail.say(f"nothing remembered, BootNext not set: {why_not}")
            return
        table = deps.disks.partition_table(disk.path)
        warning: str | None = None
        if table is None:
            warning = f"{disk.path} shows no partition table after the write: a later network boot will re-image it"
        else:
            record = firmware.InstallRecord.of(release=release, iso_sha256=iso.sha256, disk=disk, table=table)
            warning = firmware.remember(efivars, record)
        detail.say(warning or f"remembered {record.describe()}")
        if warning:
            steps.warn(warning)
        if not settings.firmware.boot_disk:
            detail.say("BootNext not set (firmware.boot_disk=false): the firmware order decides the next boot")
            return
        booted = firmware.boot_next_to_disk(deps.runner, efivars, disk.path, table, env=env)
        detail.say(booted.summary)
        if booted.warning:
            steps.warn(booted.warning)


def boot_installed(
    settings: Settings,
    deps: Deps,
    steps: StepRecorder,
    *,
    efivars: firmware.Efivars,
    disk: str,
    table: PartitionTable | None,
    record: firmware.InstallRecord,
) -> Done:
    """The disk already holds this host's install: skip the install steps and point the next boot at the disk."""
    for name in INSTALL_STEPS:
        steps.skip(name, "already installed")
    if not settings.firmware.boot_disk:
        steps.skip("firmware", "BootNext not set (firmware.boot_disk=false)")
        note = f"already installed: {record.describe()}; not booting the disk (firmware.boot_disk=false)"
        return Done("already-installed", note, False, "not rebooting: a reboot would network-boot this installer again")
    # The description travels in a MAAS `start` event, which MAAS keeps (a successful finish it drops).
    with steps.step("firmware", f"already installed: {record.describe()}; boot the disk next (BootNext)") as detail:
        booted = firmware.boot_next_to_disk(deps.runner, efivars, disk, table, env=None)
        detail.say(booted.summary)
        if booted.entry is None:
            steps.warn(f"{booted.warning}; staying up: a reboot would network-boot this installer again")
    if booted.entry is None:
        note = f"already installed: {record.describe()}; BootNext could not be set, staying up ({booted.summary})"
        return Done(
            "already-installed", note, False, "not rebooting: BootNext is not set, the network would boot first"
        )
    return Done("already-installed", f"already installed: {record.describe()}; booting the disk")
