"""The order of an install: the only module that knows the steps, what a re-run skips, and what a failure stops.

    preflight -> proxy -> download (debs, then ISO) -> packages -> write -> reboot

Nothing reaches the disk before every artifact is verified and the packages are installed; after any
failure nothing else runs (in particular no reboot) and the report names the failed step and the cause.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import posixpath
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import structlog

from harmonic_installer import packages, preflight, proxy, reboot, writer
from harmonic_installer.config import Settings, redact_url
from harmonic_installer.disks import DiskProbe
from harmonic_installer.download import ArtifactSpec, Downloader, DownloadPolicy, VerifiedArtifact
from harmonic_installer.errors import ExitCode, InstallerError, Interrupted, NotATargetHost
from harmonic_installer.runner import Runner
from harmonic_installer.state import Journal, RunLock, clear_installed, mark_installed

log = structlog.get_logger()

STEPS = ("preflight", "proxy", "download", "packages", "write", "reboot")


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

    def run_finished(self, report: InstallReport) -> None:
        """The run is over (installed, failed, interrupted, not a target); called once, last."""
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

    outcome: str  # installed | planned | not-a-target | failed | interrupted
    exit_code: int
    steps: tuple[StepOutcome, ...]
    disk: str | None = None
    release: str | None = None
    artifacts: tuple[ArtifactReport, ...] = ()
    error: str | None = None
    failed_step: str | None = None

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

    def remaining(self) -> list[StepOutcome]:
        done = {o.name for o in self.outcomes}
        return [StepOutcome(n, "not run", "stopped after an earlier failure") for n in STEPS if n not in done]


def run(settings: Settings, deps: Deps) -> InstallReport:
    """Install Harmonic cOS on this machine: every step in order, stopping at the first failure.

    The observer (if any) hears about every step and, last, gets the final report.
    """
    steps = _Steps(deps.observer, deps.clock)
    report = _run(settings, deps, steps)
    steps._notify("run_finished", report)
    return report


def _run(settings: Settings, deps: Deps, steps: _Steps) -> InstallReport:
    state: dict[str, Any] = {"artifacts": [], "disk": None, "release": None}
    try:
        with RunLock(settings.state_dir):
            clear_installed(settings.state_dir)
            _install(settings, deps, steps, state)
            mark_installed(settings.state_dir, disk=state["disk"], release=state["release"])
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
    log.info("install.finished", disk=state["disk"], release=state["release"])
    return InstallReport("installed", int(ExitCode.OK), tuple(steps.outcomes), **_facts(state))


def _facts(state: dict[str, Any]) -> dict[str, Any]:
    return {"disk": state["disk"], "release": state["release"], "artifacts": tuple(state["artifacts"])}


def _install(settings: Settings, deps: Deps, steps: _Steps, state: dict[str, Any]) -> None:
    journal = Journal.load(settings.state_dir)

    with steps.step("preflight", "check root, the target disk and the tools") as detail:
        pre = preflight.check(settings, deps.disks, geteuid=deps.geteuid)
        state["disk"] = pre.disk.path
        detail.append(f"disk {pre.disk.describe()} (by {pre.selected_by})")

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
            fits = functools.partial(preflight.check_image_fits, pre.disk, announced=True)
            iso = downloader.fetch(dataclasses.replace(iso_spec, size_check=fits))
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

    with steps.step("reboot", "reboot into Harmonic cOS") as detail:
        outcome = reboot.request(deps.runner, enabled=settings.reboot_enabled, command=settings.reboot_command)
        if not outcome.requested:
            detail.append("skipped")
        detail.append(outcome.reason)


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

    def route(url: str) -> str:
        via = proxy_config.proxy_for(url)
        return f"{redact_url(url)} ({'via ' + redact_url(via) if via else 'direct'})"

    checksum = f"pinned {settings.iso_sha256}" if settings.iso_sha256 else f"from {redact_url(iso_spec.sums_url or '')}"
    outcomes = [
        StepOutcome("preflight", "planned", f"target disk {disk_text}"),
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
            "reboot",
            "planned",
            " ".join(settings.reboot_command) if settings.reboot_enabled else "no reboot (--no-reboot)",
        ),
    ]
    return InstallReport("planned", int(ExitCode.OK), tuple(outcomes), disk=disk_path, release=settings.iso_release)
