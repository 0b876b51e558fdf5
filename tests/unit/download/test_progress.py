"""download/progress.py: stall detection, progress log lines, the callback and the terminal bar."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from harmonic_installer.download import (
    ArtifactSpec,
    Downloader,
    ProgressBar,
)
from harmonic_installer.errors import DownloadError
from tests.support.faults import Reply, ScriptedServer
from tests.unit.download.kit import (
    CONTENT,
    SHA,
    Direct,
    FakeClock,
    downloader,
    events,
    policy,
    spec_for,
    stream_response,
)


def test_stall_below_minimum_rate_is_aborted_and_retried(tmp_path: Path, clock: FakeClock) -> None:
    """A trickle under stall_min_rate for stall_window_s is aborted and retried; the retry resumes."""
    calls: list[httpx.Request] = []
    data = b"z" * 5000
    sha = hashlib.sha256(data).hexdigest()

    def tick() -> None:
        clock.now += 1.0  # every 100-byte chunk takes a second: 100 B/s

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        headers = {"ETag": '"v1"', "Content-Type": "application/octet-stream"}
        if len(calls) == 1:
            headers["Content-Length"] = str(len(data))
            return httpx.Response(
                200, headers=headers, stream=stream_response([data[i : i + 100] for i in range(0, 5000, 100)], {}, tick)
            )
        start = int(request.headers["range"].split("=")[1].rstrip("-"))
        headers.update({"Content-Length": str(len(data) - start), "Content-Range": f"bytes {start}-4999/5000"})
        return httpx.Response(206, headers=headers, stream=stream_response([data[start:]], {}))

    pol = policy(stall_min_rate=1024, stall_window_s=10.0)
    spec = ArtifactSpec(url="http://127.0.0.1/a.deb", dest_dir=tmp_path, filename="a.deb", sha256=sha)
    with capture_logs() as logs, downloader(clock, pol=pol, transport=httpx.MockTransport(handler)) as dl:
        art = dl.fetch(spec)
    assert art.sha256 == sha
    [retry] = events(logs, "download.retry_scheduled")
    assert retry["error"].startswith("stalled:")
    assert "below 1024 B/s" in retry["error"]
    assert calls[1].headers["range"] in {f"bytes={n}-" for n in range(900, 1200, 100)}


def test_real_trickle_is_caught_by_the_stall_detector_not_the_read_timeout(srv: ScriptedServer, tmp_path: Path) -> None:
    """Bytes that keep arriving within the read timeout, but too slowly, are stopped by the stall window."""
    data = b"t" * 4000
    srv.add("/p/a.deb", data, script=[Reply(trickle=(20, 0.02))])  # ~1 KB/s, a write every 20 ms
    pol = policy(stall_min_rate=50_000, stall_window_s=0.3, read_timeout_s=5.0)
    with capture_logs() as logs, Downloader(pol, Direct(), sleep=lambda _s: None) as dl:
        art = dl.fetch(spec_for(srv, tmp_path, sha256=hashlib.sha256(data).hexdigest(), sums_url=None))
    assert art.path.read_bytes() == data
    assert events(logs, "download.retry_scheduled")[0]["error"].startswith("stalled:")


def test_trickle_after_a_fast_start_is_caught_within_the_stall_window(tmp_path: Path, clock: FakeClock) -> None:
    """10 MiB fast, then 64 B/s: aborted no later than stall_window_s after the slowdown, the measurement logged."""
    fast, slow = [b"f" * 65536] * 160, [b"s" * 64] * 400
    marks: dict[str, float] = {}

    def tick() -> None:
        sent = marks.setdefault("sent", 0) + 1
        marks["sent"] = sent
        if sent <= len(fast):
            clock.now += 0.01
        else:
            marks.setdefault("trickle_from", clock.now)
            clock.now += 1.0

    def handler(request: httpx.Request) -> httpx.Response:
        total = 65536 * len(fast) + 64 * len(slow)
        headers = {"ETag": '"v1"', "Content-Length": str(total)}
        return httpx.Response(200, headers=headers, stream=stream_response([*fast, *slow], {}, tick))

    pol = policy(attempts=1, stall_min_rate=1024, stall_window_s=60.0, max_time_s=3600.0)
    spec = ArtifactSpec(url="http://127.0.0.1/big.iso", dest_dir=tmp_path, filename="big.iso", sha256=SHA)
    with (
        capture_logs() as logs,
        downloader(clock, pol=pol, transport=httpx.MockTransport(handler)) as dl,
        pytest.raises(DownloadError, match="stalled"),
    ):
        dl.fetch(spec)
    [stalled] = events(logs, "download.stalled")
    assert clock.now - marks["trickle_from"] <= 61.0
    assert stalled["rate_bytes_s"] < 1024
    assert 57.0 <= stalled["measured_over_s"] <= 60.0
    assert stalled["window_s"] == 60.0


def test_progress_is_logged_every_10_percent(tmp_path: Path, clock: FakeClock) -> None:
    """Without a progress bar, download.progress is logged at each 10 % step with bytes, percent, rate and ETA."""
    data = os.urandom(40 * 50_000)

    def tick() -> None:
        clock.now += 0.75  # 40 chunks, 30 s in all: each 10 % step is 3 s apart

    def handler(request: httpx.Request) -> httpx.Response:
        chunks = [data[i : i + 50_000] for i in range(0, len(data), 50_000)]
        headers = {"Content-Length": str(len(data)), "ETag": '"x"'}
        return httpx.Response(200, headers=headers, stream=stream_response(chunks, {}, tick))

    spec = ArtifactSpec(url="http://127.0.0.1/big.iso", dest_dir=tmp_path, filename="big.iso",
                        sha256=hashlib.sha256(data).hexdigest())  # fmt: skip
    with capture_logs() as logs, downloader(clock, transport=httpx.MockTransport(handler)) as dl:
        dl.fetch(spec)
    progress = events(logs, "download.progress")
    assert [p["percent"] for p in progress] == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]
    assert progress[4]["summary"] == "976.6 KiB of 1.9 MiB (50%), 65.1 KiB/s, ETA 0:15"
    assert (progress[4]["rate_bytes_s"], progress[4]["eta_s"]) == (66666, 15)
    assert all(p["log_level"] == "info" for p in progress)


def test_progress_is_logged_every_few_seconds_on_a_slow_link(tmp_path: Path, clock: FakeClock) -> None:
    """Between 10 % steps a line is still logged every progress_interval_s, so a slow link never looks dead."""
    data = b"s" * 100_000

    def tick() -> None:
        clock.now += 1.0

    def handler(request: httpx.Request) -> httpx.Response:
        chunks = [data[i : i + 1000] for i in range(0, 20_000, 1000)]  # 20 % in 20 s, then the rest at once
        chunks.append(data[20_000:])
        return httpx.Response(200, headers={"Content-Length": str(len(data))}, stream=stream_response(chunks, {}, tick))

    spec = ArtifactSpec(url="http://127.0.0.1/s.iso", dest_dir=tmp_path, filename="s.iso",
                        sha256=hashlib.sha256(data).hexdigest())  # fmt: skip
    with capture_logs() as logs, downloader(clock, transport=httpx.MockTransport(handler)) as dl:
        dl.fetch(spec)
    percents = [p["percent"] for p in events(logs, "download.progress")]
    assert percents == [5.0, 10.0, 15.0, 20.0, 100.0]


def test_small_files_log_progress_once(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """A file fetched in well under a second logs one progress line (100 %), not ten."""
    srv.add("/p/a.deb", CONTENT)
    with capture_logs() as logs, downloader(clock) as dl:
        dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None))
    assert [p["percent"] for p in events(logs, "download.progress")] == [100.0]


def test_progress_callback_gets_the_final_count(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """A progress callback receives (label, done, total), finally the full size; log lines stay at info."""
    srv.add("/p/a.deb", CONTENT)
    seen: list[tuple[str, int, int | None]] = []
    with capture_logs() as logs, downloader(clock, on_progress=lambda *a: seen.append(a)) as dl:
        dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None, label="ostree-upgrade deb"))
    assert seen[-1] == ("ostree-upgrade deb", len(CONTENT), len(CONTENT))
    assert all(p["log_level"] == "info" for p in events(logs, "download.progress"))


def test_progress_bar_on_a_terminal_quiets_progress_logs(srv: ScriptedServer, tmp_path: Path, clock: FakeClock) -> None:
    """With progress_bar=stream the bar is drawn there and download.progress drops to debug."""
    srv.add("/p/a.deb", CONTENT)
    out = io.StringIO()
    with capture_logs() as logs, downloader(clock, progress_bar=out) as dl:
        dl.fetch(spec_for(srv, tmp_path, sha256=SHA, sums_url=None, label="deb"))
    assert "deb [" in out.getvalue()
    assert "100.0%" in out.getvalue()
    assert all(p["log_level"] == "debug" for p in events(logs, "download.progress"))


@pytest.mark.parametrize(
    ("tty", "term", "journal", "bar"),
    [
        (True, "xterm", False, True),
        (False, "xterm", False, False),
        (True, "dumb", False, False),
        (True, "vt220", True, False),
    ],
)
def test_progress_bar_is_automatic_only_for_a_person_at_a_terminal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clock: FakeClock, tty: bool, term: str, journal: bool, bar: bool
) -> None:
    """The bar is drawn on stderr only when it is a terminal, TERM is not dumb and systemd did not connect our
    stdout or stderr to the journal (the unit's console is a TTY); otherwise download.progress is a plain line."""

    class Stderr(io.StringIO):
        def isatty(self) -> bool:
            return tty

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": str(len(CONTENT))}, stream=stream_response([CONTENT], {}))

    err = Stderr()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setenv("TERM", term)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    if journal:
        st = os.fstat(1)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    spec = ArtifactSpec(url="http://127.0.0.1/a.deb", dest_dir=tmp_path, filename="a.deb", sha256=SHA, label="deb")
    with (
        capture_logs() as logs,
        Downloader(policy(), Direct(), transport=httpx.MockTransport(handler), clock=clock) as dl,
    ):
        dl.fetch(spec)
    assert ("deb [" in err.getvalue()) is bar
    assert ("100.0%" in err.getvalue()) is bar
    levels = {p["log_level"] for p in events(logs, "download.progress")}
    assert levels == ({"debug"} if bar else {"info"})


def test_progress_bar_renders_one_line() -> None:
    """ProgressBar draws label, bar, percent, sizes, rate and ETA on one carriage-returned line."""
    out = io.StringIO()
    t = iter([0.0, 2.0, 4.0])
    bar = ProgressBar(out, width=10, clock=lambda: next(t))
    bar("Apollo ISO", 0, 4 * 1024 * 1024)
    bar("Apollo ISO", 2 * 1024 * 1024, 4 * 1024 * 1024)
    bar("Apollo ISO", 4 * 1024 * 1024, 4 * 1024 * 1024)
    lines = out.getvalue().split("\r")
    assert "Apollo ISO [#####-----]  50.0% 2.0 MiB/4.0 MiB 1.0 MiB/s ETA 0:02" in lines[2]
    assert out.getvalue().endswith("\n")
