"""download/request.py: stale keep-alive resends, per-hop proxy decisions and 407, against loopback servers."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from harmonic_installer.download import ArtifactSpec, Downloader
from harmonic_installer.errors import DownloadError, ExitCode
from harmonic_installer.proxy import ProxyConfig
from tests.support.faults import Reply, ScriptedServer
from tests.support.relay import ClosingRelay
from tests.unit.download.kit import FakeClock, policy

CONTENT = bytes(range(256)) * 400
SHA = hashlib.sha256(CONTENT).hexdigest()
ISO = "APOLLO_PLATFORM-release-3.22.0.0-1+auto3.iso"


@pytest.fixture
def srv() -> Iterator[ScriptedServer]:
    with ScriptedServer() as server:
        yield server


def direct() -> ProxyConfig:
    return ProxyConfig(enabled=False, url=None, no_proxy=())


def iso_spec(base: str, dest: Path) -> ArtifactSpec:
    return ArtifactSpec(
        url=f"{base}/apollo/latest",
        dest_dir=dest,
        filename="APOLLO_PLATFORM-release-3.21.3.0-7+auto15.iso",
        sha256=SHA,
        adopt_server_name=True,
    )


def serve_latest(srv: ScriptedServer, redirects: int = 1) -> None:
    srv.add(f"/apollo/{ISO}", CONTENT)
    srv.add(
        "/apollo/latest",
        b"",
        script=[Reply(status=302, body=b"", headers={"Location": f"/apollo/{ISO}"}) for _ in range(redirects)],
    )


def events(logs: Sequence[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


def test_redirect_on_a_connection_closed_late_is_resent_on_a_new_one(srv: ScriptedServer, tmp_path: Path) -> None:
    """A redirect hop that dies on the reused, already-closing connection is sent again at once: no attempt lost."""
    serve_latest(srv)
    clock = FakeClock()
    with (
        ClosingRelay(("127.0.0.1", srv.port), close_after_response=True) as relay,
        capture_logs() as logs,
        Downloader(policy(attempts=1), direct(), clock=clock, sleep=clock.sleep) as dl,
    ):
        art = dl.fetch(iso_spec(relay.url, tmp_path))
    assert art.path.name == ISO
    assert art.path.read_bytes() == CONTENT
    [resent] = events(logs, "download.resent")
    assert "Server disconnected without sending a response" in resent["error"]
    assert events(logs, "download.retry_scheduled") == []
    assert clock.sleeps == []
    assert relay.swallowed >= 1
    assert relay.accepted == 2


def test_a_failure_on_a_new_connection_is_not_resent(tmp_path: Path) -> None:
    """Only a reused connection earns the free resend: a fresh one that dies is an ordinary attempt."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted = []

    def serve() -> None:
        listener.settimeout(5)
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)
            conn.recv(65536)
            conn.close()  # no response at all, on a brand-new connection

    threading.Thread(target=serve, daemon=True).start()
    clock = FakeClock()
    spec = ArtifactSpec(url=f"http://127.0.0.1:{port}/a.deb", dest_dir=tmp_path, filename="a.deb", sha256=SHA)
    with (
        capture_logs() as logs,
        Downloader(policy(attempts=2), direct(), clock=clock, sleep=clock.sleep) as dl,
        pytest.raises(DownloadError),
    ):
        dl.fetch(spec)
    listener.close()
    assert events(logs, "download.resent") == []
    assert len(accepted) == 2


def test_each_redirect_hop_takes_its_own_proxy_decision(srv: ScriptedServer, tmp_path: Path) -> None:
    """'latest' answered through the proxy, its redirect to a no_proxy host goes direct (CIDR entry)."""
    srv.add(f"/apollo/{ISO}", CONTENT)
    with ScriptedServer() as proxy:
        proxy.add(
            "/apollo/latest",
            b"",
            script=[Reply(status=302, body=b"", headers={"Location": f"http://127.0.0.1:{srv.port}/apollo/{ISO}"})],
        )
        config = ProxyConfig(enabled=True, url=proxy.url, no_proxy=("127.0.0.0/8",))
        spec = iso_spec("http://files.example.test", tmp_path)
        clock = FakeClock()
        with Downloader(policy(), config, clock=clock, sleep=clock.sleep) as dl:
            art = dl.fetch(spec)
        assert [r.path for r in proxy.requests] == ["http://files.example.test/apollo/latest"]
    assert art.path.name == ISO
    assert [r.path for r in srv.requests] == [f"/apollo/{ISO}"]


def test_a_redirect_into_the_proxy_range_uses_the_proxy(srv: ScriptedServer, tmp_path: Path) -> None:
    """A direct first hop redirected to a host outside no_proxy goes through the proxy for that hop."""
    srv.add(f"/apollo/{ISO}", CONTENT)
    srv.add(
        "/apollo/latest",
        b"",
        script=[Reply(status=302, body=b"", headers={"Location": f"http://mirror.example.test/apollo/{ISO}"})],
    )
    config = ProxyConfig(enabled=True, url=srv.url, no_proxy=("127.0.0.1",))
    clock = FakeClock()
    with Downloader(policy(), config, clock=clock, sleep=clock.sleep) as dl:
        art = dl.fetch(iso_spec(srv.url, tmp_path))
    assert art.path.read_bytes() == CONTENT
    assert [r.path for r in srv.requests] == ["/apollo/latest", f"http://mirror.example.test/apollo/{ISO}"]


