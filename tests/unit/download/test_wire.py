"""download/wire.py and follow.py against a raw loopback socket server: the fast body path and its fallbacks."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from harmonic_installer.download.follow import Follower
from harmonic_installer.download.wire import body_chunks

BODY = os.urandom(3 * 1024 * 1024 + 12345)  # several receive buffers and an odd tail

Script = Callable[[socket.socket], None]


class RawServer:
    """Answers each connection on 127.0.0.1 with the next script (the request is read and ignored)."""

    def __init__(self, *scripts: Script) -> None:
        self._scripts = list(scripts)
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/apollo.iso"
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._scripts:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            script = self._scripts.pop(0)
            with conn:
                conn.recv(65536)
                script(conn)

    def close(self) -> None:
        self._sock.close()


def fixed(body: bytes, *, announce: int | None = None, stall: float = 0.0, reset: bool = False) -> Script:
    """A 200 with a Content-Length; the body may be cut short, stall before its end, or end in a TCP reset."""

    def script(conn: socket.socket) -> None:
        length = len(body) if announce is None else announce
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode() + body)
        if stall:
            time.sleep(stall)
        if reset:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    return script


def chunked(body: bytes) -> Script:
    """A 200 in chunked transfer coding."""

    def script(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(body), 100_000):
            part = body[i : i + 100_000]
            conn.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        conn.sendall(b"0\r\n\r\n")

    return script


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(*scripts: Script) -> RawServer:
        servers.append(RawServer(*scripts))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def fetch(client: httpx.Client, url: str, *, read_timeout_s: float = 5.0) -> tuple[bytes, set[type]]:
    """The body through body_chunks, and the types of the chunks it yielded."""
    with client.stream("GET", url) as resp:
        got, kinds = bytearray(), set()
        for chunk in body_chunks(resp, read_timeout_s=read_timeout_s):
            got += chunk
            kinds.add(type(chunk))
        return bytes(got), kinds


def test_plain_fixed_length_body_is_read_from_the_socket(serve: Callable[..., RawServer]) -> None:
    """A plain HTTP/1.1 body with a Content-Length arrives whole, through the reused buffer (memoryviews)."""
    srv = serve(fixed(BODY))
    with httpx.Client() as client:
        got, kinds = fetch(client, srv.url)
    assert got == BODY
    assert memoryview in kinds


def test_chunked_body_goes_through_httpx(serve: Callable[..., RawServer]) -> None:
    """A chunked body is left to httpx (its transfer coding is undone there): same bytes, no direct reads."""
    srv = serve(chunked(BODY))
    with httpx.Client() as client:
        got, kinds = fetch(client, srv.url)
    assert got == BODY
    assert memoryview not in kinds


def test_injected_transport_goes_through_httpx() -> None:
    """A response with no socket behind it (an injected transport) is read with iter_raw."""
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=iter([BODY[:5], BODY[5:]])))
    with httpx.Client(transport=transport) as client:
        got, kinds = fetch(client, "http://127.0.0.1:9/apollo.iso")
    assert got == BODY
    assert kinds == {bytes}


def test_connection_is_not_reused_after_a_direct_read(serve: Callable[..., RawServer]) -> None:
    """After a direct read the client opens a new connection for the next request, and both bodies are right."""
    srv = serve(fixed(BODY), fixed(BODY[:1000]))
    with httpx.Client() as client:
        assert fetch(client, srv.url)[0] == BODY
        assert fetch(client, srv.url)[0] == BODY[:1000]
    assert srv.connections == 2


def test_cut_off_body_raises_what_httpx_raises(serve: Callable[..., RawServer]) -> None:
    """A body cut short raises RemoteProtocolError with h11's own words, as the general path does."""
    srv = serve(fixed(BODY[:2_000_000], announce=len(BODY)), fixed(BODY[:2_000_000], announce=len(BODY)))
    with httpx.Client() as client:
        with pytest.raises(httpx.RemoteProtocolError) as direct:
            fetch(client, srv.url)
        with client.stream("GET", srv.url) as resp, pytest.raises(httpx.RemoteProtocolError) as general:
            b"".join(resp.iter_raw())
    assert str(direct.value) == str(general.value)
    assert "(received 2000000 bytes, expected" in str(direct.value)


def test_silent_server_raises_read_timeout(serve: Callable[..., RawServer]) -> None:
    """A server that stops sending mid-body raises ReadTimeout after the read timeout, not at its leisure."""
    srv = serve(fixed(BODY[:1_500_000], announce=len(BODY), stall=3.0))
    started = time.monotonic()
    with httpx.Client() as client, pytest.raises(httpx.ReadTimeout, match=r"no data for 0\.4 s"):
        fetch(client, srv.url, read_timeout_s=0.4)
    assert time.monotonic() - started < 2.5


def test_reset_connection_raises_read_error(serve: Callable[..., RawServer]) -> None:
    """A TCP reset mid-body raises httpx.ReadError (a transport error the retry policy knows)."""
    srv = serve(fixed(BODY[:1_500_000], announce=len(BODY), stall=0.3, reset=True))
    with httpx.Client() as client, pytest.raises(httpx.ReadError):
        fetch(client, srv.url)


def test_follower_hashes_exactly_what_was_written(tmp_path: Path) -> None:
    """The follower's digest is the digest of the bytes written after `start`, fed to a hasher holding the prefix."""
    path = tmp_path / "f"
    prefix, rest = BODY[:777], BODY[777:]
    path.write_bytes(prefix)
    hasher = hashlib.sha256(prefix)
    fd = os.open(path, os.O_RDWR)
    try:
        os.lseek(fd, len(prefix), os.SEEK_SET)
        with Follower(fd, len(prefix), hasher, block=65536) as follower:
            for i in range(0, len(rest), 300_001):
                n = os.write(fd, rest[i : i + 300_001])
                follower.advance(n)
    finally:
        os.close(fd)
    assert hasher.hexdigest() == hashlib.sha256(BODY).hexdigest()


def test_follower_reports_a_file_shorter_than_announced(tmp_path: Path) -> None:
    """Bytes announced but not in the file make close() raise OSError (a digest of less is never returned)."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    fd = os.open(path, os.O_RDONLY)
    try:
        follower = Follower(fd, 0, hashlib.sha256())
        follower.advance(2000)
        with pytest.raises(OSError, match="ended at 1000 bytes while 2000 were written"):
            follower.close()
    finally:
        os.close(fd)
