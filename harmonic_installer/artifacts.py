"""What a download is asked for and what it delivers: `ArtifactSpec` in, `VerifiedArtifact` out.

A base module: it imports nothing above names.py, so the tools that take a verified file (packages.py,
writer.py) do not load the network (httpx, tenacity). A `VerifiedArtifact` is sealed in fact, not by
convention: its constructor needs the process' one mint token, which `claim_mint()` hands out once, to the
downloader's verification code (harmonic_installer/download/verify.py claims it when it is imported). Built
without the token, or copied with `dataclasses.replace`, it raises.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from pathlib import Path

from harmonic_installer.names import is_plain_name

SOURCE_PINNED = "pinned"
SOURCE_SUMS = "SHA256SUMS"
SOURCE_SUMS_GPG = "SHA256SUMS (gpg-verified)"
SOURCE_NONE = "none (--insecure-allow-unverified)"
SOURCES = frozenset({SOURCE_PINNED, SOURCE_SUMS, SOURCE_SUMS_GPG, SOURCE_NONE})

_HEX64 = re.compile(r"[0-9a-f]{64}")


class MintToken:
    """The one object that lets its holder build a VerifiedArtifact (there is one per process)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<VerifiedArtifact mint>"


_MINT = MintToken()
_unclaimed: list[MintToken] = [_MINT]  # emptied by the first claim


def claim_mint() -> MintToken:
    """The process' mint token; only the first caller (the downloader's verify module, at import) gets it.

    Raises:
        RuntimeError: the token was claimed already.
    """
    if not _unclaimed:
        raise RuntimeError("the VerifiedArtifact mint is claimed already (by the downloader's verification code)")
    return _unclaimed.pop()


@dataclass(frozen=True, slots=True)
class ArtifactSpec:
    """One file to fetch: where from, where to, and how its checksum is known."""

    url: str
    dest_dir: Path
    filename: str
    sha256: str | None = None
    sums_url: str | None = None
    adopt_server_name: bool = False
    label: str = ""
    # Called with the file's total size as soon as the response headers announce it, before any body byte is
    # read; raises to refuse the file (the ISO on a disk too small for it: PreflightError, exit 3).
    size_check: Callable[[int], None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not is_plain_name(self.filename):
            raise ValueError(f"ArtifactSpec.filename {self.filename!r} is not a plain file name")
        if self.sha256 is not None and not _HEX64.fullmatch(self.sha256.lower()):
            raise ValueError("ArtifactSpec.sha256 must be 64 hexadecimal digits")


@dataclass(frozen=True, slots=True)
class VerifiedArtifact:
    """A file whose SHA-256 matched its expected value (or, explicitly allowed, had none to match)."""

    path: Path
    url: str
    sha256: str
    size: int
    checksum_source: str
    reused: bool
    bytes_transferred: int
    release: str | None = None
    # (st_dev, st_ino, st_size, st_mtime_ns) of the file when it was verified: the writer confirms it is unchanged.
    identity: tuple[int, int, int, int] | None = field(default=None, compare=False, kw_only=True)
    # Not stored: `dataclasses.replace` must be given it again, so a copy with other values needs the token too.
    mint: InitVar[MintToken | None] = field(default=None, kw_only=True)

    def __post_init__(self, mint: MintToken | None) -> None:
        if mint is not _MINT:
            raise TypeError("a VerifiedArtifact is made only by the downloader, after its checksum matched")
        if not _HEX64.fullmatch(self.sha256) or self.checksum_source not in SOURCES or self.size < 0:
            raise ValueError("not a verified artifact")
