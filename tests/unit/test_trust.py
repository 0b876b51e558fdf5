"""Trust edges in isolation: directories other users control, credentials on the command line, redaction."""

from __future__ import annotations

import os
from pathlib import Path

from harmonic_installer import config, plan, preview
from harmonic_installer.trust import directory_problem
from tests.unit.fakes import FakeDisks, FakeRunner


def test_directory_problem(tmp_path: Path) -> None:
    """Owned by another user, or writable by everyone without the sticky bit (itself or a parent): a problem."""
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    assert directory_problem(mine) is None
    assert directory_problem(mine / "not" / "yet") is None  # judged by its existing parents
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    assert directory_problem(shared) is None  # sticky, like /tmp: others cannot replace our files
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    assert "writable by every user" in (directory_problem(open_dir / "data") or "")
    if os.geteuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir()
        os.chown(theirs, 65534, 65534)
        assert "owned by uid 65534" in (directory_problem(theirs) or "")


def test_credentials_in_flags_are_found_and_only_there() -> None:
    """A URL with user:password from a flag is reported; the same from the environment is not."""
    url = "http://alice:pw@127.0.0.1:3128"
    by_flag = config.load(flags={"proxy.url": url}, cmdline="")
    by_env = config.load(environ={"HARMONIC_PROXY_URL": url}, cmdline="")
    assert config.credentials_in_flags(by_flag) == ["proxy.url"]
    assert config.credentials_in_flags(by_env) == []


def test_settings_and_plan_redact_server_credentials() -> None:
    """`settings` and the plan show server.url's user:password as ***, SHA256SUMS URLs included."""
    settings = config.load(environ={"HARMONIC_SERVER_URL": "http://bob:s3cret@127.0.0.1:9"}, cmdline="")
    shown = " ".join(v for _, v, _ in config.effective(settings))
    assert "s3cret" not in shown
    assert "***@127.0.0.1:9" in shown
    report = preview.preview(settings, plan.Deps(runner=FakeRunner(), disks=FakeDisks([]), environ={}))
    assert "s3cret" not in str(report.to_dict())
