"""The order of an install: the only module that knows the steps, what a re-run skips, and what a failure stops.

    preflight -> record -> proxy -> download (debs, then ISO) -> packages -> write -> firmware -> reboot

`record` reads the install record in UEFI NVRAM: when it matches the disk that is present, this host is
already installed and nothing is downloaded, installed or written; `firmware` then only points BootNext at
the disk. After a write, `firmware` remembers the install and points BootNext at the disk.

Nothing reaches the disk before every artifact is verified and the packages are installed; after any
failure nothing else runs (in particular no reboot) and the report names the failed step and the cause.
The reboot is the very last thing: `run` ends with the "reboot wanted" marker and the final report, the
caller flushes the MAAS reports and shows the report, then `finish` requests the reboot.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import posixpath
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from harmonic_installer import firmware, packages, plan_firmware, preflight, proxy, reboot, writer
from harmonic_installer.artifacts import ArtifactSpec, VerifiedArtifact
from harmonic_installer.config import Settings, redact_url
from harmonic_installer.disks import DiskProbe
from harmonic_installer.download import Downloader, DownloadPolicy
from harmonic_installer.errors import ExitCode, InstallerError, Interrupted, NotATargetHost
from harmonic_installer.plan_firmware import Done
from harmonic_installer.report import (
    DESCRIPTIONS,
    INSTALL_STEPS,
    STEPS,
    ArtifactReport,
    InstallReport,
    Outcome,
    RebootBy,
    StepObserver,
    StepOutcome,
    StepRecorder,
)
from harmonic_installer.runner import Runner
from harmonic_installer.state import REBOOT_MARKER, Journal, RunLock, clear_reboot_wanted, want_reboot

__all__ = [  # the report types live in report.py; a run returns them, so they are part of this API
    "DESCRIPTIONS",
    "INSTALL_STEPS",
    "STEPS",
    "ArtifactReport",
    "Deps",
    "InstallReport",
    "StepObserver",
    "StepOutcome",
    "artifact_specs",
    "describe_write",
    "finish",
    "run",
]

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Deps:
    """The injected edges of a run: tests swap them without monkeypatching."""

    runner: Runner
    disks: DiskProbe
    environ: Mapping[str, str]
    http_transport: object | None = None  # an httpx transport (only the download package knows httpx)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    geteuid: Callable[[], int] = os.geteuid
    observer: StepObserver | None = None
    reboot_marker: Path = REBOOT_MARKER


def describe_write(disk: str, tool: str) -> str:
    """The write step's description (MAAS shows it while the disk is written)."""
    return DESCRIPTIONS["write"].format(disk=disk, tool=tool)


def artifact_specs(settings: Settings) -> tuple[list[ArtifactSpec], ArtifactSpec]:
    """The deb specs and the ISO spec for these settings."""
    server = settings.server.url
    pkg_dir = f"{server}/{settings.packages.path}"
    debs = [
        ArtifactSpec(
            url=f"{pkg_dir}/{name}",
            dest_dir=settings.paths.working_dir,
            filename=name,
            sums_url=f"{pkg_dir}/{settings.checksums.name}",
            label=name,
        )
        for name in settings.packages.names
    ]
    iso_parent = posixpath.dirname(settings.iso.path)
    sums_name = settings.checksums.name
    sums_url = f"{server}/{iso_parent}/{sums_name}" if iso_parent else f"{server}/{sums_name}"
    iso = ArtifactSpec(
        url=f"{server}/{settings.iso.path}",
        dest_dir=settings.paths.iso_dir,
        filename=settings.iso.filename,
        sha256=settings.iso.sha256,
        sums_url=sums_url,
        adopt_server_name=not settings.iso.path.endswith(".iso"),
        label="Apollo ISO",
    )
    return debs, iso


def run(settings: Settings, deps: Deps) -> InstallReport:
    """Install Harmonic cOS on this machine: every step in order, stopping at the first failure.

    Ends before the reboot: the report's `reboot` says who reboots, and `finish` requests it once the caller
    has flushed the MAAS reports and shown the report. The observer (if any) hears about every step and,
    last, gets the final report.
    """
    steps = StepRecorder(deps.observer, deps.clock)
    report = _run(settings, deps, steps)
    steps.notify("run_finished", report)
    return report


def finish(settings: Settings, deps: Deps, report: InstallReport) -> InstallReport:
    """The last step: run the reboot command when the report asks for it (`reboot == "command"`).

    Returns the report with the reboot step's result; a failing reboot command makes it a failure (exit 6).
    """
    if report.reboot != "command":
        return report
    earlier = tuple(s for s in report.steps if s.name != "reboot")
    try:
        outcome = reboot.request(deps.runner, command=settings.reboot.command)
    except InstallerError as exc:
        log.error("install.failed", step="reboot", error=exc.message, exit_code=int(exc.exit_code))
        failed = StepOutcome("reboot", "failed", exc.message)
        return dataclasses.replace(
            report,
            outcome="failed",
            exit_code=int(exc.exit_code),
            steps=(*earlier, failed),
            error=exc.message,
            failed_step="reboot",
            reboot="none",
        )
    return dataclasses.replace(report, steps=(*earlier, StepOutcome("reboot", "ok", outcome.reason)))


