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
import os
import posixpath
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from harmonic_installer import firmware, packages, preflight, proxy, reboot, writer
from harmonic_installer.config import Settings, redact_url
from harmonic_installer.disks import DiskInfo, DiskProbe
from harmonic_installer.download import ArtifactSpec, Downloader, DownloadPolicy, VerifiedArtifact
from harmonic_installer.errors import ExitCode, InstallerError, Interrupted, NotATargetHost
from harmonic_installer.gpt import PartitionTable
from harmonic_installer.runner import Runner
from harmonic_installer.state import REBOOT_MARKER, Journal, RunLock, clear_reboot_wanted, want_reboot

log = structlog.get_logger()

STEPS = ("preflight", "record", "proxy", "download", "packages", "write", "firmware", "reboot")
_INSTALL_STEPS = ("proxy", "download", "packages", "write")  # what an already-installed host skips


class StepObserver(Protocol):
    """Told about every step (e.g. to report progress to MAAS); must never raise or block."""

    def step_started(self, name: str, description: str) -> None:
        """A step began."""
        ...

    def step_finished(self, name: str, status: str, description: str) -> None:
        """A step ended: status is 'ok', 'skipped' or 'failed'."""
        ...

    def progress(self, label: str, done: int, total: int | None) -> None:
        """Download progress (called often: rate-limit in the observer)."""
        ...

    def warning(self, text: str) -> None:
        """Something the operator must know although the run goes on (e.g. a later network boot will re-image)."""
        ...

    def run_finished(self, report: InstallReport) -> None:
        """The run is over (installed, already installed, failed, interrupted, not a target); called once, last."""
        ...


@dataclass(frozen=True, slots=True)
class Deps:
    """The injected edges of a run: tests swap them without monkeypatching."""

    runner: Runner
    disks: DiskProbe
    environ: Mapping[str, str]
    http_transport: object | None = None  # an httpx transport (only download.py knows httpx)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    geteuid: Callable[[], int] = os.geteuid
    observer: StepObserver | None = None
    reboot_marker: Path = REBOOT_MARKER


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """One step's result in the final report."""

    name: str
    status: str  # ok | skipped | failed | not run | planned
    detail: str
    duration_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ArtifactReport:
    """One downloaded artifact in the final report."""

    label: str
    url: str
    path: str
    sha256: str
    size: int
    checksum_source: str
    reused: bool


@dataclass(frozen=True, slots=True)
class InstallReport:
    """The result of a run, rendered by the CLI (text, or JSON with --json)."""

    outcome: str  # installed | already-installed | planned | not-a-target | failed | interrupted
    exit_code: int
    steps: tuple[StepOutcome, ...]
    disk: str | None = None
    release: str | None = None
    artifacts: tuple[ArtifactReport, ...] = ()
    error: str | None = None
    failed_step: str | None = None
    note: str | None = None  # the one line for the operator (e.g. "already installed: ...")
    reboot: str = "none"  # who reboots now: "command" (finish() runs it), "systemd"/"cloud-init" (the caller), "none"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the `--json` report)."""
        return asdict(self)


def artifact_specs(settings: Settings) -> tuple[list[ArtifactSpec], ArtifactSpec]:
    """The deb specs and the ISO spec for these settings."""
    server = settings.server_url
    pkg_dir = f"{server}/{settings.packages_path}"
    debs = [
        ArtifactSpec(
            url=f"{pkg_dir}/{name}",
            dest_dir=settings.working_dir,
            filename=name,
            sums_url=f"{pkg_dir}/{settings.sums_name}",
            label=name,
        )
        for name in settings.package_names
    ]
    iso_parent = posixpath.dirname(settings.iso_path)
    sums_url = f"{server}/{iso_parent}/{settings.sums_name}" if iso_parent else f"{server}/{settings.sums_name}"
    iso = ArtifactSpec(
        url=f"{server}/{settings.iso_path}",
        dest_dir=settings.iso_dir,
        filename=settings.iso_filename,
        sha256=settings.iso_sha256,
        sums_url=sums_url,
        adopt_server_name=not settings.iso_path.endswith(".iso"),
        label="Apollo ISO",
    )
    return debs, iso


