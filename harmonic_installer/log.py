"""The only structlog configuration: one readable line per event (JSON lines when asked), and the journal.

A line: `<time> <LEVEL> <step or -> <message> key=value ...` (values quoted as JSON strings when they hold a
space or would not read back), the same on a terminal (with colour) and on the serial console; `parse_line`
reads it back. Under systemd each event also goes to the journal with its fields (journal.py).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import structlog
import structlog.tracebacks
from structlog.typing import EventDict, WrappedLogger

from harmonic_installer import journal

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
    """The last log lines of this run, as the console shows them (for the failure report sent to MAAS).

    Bounded by line count and by the length of each line, so memory stays small on a long run; lines
    are recorded after secret redaction. Thread-safe.
    """

    def __init__(self, max_lines: int = 200, max_line_chars: int = 2000) -> None:
        self._lines: deque[str] = deque(maxlen=max_lines)
        self._max_line_chars = max_line_chars
        self._lock = threading.Lock()

    def __call__(self, _logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
        """A structlog processor: remember the event's text line (as the console shows it), pass it on unchanged."""
        try:
            line = render_line(event)
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


# ---------------------------------------------------------------------------------------------------------
# The text line: `<time> <LEVEL> <step or -> <message> key=value ...`, one per event, parsed back by parse_line.

LOG_FORMATS = ("text", "json")
_LEVEL_WIDTH, _STEP_WIDTH = 7, 9  # WARNING; preflight, download, packages, firmware
_HEADER_KEYS = frozenset({"timestamp", "level", "event", "step"})
_COLOURS = {
    "debug": "\x1b[2m",
    "info": "\x1b[32m",
    "warning": "\x1b[33m",
    "error": "\x1b[31m",
    "critical": "\x1b[1;31m",
}
_BOLD, _DIM, _RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Bare words that would read back as another type are quoted when they are strings.
_LITERAL = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?|true|false|null|NaN|-?Infinity")
_BARE = re.compile(r'[^\s"\\\[{][^\s"\\]*')  # a bare string never starts with [ or { (those are JSON)
_VALUE = re.compile(r'"(?:[^"\\]|\\.)*"|[^\s"\\]+')
_KEY = re.compile(r'([^\s="\\]+)=')
_JSON = json.JSONDecoder()
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
_MICROS = re.compile(r"(\.\d{3})\d*Z$")


def format_value(value: Any) -> str:
    """One value as written after `key=`: bare when it reads back unchanged, else a JSON string (one line).

    Numbers, true/false and null are written as JSON literals, lists and dicts as compact JSON (unquoted: they
    read back as lists and dicts), other objects (a Path) as their text. A string is quoted when it is empty,
    holds a space, a quote, a backslash or a character that is not printable (a newline is written as \\n),
    starts with [ or {, or looks like a literal.
    """
    if isinstance(value, str):
        if _BARE.fullmatch(value) and value.isprintable() and not _LITERAL.fullmatch(value):
            return value
        return _quote(value)
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    if not isinstance(value, (list, tuple, dict)):  # a Path, an exception, ...: as its text
        return format_value(str(value))
    try:  # compact JSON, unquoted: parse_line reads it back as the list or dict
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return format_value(str(value))
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def _quote(text: str) -> str:
    quoted = json.dumps(text, ensure_ascii=False)
    # JSON leaves U+2028, U+0085 and the like unescaped: a line splitter would break the line there.
    return "".join(c if c.isprintable() or c == " " else f"\\u{ord(c):04x}" for c in quoted)


def _read_value(text: str) -> Any:
    if text.startswith('"'):
        return json.loads(text)
    if _LITERAL.fullmatch(text):
        return json.loads(text)
    return text


