"""download.py against a scripted stdlib HTTP server and httpx.MockTransport (no nginx, no sleeps)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import ssl
import stat
import subprocess
from collections.abc import Callable, Iterator, Sequence
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from harmonic_installer import config
from harmonic_installer.download import (
    SOURCE_NONE,
    SOURCE_PINNED,
    SOURCE_SUMS,
    SOURCE_SUMS_GPG,
    ArtifactSpec,
    Downloader,
    DownloadPolicy,
    ProgressBar,
    VerifiedArtifact,
)
from harmonic_installer.errors import ChecksumError, DownloadError, ExitCode
from harmonic_installer.proxy import ProxyConfig
from harmonic_installer.runner import CommandResult, SubprocessRunner
from tests.support.faults import Reply, ScriptedServer

CONTENT = bytes(range(256)) * 1200  # 307,200 bytes: several read buffers
SHA = hashlib.sha256(CONTENT).hexdigest()
ISO_NAME = "APOLLO_PLATFORM-release-3.22.0.0-1+auto3.iso"


def Direct() -> ProxyConfig:
    """Proxy decision: connect directly."""
    return ProxyConfig(enabled=False, url=None, no_proxy=())


def ViaProxy(proxy: str) -> ProxyConfig:
    """Proxy decision: always use `proxy`."""
    return ProxyConfig(enabled=True, url=proxy, no_proxy=())


class FakeClock:
    """A monotonic clock that only moves when slept on (or told to)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def policy(**overrides: Any) -> DownloadPolicy:
    values: dict[str, Any] = {
        "attempts": 4,
        "max_time_s": 600.0,
        "connect_timeout_s": 2.0,
        "read_timeout_s": 2.0,
        "stall_min_rate": 0,
        "stall_window_s": 5.0,
        "backoff_max_s": 2.0,
        "free_space_margin_bytes": 0,
        "allow_unverified": False,
        "keyring": None,
        "ca_file": None,
        "sums_name": "SHA256SUMS",
    }
    values.update(overrides)
    return DownloadPolicy(**values)


@pytest.fixture
def srv() -> Iterator[ScriptedServer]:
    with ScriptedServer() as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def downloader(clock: FakeClock, proxy: Any = None, **kw: Any) -> Downloader:
    pol = kw.pop("pol", None) or policy()
    return Downloader(pol, proxy or Direct(), clock=clock, sleep=clock.sleep, **kw)


def sums_line(name: str, data: bytes = CONTENT, star: bool = False) -> str:
    return f"{hashlib.sha256(data).hexdigest()} {'*' if star else ' '}{name}\n"


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


def spec_for(srv: ScriptedServer, tmp_path: Path, name: str = "a.deb", **kw: Any) -> ArtifactSpec:
    kw.setdefault("sums_url", f"{srv.url}/p/SHA256SUMS")
    return ArtifactSpec(url=f"{srv.url}/p/{name}", dest_dir=tmp_path / "dest", filename=name, **kw)


def url_digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------------------------------------
# Checksums: pinned, SHA256SUMS, none.


def test_pinned_checksum_gives_verified_file_with_modes(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """A pinned SHA-256 download lands as a 0644 file in a new 0755 dir, with no temp files left."""
    srv.add("/p/a.deb", CONTENT)
    spec = spec_for(srv, tmp_path, sha256=SHA, sums_url=None)
    with capture_logs() as logs, downloader(clock) as dl:
        art = dl.fetch(spec)
    assert (art.path, art.url, art.sha256, art.size) == (tmp_path / "dest" / "a.deb", spec.url, SHA, len(CONTENT))
    assert (art.checksum_source, art.reused, art.bytes_transferred, art.release) == (
        SOURCE_PINNED,
        False,
        len(CONTENT),
        None,
    )
    assert art.path.read_bytes() == CONTENT
    assert stat.S_IMODE(art.path.stat().st_mode) == 0o644
    assert stat.S_IMODE(art.path.parent.stat().st_mode) == 0o755
    assert leftovers(art.path.parent) == []
    assert srv.hits("/p/a.deb")[0].headers["accept-encoding"] == "identity"
    assert len(events(logs, "download.verified")) == 1


def test_sha256sums_looked_up_once_for_two_files(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """Two debs in one directory share one SHA256SUMS request; both verify against it (binary '*' form too)."""
    other = b"other deb" * 1000
    srv.add("/p/SHA256SUMS", (sums_line("a.deb") + sums_line("b.deb", other, star=True)).encode())
    srv.add("/p/a.deb", CONTENT)
    srv.add("/p/b.deb", other)
    with downloader(clock) as dl:
        a = dl.fetch(spec_for(srv, tmp_path, "a.deb"))
        b = dl.fetch(spec_for(srv, tmp_path, "b.deb"))
    assert (a.checksum_source, b.checksum_source) == (SOURCE_SUMS, SOURCE_SUMS)
    assert b.path.read_bytes() == other
    assert len(srv.hits("/p/SHA256SUMS")) == 1


def test_missing_sums_fails_before_the_artifact_is_requested(
    srv: ScriptedServer, tmp_path: Path, clock: FakeClock
) -> None:
    """A 404 on SHA256SUMS (no pinned sum, no insecure flag) is exit 4 and the big file is never requested."""
    srv.add("/p/a.deb", CONTENT)
    with downloader(clock) as dl, pytest.raises(DownloadError) as err:
        dl.fetch(spec_for(srv, tmp_path))
    assert err.value.exit_code == ExitCode.DOWNLOAD
    assert "no checksum for a.deb" in str(err.value)
    assert f"{srv.url}/p/SHA256SUMS does not exist (404)" in str(err.value)
    assert srv.hits("/p/a.deb") == []


def test_name_not_listed_fails_before_the_artifact_is_requested(
    srv: ScriptedServer, tmp_path: Path, clock: FakeClock
) -> None:
    """SHA256SUMS that does not list the file is a DownloadError naming the file; nothing is downloaded."""
    srv.add("/p/SHA256SUMS", sums_line("b.deb").encode())
    srv.add("/p/a.deb", CONTENT)
    with downloader(clock) as dl, pytest.raises(DownloadError, match=r"does not list 'a\.deb'"):
        dl.fetch(spec_for(srv, tmp_path))
    assert srv.hits("/p/a.deb") == []


def test_allow_unverified_downloads_with_a_warning(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """With allow_unverified and no SHA256SUMS, the file is fetched and a download.unverified warning logged."""
    srv.add("/p/a.deb", CONTENT)
    with capture_logs() as logs, downloader(clock, pol=policy(allow_unverified=True)) as dl:
        art = dl.fetch(spec_for(srv, tmp_path))
    assert art.checksum_source == SOURCE_NONE
    assert art.sha256 == SHA
    [warning] = events(logs, "download.unverified")
    assert warning["log_level"] == "warning"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"{SHA}  a.deb\nnot a checksum line\n", "line 2 is malformed"),
        (f"{SHA[:-1]}  a.deb\n", "line 1 is malformed"),
        (f"{SHA} a.deb\n", "line 1 is malformed"),
        (f"{SHA}  ../a.deb\n", "line 1 names '../a.deb', which is not a plain file name"),
        (f"{SHA}  dir/a.deb\n", "line 1 names 'dir/a.deb'"),
        (f"{SHA}  a..deb\n", "not a plain file name"),
        (f"{SHA}  a.deb\n{SHA}  a.deb\n", "line 2 lists 'a.deb' a second time"),
        (f"{SHA}  a.deb\r\r\n", "line 1 names 'a.deb\\r', which is not a plain file name"),
        (f"{SHA}  a\r.deb\r\n", "line 1 names 'a\\r.deb'"),
        (f"{SHA}\r  a.deb\r\n", "line 1 is malformed"),
        (f"{SHA}  a.deb\r\n{SHA}  a.deb\n", "line 2 lists 'a.deb' a second time"),
    ],
)
def test_malformed_sha256sums_is_rejected(
    srv: ScriptedServer, tmp_path: Path, clock: FakeClock, text: str, problem: str
) -> None:
    """SHA256SUMS is parsed strictly: a bad line, a path-like name or a duplicate fails, naming the line and file."""
    srv.add("/p/SHA256SUMS", text.encode())
    srv.add("/p/a.deb", CONTENT)
    with downloader(clock) as dl, pytest.raises(DownloadError) as err:
        dl.fetch(spec_for(srv, tmp_path))
    assert problem in str(err.value)
    assert f"{srv.url}/p/SHA256SUMS" in str(err.value)
    assert srv.hits("/p/a.deb") == []