class _Steps:
    """Runs named steps: logs start/finish with duration, tells the observer, collects outcomes."""

    def __init__(self, observer: StepObserver | None, clock: Callable[[], float]) -> None:
        self.outcomes: list[StepOutcome] = []
        self.current: str | None = None
        self._observer = observer
        self._clock = clock

    @contextmanager
    def step(self, name: str, description: str) -> Iterator[list[str]]:
        """Run the body as step `name`; the body may append a detail line (and 'skipped')."""
        detail: list[str] = []
        started = self._clock()
        self.current = name
        self._notify("step_started", name, description)
        with structlog.contextvars.bound_contextvars(step=name):
            log.info("step.started", description=description)
            try:
                yield detail
            except NotATargetHost as exc:  # not a failure: this host is simply not to be imaged
                duration = round(self._clock() - started, 3)
                log.info("step.finished", status="skipped", duration_s=duration, detail=str(exc))
                self.outcomes.append(StepOutcome(name, "skipped", str(exc), duration))
                self._notify("step_finished", name, "skipped", str(exc))
                raise
            except BaseException as exc:
                duration = round(self._clock() - started, 3)
                log.error("step.failed", duration_s=duration, error=str(exc) or type(exc).__name__)
                self.outcomes.append(StepOutcome(name, "failed", str(exc) or type(exc).__name__, duration))
                self._notify("step_finished", name, "failed", str(exc))
                raise
            duration = round(self._clock() - started, 3)
            status = "skipped" if detail[:1] == ["skipped"] else "ok"
            text = "; ".join(d for d in detail if d != "skipped") or description
            log.info("step.finished", status=status, duration_s=duration, detail=text)
            self.outcomes.append(StepOutcome(name, status, text, duration))
            self._notify("step_finished", name, status, text)
        self.current = None

    def _notify(self, method: str, *args: object) -> None:
        if self._observer is None:
            return
        try:
            getattr(self._observer, method)(*args)
        except Exception as exc:  # reporting must never break an install
            log.warning("observer.failed", method=method, error=str(exc))

    def skip(self, name: str, why: str) -> None:
        """Record step `name` as skipped without running it."""
        log.info("step.finished", step=name, status="skipped", duration_s=0.0, detail=why)
        self.outcomes.append(StepOutcome(name, "skipped", why))

    def warn(self, text: str) -> None:
        """Log a warning the operator must see and tell the observer (MAAS shows it in the node's events)."""
        log.warning("install.warning", warning=text)
        self._notify("warning", text)

    def remaining(self) -> list[StepOutcome]:
        done = {o.name for o in self.outcomes}
        return [StepOutcome(n, "not run", "stopped after an earlier failure") for n in STEPS if n not in done]


def run(settings: Settings, deps: Deps) -> InstallReport:
    """Install Harmonic cOS on this machine: every step in order, stopping at the first failure.

    Ends before the reboot: the report's `reboot` says who reboots, and `finish` requests it once the caller
    has flushed the MAAS reports and shown the report. The observer (if any) hears about every step and,
    last, gets the final report.
    """
    steps = _Steps(deps.observer, deps.clock)
    report = _run(settings, deps, steps)
    steps._notify("run_finished", report)
    return report


def finish(settings: Settings, deps: Deps, report: InstallReport) -> InstallReport:
    """The last step: run the reboot command when the report asks for it (`reboot == "command"`).

    Returns the report with the reboot step's result; a failing reboot command makes it a failure (exit 6).
    """
    if report.reboot != "command":
        return report
    earlier = tuple(s for s in report.steps if s.name != "reboot")
    try:
        outcome = reboot.request(deps.runner, command=settings.reboot_command)
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


def _run(settings: Settings, deps: Deps, steps: _Steps) -> InstallReport:
    state: dict[str, Any] = {"artifacts": [], "disk": None, "release": None}
    try:
        with RunLock(settings.state_dir):
            clear_reboot_wanted(deps.reboot_marker)
            done = _install(settings, deps, steps, state)
            who = _plan_reboot(settings, steps, done)
            if who == "none" and done.reboot_wanted and done.note:  # --no-reboot: BootNext is set, nothing more
                done = dataclasses.replace(
                    done, note=done.note.replace("; booting the disk", "; the next boot goes to the disk")
                )
            if done.reboot_wanted:  # the unit and the user-data reboot only on this marker
                want_reboot(deps.reboot_marker, disk=state["disk"], release=state["release"], why=done.outcome)
    except NotATargetHost as exc:
        log.info("install.not_a_target", reason=str(exc))
        return InstallReport("not-a-target", int(ExitCode.OK), tuple(steps.outcomes), error=str(exc), **_facts(state))
    except (InstallerError, Interrupted) as exc:
        failed = steps.current
        log.error("install.failed", step=failed, error=exc.message, exit_code=int(exc.exit_code), details=exc.details)
        outcome = "interrupted" if exc.exit_code in (ExitCode.INTERRUPTED_INT, ExitCode.INTERRUPTED_TERM) else "failed"
        return InstallReport(
            outcome,
            int(exc.exit_code),
            tuple(steps.outcomes + steps.remaining()),
            error=exc.message,
            failed_step=failed,
            **_facts(state),
        )
    if done.outcome == "already-installed":
        log.info("install.already_installed", disk=state["disk"], release=state["release"], message=done.note)
    else:
        log.info("install.finished", disk=state["disk"], release=state["release"])
    return InstallReport(
        done.outcome, int(ExitCode.OK), tuple(steps.outcomes), note=done.note, reboot=who, **_facts(state)
    )


