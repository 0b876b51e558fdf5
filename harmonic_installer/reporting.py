"""Progress reports to MAAS: start/finish events per step on MAAS's metadata status API, as curtin sends.

Every event is a JSON object POSTed to the machine's status URL (`.../MAAS/metadata/status/<system_id>`),
signed with OAuth 1.0 PLAINTEXT. Events nest under one parent activity:

    harmonic-installer                     start ... finish SUCCESS | WARN | FAIL (+ the log tail on failure)
      harmonic-installer/<step>            start, finish SUCCESS | FAIL, for each step plan.py runs
        harmonic-installer/download/<file> repeated `start` events carrying download progress, one finish
      harmonic-installer/installed         start + finish SUCCESS "Harmonic cOS <release> installed on <disk>"
                                           (last, on success only: the one success MAAS logs for a Deployed node)

MAAS puts only `start` events and failures (`result` exactly "FAIL") in the machine's event log; for a machine
deployed in memory (Deployed by the time we run) a start is a DEBUG "Node status event" and a FAIL an ERROR
"Node post-installation failure". No event carries `files`: for an in-memory deploy MAAS rolls such a message
back whole (it stores files into an installation script set these deploys do not have), so the final FAIL
carries the essential log tail in its description, bounded. Reporting never blocks or fails the install:
events go through a bounded queue to one background thread, each POST has a short timeout, an event MAAS does
not accept is dropped (counted, logged) rather than retried for long, and `close()` waits a bounded time. Posts
go straight to MAAS, never through the HTTP proxy (MAAS is on the provisioning network). Uses only the standard library.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import secrets
import threading
import time
import urllib.error
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit
from urllib.request import HTTPSHandler, ProxyHandler, Request, build_opener  # noqa: TID251  # MAAS status posts

import structlog

from harmonic_installer import __version__, cloudinit_cfg, tls
from harmonic_installer.config import Settings, redact_url
from harmonic_installer.formats import http_timestamp
from harmonic_installer.plan import InstallReport
from harmonic_installer.urls import is_http_url

log = structlog.get_logger()

ORIGIN = "harmonic-installer"
PARENT = "harmonic-installer"
INSTALLED_NAME = f"{PARENT}/installed"  # a start event MAAS logs: the install succeeded (its description)

_RESULTS = {"ok": "SUCCESS", "skipped": "SUCCESS", "failed": "FAIL"}
_QUEUE_SIZE = 256
_FAILURES_BEFORE_COOLDOWN = 3
_COOLDOWN_S = 30.0
_SKEW_MIN_CHANGE_S = 5
_MAX_DESCRIPTION = 1000
_MAX_FAILURE_DESCRIPTION = 4000  # the final FAIL: the cause, then the newest log lines that fit
_MAX_TAIL_LINE = 400
SKEW_FILE = "/run/oauth_skew.json"  # shared with cloud-init's and curtin's OauthUrlHelper: {host:port: seconds}


Target = cloudinit_cfg.WebhookConfig  # where events go and the OAuth credentials that sign them


@dataclass(frozen=True, slots=True)
class Stats:
    """What happened to the events of a run."""

    submitted: int
    sent: int
    dropped: int


def resolve_target(
    settings: Settings, *, find: Callable[[], cloudinit_cfg.WebhookConfig | None] = cloudinit_cfg.find_webhook
) -> Target | None:
    """The MAAS status endpoint for this run, or None when reporting is off or not configured.

    Explicit `maas.*` settings win field by field over cloud-init's webhook reporter configuration.
    """
    if settings.maas_enabled == "false":
        return None
    explicit = {
        "endpoint": settings.maas_endpoint,
        "consumer_key": settings.maas_consumer_key,
        "consumer_secret": settings.maas_consumer_secret,
        "token_key": settings.maas_token_key,
        "token_secret": settings.maas_token_secret,
    }
    complete = all(explicit[n] for n in ("endpoint", "consumer_key", "token_key", "token_secret"))
    found = None if complete else find()
    merged: dict[str, str] = {}
    borrowed = []
    for name, value in explicit.items():
        merged[name] = value or ""
        if not value and found is not None and getattr(found, name):
            merged[name] = getattr(found, name)
            borrowed.append(name)
    sources = []
    if any(explicit.values()):
        sources.append("settings maas.*")
    if found is not None and borrowed:
        sources.append(f"cloud-init {found.source}")
    endpoint = merged["endpoint"]
    if not endpoint:
        if settings.maas_enabled == "true":
            log.warning("report.not_configured", reason="maas.enabled=true but no endpoint set or found in cloud-init")
        else:
            log.info("report.off", reason="no MAAS endpoint set or found in cloud-init's reporting config")
        return None
    if not is_http_url(endpoint):
        log.warning("report.off", reason=f"MAAS endpoint is not an http(s) URL: {redact_url(endpoint)!r}")
        return None
    return Target(source=" + ".join(sources), **merged)


def oauth_header(target: Target, *, timestamp: int, nonce: str) -> str:
    """The `Authorization` header value: OAuth 1.0 with the PLAINTEXT signature (RFC 5849 3.4.4)."""
    signature = f"{_escape(target.consumer_secret)}&{_escape(target.token_secret)}"
    params = (
        ("oauth_nonce", nonce),
        ("oauth_timestamp", str(timestamp)),
        ("oauth_version", "1.0"),
        ("oauth_signature_method", "PLAINTEXT"),
        ("oauth_consumer_key", target.consumer_key),
        ("oauth_token", target.token_key),
        ("oauth_signature", signature),
    )
    return "OAuth " + ", ".join(f'{name}="{_escape(value)}"' for name, value in params)


def _escape(value: str) -> str:
    return quote(value, safe="~")


class Transport(Protocol):
    """Sends one POST; returns the status code and the response headers (errors as status codes too)."""

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> tuple[int, Mapping[str, str]]:
        """POST `body`; raise OSError when there is no HTTP answer (refused, timed out, reset)."""
        ...


class UrllibTransport:
    """The standard library's HTTP client, with no proxy (MAAS is reached directly) and the TLS policy of
    every outgoing HTTPS connection (tls.py: the system store, or `server.ca_file`)."""

    def __init__(self, ca_file: Path | str | None = None) -> None:
        self._opener = build_opener(ProxyHandler({}), HTTPSHandler(context=tls.client_context(ca_file)))

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> tuple[int, Mapping[str, str]]:
        """POST `body` to `url`; every HTTP status is returned, only a missing answer raises."""
        request = Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310
        try:
            with self._opener.open(request, timeout=timeout) as response:
                response.read(64 * 1024)
                return response.status, dict(response.headers)
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, dict(exc.headers or {})
        except urllib.error.URLError as exc:
            reason = exc.reason
            raise OSError(str(reason) if not isinstance(reason, OSError) else reason) from exc


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
        self._timeout = timeout_s
        self._flush_timeout = flush_timeout_s
        self._progress_interval = progress_interval_s
        self._log_tail = log_tail
        self._retry_wait = retry_wait_s
        self._skew_file = Path(skew_file) if skew_file else None
        self._host = urlsplit(target.endpoint).netloc
        self._transport = transport or UrllibTransport(ca_file)
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
        self._skew = self._read_skew()

    # ---- plan.StepObserver ------------------------------------------------------------------------------

    def step_started(self, name: str, description: str) -> None:
        """Post the parent's start (first time) and this step's start."""
        self._start_parent()
        with self._lock:
            self._open_step = name
        self._submit(self._event("start", f"{PARENT}/{name}", description))

    def step_finished(self, name: str, status: str, description: str) -> None:
        """Post the step's finish (after finishing its progress children)."""
        result = _RESULTS.get(status, "WARN")
        with self._lock:
            self._open_step = None
            children = [child for _, child in self._progress.values() if child.startswith(f"{PARENT}/{name}/")]
            if name == "download":
                self._progress.clear()
        for child in children:
            text = "download finished" if result != "FAIL" else "download failed"
            self._submit(self._event("finish", child, text, result), child=True)
        text = description if status != "skipped" else f"skipped: {description}"
        self._submit(self._event("finish", f"{PARENT}/{name}", text, result))

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
            child = last[1] or f"{PARENT}/download/{_slug(label)}"
            self._progress[label] = (now, child)
        self._submit(self._event("start", child, _progress_text(label, done, total)), droppable=True, child=True)

    def warning(self, text: str) -> None:
        """Post a warning as a child of the open step: its `start` carries the text (MAAS keeps start events in
        the node's event log; a WARN finish it drops)."""
        self._start_parent()
        with self._lock:
            step = self._open_step
        name = f"{PARENT}/{step}/warning" if step else f"{PARENT}/warning"
        self._submit(self._event("start", name, f"WARNING: {text}"), important=True, child=bool(step))
        self._submit(self._event("finish", name, "warning", "WARN"), important=True, child=bool(step))

    def run_finished(self, report: InstallReport) -> None:
        """Post the parent's finish: the outcome, and on failure the one-line cause and the log tail."""
        if not self._parent_started:
            return  # nothing was reported (e.g. another run holds the lock): nothing to finish
        if report.outcome == "installed":
            result = "SUCCESS"
            text = f"Harmonic cOS {report.release or ''} installed on {report.disk or 'the target disk'}"
            # MAAS logs no successful `finish` of a Deployed machine, only `start`s: the outcome as a start of
            # its own (INSTALLED_NAME) is what `harmonic-install fleet watch` reads (docs/maas-reporting.md).
            self._submit(self._event("start", INSTALLED_NAME, text), important=True)
            self._submit(self._event("finish", INSTALLED_NAME, text, result))
        elif report.outcome == "already-installed":
            result, text = "SUCCESS", report.note or f"already installed on {report.disk or 'the target disk'}"
        elif report.outcome == "not-a-target":
            result, text = "WARN", f"not a target host, nothing done: {report.error or ''}"
        else:
            result = "FAIL"
            where = f" at step {report.failed_step}" if report.failed_step else ""
            text = f"{report.outcome.upper()}{where}: {report.error or 'unknown error'} (exit {report.exit_code})"
            event = self._event("finish", PARENT, text, result)
            event["description"] = _with_tail(event["description"], self._tail_lines())
            self._submit(event, important=True)
            return
        self._submit(self._event("finish", PARENT, text, result), important=True)

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
        self._submit(self._event("start", PARENT, f"harmonic-install {__version__}: installing Harmonic cOS"))

    def _event(self, event_type: str, name: str, description: str, result: str | None = None) -> dict[str, Any]:
        text = " ".join(description.split()) or name
        if len(text) > _MAX_DESCRIPTION:
            text = text[: _MAX_DESCRIPTION - 3] + "..."
        event: dict[str, Any] = {
            "event_type": event_type,
            "origin": ORIGIN,
            "name": name,
            "description": text,
        }
        if result is not None:
            event["result"] = result
        return event

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
        if self._abandon.is_set():
            self._drop(item, "run over, flush time used up", quiet=True)
            return
        name = item.event["name"]
        if item.child and item.event["event_type"] == "finish" and name not in self._children_shown:
            self._drop(item, "its start never reached MAAS", quiet=True)
            return
        if self._closing and item.droppable and name in self._children_shown:
            self._drop(item, "stale progress at the end of the run", quiet=True)
            return
        if self._clock() < self._cooldown_until and not item.important:
            self._drop(item, "MAAS did not answer the last reports; not trying for a while", quiet=True)
            return
        attempts = 2 if item.important else 1
        error = ""
        for attempt in range(attempts):
            if attempt:
                self._abandon.wait(self._retry_wait)
                if self._abandon.is_set():
                    break
            error = self._post(item)
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

    def _post(self, item: _Item) -> str:
        """One POST, plus one immediate retry after a 401/403 that revealed a clock skew; '' on success."""
        for _ in range(2):
            body = dict(item.event, timestamp=item.wall + self._skew)
            data = json.dumps(body).encode("ascii")  # MAAS accepts ASCII only; json escapes the rest
            headers = {
                "Content-Type": "application/json",
                "User-Agent": f"harmonic-installer/{__version__}",
            }
            if self._target.signed:
                headers["Authorization"] = oauth_header(
                    self._target, timestamp=int(self._wall()) + self._skew, nonce=secrets.token_hex(16)
                )
            try:
                status, response_headers = self._transport.post(self._target.endpoint, data, headers, self._timeout)
            except OSError as exc:
                return f"no answer: {exc}"
            if 200 <= status < 300:
                return ""
            if status in (401, 403) and self._learn_skew(response_headers):
                continue
            return f"HTTP {status}"
        return "HTTP 401/403 again after correcting the clock skew"

    def _learn_skew(self, headers: Mapping[str, str]) -> bool:
        """Adopt the server's clock from its Date header; True when the skew changed enough to retry."""
        date = next((v for k, v in headers.items() if k.lower() == "date"), None)
        if not date:
            return False
        try:
            remote = http_timestamp(date)
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
        skew = int(remote - self._wall())
        if abs(skew - self._skew) <= _SKEW_MIN_CHANGE_S:
            return False
        self._log(log.warning, "report.clock_skew", skew_s=skew, previous_s=self._skew, endpoint=self._shown)
        self._skew = skew
        self._write_skew(skew)
        return True

    def _read_skew(self) -> int:
        """The skew cloud-init or curtin learned for this host earlier in this boot (0 if none)."""
        if self._skew_file is None:
            return 0
        try:
            value = json.loads(self._skew_file.read_text(encoding="utf-8")).get(self._host, 0)
        except (OSError, ValueError, AttributeError):
            return 0
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0

    def _write_skew(self, skew: int) -> None:
        """Share the learned skew with later programs, in cloud-init's format (best effort, atomic)."""
        if self._skew_file is None:
            return
        try:
            try:
                data = json.loads(self._skew_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
            data = data if isinstance(data, dict) else {}
            data[self._host] = skew
            part = self._skew_file.with_name(self._skew_file.name + ".part")
            part.write_text(json.dumps(data), encoding="utf-8")
            os.replace(part, self._skew_file)
        except OSError as exc:
            self._log(log.debug, "report.skew_not_saved", path=str(self._skew_file), error=str(exc))

    def _drop(self, item: _Item, reason: str, *, quiet: bool = False) -> None:
        """Count and log a dropped event: the first failure and a lost final event loudly, routine drops quietly."""
        with self._lock:
            self._dropped += 1
            first = not quiet and not self._warned
            self._warned = self._warned or not quiet
        emit = log.debug if quiet else log.warning if first or item.important else log.info
        self._log(
            emit,
            "report.dropped",
            name=item.event["name"],
            event_type=item.event["event_type"],
            reason=reason,
            endpoint=self._shown,
        )

    def _log(self, emit: Callable[..., Any], event: str, **values: Any) -> None:
        """Log from the worker thread: nothing once the run is over (close() has summarised), never raise."""
        if self._abandon.is_set():
            return
        with contextlib.suppress(Exception):
            emit(event, **values)


def _with_tail(cause: str, lines: list[str]) -> str:
    """The final FAIL's description: the cause, then the newest log lines (each cut short) that fit the bound."""
    head = f"{cause}\nlast log lines:"
    budget = _MAX_FAILURE_DESCRIPTION - len(head)
    kept: list[str] = []
    for raw in reversed([ln.strip() for ln in lines if ln.strip()]):
        line = raw if len(raw) <= _MAX_TAIL_LINE else raw[: _MAX_TAIL_LINE - 3] + "..."
        if len(line) + 1 > budget:
            break
        kept.append(line)
        budget -= len(line) + 1
    if not kept:
        return cause
    return head + "".join("\n" + line for line in reversed(kept))


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", label.lower()).strip("-") or "file"


def _progress_text(label: str, done: int, total: int | None) -> str:
    if total:
        return f"downloading {label}: {_mib(done)} of {_mib(total)} ({done * 100 // total}%)"
    return f"downloading {label}: {_mib(done)}"


def _mib(n: int) -> str:
    return f"{n / 1024**2:,.0f} MiB" if n >= 1024**2 else f"{n:,} bytes"


def start(settings: Settings, *, log_tail: Callable[[], str] | None = None) -> Reporter | None:
    """A Reporter for this run when MAAS reporting is enabled and configured, else None."""
    target = resolve_target(settings)
    if target is None:
        return None
    log.info(
        "report.enabled",
        endpoint=redact_url(target.endpoint),
        source=target.source,
        signed=target.signed,
        route="direct",
    )
    return Reporter(
        target,
        timeout_s=settings.maas_timeout_s,
        flush_timeout_s=settings.maas_flush_timeout_s,
        progress_interval_s=settings.maas_progress_interval_s,
        log_tail=log_tail,
        ca_file=settings.ca_file,
        skew_file=SKEW_FILE,
    )
