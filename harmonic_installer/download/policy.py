"""The one retry policy: what is worth another attempt, how long to wait, when to stop, and the log line.

Retry only what can succeed on retry: connection errors, timeouts, cut-off bodies, 408/429/5xx; a server's
Retry-After is honoured (capped); 4xx, TLS verification and a checksum mismatch are not retried here.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx  # noqa: TID251  # download owner: httpx's transport errors are mapped here, once
import tenacity  # noqa: TID251  # the one retry policy (DESIGN.md)

from harmonic_installer.config import Settings
from harmonic_installer.errors import DownloadError

MiB = 1024 * 1024

RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
RETRY_TRANSPORT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)

T = TypeVar("T")


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
            attempts=settings.download.attempts,
            max_time_s=settings.download.max_time_s,
            connect_timeout_s=settings.download.connect_timeout_s,
            read_timeout_s=settings.download.read_timeout_s,
            stall_min_rate=settings.download.stall_min_rate,
            stall_window_s=settings.download.stall_window_s,
            backoff_max_s=settings.download.backoff_max_s,
            free_space_margin_bytes=settings.download.free_space_margin_mib * MiB,
            allow_unverified=settings.checksums.allow_unverified,
            keyring=settings.checksums.keyring,
            ca_file=settings.server.ca_file,
            sums_name=settings.checksums.name,
        )

    def budget(self) -> str:
        """The settings that bound the retries, for the operator's last line."""
        return f"download.attempts={self.attempts}, download.max_time_s={self.max_time_s:g}"


class Transient(Exception):
    """A failure another attempt can cure (the only exception the retry policy retries)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def transport_error(exc: httpx.HTTPError, shown: str) -> Exception:
    """The one mapping of an httpx error: Transient (retried) or DownloadError (TLS verification, the rest).

    Returns the exception to raise (from `exc`).
    """
    if isinstance(exc, RETRY_TRANSPORT_ERRORS):
        if is_tls_failure(exc):
            return DownloadError(f"downloading {shown}: TLS verification failed: {exc}")
        return Transient(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    return DownloadError(f"downloading {shown}: {type(exc).__name__}: {exc}")


def is_tls_failure(exc: BaseException) -> bool:
    """The error (or one of its causes) is a certificate that did not verify."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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
        if isinstance(exc, Transient) and exc.retry_after is not None:
            wait = min(exc.retry_after, self._retry_after_max)
            return wait + random.uniform(0, min(10.0, max(1.0, wait / 4)))  # noqa: S311 - jitter, not crypto
        return float(self._backoff(retry_state))


def retrying(
    policy: DownloadPolicy,
    lg: Any,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    failures: list[str],
) -> Callable[[Callable[[], T]], T]:
    """Run a callable under the policy: Transient is retried, logged as download.retry_scheduled; every
    attempt's reason is appended to `failures` (oldest first). The last Transient is raised when it gives up."""
    started = clock()

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        lg.warning(
            "download.retry_scheduled",
            attempt=state.attempt_number,
            attempts=policy.attempts,
            sleep_s=round(state.upcoming_sleep, 2),
            error=str(exc),
            elapsed_s=round(clock() - started, 1),
        )

    retry = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(Transient),
        stop=tenacity.stop_after_attempt(policy.attempts) | _StopAtDeadline(clock, started + policy.max_time_s),
        wait=_Wait(policy.backoff_initial_s, policy.backoff_max_s, policy.retry_after_max_s),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )

    def run(fn: Callable[[], T]) -> T:
        def counted() -> T:
            try:
                return fn()
            except Transient as exc:
                failures.append(exc.reason)
                raise

        return retry(counted)

    return run
