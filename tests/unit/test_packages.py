"""packages: what dpkg-query says about a package that is not installed is an answer, not an error."""

from __future__ import annotations

from structlog.testing import capture_logs

from harmonic_installer import packages
from harmonic_installer.runner import SubprocessRunner


def test_package_not_installed_is_none_and_logs_no_error() -> None:
    """The real dpkg-query on a package that is not installed gives None and no error- or warning-level event."""
    with capture_logs() as logs:
        version = packages.installed_version(SubprocessRunner(), "harmonic-e2e-no-such-package")
    assert version is None
    assert [e for e in logs if e["log_level"] in {"error", "warning", "critical"}] == []
    (finished,) = [e for e in logs if e["event"] == "command.finished"]
    assert finished["argv"][0] == "dpkg-query"
    assert finished["rc"] != 0
