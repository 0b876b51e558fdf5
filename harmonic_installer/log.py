"""The only structlog configuration: readable on a TTY, one JSON object per line otherwise."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections import deque
from typing import Any, TextIO

import structlog
import structlog.tracebacks
from structlog.typing import EventDict, WrappedLogger

_SECRET_KEYS = frozenset(
    {
        "password",
        "token",
        "token_key",
        "token_secret",
        "consumer_secret",
        "authorization",
        "proxy_auth",
        "oauth_signature",
    }
)


# Tracebacks as structured frames (file, line, function), never with the frames' locals: structlog's
# `dict_tracebacks` renders each frame's locals, which hold Settings (MAAS token secret, proxy password) and the
# OAuth header in any frame below the CLI.
_TRACEBACKS = structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False))


def _redact_secrets(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    for key in list(event):
        if key.lower() in _SECRET_KEYS:
            event[key] = "***"
    return event


class LogTail:
    """The last log lines of this run as plain text (for the failure report sent to MAAS).

    Bounded by line count and by the length of each line, so memory stays small on a long run; lines
    are recorded after secret redaction. Thread-safe.
    """

    def __init__(self, max_lines: int = 200, max_line_chars: int = 2000) -> None:
        self._lines: deque[str] = deque(maxlen=max_lines)
        self._max_line_chars = max_line_chars
        self._lock = threading.Lock()
        self._render = structlog.processors.KeyValueRenderer(
            key_order=["timestamp", "level", "event"], drop_missing=True
        )

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
        """A structlog processor: remember a plain rendering of the event, pass the event on unchanged."""
        try:
            line = self._render(logger, name, dict(event))
        except Exception as exc:  # a log line must never break the program
            line = f"event={event.get('event')!r} (not renderable: {exc!r})"
        if len(line) > self._max_line_chars:
            line = line[: self._max_line_chars] + "...(cut)"
        with self._lock:
            self._lines.append(line)
        return event

    def text(self) -> str:
        """The remembered lines, oldest first, newline-terminated ('' if none)."""
        with self._lock:
            lines = list(self._lines)
        return "".join(line + "\n" for line in lines)


def configure(
    *, verbose: bool = False, stream: TextIO | None = None, json: bool | None = None, tail: LogTail | None = None
) -> None:
    """Configure logging once for the process.

    Args:
        verbose: log debug events (every command's output) too.
        stream: where log lines go (default: stderr, so stdout carries only the report).
        json: force JSON lines (True) or console rendering (False); default: console on a TTY only.
        tail: also keep the last lines (redacted, plain text) in this ring, e.g. for the MAAS failure report.
    """
    out = stream if stream is not None else sys.stderr
    use_json = json if json is not None else not _isatty(out)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_secrets,
    ]
    if tail is not None:
        shared.append(tail)
    renderer: list[Any]
    if use_json:
        renderer = [_TRACEBACKS, structlog.processors.JSONRenderer(sort_keys=False)]
    else:
        colors = _isatty(out) and "NO_COLOR" not in os.environ
        renderer = [structlog.dev.ConsoleRenderer(colors=colors, exception_formatter=structlog.dev.plain_traceback)]
    structlog.configure(  # noqa: TID251  # the one place that configures logging
        processors=shared + renderer,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if verbose else logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Libraries that log through the standard library (httpx logs every request at INFO) stay quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
