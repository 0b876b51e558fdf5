"""Fleet: N agents fetch one file at once from one rate-capped nginx that goes down for 30 s mid-transfer.

Each agent is a thread running the production download path (`Downloader.fetch` with the policy built from
the default settings: 8 attempts, full-jitter exponential backoff up to 60 s, Retry-After honoured) on its own
ArtifactSpec (`?agent=<i>` in the URLs tags its requests in nginx's access log; nginx ignores the query).
Timeline, from the moment every agent has started:

    0 .. out_at           nginx serves, `limit_rate` = total_rate / N per connection (so never more than
                          total_rate in all)
    out_at                nginx is killed (SIGTERM: fast shutdown, every transfer is cut) and an nginx that
                          answers everything with 503 + Retry-After starts on the same port
    out_at + t503         that one is killed too: connections are refused
    out_at + t503 + tref  the normal nginx is back

`--jitter off` replaces the policy's wait (download.policy._Wait) with the same exponential backoff and the same
Retry-After cap but no randomness (a bench-only monkeypatch; production has no such switch).
Run one scenario per process: `python -m tests.bench.bench_fleet --agents 200 --jitter on`; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.bench.bench_lib import WORK, MiB, make_file, write_sums
from tests.support.nginx import NGINX, free_port

RETRY_AFTER_S = 10


@dataclass(slots=True)
class Agent:
    index: int
    ok: bool = False
    error: str = ""
    started: float = 0.0
    finished: float = 0.0
    bytes_transferred: int = 0
    retries: int = 0


@dataclass(slots=True)
class FleetResult:
    agents: int
    jitter: bool
    file_size: int
    total_rate: int
    outage: dict[str, float]
    completed: int
    verified: int
    failed: list[str]
    retries_per_agent: dict[str, float]
    requests_total: int
    peak_rps_recovery: int
    peak_rps_recovery_at_s: float
    peak_100ms_recovery: int
    peak_rps_overall: int
    rps_series: list[int] = field(default_factory=list)
    body_bytes_client: int = 0
    bytes_sent_server: int = 0
    ideal_bytes: int = 0
    bytes_ratio: float = 0.0
    wall_s: float = 0.0
    last_finish_s: float = 0.0


class Server:
    """One nginx on a fixed loopback port that can be switched between serving, 503 and gone."""

    def __init__(self, root: Path, work: Path, per_conn_rate: int) -> None:
        self.root = root
        self.work = work
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.access_log = work / "access.log"
        self.per_conn_rate = per_conn_rate
        self.proc: subprocess.Popen[bytes] | None = None

    def _conf(self, mode: str) -> Path:
        body = (
            f"limit_rate {self.per_conn_rate}; root {self.root};"
            if mode == "serve"
            else f"location / {{ add_header Retry-After {RETRY_AFTER_S} always; return 503; }}"
        )
        d = self.work / mode
        (d / "tmp").mkdir(parents=True, exist_ok=True)
        conf = d / "nginx.conf"
        conf.write_text(
            f"""
user root; daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    types {{ application/octet-stream bin; text/plain txt; }}
    default_type application/octet-stream;
    log_format fleet '$msec $request_time $status $bytes_sent $body_bytes_sent $request_uri';
    access_log {self.access_log} fleet;
    client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
    sendfile on; keepalive_requests 10000;
    server {{ listen 127.0.0.1:{self.port} reuseport backlog=4096; {body} }}
}}
"""
        )
        return conf

    def start(self, mode: str) -> None:
        conf = self._conf(mode)
        self.proc = subprocess.Popen([NGINX, "-p", str(conf.parent), "-c", str(conf)], stderr=subprocess.DEVNULL)
        import socket

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"nginx ({mode}) did not start")

    def kill(self) -> None:
        """Fast shutdown: open connections are closed at once."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def _no_jitter() -> None:
    """Bench-only: the policy's wait without randomness (same exponential steps, Retry-After exactly)."""
    import tenacity

    from harmonic_installer.download import policy

    class NoJitterWait(policy._Wait):
        def __init__(self, initial: float, maximum: float, retry_after_max: float) -> None:
            super().__init__(initial, maximum, retry_after_max)
            # bench-only: the policy's jittered wait swapped for the plain exponential one
            self._backoff = tenacity.wait_exponential(multiplier=initial, max=maximum)  # type: ignore[assignment]

        def __call__(self, retry_state: tenacity.RetryCallState) -> float:
            exc = retry_state.outcome.exception() if retry_state.outcome else None
            if isinstance(exc, policy.Transient) and exc.retry_after is not None:
                return min(exc.retry_after, self._retry_after_max)
            return float(self._backoff(retry_state))

    policy._Wait = NoJitterWait  # type: ignore[misc]  # bench-only: monkeypatched class


