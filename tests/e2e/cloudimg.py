"""A local stand-in for the Ubuntu cloud image that packaging/packer starts from, cached by recipe hash.

The real template boots `<series>-server-cloudimg-amd64.img` (a qcow2 disk: GPT, the root filesystem in
partition 1 labelled `cloudimg-rootfs`, an EFI system partition, cloud-init, openssh-server, a kernel) with a
NoCloud seed and provisions it over SSH. That image cannot be fetched here, so this module builds one of the
same shape from Debian 12 with `mmdebstrap`: root ext4 in partition 1 (label `cloudimg-rootfs`), an ESP in
partition 15 whose `\\EFI\\BOOT\\BOOTX64.EFI` is a unified kernel image (the tree's kernel and initrd behind
systemd's EFI stub, booted by OVMF), cloud-init limited to NoCloud, sshd, and systemd-networkd with DHCP (the
Ubuntu image gets the same from cloud-init's netplan fallback).

The image is cached under `$HARMONIC_TEST_CACHE` in `cloudimg-<hash of the recipe>/`, with its SHA-256 (what
Packer's `iso_checksum` checks) and the kernel and initrd (what the in-memory boot uses: MAAS boots its own
kernel of the image's base series, not one from the image).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.e2e import vm

SUITE = vm.SUITE
PACKAGES = (
    "systemd-sysv",
    "udev",
    "dbus",
    "cloud-init",
    "openssh-server",
    "python3",
    "ca-certificates",
    "curl",
    "wget",
    "iproute2",
    "e2fsprogs",
    "fdisk",
    "busybox",  # the initramfs's wget and tar (the in-memory boot fetches the root tarball with them)
    "linux-image-amd64",
)
ROOT_LABEL = "cloudimg-rootfs"
# Partition 1 (root) and 15 (ESP), as in Ubuntu's cloud images; sizes in MiB.
ROOT_MIB = 2560
ESP_MIB = 96
FILES: dict[str, str] = {
    "etc/hostname": "cloudimg\n",
    "etc/hosts": "127.0.0.1 localhost\n",
    "etc/fstab": f"LABEL={ROOT_LABEL} / ext4 discard,errors=remount-ro 0 1\n",
    "etc/systemd/network/20-wired.network": "[Match]\nName=en*\n\n[Network]\nDHCP=ipv4\n",
    "etc/cloud/cloud.cfg.d/90-cloudimg.cfg": "datasource_list: [ NoCloud, None ]\nnetwork: {config: disabled}\n",
    "etc/systemd/system/systemd-networkd-wait-online.service.d/cloudimg.conf": (
        "[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=60\n"
    ),
    "etc/machine-id": "",
}
ENABLE = ("systemd-networkd.service", "systemd-networkd-wait-online.service", "ssh.service")
MASK = ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer")
CMDLINE = f"root=LABEL={ROOT_LABEL} rw console=ttyS0 panic=-1"
EFI_STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
_RECIPE_VERSION = 1


def recipe() -> dict[str, object]:
    """Everything that decides the image's contents; its hash names the cache entry."""
    return {
        "version": _RECIPE_VERSION,
        "mmdebstrap": _mmdebstrap_argv(Path("TARGET")),
        "files": FILES,
        "enable": ENABLE,
        "mask": MASK,
        "cmdline": CMDLINE,
        "layout": {"root_mib": ROOT_MIB, "esp_mib": ESP_MIB, "label": ROOT_LABEL},
    }


def _mmdebstrap_argv(target: Path) -> list[str]:
    argv = ["mmdebstrap", "--variant=apt", "--mode=root", f"--include={','.join(PACKAGES)}"]
    argv += [f"--dpkgopt=path-exclude={p}" for p in vm._EXCLUDES]
    return [*argv, SUITE, str(target), vm.MIRROR]


@dataclass(frozen=True, slots=True)
class CloudImage:
    """The stand-in cloud image (qcow2) with its SHA-256, and the kernel and initrd of its series."""

    qcow2: Path
    sha256: str
    kernel: Path
    initrd: Path
    tree: Path


def cloud_image() -> CloudImage:
    """The cached stand-in cloud image, built first when its recipe has no cache entry (a few minutes)."""
    key = hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:16]
    final = vm.cache_dir() / f"cloudimg-{key}"
    with vm._locked(vm.cache_dir() / f".cloudimg-{key}.lock"):
        if not (final / "recipe.json").exists():
            _build(final)
        else:
            os.utime(final)
    # Keep the two most recently used recipes (another checkout may use an older one at the same time).
    vm._prune([p for p in vm.cache_dir().glob("cloudimg-*") if p.is_dir()], 2)
    return CloudImage(
        qcow2=final / "cloudimg.qcow2",
        sha256=(final / "cloudimg.qcow2.sha256").read_text().split()[0],
        kernel=final / "vmlinuz",
        initrd=final / "initrd.img",
        tree=final / "tree",
    )