def test_407_from_the_proxy_is_not_retried_and_names_the_proxy(srv: ScriptedServer, tmp_path: Path) -> None:
    """A 407 is one DownloadError (exit 4) naming the proxy without its password, after a single request."""
    srv.add("/a.deb", b"", script=[Reply(status=407, body=b"auth\n") for _ in range(5)])
    proxy_url = f"http://ops:s3cret@127.0.0.1:{srv.port}"
    config = ProxyConfig(enabled=True, url=proxy_url, no_proxy=())
    spec = ArtifactSpec(url="http://files.example.test/a.deb", dest_dir=tmp_path, filename="a.deb", sha256=SHA)
    clock = FakeClock()
    with (
        Downloader(policy(attempts=5), config, clock=clock, sleep=clock.sleep) as dl,
        pytest.raises(DownloadError) as err,
    ):
        dl.fetch(spec)
    message = str(err.value)
    assert err.value.exit_code == ExitCode.DOWNLOAD
    assert "407" in message
    assert f"http://***@127.0.0.1:{srv.port}" in message
    assert "s3cret" not in message
    assert "proxy.url" in message
    assert len(srv.requests) == 1


def test_407_to_a_connect_request_is_not_retried(srv: ScriptedServer, tmp_path: Path) -> None:
    """An https URL tunnelled with CONNECT and refused with 407 fails at once naming the proxy."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[bytes] = []

    def serve() -> None:
        listener.settimeout(5)
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            seen.append(conn.recv(65536))
            conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    config = ProxyConfig(enabled=True, url=f"http://u:pw@127.0.0.1:{port}", no_proxy=())
    spec = ArtifactSpec(url="https://files.example.test/a.deb", dest_dir=tmp_path, filename="a.deb", sha256=SHA)
    clock = FakeClock()
    with (
        Downloader(policy(attempts=4), config, clock=clock, sleep=clock.sleep) as dl,
        pytest.raises(DownloadError) as err,
    ):
        dl.fetch(spec)
    listener.close()
    assert "407" in str(err.value)
    assert f"http://***@127.0.0.1:{port}" in str(err.value)
    assert len(seen) == 1
    assert seen[0].startswith(b"CONNECT files.example.test:443")


def test_redirect_loop_fails_at_once(srv: ScriptedServer, tmp_path: Path) -> None:
    """A redirect back to a URL already visited is an error naming the loop, not retried."""
    srv.add("/a.deb", b"", script=[Reply(status=302, body=b"", headers={"Location": "/b.deb"})])
    srv.add("/b.deb", b"", script=[Reply(status=302, body=b"", headers={"Location": "/a.deb"})])
    spec = ArtifactSpec(url=f"{srv.url}/a.deb", dest_dir=tmp_path, filename="a.deb", sha256=SHA)
    clock = FakeClock()
    with Downloader(policy(), direct(), clock=clock, sleep=clock.sleep) as dl, pytest.raises(DownloadError) as err:
        dl.fetch(spec)
    assert "redirect loop" in str(err.value)
    assert len(srv.requests) == 2


def test_identical_failures_on_new_connections_are_blamed_on_the_server(srv: ScriptedServer, tmp_path: Path) -> None:
    """The same 503 on every attempt: the final line says what was tried, on how many connections, the last
    status, and that it is the server's problem, not a flaky network."""
    srv.add("/a.deb", b"", script=[Reply(status=503, body=b"busy\n", headers={"Connection": "close"})] * 3)
    spec = ArtifactSpec(url=f"{srv.url}/a.deb", dest_dir=tmp_path, filename="a.deb", sha256=SHA)
    clock = FakeClock()
    with (
        Downloader(policy(attempts=3), direct(), clock=clock, sleep=clock.sleep) as dl,
        pytest.raises(DownloadError) as err,
    ):
        dl.fetch(spec)
    line = str(err.value)
    assert "gave up after 3 attempts on 3 new connections" in line
    assert "last HTTP status 503" in line
    assert "not a flaky network" in line
    assert "web server" in line


def test_varied_failures_are_blamed_on_the_network(srv: ScriptedServer, tmp_path: Path) -> None:
    """A 503, then a cut body, then a 502: the final line says the failures varied and points at the network."""
    srv.add(
        "/a.deb",
        CONTENT,
        script=[
            Reply(status=503, body=b"busy\n"),
            Reply(cut_after=1000, headers={"ETag": '"v"'}),
            Reply(status=502, body=b"bad gateway\n"),
        ],
    )
    spec = ArtifactSpec(url=f"{srv.url}/a.deb", dest_dir=tmp_path, filename="a.deb", sha256=SHA)
    clock = FakeClock()
    with (
        Downloader(policy(attempts=3), direct(), clock=clock, sleep=clock.sleep) as dl,
        pytest.raises(DownloadError) as err,
    ):
        dl.fetch(spec)
    line = str(err.value)
    assert "gave up after 3 attempts" in line
    assert "last HTTP status 502" in line
    assert "the failures varied" in line
    assert "network" in line
