"""Where a file's expected SHA-256 comes from: pinned, or SHA256SUMS (strictly parsed, optionally gpgv-checked).

The expected value is looked up before any body byte is read; a file without one is refused unless
checksums.allow_unverified says otherwise.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog

from harmonic_installer.artifacts import SOURCE_NONE, SOURCE_PINNED, SOURCE_SUMS, SOURCE_SUMS_GPG, ArtifactSpec
from harmonic_installer.config import redact_url
from harmonic_installer.download.policy import DownloadPolicy
from harmonic_installer.download.verify import Expected
from harmonic_installer.errors import CommandError, DownloadError
from harmonic_installer.runner import Runner

log = structlog.get_logger()

_SUMS_LINE = re.compile(r"([0-9A-Fa-f]{64}) ([ *])(.+)")


@dataclass(frozen=True, slots=True)
class Sums:
    """A loaded checksum file."""

    entries: dict[str, str] | None  # None: the server has no SHA256SUMS (404/410)
    source: str


class Checksums:
    """The expected values of one run's files; each checksum file is fetched (and its signature checked) once."""

    def __init__(self, policy: DownloadPolicy, runner: Runner | None, get_small: Callable[[str], bytes | None]) -> None:
        self._policy = policy
        self._runner = runner
        self._get_small = get_small
        self._cache: dict[str, Sums] = {}

    def expected(self, spec: ArtifactSpec, name: str, *, revealed: bool, lg: Any, url_shown: str) -> Expected:
        """The SHA-256 the file `name` must have.

        Raises:
            DownloadError: there is none (and unverified downloads are not allowed), or the checksum file is bad.
        """
        if spec.sha256:
            lg.info("download.checksum_source", source=SOURCE_PINNED, sha256=spec.sha256.lower())
            return Expected(spec.sha256.lower(), SOURCE_PINNED)
        if spec.sums_url:
            sums = self.load(spec.sums_url)
            if sums.entries is not None:
                candidates = _candidates(spec, name, revealed)
                for candidate in candidates:
                    if candidate in sums.entries:
                        digest = sums.entries[candidate]
                        lg.info("download.checksum_source", source=sums.source, listed_as=candidate, sha256=digest)
                        return Expected(digest, sums.source, sums.entries)
                missing = f"{redact_url(spec.sums_url)} does not list {' or '.join(repr(c) for c in candidates)}"
            else:
                missing = f"{redact_url(spec.sums_url)} does not exist (404)"
        else:
            missing = "no pinned SHA-256 and no checksum file configured"
        if self._policy.allow_unverified:
            lg.warning("download.unverified", reason=missing, source=SOURCE_NONE)
            return Expected(None, SOURCE_NONE)
        raise DownloadError(
            f"verifying {url_shown}: no checksum for {name}: {missing}; pin it (iso.sha256) or publish "
            f"{self._policy.sums_name}; checksums.allow_unverified=true skips the check (insecure)"
        )

    def listed(self, spec: ArtifactSpec, name: str | None) -> str | None:
        """The SHA-256 the checksum file lists for `name` or the URL's own name, if any (for peek)."""
        if not spec.sums_url:
            return None
        entries = self.load(spec.sums_url).entries or {}
        basename = url_basename(spec.url)
        return next((entries[c] for c in (name, basename) if c and c in entries), None)

    def load(self, sums_url: str) -> Sums:
        """The checksum file at `sums_url` (cached), signature-checked when a keyring is configured."""
        cached = self._cache.get(sums_url)
        if cached is not None:
            return cached
        shown = redact_url(sums_url)
        body = self._get_small(sums_url)
        if body is None:
            sums = Sums(None, SOURCE_SUMS)
        else:
            source = SOURCE_SUMS
            if self._policy.keyring is not None:
                self._check_signature(sums_url, body)
                source = SOURCE_SUMS_GPG
            entries = parse_sums(body, shown)
            log.info("download.sums_loaded", url=shown, entries=len(entries), source=source)
            sums = Sums(entries, source)
        self._cache[sums_url] = sums
        return sums

    def _check_signature(self, sums_url: str, body: bytes) -> None:
        keyring = self._policy.keyring
        assert keyring is not None
        assert self._runner is not None
        sig_url = sums_url + ".gpg"
        shown, sig_shown = redact_url(sums_url), redact_url(sig_url)
        signature = self._get_small(sig_url)
        if signature is None:
            raise DownloadError(f"verifying {shown}: a keyring is configured but {sig_shown} does not exist (404)")
        with tempfile.TemporaryDirectory(prefix="harmonic-gpgv-") as tmp:
            sums_path, sig_path = Path(tmp) / "SHA256SUMS", Path(tmp) / "SHA256SUMS.gpg"
            for path, data in ((sums_path, body), (sig_path, signature)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            argv = ["gpgv", "--homedir", tmp, "--keyring", str(keyring), str(sig_path), str(sums_path)]
            try:
                result = self._runner.run(argv, timeout=self._policy.gpgv_timeout_s, check=False)
            except CommandError as exc:
                raise DownloadError(f"verifying {shown}: could not run gpgv: {exc}", exc.details) from exc
        if result.returncode != 0:
            tail = "\n".join(result.output.splitlines()[-10:])
            log.error("download.signature_bad", url=shown, signature=sig_shown, returncode=result.returncode)
            raise DownloadError(
                f"verifying {shown}: the signature {sig_shown} does not verify against {keyring} "
                f"(gpgv exit {result.returncode})",
                tail,
            )
        log.info("download.signature_verified", url=shown, keyring=str(keyring))


def _candidates(spec: ArtifactSpec, name: str, revealed: bool) -> list[str]:
    """The names under which the file may be listed, in order of preference."""
    candidates = [name]
    basename = url_basename(spec.url)
    if basename and basename not in candidates:
        candidates.append(basename)  # 'latest' may be listed under its URL name
    if spec.adopt_server_name and not revealed and spec.filename not in candidates:
        candidates.append(spec.filename)  # unnamed 'latest': the configured release's entry
    return candidates


def url_basename(url: str) -> str:
    """The last path segment of `url`, percent-decoded."""
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def parse_sums(body: bytes, shown: str) -> dict[str, str]:
    """Strictly parse `sha256sum` output: '<64 hex> <space or *><plain name>' per line, LF or CRLF."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise DownloadError(f"verifying {shown}: not UTF-8 text; not a checksum file") from None
    entries: dict[str, str] = {}
    # CRLF (written on Windows): the CR ends the line; a second one, or one inside the line, does not.
    for number, line in enumerate((raw.removesuffix("\r") for raw in text.split("\n")), 1):
        if not line.strip():
            continue
        match = _SUMS_LINE.fullmatch(line)
        if match is None:
            raise DownloadError(
                f"verifying {shown}: line {number} is malformed (expected '<64 hex digits>  <file name>'): "
                f"{line[:100]!r}"
            )
        digest, name = match.group(1).lower(), match.group(3)
        if "/" in name or "\\" in name or ".." in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise DownloadError(
                f"verifying {shown}: line {number} names {name[:100]!r}, which is not a plain file name"
            )
        if name in entries:
            raise DownloadError(f"verifying {shown}: line {number} lists {name!r} a second time")
        entries[name] = digest
    return entries
