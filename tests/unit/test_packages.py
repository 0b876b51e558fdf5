"""packages: every dpkg command has a time limit; dpkg-query's "not installed" is an answer, not an error."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from harmonic_installer import packages, plan
from harmonic_installer.runner import SubprocessRunner
from tests.unit.test_plan import Site, deps, make_settings, make_world, site  # noqa: F401 - fixture


def test_every_dpkg_command_runs_with_a_timeout(site: Site, tmp_path: Path) -> None:  # noqa: F811
    """dpkg-deb, dpkg-query and dpkg each get a finite timeout: a hung dpkg lock cannot stall the run forever."""
    world = make_world()
    report = plan.run(make_settings(site, tmp_path), deps(world, tmp_path))
    assert report.exit_code == 0, report.error
    runner = world.runner
    dpkg_calls = [(c[0], t) for c, t in zip(runner.calls, runner.timeouts, strict=True) if c[0].startswith("dpkg")]
    assert {name for name, _ in dpkg_calls} == {"dpkg-deb", "dpkg-query", "dpkg"}
    assert all(t is not None and 0 < t < 24 * 3600 for _, t in dpkg_calls), dpkg_calls


def test_package_not_installed_is_none_and_logs_no_error() -> None:
    """The real dpkg-query on a package that is not installed gives None and no error- or warning-level event."""
    with capture_logs() as logs:
        version = packages.installed_version(SubprocessRunner(), "harmonic-e2e-no-such-package")
    assert version is None
    assert [e for e in logs if e["log_level"] in {"error", "warning", "critical"}] == []
    (finished,) = [e for e in logs if e["event"] == "command.finished"]
    assert finished["argv"][0] == "dpkg-query"
    assert finished["rc"] != 0
