"""SIGTERM and SIGINT during a real run: the child stops, exit 143/130, the disk untouched, the .part kept."""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from tests.support.loopdev import MiB, loop_device

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RELEASE = "release-1.0.0.0-1+sig"
ISO = bytes(range(256)) * 4096 * 4  # 4 MiB


class _Trickle(http.server.BaseHTTPRequestHandler):
    """Serves SHA256SUMS and debs at once, then the ISO at ~64 KiB/s so a signal lands mid-download."""

    files: ClassVar[dict[str, bytes]] = {}

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
        self.end_headers()
        step = 16384 if self.path.endswith(".iso") else len(body)
        try:
            for i in range(0, len(body), step):
                self.wfile.write(body[i : i + step])
                self.wfile.flush()
                if step < len(body):
                    time.sleep(0.25)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def trickle_server() -> Iterator[str]:
    debs = {f"/packages/{n}": n.encode() * 10 for n in ("a_1_all.deb", "b_1_all.deb")}
    sums = "".join(f"{hashlib.sha256(v).hexdigest()}  {k.rsplit('/', 1)[1]}\n" for k, v in debs.items())
    iso_name = f"APOLLO_PLATFORM-{RELEASE}.iso"
    _Trickle.files = {
        **debs,
        "/packages/SHA256SUMS": sums.encode(),
        f"/apollo/{iso_name}": ISO,
        "/apollo/SHA256SUMS": f"{hashlib.sha256(ISO).hexdigest()}  {iso_name}\n".encode(),
    }
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_download(tmp_path: Path, trickle_server: str, signum: int, code: int) -> None:
    """A signal mid-ISO exits with its code, leaves the disk untouched and keeps the partial file."""
    with loop_device(tmp_path, size=8 * MiB) as loop:
        env = {
            "PATH": os.environ["PATH"],
            "HARMONIC_CMDLINE_FILE": "/dev/null",
            "HARMONIC_PACKAGES_NAMES": "a_1_all.deb,b_1_all.deb",
            "HARMONIC_ISO_PATH": f"apollo/APOLLO_PLATFORM-{RELEASE}.iso",
        }
        argv = [
            sys.executable, "-m", "harmonic_installer", "-i", "--no-reboot",
            "--server-url", trickle_server, "--disk", loop.path, "--iso-release", RELEASE,
            "--working-dir", str(tmp_path / "work"), "--iso-dir", str(tmp_path / "data"),
            "--state-dir", str(tmp_path / "state"),
        ]  # fmt: skip
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        part = tmp_path / "data" / f".APOLLO_PLATFORM-{RELEASE}.iso.part"
        deadline = time.monotonic() + 30
        while not part.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "download never started"
            time.sleep(0.05)
        time.sleep(1.0)  # some bytes in flight (buffered: they must still reach the .part on the way out)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == code, err[-2000:]
        assert f"interrupted by {signal.Signals(signum).name}" in err
        assert "Traceback" not in err
        assert part.exists()
        assert 0 < part.stat().st_size < len(ISO)
        with open(loop.path, "rb") as disk:
            assert disk.read(8 * MiB) == bytes(8 * MiB)


def _blocked_on_fifo(fifo: Path, proc: subprocess.Popen[str]) -> int:
    """Wait until `proc` has opened the FIFO for reading (so it is past start-up); our writer end's fd."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the command never opened its config file"
            time.sleep(0.05)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
@pytest.mark.parametrize("command", [["settings"], ["-i", "--dry-run"]])
def test_signal_outside_the_install_keeps_its_code(tmp_path: Path, command: list[str], signum: int, code: int) -> None:
    """A signal while the settings are read (a subcommand, or before an install) exits 143/130, not typer's 130."""
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    env = {"PATH": os.environ["PATH"], "HARMONIC_CMDLINE_FILE": "/dev/null"}
    argv = [sys.executable, "-m", "harmonic_installer", "--config", str(fifo), *command]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    writer = _blocked_on_fifo(fifo, proc)
    try:
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        os.close(writer)
    assert proc.returncode == code, err[-2000:]
    assert f"interrupted by {signal.Signals(signum).name}" in err
    assert "Traceback" not in err
