"""download.py against a real nginx, with a fault-injecting TCP proxy in front of it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from harmonic_installer.download import SOURCE_SUMS, ArtifactSpec, Downloader, DownloadPolicy
from harmonic_installer.errors import ChecksumError, DownloadError, ExitCode
from harmonic_installer.proxy import ProxyConfig
from tests.support.faults import Fault, FaultProxy, content_length_plus
from tests.support.nginx import Nginx, free_port, serve

pytestmark = pytest.mark.integration

SIZE = 4 * 1024 * 1024
DATA = os.urandom(SIZE)
SHA = hashlib.sha256(DATA).hexdigest()
ISO = "APOLLO_PLATFORM-release-3.22.1.0-2+auto9.iso"
READ_BUFFER = 64 * 1024  # httpcore's read size: the most a cut can cost
DIRECT = ProxyConfig(enabled=False, url=None, no_proxy=())
DRIVER = Path(__file__).resolve().parents[1] / "support" / "download_driver.py"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    root = tmp_path_factory.mktemp("www") / "root"
    (root / "apollo").mkdir(parents=True)
    (root / "slow").mkdir()
    (root / "apollo" / ISO).write_bytes(DATA)
    (root / "apollo" / "SHA256SUMS").write_text(f"{SHA}  {ISO}\n")
    (root / "slow" / "big.iso").write_bytes(DATA)
    extra = f"""
        location = /apollo/latest {{ return 302 /apollo/{ISO}; }}
        location /slow/ {{ limit_rate 16k; }}
    """
    with serve(root, extra_server=extra) as nginx:
        yield nginx


@pytest.fixture
def proxy(web: Nginx) -> Iterator[FaultProxy]:
    with FaultProxy(web.host, web.port) as fp:
        yield fp


def policy(**overrides: Any) -> DownloadPolicy:
    values: dict[str, Any] = {
        "attempts": 6,
        "max_time_s": 60.0,
        "connect_timeout_s": 2.0,
        "read_timeout_s": 2.0,
        "stall_min_rate": 0,
        "stall_window_s": 5.0,
        "backoff_max_s": 0.05,
        "backoff_initial_s": 0.01,
        "free_space_margin_bytes": 0,
        "allow_unverified": False,
        "keyring": None,
        "ca_file": None,
        "sums_name": "SHA256SUMS",
    }
    values.update(overrides)
    return DownloadPolicy(**values)


def iso_spec(base: str, dest: Path, **kw: Any) -> ArtifactSpec:
    kw.setdefault("sha256", SHA)
    return ArtifactSpec(url=f"{base}/apollo/{ISO}", dest_dir=dest, filename=ISO, **kw)


def events(logs: Sequence[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


def statuses(web: Nginx, path: str) -> list[int]:
    return [int(line.split('"')[2].split()[0]) for line in web.requests() if f"GET {path} " in line]


@pytest.mark.parametrize("offset", [0, 1, 4095, 65_536, 1_000_003, SIZE // 2, SIZE - 1])
def test_cut_at_any_offset_resumes_and_verifies(web: Nginx, proxy: FaultProxy, tmp_path: Path, offset: int) -> None:
    """A connection cut after N body bytes is resumed by range; at most one read buffer is transferred twice."""
    proxy.plan(Fault("cut", after=offset))
    with capture_logs() as logs, Downloader(policy(), DIRECT) as dl:
        art = dl.fetch(iso_spec(proxy.url, tmp_path))
    assert art.path.read_bytes() == DATA
    assert SIZE <= art.bytes_transferred <= SIZE + READ_BUFFER
    assert len(events(logs, "download.retry_scheduled")) == 1
    if offset >= READ_BUFFER:
        assert events(logs, "download.resumed")[0]["offset"] >= offset - READ_BUFFER


def test_many_cuts_in_one_download(web: Nginx, proxy: FaultProxy, tmp_path: Path) -> None:
    """Three cuts in a row are three resumes (nginx answers 206), and the file verifies."""
    proxy.plan(Fault("cut", after=300_000), Fault("cut", after=700_000), Fault("cut", after=1_500_000))
    before = len(statuses(web, f"/apollo/{ISO}"))
    with capture_logs() as logs, Downloader(policy(), DIRECT) as dl:
        art = dl.fetch(iso_spec(proxy.url, tmp_path))
    assert art.sha256 == SHA
    assert art.bytes_transferred <= SIZE + 3 * READ_BUFFER
    assert len(events(logs, "download.resumed")) == 3
    assert statuses(web, f"/apollo/{ISO}")[before:] == [200, 206, 206, 206]


def test_reset_mid_body_resumes(web: Nginx, proxy: FaultProxy, tmp_path: Path) -> None:
    """A TCP reset mid-body is retried and resumed."""
    proxy.plan(Fault("reset", after=2_000_000))
    with capture_logs() as logs, Downloader(policy(), DIRECT) as dl:
        art = dl.fetch(iso_spec(proxy.url, tmp_path))
    assert art.sha256 == SHA
    assert art.bytes_transferred <= SIZE + READ_BUFFER
    assert len(events(logs, "download.resumed")) == 1


def test_silent_connection_hits_the_read_timeout_and_resumes(web: Nginx, proxy: FaultProxy, tmp_path: Path) -> None:
    """A connection that goes silent mid-body times out on read and the download resumes."""
    proxy.plan(Fault("stall", after=1_000_000, seconds=30))
    started = time.monotonic()
    with capture_logs() as logs, Downloader(policy(read_timeout_s=0.5), DIRECT) as dl:
        art = dl.fetch(iso_spec(proxy.url, tmp_path))
    assert art.sha256 == SHA
    assert "ReadTimeout" in events(logs, "download.retry_scheduled")[0]["error"]
    assert time.monotonic() - started < 10


def test_trickle_is_aborted_by_the_stall_detector_and_the_part_kept(web: Nginx, tmp_path: Path) -> None:
    """nginx limit_rate below stall_min_rate: each attempt is aborted as stalled; the .part is kept for later."""
    spec = ArtifactSpec(url=f"{web.url}/slow/big.iso", dest_dir=tmp_path, filename="big.iso", sha256=SHA)
    pol = policy(attempts=2, stall_min_rate=256 * 1024, stall_window_s=0.4, read_timeout_s=5.0)
    with capture_logs() as logs, Downloader(pol, DIRECT) as dl, pytest.raises(DownloadError) as err:
        dl.fetch(spec)
    assert "stalled:" in str(err.value)
    assert "gave up after 2 attempts" in str(err.value)
    assert events(logs, "download.retry_scheduled")[0]["error"].startswith("stalled:")
    assert (tmp_path / ".big.iso.part").exists()


def test_announced_length_too_long_is_recovered(web: Nginx, proxy: FaultProxy, tmp_path: Path) -> None:
    """A Content-Length larger than the body leaves the client waiting; the retry finds the file complete (416)."""
    proxy.plan(Fault("rewrite", headers=content_length_plus(1000)))
    with capture_logs() as logs, Downloader(policy(read_timeout_s=0.5), DIRECT) as dl:
        art = dl.fetch(iso_spec(proxy.url, tmp_path))
    assert art.sha256 == SHA
    assert art.bytes_transferred == SIZE
    assert events(logs, "download.resumed")[0]["complete"] is True
    assert statuses(web, f"/apollo/{ISO}")[-1] == 416


def test_announced_length_too_short_is_caught_by_the_checksum(web: Nginx, proxy: FaultProxy, tmp_path: Path) -> None:
    """A Content-Length smaller than the file gives a short copy: checksum mismatch, fetched again from zero."""
    proxy.plan(Fault("rewrite", headers=content_length_plus(-1000)))
    with capture_logs() as logs, Downloader(policy(), DIRECT) as dl:
        art = dl.fetch(iso_spec(proxy.url, tmp_path))
    assert art.sha256 == SHA
    assert art.bytes_transferred == 2 * SIZE - 1000
    assert len(events(logs, "download.checksum_mismatch")) == 1


def test_corrupted_byte_is_refetched_once(web: Nginx, proxy: FaultProxy, tmp_path: Path) -> None:
    """One flipped byte fails the checksum; the file is discarded and fetched again from zero."""
    proxy.plan(Fault("corrupt", after=1_234_567))
    with capture_logs() as logs, Downloader(policy(), DIRECT) as dl:
        art = dl.fetch(iso_spec(proxy.url, tmp_path))
    assert art.sha256 == SHA
    assert art.bytes_transferred == 2 * SIZE
    [mismatch] = events(logs, "download.checksum_mismatch")
    assert mismatch["round"] == 1


def test_corruption_every_time_fails_with_exit_4(web: Nginx, proxy: FaultProxy, tmp_path: Path) -> None:
    """Two corrupted copies raise ChecksumError (exit 4); nothing is left in the destination."""
    proxy.plan(Fault("corrupt", after=10), Fault("corrupt", after=3_000_000))
    with Downloader(policy(), DIRECT) as dl, pytest.raises(ChecksumError) as err:
        dl.fetch(iso_spec(proxy.url, tmp_path))
    assert err.value.exit_code == ExitCode.DOWNLOAD
    assert "two downloads in a row" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_latest_redirect_is_saved_under_the_real_name(web: Nginx, tmp_path: Path) -> None:
    """apollo/latest redirecting to the ISO: saved under the real name, checksum from SHA256SUMS, release known."""
    spec = ArtifactSpec(
        url=f"{web.url}/apollo/latest",
        dest_dir=tmp_path,
        filename="APOLLO_PLATFORM-release-3.21.3.0-7+auto15.iso",
        sums_url=f"{web.url}/apollo/SHA256SUMS",
        adopt_server_name=True,
        label="Apollo ISO",
    )
    with Downloader(policy(), DIRECT) as dl:
        art = dl.fetch(spec)
        again = dl.fetch(spec)
    assert art.path == tmp_path / ISO
    assert (art.release, art.checksum_source) == ("release-3.22.1.0-2+auto9", SOURCE_SUMS)
    assert (again.reused, again.path) == (True, art.path)


def test_not_enough_space_on_the_real_filesystem(web: Nginx, tmp_path: Path) -> None:
    """The free-space check uses the real filesystem of dest_dir and fails before writing."""
    with Downloader(policy(free_space_margin_bytes=2**62), DIRECT) as dl, pytest.raises(DownloadError) as err:
        dl.fetch(iso_spec(web.url, tmp_path))
    assert f"not enough space in {tmp_path}" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_resume_after_the_process_is_killed(web: Nginx, proxy: FaultProxy, tmp_path: Path) -> None:
    """A download SIGKILLed mid-way continues in the next process from what reached the disk."""
    proxy.plan(Fault("stall", after=3 * 1024 * 1024, seconds=60))
    url = f"{proxy.url}/apollo/{ISO}"
    argv = [sys.executable, str(DRIVER), url, str(tmp_path), ISO, SHA]
    part = tmp_path / f".{ISO}.part"
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not (part.exists() and part.stat().st_size >= 2 * 1024 * 1024):
            assert time.monotonic() < deadline, "the first run never wrote 2 MiB"
            assert first.poll() is None
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait(timeout=10)
    kept = part.stat().st_size
    assert kept < SIZE
    second = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(second.stdout.strip().splitlines()[-1])
    assert result["sha256"] == SHA
    assert result["bytes_transferred"] == SIZE - kept
    assert Path(result["path"]).read_bytes() == DATA
    assert statuses(web, f"/apollo/{ISO}")[-1] == 206
    assert sorted(p.name for p in tmp_path.iterdir()) == [ISO]


@pytest.fixture
def tinyproxy(tmp_path: Path) -> Iterator[str]:
    """A real HTTP proxy (tinyproxy) on a loopback port; yields its URL."""
    port = free_port()
    conf = tmp_path / "tinyproxy.conf"
    conf.write_text(
        f"Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 10\nAllow 127.0.0.1\nDisableViaHeader Yes\n"
        f'LogFile "{tmp_path / "tinyproxy.log"}"\nLogLevel Info\n'
    )
    proc = subprocess.Popen(["tinyproxy", "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, "tinyproxy exited at start-up"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "tinyproxy did not start listening"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_resume_through_a_real_proxy(web: Nginx, tinyproxy: str, tmp_path: Path) -> None:
    """Through tinyproxy (proxy decision from ProxyConfig), a cut download resumes: Range reaches nginx as 206."""
    with FaultProxy("127.0.0.1", int(tinyproxy.rsplit(":", 1)[1]), [Fault("cut", after=1_500_000)]) as cutter:
        proxy = ProxyConfig(enabled=True, url=cutter.url, no_proxy=("localhost",))
        with capture_logs() as logs, Downloader(policy(), proxy) as dl:
            art = dl.fetch(iso_spec(web.url, tmp_path))
    assert art.sha256 == SHA
    assert art.bytes_transferred <= SIZE + READ_BUFFER
    assert events(logs, "download.started")[0]["proxy"] == cutter.url
    assert statuses(web, f"/apollo/{ISO}")[-2:] == [200, 206]