def test_sha256sums_with_windows_line_endings_is_accepted(
    srv: ScriptedServer, tmp_path: Path, clock: FakeClock
) -> None:
    """A CR before each newline (a file written on Windows) is a line ending, not part of the name."""
    srv.add("/p/SHA256SUMS", (sums_line("b.deb", b"other") + sums_line("a.deb")).replace("\n", "\r\n").encode())
    srv.add("/p/a.deb", CONTENT)
    with downloader(clock) as dl:
        art = dl.fetch(spec_for(srv, tmp_path))
    assert art.checksum_source == SOURCE_SUMS
    assert art.sha256 == SHA


# ---------------------------------------------------------------------------------------------------------
# Existing files.


def test_existing_verified_file_is_reused(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """A final file that re-hashes to the expected sum is reused: reused=True, nothing transferred or requested."""
    srv.add("/p/a.deb", CONTENT)
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "a.deb").write_bytes(CONTENT)
    with capture_logs() as logs, downloader(clock) as dl:
        art = dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None))
    assert (art.reused, art.bytes_transferred) == (True, 0)
    assert srv.requests == []
    assert len(events(logs, "download.reused")) == 1


def test_existing_bad_file_is_replaced(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """A final file that does not verify is discarded and downloaded again."""
    srv.add("/p/a.deb", CONTENT)
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "a.deb").write_bytes(b"stale")
    with capture_logs() as logs, downloader(clock) as dl:
        art = dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None))
    assert (art.reused, art.bytes_transferred) == (False, len(CONTENT))
    assert art.path.read_bytes() == CONTENT
    assert len(events(logs, "download.existing_mismatch")) == 1


# ---------------------------------------------------------------------------------------------------------
# Retry policy.


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


# ---------------------------------------------------------------------------------------------------------
# Resume.


def test_cut_body_resumes_with_range_and_if_range(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """After a cut, the next request asks only for the rest (Range + If-Range: ETag); nothing is fetched twice."""
    srv.add("/p/a.deb", CONTENT, script=[Reply(cut_after=100_000)])
    with capture_logs() as logs, downloader(clock) as dl:
        art = dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None))
    assert art.path.read_bytes() == CONTENT
    first, second = srv.hits("/p/a.deb")
    assert "range" not in first.headers
    assert second.headers["range"] == "bytes=100000-"
    assert second.headers["if-range"].startswith('"')
    assert art.bytes_transferred == len(CONTENT)
    assert [e["offset"] for e in events(logs, "download.resumed")] == [100_000]


def test_resume_uses_last_modified_without_etag(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """Without an ETag, If-Range carries Last-Modified."""
    srv.add("/p/a.deb", CONTENT, etag=False, script=[Reply(cut_after=5000)])
    with downloader(clock) as dl:
        dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None))
    assert srv.hits("/p/a.deb")[1].headers["if-range"] == formatdate(1_700_000_000, usegmt=True)


def test_no_validator_means_no_resume(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """Without ETag or Last-Modified a cut restarts from zero (a Range could splice two versions)."""
    srv.add("/p/a.deb", CONTENT, etag=False, last_modified=False, script=[Reply(cut_after=5000)])
    with capture_logs() as logs, downloader(clock) as dl:
        art = dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None))
    assert "range" not in srv.hits("/p/a.deb")[1].headers
    assert art.bytes_transferred == len(CONTENT) + 5000
    assert len(events(logs, "download.resume_unavailable")) == 1


def test_server_ignoring_range_restarts_from_zero(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """A 200 answer to a Range request truncates the partial file and takes the whole body."""
    srv.add("/p/a.deb", CONTENT, script=[Reply(cut_after=50_000), Reply(ignore_range=True)])
    with capture_logs() as logs, downloader(clock) as dl:
        art = dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None))
    assert art.path.read_bytes() == CONTENT
    assert art.bytes_transferred == 50_000 + len(CONTENT)
    assert events(logs, "download.restarted")[0]["discarded"] == 50_000


