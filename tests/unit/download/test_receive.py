"""download/receive.py: what a response must be before its body is kept (encoding, HTML, length, space)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from harmonic_installer.download import (
    ArtifactSpec,
)
from harmonic_installer.errors import DownloadError
from tests.support.faults import Reply, ScriptedServer
from tests.unit.download.kit import (
    CONTENT,
    SHA,
    FakeClock,
    downloader,
    events,
    leftovers,
    policy,
    spec_for,
    stream_response,
)


def test_content_encoding_despite_identity_is_rejected(tmp_path: Path, clock: FakeClock) -> None:
    """A server that gzips anyway is refused: offsets and checksums would refer to the compressed bytes."""

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Length": "10", "Content-Encoding": "gzip"}
        return httpx.Response(200, headers=headers, stream=stream_response([b"x" * 10], {}))

    spec = ArtifactSpec(url="http://127.0.0.1/a.deb", dest_dir=tmp_path, filename="a.deb", sha256=SHA)
    with downloader(clock, transport=httpx.MockTransport(handler)) as dl, pytest.raises(DownloadError) as err:
        dl.fetch(spec)
    assert "Content-Encoding gzip" in str(err.value)


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
