"""Progress reports to MAAS: start/finish events per step on MAAS's metadata status API, as curtin sends.

Every event (maas_events.py: names, results, bounded descriptions) is a JSON object POSTed to the machine's
status URL (`.../MAAS/metadata/status/<system_id>`), signed with OAuth 1.0 PLAINTEXT (maas_status.py: the
transport, the signature, the clock skew).

MAAS puts only `start` events and failures (`result` exactly "FAIL") in the machine's event log; for a machine
deployed in memory (Deployed by the time we run) a start is a DEBUG "Node status event" and a FAIL an ERROR
"Node post-installation failure". Reporting never blocks or fails the install: events go through a bounded
queue to one background thread, each POST has a short timeout, an event MAAS does not accept is dropped
(counted, logged) rather than retried for long, and `close()` waits a bounded time. Uses only the standard
library.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from harmonic_installer import __version__, maas_clock, maas_events
from harmonic_installer.config import Settings, redact_url
from harmonic_installer.maas_events import INSTALLED_NAME, PARENT, RESULTS, event, outcome, with_tail
from harmonic_installer.maas_status import StatusClient, Target, Transport, UrllibTransport, resolve_target
from harmonic_installer.report import InstallReport

log = structlog.get_logger()

_QUEUE_SIZE = 256
_FAILURES_BEFORE_COOLDOWN = 3
_COOLDOWN_S = 30.0
SKEW_FILE = maas_clock.SKEW_FILE  # shared with cloud-init's and curtin's OauthUrlHelper: {host:port: seconds}


@dataclass(frozen=True, slots=True)
class Stats:
    """What happened to the events of a run."""

    submitted: int
    sent: int
    dropped: int


@dataclass(slots=True)
class _Item:
    event: dict[str, Any]
    wall: float  # when the event happened (local clock; the skew is added when it is sent)
    droppable: bool = False  # a repeated progress line: stale once the run is over
    important: bool = False  # the final event: tried even while MAAS looks down, and twice
    child: bool = False  # an event of a progress child (its finish is sent only if a start got through)


class Reporter:
    """A plan.StepObserver that posts MAAS events from a background thread; call `close()` at the end."""

    def __init__(
        self,
        target: Target,
        *,
        timeout_s: float = 5.0,
        flush_timeout_s: float = 10.0,
        progress_interval_s: float = 60.0,
        log_tail: Callable[[], str] | None = None,
        ca_file: Path | str | None = None,
        retry_wait_s: float = 1.0,
        skew_file: str | None = None,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._target = target
        self._flush_timeout = flush_timeout_s
        self._progress_interval = progress_interval_s
        self._log_tail = log_tail
        self._retry_wait = retry_wait_s
        self._clock = clock
        self._wall = wall
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=_QUEUE_SIZE)
        self._thread = threading.Thread(target=self._work, name="maas-report", daemon=True)
        self._lock = threading.Lock()
        self._abandon = threading.Event()
        self._closing = False
        self._closed = False
        self._started = False
        self._parent_started = False
        self._open_step: str | None = None
        self._progress: dict[str, tuple[float, str]] = {}  # label -> (last report time, child name)
        self._submitted = 0
        self._sent = 0
        self._dropped = 0
        self._failures = 0
        self._cooldown_until = 0.0
        self._warned = False
        self._children_shown: set[str] = set()  # progress children whose start reached MAAS (worker thread)
        self._client = StatusClient(
            target,
            transport=transport or UrllibTransport(ca_file),
            timeout_s=timeout_s,
            wall=wall,
            skew_file=skew_file,
            log_from_worker=self._log,
        )

    # ---- plan.StepObserver ------------------------------------------------------------------------------

    def step_started(self, name: str, description: str) -> None:
        """Post the parent's start (first time) and this step's start."""
        self._start_parent()
        with self._lock:
            self._open_step = name
        self._submit(event("start", f"{PARENT}/{name}", description))

    def step_finished(self, name: str, status: str, description: str) -> None:
        """Post the step's finish (after finishing its progress children)."""
        result = RESULTS.get(status, "WARN")
        with self._lock:
            self._open_step = None
            children = [child for _, child in self._progress.values() if child.startswith(f"{PARENT}/{name}/")]
            if name == "download":
                self._progress.clear()
        for child in children:
            text = "download finished" if result != "FAIL" else "download failed"
            self._submit(event("finish", child, text, result), child=True)
        text = description if status != "skipped" else f"skipped: {description}"
        self._submit(event("finish", f"{PARENT}/{name}", text, result))

    def progress(self, label: str, done: int, total: int | None) -> None:
        """Post download progress for `label`, at most once per `maas.progress_interval_s`."""
        now = self._clock()
        with self._lock:
            last = self._progress.get(label)
            if last is None:
                self._progress[label] = (now, "")  # the first call only starts the interval
                return
            if now - last[0] < self._progress_interval or (total is not None and done >= total):
                return
            child = last[1] or maas_events.progress_child(label)
            self._progress[label] = (now, child)
        self._submit(event("start", child, maas_events.progress_text(label, done, total)), droppable=True, child=True)

    def warning(self, text: str) -> None:
        """Post a warning as a child of the open step: its `start` carries the text (MAAS keeps start events in
        the node's event log; a WARN finish it drops)."""
        self._start_parent()
        with self._lock:
            step = self._open_step
        name = f"{PARENT}/{step}/warning" if step else f"{PARENT}/warning"
        self._submit(event("start", name, f"WARNING: {text}"), important=True, child=bool(step))
        self._submit(event("finish", name, "warning", "WARN"), important=True, child=bool(step))

    def run_finished(self, report: InstallReport) -> None:
        """Post the parent's finish: the outcome, and on failure the one-line cause and the log tail."""
        if not self._parent_started:
            return  # nothing was reported (e.g. another run holds the lock): nothing to finish
        result, text = outcome(report)
        if report.outcome == "installed":
            # MAAS logs no successful `finish` of a Deployed machine, only `start`s: the outcome as a start of
            # its own (INSTALLED_NAME) is what `harmonic-install fleet watch` reads (docs/maas-reporting.md).
            self._submit(event("start", INSTALLED_NAME, text), important=True)
            self._submit(event("finish", INSTALLED_NAME, text, result))
        final = event("finish", PARENT, text, result)
        if result == "FAIL":
            final["description"] = with_tail(final["description"], self._tail_lines())
        self._submit(final, important=True)

    def failed_after_success(self, report: InstallReport) -> None:
        """The run reported its success, then its last step (the reboot command) failed: a FAIL of its own.

        MAAS shows it as "Node post-installation failure" (ERROR), and `fleet watch` reads the machine as failed.
        """
        result, text = outcome(report)
        self._submit(event("start", PARENT, "the reboot after the install"), important=True)
        final = event("finish", PARENT, text, result)
        final["description"] = with_tail(final["description"], self._tail_lines())
        self._submit(final, important=True)

    # ---- lifecycle ---------------------------------------------------------------------------------------

    def close(self) -> Stats:
        """Send what is queued within `maas.flush_timeout_s`, drop the rest, log a summary; never raises."""
        with self._lock:
            if self._closed:
                return self._stats()
            self._closed = self._closing = True
            started = self._started
        if started:
            deadline = self._clock() + self._flush_timeout
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=max(self._flush_timeout, 0.01))
            self._thread.join(max(deadline - self._clock(), 0.0))
            if self._thread.is_alive():
                self._abandon.set()
                log.warning("report.flush_timed_out", waited_s=self._flush_timeout, endpoint=self._shown)
        stats = self._stats()
        unresolved = stats.submitted - stats.sent - stats.dropped
        stats = Stats(stats.submitted, stats.sent, stats.dropped + unresolved)
        emit = log.warning if self._warned or unresolved else log.info
        emit("report.summary", sent=stats.sent, dropped=stats.dropped, endpoint=self._shown)
        return stats

    def _stats(self) -> Stats:
        return Stats(self._submitted, self._sent, self._dropped)

    @property
    def _shown(self) -> str:
        return redact_url(self._target.endpoint)

    # ---- events ------------------------------------------------------------------------------------------

    def _start_parent(self) -> None:
        with self._lock:
            if self._parent_started:
                return
            self._parent_started = True
        self._submit(event("start", PARENT, f"harmonic-install {__version__}: installing Harmonic cOS"))

    def _tail_lines(self) -> list[str]:
        if self._log_tail is None:
            return []
        try:
            return self._log_tail().splitlines()
        except Exception as exc:  # the report matters more than the log lines
            log.warning("report.log_tail_failed", error=str(exc))
            return []

    def _submit(
        self, event: dict[str, Any], *, droppable: bool = False, important: bool = False, child: bool = False
    ) -> None:
        item = _Item(event, self._wall(), droppable=droppable, important=important, child=child)
        with self._lock:
            if self._closed:
                return
            self._submitted += 1
            if not self._started:
                self._started = True
                self._thread.start()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._drop(item, "queue full")

    # ---- the background thread ---------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._handle(item)
            except Exception as exc:  # a bug here must not kill the thread silently
                self._drop(item, f"internal error: {exc!r}")

    def _handle(self, item: _Item) -> None:
        skip = self._why_skip(item)
        if skip:
            self._drop(item, skip, quiet=True)
            return
        name = item.event["name"]
        error = ""
        for attempt in range(2 if item.important else 1):
            if attempt:
                self._abandon.wait(self._retry_wait)
                if self._abandon.is_set():
                    break
            error = self._client.post(item.event, item.wall)
            if not error:
                if item.child:
                    self._children_shown.add(name)
                with self._lock:
                    self._sent += 1
                    self._failures = 0
                    self._cooldown_until = 0.0
                self._log(log.debug, "report.sent", name=name, event_type=item.event["event_type"])
                return
        with self._lock:
            self._failures += 1
            if self._failures >= _FAILURES_BEFORE_COOLDOWN:
                self._cooldown_until = self._clock() + _COOLDOWN_S
        self._drop(item, error)

    def _why_skip(self, item: _Item) -> str:
        """Why this event is not worth sending now ('' to send it): the routine, quiet drops."""
        name = item.event["name"]
        if self._abandon.is_set():
            return "run over, flush time used up"
        if item.child and item.event["event_type"] == "finish" and name not in self._children_shown:
            return "its start never reached MAAS"
        if self._closing and item.droppable and name in self._children_shown:
            return "stale progress at the end of the run"
        if self._clock() < self._cooldown_until and not item.important:
            return "MAAS did not answer the last reports; not trying for a while"
        return ""

    def _drop(self, item: _Item, reason: str, *, quiet: bool = False) -> None:
        """Count and log a dropped event: the first failure and a lost final event loudly, routine drops quietly."""
        with self._lock:
            self._dropped += 1
            first = not quiet and not self._warned
            self._warned = self._warned or not quiet
        emit = log.debug if quiet else log.warning if first or item.important else log.info
        name, event_type = item.event["name"], item.event["event_type"]
        self._log(emit, "report.dropped", name=name, event_type=event_type, reason=reason, endpoint=self._shown)

    def _log(self, emit: Callable[..., Any], event: str, **values: Any) -> None:
        """Log from the worker thread: nothing once the run is over (close() has summarised), never raise."""
        if self._abandon.is_set():
            return
        with contextlib.suppress(Exception):
            emit(event, **values)


def start(settings: Settings, *, log_tail: Callable[[], str] | None = None) -> Reporter | None:
    """A Reporter for this run when MAAS reporting is enabled and configured, else None."""
    target = resolve_target(settings)
    if target is None:
        return None
    shown = redact_url(target.endpoint)
    log.info("report.enabled", endpoint=shown, source=target.source, signed=target.signed, route="direct")
    return Reporter(
        target,
        timeout_s=settings.maas.timeout_s,
        flush_timeout_s=settings.maas.flush_timeout_s,
        progress_interval_s=settings.maas.progress_interval_s,
        log_tail=log_tail,
        ca_file=settings.server.ca_file,
        skew_file=SKEW_FILE,
    )
