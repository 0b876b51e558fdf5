"""The operator side stays apart: the install path never imports harmonic_installer.fleet, and fleet keeps the
project's ownership rules (no subprocess, httpx, tenacity, pyudev; urllib only in fleet/transport.py)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "harmonic_installer"


def imports(path: Path) -> set[str]:
    """Every module a file imports (relative imports resolved against the package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*parts[: -node.level], *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def test_only_the_cli_imports_fleet() -> None:
    """No module outside fleet/ except cli_fleet.py (the fleet commands) imports harmonic_installer.fleet."""
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if "fleet" not in p.relative_to(PACKAGE).parts
        and p.name != "cli_fleet.py"
        and any(m == "harmonic_installer.fleet" or m.startswith("harmonic_installer.fleet.") for m in imports(p))
    ]
    assert offenders == []


def test_fleet_keeps_the_ownership_rules() -> None:
    """fleet runs no command, uses no httpx/tenacity/pyudev, configures no logging; urllib only in transport.py."""
    banned = ("subprocess", "httpx", "tenacity", "pyudev", "structlog")
    for path in (PACKAGE / "fleet").glob("*.py"):
        found = imports(path)
        assert not [m for m in found if m.split(".")[0] in banned], path.name
        if path.name != "transport.py":
            assert not [m for m in found if m.startswith(("urllib.request", "http.client"))], path.name


def test_an_install_run_does_not_load_fleet() -> None:
    """Importing the install path (cli, plan, reporting) leaves harmonic_installer.fleet unloaded."""
    code = "import sys, harmonic_installer.cli, harmonic_installer.plan, harmonic_installer.reporting;"
    code += "print(any(m.startswith('harmonic_installer.fleet') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent)
    assert out.stdout.strip() == "False"
