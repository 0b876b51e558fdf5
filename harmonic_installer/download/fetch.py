"""The fetch loop: `Downloader.fetch(spec)` reuses a verified file, or transfers, verifies and renames one.

Each attempt is one (ranged, when a .part can be resumed) GET under the retry policy (policy.py); the answer
is taken by receive.py; a checksum mismatch fetches once more from zero over a fresh connection, and a second
mismatch is a ChecksumError. Operator documentation: docs/downloads.md.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

import httpx  # noqa: TID251  # the one owner of HTTP downloads (DESIGN.md)
import structlog

from harmonic_installer.artifacts import ArtifactSpec, VerifiedArtifact
from harmonic_installer.config import redact_url
from harmonic_installer.download.checksums import Checksums
from harmonic_installer.download.naming import name_from_sums, offered_name
from harmonic_installer.download.partial import (
    discard,
    ensure_dir,
    fsync_dir,
    open_regular,
    ours,
    resume_point,
)
from harmonic_installer.download.policy import DownloadPolicy, Transient, retrying, transport_error
from harmonic_installer.download.progress import ProgressBar, ProgressCallback
from harmonic_installer.download.receive import Receiver
from harmonic_installer.download.request import ClientPool, Exchange, client_factory, stream_get
from harmonic_installer.download.small import get_small
from harmonic_installer.download.transfer import FinalExists, Transfer
from harmonic_installer.download.verdict import gave_up
from harmonic_installer.download.verify import verify
from harmonic_installer.errors import ChecksumError, DownloadError
from harmonic_installer.hashing import sha256_stream
from harmonic_installer.log import is_interactive
from harmonic_installer.proxy import ProxyConfig
from harmonic_installer.runner import Runner

log = structlog.get_logger()


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
        self._clock = clock
        self._sleep = sleep
        if progress_bar == "auto":
            progress_bar = sys.stderr if is_interactive(sys.stderr) else None
        bar = ProgressBar(progress_bar) if progress_bar is not None else None
        sinks: list[tuple[ProgressCallback, float]] = []
        if on_progress is not None:
            sinks.append((on_progress, 1.0))
        if bar is not None:
            sinks.append((bar, 0.25))
        self._pool = ClientPool(proxy.proxy_for, client_factory(policy, transport))
        self._checksums = Checksums(policy, runner, self._get_small)
        self._receiver = Receiver(
            policy,
            clock=clock,
            sinks=sinks,
            quiet_logs=bar is not None,
            disk_free=disk_free or (lambda path: shutil.disk_usage(path).free),
            bind_name=self._bind_name,
        )

    def __enter__(self) -> Downloader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every HTTP client."""
        self._pool.close()

    def fetch(self, spec: ArtifactSpec) -> VerifiedArtifact:
        """Download (or reuse) `spec` and return it verified.

        Raises:
            DownloadError: the file could not be fetched, had no checksum, or the server misbehaved.
            ChecksumError: the file did not match its checksum twice in a row.
        """
        shown = redact_url(spec.url)
        t = Transfer(
            spec=spec,
            lg=log.bind(artifact=spec.label or spec.filename, url=shown),
            url_shown=shown,
            part=spec.dest_dir / f".{spec.filename}.part",
            meta=spec.dest_dir / f".{spec.filename}.part.json",
        )
        proxy = self._proxy.proxy_for(spec.url)
        t.lg.info("download.started", dest_dir=str(spec.dest_dir), proxy=redact_url(proxy) if proxy else "direct")
        try:
            return self._fetch(t)
        except OSError as exc:  # the destination, not the network: unwritable, full, not a directory
            raise DownloadError(
                f"downloading {shown}: {exc.strerror or exc} ({exc.filename or spec.dest_dir})"
            ) from exc

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
                name = offered_name(resp)
        except httpx.HTTPError as exc:
            raise DownloadError(f"checking {shown}: {type(exc).__name__}: {exc}") from exc
        if status != 200:
            raise DownloadError(f"checking {shown}: server answered {status} {reason}")
        return name, self._checksums.listed(spec, name)

    def _fetch(self, t: Transfer) -> VerifiedArtifact:
        spec = t.spec
        ensure_dir(spec.dest_dir)
        if not spec.adopt_server_name:
            self._bind_name(t, spec.filename, False)
            found = self._reuse(t)
            if found is not None:
                return found
        for round_no in (1, 2):
            found = self._transfer_or_reuse(t)
            if found is not None:
                return found
            assert t.expected is not None
            assert t.hasher is not None
            digest = t.hasher.hexdigest()
            try:
                return self._verified(t, t.final, digest, t.size, reused=False, rename_from=t.part)
            except ChecksumError as exc:
                discard(t.part, t.meta)
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

    def _transfer_or_reuse(self, t: Transfer) -> VerifiedArtifact | None:
        """Transfer the body; a revealed name whose final file already verifies is reused instead."""
        while True:
            try:
                self._transfer(t)
                return None
            except FinalExists:
                found = self._reuse(t)
                if found is not None:
                    return found

    def _bind_name(self, t: Transfer, name: str, revealed: bool) -> None:
        """Fix the final name and look up its expected checksum (before any body byte is read)."""
        t.name, t.revealed = name, revealed
        t.expected = self._checksums.expected(t.spec, name, revealed=revealed, lg=t.lg, url_shown=t.url_shown)

    def _reuse(self, t: Transfer) -> VerifiedArtifact | None:
        """A VerifiedArtifact for an existing final file that re-hashes to the expected sum, else None."""
        final = t.final
        t.checked_existing.add(final.name)
        fd = open_regular(final)  # never through a symlink: a planted link is left for the rename to replace
        if fd is None:
            return None
        with os.fdopen(fd, "rb", buffering=0) as f:
            if not ours(os.fstat(f.fileno())):  # another user could change it after it is verified: never reuse it
                t.lg.warning("download.existing_untrusted", path=str(final), reason="owned or writable by another user")
                final.unlink()
                return None
            assert t.expected is not None
            if t.expected.sha256 is None:
                t.lg.warning("download.existing_unverifiable", path=str(final), action="downloading again")
                final.unlink()
                return None
            hasher, size = sha256_stream(f)
        digest = hasher.hexdigest()
        try:
            found = self._verified(t, final, digest, size, reused=True)
        except ChecksumError:
            t.lg.warning("download.existing_mismatch", path=str(final), actual=digest, action="downloading again")
            final.unlink()
            return None
        t.lg.info("download.reused", path=str(final), sha256=digest, size=size, release=found.release)
        discard(t.part, t.meta)
        return found

    def _verified(
        self, t: Transfer, path: Path, digest: str, size: int, *, reused: bool, rename_from: Path | None = None
    ) -> VerifiedArtifact:
        """Compare, then (rename, then) seal: the artifact of this transfer."""
        expected = t.expected
        assert expected is not None
        publish = None
        if rename_from is not None:

            def publish() -> Path:
                final = path
                if not t.revealed and t.spec.adopt_server_name and expected.sums:
                    final = name_from_sums(t, digest, expected.sums) or final
                os.chmod(rename_from, 0o644)
                os.replace(rename_from, final)
                fsync_dir(final.parent)
                discard(t.meta)
                return final

        artifact = verify(
            path,
            digest,
            size,
            expected,
            url=t.spec.url,
            url_shown=t.url_shown,
            reused=reused,
            transferred=t.transferred,
            publish=publish,
        )
        if not reused:
            t.lg.info(
                "download.verified",
                path=str(artifact.path),
                sha256=digest,
                size=size,
                source=expected.source,
                bytes_transferred=t.transferred,
                attempts=t.attempts,
                release=artifact.release,
            )
        return artifact

    def _transfer(self, t: Transfer) -> None:
        """Bring the .part file to the complete body (t.hasher holds its digest), retrying per the policy."""
        started = self._clock()
        deadline = started + self._policy.max_time_s
        t.failures.clear()
        t.exchange = Exchange()
        run = retrying(self._policy, t.lg, clock=self._clock, sleep=self._sleep, failures=t.failures)
        try:
            run(lambda: self._attempt(t, deadline))
        except Transient as exc:
            raise DownloadError(
                gave_up(
                    t.url_shown,
                    t.failures,
                    t.exchange,
                    elapsed_s=self._clock() - started,
                    proxy=self._proxy.proxy_for(t.spec.url),
                    budget=self._policy.budget(),
                )
            ) from exc

    def _attempt(self, t: Transfer, deadline: float) -> None:
        t.attempts += 1
        offset, validator = resume_point(t)
        headers = {"Range": f"bytes={offset}-", "If-Range": validator} if offset and validator else {}
        try:
            with stream_get(self._pool, t.spec.url, headers=headers, exchange=t.exchange) as resp:
                self._receiver.receive(t, resp, offset if headers else 0, deadline)
        except httpx.HTTPError as exc:
            raise transport_error(exc, t.url_shown) from exc

    def _get_small(self, url: str) -> bytes | None:
        return get_small(self._pool, url, self._policy, clock=self._clock, sleep=self._sleep)
