"""Boot a small Debian guest in QEMU for end-to-end tests: the image recipe and its cache, layers, one VM run.

The guest is an ephemeral-style Debian 12 (systemd, udev, python3, cloud-init, networkd with DHCP) built by
`mmdebstrap` into a directory, turned into an ext4 image with `mkfs.ext4 -d`, and booted with its own kernel
and initrd (`-kernel/-initrd`) under TCG. Images are cached under `$HARMONIC_TEST_CACHE` (default
/var/cache/harmonic-installer-tests) in a directory named after the hash of the recipe, so a changed recipe
builds a new image and an unchanged one is reused. A *layer* (extra files, .debs installed with dpkg in a
chroot, units enabled) is a second cached image derived from the base tree; the base is never touched.

Every run boots with `-snapshot` (the root image stays unchanged), a raw target disk on virtio-scsi (the
guest's `/dev/sda`, written for real), `-no-reboot` (the guest's reboot or poweroff ends QEMU) and QEMU user
networking with `restrict=on`: the guest reaches nothing but the `guestfwd` ports, each forwarded by
`socat` to a port on the host's loopback.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# What a MAAS ephemeral Ubuntu has that the installer touches: systemd + udev, python3, cloud-init, dpkg,
# networking, block-device tools, wget (the user-data fetches the zipapp with it), efibootmgr (UEFI boot
# entries and BootNext, issue 11). curl is for the harness's own probe unit.
PACKAGES = (
    "systemd-sysv",
    "udev",
    "dbus",
    "python3",
    "cloud-init",
    "ca-certificates",
    "iproute2",
    "curl",
    "wget",
    "e2fsprogs",
    "fdisk",
    "efibootmgr",
    "linux-image-amd64",
)
# Left out of the image to keep it small: documentation and kernel drivers a VM never loads.
_EXCLUDES = (
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/locale/*",
    "/usr/share/info/*",
    "/lib/modules/*/kernel/drivers/gpu/*",
    "/lib/modules/*/kernel/drivers/net/wireless/*",
    "/lib/modules/*/kernel/drivers/media/*",
    "/lib/modules/*/kernel/drivers/infiniband/*",
    "/lib/modules/*/kernel/drivers/staging/*",
    "/lib/modules/*/kernel/drivers/bluetooth/*",
    "/lib/modules/*/kernel/sound/*",
    "/lib/modules/*/kernel/net/bluetooth/*",
    "/lib/modules/*/kernel/net/wireless/*",
    "/lib/modules/*/kernel/net/mac80211/*",
)
# Files written into the base tree after mmdebstrap (path relative to the root -> content).
_BASE_FILES: dict[str, str] = {
    "etc/hostname": "harmonic-e2e\n",
    "etc/hosts": "127.0.0.1 localhost\n127.0.1.1 harmonic-e2e\n",
    # Like the MAAS ephemeral environment: the root is in RAM, /media/root-rw is the tmpfs upper layer and
    # the installer downloads the ISO to /data.
    "etc/fstab": (
        "/dev/vda / ext4 rw,errors=remount-ro 0 1\n"
        "tmpfs /media/root-rw tmpfs mode=0755,size=512M 0 0\n"
        "tmpfs /data tmpfs mode=0755,size=768M 0 0\n"
    ),
    "etc/systemd/network/20-wired.network": "[Match]\nName=en*\n\n[Network]\nDHCP=ipv4\n",
    # cloud-init: NoCloud only (a `cidata` seed disk); networking is networkd's, not cloud-init's. This small
    # guest has no `locales` (a MAAS ephemeral has): the locale is the built-in C.UTF-8, not cloud-init's
    # en_US.UTF-8, which update-locale rejects here with an error on the console of every seeded boot.
    "etc/cloud/cloud.cfg.d/90-e2e.cfg": "datasource_list: [ NoCloud ]\nnetwork: {config: disabled}\nlocale: C.UTF-8\n",
    # Wait for one link only (the single NIC), and not for long.
    "etc/systemd/system/systemd-networkd-wait-online.service.d/e2e.conf": (
        "[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=60\n"
    ),
    # The guest has no clock to keep and no console to log in on; ACPI power button = poweroff.
    "etc/systemd/logind.conf.d/e2e.conf": "[Login]\nHandlePowerKey=poweroff\n",
    "etc/machine-id": "",
}
_ENABLE = ("systemd-networkd.service", "systemd-networkd-wait-online.service")
_MASK = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-timesyncd.service",
)
# Bump to force a rebuild when the way the image is assembled changes without the lists above changing.
_RECIPE_VERSION = 1
ROOT_SIZE = "3G"

# Addresses inside the guest's user network (10.0.2.0/24) that guestfwd forwards to host loopback ports.
WEB_IP = "10.0.2.100"
PROXY_IP = "10.0.2.101"
ALT_WEB_IP = "10.0.2.102"

KERNEL_CMDLINE = ("root=/dev/vda", "rw", "console=ttyS0", "quiet", "panic=-1")


# ---------------------------------------------------------------------------------------------------------
# The target's Python in the guest. Ubuntu 22.04 runs the installer on Python 3.10; Debian 12 ships only 3.11.
# The host's 3.10 (the interpreter .venv is made from: pyenv's or uv's build, made for this Debian 12) is copied
# into the guest at the same prefix, and the guest's /usr/bin/python3 points at it, so the unit's
# `/usr/bin/python3 -I ...pyz` and the user-data's `python3 -I ...pyz` run 3.10 as on the target. Debian's own
# Python programs (cloud-init, py3compile, ...) keep Debian's 3.11: their `#!/usr/bin/python3` lines are pinned to
# python3.11. The kernel parameter `e2e.python3=3.11` switches /usr/bin/python3 back to 3.11 for one run.
GUEST_PYTHON_SWITCH = "e2e.python3=3.11"
_PY310_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages"}
_PY310_CHECK = (  # what the installer and its dependencies import, plus every extension module that is built
    "import sys, ssl, hashlib, zlib, ctypes, lzma, bz2, json, zipimport, sqlite3, uuid, pyexpat, _decimal\n"
    "import importlib, pathlib\n"
    "d = pathlib.Path(sys.base_prefix, 'lib', 'python3.10', 'lib-dynload')\n"
    "bad = []\n"
    "for so in sorted(d.glob('*.so')):\n"
    "    name = so.name.split('.')[0]\n"
    "    try:\n"
    "        importlib.import_module(name)\n"
    "    except ImportError as e:\n"
    "        bad.append(f'{name}: {e}')\n"
    "print('python', sys.version.split()[0], 'missing:', bad or 'none')\n"
    "sys.exit(1 if bad or sys.version_info[:2] != (3, 10) else 0)\n"
)
_PY310_SWITCH_UNIT = f"""[Unit]
Description=e2e: /usr/bin/python3 is Debian's 3.11 for this run ({GUEST_PYTHON_SWITCH})
DefaultDependencies=no
ConditionKernelCommandLine={GUEST_PYTHON_SWITCH}
After=local-fs.target
Before=sysinit.target cloud-init-local.service cloud-config.service cloud-final.service harmonic-installer.service

