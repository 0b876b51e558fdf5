"""download/policy.py: what is retried, how long it waits (Retry-After, backoff), when it stops."""

from __future__ import annotations

import ssl
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from harmonic_installer import config
from harmonic_installer.download import (
    ArtifactSpec,
    DownloadPolicy,
)
from harmonic_installer.download.policy import Transient, transport_error
from harmonic_installer.errors import DownloadError
from tests.support.faults import Reply, ScriptedServer
from tests.unit.download.kit import (
    CONTENT,
    SHA,
    FakeClock,
    downloader,
    events,
    policy,
    spec_for,
)


def test_503_burst_honours_retry_after_seconds(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """503s with Retry-After are retried after the server's delay (plus bounded jitter), each retry logged."""
    srv.add(
        "/p/a.deb",
        CONTENT,
        script=[
            Reply(status=503, body=b"busy", headers={"Retry-After": "7"}),
            Reply(status=503, body=b"busy", headers={"Retry-After": "3"}),
        ],
    )
    with capture_logs() as logs, downloader(clock) as dl:
        art = dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None))
    assert art.path.read_bytes() == CONTENT
    assert 7 <= clock.sleeps[0] <= 7 + 1.75
    assert 3 <= clock.sleeps[1] <= 3 + 1
    retries = events(logs, "download.retry_scheduled")
    assert [r["attempt"] for r in retries] == [1, 2]
    assert "503" in retries[0]["error"]


def test_retry_after_http_date_is_measured_against_the_server_date(
    srv: ScriptedServer, tmp_path: Path, clock: FakeClock
) -> None:
    """Retry-After as an HTTP-date waits the difference to the server's Date header (local clock may be wrong)."""
    server_now = 1_600_000_000
    headers = {"Date": formatdate(server_now, usegmt=True), "Retry-After": formatdate(server_now + 20, usegmt=True)}
    srv.add("/p/a.deb", CONTENT, script=[Reply(status=503, body=b"", headers=headers)])
    with downloader(clock) as dl:
        dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None))
    assert 20 <= clock.sleeps[0] <= 20 + 5


def test_retry_after_is_capped(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """A huge Retry-After is capped at retry_after_max_s."""
    srv.add("/p/a.deb", CONTENT, script=[Reply(status=429, body=b"", headers={"Retry-After": "86400"})])
    with downloader(clock, pol=policy(retry_after_max_s=30.0)) as dl:
        dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None))
    assert 30 <= clock.sleeps[0] <= 30 + 7.5


def test_backoff_is_full_jitter_exponential_and_capped(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """Without Retry-After, waits are random in [0, min(max, initial*2^n)], and all attempts are used."""
    srv.add("/p/a.deb", CONTENT, script=[Reply(status=500, body=b"")] * 6)
    pol = policy(attempts=6, backoff_initial_s=1.0, backoff_max_s=4.0)
    with capture_logs() as logs, downloader(clock, pol=pol) as dl, pytest.raises(DownloadError) as err:
        dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None))
    assert len(srv.hits("/p/a.deb")) == 6
    assert len(clock.sleeps) == 5
    for n, slept in enumerate(clock.sleeps):
        assert 0 <= slept <= min(4.0, 2.0**n)
    assert "server answered 500" in str(err.value)
    assert "gave up after 6 attempts" in str(err.value)
    assert len(events(logs, "download.retry_scheduled")) == 5


def test_wall_time_budget_stops_retries(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """No attempt starts after max_time_s: the retry whose wait would cross the budget is not made."""
    srv.add("/p/a.deb", CONTENT, script=[Reply(status=503, body=b"", headers={"Retry-After": "40"})] * 10)
    pol = policy(attempts=10, max_time_s=100.0)
    with downloader(clock, pol=pol) as dl, pytest.raises(DownloadError, match="gave up after 3 attempts"):
        dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None))
    assert len(srv.hits("/p/a.deb")) == 3
    assert sum(clock.sleeps) < 100


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
def test_other_4xx_fail_at_once(srv: ScriptedServer, tmp_path: Path, clock: FakeClock, status: int) -> None:
    """A 4xx other than 408/429 fails on the first attempt, naming the URL and the status."""
    srv.add("/p/a.deb", CONTENT, script=[Reply(status=status, body=b"no")])
    with downloader(clock) as dl, pytest.raises(DownloadError) as err:
        dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None))
    assert str(err.value).startswith(f"downloading {srv.url}/p/a.deb: server answered {status}")
    assert clock.sleeps == []
    assert len(srv.hits("/p/a.deb")) == 1


def test_408_is_retried(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """408 Request Timeout is retried like a 5xx."""
    srv.add("/p/a.deb", CONTENT, script=[Reply(status=408, body=b"")])
    with downloader(clock) as dl:
        assert dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None)).sha256 == SHA
    assert len(srv.hits("/p/a.deb")) == 2


def test_connection_refused_is_retried_then_fails(tmp_path: Path, clock: FakeClock) -> None:
    """Connection errors are retried up to the attempt budget, then fail with the last error named."""
    spec = ArtifactSpec(url="http://127.0.0.1:9/a.deb", dest_dir=tmp_path, filename="a.deb", sha256=SHA)
    with downloader(clock, pol=policy(attempts=3)) as dl, pytest.raises(DownloadError) as err:
        dl.fetch(spec)
    assert "ConnectError" in str(err.value)
    assert "gave up after 3 attempts" in str(err.value)


def test_policy_from_settings() -> None:
    """DownloadPolicy.from_settings maps the download.* settings (margin MiB to bytes)."""
    settings = config.load(environ={"HARMONIC_DOWNLOAD_ATTEMPTS": "3"}, cmdline="")
    pol = DownloadPolicy.from_settings(settings)
    assert pol.attempts == 3
    assert pol.free_space_margin_bytes == settings.download.free_space_margin_mib * 1024 * 1024
    assert (pol.stall_min_rate, pol.sums_name, pol.keyring) == (settings.download.stall_min_rate, "SHA256SUMS", None)


def test_transport_errors_map_to_retry_or_fail() -> None:
    """Timeouts and network errors are retried; a certificate failure and other httpx errors are not."""
    assert isinstance(transport_error(httpx.ReadTimeout("slow"), "u"), Transient)
    assert transport_error(httpx.ConnectError(""), "u").args[0] == "ConnectError"
    tls = httpx.ConnectError("handshake")
    tls.__cause__ = ssl.SSLCertVerificationError("CERTIFICATE_VERIFY_FAILED")
    failed = transport_error(tls, "http://h/a")
    assert isinstance(failed, DownloadError)
    assert "TLS verification failed" in str(failed)
    other = transport_error(httpx.UnsupportedProtocol("ftp"), "http://h/a")
    assert isinstance(other, DownloadError)
    assert str(other) == "downloading http://h/a: UnsupportedProtocol: ftp"
