"""Ask the system to reboot once everything succeeded (or say why it does not)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from harmonic_installer.errors import CommandError, WriteError
from harmonic_installer.runner import Runner

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class RebootOutcome:
    """Whether a reboot was requested, and if not, why."""

    requested: bool
    reason: str


def request(runner: Runner, *, enabled: bool, command: Sequence[str]) -> RebootOutcome:
    """Run the reboot command when enabled.

    Raises:
        WriteError: the reboot command failed (the disk is written; reboot by hand).
    """
    if not enabled:
        log.info("reboot.skipped", reason="reboot disabled (--no-reboot or reboot.enabled=false)")
        return RebootOutcome(False, "disabled (--no-reboot or reboot.enabled=false)")
    try:
        runner.run(list(command), timeout=60)
    except CommandError as exc:
        raise WriteError(
            f"the disk is written but the reboot command `{' '.join(command)}` failed: {exc}; reboot by hand",
            exc.output_tail,
        ) from exc
    log.info("reboot.requested", command=list(command))
    return RebootOutcome(True, f"requested with {' '.join(command)}")
