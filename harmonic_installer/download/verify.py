"""The comparison, and the only maker of VerifiedArtifact: it holds the process' mint (artifacts.py).

`verify()` compares the SHA-256 of a file with the expected value first; only then does it run the caller's
`publish` (the rename of the .part into place) and seal the result.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harmonic_installer.artifacts import (
    VerifiedArtifact,
    claim_mint,  # noqa: TID251  # the downloader's verification code holds the VerifiedArtifact mint
)
from harmonic_installer.errors import ChecksumError

_MINT = claim_mint()  # at import: a second claim anywhere else raises
_RELEASE = re.compile(r"^APOLLO_PLATFORM-(.+)\.iso$")


@dataclass(frozen=True, slots=True)
class Expected:
    """The SHA-256 a file must have and where that value came from."""

    sha256: str | None  # None: nothing to compare (checksums.allow_unverified)
    source: str
    sums: dict[str, str] | None = None  # the SHA256SUMS entries the value came from, if any


def verify(
    path: Path,
    digest: str,
    size: int,
    expected: Expected,
    *,
    url: str,
    url_shown: str,
    reused: bool,
    transferred: int,
    publish: Callable[[], Path] | None = None,
) -> VerifiedArtifact:
    """Compare `digest` with the expected value, then (publish, then) seal the file as a VerifiedArtifact.

    Args:
        path: the file whose SHA-256 is `digest` and whose size is `size`.
        publish: called only after the comparison (renames the .part into place); returns the final path.

    Raises:
        ChecksumError: `digest` is not the expected value.
    """
    if expected.sha256 is not None and digest != expected.sha256:
        raise ChecksumError(
            f"verifying {url_shown}: SHA-256 mismatch: expected {expected.sha256} ({expected.source}), got {digest}",
            f"file {path}, {size} bytes",
        )
    if publish is not None:
        path = publish()
    release_match = _RELEASE.match(path.name)
    st = os.stat(path, follow_symlinks=False)
    return VerifiedArtifact(
        path=path,
        url=url,
        sha256=digest,
        size=size,
        checksum_source=expected.source,
        reused=reused,
        bytes_transferred=transferred,
        release=release_match.group(1) if release_match else None,
        identity=(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns),
        mint=_MINT,
    )
