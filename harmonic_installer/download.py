"""Fetch artifacts over HTTP: streamed, hashed in the same pass, resumed, retried, renamed only once verified.

With download_http.py (one GET: redirects hop by hop, each with its own proxy decision, and the resend after a
stale keep-alive) the only code that talks HTTP (httpx); the only one that retries (tenacity);
download_verdict.py words the line of a download that ran out of attempts. `Downloader.fetch(spec)` returns a
`VerifiedArtifact`, and nothing else in the project can make one: it is built in one place, right after the
SHA-256 of the final file matched the expected value (pinned, or from SHA256SUMS, optionally gpg-verified).
Operator documentation: docs/downloads.md.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import hashlib
import itertools
import json
import os
import random
import re
import shutil
import ssl
import stat
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal
from urllib.parse import unquote, urlsplit

import httpcore  # noqa: TID251  # download owner: httpx's transport errors
import httpx  # noqa: TID251  # the one owner of HTTP downloads (DESIGN.md)
import structlog
import tenacity  # noqa: TID251  # the one retry policy (DESIGN.md)

from harmonic_installer import __version__, tls
from harmonic_installer.config import Settings, redact_url
from harmonic_installer.download_follow import Follower
from harmonic_installer.download_http import ClientPool, Exchange, stream_get
from harmonic_installer.download_verdict import gave_up
from harmonic_installer.download_wire import body_chunks
from harmonic_installer.errors import ChecksumError, CommandError, DownloadError
from harmonic_installer.log import is_interactive
from harmonic_installer.names import is_plain_name
from harmonic_installer.proxy import ProxyConfig
from harmonic_installer.runner import Runner

log = structlog.get_logger()

# httpcore reads the socket 64 KiB at a time and copies every read through h11's buffer; 1 MiB reads cut the
# CPU per GiB by a third (3.6 -> 2.4 s, tests/bench/results/README.md). Process-wide, but this module is the
# only user of httpx/httpcore. Peak RSS stays flat (about +11 MiB).
httpcore.HTTP11Connection.READ_NUM_BYTES = 1024 * 1024

MiB = 1024 * 1024
SOURCE_PINNED = "pinned"
SOURCE_SUMS = "SHA256SUMS"
SOURCE_SUMS_GPG = "SHA256SUMS (gpg-verified)"
SOURCE_NONE = "none (--insecure-allow-unverified)"
_SOURCES = frozenset({SOURCE_PINNED, SOURCE_SUMS, SOURCE_SUMS_GPG, SOURCE_NONE})
_SEAL = object()  # only _verified() holds it: no VerifiedArtifact without a checksum comparison

# What is worth another attempt: the one place the retry policy is declared (see also _Transient).
RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
_RETRY_TRANSPORT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)

_SUMS_LINE = re.compile(r"([0-9A-Fa-f]{64}) ([ *])(.+)")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_RELEASE = re.compile(r"^APOLLO_PLATFORM-(.+)\.iso$")
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")
_HASH_BLOCK = 1 * MiB


ProgressCallback = Callable[[str, int, int | None], None]


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
    _seal: object = field(default=None, repr=False, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        if self._seal is not _SEAL:
            raise TypeError("a VerifiedArtifact is made only by Downloader.fetch, after its checksum matched")
        if not _HEX64.fullmatch(self.sha256) or self.checksum_source not in _SOURCES or self.size < 0:
            raise ValueError("not a verified artifact")


@dataclass(frozen=True, slots=True)
class DownloadPolicy:
    """Budgets, timeouts and verification rules for every download of a run."""

    attempts: int
    max_time_s: float
    connect_timeout_s: float
    read_timeout_s: float
    stall_min_rate: int
    stall_window_s: float
    backoff_max_s: float
    free_space_margin_bytes: int
    allow_unverified: bool
    keyring: Path | None
    ca_file: Path | None
    sums_name: str
    backoff_initial_s: float = 1.0
    retry_after_max_s: float = 300.0
    progress_interval_s: float = 5.0
    sums_max_bytes: int = 1 * MiB
    gpgv_timeout_s: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DownloadPolicy:
        """The policy described by the download.*, checksums.* and server.* settings."""
        return cls(
            attempts=settings.download_attempts,
            max_time_s=settings.download_max_time_s,
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            stall_min_rate=settings.stall_min_rate,
            stall_window_s=settings.stall_window_s,
            backoff_max_s=settings.backoff_max_s,
            free_space_margin_bytes=settings.free_space_margin_mib * MiB,
            allow_unverified=settings.allow_unverified,
            keyring=settings.keyring,
            ca_file=settings.ca_file,
            sums_name=settings.sums_name,
        )


# ---------------------------------------------------------------------------------------------------------
# Private state and signals.


class _Transient(Exception):
    """A failure another attempt can cure (the only exception the retry policy retries)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _OverBudget(DownloadError):
    """The wall-time budget ran out mid-transfer; the .part file is kept for the next run."""


class _FinalExists(Exception):
    """The server revealed a name whose final file already exists: check it before transferring."""


@dataclass(frozen=True, slots=True)
class _Expected:
    sha256: str | None
    source: str
    sums: dict[str, str] | None = None  # the SHA256SUMS entries the value came from, if any


@dataclass(frozen=True, slots=True)
class _Sums:
    entries: dict[str, str] | None  # None: the server has no SHA256SUMS (404/410)
    source: str


@dataclass(slots=True)
class _Transfer:
    """Mutable state of one fetch across attempts."""

    spec: ArtifactSpec
    lg: Any
    url_shown: str
    part: Path
    meta: Path
    name: str | None = None
    revealed: bool = False
    expected: _Expected | None = None
    hasher: Any = None
    size: int = 0
    transferred: int = 0
    attempts: int = 0
    part_name: str | None = None  # the server-revealed name recorded in the sidecar of a resumed .part
    checked_existing: set[str] = field(default_factory=set)
    warned_no_validator: bool = False
    exchange: Exchange = field(default_factory=Exchange)
    failures: list[str] = field(default_factory=list)  # the reason of each failed attempt, oldest first

    @property
    def final(self) -> Path:
        return self.spec.dest_dir / (self.name or self.spec.filename)


