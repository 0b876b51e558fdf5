"""Error families, each with the exit code the operator (and systemd, and cloud-init) sees."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit codes of `harmonic-install` (README, `--help`)."""

    OK = 0  # success, plan only, or not a target host
    USAGE = 2  # bad flags or configuration
    PREFLIGHT = 3  # the machine or disk is not fit; nothing changed
    DOWNLOAD = 4  # download or verification failed; the disk is untouched
    PACKAGES = 5  # dpkg failed; the disk is untouched
    WRITE = 6  # ostree-production failed or the reboot could not be requested
    LOCKED = 7  # another harmonic-install is running
    INTERRUPTED_INT = 130  # SIGINT
    INTERRUPTED_TERM = 143  # SIGTERM


class InstallerError(Exception):
    """Base of every failure the operator is told about in one line.

    Args:
        message: one line for the operator: what failed, in their words.
        details: longer context for the log (paths, numbers, output tails); never secrets.
    """

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class ConfigError(InstallerError):
    """A flag, config file, kernel parameter or environment variable is invalid."""

    exit_code = ExitCode.USAGE


class PreflightError(InstallerError):
    """The host or the target disk is not fit for an install."""

    exit_code = ExitCode.PREFLIGHT


class DownloadError(InstallerError):
    """An artifact could not be fetched or did not verify."""

    exit_code = ExitCode.DOWNLOAD


class ChecksumError(DownloadError):
    """An artifact's SHA-256 does not match the expected value."""


class PackageError(InstallerError):
    """dpkg could not install the vendor packages."""

    exit_code = ExitCode.PACKAGES


class CommandError(InstallerError):
    """A child process failed, timed out or could not be started.

    The family's exit code is chosen by the caller that raises a subclass of its own
    (PackageError, WriteError); this base is used where no step owns the command.
    """

    exit_code = ExitCode.WRITE

    def __init__(
        self,
        message: str,
        details: str | None = None,
        *,
        argv: tuple[str, ...] = (),
        returncode: int | None = None,
        output_tail: str = "",
    ) -> None:
        super().__init__(message, details)
        self.argv = argv
        self.returncode = returncode
        self.output_tail = output_tail


class WriteError(InstallerError):
    """ostree-production failed to write the image, or the reboot could not be requested."""

    exit_code = ExitCode.WRITE


class LockedError(InstallerError):
    """Another installer holds the run lock."""

    exit_code = ExitCode.LOCKED


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; the current step was stopped cleanly.

    A BaseException (like KeyboardInterrupt) so that no `except Exception` on the way (a retry loop, a
    library) can swallow it.
    """

    def __init__(self, signum: int) -> None:
        import signal

        name = signal.Signals(signum).name
        self.message = f"interrupted by {name}; a re-run continues where this one stopped"
        super().__init__(self.message)
        self.details: str | None = None
        self.signum = signum
        self.exit_code = ExitCode.INTERRUPTED_INT if signum == signal.SIGINT else ExitCode.INTERRUPTED_TERM


class NotATargetHost(InstallerError):
    """The configured disk does not exist here: this host is not to be imaged (the original's exit 0)."""

    exit_code = ExitCode.OK
