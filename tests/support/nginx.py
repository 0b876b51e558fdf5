"""A real nginx (Debian's package) serving a directory on a loopback port, started per test or module."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Nginx:
    """A running nginx: its base URL, document root and log files."""

    url: str
    root: Path
    access_log: Path
    error_log: Path
    host: str
    port: int

    def requests(self) -> list[str]:
        """The request lines seen so far ("GET /packages/x.deb HTTP/1.1 200 ...")."""
        if not self.access_log.exists():
            return []
        return self.access_log.read_text().splitlines()


def _q(path: Path) -> str:
    """A path as one nginx config token (quoted: a checkout path may hold spaces, quotes or semicolons)."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextmanager
def serve(
    root: Path, *, host: str = "127.0.0.1", port: int | None = None, extra_http: str = "", extra_server: str = ""
) -> Iterator[Nginx]:
    """Run nginx in the foreground serving `root` on a free loopback port until the block exits.

    Args:
        root: the document root.
        host: loopback address to listen on.
        port: the port (default: a free one).
        extra_http: directives added to the http block.
        extra_server: directives added to the server block (locations, limit_rate, ...).
    """
    if not Path(NGINX).exists():
        raise RuntimeError("nginx is not installed: run scripts/bootstrap.sh")
    port = port or free_port(host)
    work = root.parent / f".nginx-{port}"
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    access, error = work / "access.log", work / "error.log"
    user = "user root;" if os.geteuid() == 0 else ""
    conf = work / "nginx.conf"
    tmp = _q(work / "tmp")
    conf.write_text(
        f"""
{user}
daemon off;
worker_processes 1;
pid {_q(work / "nginx.pid")};
error_log {_q(error)} info;
events {{ worker_connections 1024; }}
http {{
    types {{ application/octet-stream iso deb; text/plain txt; }}
    default_type application/octet-stream;
    access_log {_q(access)} combined;
    client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
    uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
    sendfile on;
    absolute_redirect off;
    {extra_http}
    server {{
        listen {host}:{port};
        root {_q(root)};
        {extra_server}
    }}
}}
"""
    )
    proc = subprocess.Popen([NGINX, "-p", str(work), "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"nginx exited at start-up: {err}")
            try:
                with socket.create_connection((host, port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not start listening within 10 s") from None
                time.sleep(0.05)
        yield Nginx(f"http://{host}:{port}", root, access, error, host, port)
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
