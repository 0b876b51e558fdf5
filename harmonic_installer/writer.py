"""ostree-production: list the ISOs it sees, and write a verified ISO to the disk.

The vendor tool reads ISOs from the ISO dir (/data) and asks for confirmation before it writes; we answer
it (the original piped `yes`). After a failed write the disk's partition tables are wiped so a
half-written disk cannot boot (coreos-installer does the same), unless the operator keeps it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from harmonic_installer.artifacts import VerifiedArtifact
from harmonic_installer.disks import DiskInfo
from harmonic_installer.errors import ChecksumError, CommandError, WriteError
from harmonic_installer.hashing import sha256_stream
from harmonic_installer.runner import Runner

log = structlog.get_logger()

_WIPE_BYTES = 1024 * 1024  # MBR + primary GPT at the start, backup GPT at the end
_BLKRRPART = 0x125F


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What was written where."""

    disk: str
    image: Path
    image_sha256: str
    image_size: int
    duration_s: float


def list_isos(runner: Runner, *, tool: str, env: Mapping[str, str]) -> str:
    """`ostree-production list-isos`, logged; returns its output."""
    try:
        result = runner.run([tool, "list-isos"], env=env, timeout=120, log_output=True)
    except CommandError as exc:
        raise WriteError(f"{tool} list-isos failed: {_cause(exc)}", exc.output_tail) from exc
    return result.output


def write_command(tool: str, disk: str, image: Path | str) -> list[str]:
    """The vendor tool's write call (also shown by the plan); its confirmation prompt is answered 'y'."""
    return [tool, "-D", disk, "from", str(image)]


def write(
    runner: Runner,
    *,
    tool: str,
    disk: DiskInfo,
    image: VerifiedArtifact,
    iso_dir: Path,
    env: Mapping[str, str],
    timeout: float,
    wipe_on_failure: bool,
    recheck_disk: Callable[[], DiskInfo] | None = None,
) -> WriteResult:
    """Write the verified ISO to the disk with the vendor tool, answering its confirmation prompt.

    Right before the write (after list-isos), the disk is looked up again with `recheck_disk` (its checks
    repeated; the fresh DiskInfo is written) and the ISO is confirmed to be the file that was verified.

    Raises:
        WriteError: the tool is missing, the ISO is not where the tool reads, or the write failed.
        PreflightError: from `recheck_disk`: the disk changed or became unfit (nothing written).
        ChecksumError: the ISO is not the verified file any more (nothing written).
    """
    if shutil.which(tool, path=env.get("PATH")) is None:
        raise WriteError(f"{tool} is not installed (the vendor packages should have provided it)")
    if image.path.parent.resolve() != iso_dir.resolve():
        raise WriteError(f"the ISO {image.path} is not in {iso_dir}, where {tool} reads images")
    listed = list_isos(runner, tool=tool, env=env)
    if image.path.name not in listed:
        log.warning("write.iso_not_listed", iso=image.path.name, tool=tool)
    if recheck_disk is not None:
        disk = recheck_disk()
    confirm_verified(image)
    started = time.monotonic()
    log.info("write.started", disk=disk.path, image=str(image.path), sha256=image.sha256, size=image.size)
    try:
        runner.run(
            write_command(tool, disk.path, image.path),
            env=env,
            timeout=timeout,
            answer="y",
            log_output=True,
        )
    except BaseException as exc:
        if wipe_on_failure:
            _wipe_partition_tables(disk)
        else:
            log.warning("write.disk_left_as_is", disk=disk.path, reason="write.wipe_on_failure=false")
        if isinstance(exc, CommandError):
            raise WriteError(f"{tool} failed to write {disk.path}: {_cause(exc)}", exc.output_tail) from exc
        raise
    duration = round(time.monotonic() - started, 3)
    log.info("write.finished", disk=disk.path, duration_s=duration)
    return WriteResult(disk.path, image.path, image.sha256, image.size, duration)


def confirm_verified(image: VerifiedArtifact) -> None:
    """Confirm the file at image.path is still the one that was verified: same inode, size and mtime, else
    the same SHA-256 (re-hashed); a symlink planted in its place is refused.

    Raises:
        ChecksumError: the file is gone, is not a regular file, or its content no longer matches (exit 4).
    """
    shown = str(image.path)
    try:
        fd = os.open(image.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ChecksumError(
            f"right before the write: the verified ISO {shown} cannot be opened ({exc.strerror}); nothing written"
        ) from exc
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ChecksumError(f"right before the write: {shown} is not a regular file any more; nothing written")
        now = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if image.identity is not None and now == image.identity:
            log.info("write.iso_unchanged", iso=shown, sha256=image.sha256)
            return
        log.warning("write.iso_changed", iso=shown, verified=image.identity, now=now, action="hashing it again")
        hasher, size = sha256_stream(f)
    digest = hasher.hexdigest()
    if digest != image.sha256 or size != image.size:
        raise ChecksumError(
            f"right before the write: {shown} changed since it was verified (sha256 now {digest}, "
            f"{size:,} bytes; verified {image.sha256}, {image.size:,} bytes); nothing written, "
            "a re-run downloads it again",
        )
    log.info("write.iso_reverified", iso=shown, sha256=digest)


def _cause(exc: CommandError) -> str:
    lines = [ln.strip() for ln in exc.output_tail.splitlines() if ln.strip()]
    return f"{exc} ({lines[-1][:200]})" if lines else str(exc)


def _wipe_partition_tables(disk: DiskInfo) -> None:
    """Zero the first and last MiB (MBR, primary and backup GPT) so a half-written disk cannot boot."""
    try:
        fd = os.open(disk.path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        log.error("write.wipe_failed", disk=disk.path, error=str(exc))
        return
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        zeros = bytes(min(_WIPE_BYTES, size))
        os.pwrite(fd, zeros, 0)
        if size > _WIPE_BYTES:
            os.pwrite(fd, zeros, size - len(zeros))
        os.fsync(fd)
        with contextlib.suppress(OSError):
            fcntl.ioctl(fd, _BLKRRPART)
        log.warning("write.disk_wiped", disk=disk.path, reason="write failed: partition tables cleared, cannot boot")
    except OSError as exc:
        log.error("write.wipe_failed", disk=disk.path, error=str(exc))
    finally:
        os.close(fd)
