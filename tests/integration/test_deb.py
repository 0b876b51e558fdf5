"""packaging/build_deb.sh: the .deb's layout, reproducibility, lintian, and a dpkg install and removal."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harmonic_installer import __version__
from tests.support.packaging import ROOT, build_deb, build_pyz, python310

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not installed")

PYZ_PATH = "usr/lib/harmonic-installer/harmonic-install.pyz"
UNIT_PATH = "lib/systemd/system/harmonic-installer.service"


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pyz(tmp_path_factory.mktemp("pyz") / "harmonic-install.pyz")


@pytest.fixture(scope="module")
def deb(pyz: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_deb(pyz, tmp_path_factory.mktemp("deb"))


def _contents(deb: Path) -> dict[str, str]:
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    entries = {}
    for line in listing.splitlines():
        mode, owner, *_rest, path = line.split()
        entries[path.removeprefix("./").rstrip("/")] = f"{mode} {owner}"
    return entries


def _field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True).stdout.strip()


def test_deb_ships_the_pyz_wrapper_unit_and_docs(deb: Path, pyz: Path) -> None:
    """The package holds the zipapp, an executable wrapper, the unit and its docs, owned by root."""
    entries = _contents(deb)
    assert entries[PYZ_PATH] == "-rwxr-xr-x root/root"
    assert entries["usr/sbin/harmonic-install"] == "-rwxr-xr-x root/root"
    assert entries[UNIT_PATH] == "-rw-r--r-- root/root"
    for doc in ("copyright", "changelog.gz"):
        assert f"usr/share/doc/harmonic-installer/{doc}" in entries
    assert "usr/share/man/man8/harmonic-install.8.gz" in entries
    assert deb.name == f"harmonic-installer_{__version__}_all.deb"
    assert (_field(deb, "Package"), _field(deb, "Version"), _field(deb, "Architecture")) == (
        "harmonic-installer",
        __version__,
        "all",
    )
    assert _field(deb, "Depends") == "python3 (>= 3.10), libudev1"
    shipped = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    assert pyz.read_bytes() in shipped  # the zipapp inside is the one built, byte for byte


def test_deb_unit_is_the_repository_unit_and_runs_the_shipped_pyz(deb: Path, tmp_path: Path) -> None:
    """The packaged unit equals systemd/harmonic-installer.service and its ExecStart names the shipped pyz."""
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    unit = (tmp_path / UNIT_PATH).read_text()
    assert unit == (ROOT / "systemd" / "harmonic-installer.service").read_text()
    assert f"ExecStart=/usr/bin/python3 -I -S /{PYZ_PATH} " in unit
    wrapper = (tmp_path / "usr/sbin/harmonic-install").read_text()
    assert f'exec /usr/bin/python3 -I -S /{PYZ_PATH} "$@"' in wrapper


def test_deb_rebuild_gives_identical_bytes(deb: Path, pyz: Path, tmp_path: Path) -> None:
    """Building again from the same pyz and commit gives the same .deb, byte for byte."""
    again = build_deb(pyz, tmp_path)
    assert hashlib.sha256(again.read_bytes()).hexdigest() == hashlib.sha256(deb.read_bytes()).hexdigest()


@pytest.mark.skipif(shutil.which("lintian") is None, reason="lintian not installed")
def test_deb_is_lintian_clean(deb: Path) -> None:
    """lintian, pedantic and with informational tags, reports nothing but the package's one documented override."""
    result = subprocess.run(
        [
            "lintian",
            "--tag-display-limit",
            "0",
            "--display-info",
            "--pedantic",
            "--fail-on",
            "error,warning,info,pedantic",
            str(deb),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    tags = [line for line in result.stdout.splitlines() if line[:2] in {"E:", "W:", "I:", "P:", "X:"}]
    assert (result.returncode, tags) == (0, [])


def _fake_root(root: Path) -> None:
    """A dpkg database that already has the package's dependencies (python3, libudev1) installed."""
    admin = root / "var" / "lib" / "dpkg"
    for sub in ("info", "updates", "triggers"):
        (admin / sub).mkdir(parents=True)
    (admin / "available").write_text("")
    stanza = "Package: {}\nStatus: install ok installed\nVersion: {}\nArchitecture: amd64\n"
    stanza += "Maintainer: stub <stub@example.com>\nDescription: stub\n\n"
    (admin / "status").write_text(stanza.format("python3", "3.10.6-1~22.04") + stanza.format("libudev1", "249.11"))


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="dpkg --root needs root")
def test_deb_installs_and_removes_with_dpkg(deb: Path, tmp_path: Path) -> None:
    """`dpkg -i` installs the package into a root with its dependencies present, and `dpkg -r` removes it."""
    root = tmp_path / "root"
    _fake_root(root)
    dpkg = ["dpkg", f"--root={root}", "--log=/dev/null"]
    subprocess.run([*dpkg, "-i", str(deb)], check=True, capture_output=True)
    status = subprocess.run([*dpkg, "-s", "harmonic-installer"], capture_output=True, text=True, check=True).stdout
    assert "Status: install ok installed" in status
    assert (root / PYZ_PATH).is_file()
    assert (root / UNIT_PATH).is_file()
    version = [python310(), "-I", "-S", str(root / PYZ_PATH), "--version"]
    result = subprocess.run(version, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"harmonic-install {__version__}"
    subprocess.run([*dpkg, "-r", "harmonic-installer"], check=True, capture_output=True)
    assert not (root / PYZ_PATH).exists()
    assert not (root / UNIT_PATH).exists()