def _build(final: Path) -> None:
    started = time.monotonic()
    work = final.with_name(final.name + ".build")
    vm._remove_tree(work)
    work.mkdir(parents=True)
    tree = work / "tree"
    vm._run(_mmdebstrap_argv(tree), stdin=subprocess.DEVNULL)
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    initrds = sorted((tree / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise RuntimeError(f"mmdebstrap produced no kernel/initrd in {tree / 'boot'}")
    shutil.copy2(kernels[-1], work / "vmlinuz")
    shutil.copy2(initrds[-1], work / "initrd.img")
    vm._write_files(tree, FILES)
    vm._enable_units(tree, ENABLE, MASK)
    for key in tree.glob("etc/ssh/ssh_host_*"):  # made by the package; cloud-init makes the image's own
        key.unlink()
    _disk(tree, work)
    (work / "recipe.json").write_text(json.dumps(recipe(), indent=2, sort_keys=True) + "\n")
    if final.exists():
        vm._remove_tree(final)
    work.rename(final)
    vm._log(f"stand-in cloud image built in {time.monotonic() - started:.0f} s: {final}")


def _disk(tree: Path, work: Path) -> None:
    """GPT disk: partition 1 the root (ext4 from the tree), partition 15 the ESP with the unified kernel."""
    uki = work / "BOOTX64.EFI"
    (work / "cmdline").write_text(CMDLINE + "\n")
    vm._run([
        "objcopy",
        "--add-section", f".osrel={tree / 'usr/lib/os-release'}", "--change-section-vma", ".osrel=0x20000",
        "--add-section", f".cmdline={work / 'cmdline'}", "--change-section-vma", ".cmdline=0x30000",
        "--add-section", f".linux={work / 'vmlinuz'}", "--change-section-vma", ".linux=0x2000000",
        "--add-section", f".initrd={work / 'initrd.img'}", "--change-section-vma", ".initrd=0x3000000",
        str(EFI_STUB), str(uki),
    ])  # fmt: skip
    esp = work / "esp.img"
    vm._run(["mkfs.vfat", "-C", "-n", "ESP", str(esp), str(ESP_MIB * 1024)], stdout=subprocess.DEVNULL)
    vm._run(["mmd", "-i", str(esp), "::/EFI", "::/EFI/BOOT"])
    vm._run(["mcopy", "-i", str(esp), str(uki), "::/EFI/BOOT/BOOTX64.EFI"])
    raw = work / "disk.raw"
    root_start, esp_start = 2048 + ESP_MIB * 2048, 2048
    total_mib = 1 + ESP_MIB + ROOT_MIB + 1
    with raw.open("wb") as fh:
        fh.truncate(total_mib << 20)
    # Root is partition 1 and the ESP partition 15, as in Ubuntu's cloud images (image-to-tgz.sh reads 1);
    # sfdisk takes a partition's number from the name before the colon.
    layout = (
        "label: gpt\n"
        f"{raw}15 : start={esp_start}, size={ESP_MIB * 2048}, type=uefi, name=ESP\n"
        f"{raw}1 : start={root_start}, size={ROOT_MIB * 2048}, type=linux, name=root\n"
    )
    subprocess.run(["sfdisk", "-q", str(raw)], input=layout, text=True, check=True)
    opts = f"offset={root_start * 512},lazy_itable_init=0,lazy_journal_init=0"
    vm._run([
        "mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-E", opts, "-d", str(tree), str(raw), f"{ROOT_MIB}M",
    ])  # fmt: skip
    vm._run(["dd", f"if={esp}", f"of={raw}", "bs=1M", f"seek={esp_start // 2048}", "conv=notrunc", "status=none"])
    qcow2 = work / "cloudimg.qcow2"
    vm._run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)])
    raw.unlink()
    esp.unlink()
    digest = hashlib.sha256()
    with qcow2.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    (work / "cloudimg.qcow2.sha256").write_text(f"{digest.hexdigest()}  {qcow2.name}\n")


def main() -> int:
    """`python -m tests.e2e.cloudimg`: build (or find) the stand-in cloud image and print where it is."""
    image = cloud_image()
    print(image.qcow2, image.sha256)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
