"""Build the zipapp and the .deb from this checkout for tests (offline: wheels from scripts/bootstrap.sh)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / ".cache" / "wheels"


def python310() -> str:
    """The Python 3.10 the artifacts are built with (skips the test if there is none)."""
    result = subprocess.run([str(ROOT / "scripts" / "find-python310.sh")], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip("no Python 3.10 to build with")
    return result.stdout.strip()


def build_pyz(output: Path) -> Path:
    """Build harmonic-install.pyz at output from the cached wheels (no network)."""
    if not any(WHEELS.glob("*.whl")):
        pytest.skip("runtime wheels not fetched: run scripts/bootstrap.sh")
    subprocess.run(
        [python310(), str(ROOT / "packaging" / "build_pyz.py"), "--offline", "--output", str(output)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return output


def build_deb(pyz: Path, out_dir: Path) -> Path:
    """Build the .deb around pyz into out_dir and return its path."""
    result = subprocess.run(
        [str(ROOT / "packaging" / "build_deb.sh"), str(pyz), str(out_dir)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (deb,) = out_dir.glob("harmonic-installer_*_all.deb")
    assert str(deb.name) in result.stdout
    return deb
