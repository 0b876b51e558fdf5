"""packages: every dpkg command the install runs has a time limit."""

from __future__ import annotations

from pathlib import Path

from harmonic_installer import plan
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