def test_resume_across_runs_from_part_and_sidecar(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """A run that gives up keeps a 0600 .part and sidecar; the next run continues from there."""
    srv.add("/p/a.deb", CONTENT, script=[Reply(cut_after=120_000)])
    spec = spec_for(srv, tmp_path, sha256=SHA, sums_url=None)
    with downloader(clock, pol=policy(attempts=1)) as dl, pytest.raises(DownloadError, match="RemoteProtocolError"):
        dl.fetch(spec)
    part, meta = spec.dest_dir / ".a.deb.part", spec.dest_dir / ".a.deb.part.json"
    assert part.stat().st_size == 120_000
    assert stat.S_IMODE(part.stat().st_mode) == stat.S_IMODE(meta.stat().st_mode) == 0o600
    assert json.loads(meta.read_text())["url_sha256"] == url_digest(spec.url)
    with downloader(clock) as dl:
        art = dl.fetch(spec)
    assert art.bytes_transferred == len(CONTENT) - 120_000
    assert leftovers(spec.dest_dir) == []


def test_416_with_matching_size_means_complete(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """A complete .part left by a killed run is confirmed by 416 (bytes */size), re-hashed and published."""
    srv.add("/p/a.deb", CONTENT)
    spec = spec_for(srv, tmp_path, sha256=SHA, sums_url=None)
    spec.dest_dir.mkdir()
    (spec.dest_dir / ".a.deb.part").write_bytes(CONTENT)
    etag = f'"{SHA[:16]}"'
    (spec.dest_dir / ".a.deb.part.json").write_text(json.dumps({"url_sha256": url_digest(spec.url), "validator": etag}))
    with downloader(clock) as dl:
        art = dl.fetch(spec)
    assert (art.sha256, art.bytes_transferred) == (SHA, 0)
    assert srv.hits("/p/a.deb")[0].headers["range"] == f"bytes={len(CONTENT)}-"


def test_sidecar_keeps_no_credentials(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """The resume sidecar identifies the URL by digest and shows it redacted: no password on disk."""
    srv.add("/p/a.deb", CONTENT, script=[Reply(cut_after=1000)])
    url = srv.url.replace("http://", "http://bob:s3cret@") + "/p/a.deb"
    spec = ArtifactSpec(url=url, dest_dir=tmp_path, filename="a.deb", sha256=SHA)
    with downloader(clock, pol=policy(attempts=1)) as dl, pytest.raises(DownloadError):
        dl.fetch(spec)
    text = (tmp_path / ".a.deb.part.json").read_text()
    assert "s3cret" not in text
    assert json.loads(text)["url_sha256"] == url_digest(url)


def test_latest_resumed_in_a_new_run_keeps_its_real_name(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """A complete .part of 'latest' from a killed run is finished under the name the server gave then (416)."""
    srv.add("/apollo/SHA256SUMS", sums_line(ISO_NAME).encode())
    named = {"Content-Disposition": f'attachment; filename="{ISO_NAME}"'}
    srv.add("/apollo/latest", CONTENT, script=[Reply(headers=named, cut_after=len(CONTENT) - 1)])
    spec = iso_spec(srv, tmp_path)
    with downloader(clock, pol=policy(attempts=1)) as dl, pytest.raises(DownloadError):
        dl.fetch(spec)
    part = spec.dest_dir / f".{spec.filename}.part"
    with part.open("ab") as f:  # the last byte reached the disk just before the kill
        f.write(CONTENT[-1:])
    with downloader(clock) as dl:
        art = dl.fetch(spec)
    assert srv.hits("/apollo/latest")[-1].headers["range"] == f"bytes={len(CONTENT)}-"
    assert (art.path.name, art.bytes_transferred) == (ISO_NAME, 0)


def test_content_encoding_despite_identity_is_rejected(tmp_path: Path, clock: FakeClock) -> None:
    """A server that gzips anyway is refused: offsets and checksums would refer to the compressed bytes."""

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Length": "10", "Content-Encoding": "gzip"}
        return httpx.Response(200, headers=headers, stream=stream_response([b"x" * 10], {}))

    spec = ArtifactSpec(url="http://127.0.0.1/a.deb", dest_dir=tmp_path, filename="a.deb", sha256=SHA)
    with downloader(clock, transport=httpx.MockTransport(handler)) as dl, pytest.raises(DownloadError) as err:
        dl.fetch(spec)
    assert "Content-Encoding gzip" in str(err.value)


def test_unwritable_destination_is_a_download_error(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """A destination that is not a directory fails as a DownloadError (exit 4) naming the path."""
    srv.add("/p/a.deb", CONTENT)
    (tmp_path / "dest").write_text("a file, not a directory")
    with downloader(clock) as dl, pytest.raises(DownloadError) as err:
        dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None))
    assert str(tmp_path / "dest") in str(err.value)


def test_part_without_sidecar_is_not_trusted(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """A .part with no sidecar (unknown origin) is discarded, not resumed."""
    srv.add("/p/a.deb", CONTENT)
    spec = spec_for(srv, tmp_path, sha256=SHA, sums_url=None)
    spec.dest_dir.mkdir()
    (spec.dest_dir / ".a.deb.part").write_bytes(b"junk" * 100)
    with downloader(clock) as dl:
        art = dl.fetch(spec)
    assert "range" not in srv.hits("/p/a.deb")[0].headers
    assert art.bytes_transferred == len(CONTENT)


def test_corrupt_kept_prefix_is_caught_by_rehash(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """The kept prefix is re-hashed from disk: a corrupted .part fails the check and is fetched again from zero."""
    srv.add("/p/a.deb", CONTENT)
    spec = spec_for(srv, tmp_path, sha256=SHA, sums_url=None)
    spec.dest_dir.mkdir()
    (spec.dest_dir / ".a.deb.part").write_bytes(b"X" * 1000)
    sidecar = {"url_sha256": url_digest(spec.url), "validator": f'"{SHA[:16]}"'}
    (spec.dest_dir / ".a.deb.part.json").write_text(json.dumps(sidecar))
    with capture_logs() as logs, downloader(clock) as dl:
        art = dl.fetch(spec)
    assert art.path.read_bytes() == CONTENT
    assert art.bytes_transferred == len(CONTENT) - 1000 + len(CONTENT)
    assert len(events(logs, "download.checksum_mismatch")) == 1


# ---------------------------------------------------------------------------------------------------------
# Checksum mismatch, sanity checks, free space, stalls.


def test_checksum_mismatch_fetches_once_more_from_zero(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """A mismatch discards the file and fetches it again from zero; a good second copy is accepted."""
    bad = bytes(len(CONTENT))
    srv.add("/p/a.deb", CONTENT, script=[Reply(body=bad)])
    with capture_logs() as logs, downloader(clock) as dl:
        art = dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None))
    assert art.path.read_bytes() == CONTENT
    assert "range" not in srv.hits("/p/a.deb")[1].headers
    [mismatch] = events(logs, "download.checksum_mismatch")
    assert mismatch["actual"] == hashlib.sha256(bad).hexdigest()


def test_checksum_mismatch_twice_fails_and_leaves_nothing(
    srv: ScriptedServer, tmp_path: Path, clock: FakeClock
) -> None:
    """Two mismatching downloads raise ChecksumError (exit 4) and leave neither a final nor a partial file."""
    bad = bytes(len(CONTENT))
    srv.add("/p/a.deb", CONTENT, script=[Reply(body=bad), Reply(body=bad)])
    spec = spec_for(srv, tmp_path, sha256=SHA, sums_url=None)
    with downloader(clock) as dl, pytest.raises(ChecksumError) as err:
        dl.fetch(spec)
    assert err.value.exit_code == ExitCode.DOWNLOAD
    assert f"expected {SHA} (pinned)" in str(err.value)
    assert list(spec.dest_dir.iterdir()) == []


def test_html_page_with_status_200_is_rejected(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """A text/html answer with status 200 fails at once with a clear message quoting the page title."""
    page = b"<html><head><title>Proxy login required</title></head><body>...</body></html>"
    srv.add("/p/a.deb", CONTENT, script=[Reply(body=page, headers={"Content-Type": "text/html; charset=utf-8"})])
    with downloader(clock) as dl, pytest.raises(DownloadError) as err:
        dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None))
    assert "sent an HTML page" in str(err.value)
    assert "Proxy login required" in str(err.value)
    assert clock.sleeps == []


def test_html_body_is_sniffed_whatever_the_content_type(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """An HTML body labelled application/octet-stream is still recognised from its first bytes."""
    page = b"\n<!DOCTYPE html><html><title>404 - nothing here</title></html>"
    srv.add("/p/a.deb", CONTENT, script=[Reply(body=page)])
    spec = spec_for(srv, tmp_path, sha256=SHA, sums_url=None)
    with downloader(clock) as dl, pytest.raises(DownloadError, match=r"HTML page.*404 - nothing here"):
        dl.fetch(spec)
    assert leftovers(spec.dest_dir) == []


def test_body_shorter_than_announced_is_retried_and_resumed(
    srv: ScriptedServer, tmp_path: Path, clock: FakeClock
) -> None:
    """A Content-Length larger than the body sent is a cut-off body: retried, and the rest fetched by range."""
    srv.add("/p/a.deb", CONTENT, script=[Reply(content_length=len(CONTENT) + 1000)])
    with capture_logs() as logs, downloader(clock) as dl:
        art = dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None))
    assert art.sha256 == SHA
    assert "RemoteProtocolError" in events(logs, "download.retry_scheduled")[0]["error"]


def stream_response(chunks: Sequence[bytes], headers: dict[str, str], tick: Callable[[], None] | None = None) -> Any:
    class Stream(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for c in chunks:
                if tick:
                    tick()
                yield c

    return Stream()


def test_body_longer_than_announced_is_caught(tmp_path: Path, clock: FakeClock) -> None:
    """A body running past the announced length is stopped with a clear message and not kept."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": "1000"}, stream=stream_response([b"a" * 800] * 2, {}))

    spec = ArtifactSpec(url="http://127.0.0.1/a.deb", dest_dir=tmp_path, filename="a.deb", sha256=SHA)
    with downloader(clock, transport=httpx.MockTransport(handler)) as dl, pytest.raises(DownloadError) as err:
        dl.fetch(spec)
    assert "more than the 1000 bytes it announced" in str(err.value)
    assert leftovers(tmp_path) == []


def test_not_enough_space_fails_early_with_numbers(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """Announced size plus margin above the free space fails before any body byte is written, with the numbers."""
    srv.add("/p/a.deb", CONTENT)
    pol = policy(free_space_margin_bytes=256 * 1024 * 1024)
    spec = spec_for(srv, tmp_path, sha256=SHA, sums_url=None)
    with downloader(clock, pol=pol, disk_free=lambda _p: 100 * 1024 * 1024) as dl, pytest.raises(DownloadError) as e:
        dl.fetch(spec)
    assert "not enough space in" in str(e.value)
    assert "300.0 KiB still to download" in str(e.value)
    assert "256.0 MiB margin" in str(e.value)
    assert "100.0 MiB free" in str(e.value)
    assert not (spec.dest_dir / ".a.deb.part").exists()


def test_stall_below_minimum_rate_is_aborted_and_retried(tmp_path: Path, clock: FakeClock) -> None:
    """A trickle under stall_min_rate for stall_window_s is aborted and retried; the retry resumes."""
    calls: list[httpx.Request] = []
    data = b"z" * 5000
    sha = hashlib.sha256(data).hexdigest()

    def tick() -> None:
        clock.now += 1.0  # every 100-byte chunk takes a second: 100 B/s

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        headers = {"ETag": '"v1"', "Content-Type": "application/octet-stream"}
        if len(calls) == 1:
            headers["Content-Length"] = str(len(data))
            return httpx.Response(
                200, headers=headers, stream=stream_response([data[i : i + 100] for i in range(0, 5000, 100)], {}, tick)
            )
        start = int(request.headers["range"].split("=")[1].rstrip("-"))
        headers.update({"Content-Length": str(len(data) - start), "Content-Range": f"bytes {start}-4999/5000"})
        return httpx.Response(206, headers=headers, stream=stream_response([data[start:]], {}))

    pol = policy(stall_min_rate=1024, stall_window_s=10.0)
    spec = ArtifactSpec(url="http://127.0.0.1/a.deb", dest_dir=tmp_path, filename="a.deb", sha256=sha)
    with capture_logs() as logs, downloader(clock, pol=pol, transport=httpx.MockTransport(handler)) as dl:
        art = dl.fetch(spec)
    assert art.sha256 == sha
    [retry] = events(logs, "download.retry_scheduled")
    assert retry["error"].startswith("stalled:")
    assert "below 1024 B/s" in retry["error"]
    assert calls[1].headers["range"] in {f"bytes={n}-" for n in range(900, 1200, 100)}


def test_real_trickle_is_caught_by_the_stall_detector_not_the_read_timeout(srv: ScriptedServer, tmp_path: Path) -> None:
    """Bytes that keep arriving within the read timeout, but too slowly, are stopped by the stall window."""
    data = b"t" * 4000
    srv.add("/p/a.deb", data, script=[Reply(trickle=(20, 0.02))])  # ~1 KB/s, a write every 20 ms
    pol = policy(stall_min_rate=50_000, stall_window_s=0.3, read_timeout_s=5.0)
    with capture_logs() as logs, Downloader(pol, Direct(), sleep=lambda _s: None) as dl:
        art = dl.fetch(spec_for(srv, tmp_path, sha256=hashlib.sha256(data).hexdigest(), sums_url=None))
    assert art.path.read_bytes() == data
    assert events(logs, "download.retry_scheduled")[0]["error"].startswith("stalled:")


# ---------------------------------------------------------------------------------------------------------
# 'latest': the name the server reveals.


def iso_spec(srv: ScriptedServer, tmp_path: Path, **kw: Any) -> ArtifactSpec:
    kw.setdefault("sums_url", f"{srv.url}/apollo/SHA256SUMS")
    return ArtifactSpec(
        url=f"{srv.url}/apollo/latest",
        dest_dir=tmp_path / "data",
        filename="APOLLO_PLATFORM-release-3.21.3.0-7+auto15.iso",
        adopt_server_name=True,
        label="Apollo ISO",
        **kw,
    )


def test_latest_redirect_saves_under_the_real_name(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """'latest' redirecting to the real ISO is saved under that name, checked under it, and the release reported."""
    srv.add("/apollo/SHA256SUMS", sums_line(ISO_NAME).encode())
    srv.add(f"/apollo/{ISO_NAME}", CONTENT)
    srv.add("/apollo/latest", b"", script=[Reply(status=302, body=b"", headers={"Location": f"/apollo/{ISO_NAME}"})])
    with capture_logs() as logs, downloader(clock) as dl:
        art = dl.fetch(iso_spec(srv, tmp_path))
    assert art.path == tmp_path / "data" / ISO_NAME
    assert art.release == "release-3.22.0.0-1+auto3"
    assert events(logs, "download.server_name")[0] == {**events(logs, "download.server_name")[0], "source": "redirect"}
    assert events(logs, "download.checksum_source")[0]["listed_as"] == ISO_NAME
    assert events(logs, "download.verified")[0]["release"] == "release-3.22.0.0-1+auto3"


def test_latest_content_disposition_name_is_adopted(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """A Content-Disposition filename (RFC 5987 filename* form too) names the saved ISO."""
    srv.add("/apollo/SHA256SUMS", sums_line(ISO_NAME).encode())
    quoted = ISO_NAME.replace("+", "%2B")
    srv.add(
        "/apollo/latest",
        CONTENT,
        script=[Reply(headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quoted}"})],
    )
    with downloader(clock) as dl:
        art = dl.fetch(iso_spec(srv, tmp_path))
    assert art.path.name == ISO_NAME


@pytest.mark.parametrize(
    "disposition",
    [
        'attachment; filename="../../etc/cron.d/x"',
        'attachment; filename="../../etc/cron.d/x.iso"',
        'attachment; filename="/etc/cron.d/x.iso"',
        'attachment; filename="..\\..\\x.iso"',
        "attachment; filename*=UTF-8''x%0A.iso",
        'attachment; filename="/etc/passwd"',
        "attachment; filename*=UTF-8''evil%00.iso",
        "attachment; filename*=UTF-8''..%2F..%2Froot%2F.ssh%2Fauthorized_keys",
        f'attachment; filename="{"A" * 300}.iso"',
        'attachment; filename="run-me.sh"',
        'attachment; filename=".hidden.iso"',
        'attachment; filename="a b.iso"',
    ],
)
def test_hostile_content_disposition_falls_back_to_the_configured_name(
    srv: ScriptedServer, tmp_path: Path, clock: FakeClock, disposition: str
) -> None:
    """A path, or a name that is not a plain *.iso name, is rejected (logged) for the configured name."""
    spec = iso_spec(srv, tmp_path)
    srv.add("/apollo/SHA256SUMS", sums_line(spec.filename).encode())
    srv.add("/apollo/latest", CONTENT, script=[Reply(headers={"Content-Disposition": disposition})])
    with capture_logs() as logs, downloader(clock) as dl:
        art = dl.fetch(spec)
    assert art.path == spec.dest_dir / spec.filename
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [spec.filename]
    assert len(events(logs, "download.server_name_rejected")) == 1


def test_revealed_name_is_not_checked_against_the_configured_release(
    srv: ScriptedServer, tmp_path: Path, clock: FakeClock
) -> None:
    """If 'latest' names a release SHA256SUMS does not list, the configured release's entry is not borrowed."""
    spec = iso_spec(srv, tmp_path)
    srv.add("/apollo/SHA256SUMS", sums_line(spec.filename).encode())
    srv.add(f"/apollo/{ISO_NAME}", CONTENT)
    srv.add("/apollo/latest", b"", script=[Reply(status=302, body=b"", headers={"Location": f"/apollo/{ISO_NAME}"})])
    with downloader(clock) as dl, pytest.raises(DownloadError) as err:
        dl.fetch(spec)
    assert f"does not list '{ISO_NAME}' or 'latest'" in str(err.value)
    assert list(spec.dest_dir.iterdir()) == []


def test_latest_listed_as_latest_in_sums(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """A SHA256SUMS listing the ISO as 'latest' provides its checksum."""
    srv.add("/apollo/SHA256SUMS", sums_line("latest").encode())
    srv.add("/apollo/latest", CONTENT)
    with downloader(clock) as dl:
        art = dl.fetch(iso_spec(srv, tmp_path))
    assert art.checksum_source == SOURCE_SUMS
    assert art.path.name == iso_spec(srv, tmp_path).filename


def test_unnamed_latest_takes_its_name_from_a_matching_sums_entry(
    srv: ScriptedServer, tmp_path: Path, clock: FakeClock
) -> None:
    """When the server does not name 'latest', the one SHA256SUMS .iso entry with the same digest names it."""
    srv.add("/apollo/SHA256SUMS", (sums_line("latest") + sums_line(ISO_NAME) + sums_line("x.iso", b"x")).encode())
    srv.add("/apollo/latest", CONTENT)
    with downloader(clock) as dl:
        art = dl.fetch(iso_spec(srv, tmp_path))
    assert art.path.name == ISO_NAME
    assert art.release == "release-3.22.0.0-1+auto3"


def test_latest_existing_real_file_is_reused_without_body(
    srv: ScriptedServer, tmp_path: Path, clock: FakeClock
) -> None:
    """A re-run finds the real-named ISO already verified and reuses it without reading the body."""
    srv.add("/apollo/SHA256SUMS", sums_line(ISO_NAME).encode())
    srv.add(
        "/apollo/latest", CONTENT, script=[Reply(headers={"Content-Disposition": f'attachment; filename="{ISO_NAME}"'})]
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / ISO_NAME).write_bytes(CONTENT)
    with downloader(clock) as dl:
        art = dl.fetch(iso_spec(srv, tmp_path))
    assert (art.reused, art.bytes_transferred, art.release) == (True, 0, "release-3.22.0.0-1+auto3")


# ---------------------------------------------------------------------------------------------------------
# Proxy, progress, policy.


def test_proxy_decision_routes_the_request_through_the_proxy(
    srv: ScriptedServer, tmp_path: Path, clock: FakeClock
) -> None:
    """When the proxy decision names a proxy, the request goes to it in absolute form."""
    srv.add("/p/a.deb", CONTENT)
    spec = ArtifactSpec(url="http://localhost:9/p/a.deb", dest_dir=tmp_path, filename="a.deb", sha256=SHA)
    with downloader(clock, proxy=ViaProxy(srv.url)) as dl:
        art = dl.fetch(spec)
    assert art.sha256 == SHA
    assert srv.requests[0].path == "http://localhost:9/p/a.deb"


def test_progress_is_logged_every_10_percent(tmp_path: Path, clock: FakeClock) -> None:
    """Without a progress bar, download.progress is logged at each 10 % step with bytes, percent, rate and ETA."""
    data = os.urandom(40 * 50_000)

    def tick() -> None:
        clock.now += 0.75  # 40 chunks, 30 s in all: each 10 % step is 3 s apart

    def handler(request: httpx.Request) -> httpx.Response:
        chunks = [data[i : i + 50_000] for i in range(0, len(data), 50_000)]
        headers = {"Content-Length": str(len(data)), "ETag": '"x"'}
        return httpx.Response(200, headers=headers, stream=stream_response(chunks, {}, tick))

    spec = ArtifactSpec(url="http://127.0.0.1/big.iso", dest_dir=tmp_path, filename="big.iso",
                        sha256=hashlib.sha256(data).hexdigest())  # fmt: skip
    with capture_logs() as logs, downloader(clock, transport=httpx.MockTransport(handler)) as dl:
        dl.fetch(spec)
    progress = events(logs, "download.progress")
    assert [p["percent"] for p in progress] == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]
    assert progress[4]["summary"] == "976.6 KiB of 1.9 MiB (50%), 65.1 KiB/s, ETA 0:15"
    assert (progress[4]["rate_bytes_s"], progress[4]["eta_s"]) == (66666, 15)
    assert all(p["log_level"] == "info" for p in progress)


def test_progress_is_logged_every_few_seconds_on_a_slow_link(tmp_path: Path, clock: FakeClock) -> None:
    """Between 10 % steps a line is still logged every progress_interval_s, so a slow link never looks dead."""
    data = b"s" * 100_000

    def tick() -> None:
        clock.now += 1.0

    def handler(request: httpx.Request) -> httpx.Response:
        chunks = [data[i : i + 1000] for i in range(0, 20_000, 1000)]  # 20 % in 20 s, then the rest at once
        chunks.append(data[20_000:])
        return httpx.Response(200, headers={"Content-Length": str(len(data))}, stream=stream_response(chunks, {}, tick))

    spec = ArtifactSpec(url="http://127.0.0.1/s.iso", dest_dir=tmp_path, filename="s.iso",
                        sha256=hashlib.sha256(data).hexdigest())  # fmt: skip
    with capture_logs() as logs, downloader(clock, transport=httpx.MockTransport(handler)) as dl:
        dl.fetch(spec)
    percents = [p["percent"] for p in events(logs, "download.progress")]
    assert percents == [5.0, 10.0, 15.0, 20.0, 100.0]


def test_small_files_log_progress_once(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """A file fetched in well under a second logs one progress line (100 %), not ten."""
    srv.add("/p/a.deb", CONTENT)
    with capture_logs() as logs, downloader(clock) as dl:
        dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None))
    assert [p["percent"] for p in events(logs, "download.progress")] == [100.0]


def test_progress_callback_gets_the_final_count(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """A progress callback receives (label, done, total), finally the full size; log lines stay at info."""
    srv.add("/p/a.deb", CONTENT)
    seen: list[tuple[str, int, int | None]] = []
    with capture_logs() as logs, downloader(clock, on_progress=lambda *a: seen.append(a)) as dl:
        dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None, label="ostree-upgrade deb"))
    assert seen[-1] == ("ostree-upgrade deb", len(CONTENT), len(CONTENT))
    assert all(p["log_level"] == "info" for p in events(logs, "download.progress"))


def test_progress_bar_on_a_terminal_quiets_progress_logs(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """With progress_bar=stream the bar is drawn there and download.progress drops to debug."""
    srv.add("/p/a.deb", CONTENT)
    out = io.StringIO()
    with capture_logs() as logs, downloader(clock, progress_bar=out) as dl:
        dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None, label="deb"))
    assert "deb [" in out.getvalue()
    assert "100.0%" in out.getvalue()
    assert all(p["log_level"] == "debug" for p in events(logs, "download.progress"))