@dataclass(frozen=True, slots=True)
class _Done:
    """How _install ended (when it did not raise)."""

    outcome: str  # installed | already-installed
    note: str | None = None
    reboot_wanted: bool = True  # False when a reboot would only network-boot this installer again
    no_reboot_reason: str = ""


def _plan_reboot(settings: Settings, steps: _Steps, done: _Done) -> str:
    """The reboot step's line in the report, and who reboots: 'command' (finish() runs it, last), 'systemd' or
    'cloud-init' (our caller, after we exit 0), or 'none'."""
    who = reboot.who(enabled=settings.reboot_enabled, left_to=settings.reboot_left_to)
    if not done.reboot_wanted:
        steps.skip("reboot", done.no_reboot_reason)
        return "none"
    if who == "command":
        steps.outcomes.append(StepOutcome("reboot", "pending", f"{' '.join(settings.reboot_command)} (last)"))
    else:
        steps.skip("reboot", reboot.DISABLED if who == "none" else reboot.left_to(who))
    return who


def _facts(state: dict[str, Any]) -> dict[str, Any]:
    return {"disk": state["disk"], "release": state["release"], "artifacts": tuple(state["artifacts"])}


def _install(settings: Settings, deps: Deps, steps: _Steps, state: dict[str, Any]) -> _Done:
    journal = Journal.load(settings.state_dir)

    with steps.step("preflight", "check root, the target disk and the tools") as detail:
        pre = preflight.check(settings, deps.disks, geteuid=deps.geteuid)
        state["disk"] = pre.disk.path
        detail.append(f"disk {pre.disk.describe()} (by {pre.selected_by})")

    efivars = firmware.Efivars(settings.efivars_dir)
    found, table = _look_for_record(settings, deps, steps, efivars, pre.disk)
    if found.record is not None:
        state["release"] = found.record.release
        return _boot_installed(
            settings, deps, steps, efivars=efivars, disk=pre.disk.path, table=table, record=found.record
        )

    with steps.step("proxy", "decide proxy use per server") as detail:
        proxy_config = proxy.resolve(settings)
        route = proxy_config.proxy_for(settings.server_url)
        detail.append(
            f"proxy {proxy_config.describe()}; {redact_url(settings.server_url)} "
            + (f"via {redact_url(route)}" if route else "direct")
        )
        child_env = proxy_config.child_env(deps.environ)

    deb_specs, iso_spec = artifact_specs(settings)
    policy = DownloadPolicy.from_settings(settings)
    on_progress = deps.observer.progress if deps.observer is not None else None
    with steps.step("download", "fetch and verify the vendor packages and the Apollo ISO") as detail:
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
            iso = downloader.fetch(iso_spec)
        for spec, art in [*zip(deb_specs, debs, strict=True), (iso_spec, iso)]:
            state["artifacts"].append(_artifact_report(spec, art))
        release = iso.release or settings.iso_release
        state["release"] = release
        preflight.check_image_fits(pre.disk, iso.size)
        reused = sum(a.reused for a in [*debs, iso])
        detail.append(
            f"{len(debs) + 1} files verified ({reused} reused), ISO {iso.path.name} "
            f"{iso.size:,} bytes sha256 {iso.sha256[:16]}..., release {release}"
        )
        journal.record("download", {"iso": str(iso.path), "iso_sha256": iso.sha256, "release": release})

    with steps.step("packages", "install the vendor packages with dpkg") as detail:
        installed = packages.install(deps.runner, debs, env=child_env, timeout=settings.dpkg_timeout_s)
        if installed.skipped:
            detail.append("skipped")
        detail.append(
            ("already installed: " if installed.skipped else "installed: ")
            + ", ".join(f"{d.package} {d.version}" for d in installed.packages)
        )
        journal.record("packages", {"packages": [f"{d.package}={d.version}" for d in installed.packages]})

    with steps.step("write", f"write the ISO to {pre.disk.path} with {settings.ostree_tool}") as detail:
        done = journal.get("write")
        if done and done.get("disk") == pre.disk.path and done.get("iso_sha256") == iso.sha256:
            detail += ["skipped", f"{pre.disk.path} already holds {iso.path.name} (written earlier in this boot)"]
        else:
            journal.forget("write")
            result = writer.write(
                deps.runner,
                tool=settings.ostree_tool,
                disk=pre.disk,
                image=iso,
                iso_dir=settings.iso_dir,
                env=child_env,
                timeout=settings.write_timeout_s,
                wipe_on_failure=settings.wipe_on_failure,
            )
            journal.record("write", {"disk": result.disk, "iso_sha256": result.image_sha256})
            detail.append(f"wrote {iso.path.name} ({iso.size:,} bytes) to {result.disk} in {result.duration_s:.1f} s")

    _remember_and_boot(settings, deps, steps, efivars=efivars, disk=pre.disk, iso=iso, release=release, env=child_env)
    return _Done("installed")


