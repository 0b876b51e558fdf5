"""Makefile: `make clean` removes what builds and tests leave in the checkout; `make distclean` the rest too."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LEFT_BY_BUILDS_AND_TESTS = (
    "dist/harmonic-install.pyz",
    "build/e2e/test_x/vm.serial.log",
    ".cache/wheels/httpx.whl",
    ".pytest_cache/v/cache/lastfailed",
    ".mypy_cache/3.10/cli.data.json",
    ".ruff_cache/0.1/x",
    "tests/bench/work/iso.bin",
    "harmonic_installer/__pycache__/cli.cpython-310.pyc",
    "tests/unit/__pycache__/test_cli.cpython-310.pyc",
    "packaging/packer/seeds-build.iso",
    "packaging/packer/http/harmonic-installer_0.1.0_all.deb",
)
SOURCES = ("README.md", "harmonic_installer/__init__.py", "tests/bench/results/README.md")


def _checkout(tmp_path: Path) -> Path:
    """A copy of the Makefiles and a few sources at a path with spaces, littered as a test run leaves it."""
    top = tmp_path / "a checkout with spaces" / "harmonic-installer"
    for rel in ("Makefile", "packaging/packer/Makefile", *SOURCES):
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, top / rel)
    for rel in (*LEFT_BY_BUILDS_AND_TESTS, ".venv/bin/python", ".venv/lib/__pycache__/site.cpython-310.pyc"):
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_bytes(b"x")
    return top


def _make(top: Path, target: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS"}}
    env["HARMONIC_TEST_CACHE"] = str(cache)
    return subprocess.run(["make", "-C", str(top), target], env=env, capture_output=True, text=True, check=False)


def test_make_clean_removes_build_and_test_leftovers_and_keeps_sources_and_venv(tmp_path: Path) -> None:
    """`make clean` removes dist/, build/, .cache/, tool caches, __pycache__, packer outputs; keeps .venv, sources."""
    top = _checkout(tmp_path)
    cache = tmp_path / "image-cache"
    (cache / "vm-1").mkdir(parents=True)
    result = _make(top, "clean", cache)
    assert result.returncode == 0, result.stderr
    left = [rel for rel in LEFT_BY_BUILDS_AND_TESTS if (top / rel).exists()]
    assert left == []
    for gone in ("dist", "build", ".cache", "harmonic_installer/__pycache__"):
        assert not (top / gone).exists(), gone
    assert all((top / rel).is_file() for rel in SOURCES)
    assert (top / ".venv/bin/python").exists()
    assert (top / ".venv/lib/__pycache__/site.cpython-310.pyc").exists()
    assert (cache / "vm-1").is_dir()  # the shared cache is distclean's


def test_make_distclean_also_removes_the_venv_and_the_shared_image_cache(tmp_path: Path) -> None:
    """`make distclean` also removes .venv and the image cache named by HARMONIC_TEST_CACHE; sources stay."""
    top = _checkout(tmp_path)
    cache = tmp_path / "image-cache"
    (cache / "vm-1").mkdir(parents=True)
    result = _make(top, "distclean", cache)
    assert result.returncode == 0, result.stderr
    assert not (top / ".venv").exists()
    assert not cache.exists()
    assert [rel for rel in LEFT_BY_BUILDS_AND_TESTS if (top / rel).exists()] == []
    assert all((top / rel).is_file() for rel in SOURCES)


def test_make_distclean_refuses_a_relative_or_root_cache_path(tmp_path: Path) -> None:
    """A HARMONIC_TEST_CACHE of '/' or a relative path is refused, not removed."""
    top = _checkout(tmp_path)
    for bad in ("/", "relative/dir"):
        result = _make(top, "distclean", Path(bad))
        assert result.returncode != 0
        assert "refusing to remove" in result.stderr
