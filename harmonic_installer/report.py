"""What a run produces: typed step results, the final report, and the recorder that times and logs each step.

plan.py decides the order; this module only records. Statuses and outcomes are `Literal`s, so a typo is a
type error, and each step's result is a frozen value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import structlog

from harmonic_installer.errors import NotATargetHost

log = structlog.get_logger()

StepName = Literal["preflight", "record", "proxy", "download", "packages", "write", "firmware", "reboot"]
STEPS: tuple[StepName, ...] = ("preflight", "record", "proxy", "download", "packages", "write", "firmware", "reboot")
INSTALL_STEPS: tuple[StepName, ...] = ("proxy", "download", "packages", "write")  # skipped when installed

# What each step does, as the log, MAAS and the plan (preview.py) show it.
DESCRIPTIONS: dict[StepName, str] = {
    "preflight": "check root, the target disk and the tools",
    "record": "look for this host's install record in UEFI NVRAM",
    "proxy": "decide proxy use per server",
    "download": "fetch and verify the vendor packages and the Apollo ISO",
    "packages": "install the vendor packages with dpkg",
    "write": "write the ISO to {disk} with {tool}",
    "firmware": "remember the install in UEFI NVRAM and boot the disk next",
    "reboot": "reboot into the disk",
}
StepStatus = Literal["ok", "skipped", "failed", "not run", "planned", "pending"]
Finished = Literal["ok", "skipped", "failed"]  # what the observer hears when a step ends
Outcome = Literal["installed", "already-installed", "planned", "not-a-target", "failed", "interrupted"]
RebootBy = Literal["command", "systemd", "cloud-init", "none"]


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
class StepOutcome:
    """One step's result in the final report."""

    name: StepName
    status: StepStatus
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

    outcome: Outcome
    exit_code: int
    steps: tuple[StepOutcome, ...]
    disk: str | None = None
    release: str | None = None
    artifacts: tuple[ArtifactReport, ...] = ()
    error: str | None = None
    failed_step: str | None = None
    note: str | None = None  # the one line for the operator (e.g. "already installed: ...")
    reboot: RebootBy = "none"  # who reboots now: "command" (finish() runs it), "systemd"/"cloud-init", "none"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the `--json` report)."""
        return asdict(self)


class Step:
    """The running step's result as it is built: detail lines, and whether it turned out to be a skip."""

    __slots__ = ("lines", "skipped")

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.skipped = False

    def say(self, line: str) -> None:
        """Add a line to the step's detail (joined with '; ' in the report)."""
        self.lines.append(line)

    def skip(self, why: str) -> None:
        """The step found nothing to do: it ends as 'skipped' with this reason."""
        self.skipped = True
        self.lines.append(why)


class StepRecorder:
    """Runs named steps: logs start/finish with duration, tells the observer, collects the outcomes."""

    def __init__(self, observer: StepObserver | None, clock: Callable[[], float]) -> None:
        self.outcomes: list[StepOutcome] = []
        self.current: StepName | None = None
        self._observer = observer
        self._clock = clock

    @contextmanager
    def step(self, name: StepName, description: str) -> Iterator[Step]:
        """Run the body as step `name`; the body describes its result on the Step it is given."""
        result = Step()
        started = self._clock()
        self.current = name
        self.notify("step_started", name, description)
        with structlog.contextvars.bound_contextvars(step=name):
            log.info("step.started", description=description)
            try:
                yield result
            except NotATargetHost as exc:  # not a failure: this host is simply not to be imaged
                self._ended(name, "skipped", str(exc), started)
                raise
            except BaseException as exc:
                error, duration = str(exc) or type(exc).__name__, round(self._clock() - started, 3)
                log.error("step.failed", duration_s=duration, error=error)
                self.outcomes.append(StepOutcome(name, "failed", error, duration))
                self.notify("step_finished", name, "failed", str(exc))
                raise
            self._ended(name, "skipped" if result.skipped else "ok", "; ".join(result.lines) or description, started)
        self.current = None

    def _ended(self, name: StepName, status: Finished, text: str, started: float) -> None:
        duration = round(self._clock() - started, 3)
        log.info("step.finished", status=status, duration_s=duration, detail=text)
        self.outcomes.append(StepOutcome(name, status, text, duration))
        self.notify("step_finished", name, status, text)

    def notify(self, method: str, *args: object) -> None:
        """Call the observer's `method`; an observer's failure is logged, never raised."""
        if self._observer is None:
            return
        try:
            getattr(self._observer, method)(*args)
        except Exception as exc:  # reporting must never break an install
            log.warning("observer.failed", method=method, error=str(exc))

    def skip(self, name: StepName, why: str) -> None:
        """Record step `name` as skipped without running it."""
        log.info("step.finished", step=name, status="skipped", duration_s=0.0, detail=why)
        self.outcomes.append(StepOutcome(name, "skipped", why))

    def add(self, outcome: StepOutcome) -> None:
        """Record an outcome decided without running a step (e.g. the pending reboot)."""
        self.outcomes.append(outcome)

    def warn(self, text: str) -> None:
        """Log a warning the operator must see and tell the observer (MAAS shows it in the node's events)."""
        log.warning("install.warning", warning=text)
        self.notify("warning", text)

    def remaining(self) -> list[StepOutcome]:
        """The steps that did not run, after a failure."""
        done = {o.name for o in self.outcomes}
        return [StepOutcome(n, "not run", "stopped after an earlier failure") for n in STEPS if n not in done]
