"""artifacts: a base module (no network on import) whose VerifiedArtifact only the downloader's verify() makes."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from harmonic_installer import artifacts
from harmonic_installer.artifacts import SOURCE_PINNED, ArtifactSpec, VerifiedArtifact
from harmonic_installer.errors import ChecksumError
from tests.support.artifacts import verified_file

ROOT = Path(__file__).resolve().parents[2]
SHA = "ab" * 32


def test_tools_import_no_network_stack() -> None:
    """Importing writer and packages (and artifacts) loads neither httpx, httpcore nor tenacity."""
    code = (
        "import sys, harmonic_installer.writer, harmonic_installer.packages, harmonic_installer.artifacts; "
        "print(sorted(m for m in ('httpx', 'httpcore', 'tenacity') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_exact_issue_command_prints_false() -> None:
    """`python -c "import harmonic_installer.writer, sys; print('httpx' in sys.modules)"` prints False."""
    code = "import harmonic_installer.writer, sys; print('httpx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_direct_construction_raises_even_with_good_values() -> None:
    """Building a VerifiedArtifact without the downloader's mint raises, whatever the values."""
    with pytest.raises(TypeError, match="only by the downloader"):
        VerifiedArtifact(Path("/x"), "http://x", SHA, 1, SOURCE_PINNED, False, 1)
    with pytest.raises(TypeError, match="only by the downloader"):
        VerifiedArtifact(Path("/x"), "http://x", SHA, 1, SOURCE_PINNED, False, 1, mint=artifacts.MintToken())


def test_dataclasses_replace_cannot_copy_the_seal(tmp_path: Path) -> None:
    """dataclasses.replace on a real VerifiedArtifact raises: the mint is not a stored field to copy."""
    path = tmp_path / "a.deb"
    path.write_bytes(b"payload")
    art = verified_file(path)
    assert art.sha256 == hashlib.sha256(b"payload").hexdigest()
    with pytest.raises(TypeError, match="only by the downloader"):
        dataclasses.replace(art, sha256=SHA)
    with pytest.raises(TypeError, match="only by the downloader"):
        dataclasses.replace(art)
    assert getattr(art, "mint", None) is None  # the token is not reachable from an artifact


def test_the_mint_is_claimed_once_by_the_downloader() -> None:
    """The downloader's verify code holds the one mint; a second claim raises."""
    import harmonic_installer.download  # noqa: F401 - claims the mint at import

    with pytest.raises(RuntimeError, match="claimed already"):
        artifacts.claim_mint()


def test_sanctioned_helper_still_compares(tmp_path: Path) -> None:
    """The tests' helper goes through the real comparison: a wrong pinned value is a ChecksumError."""
    path = tmp_path / "a.deb"
    path.write_bytes(b"payload")
    with pytest.raises(ChecksumError, match="SHA-256 mismatch"):
        verified_file(path, sha256=SHA)


def test_spec_refuses_bad_names_and_digests(tmp_path: Path) -> None:
    """ArtifactSpec takes only a plain file name and a 64-hex-digit SHA-256."""
    with pytest.raises(ValueError, match="plain file name"):
        ArtifactSpec(url="http://127.0.0.1/x", dest_dir=tmp_path, filename="../x")
    with pytest.raises(ValueError, match="64 hexadecimal"):
        ArtifactSpec(url="http://127.0.0.1/x", dest_dir=tmp_path, filename="x", sha256="abc")