# ---------------------------------------------------------------------------------------------------------
# Retry policy pieces.


class _StopAtDeadline(tenacity.stop.stop_base):
    """Stop when the next attempt would start after the wall-time budget (injected clock)."""

    def __init__(self, clock: Callable[[], float], deadline: float) -> None:
        self._clock = clock
        self._deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._clock() + retry_state.upcoming_sleep >= self._deadline


class _Wait(tenacity.wait.wait_base):
    """Full-jitter exponential backoff; a server's Retry-After (capped) replaces it, plus jitter that grows with it.

    The jitter after a Retry-After is U(0, min(10, max(1, retry_after / 4))) seconds: with a flat 1 s, a fleet
    told "Retry-After: 10" came back within one second (measured in tests/bench/results/README.md, fleet).
    """

    def __init__(self, initial: float, maximum: float, retry_after_max: float) -> None:
        self._backoff = tenacity.wait_random_exponential(multiplier=initial, max=maximum)
        self._retry_after_max = retry_after_max

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            wait = min(exc.retry_after, self._retry_after_max)
            return wait + random.uniform(0, min(10.0, max(1.0, wait / 4)))  # noqa: S311 - jitter, not crypto
        return float(self._backoff(retry_state))


# ---------------------------------------------------------------------------------------------------------
# The downloader.


