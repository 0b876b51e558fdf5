"""journal: the native protocol on the wire, read by a real AF_UNIX datagram socket standing in for journald's."""

from __future__ import annotations

import array
import fcntl
import io
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from harmonic_installer import journal
from harmonic_installer import log as logsetup


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[socket.socket]:
    """A bound datagram socket in tmp_path: what journald's /run/systemd/journal/socket is to the program."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "journal.sock"))
    sock.settimeout(5)
    yield sock
    sock.close()


def _path(sock: socket.socket) -> str:
    return str(sock.getsockname())


def parse_entry(data: bytes) -> list[tuple[str, bytes]]:
    """journald's side of the native protocol, written from systemd's description, independent of journal.py."""
    fields = []
    pos = 0
    while pos < len(data):
        end = data.index(b"\n", pos)
        line = data[pos:end]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            pos = end + 1
        else:  # NAME\n, 64-bit little endian length, the value, \n
            name = line
            (size,) = struct.unpack("<Q", data[end + 1 : end + 9])
            value = data[end + 9 : end + 9 + size]
            assert data[end + 9 + size : end + 10 + size] == b"\n"
            pos = end + 10 + size
        fields.append((name.decode("ascii"), value))
    return fields


def receive(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One datagram and the descriptors it carried (SCM_RIGHTS)."""
    data, ancillary, _flags, _addr = sock.recvmsg(1 << 20, socket.CMSG_SPACE(4 * 4))
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += array.array("i", payload[: len(payload) - len(payload) % 4]).tolist()
    return data, fds


def test_a_value_with_a_newline_is_sent_with_its_binary_length() -> None:
    """`NAME=value\\n` for a plain value; `NAME\\n`, the length as 64-bit little endian, the value, `\\n` otherwise."""
    data = journal.encode([("MESSAGE", "hello"), ("TRACEBACK", "line 1\nline 2\n"), ("EMPTY", "")])
    assert data == (
        b"MESSAGE=hello\n" + b"TRACEBACK\n" + (14).to_bytes(8, "little") + b"line 1\nline 2\n" + b"\n" + b"EMPTY=\n"
    )


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("artifact", "ARTIFACT"),
        ("duration_s", "DURATION_S"),
        ("rate-bytes.s", "RATE_BYTES_S"),
        ("_hidden", "HIDDEN"),
        ("message", "HARMONIC_MESSAGE"),
        ("priority", "HARMONIC_PRIORITY"),
        ("9lives", None),
        ("__", None),
    ],
)
def test_field_names_are_upper_case_and_never_journald_trusted_or_reserved(key: str, name: str | None) -> None:
    """journald accepts A-Z, 0-9 and '_' not starting with '_' or a digit; its own names are not overwritten."""
    assert journal.field_name(key) == name


def test_an_entry_reaches_the_socket_with_message_priority_identifier_and_fields(journald: socket.socket) -> None:
    """One datagram per entry: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, then the fields, multi-line values intact."""
    sink = journal.Journal(path=_path(journald))
    assert sink.send("download.verified artifact=a.deb", 6, [("STEP", "download"), ("DETAIL", "one\ntwo")])
    data, fds = receive(journald)
    assert fds == []
    assert parse_entry(data) == [
        ("MESSAGE", b"download.verified artifact=a.deb"),
        ("PRIORITY", b"6"),
        ("SYSLOG_IDENTIFIER", b"harmonic-install"),
        ("STEP", b"download"),
        ("DETAIL", b"one\ntwo"),
    ]
    sink.close()


def test_an_entry_too_large_for_a_datagram_goes_in_a_sealed_memfd(journald: socket.socket) -> None:
    """Beyond the socket's datagram limit: an empty datagram carrying a sealed memfd that holds the entry."""
    big = "x" * (4 << 20)  # well over any AF_UNIX datagram limit (net.core.wmem_max)
    sink = journal.Journal(path=_path(journald))
    assert sink.send("big", 7, [("OUTPUT", big + "\nend")])
    data, fds = receive(journald)
    assert data == b""
    assert len(fds) == 1
    try:
        seals = fcntl.fcntl(fds[0], fcntl.F_GET_SEALS)
        for seal in (fcntl.F_SEAL_SHRINK, fcntl.F_SEAL_GROW, fcntl.F_SEAL_WRITE, fcntl.F_SEAL_SEAL):
            assert seals & seal
        os.lseek(fds[0], 0, os.SEEK_SET)
        payload = b""
        while chunk := os.read(fds[0], 1 << 20):
            payload += chunk
    finally:
        os.close(fds[0])
    entry = dict(parse_entry(payload))
    assert entry["MESSAGE"] == b"big"
    assert entry["OUTPUT"] == big.encode() + b"\nend"


