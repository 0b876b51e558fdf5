"""Loop devices as target disks: a sparse backing file attached with losetup, always detached at the end.

    with loop_device(tmp_path, size=64 * MiB) as disk:            # /dev/loopN, all zeros
    with loop_device(tmp_path, size=..., partitions=["size=8MiB", ","]) as disk:   # GPT + /dev/loopNp1, p2
    with loop_device(tmp_path, size=..., read_only=True) as disk:

Needs root. Detaching retries while the kernel still reports the device busy (udev probes, a lingering
reader). While attached, the device is flagged autoclear and held open by this process, so even when the
process is killed (SIGKILL, a SIGTERM that skips `finally`) the kernel detaches it once the last user is gone.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass(frozen=True, slots=True)
class LoopDevice:
    """An attached loop device: its node, backing file, size and partition nodes."""

    path: str  # /dev/loopN
    backing: Path
    size: int
    partitions: tuple[str, ...]  # /dev/loopNp1, ...
    read_only: bool

    @property
    def name(self) -> str:
        """The kernel name, e.g. loop3."""
        return os.path.basename(self.path)

    def nodes(self) -> tuple[str, ...]:
        """The device node and its partitions' nodes (what a sandbox must see)."""
        return (self.path, *self.partitions)


def _run(argv: Sequence[str], *, stdin: str | None = None) -> str:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, input=stdin).stdout


def _partition_nodes(path: str) -> tuple[str, ...]:
    name = os.path.basename(path)
    sys_block = Path("/sys/class/block") / name
    found = sorted(p.name for p in sys_block.iterdir() if p.name.startswith(f"{name}p"))
    nodes = []
    for part in found:
        node = f"/dev/{part}"
        _ensure_node(node, (Path("/sys/class/block") / part / "dev").read_text().strip())
        nodes.append(node)
    return tuple(nodes)


def _ensure_node(node: str, dev: str) -> None:
    """Create a missing device node (hosts without udev do not make partition nodes)."""
    if os.path.exists(node):
        return
    major, minor = (int(x) for x in dev.split(":"))
    os.mknod(node, 0o660 | 0o060000, os.makedev(major, minor))


def _wait_partitions(path: str, count: int) -> tuple[str, ...]:
    """The partition nodes, once the kernel knows them; `partx --add` when its own scan finds none.

    Some kernels (minimal VM kernels) are built without partition table parsers: there `losetup --partscan`
    finds nothing and the partitions have to be added from user space (BLKPG).
    """
    deadline = time.monotonic() + 10
    added = False
    while True:
        nodes = _partition_nodes(path)
        if len(nodes) >= count or time.monotonic() > deadline:
            return nodes
        if not added and time.monotonic() > deadline - 9.5:
            subprocess.run(["partx", "--add", path], check=False, capture_output=True)
            added = True
        time.sleep(0.05)


_LOOP_SET_STATUS64 = 0x4C04
_LOOP_GET_STATUS64 = 0x4C05
_LO_FLAGS_AUTOCLEAR = 4
_LO_FLAGS_OFFSET = 52  # struct loop_info64: five __u64, then lo_number, lo_encrypt_type, lo_encrypt_key_size


