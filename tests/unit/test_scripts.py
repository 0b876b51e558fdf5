"""scripts/: find-python310.sh finds the target's Python 3.10 or stops with one line saying what to do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIND = ROOT / "scripts" / "find-python310.sh"
PY310 = Path(sys.base_prefix) / "bin" / "python3.10"  # the interpreter .venv is made from

needs_310 = pytest.mark.skipif(not PY310.exists(), reason="the suite runs on a .venv made from a prefix build")


def _find(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    return subprocess.run([str(FIND), *args], env={**base, **env}, capture_output=True, text=True, check=False)


def test_python310_that_is_not_310_stops_with_one_line(tmp_path: Path) -> None:
    """PYTHON310 naming an interpreter that is not 3.10 fails with one line naming it and what to install."""
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    result = _find(tmp_path, PYTHON310=str(fake))
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert f"PYTHON310={fake} is not a Python 3.10" in line
    assert "pyenv install 3.10" in line
    assert "PYTHON310=/path/to/python3.10" in line


@needs_310
def test_python310_names_the_interpreter_to_use(tmp_path: Path) -> None:
    """PYTHON310 pointing at a 3.10 is printed as the interpreter to use."""
    result = _find(tmp_path, PYTHON310=str(PY310))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(PY310)


@needs_310
def test_pyenv_builds_are_found_under_pyenv_root(tmp_path: Path) -> None:
    """With no python3.10 on PATH, pyenv's newest 3.10 build under $PYENV_ROOT is found."""
    for version in ("3.10.2", "3.10.99"):
        bindir = tmp_path / "pyenv" / "versions" / version / "bin"
        bindir.mkdir(parents=True)
        (bindir / "python3.10").symlink_to(PY310)
    result = _find(tmp_path, PYENV_ROOT=str(tmp_path / "pyenv"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "pyenv" / "versions" / "3.10.99" / "bin" / "python3.10")


@pytest.mark.integration
@needs_310
@pytest.mark.skipif(os.geteuid() != 0, reason="hides the interpreter with a mount namespace (root)")
def test_without_any_310_it_stops_at_once_with_one_line(tmp_path: Path) -> None:
    """With every 3.10 hidden (its prefix covered by an empty tmpfs) it exits 1 with one line: what to install."""
    script = 'mount -t tmpfs none "$1" && shift && exec "$@"'
    argv = ["unshare", "-m", "sh", "-c", script, "sh", sys.base_prefix, "env", "PATH=/usr/bin:/bin"]
    argv += [f"HOME={tmp_path}", str(FIND)]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 1, result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith("find-python310: no Python 3.10 found (Debian 12 has none): install one")
    assert "PYTHON310=/path/to/python3.10" in line
