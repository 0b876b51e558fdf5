"""The suite can reach only loopback: the seed's web server and proxy fail at once, and are never contacted."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from harmonic_installer import cli, config, plan
from tests.conftest import NonLoopbackConnection
from tests.unit.fakes import FakeDisks, FakeRunner, disk


def test_connecting_to_the_seed_web_server_fails_immediately() -> None:
    """A connection to 172.22.31.150:8080 raises at once instead of waiting for a timeout."""
    started = time.monotonic()
    with pytest.raises(NonLoopbackConnection), socket.create_connection(("172.22.31.150", 8080), timeout=30):
        pass
    assert time.monotonic() - started < 1


def test_resolving_the_seed_proxy_fails_immediately() -> None:
    """Looking up proxy4.spoc.charterlab.com raises at once (no DNS query leaves the machine)."""
    with pytest.raises(NonLoopbackConnection):
        socket.getaddrinfo("proxy4.spoc.charterlab.com", 8080)


def test_loopback_is_allowed() -> None:
    """127.0.0.0/8 and ::1 stay reachable (a refused connection, not a guard error)."""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.3", 9), timeout=5)


def test_install_with_seed_defaults_fails_fast_without_contact(tmp_path: Path) -> None:
    """An install left on the seed's defaults cannot reach 172.22.31.150 from a test: it fails in seconds."""
    environ = {
        "HARMONIC_PATHS_WORKING_DIR": str(tmp_path / "w"),
        "HARMONIC_PATHS_ISO_DIR": str(tmp_path / "d"),
        "HARMONIC_PATHS_STATE_DIR": str(tmp_path / "s"),
        "HARMONIC_DOWNLOAD_ATTEMPTS": "1",
    }
    settings = config.load(environ=environ, cmdline="", run=config.RunFlags(install=True, proxy=True))
    assert settings.server.url == config.SEED_SERVER_URL
    runner = FakeRunner()
    started = time.monotonic()
    try:
        d = plan.Deps(
            runner=runner, disks=FakeDisks([disk()]), environ={}, geteuid=lambda: 0, reboot_marker=tmp_path / "r"
        )
        report = plan.run(settings, d)
        assert report.exit_code != 0
        assert report.failed_step == "download"
    except NonLoopbackConnection:
        pass  # the guard's own error surfaced: equally a failure, not a wait
    assert time.monotonic() - started < 10
    assert runner.calls == []


def test_plan_mode_and_help_open_no_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """`harmonic-install`, `-p` and `-h` never open a socket."""
    opened: list[object] = []
    real = socket.socket.connect

    def spy(self: socket.socket, address: object) -> None:
        opened.append(address)
        real(self, address)  # type: ignore[arg-type]  # a spy: the address passed through

    monkeypatch.setattr(socket.socket, "connect", spy)
    factory = lambda s: plan.Deps(runner=FakeRunner(), disks=FakeDisks([disk()]), environ={}, geteuid=lambda: 0)  # noqa: E731
    assert cli.main([], deps_factory=factory) == 0
    assert cli.main(["-p"], deps_factory=factory) == 0
    assert cli.main(["-h"], deps_factory=factory) == 0
    assert opened == []