def test_an_unreachable_journal_is_turned_off_without_raising(tmp_path: Path) -> None:
    """No socket (not under systemd after all, journald gone): send says False, never raises, and stays off."""
    sink = journal.Journal(path=str(tmp_path / "missing.sock"))
    assert sink.send("one", 6, []) is False
    assert sink.ok is False
    assert sink.send("two", 6, []) is False


def test_a_journal_that_stops_reading_costs_at_most_the_timeout(journald: socket.socket) -> None:
    """journald not reading (its queue full): the send waits timeout_s, then the journal is off; nothing raises."""
    sink = journal.Journal(path=_path(journald), timeout_s=0.05)
    started = time.monotonic()
    sent = 0
    while sink.send("filler", 6, [("PAD", "p" * 1000)]):
        sent += 1
        assert sent < 100_000, "the queue never filled"
    assert sink.ok is False
    assert time.monotonic() - started < 5


def test_the_journal_stream_is_recognised_by_device_and_inode(tmp_path: Path) -> None:
    """$JOURNAL_STREAM names the log stream: entries replace its lines; names another fd: lines and entries."""
    with (tmp_path / "stream").open("w") as log_stream, (tmp_path / "other").open("w") as other:
        st = os.fstat(log_stream.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert journal.stream_is_journal(env, log_stream.fileno())
        assert not journal.stream_is_journal(env, other.fileno())
        sink = journal.for_process(env, log_stream, other_fds=(other.fileno(),))
        assert sink is not None
        assert sink.replaces_stream
        st_other = os.fstat(other.fileno())
        env_other = {"JOURNAL_STREAM": f"{st_other.st_dev}:{st_other.st_ino}"}
        sink = journal.for_process(env_other, log_stream, other_fds=(other.fileno(),))
        assert sink is not None
        assert not sink.replaces_stream
        for value in ("", "garbage", f"{st.st_dev}:", f"{st.st_dev}:0"):
            assert journal.for_process({"JOURNAL_STREAM": value}, log_stream, other_fds=(other.fileno(),)) is None
        assert journal.for_process({}, log_stream) is None
        assert journal.for_process(env, io.StringIO(), other_fds=(other.fileno(),)) is None


@pytest.mark.parametrize("replaces", [True, False])
def test_logged_events_reach_the_journal_with_their_fields(journald: socket.socket, replaces: bool) -> None:
    """Every event is an entry (STEP, ARTIFACT, ... upper-cased, EVENT its name); the stream gets the readable line
    unless it is the journal stream itself (no line twice in the journal)."""
    out = io.StringIO()
    sink = journal.Journal(path=_path(journald), replaces_stream=replaces)
    logsetup.configure(stream=out, sink=sink)
    log = structlog.get_logger()
    with structlog.contextvars.bound_contextvars(step="download"):
        log.info("download.verified", artifact="a.deb", size_bytes=1234, reused=False, source=None)
    log.warning("install.warning", warning="two\nlines")
    first = dict(parse_entry(receive(journald)[0]))
    assert first["MESSAGE"] == b"download download.verified artifact=a.deb size_bytes=1234 reused=false source=null"
    assert first["PRIORITY"] == b"6"
    assert first["SYSLOG_IDENTIFIER"] == b"harmonic-install"
    assert first["EVENT"] == b"download.verified"
    assert first["STEP"] == b"download"
    assert first["ARTIFACT"] == b"a.deb"
    assert first["SIZE_BYTES"] == b"1234"
    assert first["REUSED"] == b"false"
    assert "SOURCE" not in first  # None: no field
    second = dict(parse_entry(receive(journald)[0]))
    assert second["MESSAGE"] == b'install.warning warning="two\\nlines"'
    assert second["PRIORITY"] == b"4"
    assert second["WARNING"] == b"two\nlines"
    assert "STEP" not in second
    lines = out.getvalue().splitlines()
    if replaces:
        assert lines == []
    else:
        assert [logsetup.parse_line(line).message for line in lines] == ["download.verified", "install.warning"]


def test_the_line_is_written_when_the_journal_is_unreachable(tmp_path: Path) -> None:
    """The log stream is the journal stream but the socket is gone: every line still reaches the stream."""
    out = io.StringIO()
    sink = journal.Journal(path=str(tmp_path / "missing.sock"), replaces_stream=True)
    logsetup.configure(stream=out, sink=sink)
    structlog.get_logger().info("step.started", step="preflight", description="checks")
    structlog.get_logger().info("step.finished", step="preflight", status="ok")
    assert [logsetup.parse_line(line).message for line in out.getvalue().splitlines()] == [
        "step.started",
        "step.finished",
    ]