def _hold_with_autoclear(path: str) -> int:
    """Open the device (close-on-exec) and flag it autoclear; the returned fd keeps it attached."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        info = bytearray(fcntl.ioctl(fd, _LOOP_GET_STATUS64, bytes(232)))
        flags = struct.unpack_from("=I", info, _LO_FLAGS_OFFSET)[0]
        struct.pack_into("=I", info, _LO_FLAGS_OFFSET, flags | _LO_FLAGS_AUTOCLEAR)
        fcntl.ioctl(fd, _LOOP_SET_STATUS64, bytes(info))
    except OSError:
        os.close(fd)
        raise
    return fd


def autoclear(path: str) -> bool:
    """True when the kernel will detach `path` at its last close."""
    return Path(f"/sys/class/block/{os.path.basename(path)}/loop/autoclear").read_text().strip() == "1"


def detach(path: str, *, attempts: int = 50) -> None:
    """Detach a loop device, retrying while it is busy; never raises for an already detached device."""
    for _ in range(attempts):
        result = subprocess.run(["losetup", "--detach", path], check=False, capture_output=True, text=True)
        if result.returncode == 0 or "No such device" in result.stderr:
            return
        time.sleep(0.1)
    # Last resort: let the kernel free it when its last user closes it.
    subprocess.run(["losetup", "--detach", path], check=False, capture_output=True)


def attached_to(backing: Path) -> list[str]:
    """The loop devices currently attached to `backing`."""
    out = _run(["losetup", "--noheadings", "--output", "NAME", "--associated", str(backing)])
    return [line.strip() for line in out.splitlines() if line.strip()]


@contextmanager
def loop_device(
    directory: Path,
    *,
    size: int,
    read_only: bool = False,
    partitions: Sequence[str] | None = None,
    name: str = "disk.img",
) -> Iterator[LoopDevice]:
    """Attach a sparse file of `size` bytes as a loop device for the block; detach it afterwards.

    Args:
        directory: where the backing file is created.
        size: bytes (a multiple of 512).
        read_only: attach with --read-only.
        partitions: sfdisk partition lines (e.g. ["size=8MiB", ","]; "," takes the rest), written as a GPT
            before attaching; the partitions appear as /dev/loopNp1, ...
    """
    if size % 512:
        raise ValueError("a loop device's size must be a multiple of 512 bytes")
    directory.mkdir(parents=True, exist_ok=True)
    backing = directory / name
    with backing.open("wb") as fh:
        fh.truncate(size)
    if partitions:
        script = "label: gpt\n" + "".join(f"{line}\n" for line in partitions)
        _run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(backing)], stdin=script)
    argv = ["losetup", "--find", "--show"]
    if read_only:
        argv.append("--read-only")
    if partitions:
        argv.append("--partscan")
    path = _run([*argv, str(backing)]).strip()
    parts: tuple[str, ...] = ()
    anchor: int | None = None
    try:
        anchor = _hold_with_autoclear(path)
        parts = _wait_partitions(path, len(partitions)) if partitions else ()
        yield LoopDevice(path, backing, size, parts, read_only)
    finally:
        if parts:
            subprocess.run(["partx", "--delete", path], check=False, capture_output=True)
        if anchor is not None:
            os.close(anchor)
        detach(path)
        for node in parts:  # nodes we may have made ourselves: remove them once the kernel dropped them
            if os.path.exists(node) and not Path("/sys/class/block", os.path.basename(node)).exists():
                os.unlink(node)


def read_device(path: str, length: int, *, offset: int = 0) -> bytes:
    """`length` bytes of a device (or file) from `offset`, read past the page cache's stale view."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.lseek(fd, offset, os.SEEK_SET)
        chunks = []
        remaining = length
        while remaining:
            chunk = os.read(fd, min(remaining, 4 * MiB))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def first_difference(device: str, reference: Path) -> int | None:
    """The offset of the first byte where `device` differs from the whole of `reference`, or None if equal."""
    size = reference.stat().st_size
    offset = 0
    with reference.open("rb") as fh:
        while offset < size:
            want = fh.read(4 * MiB)
            have = read_device(device, len(want), offset=offset)
            if have != want:
                for i, (a, b) in enumerate(zip(have, want, strict=False)):
                    if a != b:
                        return offset + i
                return offset + min(len(have), len(want))
            offset += len(want)
    return None


def is_zero(device: str, length: int) -> bool:
    """True when the first `length` bytes of `device` are all zero."""
    offset = 0
    while offset < length:
        chunk = read_device(device, min(4 * MiB, length - offset), offset=offset)
        if not chunk or chunk.count(0) != len(chunk):
            return False
        offset += len(chunk)
    return True
