"""The ownership rules are enforced by lint: a banned import placed in a module fails ruff (TID251), and the real
tree passes. The check runs ruff with the project's own pyproject.toml on a copy of the package layout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BANNED = ("import subprocess", "import httpx", "import pyudev", "from urllib.request import urlopen")


def _ruff(cwd: Path, *targets: str) -> list[dict[str, Any]]:
    """ruff's findings (JSON) for `targets`, with the pyproject.toml found from `cwd`, TID251 only."""
    argv = [sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "TID251", "--output-format", "json"]
    out = subprocess.run([*argv, *targets], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode in (0, 1), out.stderr
    findings: list[dict[str, Any]] = json.loads(out.stdout or "[]")
    return findings


def _layout(tmp_path: Path) -> Path:
    """A copy of the project's config and package layout (files empty but the one under test)."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for path in (ROOT / "harmonic_installer").rglob("*.py"):
        target = tmp_path / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("", encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("module", ["reporting.py", "maas_status.py", "runner.py", "disks.py", "plan.py"])
def test_a_banned_import_added_to_a_module_fails_lint(tmp_path: Path, module: str) -> None:
    """Each banned import appended to a copy of a module (even one allowed other imports) is a TID251 finding."""
    root = _layout(tmp_path)
    original = (ROOT / "harmonic_installer" / module).read_text(encoding="utf-8")
    copy = root / "harmonic_installer" / module
    copy.write_text(original + "\n" + "\n".join(f"{line}  # added" for line in BANNED) + "\n", encoding="utf-8")
    added = {i for i, line in enumerate(copy.read_text(encoding="utf-8").splitlines(), 1) if line.endswith("# added")}
    findings = _ruff(root, f"harmonic_installer/{module}")
    flagged = {f["location"]["row"] for f in findings if f["code"] == "TID251"}
    # runner.py may use subprocess and disks.py pyudev (each on its own noqa line): the added line is still new
    assert added <= flagged, (module, sorted(added - flagged), findings)


def test_the_unmodified_copy_is_clean(tmp_path: Path) -> None:
    """The same copy without the added lines has no TID251 finding: the test above sees only what was added."""
    root = _layout(tmp_path)
    shutil.copy(ROOT / "harmonic_installer" / "reporting.py", root / "harmonic_installer" / "reporting.py")
    assert _ruff(root, "harmonic_installer/reporting.py") == []


def test_the_real_tree_is_clean() -> None:
    """The project as it is passes the ownership lint: every allowed import carries its own noqa."""
    assert _ruff(ROOT, "harmonic_installer", "packaging", "scripts") == []