[Service]
Type=oneshot
ExecStart=/bin/ln -sfn python3.11 /usr/bin/python3

[Install]
WantedBy=sysinit.target
"""


def _python310_prefix() -> Path:
    """The prefix of the host's Python 3.10 (the interpreter running the tests: .venv is made from it)."""
    if sys.version_info[:2] != (3, 10):
        raise RuntimeError(f"the guest's Python 3.10 is copied from the one running the tests; this is {sys.version}")
    return Path(sys.base_prefix)


def _python310_files(prefix: Path) -> list[Path]:
    """What the guest gets of the interpreter: bin/python3.10, libpython, the standard library (no tests, no GUI)."""
    files = [prefix / "bin" / "python3.10", *sorted((prefix / "lib").glob("libpython3*.so*"))]
    stdlib = prefix / "lib" / "python3.10"
    for dirpath, dirnames, filenames in os.walk(stdlib):
        here = Path(dirpath)
        if here == stdlib:
            dirnames[:] = [d for d in dirnames if d not in _PY310_SKIP and not d.startswith("config-")]
        files += [here / f for f in sorted(filenames) if not f.startswith("_tkinter")]
        dirnames.sort()
    return [f for f in files if f.exists() or f.is_symlink()]


def _python310_recipe() -> dict[str, object]:
    """The guest interpreter's identity for the cache key: version, prefix and every copied file's name and size."""
    prefix = _python310_prefix()
    h = hashlib.sha256()
    for f in _python310_files(prefix):
        h.update(f"{f.relative_to(prefix)}\0{f.lstat().st_size}\0".encode())
    return {"version": platform.python_version(), "prefix": str(prefix), "files": h.hexdigest()[:16]}


