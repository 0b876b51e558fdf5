"""Fleet failures: one line for the operator and a documented exit code (docs/fleet.md)."""

from __future__ import annotations

from enum import IntEnum


class FleetExit(IntEnum):
    """Exit codes of `harmonic-install fleet deploy|watch`."""

    OK = 0  # every machine installed (or the dry run / plan was printed)
    USAGE = 2  # bad flags, no API key, unknown profile, unreadable user-data
    MAAS = 10  # MAAS unreachable, or it answered an error we cannot act on
    AUTH = 11  # MAAS refused the API key (401)
    REFUSED = 12  # a machine is unknown or cannot be deployed: nothing was deployed
    FAILED = 13  # at least one machine failed (our installer's FAIL, or MAAS failed it)
    SILENT = 14  # none failed, but at least one went silent for too long
    NOT_INSTALLED = 15  # none failed or silent, but some were not deployed or not started
    INTERRUPTED = 130  # Ctrl-C: watching stopped, nothing changed in MAAS


class FleetError(Exception):
    """A failure the operator is told about in one line (several lines for several problems)."""

    def __init__(self, message: str, exit_code: FleetExit = FleetExit.MAAS) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class NotFound(FleetError):
    """MAAS answered 404 for an object."""


class Rejected(FleetError):
    """MAAS answered 400/403/409 (validation, permission, state): the message is MAAS's own text."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message, FleetExit.MAAS)
        self.status = status
