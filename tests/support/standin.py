"""Stand-in vendor artifacts laid out like the real web server (upstream.md §1.11).

    <root>/packages/ostree-upgrade-bootstrap_<version>_all.deb
    <root>/packages/ostree-upgrade_<version>_all.deb         Depends: ostree-upgrade-bootstrap; ships
                                                             /usr/bin/ostree-production (the stand-in tool)
    <root>/packages/SHA256SUMS
    <root>/apollo/APOLLO_PLATFORM-<release>.iso               a real ISO 9660 padded with seeded random bytes,
                                                             or a bootable GPT disk image (bootable.py)
    <root>/apollo/latest -> APOLLO_PLATFORM-<release>.iso     (symlink; or serve `latest_redirect()` for a 302)
    <root>/apollo/SHA256SUMS

The debs are real (`dpkg-deb --root-owner-group --build`); broken ones are a knob away: a missing dependency,
a failing postinst, a corrupt archive (before or after the checksums are made).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_VERSION = "2.0.41"
DEFAULT_RELEASE = "release-3.21.3.0-7+auto15"
DEFAULT_ISO_SIZE = 16 * 1024 * 1024 + 3 * 2048  # not a whole number of 1 MiB blocks: the last block is short
BOOTSTRAP = "ostree-upgrade-bootstrap"
UPGRADE = "ostree-upgrade"
TOOL_SOURCE = Path(__file__).with_name("ostree_production_standin.py")


@dataclass(frozen=True, slots=True)
class Artifact:
    """One file on the stand-in web server and what a correct download of it must hash to."""

    url_path: str  # "packages/ostree-upgrade_2.0.41_all.deb"
    path: Path  # where it lies under the web root
    sha256: str  # of the file as it was when SHA256SUMS was written
    size: int

    @property
    def name(self) -> str:
        """The file name."""
        return self.path.name


@dataclass(frozen=True, slots=True)
class WebRoot:
    """A built stand-in web server tree and the expected values tests assert against."""

    root: Path
    version: str
    release: str
    debs: tuple[Artifact, ...]  # bootstrap first
    iso: Artifact
    packages: tuple[str, ...] = (BOOTSTRAP, UPGRADE)

    def expected(self) -> dict[str, tuple[Path, str]]:
        """url_path -> (file path, sha256) for every artifact."""
        return {a.url_path: (a.path, a.sha256) for a in (*self.debs, self.iso)}

    def latest_redirect(self) -> str:
        """An nginx server-block snippet answering /apollo/latest with a 302 to the real ISO name."""
        return f"location = /apollo/latest {{ return 302 /apollo/{self.iso.name}; }}"


@dataclass(frozen=True, slots=True)
class DebSpec:
    """What goes into one stand-in .deb: control fields, files and maintainer scripts."""

    package: str
    version: str = DEFAULT_VERSION
    depends: tuple[str, ...] = ()
    files: Mapping[str, tuple[bytes, int]] = field(default_factory=dict)  # absolute path -> (content, mode)
    postinst_exit: int = 0
    description: str = "stand-in for a Harmonic vendor package (tests only)"

    @property
    def file_name(self) -> str:
        """The Debian file name: <package>_<version>_all.deb."""
        return f"{self.package}_{self.version}_all.deb"


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_deb(spec: DebSpec, out_dir: Path) -> Path:
    """Build `spec` with dpkg-deb into out_dir and return the .deb's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="standin-deb-") as tmp:
        tree = Path(tmp) / "tree"
        (tree / "DEBIAN").mkdir(parents=True)
        control = [
            f"Package: {spec.package}",
            f"Version: {spec.version}",
            "Architecture: all",
            "Maintainer: harmonic-installer tests <tests@invalid>",
            "Section: admin",
            "Priority: optional",
        ]
        if spec.depends:
            control.append("Depends: " + ", ".join(spec.depends))
        control.append(f"Description: {spec.description}")
        (tree / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
        postinst = tree / "DEBIAN" / "postinst"
        postinst.write_text(
            "#!/bin/sh\nset -e\n"
            f'echo "{spec.package} {spec.version}: postinst $*"\n'
            f'echo "$(date -u +%FT%TZ) {spec.package} {spec.version} configured" >> /var/log/ostree-standin-dpkg.log\n'
            + (
                f'echo "{spec.package}: postinst failing on purpose" >&2\nexit {spec.postinst_exit}\n'
                if spec.postinst_exit
                else "exit 0\n"
            )
        )
        postinst.chmod(0o755)
        for abs_path, (content, mode) in spec.files.items():
            target = tree / abs_path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(mode)
        out = out_dir / spec.file_name
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(out)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return out


def corrupt(path: Path, *, offset: int | None = None) -> None:
    """Flip bytes in the middle of a file (in place), so its hash and its content are wrong."""
    size = path.stat().st_size
    at = size // 2 if offset is None else offset
    with path.open("r+b") as fh:
        fh.seek(at)
        chunk = fh.read(16)
        fh.seek(at)
        fh.write(bytes(b ^ 0xFF for b in chunk))


def make_iso(path: Path, *, size: int, seed: str, label: str) -> None:
    """A real ISO 9660 image (genisoimage) padded to `size` bytes with random bytes drawn from `seed`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="standin-iso-") as tmp:
        content = Path(tmp) / "content"
        content.mkdir()
        (content / "RELEASE.TXT").write_text(f"{label}\nstand-in image for harmonic-installer tests\n")
        subprocess.run(
            ["genisoimage", "-quiet", "-r", "-V", label[:32].upper(), "-o", str(path), str(content)],
            check=True,
        )
    current = path.stat().st_size
    if current > size:
        raise ValueError(f"an ISO of {size} bytes is too small for the ISO 9660 header ({current} bytes)")
    rng = random.Random(seed)
    with path.open("ab") as fh:
        remaining = size - current
        while remaining:
            n = min(remaining, 1 << 20)
            fh.write(rng.randbytes(n))
            remaining -= n


def write_sha256sums(directory: Path, names: Sequence[str]) -> None:
    """`sha256sum`-format SHA256SUMS for the named files in directory."""
    lines = [f"{sha256_file(directory / n)}  {n}\n" for n in names]
    (directory / "SHA256SUMS").write_text("".join(lines))


def _artifact(root: Path, url_path: str) -> Artifact:
    path = root / url_path
    return Artifact(url_path, path, sha256_file(path), path.stat().st_size)


def tool_files() -> dict[str, tuple[bytes, int]]:
    """The files of the ostree-upgrade stand-in: the ostree-production tool."""
    return {"/usr/bin/ostree-production": (TOOL_SOURCE.read_bytes(), 0o755)}


def build_web_root(
    root: Path,
    *,
    version: str = DEFAULT_VERSION,
    release: str = DEFAULT_RELEASE,
    iso_size: int = DEFAULT_ISO_SIZE,
    seed: str | None = None,
    bootstrap: DebSpec | None = None,
    upgrade: DebSpec | None = None,
    image: Path | None = None,
) -> WebRoot:
    """Build the stand-in web server tree under root and return what a correct install must see.

    Args:
        version: the debs' version (file names follow it).
        release: the Apollo release in the ISO's name.
        iso_size: the ISO's size in bytes.
        seed: seed of the ISO's random padding (default: derived from the release).
        bootstrap, upgrade: override a deb (e.g. a failing postinst, a missing dependency).
        image: serve this file as the ISO instead of a generated ISO 9660 (e.g. a bootable disk image from
            tests/support/bootable.py, which the stand-in tool writes byte for byte like any ISO); iso_size and
            seed are then unused.
    """
    bootstrap = bootstrap or DebSpec(
        BOOTSTRAP,
        version,
        files={"/usr/share/ostree-upgrade-bootstrap/README": (b"stand-in bootstrap package\n", 0o644)},
    )
    upgrade = upgrade or DebSpec(
        UPGRADE, version, depends=(f"{BOOTSTRAP} (= {version})", "python3"), files=tool_files()
    )
    packages = root / "packages"
    debs = [build_deb(bootstrap, packages), build_deb(upgrade, packages)]
    write_sha256sums(packages, [d.name for d in debs])
    iso_name = f"APOLLO_PLATFORM-{release}.iso"
    apollo = root / "apollo"
    if image is not None:
        apollo.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, apollo / iso_name)
    else:
        make_iso(apollo / iso_name, size=iso_size, seed=seed or release, label=f"APOLLO {release}")
    write_sha256sums(apollo, [iso_name])
    latest = apollo / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    os.symlink(iso_name, latest)
    return WebRoot(
        root=root,
        version=version,
        release=release,
        debs=tuple(_artifact(root, f"packages/{d.name}") for d in debs),
        iso=_artifact(root, f"apollo/{iso_name}"),
        packages=(bootstrap.package, upgrade.package),
    )


def copy_tree(src: WebRoot, dst: Path) -> WebRoot:
    """A copy of a built web root at dst (to corrupt or change one file without rebuilding)."""
    shutil.copytree(src.root, dst, symlinks=True)

    def moved(a: Artifact) -> Artifact:
        return Artifact(a.url_path, dst / a.url_path, a.sha256, a.size)

    return WebRoot(dst, src.version, src.release, tuple(moved(d) for d in src.debs), moved(src.iso), src.packages)


def refresh_sums(web: WebRoot) -> WebRoot:
    """Rewrite both SHA256SUMS for the files as they are now (after a deliberate change that must verify)."""
    write_sha256sums(web.root / "packages", [d.name for d in web.debs])
    write_sha256sums(web.root / "apollo", [web.iso.name])
    return WebRoot(
        web.root,
        web.version,
        web.release,
        tuple(_artifact(web.root, d.url_path) for d in web.debs),
        _artifact(web.root, web.iso.url_path),
        web.packages,
    )