def _install_python310(tree: Path) -> None:
    """Copy the host's 3.10 into the guest, make it /usr/bin/python3, pin Debian's scripts to 3.11, check it runs."""
    prefix = _python310_prefix()
    for f in _python310_files(prefix):
        dest = tree / f.relative_to("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if f.is_symlink():
            dest.symlink_to(os.readlink(f))
        else:
            shutil.copy2(f, dest)
    (tree / "usr/bin/python3").unlink()
    (tree / "usr/bin/python3").symlink_to(prefix / "bin" / "python3.10")
    pinned = 0
    for d in ("usr/bin", "usr/sbin", "usr/lib/cloud-init", "usr/libexec", "usr/share/python3"):
        for f in sorted((tree / d).glob("*")) if (tree / d).is_dir() else ():
            if not f.is_file() or f.is_symlink():
                continue
            with f.open("rb") as fh:
                first = fh.readline(200)
            if re.fullmatch(rb"#! ?/usr/bin/python3(\s.*)?\n?", first, re.DOTALL):
                rest = f.read_bytes()[len(first) :]
                f.write_bytes(first.replace(b"/usr/bin/python3", b"/usr/bin/python3.11", 1) + rest)
                pinned += 1
    _write_files(tree, {"etc/systemd/system/e2e-python3.service": _PY310_SWITCH_UNIT})
    _enable_units(tree, ["e2e-python3.service"])
    # The guest must have every shared library the 3.10 build links to, and Debian's tools must still run.
    check = tree / "tmp" / "e2e-python3-check.py"
    check.write_text(_PY310_CHECK)
    try:
        _run(["chroot", str(tree), "/usr/bin/python3", "-I", "/tmp/e2e-python3-check.py"], env={**_CHROOT_ENV})
    finally:
        check.unlink()
    _run(["chroot", str(tree), "/usr/bin/cloud-init", "--version"], env={**_CHROOT_ENV}, stdout=subprocess.DEVNULL)
    _log(f"guest python3 is {prefix}/bin/python3.10; {pinned} Debian scripts pinned to python3.11")


def cache_dir() -> Path:
    """Where built images are kept between runs."""
    return Path(os.environ.get("HARMONIC_TEST_CACHE", "/var/cache/harmonic-installer-tests"))


def _mmdebstrap_argv(target: Path) -> list[str]:
    argv = ["mmdebstrap", "--variant=apt", "--mode=root", f"--include={','.join(PACKAGES)}"]
    argv += [f"--dpkgopt=path-exclude={p}" for p in _EXCLUDES]
    return [*argv, SUITE, str(target), MIRROR]


def recipe() -> dict[str, object]:
    """Everything that decides the base image's contents; its hash names the cache entry."""
    return {
        "version": _RECIPE_VERSION,
        "mmdebstrap": _mmdebstrap_argv(Path("TARGET")),
        "files": _BASE_FILES,
        "enable": _ENABLE,
        "mask": _MASK,
        "root_size": ROOT_SIZE,
        "python310": _python310_recipe(),
    }


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Image:
    """A bootable guest: root filesystem image, kernel and initrd, plus the tree it was made from."""

    name: str
    root: Path
    kernel: Path
    initrd: Path
    tree: Path | None  # the unpacked root tree (base images only), used to derive layers


def _log(msg: str) -> None:
    print(f"[vm] {msg}", file=sys.stderr, flush=True)


def _run(argv: Sequence[str], **kwargs: object) -> None:
    _log("$ " + " ".join(argv))
    subprocess.run(list(argv), check=True, **kwargs)  # type: ignore[call-overload]  # **kwargs: run() options as given


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4].replace("\\040", " ")
        if mount_point.startswith(prefix):
            found.append(mount_point)
    return found


def _remove_tree(path: Path) -> None:
    """rm -rf a build directory, after unmounting what an interrupted mmdebstrap may have left mounted in it."""
    if not path.exists():
        return
    for mount_point in sorted(_mounts_under(path), reverse=True):
        subprocess.run(["umount", "--lazy", mount_point], check=False)
    left = _mounts_under(path)
    if left:
        raise RuntimeError(f"refusing to delete {path}: still mounted inside it: {', '.join(left)}")
    shutil.rmtree(path)


