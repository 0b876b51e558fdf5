"""packages.install with the real dpkg (into a private --root): what the operator's one line says on failure."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from harmonic_installer import packages
from harmonic_installer.download import ArtifactSpec, Downloader, DownloadPolicy, VerifiedArtifact
from harmonic_installer.errors import ExitCode, PackageError
from harmonic_installer.proxy import ProxyConfig
from harmonic_installer.runner import CommandResult, Runner, SubprocessRunner
from tests.support.faults import ScriptedServer

pytestmark = [pytest.mark.integration, pytest.mark.skipif(shutil.which("dpkg") is None, reason="dpkg not installed")]


class RootedRunner(Runner):
    """The real runner, with dpkg and dpkg-query pointed at a private root instead of the host's database."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._real = SubprocessRunner()

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        answer: str | None = None,
        check: bool = True,
        log_output: bool = False,
    ) -> CommandResult:
        args = list(argv)
        admin = [f"--root={self._root}", f"--admindir={self._root}/var/lib/dpkg"]
        if args[0] == "dpkg":
            args[1:1] = [*admin, "--force-not-root", "--force-script-chrootless"]
        elif args[0] == "dpkg-query":
            args[1:1] = admin
        return self._real.run(args, env=env, timeout=timeout, answer=answer, check=check, log_output=log_output)


def build(pkgdir: Path, name: str, out: Path, depends: str = "") -> Path:
    (pkgdir / "DEBIAN").mkdir(parents=True)
    (pkgdir / "usr/share" / name).mkdir(parents=True)
    (pkgdir / "usr/share" / name / "blob").write_bytes(os.urandom(300_000))
    (pkgdir / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: 2.0.41\nArchitecture: all\nMaintainer: t <t@example.invalid>\nDescription: t\n"
        + (f"Depends: {depends}\n" if depends else "")
    )
    deb = out / f"{name}_2.0.41_all.deb"
    subprocess.run(["dpkg-deb", "-Zxz", "--build", str(pkgdir), str(deb)], check=True, capture_output=True)
    return deb


def corrupt_data_member(deb: Path) -> None:
    data = bytearray(deb.read_bytes())
    start = data.index(b"data.tar") + 100_000
    data[start : start + 2000] = bytes(2000)
    deb.write_bytes(bytes(data))


def verified(debs: list[Path], dest: Path) -> list[VerifiedArtifact]:
    policy = DownloadPolicy(3, 60, 5, 5, 0, 60, 1, 0, False, None, None, "SHA256SUMS")
    with ScriptedServer() as srv:
        for deb in debs:
            srv.add(f"/p/{deb.name}", deb.read_bytes())
        with Downloader(policy, ProxyConfig(False, None, ()), progress_bar=None) as dl:
            return [
                dl.fetch(
                    ArtifactSpec(
                        url=f"{srv.url}/p/{d.name}",
                        dest_dir=dest,
                        filename=d.name,
                        sha256=hashlib.sha256(d.read_bytes()).hexdigest(),
                    )
                )
                for d in debs
            ]


def rooted(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for sub in ("var/lib/dpkg/updates", "var/lib/dpkg/info"):
        (root / sub).mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text("")
    return root


def env() -> Mapping[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}


def test_a_deb_dpkg_cannot_unpack_is_named_with_dpkg_debs_reason(tmp_path: Path) -> None:
    """A deb whose data member is corrupt: the one line names that archive and dpkg-deb's own error."""
    out = tmp_path / "debs"
    out.mkdir()
    good = build(tmp_path / "b", "ostree-upgrade-bootstrap", out)
    bad = build(tmp_path / "u", "ostree-upgrade", out)
    corrupt_data_member(bad)
    artifacts = verified([good, bad], tmp_path / "work")
    with pytest.raises(PackageError) as err:
        packages.install(RootedRunner(rooted(tmp_path)), artifacts, env=env(), timeout=120)
    line = str(err.value)
    assert err.value.exit_code == ExitCode.PACKAGES
    assert line.startswith(f"dpkg could not install {bad.name}: dpkg-deb")
    assert str(tmp_path) not in line.split(";", maxsplit=1)[0]
    assert "compressed data is corrupt" in line
    assert "Errors were encountered" not in line
    assert "\n" not in line


def test_a_missing_dependency_is_named_in_the_line(tmp_path: Path) -> None:
    """A deb whose dependency is not installed: the line names the package and what it depends on."""
    out = tmp_path / "debs"
    out.mkdir()
    deb = build(tmp_path / "u", "ostree-upgrade", out, depends="no-such-package")
    with pytest.raises(PackageError) as err:
        packages.install(RootedRunner(rooted(tmp_path)), verified([deb], tmp_path / "work"), env=env(), timeout=120)
    line = str(err.value)
    assert line.startswith("dpkg could not install package ostree-upgrade: ostree-upgrade depends on no-such-package")
    assert "dependency problems" in line


def test_good_debs_install_into_the_private_root(tmp_path: Path) -> None:
    """The same two debs, intact, install (the harness above is sound) and are then reported installed."""
    out = tmp_path / "debs"
    out.mkdir()
    debs = [build(tmp_path / "b", "ostree-upgrade-bootstrap", out), build(tmp_path / "u", "ostree-upgrade", out)]
    result = packages.install(RootedRunner(rooted(tmp_path)), verified(debs, tmp_path / "work"), env=env(), timeout=120)
    assert [d.package for d in result.packages] == ["ostree-upgrade-bootstrap", "ostree-upgrade"]
    assert not result.skipped


def test_dpkg_failure_parses_a_failing_maintainer_script() -> None:
    """A postinst failure names the package and dpkg's reason, not its closing header."""
    output = (
        "Setting up ostree-upgrade (2.0.41) ...\n"
        "dpkg: error processing package ostree-upgrade (--install):\n"
        " installed ostree-upgrade package post-installation script subprocess returned error exit status 3\n"
        "Errors were encountered while processing:\n ostree-upgrade\n"
    )
    assert packages.dpkg_failure(output) == (
        "package ostree-upgrade: installed ostree-upgrade package post-installation script subprocess returned "
        "error exit status 3"
    )
