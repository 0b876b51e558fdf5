r"""Bootable UEFI disk images for the VM tests: the stand-in Apollo image and the network-boot stand-in.

Each image is a GPT disk whose EFI system partition (FAT, type ef00) holds `\EFI\BOOT\BOOTX64.EFI`, the path a
UEFI firmware boots from a disk that has no boot entry of its own. That file is a unified kernel image: systemd's
EFI stub (systemd-boot-efi's `linuxx64.efi.stub`) with a Linux kernel, a command line and a busybox-static
initramfs glued in as PE sections by `objcopy`. Its `/init` prints one line on the serial console (the marker:
`HARMONIC-COS-STANDIN <release>`, or `NETBOOT-STANDIN`) and powers off at once, so the host reads from the serial
log which disk the firmware booted. The Apollo stand-in has a second partition (`cos-root`) of random bytes seeded
by the release, so two releases differ in more than one line and a byte-for-byte comparison means something.

    LBA 0-33       protective MBR + primary GPT (disk GUID and partition GUIDs derived from the marker)
    1 MiB          partition 1, EFI system partition: \EFI\BOOT\BOOTX64.EFI (about 9 MiB)
    after it       partition 2, cos-root (Apollo stand-in only): seeded random bytes
    last 33 LBAs   backup GPT (at the end of the image, not of the disk it is written to, as with any image)

Images are cached under the test cache directory (`boot-<hash of the recipe>/disk.img`): the recipe holds the
marker, the sizes, the GUIDs and the SHA-256 of every input file (kernel, stub, busybox), so a changed input builds
a new image and an unchanged one is reused. Nothing here needs root or a loop device (mkfs.vfat -C, mcopy, sgdisk
on a plain file).
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
BUSYBOX = Path("/bin/busybox")
TOOLS = ("objcopy", "sgdisk", "mkfs.vfat", "mcopy")
APOLLO_MARKER = "HARMONIC-COS-STANDIN"
NETBOOT_MARKER = "NETBOOT-STANDIN"
ESP_LOADER = r"\EFI\BOOT\BOOTX64.EFI"
MIB = 1024 * 1024
SECTOR = 512
# Bump when the way an image is assembled changes without its inputs changing.
_RECIPE_VERSION = 1
_KEEP = 8
# The kernel command line inside the image: serial console, a panic ends the run (QEMU runs with -no-reboot).
_CMDLINE = "console=ttyS0 panic=-1 loglevel=4"
_INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "{line}"
/bin/busybox poweroff -f
"""


@dataclass(frozen=True, slots=True)
class BootImage:
    """A built bootable disk image and what its OS prints."""

    path: Path
    line: str  # the line its /init prints on the serial console
    disk_guid: str
    esp_guid: str
    size: int


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


def _guid(seed: str, what: str) -> str:
    digest = hashlib.sha256(f"{seed}/{what}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4)).upper()


def _cpio_newc(entries: list[tuple[str, int, bytes, int]]) -> bytes:
    """A cpio archive in the kernel's `newc` format: (name, mode, data, rdev major<<8|minor) per entry."""
    out = bytearray()

    def add(name: str, mode: int, data: bytes, rdev: int, ino: int) -> None:
        name_b = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev >> 8, rdev & 0xFF, len(name_b), 0]
        out.extend(b"070701" + b"".join(f"{v:08X}".encode() for v in fields))
        out.extend(name_b)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data, rdev) in enumerate(entries, start=1):
        add(name, mode, data, rdev, ino)
    add("TRAILER!!!", 0, b"", 0, 0)
    return bytes(out)


def _initramfs(line: str) -> bytes:
    """A gzip'd initramfs: busybox-static and an /init that prints `line` on the console and powers off."""
    dir_mode, file_mode, chr_mode = 0o040755, 0o100755, 0o020600
    entries = [
        ("bin", dir_mode, b"", 0),
        ("dev", dir_mode, b"", 0),
        ("dev/console", chr_mode, b"", (5 << 8) | 1),
        ("proc", dir_mode, b"", 0),
        ("bin/busybox", file_mode, BUSYBOX.read_bytes(), 0),
        ("init", file_mode, _INIT.format(line=line).encode(), 0),
    ]
    return gzip.compress(_cpio_newc(entries), compresslevel=6, mtime=0)


def recipe(kernel: Path, line: str, *, esp_mib: int, payload_mib: int) -> dict[str, object]:
    """Everything that decides an image's bytes; its hash names the cache entry."""
    return {
        "version": _RECIPE_VERSION,
        "line": line,
        "cmdline": _CMDLINE,
        "init": _INIT,
        "esp_mib": esp_mib,
        "payload_mib": payload_mib,
        "kernel": _sha256(kernel),
        "stub": _sha256(STUB),
        "busybox": _sha256(BUSYBOX),
    }


def _run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def _uki(work: Path, kernel: Path, line: str) -> Path:
    """The unified kernel image: the stub plus .osrel, .cmdline, .linux and .initrd sections."""
    osrel = work / "os-release"
    osrel.write_text(f'ID=harmonic-standin\nNAME="Harmonic cOS stand-in"\nPRETTY_NAME="{line}"\n')
    cmdline = work / "cmdline"
    cmdline.write_text(_CMDLINE)
    initrd = work / "initrd.cpio.gz"
    initrd.write_bytes(_initramfs(line))
    out = work / "BOOTX64.EFI"
    sections: tuple[tuple[str, Path, int], ...] = ((".osrel", osrel, 0x20000), (".cmdline", cmdline, 0x30000))
    sections += ((".linux", kernel, 0x2000000), (".initrd", initrd, 0x3000000))
    argv = ["objcopy"]
    for name, path, vma in sections:
        argv += ["--add-section", f"{name}={path}", "--change-section-vma", f"{name}={vma:#x}"]
    _run([*argv, str(STUB), str(out)])
    return out