def _look_for_record(
    settings: Settings, deps: Deps, steps: _Steps, efivars: firmware.Efivars, disk: DiskInfo
) -> tuple[firmware.Finding, PartitionTable | None]:
    """The `record` step: does the disk hold this host's install already (per the record in NVRAM)?"""
    with steps.step("record", "look for this host's install record in UEFI NVRAM") as detail:
        table = deps.disks.partition_table(disk.path)
        found = firmware.installed(efivars, disk, table, reimage=settings.reimage)
        detail.append(found.summary)
        if found.warning:
            steps.warn(found.warning)
        if found.record is not None:
            detail.extend(_newer_release(settings, deps, found.record))
    return found, table


def _remember_and_boot(
    settings: Settings,
    deps: Deps,
    steps: _Steps,
    *,
    efivars: firmware.Efivars,
    disk: DiskInfo,
    iso: VerifiedArtifact,
    release: str,
    env: Mapping[str, str],
) -> None:
    """After the write: keep the install record in NVRAM and point BootNext at the disk (never fails the run)."""
    with steps.step("firmware", "remember the install in UEFI NVRAM and boot the disk next") as detail:
        why_not = efivars.unavailable()
        if why_not is not None:
            detail.append(f"nothing remembered, BootNext not set: {why_not}")
            return
        table = deps.disks.partition_table(disk.path)
        warning: str | None = None
        if table is None:
            warning = f"{disk.path} shows no partition table after the write: a later network boot will re-image it"
        else:
            record = firmware.InstallRecord.of(release=release, iso_sha256=iso.sha256, disk=disk, table=table)
            warning = firmware.remember(efivars, record)
        detail.append(warning or f"remembered {record.describe()}")
        if warning:
            steps.warn(warning)
        if not settings.boot_disk:
            detail.append("BootNext not set (firmware.boot_disk=false): the firmware order decides the next boot")
            return
        booted = firmware.boot_next_to_disk(deps.runner, efivars, disk.path, table, env=env)
        detail.append(booted.summary)
        if booted.warning:
            steps.warn(booted.warning)


def _boot_installed(
    settings: Settings,
    deps: Deps,
    steps: _Steps,
    *,
    efivars: firmware.Efivars,
    disk: str,
    table: PartitionTable | None,
    record: firmware.InstallRecord,
) -> _Done:
    """The disk already holds this host's install: skip the install steps and point the next boot at the disk."""
    for name in _INSTALL_STEPS:
        steps.skip(name, "already installed")
    if not settings.boot_disk:
        steps.skip("firmware", "BootNext not set (firmware.boot_disk=false)")
        note = f"already installed: {record.describe()}; not booting the disk (firmware.boot_disk=false)"
        return _Done(
            "already-installed", note, False, "not rebooting: a reboot would network-boot this installer again"
        )
    # The description travels in a MAAS `start` event, which MAAS keeps (a successful finish it drops).
    with steps.step("firmware", f"already installed: {record.describe()}; boot the disk next (BootNext)") as detail:
        booted = firmware.boot_next_to_disk(deps.runner, efivars, disk, table, env=None)
        detail.append(booted.summary)
        if booted.entry is None:
            steps.warn(f"{booted.warning}; staying up: a reboot would network-boot this installer again")
    if booted.entry is None:
        note = f"already installed: {record.describe()}; BootNext could not be set, staying up ({booted.summary})"
        return _Done(
            "already-installed", note, False, "not rebooting: BootNext is not set, the network would boot first"
        )
    return _Done("already-installed", f"already installed: {record.describe()}; booting the disk")


