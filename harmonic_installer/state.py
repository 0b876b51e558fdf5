"""The run lock and the journal of completed steps (atomic JSON) for safe re-runs."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from harmonic_installer import config
from harmonic_installer.errors import LockedError, PreflightError
from harmonic_installer.trust import directory_problem

log = structlog.get_logger()

_JOURNAL = "journal.json"
_LOCK = "lock"
REBOOT_MARKER = config.REBOOT_MARKER  # "reboot wanted" (see config.py); a host that is not a target never gets it


def _ensure_dir(state_dir: Path) -> None:
    problem = directory_problem(state_dir)
    if problem is not None:
        raise PreflightError(
            f"paths.state_dir {problem}: choose a directory only root can write (it holds the lock and journal)"
        )
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise PreflightError(f"cannot create state directory {state_dir}: {exc.strerror}") from exc


class RunLock:
    """An exclusive lock under the state dir (in /run) so two installers never run at once."""

    def __init__(self, state_dir: Path) -> None:
        self._path = state_dir / _LOCK
        self._state_dir = state_dir
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        _ensure_dir(self._state_dir)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockedError(
                    f"another harmonic-install is running (pid {holder}, lock {self._path}); nothing done"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        log.debug("lock.acquired", path=str(self._path))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the flock
            self._fd = None


class Journal:
    """Completed steps with what they produced, written atomically (0600) after every step."""

    def __init__(self, state_dir: Path) -> None:
        self._path = state_dir / _JOURNAL
        self._state_dir = state_dir
        self._steps: dict[str, dict[str, Any]] = {}

    @classmethod
    def load(cls, state_dir: Path) -> Journal:
        """The journal left by earlier runs; an unreadable one is set aside and a fresh one started."""
        journal = cls(state_dir)
        try:
            data = json.loads(journal._path.read_text(encoding="utf-8"))
            steps = data.get("steps", {}) if isinstance(data, dict) else {}
            journal._steps = {k: v for k, v in steps.items() if isinstance(v, dict)}
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.warning("journal.unreadable", path=str(journal._path), error=str(exc))
        return journal

    def get(self, step: str) -> dict[str, Any] | None:
        """What `step` recorded when it last completed, or None."""
        return self._steps.get(step)

    def record(self, step: str, data: dict[str, Any]) -> None:
        """Mark `step` complete with `data` (JSON-serialisable) and persist the journal."""
        self._steps[step] = {**data, "completed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self._save()

    def forget(self, step: str) -> None:
        """Drop `step` (its result is no longer valid) and persist the journal."""
        if self._steps.pop(step, None) is not None:
            self._save()

    def _save(self) -> None:
        _ensure_dir(self._state_dir)
        payload = json.dumps({"version": 1, "steps": self._steps}, indent=2, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=".journal-", dir=self._state_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self._path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def clear_reboot_wanted(marker: Path) -> None:
    """Forget an earlier run's "reboot wanted" marker (a new run is starting)."""
    with contextlib.suppress(FileNotFoundError):
        marker.unlink()


def want_reboot(marker: Path, *, disk: str | None, release: str | None, why: str) -> None:
    """Leave the "reboot wanted" marker (0600) that lets the systemd unit reboot after this run exits 0."""
    marker.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"disk": disk, "release": release, "why": why}) + "\n")
