"""Network faults on demand: a scripted stdlib HTTP server and a TCP proxy that breaks a real server's answers.

`ScriptedServer` serves files with real Range/If-Range semantics and, per path, a script of replies that
nginx cannot produce (503 bursts with Retry-After, an HTML page with status 200, hostile Content-Disposition,
cut or trickled bodies). `FaultProxy` sits in front of nginx and applies one fault per accepted connection
(cut, reset, stall, corrupt, rewrite the headers), counting bytes from the start of the response body.
Both listen on 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import re
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

# ---------------------------------------------------------------------------------------------------------
# Scripted HTTP server.


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer; fields left at their defaults behave like a correct static file server."""

    status: int | None = None  # None: what the file server would answer (200/206/416)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # None: the file's bytes (the requested range of them)
    content_length: int | None = None  # announce this length instead of the real one
    cut_after: int | None = None  # close the connection after this many body bytes
    trickle: tuple[int, float] | None = None  # (bytes per write, seconds between writes)
    ignore_range: bool = False  # answer 200 with the whole file even to a Range request


@dataclass(frozen=True, slots=True)
class Seen:
    """A request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]


@dataclass(slots=True)
class _File:
    content: bytes
    etag: str | None
    last_modified: str | None
    script: list[Reply]


class _QuietServer(ThreadingHTTPServer):
    """Clients hanging up mid-answer are expected here, not worth a traceback."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class ScriptedServer:
    """A threaded stdlib HTTP/1.1 server on a loopback port; use `with ScriptedServer() as srv:`."""

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self._files: dict[str, _File] = {}
        self._lock = threading.Lock()
        self.requests: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                server._handle(self, head=True)

            def do_GET(self) -> None:
                server._handle(self, head=False)

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self.port = int(self._httpd.server_address[1])
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def add(
        self,
        path: str,
        content: bytes,
        *,
        script: list[Reply] | None = None,
        etag: bool = True,
        last_modified: bool = True,
    ) -> str:
        """Serve `content` at `path` (after the scripted replies are used up); returns the full URL."""
        self._files[path] = _File(
            content,
            f'"{hashlib.sha256(content).hexdigest()[:16]}"' if etag else None,
            formatdate(1_700_000_000, usegmt=True) if last_modified else None,
            list(script or []),
        )
        return self.url + path

    def script(self, path: str, *replies: Reply) -> None:
        """Queue more scripted replies for `path`."""
        with self._lock:
            self._files[path].script.extend(replies)

    def hits(self, path: str) -> list[Seen]:
        """The requests seen for `path`."""
        return [r for r in self.requests if r.path == path]

    def _handle(self, h: BaseHTTPRequestHandler, *, head: bool) -> None:
        path = h.path.split("?", 1)[0]
        if path.startswith("http://"):  # absolute form: we are being used as a proxy
            path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
        with self._lock:
            self.requests.append(Seen(h.command, h.path, {k.lower(): v for k, v in h.headers.items()}))
            f = self._files.get(path)
            reply = f.script.pop(0) if f is not None and f.script else Reply()
        if f is None:
            self._send(h, Reply(status=404, body=b"not found\n"), head=head, content=b"")
            return
        self._send(h, reply, head=head, content=f.content, file=f)

    def _send(
        self, h: BaseHTTPRequestHandler, reply: Reply, *, head: bool, content: bytes, file: _File | None = None
    ) -> None:
        status, body, headers = reply.status, reply.body, dict(reply.headers)
        if file is not None and file.etag:
            headers.setdefault("ETag", file.etag)
        if file is not None and file.last_modified:
            headers.setdefault("Last-Modified", file.last_modified)
        if body is None:
            status, body, extra = self._ranged(h, content, file, reply.ignore_range, status)
            for k, v in extra.items():
                headers.setdefault(k, v)
        status = status or 200
        h.send_response_only(status)
        headers.setdefault("Date", h.date_time_string())
        headers.setdefault("Content-Type", "application/octet-stream")
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(reply.content_length if reply.content_length is not None else len(body)))
        h.end_headers()
        if head:
            return
        if reply.cut_after is not None:
            body = body[: reply.cut_after]
        try:
            if reply.trickle is not None:
                step, pause = reply.trickle
                for i in range(0, len(body), step):
                    h.wfile.write(body[i : i + step])
                    h.wfile.flush()
                    time.sleep(pause)
            else:
                h.wfile.write(body)
                h.wfile.flush()
        except OSError:
            return
        if reply.cut_after is not None or (reply.content_length is not None and reply.content_length != len(body)):
            h.close_connection = True
            with suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _ranged(
        h: BaseHTTPRequestHandler, content: bytes, file: _File | None, ignore_range: bool, status: int | None
    ) -> tuple[int, bytes, dict[str, str]]:
        rng = h.headers.get("Range")
        if_range = h.headers.get("If-Range")
        validators = {v for v in (file.etag, file.last_modified) if v} if file else set()
        if ignore_range or not rng or (if_range is not None and if_range not in validators):
            return status or 200, content, {}
        m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
        if not m:
            return status or 200, content, {}
        start = int(m.group(1))
        if start >= len(content):
            return status or 416, b"", {"Content-Range": f"bytes */{len(content)}"}
        return (
            status or 206,
            content[start:],
            {"Content-Range": f"bytes {start}-{len(content) - 1}/{len(content)}"},
        )


