"""A real HTTP proxy (Debian's tinyproxy) on a loopback port that forwards only to allowed loopback hosts.

A proxy forwards to whatever host its client names; to keep the guest's traffic on loopback it may forward
only to the hosts in `allow` (`FilterDefaultDeny`), e.g. the web server on 127.0.0.2, which the guest cannot
reach otherwise (inside the guest 127.0.0.2 is its own loopback).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.nginx import free_port

TINYPROXY = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
_REQUEST = re.compile(r"Request \(file descriptor \d+\): (?P<line>\S+ \S+ HTTP/[\d.]+)")


@dataclass(frozen=True, slots=True)
class Proxy:
    """A running tinyproxy: where it listens and its log."""

    host: str
    port: int
    log: Path

    @property
    def url(self) -> str:
        """http://host:port"""
        return f"http://{self.host}:{self.port}"

    def requests(self) -> list[str]:
        """Request lines the proxy handled ('GET http://127.0.0.2:8080/packages/x.deb HTTP/1.1')."""
        if not self.log.exists():
            return []
        return [m["line"] for m in _REQUEST.finditer(self.log.read_text(errors="replace"))]


@contextmanager
def tinyproxy(
    workdir: Path,
    *,
    allow: Sequence[str] = ("127.0.0.2",),
    host: str = "127.0.0.1",
    basic_auth: tuple[str, str] | None = None,
) -> Iterator[Proxy]:
    """Run tinyproxy in the foreground on a free loopback port until the block exits (basic_auth: user, password)."""
    if not Path(TINYPROXY).exists():
        raise RuntimeError("tinyproxy is not installed: run scripts/bootstrap.sh")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port(host)
    log = workdir / "tinyproxy.log"
    filter_file = workdir / "tinyproxy.filter"
    filter_file.write_text("".join(f"^{re.escape(h)}$\n" for h in allow))
    conf = workdir / "tinyproxy.conf"
    conf.write_text(
        f"Port {port}\nListen {host}\nTimeout 120\nMaxClients 20\n"
        f'LogFile "{log}"\nLogLevel Info\nAllow 127.0.0.0/8\n'
        f'FilterDefaultDeny Yes\nFilter "{filter_file}"\nFilterURLs No\nFilterType ere\nDisableViaHeader Yes\n'
        + (f"BasicAuth {basic_auth[0]} {basic_auth[1]}\n" if basic_auth else "")
    )
    with (workdir / "tinyproxy.stderr").open("wb") as err:
        proc = subprocess.Popen([TINYPROXY, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"tinyproxy exited at start-up: {(workdir / 'tinyproxy.stderr').read_text()}")
            try:
                with socket.create_connection((host, port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("tinyproxy did not listen within 10 s") from None
                time.sleep(0.05)
        yield Proxy(host, port, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
