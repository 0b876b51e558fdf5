"""The only structlog configuration: readable on a TTY, one JSON object per line otherwise."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

_SECRET_KEYS = frozenset({"password", "token", "token_secret", "consumer_secret", "authorization", "proxy_auth"})


def _redact_secrets(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    for key in list(event):
        if key.lower() in _SECRET_KEYS:
            event[key] = "***"
    return event


def configure(*, verbose: bool = False, stream: TextIO | None = None, json: bool | None = None) -> None:
    """Configure logging once for the process.

    Args:
        verbose: log debug events (every command's output) too.
        stream: where log lines go (default: stderr, so stdout carries only the report).
        json: force JSON lines (True) or console rendering (False); default: console on a TTY only.
    """
    out = stream if stream is not None else sys.stderr
    use_json = json if json is not None else not _isatty(out)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_secrets,
    ]
    renderer: list[Any]
    if use_json:
        renderer = [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer(sort_keys=False)]
    else:
        colors = _isatty(out) and "NO_COLOR" not in os.environ
        renderer = [structlog.dev.ConsoleRenderer(colors=colors, exception_formatter=structlog.dev.plain_traceback)]
    structlog.configure(
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
