"""The README's settings table and exit codes match the code."""

from __future__ import annotations

from pathlib import Path

from harmonic_installer.errors import ExitCode
from scripts.readme_settings import render

README = Path(__file__).resolve().parents[2] / "README.md"


def test_settings_table_is_current() -> None:
    """The table between the markers is what config.py generates (run scripts/readme_settings.py --write)."""
    text = README.read_text()
    assert render(text) == text


def test_every_exit_code_is_documented() -> None:
    """Each ExitCode value appears in the README's exit code table."""
    text = README.read_text()
    for code in ExitCode:
        assert f"| {code.value} " in text or f" {code.value} |" in text or f"/ {code.value} |" in text, code
