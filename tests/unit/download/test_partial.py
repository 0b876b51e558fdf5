"""download/partial.py: resuming from the .part and its sidecar (Range/If-Range), and what is discarded."""

from __future__ import annotations

import json
import stat
from email.utils import formatdate
from pathlib import Path

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
    url_digest,
)


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
