"""The one way a file is hashed: SHA-256 in 1 MiB blocks (downloads, the check before the write, MAAS images)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO, Any

BLOCK = 1024 * 1024


def sha256_stream(f: IO[bytes], limit: int | None = None) -> tuple[Any, int]:
    """A sha256 object over the next `limit` bytes of `f` (all of it when None), and the count hashed."""
    hasher = hashlib.sha256()
    done = 0
    while limit is None or done < limit:
        block = f.read(BLOCK if limit is None else min(BLOCK, limit - done))
        if not block:
            break
        hasher.update(block)
        done += len(block)
    return hasher, done


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex SHA-256, size) of the file at `path`.

    Raises:
        OSError: it cannot be opened or read.
    """
    with path.open("rb", buffering=0) as f:
        hasher, size = sha256_stream(f)
    return hasher.hexdigest(), size
