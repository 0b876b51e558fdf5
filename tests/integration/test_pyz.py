"""packaging/build_pyz.py: the zipapp is pure Python, precompiled, reproducible, and runs isolated and read-only."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.packaging import ROOT, build_pyz, python310


def _load_build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_pyz", ROOT / "packaging" / "build_pyz.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(output: Path) -> float:
    started = time.monotonic()
    build_pyz(output)
    return time.monotonic() - started


@pytest.fixture(scope="module", name="python310")
def _python310_fixture() -> str:
    return python310()


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory, python310: str) -> Path:
    out = tmp_path_factory.mktemp("pyz") / "harmonic-install.pyz"
    took = _build(out)
    print(f"\npyz: built {out.stat().st_size} bytes in {took:.1f} s")
    return out


def test_rebuild_gives_identical_bytes(pyz: Path, tmp_path: Path) -> None:
    """A second build, in another directory, has the same SHA-256."""
    again = tmp_path / "elsewhere" / "harmonic-install.pyz"
    _build(again)
    assert hashlib.sha256(again.read_bytes()).hexdigest() == hashlib.sha256(pyz.read_bytes()).hexdigest()


def test_archive_is_pure_python_and_precompiled_for_zipimport(pyz: Path) -> None:
    """No compiled extension; every module has a legacy .pyc beside it, hash-based and never re-checked."""
    with zipfile.ZipFile(pyz) as zf:
        names = zf.namelist()
        assert not [n for n in names if n.endswith((".so", ".pyd", ".dylib"))]
        assert not [n for n in names if "__pycache__" in n or n.startswith("bin/")]
        sources = [n for n in names if n.endswith(".py")]
        assert "harmonic_installer/cli.py" in sources
        assert "__main__.py" in sources
        missing = [n for n in sources if n + "c" not in names]
        assert missing == []
        header = zf.read("harmonic_installer/cli.pyc")[:8]
    assert sys.version_info[:2] == (3, 10)  # the suite runs on the target's Python: same bytecode magic
    assert header[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(header[4:8], "little") == 0b01  # hash-based, check_source off: unchecked-hash


def test_archive_metadata_is_fixed(pyz: Path) -> None:
    """Shebang runs the system python3 isolated; entries are sorted with fixed dates and modes."""
    assert pyz.read_bytes().startswith(b"#!/usr/bin/python3 -I\n")
    with zipfile.ZipFile(pyz) as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}


def test_runs_hermetic_help_with_python310(pyz: Path, python310: str) -> None:
    """`python3.10 -I -S harmonic-install.pyz --help` works: nothing comes from site-packages."""
    result = subprocess.run([python310, "-I", "-S", str(pyz), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "-i, --install" in result.stdout
    assert "maas-import-command" in result.stdout


def test_startup_time(pyz: Path, python310: str) -> None:
    """--help starts in well under the time a console user notices (printed; loosely bounded)."""
    runs = []
    for _ in range(5):
        started = time.monotonic()
        subprocess.run([python310, "-I", str(pyz), "--version"], check=True, capture_output=True)
        runs.append(time.monotonic() - started)
    median = statistics.median(runs)
    print(f"\npyz: --version median start-up {median * 1000:.0f} ms over {len(runs)} runs")
    assert median < 3.0


def _read_only_root_works() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount --make-rprivate / && mount -o remount,bind,ro / && ! touch /.rw-probe"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


@pytest.mark.integration
@pytest.mark.skipif(not _read_only_root_works(), reason="needs root and mount namespaces (unshare -m)")
def test_runs_without_home_on_a_read_only_root(pyz: Path, python310: str, tmp_path: Path) -> None:
    """With HOME unset and / (so /tmp and the pyz's directory) read-only, the pyz plans, hashes and renders."""
    image = tmp_path / "image.tar.gz"
    image.write_bytes(b"image")
    runs = {
        "help": ["--help"],
        "plan": ["-p", "-i", "--dry-run", "--disk", "/dev/nonexistent-harmonic"],
        "import": ["maas-import-command", str(image)],
        "user-data": ["user-data", "--server-url", "http://127.0.0.1:8080", "--pyz", str(pyz)],
    }
    script = 'mount --make-rprivate / && mount -o remount,bind,ro / && cd / && exec "$@"'
    for name, args in runs.items():
        result = subprocess.run(
            ["unshare", "-m", "sh", "-c", script, "sh", python310, "-I", str(pyz), *args],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HARMONIC_CMDLINE_FILE": "/dev/null"},
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == 0, f"{name}: {result.stderr}"
    assert hashlib.sha256(pyz.read_bytes()).hexdigest() in result.stdout


def test_build_refuses_compiled_extensions(tmp_path: Path) -> None:
    """A .so anywhere in the staging tree stops the build with the file named."""
    build = _load_build_module()
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("")
    build.check_pure_python(tmp_path)
    (tmp_path / "pkg" / "_speedups.cpython-310-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    with pytest.raises(build.BuildError, match="_speedups"):
        build.check_pure_python(tmp_path)
