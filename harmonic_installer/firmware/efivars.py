"""EFI variables through efivarfs: read, list, write (clearing the immutable flag) and delete."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
from pathlib import Path

EFIVARS_DIR = Path("/sys/firmware/efi/efivars")
GLOBAL_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"  # EFI_GLOBAL_VARIABLE: Boot####, BootOrder, BootNext
_ATTRS = 0x7  # NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_IMMUTABLE_FL = 0x10

# ---------------------------------------------------------------------------------------------------------
# efivarfs.


class Efivars:
    """EFI variables through efivarfs (a directory of `<Name>-<guid>` files: 4 attribute bytes + data)."""

    def __init__(self, directory: Path = EFIVARS_DIR) -> None:
        self.directory = directory

    def unavailable(self) -> str | None:
        """Why variables cannot be used here (legacy BIOS, efivarfs not mounted), or None."""
        if not self.directory.parent.is_dir():
            return f"no UEFI firmware ({self.directory.parent} does not exist: legacy BIOS boot)"
        if not self.directory.is_dir():
            return f"efivarfs is not mounted at {self.directory}"
        return None

    def read(self, name: str, guid: str) -> bytes | None:
        """The variable's data (without the attributes), or None when it does not exist."""
        try:
            raw = (self.directory / f"{name}-{guid}").read_bytes()
        except FileNotFoundError:
            return None
        return raw[4:] if len(raw) >= 4 else b""

    def names(self, guid: str) -> list[str]:
        """Names of the variables under `guid`."""
        suffix = f"-{guid}"
        try:
            return sorted(p.name[: -len(suffix)] for p in self.directory.iterdir() if p.name.endswith(suffix))
        except OSError:
            return []

    def write(self, name: str, guid: str, data: bytes, attrs: int = _ATTRS) -> None:
        """Create or replace the variable: one write() of the attributes and the data.

        Raises:
            OSError: the kernel or the firmware refused (read-only efivarfs, NVRAM full, EINVAL ...).
        """
        path = self.directory / f"{name}-{guid}"
        if path.exists():
            self.delete(name, guid)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            payload = struct.pack("<I", attrs) + data
            if os.write(fd, payload) != len(payload):
                raise OSError(errno.EIO, "short write to efivarfs", str(path))
        finally:
            os.close(fd)

    def delete(self, name: str, guid: str) -> None:
        """Remove the variable (clearing the immutable flag efivarfs sets on most variables)."""
        path = self.directory / f"{name}-{guid}"
        _make_mutable(path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _make_mutable(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        buf = bytearray(4)
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buf)
        flags = struct.unpack("<I", buf)[0]
        if flags & _FS_IMMUTABLE_FL:
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("<I", flags & ~_FS_IMMUTABLE_FL))
    except OSError as exc:
        if exc.errno not in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL):  # a file system without flags
            raise
    finally:
        os.close(fd)