def _newer_release(settings: Settings, deps: Deps, record: firmware.InstallRecord) -> list[str]:
    """A line when the server offers another ISO than the one on the disk (best effort: never fails the run)."""
    _, iso_spec = artifact_specs(settings)
    policy = dataclasses.replace(
        DownloadPolicy.from_settings(settings),
        attempts=1,
        max_time_s=10.0,
        connect_timeout_s=min(settings.connect_timeout_s, 3.0),
        read_timeout_s=min(settings.read_timeout_s, 5.0),
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
    offered = settings.iso_sha256 or digest
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


def preview(settings: Settings, deps: Deps) -> InstallReport:
    """What `-i` would do with these settings, changing nothing (plan mode and --dry-run)."""
    proxy_config = proxy.resolve(settings)
    deb_specs, iso_spec = artifact_specs(settings)
    try:
        disk, how = preflight.select_disk(settings, deps.disks)
        preflight.check_disk(disk, allow_removable=settings.allow_removable)
        disk_text = f"{disk.describe()} (by {how})"
        disk_path: str | None = disk.path
    except NotATargetHost:
        disk_text = f"{settings.disk_device} is not present: this host would not be installed (exit 0)"
        disk_path = None
    except InstallerError as exc:
        disk_text = f"not usable: {exc}"
        disk_path = None
    efivars = firmware.Efivars(settings.efivars_dir)
    found = None
    record_text = "no disk: nothing to look for"
    if disk_path is not None and deps.geteuid() != 0:
        record_text = "not checked: reading the disk's partition table needs root"
    elif disk_path is not None:
        found = firmware.installed(efivars, disk, deps.disks.partition_table(disk_path), reimage=settings.reimage)
        record_text = found.summary
    who = reboot.who(enabled=settings.reboot_enabled, left_to=settings.reboot_left_to)
    reboot_text = {"command": " ".join(settings.reboot_command), "none": "no reboot (--no-reboot)"}.get(
        who, reboot.left_to(who)
    )
    if found is not None and found.record is not None:
        boots = settings.boot_disk
        note = f"already installed: {found.record.describe()}, " + (
            "would boot the disk" if boots else "would not boot the disk (firmware.boot_disk=false)"
        )
        outcomes = [
            StepOutcome("preflight", "planned", f"target disk {disk_text}"),
            StepOutcome("record", "planned", record_text),
            *(StepOutcome(name, "skipped", "already installed") for name in _INSTALL_STEPS),
            StepOutcome("firmware", "planned", "UEFI BootNext to the disk's boot entry" if boots else "nothing"),
            StepOutcome("reboot", "planned", reboot_text if boots else "no reboot (the network would boot first)"),
        ]
        return InstallReport(
            "planned", int(ExitCode.OK), tuple(outcomes), disk=disk_path, release=found.record.release, note=note
        )

    def route(url: str) -> str:
        via = proxy_config.proxy_for(url)
        return f"{redact_url(url)} ({'via ' + redact_url(via) if via else 'direct'})"

    checksum = f"pinned {settings.iso_sha256}" if settings.iso_sha256 else f"from {redact_url(iso_spec.sums_url or '')}"
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
        StepOutcome("packages", "planned", "dpkg --install " + " ".join(settings.package_names)),
        StepOutcome(
            "write",
            "planned",
            f"{settings.ostree_tool} -D {disk_path or settings.disk_device} from {iso_spec.dest_dir}/<iso>"
            + ("; wipe partition tables on failure" if settings.wipe_on_failure else ""),
        ),
        StepOutcome(
            "firmware",
            "planned",
            "remember the install in UEFI NVRAM"
            + ("; BootNext to the disk's boot entry" if settings.boot_disk else "; BootNext not set"),
        ),
        StepOutcome("reboot", "planned", reboot_text),
    ]
    return InstallReport("planned", int(ExitCode.OK), tuple(outcomes), disk=disk_path, release=settings.iso_release)
