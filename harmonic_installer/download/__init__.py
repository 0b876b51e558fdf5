"""Fetch artifacts over HTTP: streamed, hashed, resumed, retried, renamed only once verified.

The only user of httpx and tenacity (DESIGN.md). `Downloader.fetch(spec)` returns a `VerifiedArtifact`
(artifacts.py), and nothing else in the project can make one: verify.py holds the process' one mint token and
uses it right after the SHA-256 of the file matched its expected value (pinned, or from SHA256SUMS, optionally
gpg-verified). The parts, as coreos-installer splits src/download.rs from src/io/*:

  fetch.py      the fetch loop: reuse, attempts under the retry policy, verify, rename
  policy.py     DownloadPolicy, what is retried (the one transport-error mapping), backoff, budgets
  request.py    one GET: redirects hop by hop with their own proxy decision, the stale keep-alive resend
  receive.py    one response into the .part: status and range checks, free space, the body
  wire.py       the body straight from the socket (plain fixed-length HTTP/1.x), else httpx's iter_raw
  follow.py     the hash of the written file on a second thread
  headers.py    Content-Disposition, Content-Length/Range, Retry-After, validators, HTML sniffing
  naming.py     the name a server reveals for 'latest'
  checksums.py  SHA256SUMS (strict parsing, gpgv) and the expected value of each file
  small.py      small files (the checksum file and its signature) in memory
  partial.py    the partial file: resume point, sidecar, prefix hash, links never followed
  progress.py   stall window, wall-time budget, progress log lines and the terminal bar
  verify.py     the comparison and the only maker of VerifiedArtifact
  verdict.py    the operator's line when the attempts ran out

Operator documentation: docs/downloads.md.
"""

from __future__ import annotations

from harmonic_installer.artifacts import (
    SOURCE_NONE,
    SOURCE_PINNED,
    SOURCE_SUMS,
    SOURCE_SUMS_GPG,
    ArtifactSpec,
    VerifiedArtifact,
)
from harmonic_installer.download.fetch import Downloader
from harmonic_installer.download.policy import RETRY_STATUSES, DownloadPolicy
from harmonic_installer.download.progress import ProgressBar, ProgressCallback, StallWindow
from harmonic_installer.download.verify import Expected, verify

__all__ = [
    "RETRY_STATUSES",
    "SOURCE_NONE",
    "SOURCE_PINNED",
    "SOURCE_SUMS",
    "SOURCE_SUMS_GPG",
    "ArtifactSpec",
    "DownloadPolicy",
    "Downloader",
    "Expected",
    "ProgressBar",
    "ProgressCallback",
    "StallWindow",
    "VerifiedArtifact",
    "verify",
]
