"""Ask the system to reboot once everything succeeded (or say why it does not, or who does)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from harmonic_installer.errors import CommandError, WriteError
from harmonic_installer.report import RebootBy
from harmonic_installer.runner import Runner

log = structlog.get_logger()

DISABLED = "disabled (--no-reboot or reboot.enabled=false)"
_HOW = {"systemd": "the unit's SuccessAction=reboot", "cloud-init": "the user-data's power_state"}


@dataclass(frozen=True, slots=True)
class RebootOutcome:
    """How the reboot was requested (the summary line)."""

    reason: str


def who(*, enabled: bool, left_to: str | None) -> RebootBy:
    """Who reboots after a successful run: 'systemd' or 'cloud-init' (our caller), 'command' (we run
    reboot.command) or 'none'."""
    if left_to == "systemd":
        return "systemd"
    if left_to == "cloud-init":
        return "cloud-init"
    if left_to:
        raise ValueError(f"reboot.left_to must be systemd or cloud-init, not {left_to!r}")
    return "command" if enabled else "none"


def left_to(caller: str) -> str:
    """The summary line when the caller reboots: 'left to systemd: ...'."""
    return f"left to {caller}: it reboots once this run exits 0 ({_HOW.get(caller, caller)})"


def request(runner: Runner, *, command: Sequence[str]) -> RebootOutcome:
    """Run the reboot command (the caller has decided that we reboot, and that it is the last thing we do).

    Raises:
        WriteError: the reboot command failed (the disk is written; reboot by hand).
    """
    log.info("reboot.requesting", command=list(command))
    try:
        runner.run(list(command), timeout=60)
    except CommandError as exc:
        raise WriteError(
            f"the disk is written but the reboot command `{' '.join(command)}` failed: {exc}; reboot by hand",
            exc.output_tail,
        ) from exc
    log.info("reboot.requested", command=list(command))
    return RebootOutcome(f"requested with {' '.join(command)}")