# ---------------------------------------------------------------------------------------------------------
# TCP fault proxy.


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do to one connection's response, counting bytes after the header block of its first response.

    kind: "cut" (close after `after` body bytes), "reset" (TCP RST after `after` bytes), "stall" (stop
    forwarding after `after` bytes for `seconds`, then close), "corrupt" (flip the byte at body offset
    `after`), "rewrite" (apply `headers` to the first response's header block), "pass" (no fault).
    """

    kind: str
    after: int = 0
    seconds: float = 0.0
    headers: Callable[[bytes], bytes] | None = None


_Proxy = TypeVar("_Proxy", bound="FaultProxy")


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of `upstream`; each new connection takes the next planned Fault."""

    def __init__(self, upstream_host: str, upstream_port: int, plan: list[Fault] | None = None) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._plan = list(plan or [])
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(32)
        self.port = int(self._sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.applied: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def plan(self, *faults: Fault) -> None:
        """Queue faults for the next connections."""
        with self._lock:
            self._plan.extend(faults)

    def __enter__(self: _Proxy) -> _Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                fault = self._plan.pop(0) if self._plan else Fault("pass")
                self.connections += 1
                self.applied.append(fault.kind)
            threading.Thread(target=self._serve, args=(client, fault), daemon=True).start()

    def _serve(self, client: socket.socket, fault: Fault) -> None:
        try:
            upstream = socket.create_connection(self._upstream, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        done = threading.Event()
        pump = threading.Thread(target=_pump, args=(client, upstream, done), daemon=True)
        pump.start()
        try:
            self._respond(upstream, client, fault)
        except OSError:
            pass
        finally:
            done.set()
            pump.join(timeout=1)
            with suppress(OSError):
                upstream.shutdown(socket.SHUT_RDWR)
            for s in (client, upstream):
                with suppress(OSError):
                    s.close()

    def _respond(self, upstream: socket.socket, client: socket.socket, fault: Fault) -> None:
        for chunk in _body_positions(upstream, fault):
            data, start = chunk
            if fault.kind in ("cut", "reset", "stall") and start is not None and start + len(data) > fault.after:
                keep = max(fault.after - start, 0)
                client.sendall(data[:keep])
                if fault.kind == "reset":
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif fault.kind == "stall":
                    self._stop.wait(fault.seconds)
                    client.shutdown(socket.SHUT_RDWR)
                return
            if fault.kind == "corrupt" and start is not None and start <= fault.after < start + len(data):
                i = fault.after - start
                data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
            client.sendall(data)


def _pump(src: socket.socket, dst: socket.socket, done: threading.Event) -> None:
    try:
        while not done.is_set():
            if not select.select([src], [], [], 0.02)[0]:
                continue
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass


def _body_positions(upstream: socket.socket, fault: Fault) -> Iterator[tuple[bytes, int | None]]:
    """Yield (bytes, body offset of its first byte or None inside the header block) from upstream."""
    pending = b""
    in_headers = True
    body_pos = 0
    while True:
        data = upstream.recv(65536)
        if not data:
            if pending:
                yield pending, None
            return
        if in_headers:
            pending += data
            end = pending.find(b"\r\n\r\n")
            if end < 0:
                continue
            head, rest = pending[: end + 4], pending[end + 4 :]
            if fault.kind == "rewrite" and fault.headers is not None:
                head = fault.headers(head)
            in_headers = False
            pending = b""
            yield head, None
            if rest:
                yield rest, 0
                body_pos = len(rest)
            continue
        yield data, body_pos
        body_pos += len(data)


def content_length_plus(delta: int) -> Callable[[bytes], bytes]:
    """A header rewrite that announces `delta` more (or fewer) bytes than the server sends."""

    def rewrite(head: bytes) -> bytes:
        return re.sub(
            rb"(?im)^(Content-Length:\s*)(\d+)", lambda m: m.group(1) + str(int(m.group(2)) + delta).encode(), head
        )

    return rewrite


@contextmanager
def scripted() -> Iterator[ScriptedServer]:
    """A started ScriptedServer."""
    with ScriptedServer() as srv:
        yield srv
