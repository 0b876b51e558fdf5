"""The failsafe ledger: every injected fault and bad input, what was checked, and how it ended.

Tests take the `failsafe` fixture and open one case per fault or bad input:

    case = failsafe.case("bad input", "malformed TOML", injected="config file with `[server`", expect_exit=2)
    case.exit(result.returncode)                     # asserts and records the exit code
    case.check("one-line message naming the file", "config.toml" in line)   # asserts and records

At the end of a run that executed the whole of tests/failsafe, conftest.py writes the ledger to
docs/reliability.json and renders the README's reliability section from it (scripts/reliability_report.py):
the figures come from the run, never from a hand-edited table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class Case:
    """One injected fault or bad input and what the test saw."""

    group: str  # "local fault", "disk safety", "bad input", "secrets and trust"
    name: str
    injected: str
    expect_exit: int | None
    test: str
    observed_exit: int | None = None
    checks: list[str] = field(default_factory=list)
    failed_check: str | None = None
    outcome: str = "not finished"  # held | FAILED | skipped: <reason> | not finished

    def exit(self, returncode: int | None, context: str = "") -> None:
        """Record the exit code and assert it is the expected one."""
        self.observed_exit = returncode
        if self.expect_exit is not None:
            self.check(f"exit {self.expect_exit}", returncode == self.expect_exit, f"got {returncode}\n{context}")

    def check(self, what: str, ok: bool, context: str = "") -> None:
        """Record a check and assert it held (the message carries `context`)."""
        if not ok:
            self.failed_check = what
            raise AssertionError(f"[{self.group}: {self.name}] {what} did not hold\n{context}"[:6000])
        self.checks.append(what)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


class Recorder:
    """The cases opened by one test."""

    def __init__(self, test: str, ledger: list[Case]) -> None:
        self._test = test
        self._ledger = ledger
        self.cases: list[Case] = []

    def case(self, group: str, name: str, *, injected: str, expect_exit: int | None) -> Case:
        """Open a case; it is held when the test passes, FAILED otherwise."""
        case = Case(group=group, name=name, injected=injected, expect_exit=expect_exit, test=self._test)
        self.cases.append(case)
        self._ledger.append(case)
        return case

    def finish(self, passed: bool, skipped: str | None = None) -> None:
        """Mark this test's cases held (the test passed), skipped (this host cannot inject it) or FAILED."""
        for case in self.cases:
            if skipped is not None:
                case.outcome = f"skipped: {skipped}"
            else:
                case.outcome = "held" if passed and case.failed_check is None else "FAILED"
