"""download/checksums.py: pinned values, SHA256SUMS (strict parsing, one fetch per run) and gpgv signatures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from harmonic_installer.download import (
    SOURCE_NONE,
    SOURCE_SUMS,
    SOURCE_SUMS_GPG,
)
from harmonic_installer.errors import DownloadError, ExitCode
from tests.support.faults import ScriptedServer
from tests.unit.download.kit import (
    CONTENT,
    SHA,
    FakeClock,
    RecordingRunner,
    downloader,
    events,
    policy,
    spec_for,
    sums_line,
)


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