@pytest.mark.parametrize(
    ("tty", "term", "journal", "bar"),
    [
        (True, "xterm", False, True),
        (False, "xterm", False, False),
        (True, "dumb", False, False),
        (True, "vt220", True, False),
    ],
)
def test_progress_bar_is_automatic_only_for_a_person_at_a_terminal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clock: FakeClock, tty: bool, term: str, journal: bool, bar: bool
) -> None:
    """The bar is drawn on stderr only when it is a terminal, TERM is not dumb and systemd did not connect our
    stdout or stderr to the journal (the unit's console is a TTY); otherwise download.progress is a plain line."""

    class Stderr(io.StringIO):
        def isatty(self) -> bool:
            return tty

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": str(len(CONTENT))}, stream=stream_response([CONTENT], {}))

    err = Stderr()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setenv("TERM", term)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    if journal:
        st = os.fstat(1)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    spec = ArtifactSpec(url="http://127.0.0.1/a.deb", dest_dir=tmp_path, filename="a.deb", sha256=SHA, label="deb")
    with (
        capture_logs() as logs,
        Downloader(policy(), Direct(), transport=httpx.MockTransport(handler), clock=clock) as dl,
    ):
        dl.fetch(spec)
    assert ("deb [" in err.getvalue()) is bar
    assert ("100.0%" in err.getvalue()) is bar
    levels = {p["log_level"] for p in events(logs, "download.progress")}
    assert levels == ({"debug"} if bar else {"info"})