class Downloader:
    """Fetches artifacts with one HTTP client per proxy decision; use as a context manager."""

    def __init__(
        self,
        policy: DownloadPolicy,
        proxy: ProxyConfig,
        *,
        runner: Runner | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_progress: ProgressCallback | None = None,
        progress_bar: IO[str] | Literal["auto"] | None = "auto",
        disk_free: Callable[[Path], int] | None = None,
    ) -> None:
        """Args beyond the policy and proxy decision are the injected edges.

        Args:
            runner: runs gpgv (required when the policy has a keyring).
            transport: an httpx transport (tests); None for real sockets.
            clock, sleep: monotonic time and waiting (tests inject fakes).
            on_progress: called with (label, bytes done, total or None) at most once a second and at the end.
            progress_bar: a stream to draw a progress bar on ("auto": stderr when a person watches it, see
                log.is_interactive; else none, and download.progress is a plain log line every
                progress_interval_s or 10 %); while a bar is drawn, download.progress log lines go to debug.
            disk_free: free bytes of a directory (default: shutil.disk_usage).
        """
        if policy.keyring is not None and runner is None:
            raise ValueError("a keyring is configured: the Downloader needs a runner for gpgv")
        self._policy = policy
        self._proxy = proxy
        self._runner = runner
        self._transport = transport
        self._clock = clock
        self._sleep = sleep
        if progress_bar == "auto":
            progress_bar = sys.stderr if is_interactive(sys.stderr) else None
        self._bar = ProgressBar(progress_bar) if progress_bar is not None else None
        self._sinks: list[tuple[ProgressCallback, float]] = []
        if on_progress is not None:
            self._sinks.append((on_progress, 1.0))
        if self._bar is not None:
            self._sinks.append((self._bar, 0.25))
        self._disk_free = disk_free or (lambda path: shutil.disk_usage(path).free)
        self._pool = ClientPool(proxy.proxy_for, self._new_client)
        self._sums: dict[str, _Sums] = {}
        self._ssl: ssl.SSLContext | None = None

    def __enter__(self) -> Downloader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every HTTP client."""
        self._pool.close()

    # -- public ---------------------------------------------------------------------------------------------

    def fetch(self, spec: ArtifactSpec) -> VerifiedArtifact:
        """Download (or reuse) `spec` and return it verified.

        Raises:
            DownloadError: the file could not be fetched, had no checksum, or the server misbehaved.
            ChecksumError: the file did not match its checksum twice in a row.
        """
        shown = redact_url(spec.url)
        t = _Transfer(
            spec=spec,
            lg=log.bind(artifact=spec.label or spec.filename, url=shown),
            url_shown=shown,
            part=spec.dest_dir / f".{spec.filename}.part",
            meta=spec.dest_dir / f".{spec.filename}.part.json",
        )
        t.lg.info("download.started", dest_dir=str(spec.dest_dir), proxy=_proxy_shown(self._proxy.proxy_for(spec.url)))
        try:
            return self._fetch(t)
        except OSError as exc:  # the destination, not the network: unwritable, full, not a directory
            raise DownloadError(
                f"downloading {shown}: {exc.strerror or exc} ({exc.filename or spec.dest_dir})"
            ) from exc

    def _fetch(self, t: _Transfer) -> VerifiedArtifact:
        spec = t.spec
        _ensure_dir(spec.dest_dir)
        if not spec.adopt_server_name:
            self._bind_name(t, spec.filename, revealed=False)
            found = self._reuse(t)
            if found is not None:
                return found
        for round_no in (1, 2):
            while True:
                try:
                    self._transfer(t)
                    break
                except _FinalExists:
                    found = self._reuse(t)
                    if found is not None:
                        return found
            assert t.expected is not None
            assert t.hasher is not None
            digest = t.hasher.hexdigest()
            try:
                return self._verified(t, t.final, digest, t.size, reused=False, rename_from=t.part)
            except ChecksumError as exc:
                _discard(t.part, t.meta)
                self._pool.drop(spec.url)  # the second copy comes over a fresh connection
                t.lg.warning(
                    "download.checksum_mismatch",
                    expected=t.expected.sha256,
                    actual=digest,
                    source=t.expected.source,
                    round=round_no,
                    action="fetching again from zero" if round_no == 1 else "giving up",
                )
                if round_no == 2:
                    raise ChecksumError(
                        f"verifying {t.url_shown}: SHA-256 mismatch on two downloads in a row: expected "
                        f"{t.expected.sha256} ({t.expected.source}), got {digest}; the file was discarded",
                        exc.details,
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def peek(self, spec: ArtifactSpec) -> tuple[str | None, str | None]:
        """What `spec.url` stands for now, without downloading it: (the file name the server reveals, the
        SHA-256 its checksum file lists for it), either None when unknown. One HEAD request and the checksum
        file, within the policy's budgets.

        Raises:
            DownloadError: the server could not be asked or answered with an error.
        """
        shown = redact_url(spec.url)
        try:
            with stream_get(self._pool, spec.url, method="HEAD") as resp:
                status, reason = resp.status_code, resp.reason_phrase
                disposition = resp.headers.get("content-disposition", "")
                final_path = resp.url.path if resp.history else None
        except httpx.HTTPError as exc:
            raise DownloadError(f"checking {shown}: {type(exc).__name__}: {exc}") from exc
        if status != 200:
            raise DownloadError(f"checking {shown}: server answered {status} {reason}")
        name = _disposition_filename(disposition)
        if name is None and final_path is not None:
            name = unquote(final_path.rsplit("/", 1)[-1])
        if name is not None and not is_plain_name(name):
            name = None
        digest = None
        if spec.sums_url:
            entries = self._load_sums(spec.sums_url).entries or {}
            basename = unquote(urlsplit(spec.url).path.rsplit("/", 1)[-1])
            digest = next((entries[c] for c in (name, basename) if c and c in entries), None)
        return name, digest

    # -- name and checksum ---------------------------------------------------------------------------------

    def _bind_name(self, t: _Transfer, name: str, *, revealed: bool) -> None:
        """Fix the final name and look up its expected checksum (before any body byte is read)."""
        t.name, t.revealed = name, revealed
        t.expected = self._expected(t, name)

    def _expected(self, t: _Transfer, name: str) -> _Expected:
        spec = t.spec
        if spec.sha256:
            t.lg.info("download.checksum_source", source=SOURCE_PINNED, sha256=spec.sha256.lower())
            return _Expected(spec.sha256.lower(), SOURCE_PINNED)
        if spec.sums_url:
            sums = self._load_sums(spec.sums_url)
            if sums.entries is not None:
                candidates = [name]
                basename = unquote(urlsplit(spec.url).path.rsplit("/", 1)[-1])
                if basename and basename not in candidates:
                    candidates.append(basename)  # 'latest' may be listed under its URL name
                if spec.adopt_server_name and not t.revealed and spec.filename not in candidates:
                    candidates.append(spec.filename)  # unnamed 'latest': the configured release's entry
                for candidate in candidates:
                    if candidate in sums.entries:
                        digest = sums.entries[candidate]
                        t.lg.info("download.checksum_source", source=sums.source, listed_as=candidate, sha256=digest)
                        return _Expected(digest, sums.source, sums.entries)
                missing = f"{redact_url(spec.sums_url)} does not list {' or '.join(repr(c) for c in candidates)}"
            else:
                missing = f"{redact_url(spec.sums_url)} does not exist (404)"
        else:
            missing = "no pinned SHA-256 and no checksum file configured"
        if self._policy.allow_unverified:
            t.lg.warning("download.unverified", reason=missing, source=SOURCE_NONE)
            return _Expected(None, SOURCE_NONE)
        raise DownloadError(
            f"verifying {t.url_shown}: no checksum for {name}: {missing}; pin it (iso.sha256) or publish "
            f"{self._policy.sums_name}; checksums.allow_unverified=true skips the check (insecure)"
        )

    def _load_sums(self, sums_url: str) -> _Sums:
        cached = self._sums.get(sums_url)
        if cached is not None:
            return cached
        shown = redact_url(sums_url)
        body = self._get_small(sums_url)
        if body is None:
            sums = _Sums(None, SOURCE_SUMS)
        else:
            source = SOURCE_SUMS
            if self._policy.keyring is not None:
                self._check_signature(sums_url, body)
                source = SOURCE_SUMS_GPG
            entries = _parse_sums(body, shown)
            log.info("download.sums_loaded", url=shown, entries=len(entries), source=source)
            sums = _Sums(entries, source)
        self._sums[sums_url] = sums
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

    # -- reuse and publish ---------------------------------------------------------------------------------

    def _reuse(self, t: _Transfer) -> VerifiedArtifact | None:
        """A VerifiedArtifact for an existing final file that re-hashes to the expected sum, else None."""
        final = t.final
        t.checked_existing.add(final.name)
        fd = _open_regular(final)  # never through a symlink: a planted link is left for the rename to replace
        if fd is None:
            return None
        with os.fdopen(fd, "rb", buffering=0) as f:
            if not _ours(os.fstat(f.fileno())):  # another user could change it after it is verified: never reuse it
                t.lg.warning("download.existing_untrusted", path=str(final), reason="owned or writable by another user")
                final.unlink()
                return None
            assert t.expected is not None
            if t.expected.sha256 is None:
                t.lg.warning("download.existing_unverifiable", path=str(final), action="downloading again")
                final.unlink()
                return None
            hasher, size = _hash_stream(f, None)
        digest = hasher.hexdigest()
        try:
            found = self._verified(t, final, digest, size, reused=True)
        except ChecksumError:
            t.lg.warning("download.existing_mismatch", path=str(final), actual=digest, action="downloading again")
            final.unlink()
            return None
        t.lg.info("download.reused", path=str(final), sha256=digest, size=size, release=found.release)
        _discard(t.part, t.meta)
        return found

    def _verified(
        self, t: _Transfer, path: Path, digest: str, size: int, *, reused: bool, rename_from: Path | None = None
    ) -> VerifiedArtifact:
        """The only constructor of VerifiedArtifact: compare, then (rename, then) build it."""
        expected = t.expected
        assert expected is not None
        if expected.sha256 is not None and digest != expected.sha256:
            raise ChecksumError(
                f"verifying {t.url_shown}: SHA-256 mismatch: expected {expected.sha256} ({expected.source}), "
                f"got {digest}",
                f"file {path}, {size} bytes",
            )
        if rename_from is not None:
            if not t.revealed and t.spec.adopt_server_name and expected.sums:
                path = self._name_from_sums(t, digest, expected.sums) or path
            os.chmod(rename_from, 0o644)
            os.replace(rename_from, path)
            _fsync_dir(path.parent)
            _discard(t.meta)
        release_match = _RELEASE.match(path.name)
        st = os.stat(path, follow_symlinks=False)
        artifact = VerifiedArtifact(
            path=path,
            url=t.spec.url,
            sha256=digest,
            size=size,
            checksum_source=expected.source,
            reused=reused,
            bytes_transferred=t.transferred,
            release=release_match.group(1) if release_match else None,
            identity=(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns),
            _seal=_SEAL,
        )
        if not reused:
            t.lg.info(
                "download.verified",
                path=str(path),
                sha256=digest,
                size=size,
                source=expected.source,
                bytes_transferred=t.transferred,
                attempts=t.attempts,
                release=artifact.release,
            )
        return artifact

    def _name_from_sums(self, t: _Transfer, digest: str, sums: dict[str, str]) -> Path | None:
        """For 'latest' served without a name: the one other entry in SHA256SUMS with the same digest."""
        suffix = Path(t.spec.filename).suffix
        names = [n for n, d in sums.items() if d == digest and n.endswith(suffix) and is_plain_name(n)]
        if len(names) != 1:
            return None
        t.lg.info("download.server_name", name=names[0], source="SHA256SUMS entry with the same digest")
        return t.spec.dest_dir / names[0]

    # -- the transfer ----------------------------------------------------------------------------------------

    def _retrying(self, lg: Any, counter: list[int]) -> tenacity.Retrying:
        """The retry policy: what is retried (_Transient), how long to wait, when to stop, and the log line."""
        policy = self._policy
        started = self._clock()

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            lg.warning(
                "download.retry_scheduled",
                attempt=state.attempt_number,
                attempts=policy.attempts,
                sleep_s=round(state.upcoming_sleep, 2),
                error=str(exc),
                elapsed_s=round(self._clock() - started, 1),
            )

        def count(_state: tenacity.RetryCallState) -> None:
            counter[0] += 1

        return tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            stop=tenacity.stop_after_attempt(policy.attempts)
            | _StopAtDeadline(self._clock, started + policy.max_time_s),
            wait=_Wait(policy.backoff_initial_s, policy.backoff_max_s, policy.retry_after_max_s),
            sleep=self._sleep,
            before=count,
            before_sleep=before_sleep,
            reraise=True,
        )

    def _transfer(self, t: _Transfer) -> None:
        """Bring the .part file to the complete body (t.hasher holds its digest), retrying per the policy."""
        started = self._clock()
        counter = [0]
        deadline = started + self._policy.max_time_s
        t.failures.clear()
        t.exchange = Exchange()
        try:
            for attempt in self._retrying(t.lg, counter):
                with attempt:
                    t.attempts += 1
                    try:
                        self._attempt(t, deadline)
                    except _Transient as exc:
                        t.failures.append(exc.reason)
                        raise
        except _Transient as exc:
            raise DownloadError(
                gave_up(
                    t.url_shown,
                    t.failures,
                    t.exchange,
                    elapsed_s=self._clock() - started,
                    proxy=self._proxy.proxy_for(t.spec.url),
                    budget=self._budget(),
                )
            ) from exc

    def _attempt(self, t: _Transfer, deadline: float) -> None:
        offset, validator = self._resume_point(t)
        headers = {"Range": f"bytes={offset}-", "If-Range": validator} if offset and validator else {}
        try:
            with stream_get(self._pool, t.spec.url, headers=headers, exchange=t.exchange) as resp:
                self._receive(t, resp, offset if headers else 0, deadline)
        except _RETRY_TRANSPORT_ERRORS as exc:
            if _is_tls_failure(exc):
                raise DownloadError(f"downloading {t.url_shown}: TLS verification failed: {exc}") from exc
            raise _Transient(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
        except httpx.HTTPError as exc:
            raise DownloadError(f"downloading {t.url_shown}: {type(exc).__name__}: {exc}") from exc

    def _resume_point(self, t: _Transfer) -> tuple[int, str | None]:
        """(bytes kept, validator) for an existing .part whose sidecar matches; anything else is discarded."""
        t.part_name = None
        _discard(t.meta.with_name(t.meta.name + ".tmp"))  # left by a kill while the sidecar was written
        if not os.path.lexists(t.part):
            _discard(t.meta)
            return 0, None
        size = _part_size(t)
        if size is None:
            return 0, None
        meta = _read_meta(t.meta)
        reason = None
        if meta is None:
            reason = "no readable sidecar"
        elif meta.get("url_sha256") != _url_digest(t.spec.url):
            reason = "the sidecar is for another URL"
        elif not meta.get("validator"):
            reason = "the server gave no validator (strong ETag or Last-Modified)"
        elif isinstance(meta.get("total"), int) and size > meta["total"]:
            reason = "longer than the file"
        elif size == 0:
            reason = "empty"
        if reason is not None:
            t.lg.info("download.part_discarded", part=str(t.part), size=size, reason=reason)
            _discard(t.part, t.meta)
            return 0, None
        assert meta is not None
        name = meta.get("name")
        t.part_name = name if isinstance(name, str) else None
        return size, str(meta["validator"])

    def _receive(self, t: _Transfer, resp: httpx.Response, offset: int, deadline: float) -> None:
        status, reclaimed = resp.status_code, 0
        if status in RETRY_STATUSES:
            raise _Transient(f"server answered {status} {resp.reason_phrase}", _retry_after(resp))
        if status == 416 and offset:
            if t.spec.adopt_server_name:
                self._adopt_name(t, resp, offset)
            self._range_not_satisfiable(t, resp, offset)
            return
        if status not in (200, 206) or (status == 206 and not offset):
            raise DownloadError(f"downloading {t.url_shown}: server answered {status} {resp.reason_phrase}")
        _check_representation(t, resp)
        if t.spec.adopt_server_name:
            self._adopt_name(t, resp, offset)
        if status == 206:
            start, _end, total = _content_range(resp.headers.get("content-range", ""))
            if start != offset:
                _discard(t.part, t.meta)
                raise _Transient(f"server answered a range starting at {start}, asked for {offset}")
            t.lg.info("download.resumed", offset=offset, total=total)
            hasher, kept = _hash_prefix(t.part, offset)
            if kept != offset:
                _discard(t.part, t.meta)
                raise _Transient(f"the partial file shrank to {kept} bytes while resuming")
        else:
            if offset:
                t.lg.info("download.restarted", discarded=offset, reason="the server sent the whole file (200)")
            reclaimed, offset, total, hasher = offset, 0, _content_length(resp), hashlib.sha256()
        remaining = None if total is None else total - offset
        if total is not None and t.spec.size_check is not None:
            t.spec.size_check(total)
        self._check_space(t, remaining, total, reclaimed)
        if status == 200:
            self._write_meta(t, resp, total)
        t.hasher, t.size = hasher, offset
        self._stream(t, resp, offset, total, deadline)

    def _adopt_name(self, t: _Transfer, resp: httpx.Response, offset: int) -> None:
        """Bind the name the server reveals (checksum looked up before the body is read)."""
        name, revealed = self._server_name(t, resp)
        if name != t.name:
            if t.name is not None and offset:
                _discard(t.part, t.meta)
                raise _Transient(f"the server's file changed from {t.name} to {name} during the download")
            self._bind_name(t, name, revealed=revealed)
        if t.final.name not in t.checked_existing and t.final.exists():
            raise _FinalExists

    def _range_not_satisfiable(self, t: _Transfer, resp: httpx.Response, offset: int) -> None:
        _s, _e, total = _content_range(resp.headers.get("content-range", ""))
        if total != offset:
            _discard(t.part, t.meta)
            raise _Transient(f"server answered 416 for a range from {offset} (file is {total} bytes); starting over")
        t.hasher, kept = _hash_prefix(t.part, offset)
        t.size = kept
        t.lg.info("download.resumed", offset=offset, total=total, complete=True)

    def _server_name(self, t: _Transfer, resp: httpx.Response) -> tuple[str, bool]:
        """The name the server reveals (Content-Disposition, else redirect target), sanitised; else the fallback."""
        offered: list[tuple[str, str]] = []
        disposition = _disposition_filename(resp.headers.get("content-disposition", ""))
        if disposition is not None:
            offered.append(("Content-Disposition", disposition))
        if resp.history:
            offered.append(("redirect", unquote(resp.url.path.rsplit("/", 1)[-1])))
        suffix = Path(t.spec.filename).suffix
        for source, name in offered:
            problem = None
            if "/" in name or "\\" in name:
                problem = "carries a path (a plain file name was expected; nothing of it is used)"
            elif not is_plain_name(name):
                problem = "not a plain file name"
            elif suffix and not name.endswith(suffix):
                problem = f"does not end in {suffix}"
            if problem is None:
                if name != t.name:
                    t.lg.info("download.server_name", name=name, source=source)
                return name, True
            t.lg.warning(
                "download.server_name_rejected",
                offered=repr(name)[:120],
                source=source,
                reason=problem,
                fallback=t.spec.filename,
            )
        if not offered and t.part_name and t.part_name.endswith(suffix) and is_plain_name(t.part_name):
            # Resuming: the server named the file when this .part was started (the validator vouches for it).
            if t.part_name != t.name:
                t.lg.info("download.server_name", name=t.part_name, source="the partial download's sidecar")
            return t.part_name, True
        if not offered and t.name is None:
            t.lg.info("download.server_name", name=t.spec.filename, source="configured (the server did not say)")
        return t.spec.filename, False

    def _write_meta(self, t: _Transfer, resp: httpx.Response, total: int | None) -> None:
        etag = resp.headers.get("etag")
        validator = etag if etag and not etag.startswith("W/") else resp.headers.get("last-modified")
        if not validator and not t.warned_no_validator:
            t.warned_no_validator = True
            t.lg.warning("download.resume_unavailable", reason="no strong ETag or Last-Modified from the server")
        data = {
            "url": redact_url(t.spec.url),  # for people; matching uses the digest (no credentials on disk)
            "url_sha256": _url_digest(t.spec.url),
            "validator": validator,
            "total": total,
            "name": t.name if t.revealed else None,
        }
        tmp = t.meta.with_name(t.meta.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, t.meta)

    def _check_space(self, t: _Transfer, remaining: int | None, total: int | None, reclaimed: int) -> None:
        """Fail early when the rest of the file plus the margin exceeds the free space where it lands."""
        if remaining is None:
            t.lg.info("download.size_unknown", reason="the server announced no length")
            return
        free = self._disk_free(t.spec.dest_dir) + reclaimed  # a restarted .part is truncated first
        margin = self._policy.free_space_margin_bytes
        if remaining + margin > free:
            raise DownloadError(
                f"downloading {t.url_shown}: not enough space in {t.spec.dest_dir}: {_human(remaining)} still to "
                f"download (of {_human(total or remaining)}) plus a {_human(margin)} margin, but only {_human(free)} "
                f"free (download.free_space_margin_mib)",
                f"need {remaining + margin} bytes, free {free} bytes",
            )

    def _stream(self, t: _Transfer, resp: httpx.Response, offset: int, total: int | None, deadline: float) -> None:
        """Append the body to the .part file and the hasher in one pass; stalls and overlong bodies abort."""
        expected_len = None if total is None else total - offset
        meter = _Meter(
            t,
            self._policy,
            clock=self._clock,
            sinks=self._sinks,
            quiet_logs=self._bar is not None,
            offset=offset,
            total=total,
            deadline=deadline,
        )
        chunks: Iterator[bytes | memoryview] = body_chunks(resp, read_timeout_s=self._policy.read_timeout_s)
        check_at, next_mark = meter.start()
        if offset == 0:
            first = bytes(next(chunks, b""))  # one copy: the next read reuses the buffer
            if _looks_like_html(first) and not t.spec.filename.endswith((".html", ".htm")):
                _discard(t.part, t.meta)
                raise DownloadError(
                    f"downloading {t.url_shown}: the server sent an HTML page (status {resp.status_code}) instead "
                    f"of the file{_html_title_from(first)}"
                )
            chunks = itertools.chain((first,), chunks)
        received = 0
        clock = self._clock
        fd = os.open(t.part, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if not _ours(os.fstat(fd)):  # planted by another user in a shared directory: they could change it
                raise DownloadError(f"downloading {t.url_shown}: {t.part} belongs to another user; not writing to it")
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
            # The hash is taken from the file on a second thread (download_follow): this loop only writes.
            with Follower(fd, offset, t.hasher) as follower:
                advance = follower.advance
                try:
                    for chunk in chunks:
                        n = len(chunk)
                        if expected_len is not None and received + n > expected_len:
                            raise DownloadError(
                                f"downloading {t.url_shown}: the server sent more than the {total} bytes it "
                                f"announced; the file was discarded"
                            )
                        _write_all(fd, chunk)
                        advance(n)
                        received += n
                        now = clock()
                        if now >= check_at or received >= next_mark:
                            check_at, next_mark = meter.check(offset + received, now)
                finally:
                    t.transferred += received
                    t.size = offset + received
            if expected_len is not None and received < expected_len:
                raise _Transient(f"body cut off at {offset + received} of {total} bytes")
            os.fsync(fd)
        except _OverBudget:
            raise
        except DownloadError:
            _discard(t.part, t.meta)
            raise
        except OSError as exc:
            raise _write_failed(t, exc, total) from exc
        finally:
            os.close(fd)
        meter.finish(offset + received)

    # -- small requests --------------------------------------------------------------------------------------

    def _get_small(self, url: str) -> bytes | None:
        """The body of a small file (SHA256SUMS, its signature), retried per the policy; None on 404/410."""
        shown = redact_url(url)
        limit = self._policy.sums_max_bytes
        started = self._clock()
        counter = [0]
        failures: list[str] = []
        exchange = Exchange()

        def once() -> bytes | None:
            try:
                with stream_get(self._pool, url, exchange=exchange) as resp:
                    if resp.status_code in (404, 410):
                        return None
                    if resp.status_code in RETRY_STATUSES:
                        raise _Transient(f"server answered {resp.status_code} {resp.reason_phrase}", _retry_after(resp))
                    if resp.status_code != 200:
                        raise DownloadError(
                            f"downloading {shown}: server answered {resp.status_code} {resp.reason_phrase}"
                        )
                    body = bytearray()
                    for chunk in resp.iter_raw():
                        body += chunk
                        if len(body) > limit:
                            raise DownloadError(
                                f"downloading {shown}: larger than {_human(limit)}; not a checksum file"
                            )
                    declared = _content_length(resp)
                    if declared is not None and declared != len(body):
                        raise _Transient(f"body cut off at {len(body)} of {declared} bytes")
                    if _looks_like_html(bytes(body[:512])):
                        raise DownloadError(f"downloading {shown}: the server sent an HTML page instead of the file")
                    return bytes(body)
            except _RETRY_TRANSPORT_ERRORS as exc:
                if _is_tls_failure(exc):
                    raise DownloadError(f"downloading {shown}: TLS verification failed: {exc}") from exc
                raise _Transient(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
            except httpx.HTTPError as exc:
                raise DownloadError(f"downloading {shown}: {type(exc).__name__}: {exc}") from exc

        def counted() -> bytes | None:
            try:
                return once()
            except _Transient as exc:
                failures.append(exc.reason)
                raise

        try:
            result: bytes | None = self._retrying(log.bind(url=shown), counter)(counted)
        except _Transient as exc:
            raise DownloadError(
                gave_up(
                    shown,
                    failures,
                    exchange,
                    elapsed_s=self._clock() - started,
                    proxy=self._proxy.proxy_for(url),
                    budget=self._budget(),
                )
            ) from exc
        return result

    def _budget(self) -> str:
        return f"download.attempts={self._policy.attempts}, download.max_time_s={self._policy.max_time_s:g}"

    def _new_client(self, proxy: str | None) -> httpx.Client:
        """An HTTP client for one proxy decision (redirects are followed by download_http, hop by hop)."""
        if self._ssl is None:
            self._ssl = tls.client_context(self._policy.ca_file)
        p = self._policy
        return httpx.Client(
            trust_env=False,
            proxy=proxy,
            verify=self._ssl,
            timeout=httpx.Timeout(
                connect=p.connect_timeout_s, read=p.read_timeout_s, write=p.read_timeout_s, pool=p.connect_timeout_s
            ),
            headers={"Accept-Encoding": "identity", "User-Agent": f"harmonic-installer/{__version__}"},
            follow_redirects=False,
            transport=self._transport,
        )


# ---------------------------------------------------------------------------------------------------------
# Progress.


@dataclass(slots=True)
class _Sink:
    callback: ProgressCallback
    interval: float
    next_at: float = 0.0


class StallWindow:
    """The rate over the last `length` seconds, from samples taken every length/20 s (a sliding window).

    A transfer that turns into a trickle is caught `length` seconds after it slowed down, whatever came before:
    with back-to-back windows, a fast start hid the trickle until the end of the next window (up to twice
    `length`). The rate is measured over at least 95 % of the window.
    """

    __slots__ = ("_samples", "_step", "length", "min_rate", "next_at")

    def __init__(self, length: float, min_rate: int) -> None:
        self.length = length
        self.min_rate = min_rate
        self._step = length / 20
        self._samples: deque[tuple[float, int]] = deque()
        self.next_at = float("inf")

    def start(self, now: float, done: int) -> None:
        """Begin measuring at `now` with `done` bytes already there."""
        self._samples.clear()
        self._samples.append((now, done))
        self.next_at = now + self._step if self.min_rate else float("inf")

    def sample(self, now: float, done: int) -> tuple[float, float, int] | None:
        """Record a sample when one is due; (rate, seconds measured, bytes) when the rate is below the minimum."""
        if not self.min_rate or now < self.next_at:
            return None
        self.next_at = now + self._step
        self._samples.append((now, done))
        horizon = now - self.length
        while len(self._samples) > 2 and self._samples[1][0] <= horizon:
            self._samples.popleft()  # keep the newest sample at or before the horizon, if there is one
        # The tightest base first (within the window), then the one just before it (bytes arrive in bursts).
        for t0, d0 in (self._samples[1], self._samples[0]) if len(self._samples) > 2 else (self._samples[0],):
            span = now - t0
            if span < self.length - self._step:
                continue
            got = done - d0
            rate = got / max(span, 1e-9)
            if rate < self.min_rate:
                return rate, span, got
            return None
        return None


class _Meter:
    """Stall detection, the wall-time budget and progress reports, consulted only every so often."""

    __slots__ = (
        "_clock",
        "_deadline",
        "_label",
        "_last_log",
        "_last_pct",
        "_lg",
        "_log_interval",
        "_min_rate",
        "_next_log",
        "_offset",
        "_quiet_logs",
        "_sinks",
        "_started",
        "_total",
        "_url_shown",
        "_window",
    )

    def __init__(
        self,
        t: _Transfer,
        policy: DownloadPolicy,
        *,
        clock: Callable[[], float],
        sinks: list[tuple[ProgressCallback, float]],
        quiet_logs: bool,
        offset: int,
        total: int | None,
        deadline: float,
    ) -> None:
        self._lg = t.lg
        self._url_shown = t.url_shown
        self._label = t.spec.label or t.spec.filename
        self._clock = clock
        self._sinks = [_Sink(callback, interval) for callback, interval in sinks]
        self._quiet_logs = quiet_logs
        self._log_interval = policy.progress_interval_s
        self._min_rate = policy.stall_min_rate
        self._window = StallWindow(policy.stall_window_s, policy.stall_min_rate)
        self._deadline = deadline
        self._offset = offset
        self._total = total
        self._started = 0.0
        self._next_log = 0.0
        self._last_log = 0.0
        self._last_pct = 0

    def start(self) -> tuple[float, int]:
        """Begin timing; returns (clock time, bytes received) at which `check` must next be called."""
        now = self._clock()
        self._started = self._last_log = now
        self._window.start(now, self._offset)
        self._next_log = now + self._log_interval
        self._last_pct = self._pct(self._offset) // 10 * 10
        return self._schedule(self._offset)

    def _pct(self, done: int) -> int:
        return int(done * 100 // self._total) if self._total else 0

    def _schedule(self, done: int) -> tuple[float, int]:
        check_at = min(self._next_log, self._window.next_at, self._deadline)
        for sink in self._sinks:
            check_at = min(check_at, sink.next_at)
        next_mark = -(-(self._last_pct + 10) * self._total // 100) if self._total else 1 << 62
        return check_at, max(next_mark - self._offset, done - self._offset + 1)

    def check(self, done: int, now: float) -> tuple[float, int]:
        """Enforce the budget and the minimum rate, report progress; returns the next check point."""
        if now >= self._deadline:
            raise _OverBudget(
                f"downloading {self._url_shown}: the wall-time budget ran out at {_human(done)} of "
                f"{_human(self._total) if self._total else 'unknown'} (download.max_time_s); "
                "a re-run continues from there"
            )
        stalled = self._window.sample(now, done)
        if stalled is not None:
            rate, span, got = stalled
            self._lg.warning(
                "download.stalled",
                rate_bytes_s=round(rate, 1),
                measured_over_s=round(span, 1),
                bytes_in_window=got,
                min_rate=self._min_rate,
                window_s=self._window.length,
                done_bytes=done,
            )
            raise _Transient(
                f"stalled: {rate:.0f} B/s ({got} bytes) over the last {span:.0f} s, below {self._min_rate} B/s "
                f"(download.stall_min_rate, download.stall_window_s={self._window.length:g})"
            )
        pct = self._pct(done)
        if pct >= self._last_pct + 10:
            self._last_pct = pct // 10 * 10
            # Every 10 %, but not more than once a second (small files) except for the last line.
            if now >= self._last_log + 1.0 or pct >= 100:
                self._report(done, now)
        elif now >= self._next_log:
            self._report(done, now)
        for sink in self._sinks:
            if now >= sink.next_at:
                sink.next_at = now + sink.interval
                sink.callback(self._label, done, self._total)
        return self._schedule(done)

    def finish(self, done: int) -> None:
        """Tell every progress sink the final count."""
        for sink in self._sinks:
            sink.callback(self._label, done, self._total)

    def _report(self, done: int, now: float) -> None:
        self._last_log, self._next_log = now, now + self._log_interval
        elapsed = max(now - self._started, 1e-9)
        rate = (done - self._offset) / elapsed
        eta = (self._total - done) / rate if self._total and rate > 0 else None
        pct = round(done * 100 / self._total, 1) if self._total else None
        summary = f"{_human(done)} of {_human(self._total) if self._total else '?'}"
        if pct is not None:
            summary += f" ({pct:.0f}%)"
        summary += f", {_human(rate)}/s"
        if eta is not None:
            summary += f", ETA {_duration(eta)}"
        emit = self._lg.debug if self._quiet_logs else self._lg.info
        emit(
            "download.progress",
            done_bytes=done,
            total_bytes=self._total,
            percent=pct,
            rate_bytes_s=int(rate),
            eta_s=None if eta is None else round(eta),
            summary=summary,
        )


class ProgressBar:
    """A one-line progress bar for a terminal (what `Downloader(progress_bar=stream)` draws)."""

    def __init__(self, stream: IO[str], *, width: int = 30, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._width = width
        self._clock = clock
        self._first: dict[str, tuple[float, int]] = {}

    def __call__(self, label: str, done: int, total: int | None) -> None:
        now = self._clock()
        start_time, start_done = self._first.setdefault(label, (now, done))
        rate = (done - start_done) / (now - start_time) if now > start_time else 0.0
        if total:
            frac = min(done / total, 1.0)
            filled = int(frac * self._width)
            bar = "#" * filled + "-" * (self._width - filled)
            eta = f" ETA {_duration((total - done) / rate)}" if rate > 0 and done < total else ""
            line = f"{label} [{bar}] {frac * 100:5.1f}% {_human(done)}/{_human(total)} {_human(rate)}/s{eta}"
        else:
            line = f"{label} {_human(done)} {_human(rate)}/s"
        end = "\n" if total and done >= total else ""
        self._stream.write(f"\r{line}\x1b[K{end}")
        self._stream.flush()


# ---------------------------------------------------------------------------------------------------------
# Helpers.


def _parse_sums(body: bytes, shown: str) -> dict[str, str]:
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


def _disposition_filename(header: str) -> str | None:
    """The file name in a Content-Disposition header (filename* preferred), undecoded paths kept as is."""
    if not header:
        return None
    star = re.search(r"filename\*\s*=\s*([^;]+)", header, re.IGNORECASE)
    if star:
        value = star.group(1).strip()
        _charset, _, rest = value.partition("'")
        _lang, _, encoded = rest.partition("'")
        return unquote(encoded or value, errors="replace")
    plain = re.search(r'filename\s*=\s*("((?:[^"\\]|\\.)*)"|[^;\s]+)', header, re.IGNORECASE)
    if plain:
        quoted = plain.group(2)
        return re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else plain.group(1)
    return None


def _check_representation(t: _Transfer, resp: httpx.Response) -> None:
    """Refuse an encoded body (offsets would be wrong) and an HTML page where a file was expected."""
    encoding = resp.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise DownloadError(
            f"downloading {t.url_shown}: the server sent Content-Encoding {encoding} although only identity "
            "was accepted; byte offsets and checksums would not match the file"
        )
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "text/html" and not t.spec.filename.endswith((".html", ".htm")):
        raise DownloadError(
            f"downloading {t.url_shown}: the server sent an HTML page (status {resp.status_code}, {ctype}) "
            f"instead of the file{_html_title(resp)}"
        )


def _content_length(resp: httpx.Response) -> int | None:
    raw = resp.headers.get("content-length")
    if raw is None or not raw.strip().isdigit():
        return None
    return int(raw)


def _content_range(raw: str) -> tuple[int | None, int | None, int | None]:
    match = _CONTENT_RANGE.fullmatch(raw.strip())
    if match is None:
        return None, None, None
    start, end, total = match.groups()

    def num(value: str | None) -> int | None:
        return int(value) if value is not None and value != "*" else None

    return num(start), num(end), num(total)


def _retry_after(resp: httpx.Response) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    raw = resp.headers.get("retry-after", "").strip()
    if not raw:
        return None
    if raw.isdigit():
        return float(raw)
    when = _http_date(raw)
    if when is None:
        return None
    # Measured against the server's own Date: a freshly booted node's clock may be wrong.
    now = _http_date(resp.headers.get("date", "")) or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def _http_date(raw: str) -> datetime | None:
    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def _looks_like_html(head: bytes) -> bool:
    start = head[:512].lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def _html_title_from(head: bytes) -> str:
    match = re.search(rb"<title[^>]*>([^<]{1,120})", head[:4096], re.IGNORECASE)
    if not match:
        return ""
    return f": {match.group(1).decode('utf-8', 'replace').strip()!r}"


def _html_title(resp: httpx.Response) -> str:
    with contextlib.suppress(httpx.HTTPError):
        for chunk in resp.iter_raw():
            return _html_title_from(chunk)
    return ""


def _is_tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# Every file of ours in a download directory (the final file, the .part, its sidecar) is opened with O_NOFOLLOW
# and judged by fstat of that descriptor, never by a path lookup that follows links: in a shared directory another
# user may plant a symlink, and a planted link is removed (the link itself, never its target) or refused.


def _open_regular(path: Path) -> int | None:
    """A read-only descriptor of `path` if it is a regular file reached without following a symlink, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # missing, a symlink (ELOOP), or unreadable
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _part_size(t: _Transfer) -> int | None:
    """The size of an existing .part that may be resumed; None after removing a planted symlink or another
    user's file (the run then starts the file afresh instead of failing on it every time).

    Raises:
        DownloadError: the .part is a directory or a device (not ours to remove): the operator must look.
    """
    try:
        fd = os.open(t.part, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        target = os.readlink(t.part)
        t.lg.warning("download.part_link_removed", part=str(t.part), target=target, reason="a symlink, never followed")
        _discard(t.part, t.meta)
        return None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        raise DownloadError(
            f"downloading {t.url_shown}: {t.part} is not a regular file (mode {stat.filemode(st.st_mode)}); "
            "remove it and run again"
        )
    if not _ours(st):
        t.lg.warning("download.part_untrusted_removed", part=str(t.part), reason="owned or writable by another user")
        _discard(t.part, t.meta)
        return None
    return st.st_size


def _read_meta(path: Path) -> dict[str, Any] | None:
    fd = _open_regular(path)
    if fd is None:
        return None
    try:
        with os.fdopen(fd, "r") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _hash_prefix(path: Path, limit: int | None) -> tuple[Any, int]:
    """A sha256 object over the first `limit` bytes of `path` (all of it when None), and the count hashed.

    Raises:
        OSError: `path` is missing, a symlink (ELOOP: never followed) or unreadable.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as f:
        return _hash_stream(f, limit)


def _hash_stream(f: IO[bytes], limit: int | None) -> tuple[Any, int]:
    hasher = hashlib.sha256()
    done = 0
    while limit is None or done < limit:
        want = _HASH_BLOCK if limit is None else min(_HASH_BLOCK, limit - done)
        block = f.read(want)
        if not block:
            break
        hasher.update(block)
        done += len(block)
    return hasher, done


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of `data` at the file's position (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _ensure_dir(path: Path) -> None:
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o755)  # noqa: S103 - ostree-production and operators read it


def _write_failed(t: _Transfer, exc: OSError, total: int | None) -> DownloadError:
    """The error for a .part that could not be written; a full directory is told with its numbers.

    The .part file and its sidecar are kept: once there is room, a re-run resumes from what reached the disk.
    """
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return DownloadError(f"downloading {t.url_shown}: writing {t.part} failed: {exc}")
    try:
        kept = os.stat(t.part, follow_symlinks=False).st_size
    except OSError:
        kept = 0
    try:
        usage = shutil.disk_usage(t.spec.dest_dir)
        room = f"{_human(usage.free)} free of {_human(usage.total)}"
    except OSError:
        room = "free space unknown"
    of = f"of {_human(total)} ({total:,} bytes)" if total is not None else "(total size not announced by the server)"
    t.lg.error("download.disk_full", part=str(t.part), kept_bytes=kept, total=total, error=str(exc))
    return DownloadError(
        f"downloading {t.url_shown}: {t.spec.dest_dir} is full ({exc.strerror}): {_human(kept)} ({kept:,} bytes) "
        f"{of} written, {room}; the partial file {t.part.name} is kept and a re-run resumes once there is room",
        f"errno {exc.errno}; part {t.part}; kept {kept} bytes",
    )


def _ours(st: os.stat_result) -> bool:
    """A file only this process' user (root) can change: owned by us, not writable by group or others."""
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _url_digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def _proxy_shown(proxy: str | None) -> str:
    return redact_url(proxy) if proxy else "direct"


def _human(n: float) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