@dataclass(frozen=True)
class LogLine:
    """One text log line, read back: what was rendered, with the values' types (numbers, booleans, null)."""

    time: str
    level: str  # lower case, as structlog names it: debug, info, warning, error, critical
    step: str | None
    message: str  # the event name, e.g. 'step.finished'
    fields: dict[str, Any]

    def as_event(self) -> dict[str, Any]:
        """The event as a dict shaped like a JSON log record: event, level, timestamp, step (when set), fields."""
        event: dict[str, Any] = {"event": self.message, "level": self.level, "timestamp": self.time}
        if self.step is not None:
            event["step"] = self.step
        event.update(self.fields)
        return event


def render_line(event: Mapping[str, Any], *, colors: bool = False) -> str:
    """The text line for an event dict (structlog's, after the timestamp and level processors)."""
    level = str(event.get("level", "info"))
    stamp = _MICROS.sub(r"\1Z", str(event.get("timestamp", "-")))
    step_text, message, pairs = _body(event)
    if not colors:
        details = "".join(f" {k}={v}" for k, v in pairs)
        return f"{stamp} {level.upper():<{_LEVEL_WIDTH}} {step_text:<{_STEP_WIDTH}} {message}{details}"
    colour = _COLOURS.get(level, "")
    details = "".join(f" {_DIM}{k}={_RESET}{v}" for k, v in pairs)
    return (
        f"{_DIM}{stamp}{_RESET} {colour}{level.upper():<{_LEVEL_WIDTH}}{_RESET} {step_text:<{_STEP_WIDTH}} "
        f"{_BOLD}{message}{_RESET}{details}"
    )


def _body(event: Mapping[str, Any]) -> tuple[str, str, list[tuple[str, str]]]:
    """The step column ('-' if none), the message and the formatted key=value pairs of an event."""
    step = event.get("step")
    step_text = "-" if step is None else format_value(str(step))
    message = format_value(str(event.get("event", "")))
    return step_text, message, [(str(k), format_value(v)) for k, v in event.items() if k not in _HEADER_KEYS]


def parse_line(line: str) -> LogLine:
    """Read a text log line back into its fields (colour codes ignored).

    Raises:
        ValueError: the line is not one of ours (e.g. the `harmonic-install: ...` line for the operator).
    """
    text = _ANSI.sub("", line).strip()
    parts = text.split(None, 3)
    if len(parts) < 4 or not _TIME.fullmatch(parts[0]) or parts[1].lower() not in journal.PRIORITY:
        raise ValueError(f"not a log line: {line[:80]!r}")
    stamp, level, step_text, rest = parts
    head = _VALUE.match(rest)
    if head is None:
        raise ValueError(f"no message in log line: {line[:80]!r}")
    message = _read_value(head.group(0))
    fields: dict[str, Any] = {}
    pos = head.end()
    while pos < len(rest):
        if not rest[pos].isspace():
            raise ValueError(f"log line: no space before {rest[pos : pos + 20]!r}")
        while pos < len(rest) and rest[pos].isspace():
            pos += 1
        key = _KEY.match(rest, pos)
        if key is None:
            raise ValueError(f"log line: expected key=value at {rest[pos : pos + 20]!r}")
        fields[key.group(1)], pos = _value_at(rest, key.end())
    step = None if step_text == "-" else str(_read_value(step_text))
    return LogLine(stamp, level.lower(), step, str(message), fields)


def _value_at(text: str, pos: int) -> tuple[Any, int]:
    """The value starting at `pos` (JSON list or dict, quoted string or bare word) and where it ends."""
    if text.startswith(("[", "{"), pos):
        try:
            return _JSON.raw_decode(text, pos)
        except ValueError:
            raise ValueError(f"log line: bad JSON at {text[pos : pos + 20]!r}") from None
    match = _VALUE.match(text, pos)
    if match is None:
        raise ValueError(f"log line: no value at {text[pos : pos + 20]!r}")
    return _read_value(match.group(0)), match.end()


