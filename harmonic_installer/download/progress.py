"""Progress: stall detection and the wall-time budget (the meter), the log lines, and the terminal bar."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from harmonic_installer.download.policy import DownloadPolicy, Transient
from harmonic_installer.download.transfer import OverBudget, Transfer
from harmonic_installer.formats import human_bytes as human

ProgressCallback = Callable[[str, int, int | None], None]


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


class Meter:
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
        t: Transfer,
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
            raise OverBudget(
                f"downloading {self._url_shown}: the wall-time budget ran out at {human(done)} of "
                f"{human(self._total) if self._total else 'unknown'} (download.max_time_s); "
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
            raise Transient(
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
        summary = f"{human(done)} of {human(self._total) if self._total else '?'}"
        if pct is not None:
            summary += f" ({pct:.0f}%)"
        summary += f", {human(rate)}/s"
        if eta is not None:
            summary += f", ETA {duration(eta)}"
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
            eta = f" ETA {duration((total - done) / rate)}" if rate > 0 and done < total else ""
            line = f"{label} [{bar}] {frac * 100:5.1f}% {human(done)}/{human(total)} {human(rate)}/s{eta}"
        else:
            line = f"{label} {human(done)} {human(rate)}/s"
        end = "\n" if total and done >= total else ""
        self._stream.write(f"\r{line}\x1b[K{end}")
        self._stream.flush()


def duration(seconds: float) -> str:
    """Seconds as M:SS, or H:MM:SS from an hour."""
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
