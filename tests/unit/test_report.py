"""report.py: the step recorder's outcomes, statuses and observer calls."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from harmonic_installer.report import InstallReport, StepObserver, StepOutcome, StepRecorder


class Clock:
    """A clock that advances one second per reading."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


class Observer(StepObserver):
    """Records the calls; fails on step_started when told to."""

    def __init__(self, *, fail: bool = False) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail = fail

    def step_started(self, name: str, description: str) -> None:
        self.calls.append(("started", name))
        if self.fail:
            raise RuntimeError("MAAS unreachable")

    def step_finished(self, name: str, status: str, description: str) -> None:
        self.calls.append(("finished", name, status, description))

    def progress(self, label: str, done: int, total: int | None) -> None:
        pass

    def warning(self, text: str) -> None:
        self.calls.append(("warning", text))

    def run_finished(self, report: InstallReport) -> None:
        pass


def test_a_step_that_skips_ends_skipped_with_its_reason() -> None:
    """Step.skip makes the outcome 'skipped' with the reason as detail; say() lines join with '; '."""
    obs = Observer()
    rec = StepRecorder(obs, Clock())
    with rec.step("packages", "install") as step:
        step.skip("already installed: a 1.0")
    with rec.step("write", "write") as step:
        step.say("wrote x")
        step.say("in 3 s")
    assert rec.outcomes == [
        StepOutcome("packages", "skipped", "already installed: a 1.0", 1.0),
        StepOutcome("write", "ok", "wrote x; in 3 s", 1.0),
    ]
    assert ("finished", "packages", "skipped", "already installed: a 1.0") in obs.calls


def test_a_failing_step_is_recorded_and_re_raised_and_the_rest_is_not_run() -> None:
    """An exception ends the step 'failed' with its message; remaining() lists the later steps as not run."""
    rec = StepRecorder(None, Clock())
    with capture_logs() as logs, pytest.raises(ValueError, match="disk gone"), rec.step("preflight", "check"):
        raise ValueError("disk gone")
    assert rec.outcomes[0].status == "failed"
    assert rec.outcomes[0].detail == "disk gone"
    assert rec.current == "preflight"
    assert [o.name for o in rec.remaining()][:2] == ["record", "proxy"]
    assert all(o.status == "not run" for o in rec.remaining())
    assert any(e["event"] == "step.failed" and e["error"] == "disk gone" for e in logs)


def test_a_failing_observer_never_breaks_the_step() -> None:
    """An observer that raises is logged (observer.failed) and the step still runs and finishes ok."""
    rec = StepRecorder(Observer(fail=True), Clock())
    with capture_logs() as logs, rec.step("proxy", "decide") as step:
        step.say("direct")
    assert rec.outcomes[0].status == "ok"
    assert any(e["event"] == "observer.failed" for e in logs)