def _run(settings: Settings, deps: Deps, steps: StepRecorder) -> InstallReport:
    state = _Facts()
    try:
        with RunLock(settings.paths.state_dir):
            clear_reboot_wanted(deps.reboot_marker)
            done = _install(settings, deps, steps, state)
            who = _plan_reboot(settings, steps, done)
            if who == "none" and done.reboot_wanted and done.note:  # --no-reboot: BootNext is set, nothing more
                done = dataclasses.replace(
                    done, note=done.note.replace("; booting the disk", "; the next boot goes to the disk")
                )
            if done.reboot_wanted:  # the unit and the user-data reboot only on this marker
                want_reboot(deps.reboot_marker, disk=state.disk, release=state.release, why=done.outcome)
    except NotATargetHost as exc:
        log.info("install.not_a_target", reason=str(exc))
        return InstallReport("not-a-target", int(ExitCode.OK), tuple(steps.outcomes), error=str(exc), **state.fields())
    except (InstallerError, Interrupted) as exc:
        failed = steps.current
        log.error("install.failed", step=failed, error=exc.message, exit_code=int(exc.exit_code), details=exc.details)
        outcome: Outcome = (
            "interrupted" if exc.exit_code in (ExitCode.INTERRUPTED_INT, ExitCode.INTERRUPTED_TERM) else "failed"
        )
        return InstallReport(
            outcome,
            int(exc.exit_code),
            tuple(steps.outcomes + steps.remaining()),
            error=exc.message,
            failed_step=failed,
            **state.fields(),
        )
    if done.outcome == "already-installed":
        log.info("install.already_installed", disk=state.disk, release=state.release, message=done.note)
    else:
        log.info("install.finished", disk=state.disk, release=state.release)
    return InstallReport(
        done.outcome, int(ExitCode.OK), tuple(steps.outcomes), note=done.note, reboot=who, **state.fields()
    )


def _plan_reboot(settings: Settings, steps: StepRecorder, done: Done) -> RebootBy:
    """The reboot step's line in the report, and who reboots: 'command' (finish() runs it, last), 'systemd' or
    'cloud-init' (our caller, after we exit 0), or 'none'."""
    who = reboot.who(enabled=settings.reboot.enabled, left_to=settings.reboot.left_to)
    if not done.reboot_wanted:
        steps.skip("reboot", done.no_reboot_reason)
        return "none"
    if who == "command":
        steps.add(StepOutcome("reboot", "pending", f"{' '.join(settings.reboot.command)} (last)"))
    else:
        steps.skip("reboot", reboot.DISABLED if who == "none" else reboot.left_to(who))
    return who


@dataclass(slots=True)
class _Facts:
    """What the run has learnt so far, for the report (also after a failure)."""

    disk: str | None = None
    release: str | None = None
    artifacts: list[ArtifactReport] = field(default_factory=list)

    def fields(self) -> dict[str, Any]:
        return {"disk": self.disk, "release": self.release, "artifacts": tuple(self.artifacts)}