def test_progress_bar_renders_one_line() -> None:
    """ProgressBar draws label, bar, percent, sizes, rate and ETA on one carriage-returned line."""
    out = io.StringIO()
    t = iter([0.0, 2.0, 4.0])
    bar = ProgressBar(out, width=10, clock=lambda: next(t))
    bar("Apollo ISO", 0, 4 * 1024 * 1024)
    bar("Apollo ISO", 2 * 1024 * 1024, 4 * 1024 * 1024)
    bar("Apollo ISO", 4 * 1024 * 1024, 4 * 1024 * 1024)
    lines = out.getvalue().split("\r")
    assert "Apollo ISO [#####-----]  50.0% 2.0 MiB/4.0 MiB 1.0 MiB/s ETA 0:02" in lines[2]
    assert out.getvalue().endswith("\n")


def test_policy_from_settings() -> None:
    """DownloadPolicy.from_settings maps the download.* settings (margin MiB to bytes)."""
    settings = config.load(environ={"HARMONIC_DOWNLOAD_ATTEMPTS": "3"}, cmdline="")
    pol = DownloadPolicy.from_settings(settings)
    assert pol.attempts == 3
    assert pol.free_space_margin_bytes == settings.free_space_margin_mib * 1024 * 1024
    assert (pol.stall_min_rate, pol.sums_name, pol.keyring) == (settings.stall_min_rate, "SHA256SUMS", None)


