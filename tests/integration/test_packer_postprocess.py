"""The Packer post-processors for real: a qcow2 disk becomes the MAAS tgz, then the pyz prints its import command."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.support.packaging import ROOT, build_pyz, python310

PACKER_DIR = ROOT / "packaging" / "packer"
TOOLS = ("qemu-img", "sfdisk", "mkfs.ext4", "losetup", "partx", "mount")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loop device and mount"),
    pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS), reason=f"needs {', '.join(TOOLS)}"),
]


def _disk(tmp_path: Path) -> Path:
    """A qcow2 disk like the cloud image's: GPT, root filesystem (ext4) in partition 1 at 1 MiB."""
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("harmonic-installer\n")
    (tree / "usr" / "sbin").mkdir(parents=True)
    tool = tree / "usr" / "sbin" / "harmonic-install"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (tree / "home").mkdir()
    os.chown(tree / "etc" / "hostname", 1234, 5678)
    (tree / "usr" / "bin").symlink_to("sbin")
    raw = tmp_path / "disk.raw"
    with raw.open("wb") as f:
        f.truncate(64 << 20)
    subprocess.run(
        ["sfdisk", "-q", str(raw)], input="label: gpt\nstart=2048, size=100000, type=linux\n", text=True, check=True
    )
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-E", f"offset={2048 * 512}", "-d", str(tree), str(raw), "40M"],
        check=True,
        capture_output=True,
    )
    qcow = tmp_path / "packer-harmonic-installer"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow)], check=True)
    raw.unlink()
    return qcow


def test_disk_becomes_a_root_filesystem_tgz_and_the_pyz_prints_its_import_command(tmp_path: Path) -> None:
    """image-to-tgz.sh tars partition 1 with owners and modes; the pyz's import command has its sha256 and size."""
    out = tmp_path / "harmonic-installer.tar.gz"
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [str(PACKER_DIR / "scripts" / "image-to-tgz.sh"), str(_disk(tmp_path)), str(out)],
        env={**os.environ, "TMPDIR": str(work)},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    with tarfile.open(out) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["./etc/hostname"].uid == 1234
        assert members["./etc/hostname"].gid == 5678
        assert members["./usr/sbin/harmonic-install"].mode & 0o777 == 0o755
        assert members["./usr/bin"].issym()
        hostname = tar.extractfile("./etc/hostname")
        assert hostname is not None
        assert hostname.read() == b"harmonic-installer\n"
    loops = subprocess.run(
        ["losetup", "--list", "--noheadings", "--output", "BACK-FILE"], capture_output=True, text=True, check=True
    )
    assert str(work) not in loops.stdout  # the loop device was detached
    assert list(work.iterdir()) == []  # and the raw copy removed

    pyz = build_pyz(tmp_path / "harmonic-install.pyz")
    imported = subprocess.run(
        [python310(), "-I", "-S", str(pyz), "maas-import-command", "--series", "jammy", out.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    assert f"sha256='{sha}' size='{out.stat().st_size}' base_image='ubuntu/jammy'" in imported
    assert "name='custom/harmonic-installer' title='Harmonic Installer'" in imported


def test_missing_disk_fails_instead_of_printing_nothing(tmp_path: Path) -> None:
    """Unlike the original's fuse-nbd (bare exit 0), a missing Packer disk fails the post-processor."""
    result = subprocess.run(
        [str(PACKER_DIR / "scripts" / "image-to-tgz.sh"), str(tmp_path / "missing"), str(tmp_path / "x.tar.gz")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "not found" in result.stderr