def _install(settings: Settings, deps: Deps, steps: StepRecorder, state: _Facts) -> Done:
    journal = Journal.load(settings.paths.state_dir)

    with steps.step("preflight", DESCRIPTIONS["preflight"]) as detail:
        pre = preflight.check(settings, deps.disks, geteuid=deps.geteuid)
        state.disk = pre.disk.path
        detail.say(f"disk {pre.disk.describe()} (by {pre.selected_by})")

    efivars = firmware.Efivars(settings.firmware.efivars_dir)
    newer = functools.partial(_newer_release, settings, deps)
    found, table = plan_firmware.look_for_record(settings, deps, steps, efivars, pre.disk, newer_release=newer)
    if found.record is not None:
        state.release = found.record.release
        return plan_firmware.boot_installed(
            settings, deps, steps, efivars=efivars, disk=pre.disk.path, table=table, record=found.record
        )

    with steps.step("proxy", DESCRIPTIONS["proxy"]) as detail:
        proxy_config = proxy.resolve(settings)
        route = proxy_config.proxy_for(settings.server.url)
        detail.say(
            f"proxy {proxy_config.describe()}; {redact_url(settings.server.url)} "
            + (f"via {redact_url(route)}" if route else "direct")
        )
        child_env = proxy_config.child_env(deps.environ)

    deb_specs, iso_spec = artifact_specs(settings)
    policy = DownloadPolicy.from_settings(settings)
    on_progress = deps.observer.progress if deps.observer is not None else None
    with steps.step("download", DESCRIPTIONS["download"]) as detail:
        with Downloader(
            policy,
            proxy_config,
            runner=deps.runner,
            transport=deps.http_transport,  # type: ignore[arg-type]
            clock=deps.clock,
            sleep=deps.sleep,
            on_progress=on_progress,
        ) as downloader:
            debs = [downloader.fetch(spec) for spec in deb_specs]
            fits = functools.partial(preflight.check_image_fits, pre.disk, announced=True)
            iso = downloader.fetch(dataclasses.replace(iso_spec, size_check=fits))
        for spec, art in [*zip(deb_specs, debs, strict=True), (iso_spec, iso)]:
            state.artifacts.append(_artifact_report(spec, art))
        release = iso.release or settings.iso.release
        state.release = release
        preflight.check_image_fits(pre.disk, iso.size)
        reused = sum(a.reused for a in [*debs, iso])
        detail.say(
            f"{len(debs) + 1} files verified ({reused} reused), ISO {iso.path.name} "
            f"{iso.size:,} bytes sha256 {iso.sha256[:16]}..., release {release}"
        )
        journal.record("download", {"iso": str(iso.path), "iso_sha256": iso.sha256, "release": release})

    with steps.step("packages", DESCRIPTIONS["packages"]) as detail:
        installed = packages.install(deps.runner, debs, env=child_env, timeout=settings.packages.timeout_s)
        versions = ", ".join(f"{d.package} {d.version}" for d in installed.packages)
        if installed.skipped:
            detail.skip(f"already installed: {versions}")
        else:
            detail.say(f"installed: {versions}")
        journal.record("packages", {"packages": [f"{d.package}={d.version}" for d in installed.packages]})

    with steps.step("write", describe_write(pre.disk.path, settings.write.tool)) as detail:
        done = journal.get("write")
        if done and done.get("disk") == pre.disk.path and done.get("iso_sha256") == iso.sha256:
            detail.skip(f"{pre.disk.path} already holds {iso.path.name} (written earlier in this boot)")
        else:
            journal.forget("write")
            result = writer.write(
                deps.runner,
                tool=settings.write.tool,
                disk=pre.disk,
                image=iso,
                iso_dir=settings.paths.iso_dir,
                env=child_env,
                timeout=settings.write.timeout_s,
                wipe_on_failure=settings.write.wipe_on_failure,
                recheck_disk=lambda: preflight.recheck_disk(settings, deps.disks, pre.disk, iso.size),
            )
            journal.record("write", {"disk": result.disk, "iso_sha256": result.image_sha256})
            detail.say(f"wrote {iso.path.name} ({iso.size:,} bytes) to {result.disk} in {result.duration_s:.1f} s")

    plan_firmware.remember_and_boot(
        settings, deps, steps, efivars=efivars, disk=pre.disk, iso=iso, release=release, env=child_env
    )
    return Done("installed")


def _newer_release(settings: Settings, deps: Deps, record: firmware.InstallRecord) -> list[str]:
    """A line when the server offers another ISO than the one on the disk (best effort: never fails the run)."""
    _, iso_spec = artifact_specs(settings)
    policy = dataclasses.replace(
        DownloadPolicy.from_settings(settings),
        attempts=1,
        max_time_s=10.0,
        connect_timeout_s=min(settings.download.connect_timeout_s, 3.0),
        read_timeout_s=min(settings.download.read_timeout_s, 5.0),
    )
    try:
        with Downloader(
            policy,
            proxy.resolve(settings),
            runner=deps.runner,
            transport=deps.http_transport,  # type: ignore[arg-type]
            clock=deps.clock,
            sleep=deps.sleep,
            progress_bar=None,
        ) as downloader:
            name, digest = downloader.peek(iso_spec)
    except Exception as exc:  # best effort: a release check must never stop booting an installed disk
        log.info("release.check_failed", url=redact_url(iso_spec.url), error=str(exc) or type(exc).__name__)
        return []
    offered = settings.iso.sha256 or digest
    if offered is None or offered == record.iso_sha256:
        log.info("release.current", installed=record.release, url=redact_url(iso_spec.url))
        return []
    what = name or f"an ISO with sha256 {offered[:16]}..."
    log.warning(
        "release.newer_available",
        installed=record.release,
        offered=what,
        url=redact_url(iso_spec.url),
        how=f"not installed automatically; to install it, re-image on purpose: {firmware.REIMAGE_HINT}",
    )
    return [f"the server offers {what}; this disk keeps {record.release} (re-image on purpose: --reimage)"]


def _artifact_report(spec: ArtifactSpec, art: VerifiedArtifact) -> ArtifactReport:
    return ArtifactReport(
        label=spec.label,
        url=redact_url(art.url),
        path=str(art.path),
        sha256=art.sha256,
        size=art.size,
        checksum_source=art.checksum_source,
        reused=art.reused,
    )
