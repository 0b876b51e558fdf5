"""A TCP relay that tells the client late that the server closed: the stale keep-alive of issue 12.

Each accepted connection gets its own upstream connection (as QEMU's user networking and many load balancers
do). When the upstream closes, the client's side is closed only `close_delay` seconds later; a request the
client sends in between is swallowed, so it sees "Server disconnected without sending a response". With
`drop_connection_close`, `Connection: close` is removed from each response head, so the client believes the
connection may be reused (tinyproxy 1.11 closes without that header of its own). `close_after_response`
closes the upstream after each complete response (a server with keep-alive off). Responses are delimited by
Content-Length (GET only); a response without one is relayed until the upstream closes. Loopback only.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

_CONNECTION_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close[ \t]*(?=\r\n)", re.IGNORECASE)
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class ClosingRelay:
    """Listens on 127.0.0.1 and relays to `upstream`, delaying every close the upstream makes."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        close_delay: float = 0.5,
        drop_connection_close: bool = False,
        close_after_response: bool = False,
    ) -> None:
        self.upstream = upstream
        self.close_delay = close_delay
        self.drop_connection_close = drop_connection_close
        self.close_after_response = close_after_response
        self.accepted = 0  # client connections accepted
        self.swallowed = 0  # client sends received after the upstream had closed
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port>"""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ClosingRelay:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with suppress(OSError):
            self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, client: socket.socket) -> None:
        upstream_closed = threading.Event()
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            client.close()
            return
        forward = threading.Thread(target=self._client_to_upstream, args=(client, upstream, upstream_closed))
        forward.daemon = True
        forward.start()
        try:
            self._upstream_to_client(upstream, client)
        finally:
            upstream_closed.set()
            with suppress(OSError):
                upstream.close()
            time.sleep(self.close_delay)  # the close reaches the client late
            with suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()
            forward.join(timeout=5)

    def _client_to_upstream(self, client: socket.socket, upstream: socket.socket, closed: threading.Event) -> None:
        client.settimeout(0.05)
        while not self._stop.is_set():
            try:
                data = client.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                with suppress(OSError):
                    upstream.shutdown(socket.SHUT_WR)
                return
            if closed.is_set():
                with self._lock:
                    self.swallowed += 1
                continue
            try:
                upstream.sendall(data)
            except OSError:
                with self._lock:
                    self.swallowed += 1

    def _upstream_to_client(self, upstream: socket.socket, client: socket.socket) -> None:
        buf = b""
        while not self._stop.is_set():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                data = upstream.recv(65536)
                if not data:
                    if buf:
                        client.sendall(buf)
                    return
                buf += data
                continue
            head, buf = buf[: end + 4], buf[end + 4 :]
            if self.drop_connection_close:
                head = _CONNECTION_CLOSE.sub(b"", head)
            client.sendall(head)
            length = _CONTENT_LENGTH.search(head)
            if length is None:  # delimited by the close: relay everything
                client.sendall(buf)
                while data := upstream.recv(65536):
                    client.sendall(data)
                return
            remaining = int(length.group(1))
            while remaining > 0:
                if not buf:
                    buf = upstream.recv(65536)
                    if not buf:
                        return
                part, buf = buf[:remaining], buf[remaining:]
                client.sendall(part)
                remaining -= len(part)
            if self.close_after_response:
                return


@contextmanager
def closing_relay(upstream: tuple[str, int], **kw: object) -> Iterator[ClosingRelay]:
    """Run a ClosingRelay until the block exits (keywords as for ClosingRelay)."""
    with ClosingRelay(upstream, **kw) as relay:  # type: ignore[arg-type]  # **kw passed through unchecked
        yield relay
