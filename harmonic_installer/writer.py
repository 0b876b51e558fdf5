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
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from harmonic_installer.disks import DiskInfo
from harmonic_installer.download import VerifiedArtifact
from harmonic_installer.errors import CommandError, WriteError
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
    listed_isos: str


def list_isos(runner: Runner, *, tool: str, env: Mapping[str, str]) -> str:
    """`ostree-production list-isos`, logged; returns its output."""
    try:
        result = runner.run([tool, "list-isos"], env=env, timeout=120, log_output=True)
    except CommandError as exc:
        raise WriteError(f"{tool} list-isos failed: {_cause(exc)}", exc.output_tail) from exc
    return result.output


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
) -> WriteResult:
    """Write the verified ISO to the disk with the vendor tool, answering its confirmation prompt.

    Raises:
        WriteError: the tool is missing, the ISO is not where the tool reads, or the write failed.
    """
    if shutil.which(tool, path=env.get("PATH")) is None:
        raise WriteError(f"{tool} is not installed (the vendor packages should have provided it)")
    if image.path.parent.resolve() != iso_dir.resolve():
        raise WriteError(f"the ISO {image.path} is not in {iso_dir}, where {tool} reads images")
    listed = list_isos(runner, tool=tool, env=env)
    if image.path.name not in listed:
        log.warning("write.iso_not_listed", iso=image.path.name, tool=tool)
    started = time.monotonic()
    log.info("write.started", disk=disk.path, image=str(image.path), sha256=image.sha256, size=image.size)
    try:
        runner.run(
            [tool, "-D", disk.path, "from", str(image.path)],
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
    return WriteResult(disk.path, image.path, image.sha256, image.size, duration, listed)


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
