"""download/naming.py: the name 'latest' is saved under (redirects, Content-Disposition, sums entries)."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from harmonic_installer.download import (
    SOURCE_SUMS,
)
from harmonic_installer.errors import DownloadError
from tests.support.faults import Reply, ScriptedServer
from tests.unit.download.kit import (
    CONTENT,
    ISO_NAME,
    FakeClock,
    downloader,
    events,
    iso_spec,
    policy,
    sums_line,
)


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
