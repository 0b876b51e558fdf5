"""Resume efficiency: bytes on the wire / file size when a 1 GiB download is cut 10 times.

nginx (no keep-alive, so every request is its own connection) sits behind the fault-injecting TCP proxy of
tests/support/faults.py. Every connection is planned to be cut after size/11 body bytes of its
response: the ISO's first GET, the SHA256SUMS GET (made once the ISO's headers are in; too small to be
cut), then 9 resumed GETs, so the ISO body is cut 10 times (at 1/11, 2/11, ... of the file); the 12th
connection passes. The proxy counts every byte it forwards to the client (headers
included); the download runs in a fresh process with production settings except download.backoff_max_s
(shorter waits: the ratio does not depend on them). 10 cuts need 11 attempts: the default
download.attempts is 12 (it was 8, which gave up).
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass
from typing import Any

from tests.bench.bench_lib import ISO_NAME, REPO, WORK, GiB, MiB, empty_dir, log, run_measured, tmpfs, warm
from tests.bench.bench_throughput import VENV_PY, web_root
from tests.support.faults import Fault, FaultProxy
from tests.support.nginx import serve


class _CountedSocket:
    """A socket whose sendall() adds to the proxy's byte count."""

    def __init__(self, sock: socket.socket, proxy: CountingProxy) -> None:
        self._sock = sock
        self._proxy = proxy

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)
        with self._proxy.count_lock:
            self._proxy.bytes_to_client += len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class CountingProxy(FaultProxy):
    """FaultProxy that counts the bytes it forwards to the client (what the agent's NIC would see)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.count_lock = threading.Lock()
        self.bytes_to_client = 0

    def _respond(self, upstream: socket.socket, client: socket.socket, fault: Fault) -> None:
        # _CountedSocket stands in for the socket (sendall counted, the rest delegated), not a socket subclass.
        super()._respond(upstream, _CountedSocket(client, self), fault)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ResumeRun:
    size: int
    cuts: int
    cuts_applied: int
    wire_bytes: int
    ratio: float
    body_bytes_client: int
    wall_s: float
    cpu_s: float
    maxrss_kib: int
    ok: bool


def measure(size: int = GiB, cuts: int = 10, runs: int = 3) -> list[ResumeRun]:
    """`runs` downloads of `size` bytes with `cuts` cuts each (plus one uncut baseline run first)."""
    root, digest = web_root(size)
    warm(root / "apollo" / ISO_NAME)
    results: list[ResumeRun] = []
    with (
        tmpfs(WORK / "isodir", size + 512 * MiB) as iso_dir,
        serve(root, extra_http="keepalive_timeout 0;") as web,
    ):
        for run in range(runs + 1):
            n = 0 if run == 0 else cuts
            step = size // (n + 1)
            plan = [Fault("cut", after=step) for _ in range(n + 1)] if n else []
            empty_dir(iso_dir)
            with CountingProxy(web.host, web.port, plan) as proxy:
                m = run_measured(
                    [
                        VENV_PY,
                        "-m",
                        "tests.bench.bench_fetch",
                        proxy.url,
                        str(iso_dir),
                        "download.backoff_max_s=1",
                    ],
                    cwd=REPO,
                )
            ok = m.returncode == 0
            art = json.loads(m.stdout.strip().splitlines()[-1]) if ok else {}
            ok = ok and art.get("sha256") == digest
            applied = proxy.connections - 2  # minus the SHA256SUMS GET and the final, uncut GET
            r = ResumeRun(
                size,
                n,
                applied,
                proxy.bytes_to_client,
                proxy.bytes_to_client / size,
                int(art.get("bytes_transferred", 0)),
                m.wall_s,
                m.user_s + m.sys_s,
                m.maxrss_kib,
                ok,
            )
            results.append(r)
            log(
                f"resume {size / GiB:.2f} GiB cuts={n} connections={proxy.connections} wire={r.wire_bytes} "
                f"ratio={r.ratio:.6f} {m.wall_s:.1f} s {'ok' if ok else 'FAILED ' + m.stderr[-400:]}"
            )
        empty_dir(iso_dir)
    return results


if __name__ == "__main__":
    for r in measure(runs=1):
        print(r)
