"""state: the run lock excludes a second installer; the journal is atomic and private."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from pyfakefs.fake_filesystem import FakeFilesystem

from harmonic_installer.errors import ExitCode, LockedError
from harmonic_installer.state import Journal, RunLock


def test_second_lock_is_refused_with_exit_7(tmp_path: Path) -> None:
    """While one run holds the lock, another gets LockedError (exit 7) naming the holder's pid."""
    with RunLock(tmp_path), pytest.raises(LockedError, match=f"pid {os.getpid()}") as info:
        RunLock(tmp_path).__enter__()
    assert info.value.exit_code == ExitCode.LOCKED


def test_lock_is_released_on_exit(tmp_path: Path) -> None:
    """After the first run ends, the next one gets the lock."""
    with RunLock(tmp_path):
        pass
    with RunLock(tmp_path):
        pass


def test_lock_is_released_when_the_process_dies(tmp_path: Path) -> None:
    """A crashed holder does not block the next run (flock dies with the process)."""
    pid = os.fork()
    if pid == 0:  # child: take the lock and exit without cleanup
        lock = RunLock(tmp_path)
        lock.__enter__()
        os._exit(0)
    os.waitpid(pid, 0)
    with RunLock(tmp_path):
        pass


def test_journal_round_trip_and_permissions(fs: FakeFilesystem) -> None:
    """Recorded steps survive a reload; the file is 0600 in a 0700 directory."""
    state = Path("/run/harmonic-installer")
    journal = Journal.load(state)
    journal.record("download", {"iso_sha256": "ab" * 32})
    again = Journal.load(state)
    download = again.get("download")
    assert download is not None
    assert download["iso_sha256"] == "ab" * 32
    assert stat.S_IMODE(os.stat(state / "journal.json").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    again.forget("download")
    assert Journal.load(state).get("download") is None


def test_corrupt_journal_is_ignored(fs: FakeFilesystem) -> None:
    """A truncated journal (power cut) is set aside, not trusted, and not fatal."""
    fs.create_file("/s/journal.json", contents='{"version": 1, "steps": {"wri')
    assert Journal.load(Path("/s")).get("write") is None


def test_journal_write_is_atomic(fs: FakeFilesystem) -> None:
    """No temporary file is left behind and the content is complete JSON."""
    journal = Journal.load(Path("/s"))
    journal.record("packages", {"packages": ["a=1"]})
    assert os.listdir("/s") == ["journal.json"]
    assert json.loads(Path("/s/journal.json").read_text())["steps"]["packages"]["packages"] == ["a=1"]