def test_verified_artifact_cannot_be_made_outside_fetch() -> None:
    """Only Downloader.fetch makes a VerifiedArtifact: constructing one elsewhere raises, even with good values."""
    with pytest.raises(TypeError, match=r"only by Downloader\.fetch"):
        VerifiedArtifact(Path("/x"), "http://x", SHA, 1, SOURCE_PINNED, False, 1)


def test_credentials_never_reach_logs_or_errors(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """user:password in the URL is redacted in every log event and in the error message."""
    url = srv.url.replace("http://", "http://bob:s3cret@") + "/p/a.deb"
    spec = ArtifactSpec(url=url, dest_dir=tmp_path, filename="a.deb", sha256=SHA)
    with capture_logs() as logs, downloader(clock) as dl, pytest.raises(DownloadError) as err:
        dl.fetch(spec)
    assert "s3cret" not in str(err.value)
    assert "s3cret" not in repr(logs)
    assert "***@" in str(err.value)


# ---------------------------------------------------------------------------------------------------------
# TLS.


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: (its PEM file, a server context using it)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-days", "2",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return cert, ctx


def test_untrusted_certificate_fails_at_once(tmp_path: Path, clock: FakeClock, tls_cert: tuple[Path, Any]) -> None:
    """An https server whose certificate the system store does not trust fails without retries (exit 4)."""
    with ScriptedServer(tls=tls_cert[1]) as srv:
        srv.add("/p/a.deb", CONTENT)
        with downloader(clock) as dl, pytest.raises(DownloadError) as err:
            dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None))
    assert "TLS verification failed" in str(err.value)
    assert err.value.exit_code == ExitCode.DOWNLOAD
    assert clock.sleeps == []


