"""The partial file: where a resume starts (the .part and its JSON sidecar), the prefix hash, and cleanup.

Every file of ours in a download directory (the final file, the .part, its sidecar) is opened with O_NOFOLLOW
and judged by fstat of that descriptor, never by a path lookup that follows links: in a shared directory another
user may plant a symlink, and a planted link is removed (the link itself, never its target) or refused.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from harmonic_installer.config import redact_url
from harmonic_installer.download.transfer import Transfer
from harmonic_installer.errors import DownloadError
from harmonic_installer.formats import human_bytes as human
from harmonic_installer.hashing import sha256_stream


def resume_point(t: Transfer) -> tuple[int, str | None]:
    """(bytes kept, validator) for an existing .part whose sidecar matches; anything else is discarded."""
    t.part_name = None
    discard(t.meta.with_name(t.meta.name + ".tmp"))  # left by a kill while the sidecar was written
    if not os.path.lexists(t.part):
        discard(t.meta)
        return 0, None
    size = _part_size(t)
    if size is None:
        return 0, None
    meta = _read_meta(t.meta)
    reason = _stale(t, meta, size)
    if reason is not None or meta is None:
        t.lg.info("download.part_discarded", part=str(t.part), size=size, reason=reason)
        discard(t.part, t.meta)
        return 0, None
    name = meta.get("name")
    t.part_name = name if isinstance(name, str) else None
    return size, str(meta["validator"])


def _stale(t: Transfer, meta: dict[str, Any] | None, size: int) -> str | None:
    """Why the .part of `size` bytes may not be resumed with this sidecar, or None when it may."""
    if meta is None:
        return "no readable sidecar"
    if meta.get("url_sha256") != _url_digest(t.spec.url):
        return "the sidecar is for another URL"
    if not meta.get("validator"):
        return "the server gave no validator (strong ETag or Last-Modified)"
    if isinstance(meta.get("total"), int) and size > meta["total"]:
        return "longer than the file"
    if size == 0:
        return "empty"
    return None


def write_meta(t: Transfer, validator: str | None, total: int | None) -> None:
    """Record (atomically) what a later run needs to resume the .part: URL digest, validator, size, name."""
    if not validator and not t.warned_no_validator:
        t.warned_no_validator = True
        t.lg.warning("download.resume_unavailable", reason="no strong ETag or Last-Modified from the server")
    data = {
        "url": redact_url(t.spec.url),  # for people; matching uses the digest (no credentials on disk)
        "url_sha256": _url_digest(t.spec.url),
        "validator": validator,
        "total": total,
        "name": t.name if t.revealed else None,
    }
    tmp = t.meta.with_name(t.meta.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, t.meta)


def open_regular(path: Path) -> int | None:
    """A read-only descriptor of `path` if it is a regular file reached without following a symlink, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # missing, a symlink (ELOOP), or unreadable
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _part_size(t: Transfer) -> int | None:
    """The size of an existing .part that may be resumed; None after removing a planted symlink or another
    user's file (the run then starts the file afresh instead of failing on it every time).

    Raises:
        DownloadError: the .part is a directory or a device (not ours to remove): the operator must look.
    """
    try:
        fd = os.open(t.part, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        target = os.readlink(t.part)
        t.lg.warning("download.part_link_removed", part=str(t.part), target=target, reason="a symlink, never followed")
        discard(t.part, t.meta)
        return None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        raise DownloadError(
            f"downloading {t.url_shown}: {t.part} is not a regular file (mode {stat.filemode(st.st_mode)}); "
            "remove it and run again"
        )
    if not ours(st):
        t.lg.warning("download.part_untrusted_removed", part=str(t.part), reason="owned or writable by another user")
        discard(t.part, t.meta)
        return None
    return st.st_size


def _read_meta(path: Path) -> dict[str, Any] | None:
    fd = open_regular(path)
    if fd is None:
        return None
    try:
        with os.fdopen(fd, "r") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def hash_prefix(path: Path, limit: int | None) -> tuple[Any, int]:
    """A sha256 object over the first `limit` bytes of `path` (all of it when None), and the count hashed.

    Raises:
        OSError: `path` is missing, a symlink (ELOOP: never followed) or unreadable.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as f:
        return sha256_stream(f, limit)


def write_failed(t: Transfer, exc: OSError, total: int | None) -> DownloadError:
    """The error for a .part that could not be written; a full directory is told with its numbers.

    The .part file and its sidecar are kept: once there is room, a re-run resumes from what reached the disk.
    """
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return DownloadError(f"downloading {t.url_shown}: writing {t.part} failed: {exc}")
    try:
        kept = os.stat(t.part, follow_symlinks=False).st_size
    except OSError:
        kept = 0
    try:
        usage = shutil.disk_usage(t.spec.dest_dir)
        room = f"{human(usage.free)} free of {human(usage.total)}"
    except OSError:
        room = "free space unknown"
    of = f"of {human(total)} ({total:,} bytes)" if total is not None else "(total size not announced by the server)"
    t.lg.error("download.disk_full", part=str(t.part), kept_bytes=kept, total=total, error=str(exc))
    return DownloadError(
        f"downloading {t.url_shown}: {t.spec.dest_dir} is full ({exc.strerror}): {human(kept)} ({kept:,} bytes) "
        f"{of} written, {room}; the partial file {t.part.name} is kept and a re-run resumes once there is room",
        f"errno {exc.errno}; part {t.part}; kept {kept} bytes",
    )


def ours(st: os.stat_result) -> bool:
    """A file only this process' user (root) can change: owned by us, not writable by group or others."""
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def ensure_dir(path: Path) -> None:
    """Create the download directory (0755) if it is missing."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o755)  # noqa: S103 - ostree-production and operators read it


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def discard(*paths: Path) -> None:
    """Remove each path (a link itself, never its target); a missing one is fine."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _url_digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()
