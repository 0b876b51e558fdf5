# ruff: noqa: E501  (case descriptions read best on one line)
"""Local faults on the host, through the real entry point: a full ISO dir, signals and SIGKILL mid-download,
two installers at once, files corrupted after a crash. dpkg, the vendor tool and the reboot are tripwires
here (harness.py): every run below must stop before them."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.failsafe.harness import Host, Run, digest, no_traceback, one_line, patterned_disk
from tests.failsafe.recorder import Recorder
from tests.failsafe.webserver import ISO_NAME, File, install_args, serve, standard_files
from tests.support.faults import Reply, ScriptedServer
from tests.support.loopdev import MiB

pytestmark = pytest.mark.integration

ISO = hashlib.sha256(b"seed").digest() * (4 * MiB // 32)  # 4 MiB, not compressible into a pattern
ISO_SHA = hashlib.sha256(ISO).hexdigest()
PART = f".{ISO_NAME}.part"


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs at path (a directory that can fill up)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=755", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


def _wait_for(cond: Callable[[], bool], proc: subprocess.Popen[str], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"exited before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _events(run: Run, name: str) -> list[dict[str, object]]:
    return [e for e in run.log_events() if e.get("event") == name]


def test_iso_dir_fills_up_mid_download(tmp_path: Path, failsafe: Recorder) -> None:
    """A 3 MiB ISO dir and a 4 MiB ISO of unannounced length: exit 4 with the numbers, the .part kept, nothing
    else touched; with room made, a re-run resumes from the kept bytes and verifies the ISO."""
    full = failsafe.case(
        "local fault",
        "ISO dir fills up mid-download",
        injected="ISO dir on a 3 MiB tmpfs, 4 MiB ISO served without Content-Length",
        expect_exit=4,
    )
    host = Host(tmp_path)
    files = standard_files(ISO, iso_file=File(ISO, announce_size=False))
    with serve(files) as site, patterned_disk(tmp_path / "disk", MiB) as loop, tmpfs(host.data, "3m"):
        before = digest(loop.path, loop.size)
        run = host.run([*install_args(site, loop.path), *host.dirs()])
        full.exit(run.returncode, run.explain())
        line = one_line(run) or ""
        full.check("one-line message", line.startswith("harmonic-install: "), run.explain())
        full.check(
            "message says the dir is full, with the numbers",
            "is full" in line and "bytes" in line and "free" in line and str(host.data) in line,
            line,
        )
        full.check("no traceback", no_traceback(run), run.explain())
        part = host.data / PART
        full.check("partial file kept", part.exists() and part.stat().st_size > MiB, str(host.created()))
        full.check(
            "nothing else in the ISO dir",
            sorted(p.name for p in host.data.iterdir()) == sorted([PART, PART + ".json"]),
            str(host.created()),
        )
        full.check("disk unchanged", digest(loop.path, loop.size) == before)
        full.check("no package installed", host.tripped() == "", host.tripped())
        kept = part.stat().st_size

        again = failsafe.case(
            "local fault",
            "re-run after the ISO dir filled up",
            injected="the tmpfs grown to 16 MiB, the installer run again (the 1 MiB disk then stops it: exit 3)",
            expect_exit=3,
        )
        subprocess.run(["mount", "-o", "remount,size=16m", str(host.data)], check=True)
        site.requests.clear()
        rerun = host.run([*install_args(site, loop.path), *host.dirs(), "--config", str(_margin(tmp_path, 0))])
        again.exit(rerun.returncode, rerun.explain())
        ranges = [r for p, r in site.requests if p.endswith(ISO_NAME)]
        again.check("re-run resumes from the kept bytes", ranges == [f"bytes={kept}-"], str(site.requests))
        final = host.data / ISO_NAME
        again.check("the ISO verifies", final.exists() and hashlib.sha256(final.read_bytes()).hexdigest() == ISO_SHA)
        again.check("re-run completes", "smaller than the image" in (one_line(rerun) or ""), rerun.explain())
        again.check("disk unchanged", digest(loop.path, loop.size) == before)


def test_iso_dir_too_small_for_an_announced_length(tmp_path: Path, failsafe: Recorder) -> None:
    """The server announces 4 MiB, the ISO dir has 3: exit 4 before a byte is stored, with the numbers."""
    case = failsafe.case(
        "local fault",
        "ISO dir too small for the announced ISO",
        injected="ISO dir on a 3 MiB tmpfs, 4 MiB ISO with Content-Length",
        expect_exit=4,
    )
    host = Host(tmp_path)
    with serve(standard_files(ISO)) as site, patterned_disk(tmp_path / "disk", 8 * MiB) as loop, tmpfs(host.data, "3m"):
        before = digest(loop.path, loop.size)
        run = host.run([*install_args(site, loop.path), *host.dirs(), "--config", str(_margin(tmp_path, 0))])
        case.exit(run.returncode, run.explain())
        line = one_line(run) or ""
        case.check(
            "message says the dir is full, with the numbers",
            "not enough space" in line and "4.0 MiB" in line and "free" in line,
            line,
        )
        case.check("no traceback", no_traceback(run), run.explain())
        case.check("nothing created", not (host.data / PART).exists(), str(host.created()))
        case.check("disk unchanged", digest(loop.path, loop.size) == before)
        case.check("no package installed", host.tripped() == "", host.tripped())


def _margin(tmp_path: Path, mib: int) -> Path:
    conf = tmp_path / "margin.toml"
    conf.write_text(f"[download]\nfree_space_margin_mib = {mib}\n")
    return conf


SIGNALS = [
    (signal.SIGTERM, 143, "SIGTERM mid-download, then a re-run"),
    (signal.SIGINT, 130, "SIGINT mid-download, then a re-run"),
    (signal.SIGKILL, -9, "SIGKILL mid-download, then a re-run"),
]


@pytest.mark.parametrize(("signum", "code", "name"), SIGNALS, ids=[s[2].split()[0] for s in SIGNALS])
def test_signal_mid_download_then_rerun_resumes(
    tmp_path: Path, failsafe: Recorder, signum: int, code: int, name: str
) -> None:
    """A signal while the ISO trickles in: its exit code (SIGKILL: killed), the .part kept, the lock free, and
    a re-run resumes from the kept bytes instead of starting over."""
    case = failsafe.case(
        "local fault",
        name,
        injected=f"{signal.Signals(signum).name} to the installer while the ISO downloads at 512 KiB/s",
        expect_exit=code,
    )
    host = Host(tmp_path)
    iso = File(ISO, rate=512 * 1024, announce_size=False)  # the small disk is then found only at the end
    with serve(standard_files(ISO, iso_file=iso)) as site, patterned_disk(tmp_path / "disk", MiB) as loop:
        before = digest(loop.path, loop.size)
        part = host.data / PART
        proc = host.popen([*install_args(site, loop.path), *host.dirs()])
        _wait_for(lambda: part.exists() and part.stat().st_size >= MiB, proc, "1 MiB of the ISO")
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
        run = Run(proc.returncode, out, err)
        case.exit(run.returncode, run.explain())
        if signum != signal.SIGKILL:
            case.check(
                "one-line message",
                f"interrupted by {signal.Signals(signum).name}" in (one_line(run) or ""),
                run.explain(),
            )
            case.check("no traceback", no_traceback(run), run.explain())
        case.check("partial file kept", part.exists() and part.stat().st_size >= MiB)
        case.check("disk unchanged", digest(loop.path, loop.size) == before)
        kept = part.stat().st_size
        iso.rate = None
        site.requests.clear()
        rerun = host.run([*install_args(site, loop.path), *host.dirs()])
        ranges = [r for p, r in site.requests if p.endswith(ISO_NAME)]
        case.check(
            "re-run resumes from the kept bytes", ranges == [f"bytes={kept}-"], f"{site.requests}\n{rerun.explain()}"
        )
        final = host.data / ISO_NAME
        case.check(
            "re-run completes",
            rerun.returncode == 3 and final.exists() and hashlib.sha256(final.read_bytes()).hexdigest() == ISO_SHA,
            rerun.explain(),
        )
        case.check("no package installed", host.tripped() == "", host.tripped())


def test_two_installers_at_once(tmp_path: Path, failsafe: Recorder) -> None:
    """While one installer downloads, a second (the unit and cloud-init both starting one) exits 7 at once,
    having created nothing; the first is not disturbed."""
    case = failsafe.case(
        "local fault",
        "two installers at once",
        injected="a second harmonic-install started while the first downloads",
        expect_exit=7,
    )
    host = Host(tmp_path)
    iso = File(ISO, rate=256 * 1024, announce_size=False)  # the small disk is then found only at the end
    with serve(standard_files(ISO, iso_file=iso)) as site, patterned_disk(tmp_path / "disk", MiB) as loop:
        before = digest(loop.path, loop.size)
        part = host.data / PART
        first = host.popen([*install_args(site, loop.path), *host.dirs()])
        _wait_for(lambda: part.exists() and part.stat().st_size > 0, first, "the first download")
        requests_before = len(site.requests)
        other_work, other_data = tmp_path / "work2", tmp_path / "data2"
        started = time.monotonic()
        second = host.run(
            [
                *install_args(site, loop.path),
                "--working-dir",
                str(other_work),
                "--iso-dir",
                str(other_data),
                "--state-dir",
                str(host.state),
            ]
        )
        took = time.monotonic() - started
        case.exit(second.returncode, second.explain())
        line = one_line(second) or ""
        case.check(
            "one-line message naming the holder",
            "another harmonic-install is running" in line and f"pid {first.pid}" in line,
            line,
        )
        case.check("no traceback", no_traceback(second), second.explain())
        case.check(
            "nothing created", not other_work.exists() and not other_data.exists(), str(list(tmp_path.iterdir()))
        )
        case.check("the second sent no request", len(site.requests) == requests_before, str(site.requests))
        case.check("the second exits at once", took < 10, f"{took:.1f} s")
        case.check("the first is still running", first.poll() is None)
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
        case.check("disk unchanged", digest(loop.path, loop.size) == before)


CRASH_CASES = [
    ("final ISO corrupted after a crash", "same size, one byte flipped, under the final name"),
    ("final ISO truncated after a crash", "the first half only, under the final name"),
    ("partial ISO corrupted after a crash", "a .part whose bytes differ from the server's, with a matching sidecar"),
]


@pytest.mark.parametrize(("name", "how"), CRASH_CASES, ids=["flipped", "truncated", "part"])
def test_files_left_by_a_crash_are_reverified(tmp_path: Path, failsafe: Recorder, name: str, how: str) -> None:
    """Files found on disk are re-hashed before use, never trusted by name: a damaged one is fetched again and
    the ISO that ends up in place verifies."""
    case = failsafe.case("local fault", name, injected=how, expect_exit=3)
    host = Host(tmp_path)
    host.data.mkdir()
    iso_final = host.data / ISO_NAME
    if "flipped" in how or "one byte" in how:
        iso_final.write_bytes(ISO[:100] + bytes([ISO[100] ^ 1]) + ISO[101:])
    elif "half" in how:
        iso_final.write_bytes(ISO[: len(ISO) // 2])
    files = standard_files(ISO, iso_file=File(ISO, announce_size=False))  # the small disk found only at the end
    with serve(files) as site, patterned_disk(tmp_path / "disk", MiB) as loop:
        if ".part" in how:
            (host.data / PART).write_bytes(bytes(MiB))
            etag = '"' + ISO_SHA[:20] + '"'
            (host.data / (PART + ".json")).write_text(
                f'{{"url": "{site.url}/apollo/{ISO_NAME}", "validator": {etag!r}, "total": {len(ISO)}, "name": "{ISO_NAME}"}}'.replace(
                    "'", ""
                )
            )
        before = digest(loop.path, loop.size)
        run = host.run([*install_args(site, loop.path), *host.dirs()])
        case.exit(run.returncode, run.explain())
        case.check("stops only at the small disk", "smaller than the image" in (one_line(run) or ""), run.explain())
        case.check("the ISO in place verifies", hashlib.sha256(iso_final.read_bytes()).hexdigest() == ISO_SHA)
        refetched = [p for p, _ in site.requests if p.endswith(ISO_NAME)]
        case.check("the damaged file was fetched again", len(refetched) >= 1, str(site.requests))
        if ".part" not in how:
            case.check("the mismatch was logged", bool(_events(run, "download.existing_mismatch")), run.explain())
        case.check("disk unchanged", digest(loop.path, loop.size) == before)
        case.check("no package installed", host.tripped() == "", host.tripped())


FAILURE_PATTERNS = [
    (
        "the same 503 on every attempt",
        [Reply(status=503, body=b"busy\n", headers={"Connection": "close"})] * 3,
        ("every attempt failed the same way", "not a flaky network", "last HTTP status 503", "new connections"),
    ),
    (
        "a different failure on each attempt",
        [Reply(status=503, body=b"busy\n"), Reply(cut_after=5000), Reply(status=502, body=b"bad gateway\n")],
        ("the failures varied", "network team", "last HTTP status 502"),
    ),
]


@pytest.mark.parametrize(("name", "script", "says"), FAILURE_PATTERNS, ids=[p[0] for p in FAILURE_PATTERNS])
def test_final_line_tells_a_repeating_failure_from_a_flaky_network(
    tmp_path: Path, failsafe: Recorder, name: str, script: list[Reply], says: tuple[str, ...]
) -> None:
    """The ISO fails every attempt: the one line says what was tried and whose problem it looks like."""
    case = failsafe.case("local fault", f"ISO download: {name}", injected=f"apollo/<iso>: {name}", expect_exit=4)
    host = Host(tmp_path)
    with ScriptedServer() as srv, patterned_disk(tmp_path / "disk", 8 * MiB) as loop:
        for path, file in standard_files(bytes(range(256)) * 4096).items():
            srv.add(path, file.body)
        srv.script(f"/apollo/{ISO_NAME}", *script)
        before = digest(loop.path, loop.size)
        env = {"HARMONIC_DOWNLOAD_ATTEMPTS": "3", "HARMONIC_DOWNLOAD_BACKOFF_MAX_S": "0"}
        run = host.run([*install_args(srv, loop.path), *host.dirs()], env)
        case.exit(run.returncode, run.explain())
        line = one_line(run) or ""
        case.check("one line: attempts, connections, last status and whose problem", all(s in line for s in says), line)
        case.check("gave up after the 3 attempts", "gave up after 3 attempts" in line, line)
        case.check("no traceback", no_traceback(run), run.explain())
        case.check("disk unchanged", digest(loop.path, loop.size) == before)
        case.check("no package installed", host.tripped() == "", host.tripped())


def test_trickling_iso_is_stopped_within_the_stall_window_saying_what_was_measured(
    tmp_path: Path, failsafe: Recorder
) -> None:
    """The ISO comes at 16 KiB/s, under stall_min_rate 64 KiB/s over a 3 s window: stopped one window in, the
    measured rate and span in the log and the line; the .part kept for a re-run."""
    case = failsafe.case(
        "local fault",
        "trickling ISO (16 KiB/s, minimum 64 KiB/s over 3 s)",
        injected="apollo/<iso> served at 16 KiB/s",
        expect_exit=4,
    )
    host = Host(tmp_path)
    files = standard_files(ISO, iso_file=File(ISO, rate=16384))
    env = {
        "HARMONIC_DOWNLOAD_ATTEMPTS": "1",
        "HARMONIC_DOWNLOAD_STALL_MIN_RATE": "65536",
        "HARMONIC_DOWNLOAD_STALL_WINDOW_S": "3",
    }
    with serve(files) as site, patterned_disk(tmp_path / "disk", 8 * MiB) as loop:
        before = digest(loop.path, loop.size)
        started = time.monotonic()
        run = host.run([*install_args(site, loop.path), *host.dirs()], env)
        elapsed = time.monotonic() - started
        case.exit(run.returncode, run.explain())
        line = one_line(run) or ""
        [stalled] = _events(run, "download.stalled") or [{}]
        measured = float(str(stalled.get("measured_over_s", 0)))
        case.check(
            "the line says stalled, with the rate and the seconds measured",
            "stalled:" in line and "over the last" in line,
            line,
        )
        case.check("measured over the window (2.85 to 4 s)", 2.85 <= measured <= 4.0, str(stalled))
        case.check("stopped within the window, not two", elapsed < 3 * 2 + 5, f"{elapsed:.1f} s")
        case.check("partial file kept", (host.data / PART).exists(), str(host.created()))
        case.check("no traceback", no_traceback(run), run.explain())
        case.check("disk unchanged", digest(loop.path, loop.size) == before)
        case.check("no package installed", host.tripped() == "", host.tripped())
