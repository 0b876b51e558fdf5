"""Print (or, with --write, update in README.md) the settings table generated from config.py."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from harmonic_installer import config

START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def table() -> str:
    """The Markdown table of every setting: key, environment variable, default, meaning."""
    rows = ["| key | environment | default | meaning |", "| --- | --- | --- | --- |"]
    for key, default, help_text in config.describe_keys():
        shown = f"`{default}`" if default else "(none)"
        rows.append(f"| `{key}` | `{config.env_name(key)}` | {shown} | {help_text} |")
    return "\n".join(rows)


def render(readme: str) -> str:
    """README text with the generated table between the markers."""
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    return pattern.sub(f"{START}\n{table()}\n{END}", readme)


if __name__ == "__main__":
    path = Path(__file__).resolve().parent.parent / "README.md"
    if "--write" in sys.argv:
        path.write_text(render(path.read_text()))
    else:
        print(table())
