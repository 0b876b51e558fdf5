"""systemd's native journal protocol: one log event as one journal entry with its fields (STEP, ARTIFACT, ...).

Used only under systemd, when $JOURNAL_STREAM names our stderr or stdout (systemd.exec(5)): then
`journalctl -o json` shows each event's fields, not one text line. The wire format (systemd's "Native Journal
Protocol"): a datagram to /run/systemd/journal/socket holding `NAME=value\\n` per field, or for a value with a
newline `NAME\\n` + its length as 64-bit little endian + the value + `\\n`; a datagram too large for the socket is
written to a sealed memfd whose descriptor is sent (SCM_RIGHTS) in an empty datagram. Sending never raises: an
unreachable journal turns the sink off and the caller writes the line to its stream instead.
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import re
import socket
import struct
import threading
from collections.abc import Iterable, Mapping
from typing import TextIO

SOCKET_PATH = "/run/systemd/journal/socket"
IDENTIFIER = "harmonic-install"
# Syslog priorities (journald's PRIORITY field) of structlog's level names.
PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
# Field names journald gives a meaning of its own: an event key spelled like one gets the HARMONIC_ prefix.
_RESERVED = frozenset(
    {
        "MESSAGE",
        "MESSAGE_ID",
        "PRIORITY",
        "CODE_FILE",
        "CODE_LINE",
        "CODE_FUNC",
        "ERRNO",
        "INVOCATION_ID",
        "USER_INVOCATION_ID",
        "SYSLOG_FACILITY",
        "SYSLOG_IDENTIFIER",
        "SYSLOG_PID",
        "SYSLOG_TIMESTAMP",
        "SYSLOG_RAW",
        "DOCUMENTATION",
        "TID",
        "UNIT",
        "USER_UNIT",
        "OBJECT_PID",
    }
)
_NAME_MAX = 64  # journald drops fields with longer names
_SEALS = ("F_SEAL_SHRINK", "F_SEAL_GROW", "F_SEAL_WRITE", "F_SEAL_SEAL")


def field_name(key: str) -> str | None:
    """The journal field name for an event key ('artifact' -> 'ARTIFACT'); None if nothing valid is left.

    Upper case letters, digits and '_' only, not starting with '_' (journald's trusted fields) or a digit.
    """
    name = re.sub(r"[^A-Z0-9_]", "_", key.upper()).lstrip("_")
    if not name or name[0].isdigit():
        return None
    if name in _RESERVED:
        name = "HARMONIC_" + name
    return name[:_NAME_MAX]


def encode(fields: Iterable[tuple[str, str]]) -> bytes:
    """The native protocol's datagram for (NAME, value) pairs, in order."""
    out = bytearray()
    for name, value in fields:
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += name.encode("ascii") + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode("ascii") + b"=" + data + b"\n"
    return bytes(out)


def stream_is_journal(environ: Mapping[str, str], fd: int) -> bool:
    """True when file descriptor `fd` is the journal stream systemd named in $JOURNAL_STREAM ('device:inode')."""
    dev, sep, ino = environ.get("JOURNAL_STREAM", "").partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(fd)
    except (OSError, ValueError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


class Journal:
    """Sends entries to journald over its native socket; after one failure it stays off (`ok` is False)."""

    def __init__(
        self,
        *,
        path: str = SOCKET_PATH,
        identifier: str = IDENTIFIER,
        replaces_stream: bool = False,
        timeout_s: float = 1.0,
    ) -> None:
        """Args:
        path: journald's socket (tests bind their own).
        identifier: SYSLOG_IDENTIFIER of every entry.
        replaces_stream: our log stream is itself the journal stream: a line sent here is not written there too.
        timeout_s: longest wait for room in the socket's queue before the journal counts as unreachable.
        """
        self.path = path
        self.identifier = identifier
        self.replaces_stream = replaces_stream
        self._timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self.ok = True

    def send(self, message: str, priority: int, fields: Iterable[tuple[str, str]]) -> bool:
        """Send one entry (MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, then `fields`); False if it did not reach journald."""
        if not self.ok:
            return False
        head = [("MESSAGE", message), ("PRIORITY", str(priority)), ("SYSLOG_IDENTIFIER", self.identifier)]
        data = encode([*head, *fields])
        with self._lock:
            try:
                self._send(data)
                return True
            except (OSError, ValueError):
                self.ok = False
                self.close()
                return False

    def _send(self, data: bytes) -> None:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.settimeout(self._timeout_s)
        try:
            self._sock.sendto(data, self.path)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_memfd(data)

    def _send_memfd(self, data: bytes) -> None:
        """A payload too large for one datagram: a sealed memfd, its descriptor in an empty datagram."""
        assert self._sock is not None
        fd = os.memfd_create("journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            seals = 0
            for name in _SEALS:
                seals |= getattr(fcntl, name)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())
            self._sock.sendmsg([], [rights], 0, self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close the socket (a later send opens a new one while the journal is still `ok`)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def for_process(
    environ: Mapping[str, str], log_stream: TextIO, *, other_fds: Iterable[int] = (1, 2), path: str = SOCKET_PATH
) -> Journal | None:
    """The journal to send log events to, when systemd connected our log stream or stdout/stderr to the journal.

    When the log stream itself is the journal stream, entries replace its lines (no line twice in the journal);
    when only another of our descriptors is (the unit's StandardError=tty, StandardOutput=journal+console), the
    log stream (the console) still gets every line and the journal gets the entries with their fields.
    """
    if not environ.get("JOURNAL_STREAM"):
        return None
    try:
        log_fd = log_stream.fileno()
    except (AttributeError, OSError, ValueError):
        log_fd = -1
    if log_fd >= 0 and stream_is_journal(environ, log_fd):
        return Journal(path=path, replaces_stream=True)
    if any(stream_is_journal(environ, fd) for fd in other_fds if fd != log_fd):
        return Journal(path=path, replaces_stream=False)
    return None
