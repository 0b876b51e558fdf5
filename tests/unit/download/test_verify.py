"""download/verify.py: the comparison before anything is published, and the only maker of VerifiedArtifact."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from harmonic_installer.download import SOURCE_NONE, SOURCE_PINNED, VerifiedArtifact
from harmonic_installer.download.verify import Expected, verify
from harmonic_installer.errors import ChecksumError
from tests.unit.download.kit import SHA


def test_verified_artifact_cannot_be_made_outside_fetch() -> None:
    """Only the downloader makes a VerifiedArtifact: constructing one elsewhere raises, even with good values."""
    with pytest.raises(TypeError, match=r"only by the downloader"):
        VerifiedArtifact(Path("/x"), "http://x", SHA, 1, SOURCE_PINNED, False, 1)


def test_mismatch_raises_before_publish_is_called(tmp_path: Path) -> None:
    """A wrong digest is a ChecksumError and the publish step (the rename) never runs."""
    part = tmp_path / ".a.deb.part"
    part.write_bytes(b"data")
    called: list[bool] = []

    def publish() -> Path:
        called.append(True)
        return part

    digest = hashlib.sha256(b"data").hexdigest()
    with pytest.raises(ChecksumError, match=f"expected {SHA} .pinned., got {digest}"):
        verify(part, digest, 4, Expected(SHA, SOURCE_PINNED), url="u", url_shown="u", reused=False, transferred=4,
               publish=publish)  # fmt: skip
    assert called == []


def test_match_publishes_then_seals_the_final_file(tmp_path: Path) -> None:
    """A matching digest runs publish, and the artifact describes the published file (release from its name)."""
    part = tmp_path / ".x.part"
    part.write_bytes(b"data")
    final = tmp_path / "APOLLO_PLATFORM-release-3.22.iso"
    digest = hashlib.sha256(b"data").hexdigest()

    def publish() -> Path:
        part.rename(final)
        return final

    art = verify(part, digest, 4, Expected(digest, SOURCE_PINNED), url="http://h/x", url_shown="http://h/x",
                 reused=False, transferred=4, publish=publish)  # fmt: skip
    st = final.stat()
    assert (art.path, art.release, art.checksum_source) == (final, "release-3.22", SOURCE_PINNED)
    assert art.identity == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def test_nothing_to_compare_is_sealed_as_unverified(tmp_path: Path) -> None:
    """With no expected value (allow_unverified) the artifact says so in its checksum source."""
    path = tmp_path / "a.deb"
    path.write_bytes(b"data")
    digest = hashlib.sha256(b"data").hexdigest()
    art = verify(path, digest, 4, Expected(None, SOURCE_NONE), url="u", url_shown="u", reused=True, transferred=0)
    assert art.checksum_source == SOURCE_NONE