def _make_ext4(tree: Path, image: Path) -> None:
    image.unlink(missing_ok=True)
    _run(["truncate", "-s", ROOT_SIZE, str(image)])
    opts = "lazy_itable_init=0,lazy_journal_init=0"
    _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-E", opts, "-d", str(tree), str(image)])


def _enable_units(tree: Path, enable: Iterable[str], mask: Iterable[str] = ()) -> None:
    enable, mask = list(enable), list(mask)
    if enable:
        _run(["systemctl", f"--root={tree}", "enable", *enable], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if mask:
        _run(["systemctl", f"--root={tree}", "mask", *mask], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _write_files(tree: Path, files: Mapping[str, str | bytes], modes: Mapping[str, int] | None = None) -> None:
    for rel, content in files.items():
        dest = tree / rel.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        if isinstance(content, bytes):
            dest.write_bytes(content)
        else:
            dest.write_text(content)
        if modes and rel in modes:
            dest.chmod(modes[rel])


def base_image() -> Image:
    """The cached base image, built first if its recipe has no cache entry yet (about 1-3 minutes)."""
    key = _digest(recipe())
    final = cache_dir() / f"vm-{key}"
    with _locked(cache_dir() / f".vm-{key}.lock"):
        if not (final / "recipe.json").exists():
            _build_base(final)
        else:
            os.utime(final)
    _prune(sorted(p for p in cache_dir().glob("vm-*") if p.is_dir() and "-layer-" not in p.name), _KEEP_BASES)
    return Image(f"base-{key}", final / "root.img", final / "vmlinuz", final / "initrd.img", final / "tree")


def _build_base(final: Path) -> None:
    started = time.monotonic()
    work = final.with_name(final.name + ".build")
    _remove_tree(work)
    work.mkdir(parents=True)
    tree = work / "tree"
    _run(_mmdebstrap_argv(tree), stdin=subprocess.DEVNULL)
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    initrds = sorted((tree / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise RuntimeError(f"mmdebstrap produced no kernel/initrd in {tree / 'boot'}")
    shutil.copy2(kernels[-1], work / "vmlinuz")
    shutil.copy2(initrds[-1], work / "initrd.img")
    _write_files(tree, _BASE_FILES)
    for d in ("data", "media/root-rw"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    _enable_units(tree, _ENABLE, _MASK)
    _install_python310(tree)
    _make_ext4(tree, work / "root.img")
    (work / "recipe.json").write_text(json.dumps(recipe(), indent=2, sort_keys=True) + "\n")
    if final.exists():
        shutil.rmtree(final)
    work.rename(final)
    _log(f"base image built in {time.monotonic() - started:.0f} s: {final}")


@dataclass(frozen=True, slots=True)
class Layer:
    """Changes on top of the base image: files, .debs installed with dpkg, units enabled."""

    files: Mapping[str, str | bytes] = field(default_factory=dict)
    modes: Mapping[str, int] = field(default_factory=dict)
    debs: Sequence[Path] = ()
    enable: Sequence[str] = ()

    def digest(self) -> str:
        """Hash of everything the layer puts into the image."""
        h = hashlib.sha256()
        for rel in sorted(self.files):
            content = self.files[rel]
            h.update(rel.encode() + b"\0" + (content if isinstance(content, bytes) else content.encode()) + b"\0")
            h.update(str(self.modes.get(rel, "")).encode())
        for deb in self.debs:
            h.update(deb.name.encode() + b"\0" + hashlib.sha256(deb.read_bytes()).digest())
        h.update(json.dumps(list(self.enable)).encode())
        return h.hexdigest()[:16]


_KEEP_LAYERS = 6  # one suite run uses five: the probe, the UEFI probe, baked, lifecycle baked and ephemeral
_KEEP_BASES = 3  # other checkouts (another branch's recipe) may use an older base at the same time


def layered_image(base: Image, layer: Layer) -> Image:
    """A cached image made of the base tree plus `layer` (built on first use; old layers pruned)."""
    if base.tree is None:
        raise ValueError("layers are built on a base image")
    key = layer.digest()
    final = base.root.parent.with_name(f"{base.root.parent.name}-layer-{key}")
    with _locked(final.with_name(f".{final.name}.lock")):
        if not (final / "root.img").exists():
            _build_layer(base, layer, final)
        else:
            os.utime(final)
    _prune([p for p in final.parent.glob(f"{base.root.parent.name}-layer-*") if p.is_dir()], _KEEP_LAYERS)
    return Image(f"{base.name}+{key}", final / "root.img", base.kernel, base.initrd, None)


def _build_layer(base: Image, layer: Layer, final: Path) -> None:
    assert base.tree is not None
    started = time.monotonic()
    work = final.with_name(final.name + ".build")
    _remove_tree(work)
    work.mkdir(parents=True)
    tree = work / "tree"
    _run(["cp", "-a", "--reflink=auto", str(base.tree), str(tree)])
    try:
        _write_files(tree, layer.files, layer.modes)
        if layer.debs:
            inside = []
            for deb in layer.debs:
                shutil.copy2(deb, tree / "tmp" / deb.name)
                inside.append(f"/tmp/{deb.name}")
            _run(["chroot", str(tree), "dpkg", "-i", *inside], env={**_CHROOT_ENV})
            for name in inside:
                (tree / name.lstrip("/")).unlink()
        _enable_units(tree, layer.enable)
        _make_ext4(tree, work / "root.img")
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    if final.exists():
        shutil.rmtree(final)
    work.rename(final)
    _log(f"layer image built in {time.monotonic() - started:.0f} s: {final}")


_CHROOT_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "DEBIAN_FRONTEND": "noninteractive",
    "LC_ALL": "C.UTF-8",
}


def _prune(entries: Iterable[Path], keep: int) -> None:
    """Remove all but the `keep` most recently used cache entries (and their layers); builds in progress stay."""
    done = [p for p in entries if not p.name.endswith(".build")]
    for old in sorted(done, key=lambda p: p.stat().st_mtime, reverse=True)[keep:]:
        for path in (old, *old.parent.glob(f"{old.name}-layer-*")):
            with contextlib.suppress(OSError, RuntimeError):
                _remove_tree(path)


# ---------------------------------------------------------------------------------------------------------
# One VM run.


@dataclass(frozen=True, slots=True)
class Forward:
    """A guest address:port forwarded (one socat per connection) to a port on the host's 127.0.0.1."""

    guest_ip: str
    guest_port: int
    host_port: int
    host: str = "127.0.0.1"

    def netdev_option(self) -> str:
        """The `guestfwd=` option for `-netdev user`."""
        # A comma inside an option value is written twice in QEMU's option syntax.
        return f"guestfwd=tcp:{self.guest_ip}:{self.guest_port}-cmd:socat - TCP:{self.host}:{self.host_port}"


Outcome = Literal["reboot", "poweroff", "panic", "timeout", "qemu-exit"]


@dataclass(frozen=True, slots=True)
class SerialLine:
    """One line of the guest's serial console and when it arrived (seconds since QEMU started)."""

    t: float
    text: str


@dataclass(frozen=True, slots=True)
class VmResult:
    """How a run ended, judged from outside the guest."""

    outcome: Outcome
    returncode: int | None
    duration_s: float
    lines: tuple[SerialLine, ...]
    serial_log: Path
    qemu_stderr: str

    @property
    def serial(self) -> str:
        """The whole serial console as text."""
        return "\n".join(line.text for line in self.lines)

    def explain(self, serial_lines: int = 60) -> str:
        """Why a run ended as it did, for an assertion message: outcome, QEMU's stderr, the last serial lines."""
        head = f"outcome={self.outcome} rc={self.returncode} after {self.duration_s:.0f} s; log {self.serial_log}"
        stderr = self.qemu_stderr.strip()
        parts = [head, f"QEMU stderr:\n{stderr[-4000:]}" if stderr else "QEMU stderr: (empty)"]
        tail = [line.text for line in self.lines[-serial_lines:]] if serial_lines > 0 else []
        if serial_lines > 0:
            parts.append(f"last {len(tail)} serial lines:\n" + "\n".join(tail) if tail else "serial console: (nothing)")
        return "\n".join(parts)

    def first(self, pattern: str) -> SerialLine | None:
        """The first serial line matching a regular expression."""
        rx = re.compile(pattern)
        return next((line for line in self.lines if rx.search(line.text)), None)


def classify(serial: str, returncode: int | None) -> Outcome:
    """Tell a reboot from a poweroff (or a panic) by the kernel's last words on the serial console."""
    if re.search(r"Kernel panic - not syncing", serial):
        return "panic"
    if "reboot: Restarting system" in serial:
        return "reboot"
    if "reboot: Power down" in serial:
        return "poweroff"
    return "qemu-exit" if returncode is not None else "timeout"


def kvm_enabled() -> bool:
    """KVM hangs on the project's machines: TCG unless HARMONIC_TEST_E2E_KVM=1."""
    return os.environ.get("HARMONIC_TEST_E2E_KVM") == "1"


OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")

Boot = Literal["network", "firmware"]


@dataclass(frozen=True, slots=True)
class Uefi:
    """A UEFI machine: OVMF's code (read-only), this machine's own NVRAM, and the network-boot stand-in disk.

    The NVRAM file is a copy of OVMF_VARS_4M.fd made once per machine (`uefi_machine`) and kept across its boots,
    as a server keeps its NVRAM across power cycles. The firmware's order is QEMU's `bootindex`: the network-boot
    stand-in (an NVMe disk whose ESP boots an OS that prints NETBOOT-STANDIN and powers off) first, as MAAS keeps
    network boot first, then the target disk. A boot that reaches the target disk therefore went through BootNext.
    """

    nvram: Path
    netboot_disk: Path
    code: Path = OVMF_CODE


def uefi_machine(
    workdir: Path, netboot_disk: Path, *, image: Image, disk: Path, timeout: float = 300
) -> tuple[Uefi, VmResult]:
    """A new UEFI machine in workdir (a fresh NVRAM copy of OVMF_VARS_4M.fd) after its first power-on.

    OVMF creates its boot entries for the disks (`Boot####` "UEFI QEMU QEMU HARDDISK ...") only when its own boot
    manager runs: a first boot with -kernel jumps to that kernel before, and leaves an NVRAM with no disk entry at
    all (measured). A server has its entries from its first power-on long before MAAS deploys it, so the machine is
    powered on once without a kernel here; the network-boot stand-in, first in the order, powers it off again.
    Returns the machine and that first run (its serial log is `power-on.serial.log`).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    nvram = workdir / "OVMF_VARS.fd"
    shutil.copyfile(OVMF_VARS, nvram)
    machine = Uefi(nvram=nvram, netboot_disk=netboot_disk)
    first = run(
        VmSpec(image=image, disk=disk, uefi=machine, boot="firmware"), workdir, timeout=timeout, name="power-on"
    )
    return machine, first


@dataclass(frozen=True, slots=True)
class VmSpec:
    """Everything that makes one run: image, target disk, forwards, kernel parameters, seed disk, firmware.

    `boot` says how the machine starts. "network": the in-memory OS (`image`) is loaded by QEMU with
    -kernel/-initrd, standing for MAAS's PXE boot (with `uefi`, OVMF hands over to that kernel before its own boot
    manager would pick a disk). "firmware" (needs `uefi`): a power-on without network boot; no kernel, no root
    image, no network: the firmware boots a disk by BootNext or its order.
    """

    image: Image
    disk: Path
    forwards: Sequence[Forward] = ()
    cmdline: Sequence[str] = ()
    seed: Path | None = None
    memory_mib: int = 2048
    cpus: int = 1
    uefi: Uefi | None = None
    boot: Boot = "network"


def _opt_path(path: Path) -> str:
    """A path as a value inside a QEMU option list (`file=...,if=...`): a comma is written twice."""
    return str(path).replace(",", ",,")


# AF_UNIX socket paths hold at most 107 bytes (sun_path is 108 with the NUL), so sockets never live under the
# checkout (any length, any characters): each run gets a private directory under a short base (/run as root).
SOCKET_PATH_MAX = 107


def runtime_dir() -> Path:
    """A new private (0700) directory for one run's sockets, with a short path whatever the checkout's."""
    base = "/run" if os.access("/run", os.W_OK | os.X_OK) else "/tmp"
    return Path(tempfile.mkdtemp(prefix="hi-vm-", dir=base))


def qemu_argv(spec: VmSpec, qmp: Path) -> list[str]:
    """The QEMU command line for a run (serial console on stdout, monitor on a QMP socket)."""
    if spec.boot == "firmware" and spec.uefi is None:
        raise ValueError("a firmware boot needs a UEFI machine (VmSpec.uefi)")
    argv = [
        "qemu-system-x86_64",
        *(["-accel", "kvm", "-cpu", "host"] if kvm_enabled() else ["-accel", "tcg"]),
        "-m", str(spec.memory_mib),
        "-smp", str(spec.cpus),
        "-nodefaults",
        "-display", "none",
        "-no-reboot",
        "-snapshot",
    ]  # fmt: skip
    target_boot = ""
    if spec.uefi is not None:
        argv += [
            "-machine", "q35",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={_opt_path(spec.uefi.code)}",
            "-drive", f"if=pflash,format=raw,unit=1,snapshot=off,file={_opt_path(spec.uefi.nvram)}",
            # -snapshot: the stand-in's writes (none expected) never reach its file.
            "-drive", f"file={_opt_path(spec.uefi.netboot_disk)},if=none,id=netboot,format=raw",
            "-device", "nvme,drive=netboot,serial=E2ENETBOOT01,bootindex=1",
        ]  # fmt: skip
        target_boot = ",bootindex=2"
    if spec.boot == "network":
        argv += [
            "-kernel", str(spec.image.kernel),
            "-initrd", str(spec.image.initrd),
            "-append", " ".join([*KERNEL_CMDLINE, *spec.cmdline]),
            "-drive", f"file={_opt_path(spec.image.root)},if=virtio,format=raw,discard=unmap",
        ]  # fmt: skip
    argv += [
        "-device", "virtio-scsi-pci,id=scsi0",
        "-drive", f"file={_opt_path(spec.disk)},if=none,id=target,format=raw,snapshot=off,cache=writeback",
        "-device", f"scsi-hd,drive=target,bus=scsi0.0,serial=E2ETARGET0001{target_boot}",
    ]  # fmt: skip
    if spec.boot == "network":
        netdev = ",".join(["user", "id=net0", "restrict=on", *(f.netdev_option() for f in spec.forwards)])
        argv += ["-netdev", netdev, "-device", "virtio-net-pci,netdev=net0"]
    argv += [
        "-device", "virtio-rng-pci",
        "-chardev", "stdio,id=ser0,signal=off",
        "-serial", "chardev:ser0",
        "-qmp", f"unix:{_opt_path(qmp)},server=on,wait=off",
    ]  # fmt: skip
    if spec.seed is not None and spec.boot == "network":
        argv += ["-drive", f"file={_opt_path(spec.seed)},if=virtio,format=raw,readonly=on"]
    return argv


class Vm:
    """A running guest. Use as a context manager: QEMU is killed on exit if it is still running."""

    def __init__(self, spec: VmSpec, workdir: Path, *, live: bool = False, name: str = "vm") -> None:
        self.spec = spec
        self.workdir = workdir
        self.live = live
        self.serial_log = workdir / f"{name}.serial.log"
        self._stderr_path = workdir / f"{name}.qemu.stderr"
        self._rundir: Path | None = None
        self._lines: list[SerialLine] = []
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._started = 0.0

    # -- lifecycle

    def start(self) -> Vm:
        """Start QEMU; the serial console is read by a thread into `lines` and the serial log file."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = qemu_argv(self.spec, self.qmp_socket)
        (self.workdir / "qemu.argv").write_text(json.dumps(argv, indent=1) + "\n")
        self._started = time.monotonic()
        with self._stderr_path.open("wb") as err:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        self._reader = threading.Thread(target=self._read_serial, name="serial-reader", daemon=True)
        self._reader.start()
        return self

    def __enter__(self) -> Vm:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def kill(self) -> None:
        """Stop QEMU at once if it still runs, and remove the run's socket directory."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self._rundir is not None:
            shutil.rmtree(self._rundir, ignore_errors=True)
            self._rundir = None

    @property
    def qmp_socket(self) -> Path:
        """The QMP socket, in the run's private socket directory (created on first use, removed by kill)."""
        if self._rundir is None:
            self._rundir = runtime_dir()
        path = self._rundir / "qmp"
        if len(os.fsencode(path)) > SOCKET_PATH_MAX:
            raise RuntimeError(f"socket path {path} is longer than {SOCKET_PATH_MAX} bytes")
        return path

    def _read_serial(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        out: IO[bytes] = self._proc.stdout
        pending = b""
        with self.serial_log.open("wb") as log:
            while True:
                chunk = out.read1(65536)  # type: ignore[attr-defined]  # a BufferedReader; typeshed: IO[bytes]
                if not chunk:
                    break
                log.write(chunk)
                log.flush()
                if self.live:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.buffer.flush()
                pending += chunk
                *complete, pending = pending.split(b"\n")
                if complete:
                    now = time.monotonic() - self._started
                    with self._cond:
                        self._lines.extend(SerialLine(now, _clean(raw)) for raw in complete)
                        self._cond.notify_all()
            with self._cond:
                if pending:
                    self._lines.append(SerialLine(time.monotonic() - self._started, _clean(pending)))
                self._cond.notify_all()

    # -- observation

    @property
    def lines(self) -> tuple[SerialLine, ...]:
        """Serial lines so far."""
        with self._cond:
            return tuple(self._lines)

    def running(self) -> bool:
        """True while QEMU runs."""
        return self._proc is not None and self._proc.poll() is None

    def wait_for(self, pattern: str, timeout: float) -> SerialLine:
        """Block until a serial line matches `pattern`; raise TimeoutError (with the log tail) otherwise."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self._lines[seen:]:
                    if rx.search(line.text):
                        return line
                seen = len(self._lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (not self.running() and self._reader is not None and not self._reader.is_alive()):
                    tail = "\n".join(x.text for x in self._lines[-40:])
                    why = "QEMU exited" if not self.running() else f"not within {timeout:.0f} s"
                    raise TimeoutError(
                        f"no serial line matched {pattern!r} ({why}); QEMU stderr:\n{self._stderr_tail()}\n"
                        f"serial tail:\n{tail}"
                    )
                self._cond.wait(timeout=min(remaining, 1.0))

    def _stderr_tail(self) -> str:
        text = self._stderr_path.read_text(errors="replace").strip() if self._stderr_path.exists() else ""
        return text[-4000:] or "(empty)"

    # -- control

    def qmp(self, command: str) -> dict[str, object]:
        """Send one QMP command and return its reply."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(self.qmp_socket))
            f = s.makefile("rwb")
            f.readline()  # greeting
            for cmd in ("qmp_capabilities", command):
                f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                f.flush()
                while True:
                    reply = json.loads(f.readline())
                    if "return" in reply or "error" in reply:
                        break
            return reply  # type: ignore[no-any-return]  # a QMP reply: a JSON object

    def powerdown(self) -> None:
        """Press the ACPI power button (the guest's logind powers off)."""
        self.qmp("system_powerdown")

    def power_off(self, timeout: float = 300) -> VmResult:
        """Press the power button until the guest powers off (again every 30 s: logind may not listen yet)."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.powerdown()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=min(30.0, max(0.0, deadline - time.monotonic())))
        return self.wait(timeout=max(1.0, deadline - time.monotonic()))

    def wait(self, timeout: float) -> VmResult:
        """Wait for QEMU to exit (the guest rebooted or powered off); kill it after `timeout` seconds."""
        assert self._proc is not None
        try:
            rc: int | None = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
            self._proc.kill()
            self._proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=10)
        duration = time.monotonic() - self._started
        lines = self.lines
        serial = "\n".join(x.text for x in lines)
        return VmResult(
            outcome=classify(serial, rc),
            returncode=rc,
            duration_s=duration,
            lines=lines,
            serial_log=self.serial_log,
            qemu_stderr=self._stderr_path.read_text(errors="replace") if self._stderr_path.exists() else "",
        )


_ANSI = re.compile(rb"\x1b\[[0-9;?=]*[A-Za-z]|\r")


def _clean(raw: bytes) -> str:
    return _ANSI.sub(b"", raw).decode("utf-8", errors="replace")


def run(spec: VmSpec, workdir: Path, *, timeout: float, live: bool = False, name: str = "vm") -> VmResult:
    """Boot, let the guest do its work, and return once it reboots or powers off (or `timeout` passes)."""
    with Vm(spec, workdir, live=live, name=name) as vm:
        return vm.wait(timeout)


def blank_disk(path: Path, size_mib: int) -> Path:
    """A sparse raw disk of zeros (the target)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.truncate(size_mib * 1024 * 1024)
    return path


def nonzero_bytes(path: Path, chunk: int = 1 << 20) -> int:
    """How many bytes of a file are not zero."""
    count = 0
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            count += len(block) - block.count(0)
    return count


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tests.e2e.vm build`: build (or find) the cached base image and print where it is."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["build"]:
        print("usage: python -m tests.e2e.vm build", file=sys.stderr)
        return 2
    image = base_image()
    print(image.root.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