def find_line(text: str) -> LogLine | None:
    """The log line inside `text` (after a journal or console prefix such as 'cloud-init[812]: '), if any."""
    clean = _ANSI.sub("", text)
    for match in _TIME.finditer(clean):
        try:
            return parse_line(clean[match.start() :])
        except ValueError:
            continue
    return None


# ---------------------------------------------------------------------------------------------------------
# Configuration.


class _Output:
    """The last processor: the event to the journal (when connected) and its line (text or JSON) to the stream."""

    def __init__(self, fmt: str, colors: bool, sink: journal.Journal | None) -> None:
        self._json = structlog.processors.JSONRenderer(sort_keys=False) if fmt == "json" else None
        self._colors = colors
        self._sink = sink

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> str:
        if self._sink is not None and self._sink.ok:
            sent = self._sink.send(
                _journal_message(event), journal.PRIORITY.get(str(event.get("level")), 6), _journal_fields(event)
            )
            if sent and self._sink.replaces_stream:
                raise structlog.DropEvent
        if self._json is not None:
            return str(self._json(logger, name, event))
        return render_line(event, colors=self._colors)


def _journal_message(event: Mapping[str, Any]) -> str:
    # The line without the time and level (journald keeps both), the padding, or a '-' for no step.
    step_text, message, pairs = _body(event)
    head = message if event.get("step") is None else f"{step_text} {message}"
    return head + "".join(f" {k}={v}" for k, v in pairs)


def _journal_fields(event: Mapping[str, Any]) -> list[tuple[str, str]]:
    fields = [("EVENT", str(event.get("event", "")))]
    for key, value in event.items():
        if key in ("event", "level", "timestamp") or value is None:
            continue
        name = journal.field_name(str(key))
        if name is None or name == "EVENT":
            continue
        if isinstance(value, (bool, int, float, list, tuple, dict)):
            text = json.dumps(value, ensure_ascii=False, default=str)
        else:
            text = str(value)
        fields.append((name, text))
    return fields


def configure(
    *,
    verbose: bool = False,
    stream: TextIO | None = None,
    json: bool | None = None,
    fmt: str = "text",
    tail: LogTail | None = None,
    sink: journal.Journal | None = None,
) -> None:
    """Configure logging once for the process (again to change the format once the settings are known).

    Args:
        verbose: log debug events (every command's output) too.
        stream: where log lines go (default: stderr, so stdout carries only the report).
        json: True forces JSON lines, False text lines (overrides `fmt`).
        fmt: 'text' (one readable line per event, the default everywhere) or 'json' (one JSON object per line).
        tail: also keep the last lines (redacted, plain text) in this ring, e.g. for the MAAS failure report.
        sink: also send each event to the journal with its fields (journal.for_process); when the stream
            is the journal stream itself, the line is not written there too (unless the journal is unreachable).
    """
    out = stream if stream is not None else sys.stderr
    if json is not None:
        fmt = "json" if json else "text"
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_secrets,
    ]
    if tail is not None:
        shared.append(tail)
    colors = fmt == "text" and is_interactive(out) and "NO_COLOR" not in os.environ
    tracebacks = _TRACEBACKS if fmt == "json" else structlog.processors.format_exc_info
    structlog.configure(  # noqa: TID251  # the one place that configures logging
        processors=[*shared, tracebacks, _Output(fmt, colors, sink)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if verbose else logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Libraries that log through the standard library (httpx logs every request at INFO) stay quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def is_interactive(stream: TextIO | None, environ: Mapping[str, str] | None = None) -> bool:
    """A person at a terminal: `stream` is a TTY, TERM is not 'dumb', and systemd did not connect us to the journal.

    Decides colour and the download progress bar; otherwise progress is a plain log line every few seconds.
    """
    env = os.environ if environ is None else environ
    if stream is None or not _isatty(stream) or env.get("TERM") == "dumb":
        return False
    return not any(journal.stream_is_journal(env, fd) for fd in (1, 2))


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