def _capture_retries(counts: Counter[str], lock: threading.Lock) -> None:
    """Count download.retry_scheduled per agent (from the ?agent= tag of the URL) and drop every event."""
    import structlog
    from structlog.typing import EventDict, WrappedLogger

    def record(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
        if event.get("event") == "download.retry_scheduled":
            url = str(event.get("url", ""))
            agent = parse_qs(urlsplit(url).query).get("agent", [str(event.get("artifact", "?"))])[0]
            with lock:
                counts[agent] += 1
        raise structlog.DropEvent

    structlog.configure(processors=[structlog.contextvars.merge_contextvars, record])


def run(
    agents: int,
    jitter: bool,
    total_rate: int,
    transfer_s: float,
    out_at: float,
    t503: float,
    tref: float,
    timeout_s: float,
) -> FleetResult:
    from harmonic_installer import config
    from harmonic_installer.download import ArtifactSpec, Downloader, DownloadPolicy
    from harmonic_installer.proxy import ProxyConfig

    if not jitter:
        _no_jitter()
    counts: Counter[str] = Counter()
    _capture_retries(counts, threading.Lock())

    size = max(1 * MiB, int(total_rate * transfer_s / agents) // 4096 * 4096)
    work = WORK / f"fleet-{agents}-{'j' if jitter else 'nj'}"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    root = work / "www"
    digest = make_file(root / "fleet" / "agent.bin", size, seed=11)
    write_sums(root / "fleet", {"agent.bin": digest})
    dest = work / "agents"
    server = Server(root, work, max(1, total_rate // agents))
    server.start("serve")
    policy = DownloadPolicy.from_settings(config.load(flags={}, environ={}, config_file=None))
    direct = ProxyConfig(enabled=False, url=None, no_proxy=())
    states = [Agent(i) for i in range(agents)]
    gate = threading.Barrier(agents + 1)

    def agent(st: Agent) -> None:
        spec = ArtifactSpec(
            url=f"{server.url}/fleet/agent.bin?agent={st.index}",
            dest_dir=dest / f"a{st.index:03d}",
            filename="agent.bin",
            sums_url=f"{server.url}/fleet/SHA256SUMS?agent={st.index}",
            label=f"agent-{st.index}",
        )
        dl = Downloader(policy, direct)
        dl._pool.client(spec.url)  # build the HTTP client (and its SSL context, ~30 ms of CPU) before the clock starts
        gate.wait()
        st.started = time.monotonic()
        try:
            with dl:
                art = dl.fetch(spec)
            st.ok = art.sha256 == digest
            st.bytes_transferred = art.bytes_transferred
        except Exception as exc:  # recorded and reported
            st.error = f"{type(exc).__name__}: {exc}"[:300]
        st.finished = time.monotonic()

    threads = [threading.Thread(target=agent, args=(st,), daemon=True) for st in states]
    for t in threads:
        t.start()
    gate.wait()
    t0_mono, t0_epoch = time.monotonic(), time.time()
    outage = {"down_at_s": out_at, "refused_at_s": out_at + t503, "back_at_s": out_at + t503 + tref}
    try:
        _sleep_until(t0_mono + out_at)
        server.kill()
        server.start("503")
        _sleep_until(t0_mono + out_at + t503)
        server.kill()
        _sleep_until(t0_mono + out_at + t503 + tref)
        server.start("serve")
        deadline = t0_mono + timeout_s
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        wall = time.monotonic() - t0_mono
    finally:
        server.kill()
    return _summarize(
        states, counts, server.access_log, t0_epoch, outage, agents, jitter, size, total_rate, wall, t0_mono
    )


def _sleep_until(when: float) -> None:
    while (left := when - time.monotonic()) > 0:
        time.sleep(min(left, 0.05))


def _summarize(
    states: list[Agent],
    counts: Counter[str],
    access_log: Path,
    t0_epoch: float,
    outage: dict[str, float],
    agents: int,
    jitter: bool,
    size: int,
    total_rate: int,
    wall: float,
    t0_mono: float,
) -> FleetResult:
    times: list[float] = []
    sent = 0
    for line in access_log.read_text().splitlines():
        parts = line.split()
        if len(parts) < 6:
            continue
        times.append(float(parts[0]) - float(parts[1]) - t0_epoch)  # $msec is when the request ended
        sent += int(parts[3])
    times.sort()
    horizon = int(max(times, default=0)) + 1
    series = [0] * (horizon + 1)
    for t in times:
        series[max(0, int(t))] += 1
    back = outage["back_at_s"]
    rec = [t for t in times if t >= back]
    peak_rec, peak_at = 0, 0.0
    j = 0
    for i, t in enumerate(rec):  # max requests within any 1 s window during recovery
        while rec[j] < t - 1.0:
            j += 1
        if i - j + 1 > peak_rec:
            peak_rec, peak_at = i - j + 1, t
    peak_100, j = 0, 0
    for i, t in enumerate(rec):
        while rec[j] < t - 0.1:
            j += 1
        peak_100 = max(peak_100, i - j + 1)
    retries = [counts.get(str(st.index), 0) for st in states]
    retries.sort()
    ideal = agents * size
    body = sum(st.bytes_transferred for st in states)
    return FleetResult(
        agents=agents,
        jitter=jitter,
        file_size=size,
        total_rate=total_rate,
        outage=outage,
        completed=sum(1 for st in states if st.finished),
        verified=sum(1 for st in states if st.ok),
        failed=[f"agent {st.index}: {st.error}" for st in states if not st.ok][:10],
        retries_per_agent={
            "min": retries[0],
            "median": retries[len(retries) // 2],
            "mean": round(sum(retries) / len(retries), 2),
            "max": retries[-1],
        },
        requests_total=len(times),
        peak_rps_recovery=peak_rec,
        peak_rps_recovery_at_s=round(peak_at, 2),
        peak_100ms_recovery=peak_100,
        peak_rps_overall=max(series, default=0),
        rps_series=series,
        body_bytes_client=body,
        bytes_sent_server=sent,
        ideal_bytes=ideal,
        bytes_ratio=body / ideal,
        wall_s=round(wall, 2),
        last_finish_s=round(max((st.finished - t0_mono for st in states if st.finished), default=0.0), 2),
    )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--jitter", choices=("on", "off"), default="on")
    ap.add_argument("--total-rate-mib", type=float, default=32.0, help="the server's total rate cap")
    ap.add_argument("--transfer-s", type=float, default=25.0, help="ideal time for all agents at the cap")
    ap.add_argument("--out-at", type=float, default=8.0)
    ap.add_argument("--t503", type=float, default=15.0)
    ap.add_argument("--trefused", type=float, default=15.0)
    ap.add_argument("--timeout", type=float, default=300.0, help="stop waiting for agents after this")
    a = ap.parse_args(argv)
    res = run(
        a.agents, a.jitter == "on", int(a.total_rate_mib * MiB), a.transfer_s, a.out_at, a.t503, a.trefused, a.timeout
    )
    subprocess.run(["rm", "-rf", str(WORK / f"fleet-{a.agents}-{'j' if a.jitter == 'on' else 'nj'}")], check=False)
    print(json.dumps(asdict(res)))
    sys.stdout.flush()
    os._exit(0)  # agent threads that never finished (bounded by --timeout) must not keep the process alive


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
