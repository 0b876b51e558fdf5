"""download/fetch.py: the fetch loop end to end (reuse, verify, rename, a second round, TLS), scripted server."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from harmonic_installer.download import (
    SOURCE_PINNED,
    ArtifactSpec,
    Downloader,
)
from harmonic_installer.errors import ChecksumError, DownloadError, ExitCode
from tests.support.faults import Reply, ScriptedServer
from tests.unit.download.kit import (
    CONTENT,
    SHA,
    Direct,
    FakeClock,
    ViaProxy,
    downloader,
    events,
    leftovers,
    policy,
    spec_for,
)


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


def test_unwritable_destination_is_a_download_error(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """A destination that is not a directory fails as a DownloadError (exit 4) naming the path."""
    srv.add("/p/a.deb", CONTENT)
    (tmp_path / "dest").write_text("a file, not a directory")
    with downloader(clock) as dl, pytest.raises(DownloadError) as err:
        dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None))
    assert str(tmp_path / "dest") in str(err.value)


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


def test_credentials_never_reach_logs_or_errors(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """user:password in the URL is redacted in every log event and in the error message."""
    url = srv.url.replace("http://", "http://bob:s3cret@") + "/p/a.deb"
    spec = ArtifactSpec(url=url, dest_dir=tmp_path, filename="a.deb", sha256=SHA)
    with capture_logs() as logs, downloader(clock) as dl, pytest.raises(DownloadError) as err:
        dl.fetch(spec)
    assert "s3cret" not in str(err.value)
    assert "s3cret" not in repr(logs)
    assert "***@" in str(err.value)


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


def test_keyring_without_runner_is_a_programming_error() -> None:
    """A Downloader with a keyring but no runner cannot be built."""
    with pytest.raises(ValueError, match="runner"):
        Downloader(policy(keyring=Path("/k.gpg")), Direct())