def test_ca_file_makes_the_certificate_trusted(tmp_path: Path, clock: FakeClock, tls_cert: tuple[Path, Any]) -> None:
    """server.ca_file is the trust anchor for https downloads."""
    with ScriptedServer(tls=tls_cert[1]) as srv:
        srv.add("/p/a.deb", CONTENT)
        with downloader(clock, pol=policy(ca_file=tls_cert[0])) as dl:
            art = dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None))
    assert art.url.startswith("https://")
    assert art.path.read_bytes() == CONTENT


# ---------------------------------------------------------------------------------------------------------
# Signatures (real gpg and gpgv).


class RecordingRunner(SubprocessRunner):
    """The real runner, remembering the argv it ran."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def run(self, argv: Sequence[str], **kw: Any) -> CommandResult:
        self.calls.append(list(argv))
        return super().run(argv, **kw)


@pytest.fixture(scope="module")
def gpg_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Callable[[bytes], bytes]]]:
    """A throwaway signing key: (keyring file for gpgv, function that makes a detached signature)."""
    home = tmp_path_factory.mktemp("gnupg")
    os.chmod(home, 0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}

    def gpg(*args: str, data: bytes | None = None) -> bytes:
        return subprocess.run(
            ["gpg", "--batch", "--quiet", *args], env=env, input=data, capture_output=True, check=True
        ).stdout

    gpg("--passphrase", "", "--quick-gen-key", "Test Signer <signer@example.invalid>", "ed25519", "sign", "never")
    keyring = home / "trusted.gpg"
    keyring.write_bytes(gpg("--export"))
    yield keyring, lambda data: gpg("--detach-sign", "--output", "-", data=data)
    subprocess.run(["gpgconf", "--kill", "all"], env=env, check=False)


def test_signed_sums_verify_with_gpgv(
    srv: ScriptedServer, tmp_path: Path, clock: FakeClock, gpg_key: tuple[Path, Callable[[bytes], bytes]]
) -> None:
    """With a keyring, SHA256SUMS is accepted after gpgv verifies SHA256SUMS.gpg; the source says so."""
    keyring, sign = gpg_key
    sums = sums_line("a.deb").encode()
    srv.add("/p/SHA256SUMS", sums)
    srv.add("/p/SHA256SUMS.gpg", sign(sums))
    srv.add("/p/a.deb", CONTENT)
    runner = RecordingRunner()
    with downloader(clock, pol=policy(keyring=keyring), runner=runner) as dl:
        art = dl.fetch(spec_for(srv, tmp_path))
    assert art.checksum_source == SOURCE_SUMS_GPG
    assert runner.calls[0][:2] == ["gpgv", "--homedir"]


def test_bad_signature_is_never_tolerated(
    srv: ScriptedServer, tmp_path: Path, clock: FakeClock, gpg_key: tuple[Path, Callable[[bytes], bytes]]
) -> None:
    """A signature over other content fails before the artifact is requested, even with allow_unverified."""
    keyring, sign = gpg_key
    srv.add("/p/SHA256SUMS", sums_line("a.deb").encode())
    srv.add("/p/SHA256SUMS.gpg", sign(b"something else\n"))
    srv.add("/p/a.deb", CONTENT)
    pol = policy(keyring=keyring, allow_unverified=True)
    with downloader(clock, pol=pol, runner=RecordingRunner()) as dl, pytest.raises(DownloadError) as err:
        dl.fetch(spec_for(srv, tmp_path))
    assert "does not verify against" in str(err.value)
    assert "gpgv exit" in str(err.value)
    assert srv.hits("/p/a.deb") == []


def test_missing_signature_with_a_keyring_fails(
    srv: ScriptedServer, tmp_path: Path, clock: FakeClock, gpg_key: tuple[Path, Callable[[bytes], bytes]]
) -> None:
    """With a keyring configured, a missing SHA256SUMS.gpg is an error, not a silent downgrade."""
    keyring, _sign = gpg_key
    srv.add("/p/SHA256SUMS", sums_line("a.deb").encode())
    srv.add("/p/a.deb", CONTENT)
    with downloader(clock, pol=policy(keyring=keyring), runner=RecordingRunner()) as dl:
        with pytest.raises(DownloadError, match=r"SHA256SUMS.gpg does not exist \(404\)"):
            dl.fetch(spec_for(srv, tmp_path))


def test_keyring_without_runner_is_a_programming_error() -> None:
    """A Downloader with a keyring but no runner cannot be built."""
    with pytest.raises(ValueError, match="runner"):
        Downloader(policy(keyring=Path("/k.gpg")), Direct())


def test_size_check_refuses_the_file_from_its_headers_before_the_body(
    srv: ScriptedServer, tmp_path: Path, clock: FakeClock
) -> None:
    """The announced size goes to the spec's size_check before any body byte: a refusal leaves no .part behind."""
    from harmonic_installer.errors import PreflightError

    srv.add("/p/a.deb", CONTENT)
    seen: list[int] = []

    def too_big(size: int) -> None:
        seen.append(size)
        raise PreflightError(f"disk too small for {size}")

    spec = ArtifactSpec(
        url=f"{srv.url}/p/a.deb", dest_dir=tmp_path / "dest", filename="a.deb", sha256=SHA, size_check=too_big
    )
    with downloader(clock) as dl, pytest.raises(PreflightError):
        dl.fetch(spec)
    assert seen == [len(CONTENT)]
    assert list((tmp_path / "dest").iterdir()) == []
    assert len(srv.requests) == 1


