"""The bootable stand-in disk images (tests/support/bootable.py): GPT, a FAT ESP, a unified kernel image."""

from __future__ import annotations

import subprocess
import zlib
from pathlib import Path

import pytest

from tests.support import bootable

pytestmark = pytest.mark.integration


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    """A stand-in for the kernel file: the layout checks do not boot it (the VM tests do)."""
    path = tmp_path / "vmlinuz"
    path.write_bytes(b"MZ fake kernel\n" * 1000)
    return path


def _cpio_names(data: bytes) -> dict[str, bytes]:
    """name -> content of a newc cpio archive."""
    out: dict[str, bytes] = {}
    at = 0
    while True:
        fields = [int(data[at + 6 + 8 * i : at + 14 + 8 * i], 16) for i in range(13)]
        size, namesize = fields[6], fields[11]
        name = data[at + 110 : at + 110 + namesize - 1].decode()
        at += 110 + namesize
        at += -at % 4
        if name == "TRAILER!!!":
            return out
        out[name] = data[at : at + size]
        at += size
        at += -at % 4


def test_apollo_image_is_gpt_with_an_esp_holding_a_unified_kernel_image(kernel: Path, tmp_path: Path) -> None:
    """The Apollo stand-in: GPT, an ESP whose BOOTX64.EFI is stub + kernel + an initramfs printing the marker."""
    missing = bootable.missing_tools()
    assert not missing, f"run scripts/bootstrap.sh: missing {missing}"
    image = bootable.apollo_image(tmp_path / "cache", kernel, "release-1.2.3")
    assert image.line == "HARMONIC-COS-STANDIN release-1.2.3"
    table = subprocess.run(["sgdisk", "-p", str(image.path)], capture_output=True, text=True, check=True).stdout
    assert f"Disk identifier (GUID): {image.disk_guid}" in table
    assert "EF00  EFI system partition" in table
    assert "8300  cos-root" in table
    esp = f"{image.path}@@{1024 * 1024}"
    listing = subprocess.run(["mdir", "-b", "-i", esp, "::/EFI/BOOT"], capture_output=True, text=True, check=True)
    assert "::/EFI/BOOT/BOOTX64.EFI" in listing.stdout
    uki = tmp_path / "BOOTX64.EFI"
    subprocess.run(["mcopy", "-i", esp, "::/EFI/BOOT/BOOTX64.EFI", str(uki)], check=True)
    sections = subprocess.run(["objdump", "-h", str(uki)], capture_output=True, text=True, check=True).stdout
    for name in (".osrel", ".cmdline", ".linux", ".initrd"):
        assert name in sections
    initrd = tmp_path / "initrd"
    subprocess.run(["objcopy", "-O", "binary", "--only-section=.initrd", str(uki), str(initrd)], check=True)
    files = _cpio_names(zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(initrd.read_bytes()))  # padding after
    assert b'echo "HARMONIC-COS-STANDIN release-1.2.3"' in files["init"]
    assert b"poweroff -f" in files["init"]
    assert files["bin/busybox"] == bootable.BUSYBOX.read_bytes()
    assert "dev/console" in files


def test_images_are_cached_by_recipe_and_differ_by_release(kernel: Path, tmp_path: Path) -> None:
    """The same recipe reuses the cached file; another release gives other bytes and other GUIDs."""
    cache = tmp_path / "cache"
    one = bootable.apollo_image(cache, kernel, "release-1")
    built = one.path.stat().st_mtime_ns
    assert bootable.apollo_image(cache, kernel, "release-1").path.stat().st_mtime_ns == built
    two = bootable.apollo_image(cache, kernel, "release-2")
    assert two.path != one.path
    assert two.disk_guid != one.disk_guid
    assert two.path.read_bytes() != one.path.read_bytes()
    net = bootable.netboot_image(cache, kernel)
    assert net.line == "NETBOOT-STANDIN"
    assert (
        "cos-root"
        not in subprocess.run(["sgdisk", "-p", str(net.path)], capture_output=True, text=True, check=True).stdout
    )
