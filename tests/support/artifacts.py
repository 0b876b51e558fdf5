"""A VerifiedArtifact for tests, made the sanctioned way: the real file hashed, then the downloader's verify()."""

from __future__ import annotations

import hashlib
from pathlib import Path

from harmonic_installer.artifacts import SOURCE_PINNED, VerifiedArtifact
from harmonic_installer.download.verify import Expected, verify


def verified_file(path: Path, *, url: str | None = None, sha256: str | None = None) -> VerifiedArtifact:
    """`path` (a real file) as a VerifiedArtifact, pinned to `sha256` (default: its own digest).

    Raises:
        ChecksumError: the file does not hash to `sha256`.
    """
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    return verify(
        path,
        digest,
        len(data),
        Expected(sha256 or digest, SOURCE_PINNED),
        url=url or path.as_uri(),
        url_shown=url or str(path),
        reused=True,
        transferred=0,
    )
