"""download/small.py: a checksum file is read whole, within a size limit, and must not be an HTML page."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from harmonic_installer.errors import DownloadError
from tests.support.faults import Reply, ScriptedServer
from tests.unit.download.kit import CONTENT, SHA, FakeClock, downloader, events, policy, spec_for, sums_line


def test_a_checksum_file_over_the_limit_is_refused(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """A SHA256SUMS larger than sums_max_bytes is not a checksum file: one line, no retry."""
    srv.add("/p/SHA256SUMS", b"0" * 2048)
    with downloader(clock, pol=policy(sums_max_bytes=1024)) as dl, pytest.raises(DownloadError) as err:
        dl.fetch(spec_for(srv, tmp_path))
    assert "larger than 1.0 KiB; not a checksum file" in str(err.value)
    assert clock.sleeps == []


def test_a_checksum_file_that_is_an_html_page_is_refused(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """A captive portal's page where SHA256SUMS was asked for is refused, whatever its Content-Type."""
    srv.add("/p/SHA256SUMS", b"x", script=[Reply(body=b"<!doctype html><title>Portal</title>")])
    with downloader(clock) as dl, pytest.raises(DownloadError, match="sent an HTML page instead of the file"):
        dl.fetch(spec_for(srv, tmp_path))


def test_a_cut_checksum_file_is_retried(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """A checksum file cut before its Content-Length is fetched again, and the whole file then used."""
    srv.add("/p/a.deb", CONTENT)
    srv.add("/p/SHA256SUMS", sums_line("a.deb").encode(), script=[Reply(cut_after=10)])
    with capture_logs() as logs, downloader(clock) as dl:
        art = dl.fetch(spec_for(srv, tmp_path))
    assert art.sha256 == SHA
    (retry,) = events(logs, "download.retry_scheduled")
    assert "SHA256SUMS" in retry["url"]
    assert len(clock.sleeps) == 1
