"""The ownership rules are lint, not convention: a banned import added to a copy of a module fails ruff (TID251)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def ruff(module: str, extra: str = "") -> subprocess.CompletedProcess[str]:
    """ruff check of `module`'s text plus `extra` lines, as if it were that file (its per-file config applies)."""
    text = (ROOT / module).read_text(encoding="utf-8") + extra
    return subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "TID251", "--stdin-filename", module, "-"],
        input=text,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("module", "line", "rule"),
    [
        ("harmonic_installer/writer.py", "import httpx", "httpx"),
        ("harmonic_installer/packages.py", "import tenacity", "tenacity"),
        ("harmonic_installer/download/fetch.py", "import tenacity", "tenacity"),
        ("harmonic_installer/reporting.py", "import subprocess", "subprocess"),
        ("harmonic_installer/reporting.py", "import httpx", "httpx"),
        ("harmonic_installer/maas_status.py", "import pyudev", "pyudev"),
        ("harmonic_installer/runner.py", "from urllib.request import urlopen", "urllib.request"),
        ("harmonic_installer/disks.py", "import subprocess", "subprocess"),
        ("harmonic_installer/plan.py", "from harmonic_installer.artifacts import claim_mint", "claim_mint"),
        ("harmonic_installer/download/fetch.py", "from harmonic_installer.artifacts import _MINT", "_MINT"),
    ],
)
def test_a_banned_import_fails_lint(module: str, line: str, rule: str) -> None:
    """The import, outside the module that owns it, is a TID251 finding."""
    result = ruff(module, f"\n{line}  # added by the test\n")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "TID251" in result.stdout
    assert rule in result.stdout


@pytest.mark.parametrize(
    "module",
    ["harmonic_installer/download/verify.py", "harmonic_installer/download/policy.py", "harmonic_installer/writer.py"],
)
def test_the_modules_as_they_are_pass(module: str) -> None:
    """Unchanged, the owners pass (their one allowed import carries its noqa with the reason)."""
    result = ruff(module)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_whole_tree_passes() -> None:
    """The real tree has no TID251 finding: every allowed import carries its own noqa."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "TID251", "harmonic_installer"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
