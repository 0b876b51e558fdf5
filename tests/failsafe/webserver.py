"""A scriptable loopback web server for the host-level failsafe tests (stdlib only).

Serves a dict of files with strong ETags and Range support (for resume), and per-file knobs: extra
headers (a hostile Content-Disposition), no Content-Length (so only the disk can stop a download), and a
trickle rate (so a signal lands mid-download).
"""

from __future__ import annotations

import hashlib
import http.server
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class File:
    """One file on the server and how it is served."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    announce_length: bool = True
    # False: neither Content-Length nor the total in Content-Range ("bytes 0-99/*"): the size is learnt only at
    # the end (a disk too small is then found after the download, not from the headers).
    announce_size: bool = True
    rate: int | None = None  # bytes per second, or None for full speed


class Served(Protocol):
    """Where install_args points the installer: a Site, or a tests.support.faults.ScriptedServer."""

    @property
    def url(self) -> str: ...


@dataclass
class Site:
    """The files (by URL path) and the requests seen."""

    files: dict[str, File]
    url: str = ""
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Range header)
    posts: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)  # (path, headers, body)
    force_status: int | None = None  # answer every GET with this status (e.g. 407 as a proxy)


class _Handler(http.server.BaseHTTPRequestHandler):
    site: Site

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        self.site.posts.append((self.path, dict(self.headers.items()), body))
        self.send_error(500)

    def do_GET(self) -> None:
        self.site.requests.append((self.path, self.headers.get("Range", "")))
        if self.site.force_status is not None:
            self.send_response(self.site.force_status)
            if self.site.force_status == 407:
                self.send_header("Proxy-Authenticate", 'Basic realm="failsafe"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        served = self.site.files.get(self.path)
        if served is None:
            self.send_error(404)
            return
        body, start = served.body, 0
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes=") and self.headers.get("If-Range", etag) == etag:
            start = int(wanted[6:].split("-", 1)[0])
        if start >= len(body) and start:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            total = len(body) if served.announce_size else "*"
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{total}")
        if served.announce_length and served.announce_size:
            self.send_header("Content-Length", str(len(body) - start))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        for key, value in served.headers.items():
            self.send_header(key, value)
        self.end_headers()
        step = 16384 if served.rate else 1 << 20
        try:
            for i in range(start, len(body), step):
                self.wfile.write(body[i : i + step])
                self.wfile.flush()
                if served.rate:
                    time.sleep(step / served.rate)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if not (served.announce_length and served.announce_size):
            self.close_connection = True


@contextmanager
def serve(files: dict[str, File], *, tls: ssl.SSLContext | None = None) -> Iterator[Site]:
    """Serve `files` on 127.0.0.1 (a free port) for the block; the Site's url is the base URL."""
    site = Site(files)
    handler = type("Handler", (_Handler,), {"site": site})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    scheme = "https" if tls is not None else "http"
    site.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()


def sums(entries: dict[str, bytes]) -> bytes:
    """SHA256SUMS text for name -> content."""
    return "".join(f"{hashlib.sha256(v).hexdigest()}  {k}\n" for k, v in entries.items()).encode()


RELEASE = "release-9.9.9.0-1+failsafe"
ISO_NAME = f"APOLLO_PLATFORM-{RELEASE}.iso"
DEBS = ("a_1_all.deb", "b_1_all.deb")


def standard_files(iso: bytes, *, iso_file: File | None = None, iso_at: str = ISO_NAME) -> dict[str, File]:
    """Two small 'debs' and an ISO (at apollo/<iso_at>) with their SHA256SUMS."""
    debs = {name: f"not really a deb: {name}\n".encode() * 8 for name in DEBS}
    files = {f"/packages/{n}": File(b) for n, b in debs.items()}
    files["/packages/SHA256SUMS"] = File(sums(debs))
    files[f"/apollo/{iso_at}"] = iso_file or File(iso)
    files["/apollo/SHA256SUMS"] = File(sums({ISO_NAME: iso}))
    return files


def install_args(site: Served, disk: str, *, iso_at: str = ISO_NAME) -> list[str]:
    """`-i --no-reboot` against the site with the standard files and a disk."""
    return [
        "-i",
        "--no-reboot",
        "--server-url",
        site.url,
        "--packages",
        ",".join(DEBS),
        "--iso-path",
        f"apollo/{iso_at}",
        "--iso-release",
        RELEASE,
        "--disk",
        disk,
    ]