def _build(dest: Path, kernel: Path, line: str, *, esp_mib: int, payload_mib: int) -> None:
    work = dest.parent
    uki = _uki(work, kernel, line)
    esp = work / "esp.img"
    esp.unlink(missing_ok=True)
    volume_id = hashlib.sha256(line.encode()).hexdigest()[:8]
    _run(["mkfs.vfat", "-C", "-n", "ESP", "-i", volume_id, str(esp), str(esp_mib * 1024)])
    efi_boot = "::/EFI/BOOT"
    subprocess.run(["mmd", "-i", str(esp), "::/EFI", efi_boot], check=True)
    subprocess.run(["mcopy", "-i", str(esp), str(uki), f"{efi_boot}/BOOTX64.EFI"], check=True)
    esp_start = MIB // SECTOR
    payload_start = esp_start + esp_mib * MIB // SECTOR
    total = MIB + (esp_mib + payload_mib) * MIB + 3 * 2048 + 33 * SECTOR  # room for the backup GPT; odd size
    dest.unlink(missing_ok=True)
    with dest.open("wb") as fh:
        fh.truncate(total)
    sgdisk = ["sgdisk", "-o", "-U", _guid(line, "disk")]
    sgdisk += ["-n", f"1:{esp_start}:+{esp_mib}M", "-t", "1:ef00", "-c", "1:EFI system partition"]
    sgdisk += ["-u", f"1:{_guid(line, 'esp')}"]
    if payload_mib:
        sgdisk += ["-n", f"2:{payload_start}:+{payload_mib}M", "-t", "2:8300", "-c", "2:cos-root"]
        sgdisk += ["-u", f"2:{_guid(line, 'root')}"]
    _run([*sgdisk, str(dest)])
    with dest.open("r+b") as fh:
        fh.seek(esp_start * SECTOR)
        with esp.open("rb") as src:
            shutil.copyfileobj(src, fh, MIB)
        if payload_mib:
            fh.seek(payload_start * SECTOR)
            fh.write(random.Random(line).randbytes(payload_mib * MIB))
    esp.unlink()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def missing_tools() -> list[str]:
    """Host tools or files the images need that are not installed (scripts/bootstrap.sh installs them)."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    return missing + [str(p) for p in (STUB, BUSYBOX) if not p.exists()]


def boot_image(cache: Path, kernel: Path, line: str, *, esp_mib: int = 16, payload_mib: int = 0) -> BootImage:
    """The cached image whose OS prints `line` (built first if its recipe has no cache entry; a few seconds).

    Args:
        cache: the test cache directory (images live in `boot-<hash>/`).
        kernel: the Linux kernel to boot (the guest image's: its serial driver is built in).
        line: what /init prints on the serial console.
        esp_mib, payload_mib: sizes of the EFI system partition and of the cos-root partition (0: none).
    """
    if missing := missing_tools():
        raise RuntimeError(f"bootable images need {', '.join(missing)}: run scripts/bootstrap.sh")
    rec = recipe(kernel, line, esp_mib=esp_mib, payload_mib=payload_mib)
    key = hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:16]
    final = cache / f"boot-{key}"
    with _locked(cache / f".boot-{key}.lock"):
        if not (final / "recipe.json").exists():
            work = final.with_name(final.name + ".build")
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            _build(work / "disk.img", kernel, line, esp_mib=esp_mib, payload_mib=payload_mib)
            for leftover in ("BOOTX64.EFI", "initrd.cpio.gz", "cmdline", "os-release"):
                (work / leftover).unlink(missing_ok=True)
            (work / "recipe.json").write_text(json.dumps(rec, indent=2, sort_keys=True) + "\n")
            shutil.rmtree(final, ignore_errors=True)
            work.rename(final)
        else:
            os.utime(final)
    _prune(cache)
    disk = final / "disk.img"
    return BootImage(disk, line, _guid(line, "disk"), _guid(line, "esp"), disk.stat().st_size)


def _prune(cache: Path) -> None:
    entries = [p for p in cache.glob("boot-*") if p.is_dir() and not p.name.endswith(".build")]
    cutoff = time.time() - 3600  # never an image another run may be about to open
    for old in sorted(entries, key=lambda p: p.stat().st_mtime, reverse=True)[_KEEP:]:
        if old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)


def apollo_image(cache: Path, kernel: Path, release: str) -> BootImage:
    """The stand-in Apollo image of `release`: prints `HARMONIC-COS-STANDIN <release>` and powers off."""
    return boot_image(cache, kernel, f"{APOLLO_MARKER} {release}", esp_mib=16, payload_mib=6)


def netboot_image(cache: Path, kernel: Path) -> BootImage:
    """The network-boot stand-in: first in the firmware's order, prints `NETBOOT-STANDIN` and powers off."""
    return boot_image(cache, kernel, NETBOOT_MARKER, esp_mib=16)
