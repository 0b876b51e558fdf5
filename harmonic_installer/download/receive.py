"""One response into the .part file: status and range checks, free space, then the body in one pass.

The body comes from wire.py (straight from the socket where it can) and is only written here; follow.py
hashes what reached the file on a second thread; the meter (progress.py) watches rate, budget and progress.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx  # noqa: TID251  # download owner: reads httpx responses (DESIGN.md)

from harmonic_installer.download.follow import Follower
from harmonic_installer.download.headers import (
    check_representation,
    content_length,
    content_range,
    html_title_from,
    looks_like_html,
    retry_after,
    validator,
)
from harmonic_installer.download.naming import server_name
from harmonic_installer.download.partial import discard, hash_prefix, ours, write_failed, write_meta
from harmonic_installer.download.policy import RETRY_STATUSES, DownloadPolicy, Transient
from harmonic_installer.download.progress import Meter, ProgressCallback
from harmonic_installer.download.transfer import FinalExists, OverBudget, Transfer
from harmonic_installer.download.wire import body_chunks
from harmonic_installer.errors import DownloadError
from harmonic_installer.formats import human_bytes as human


class Receiver:
    """Takes a response for a transfer and brings the .part file to its end (t.hasher holds the digest)."""

    def __init__(
        self,
        policy: DownloadPolicy,
        *,
        clock: Callable[[], float],
        sinks: list[tuple[ProgressCallback, float]],
        quiet_logs: bool,
        disk_free: Callable[[Path], int],
        bind_name: Callable[[Transfer, str, bool], None],
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._sinks = sinks
        self._quiet_logs = quiet_logs
        self._disk_free = disk_free
        self._bind_name = bind_name

    def receive(self, t: Transfer, resp: httpx.Response, offset: int, deadline: float) -> None:
        """Check the answer to a (ranged, when offset) GET, then stream its body.

        Raises:
            Transient: worth another attempt (5xx, a cut body, a range that does not fit, a stall).
            DownloadError: not worth it (4xx, HTML, too long a body, no space, the budget ran out).
        """
        status = resp.status_code
        if status in RETRY_STATUSES:
            raise Transient(f"server answered {status} {resp.reason_phrase}", retry_after(resp))
        if status == 416 and offset:
            if t.spec.adopt_server_name:
                self._adopt_name(t, resp, offset)
            self._range_not_satisfiable(t, resp, offset)
            return
        if status not in (200, 206) or (status == 206 and not offset):
            raise DownloadError(f"downloading {t.url_shown}: server answered {status} {resp.reason_phrase}")
        check_representation(resp, t.url_shown, t.spec.filename)
        if t.spec.adopt_server_name:
            self._adopt_name(t, resp, offset)
        reclaimed = 0
        if status == 206:
            hasher, total = self._resumed(t, resp, offset)
        else:
            if offset:
                t.lg.info("download.restarted", discarded=offset, reason="the server sent the whole file (200)")
            reclaimed, offset, total, hasher = offset, 0, content_length(resp), hashlib.sha256()
        remaining = None if total is None else total - offset
        if total is not None and t.spec.size_check is not None:
            t.spec.size_check(total)
        self._check_space(t, remaining, total, reclaimed)
        if status == 200:
            write_meta(t, validator(resp), total)
        t.hasher, t.size = hasher, offset
        self._stream(t, resp, offset, total, deadline)

    def _resumed(self, t: Transfer, resp: httpx.Response, offset: int) -> tuple[Any, int | None]:
        """For a 206: the hash of the kept prefix and the file's total size."""
        start, _end, total = content_range(resp.headers.get("content-range", ""))
        if start != offset:
            discard(t.part, t.meta)
            raise Transient(f"server answered a range starting at {start}, asked for {offset}")
        t.lg.info("download.resumed", offset=offset, total=total)
        hasher, kept = hash_prefix(t.part, offset)
        if kept != offset:
            discard(t.part, t.meta)
            raise Transient(f"the partial file shrank to {kept} bytes while resuming")
        return hasher, total

    def _adopt_name(self, t: Transfer, resp: httpx.Response, offset: int) -> None:
        """Bind the name the server reveals (checksum looked up before the body is read)."""
        name, revealed = server_name(t, resp)
        if name != t.name:
            if t.name is not None and offset:
                discard(t.part, t.meta)
                raise Transient(f"the server's file changed from {t.name} to {name} during the download")
            self._bind_name(t, name, revealed)
        if t.final.name not in t.checked_existing and t.final.exists():
            raise FinalExists

    def _range_not_satisfiable(self, t: Transfer, resp: httpx.Response, offset: int) -> None:
        _s, _e, total = content_range(resp.headers.get("content-range", ""))
        if total != offset:
            discard(t.part, t.meta)
            raise Transient(f"server answered 416 for a range from {offset} (file is {total} bytes); starting over")
        t.hasher, kept = hash_prefix(t.part, offset)
        t.size = kept
        t.lg.info("download.resumed", offset=offset, total=total, complete=True)

    def _check_space(self, t: Transfer, remaining: int | None, total: int | None, reclaimed: int) -> None:
        """Fail early when the rest of the file plus the margin exceeds the free space where it lands."""
        if remaining is None:
            t.lg.info("download.size_unknown", reason="the server announced no length")
            return
        free = self._disk_free(t.spec.dest_dir) + reclaimed  # a restarted .part is truncated first
        margin = self._policy.free_space_margin_bytes
        if remaining + margin > free:
            raise DownloadError(
                f"downloading {t.url_shown}: not enough space in {t.spec.dest_dir}: {human(remaining)} still to "
                f"download (of {human(total or remaining)}) plus a {human(margin)} margin, but only {human(free)} "
                f"free (download.free_space_margin_mib)",
                f"need {remaining + margin} bytes, free {free} bytes",
            )

    def _stream(self, t: Transfer, resp: httpx.Response, offset: int, total: int | None, deadline: float) -> None:
        """Append the body to the .part file and the hasher in one pass; stalls and overlong bodies abort."""
        meter = Meter(
            t,
            self._policy,
            clock=self._clock,
            sinks=self._sinks,
            quiet_logs=self._quiet_logs,
            offset=offset,
            total=total,
            deadline=deadline,
        )
        chunks: Iterator[bytes | memoryview] = body_chunks(resp, read_timeout_s=self._policy.read_timeout_s)
        marks = meter.start()
        if offset == 0:
            chunks = _sniffed(t, resp, chunks)
        fd = os.open(t.part, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if not ours(os.fstat(fd)):  # planted by another user in a shared directory: they could change it
                raise DownloadError(f"downloading {t.url_shown}: {t.part} belongs to another user; not writing to it")
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
            received = self._write_body(t, fd, chunks, meter, marks=marks, offset=offset, total=total)
            os.fsync(fd)
        except OverBudget:
            raise
        except DownloadError:
            discard(t.part, t.meta)
            raise
        except OSError as exc:
            raise write_failed(t, exc, total) from exc
        finally:
            os.close(fd)
        meter.finish(offset + received)

    def _write_body(
        self,
        t: Transfer,
        fd: int,
        chunks: Iterator[bytes | memoryview],
        meter: Meter,
        *,
        marks: tuple[float, int],
        offset: int,
        total: int | None,
    ) -> int:
        """Write every chunk at the file's position; the hash follows on a second thread. Returns the count."""
        expected_len = None if total is None else total - offset
        received = 0
        clock = self._clock
        check_at, next_mark = marks
        # The hash is taken from the file on a second thread (follow.py): this loop only writes.
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
            raise Transient(f"body cut off at {offset + received} of {total} bytes")
        return received


def _sniffed(t: Transfer, resp: httpx.Response, chunks: Iterator[bytes | memoryview]) -> Iterator[bytes | memoryview]:
    """The body again, after refusing one that starts as an HTML page where a file was expected."""
    first = bytes(next(chunks, b""))  # one copy: the next read reuses the buffer
    if looks_like_html(first) and not t.spec.filename.endswith((".html", ".htm")):
        discard(t.part, t.meta)
        raise DownloadError(
            f"downloading {t.url_shown}: the server sent an HTML page (status {resp.status_code}) instead "
            f"of the file{html_title_from(first)}"
        )
    return itertools.chain((first,), chunks)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of `data` at the file's position (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
