"""Plain file names: the one rule for names the installer creates, from its settings or from a server.

A name is at most 255 bytes (the limit of ext4, tmpfs and every Linux file system the ISO may land on),
starts with a letter or digit, holds only letters, digits and `. _ + ~ -`, and has no `..`: no path, no
control character, nothing a shell or a later `rm` could misread. config.py validates settings with it,
the download package the names it writes and the names a server offers.
"""

from __future__ import annotations

import re

MAX_NAME_BYTES = 255
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]*")


def name_problem(name: str) -> str | None:
    """Why `name` is not a plain file name, or None when it is."""
    if not name:
        return "is empty"
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        return f"is {size} bytes long, over the {MAX_NAME_BYTES} a file name may have"
    if not _PLAIN.fullmatch(name) or ".." in name:
        return "is not a plain file name (letters, digits, . _ + ~ -; no / or ..)"
    return None


def is_plain_name(name: str) -> bool:
    """True when `name` is a plain file name (see name_problem)."""
    return name_problem(name) is None


def check_name(name: str) -> str:
    """`name` itself when it is a plain file name.

    Raises:
        ValueError: naming the problem (for config's per-key error and ArtifactSpec).
    """
    problem = name_problem(name)
    if problem is not None:
        raise ValueError(f"{name[:80]!r}{'...' if len(name) > 80 else ''} {problem}")
    return name