def test_trickle_after_a_fast_start_is_caught_within_the_stall_window(tmp_path: Path, clock: FakeClock) -> None:
    """10 MiB fast, then 64 B/s: aborted no later than stall_window_s after the slowdown, the measurement logged."""
    fast, slow = [b"f" * 65536] * 160, [b"s" * 64] * 400
    marks: dict[str, float] = {}

    def tick() -> None:
        sent = marks.setdefault("sent", 0) + 1
        marks["sent"] = sent
        if sent <= len(fast):
            clock.now += 0.01
        else:
            marks.setdefault("trickle_from", clock.now)
            clock.now += 1.0

    def handler(request: httpx.Request) -> httpx.Response:
        total = 65536 * len(fast) + 64 * len(slow)
        headers = {"ETag": '"v1"', "Content-Length": str(total)}
        return httpx.Response(200, headers=headers, stream=stream_response([*fast, *slow], {}, tick))

    pol = policy(attempts=1, stall_min_rate=1024, stall_window_s=60.0, max_time_s=3600.0)
    spec = ArtifactSpec(url="http://127.0.0.1/big.iso", dest_dir=tmp_path, filename="big.iso", sha256=SHA)
    with (
        capture_logs() as logs,
        downloader(clock, pol=pol, transport=httpx.MockTransport(handler)) as dl,
        pytest.raises(DownloadError, match="stalled"),
    ):
        dl.fetch(spec)
    [stalled] = events(logs, "download.stalled")
    assert clock.now - marks["trickle_from"] <= 61.0
    assert stalled["rate_bytes_s"] < 1024
    assert 57.0 <= stalled["measured_over_s"] <= 60.0
    assert stalled["window_s"] == 60.0
