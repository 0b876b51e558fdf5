"""download/partial.py: the final file, the .part and its sidecar are opened without following symlinks, judged by
fstat of the descriptor; a planted link is removed (never its target) so a re-run is not stuck on it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from harmonic_installer.errors import DownloadError, ExitCode
from tests.support.faults import ScriptedServer
from tests.unit.download.kit import (
    CONTENT,
    SHA,
    FakeClock,
    downloader,
    events,
    leftovers,
    spec_for,
    url_digest,
)

VICTIM = b"a file the installer must never read through a link, nor change\n"


def _victim(tmp_path: Path, data: bytes = VICTIM) -> Path:
    path = tmp_path / "victim"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("runs", [1, 2])
def test_planted_part_symlink_is_removed_and_the_download_succeeds(
    srv: ScriptedServer,
    tmp_path: Path,
    clock: FakeClock,
    runs: int,
) -> None:
    """A .part symlink to another file: the link is removed with a warning, its target untouched; every run works."""
    srv.add("/p/a.deb", CONTENT)
    spec = spec_for(srv, tmp_path, sha256=SHA, sums_url=None)
    spec.dest_dir.mkdir()
    victim = _victim(tmp_path)
    for _ in range(runs):
        final = spec.dest_dir / "a.deb"
        if final.exists():
            final.unlink()
        (spec.dest_dir / ".a.deb.part").symlink_to(victim)
        with capture_logs() as logs, downloader(clock) as dl:
            art = dl.fetch(spec)
        assert art.path.read_bytes() == CONTENT
        (removed,) = events(logs, "download.part_link_removed")
        assert removed["target"] == str(victim)
        assert removed["log_level"] == "warning"
    assert victim.read_bytes() == VICTIM
    assert leftovers(spec.dest_dir) == []


def test_part_symlink_to_a_valid_prefix_is_never_resumed(
    srv: ScriptedServer,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    """Even a link to a file holding a real prefix, with a matching sidecar, is not hashed or resumed from."""
    srv.add("/p/a.deb", CONTENT)
    spec = spec_for(srv, tmp_path, sha256=SHA, sums_url=None)
    spec.dest_dir.mkdir()
    victim = _victim(tmp_path, CONTENT[:100_000])
    (spec.dest_dir / ".a.deb.part").symlink_to(victim)
    meta = {"url_sha256": url_digest(spec.url), "validator": f'"{SHA[:16]}"'}
    (spec.dest_dir / ".a.deb.part.json").write_text(json.dumps(meta))
    with downloader(clock) as dl:
        art = dl.fetch(spec)
    assert art.bytes_transferred == len(CONTENT)
    assert "range" not in srv.hits("/p/a.deb")[0].headers
    assert victim.read_bytes() == CONTENT[:100_000]


def test_sidecar_symlink_is_not_followed(
    srv: ScriptedServer,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    """A sidecar that is a link (to a file that would allow a resume) counts as no sidecar: the .part restarts."""
    srv.add("/p/a.deb", CONTENT)
    spec = spec_for(srv, tmp_path, sha256=SHA, sums_url=None)
    spec.dest_dir.mkdir()
    (spec.dest_dir / ".a.deb.part").write_bytes(CONTENT[:100_000])
    os.chmod(spec.dest_dir / ".a.deb.part", 0o600)
    fake_meta = _victim(tmp_path, json.dumps({"url_sha256": url_digest(spec.url), "validator": '"x"'}).encode())
    (spec.dest_dir / ".a.deb.part.json").symlink_to(fake_meta)
    with capture_logs() as logs, downloader(clock) as dl:
        art = dl.fetch(spec)
    assert art.bytes_transferred == len(CONTENT)
    assert [e["reason"] for e in events(logs, "download.part_discarded")] == ["no readable sidecar"]
    assert fake_meta.exists()
    assert leftovers(spec.dest_dir) == []


def test_final_name_symlink_is_not_reused_but_replaced(
    srv: ScriptedServer,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    """A link at the final name (to the right bytes, even) is not reused: the file is fetched and the link replaced."""
    srv.add("/p/a.deb", CONTENT)
    spec = spec_for(srv, tmp_path, sha256=SHA, sums_url=None)
    spec.dest_dir.mkdir()
    victim = _victim(tmp_path, CONTENT)
    (spec.dest_dir / "a.deb").symlink_to(victim)
    with downloader(clock) as dl:
        art = dl.fetch(spec)
    assert not art.reused
    assert not art.path.is_symlink()
    assert art.path.read_bytes() == CONTENT
    assert victim.read_bytes() == CONTENT


def test_another_users_part_is_removed_not_a_dead_end(
    srv: ScriptedServer,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    """A .part owned by another user is removed with a warning and the file fetched afresh (not refused forever)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file to another user")
    srv.add("/p/a.deb", CONTENT)
    spec = spec_for(srv, tmp_path, sha256=SHA, sums_url=None)
    spec.dest_dir.mkdir()
    part = spec.dest_dir / ".a.deb.part"
    part.write_bytes(CONTENT[:100_000])
    os.chown(part, 65534, 65534)
    for _ in range(2):
        with capture_logs() as logs, downloader(clock) as dl:
            art = dl.fetch(spec)
        assert art.bytes_transferred == len(CONTENT)
        assert len(events(logs, "download.part_untrusted_removed")) == 1
        art.path.unlink()
        part.write_bytes(CONTENT[:100_000])
        os.chown(part, 65534, 65534)


def test_a_directory_at_the_part_name_is_refused_with_one_line(
    srv: ScriptedServer,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    """Something we would not remove (a directory) where the .part goes: exit 4 and a line saying what to do."""
    srv.add("/p/a.deb", CONTENT)
    spec = spec_for(srv, tmp_path, sha256=SHA, sums_url=None)
    (spec.dest_dir / ".a.deb.part").mkdir(parents=True)
    with downloader(clock) as dl, pytest.raises(DownloadError) as err:
        dl.fetch(spec)
    assert err.value.exit_code == ExitCode.DOWNLOAD
    assert "is not a regular file" in str(err.value)
    assert "remove it and run again" in str(err.value)
    assert srv.hits("/p/a.deb") == []
